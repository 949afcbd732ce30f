"""Bad and unusual image inputs: corrupt files in folders, truncated flow frames, 16-bit PNGs,
grayscale flow frames, and evaluation progress. Every fixture is generated into tmp_path."""

import os

import numpy as np
from PIL import Image
import pytest

from perceiver_io.data import image as image_lib


def _jpeg(path, seed=0, size=(40, 50)):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
  return str(path)


def _class_folders(root, per_class=5):
  for c in ('a', 'b'):
    os.makedirs(root / c, exist_ok=True)
    for i in range(per_class):
      _jpeg(root / c / f'img{i}.jpg', seed=10 * ord(c) + i)


def _drain(iterator, limit=50):
  count = 0
  for _ in iterator:
    count += 1
    if count >= limit:
      break
  return count


# ----------------------------------------------------------- A: corrupt files in a folder --


@pytest.mark.parametrize('train', [False, True])
def test_corrupt_jpeg_in_folder_is_one_error_naming_it(tmp_path, train):
  _class_folders(tmp_path)
  bad = tmp_path / 'b' / 'img3.jpg'
  data = bad.read_bytes()
  bad.write_bytes(
    data[: len(data) // 2]
  )  # Truncated: valid header, broken body.
  iterator, _ = image_lib.make_image_dataset(
    f'dir:{tmp_path}',
    'train',
    batch_size=2,
    train=train,
    image_size=16,
    randaugment=None,
  )
  with pytest.raises(image_lib.ImageDecodeError) as info:
    _drain(iterator)
  message = str(info.value)
  assert str(bad) in message and '1 image file(s)' in message
  assert 'jpeg' in message.lower() and 'function_node' not in message


def test_text_file_named_jpg_is_named(tmp_path):
  _class_folders(tmp_path)
  bad = tmp_path / 'a' / 'notes.jpg'
  bad.write_text('not an image at all')
  iterator, _ = image_lib.make_image_dataset(
    f'dir:{tmp_path}', 'train', batch_size=3, train=False, image_size=16
  )
  with pytest.raises(ValueError, match='notes.jpg') as info:
    _drain(iterator)
  assert 'Unknown image file format' in str(info.value)


def test_clean_folder_and_resumed_stream_are_unchanged(tmp_path):
  _class_folders(tmp_path)
  it, info = image_lib.make_image_dataset(
    f'dir:{tmp_path}', 'train', batch_size=3, train=False, image_size=16
  )
  assert _drain(it) == info['num_batches'] == 4
  # A bad file met only after resuming is still named (the stream offset is accounted for).
  (tmp_path / 'b' / 'img4.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
  it, _ = image_lib.make_image_dataset(
    f'dir:{tmp_path}',
    'train',
    batch_size=2,
    train=True,
    image_size=16,
    randaugment=None,
    start_batch=7,
  )
  with pytest.raises(image_lib.ImageDecodeError, match='img4.jpg'):
    _drain(it)


def test_undecodable_image_checks_one_file(tmp_path):
  good = _jpeg(tmp_path / 'good.jpg')
  (tmp_path / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 20)
  assert image_lib.undecodable_image(good) is None
  assert image_lib.undecodable_image(str(tmp_path / 'bad.png'))


# ------------------------------------------------------ B: truncated flow frames / masks --


def _truncated_png(path, seed=0):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  return str(path)


def test_truncated_flow_frame_and_mask_name_the_file(tmp_path):
  from perceiver_io.flow import formats as flow_formats  # pylint: disable=g-import-not-at-top

  frame = _truncated_png(tmp_path / 'frame_0003.png')
  with pytest.raises(
    ValueError, match='frame_0003.png: cannot read the image'
  ) as info:
    flow_formats.read_image(frame)
  assert 'truncated' in str(info.value)
  mask = tmp_path / 'occ.png'
  Image.fromarray(
    np.random.default_rng(1).integers(0, 2, (64, 80), dtype=np.uint8) * 255
  ).save(mask)
  mask.write_bytes(mask.read_bytes()[: len(mask.read_bytes()) // 2])
  with pytest.raises(ValueError, match='occ.png: cannot read the mask'):
    flow_formats.read_mask(str(mask))


def test_truncated_frame_in_flow_evaluation_names_it(tmp_path):
  """The whole evaluation path (listing -> load_pair) gives the one-line error."""
  from perceiver_io.flow import formats as flow_formats  # pylint: disable=g-import-not-at-top
  from perceiver_io.flow import layouts as flow_layouts  # pylint: disable=g-import-not-at-top

  scene = tmp_path / 'training' / 'clean' / 'alley'
  flow_dir = tmp_path / 'training' / 'flow' / 'alley'
  os.makedirs(scene)
  os.makedirs(flow_dir)
  rng = np.random.default_rng(0)
  for i in (1, 2):
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
      scene / f'frame_{i:04d}.png'
    )
  flow_formats.write_flo(
    flow_dir / 'frame_0001.flo', np.zeros((24, 32, 2), np.float32)
  )
  _truncated_png(scene / 'frame_0002.png')
  (listing,) = [flow_layouts.list_sintel(str(tmp_path), passes='clean')]
  with pytest.raises(ValueError, match='frame_0002.png: cannot read'):
    flow_layouts.load_pair(listing[0])


# ------------------------------------------------- C: 16-bit PNGs, predict path == TF path --


def test_sixteen_bit_png_same_pixels_in_numpy_and_tf_paths(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  values = (rng.random((40, 50)) * 65535).astype(np.uint16)
  values[0, :6] = [0, 255, 256, 32767, 32768, 65535]
  path = str(tmp_path / 'sixteen.png')
  Image.fromarray(values).save(path)
  numpy_pixels = image_lib.load_image_numpy(path)
  tf_pixels = image_lib.decode_image(tf.io.read_file(path)).numpy()
  np.testing.assert_array_equal(numpy_pixels, tf_pixels)
  assert 100 < numpy_pixels.mean() < 156  # Not clipped to white.
  np.testing.assert_allclose(
    image_lib.eval_preprocess_numpy(numpy_pixels, 32),
    image_lib.eval_preprocess(tf.constant(tf_pixels), image_size=32).numpy(),
    atol=1e-3,
  )


# ------------------------------------------- D: grayscale flow frames, predict == evaluate --


def test_flow_predict_reads_grayscale_frames_as_evaluate_does(tmp_path):
  from experiments.tasks import optical_flow  # pylint: disable=g-import-not-at-top
  from perceiver_io.flow import formats as flow_formats  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  grey = tmp_path / '000157_10.png'
  Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8)).save(grey)
  rgba = tmp_path / 'rgba.png'
  Image.fromarray(
    rng.integers(0, 256, (24, 32, 4), dtype=np.uint8), 'RGBA'
  ).save(rgba)
  for path in (grey, rgba):
    frame = optical_flow.Task.read_frame(str(path))
    np.testing.assert_array_equal(frame, flow_formats.read_image(str(path)))
    assert frame.shape == (24, 32, 3)
  with pytest.raises(ValueError, match='cannot read'):
    optical_flow.Task.read_frame(_truncated_png(tmp_path / 't.png'))


# ------------------------------------------------------------- E: evaluation progress --


def test_eval_progress_logs_count_rate_and_eta_without_a_bar(caplog, capsys):
  import logging  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from experiments import progress as eval_progress  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict({'progress_bar': False})
  with caplog.at_level(logging.INFO):
    with eval_progress.EvalProgress(
      config, 10, 'image', log_every_s=0.0
    ) as progress:
      for _ in range(5):
        progress.update(2)
  text = caplog.text
  assert 'eval: 10 images' in text
  assert 'eval: 4/10 images' in text and 'ETA' in text and 'image/s' in text
  assert capsys.readouterr().err == ''  # No bar.
  # With the default interval, a short evaluation logs only its first and last lines.
  caplog.clear()
  with caplog.at_level(logging.INFO):
    with eval_progress.EvalProgress(config, 3, 'pair') as progress:
      progress.update(3)
  assert len(caplog.records) == 2


def test_eval_progress_bar_goes_to_stderr(monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from experiments import progress as eval_progress  # pylint: disable=g-import-not-at-top

  # Bars are drawn for a terminal only (tests/test_first_hour.py).
  monkeypatch.setattr(eval_progress, 'stderr_is_terminal', lambda: True)
  config = ml_collections.ConfigDict({'progress_bar': True})
  progress = eval_progress.EvalProgress(config, 4, 'image')
  assert progress.bar is not None
  progress.update(4)
  assert progress.bar.n == 4
  progress.close()
  assert progress.bar is None


def test_image_folder_evaluation_reports_progress(tmp_path, monkeypatch):
  """The ImageNet eval loop (the task's evaluate) counts every real image once."""
  from experiments import progress as eval_progress  # pylint: disable=g-import-not-at-top
  from experiments import sharding  # pylint: disable=g-import-not-at-top
  from experiments.tasks import image_classification  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  _class_folders(tmp_path, per_class=3)
  seen = []

  class Recorder(eval_progress.EvalProgress):
    def update(self, n=1):
      seen.append(n)
      super().update(n)

  monkeypatch.setattr(eval_progress, 'EvalProgress', Recorder)
  task = image_classification.Task.__new__(image_classification.Task)
  task.config = ml_collections.ConfigDict(
    {
      'progress_bar': False,
      'max_eval_examples': -1,
      'eval_batch_size': 4,
      'seed': 0,
      'data': {
        'source': f'dir:{tmp_path}',
        'eval_source': '',
        'eval_split': 'val',
        'randaugment_layers': 0,
        'randaugment_magnitude': 0.0,
        'data_dir': '',
        'manual_dir': '',
        'class_names': '',
        'geometry': '',
      },
    }
  )
  task.num_classes, task.image_size, task.in_channels = 2, 16, 3

  def eval_step(params, model_state, batch):
    del params, model_state
    weight = batch['weight']
    return {
      'loss': weight * 0,
      'top1': weight,
      'top5': weight,
      'weight': weight,
    }

  metrics = task.evaluate(
    eval_step, {'params': {}, 'model_state': {}}, sharding.make_mesh()
  )
  assert metrics['num_examples'] == 6
  assert seen == [4, 2]
