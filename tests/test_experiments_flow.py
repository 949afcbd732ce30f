"""Optical flow experiments (configs/optical_flow.py, tasks/optical_flow.py):
a tiny run on generated pairs through the curriculum and augmented phases,
the loss and metrics in pixels, tiled evaluation on Sintel- and KITTI-layout
folders, predict (two frames -> .flo + colour PNG, EPE with ground truth),
an imported HuggingFace flow checkpoint predicting pixels (checked against
the HF model x 20 in torch), and bad input refused with nothing written.

File formats, the generator's forward ground truth and tiling equality are
tested in tests/test_flow_*.py; here only what the experiment adds.
"""

import dataclasses
import os

import jax
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from configs import optical_flow
from experiments import eval_lib
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib
from experiments import workdir as workdir_lib
from experiments.tasks import optical_flow as flow_task
from perceiver_io.flow import formats as flow_formats
from perceiver_io.flow import synthetic
from perceiver_io.flow import viz
from tests.helpers import override_config as _override


def _save_png(path, array):
  Image.fromarray(np.asarray(array, np.uint8)).save(path)
  return str(path)


def _numpy_epe(pred, gt, valid):
  err = np.sqrt(((pred.astype(np.float64) - gt) ** 2).sum(-1))
  return err[valid > 0].mean()


@pytest.fixture(scope='module')
def flow_run(tmp_path_factory):
  """Tiny config, 2 steps: step 0 un-augmented (curriculum), step 1 augmented."""
  workdir = str(tmp_path_factory.mktemp('flow') / 'run')
  config = _override(optical_flow.get_config('tiny'), data__plain_fraction=0.5)
  previous = jax.config.read('jax_disable_most_optimizations')
  result = train_lib.train_and_evaluate(config, workdir)
  jax.config.update('jax_disable_most_optimizations', previous)
  run = workdir_lib.load_workdir(workdir)
  return workdir, config, result, run.model, run.variables


@pytest.mark.slow
def test_tiny_run_reports_epe_against_an_independent_zero_flow_baseline(
  flow_run,
):
  _, config, result, _, _ = flow_run
  assert result['step'] == 2
  metrics = result['eval']
  task = tasks.get(config)
  assert task.plain_steps() == 1
  # Zero-flow EPE from the generator directly: mean |gt| over valid pixels of
  # the eval pairs (indices after the 64 training pairs, model size 16x24).
  gen_config = synthetic.SyntheticFlowConfig(
    max_translation=4.0, background_max_translation=1.6
  )
  magnitudes = []
  for i in range(4):
    s = synthetic.sample_at(config.seed, 64 + i, 16, 24, gen_config)
    magnitudes.append(
      np.sqrt((s['flow'].astype(np.float64) ** 2).sum(-1))[s['valid'] > 0]
    )
  assert metrics['epe_zero_flow'] == pytest.approx(
    np.concatenate(magnitudes).mean(), rel=1e-5
  )
  assert metrics['num_examples'] == 4
  assert np.isfinite(metrics['epe']) and 0 <= metrics['fl_all'] <= 100


def test_loss_is_epe_in_pixels_on_valid_pixels_only():
  config = optical_flow.get_config('tiny')
  task = tasks.get(config)
  rng = np.random.default_rng(0)
  flow = rng.normal(scale=3, size=(2, 16, 24, 2)).astype(np.float32)
  valid = (rng.uniform(size=(2, 16, 24)) > 0.3).astype(np.float32)
  batch = {'flow': flow, 'valid': valid, 'weight': np.ones(2, np.float32)}
  # The model output is flow / 20 (official units): exact -> zero loss.
  total, count = task.loss_fn(flow / 20.0, batch)
  assert float(np.sum(total)) == pytest.approx(0.0, abs=1e-3)
  np.testing.assert_allclose(count, valid.sum((1, 2)))
  total, count = task.loss_fn(np.zeros_like(flow), batch)
  expected = np.sqrt((flow.astype(np.float64) ** 2).sum(-1))
  np.testing.assert_allclose(total, (expected * valid).sum((1, 2)), rtol=1e-5)
  # Invalid pixels do not count, however wrong.
  total2, _ = task.loss_fn(np.where(valid[..., None] > 0, 0.0, 1e3), batch)
  np.testing.assert_allclose(total2, total, rtol=1e-5)


def test_curriculum_batches_pair_each_scene_forward_and_backward():
  config = _override(optical_flow.get_config('tiny'), data__plain_fraction=0.5)
  task = tasks.get(config)
  stream = task.train_stream(0)
  plain = stream.batch(0)  # step 0 < plain_steps: un-augmented
  assert plain['image'].shape == (4, 2, 16, 24, 3)
  assert plain['image'].min() >= -1 and plain['image'].max() <= 1
  # Rows 0 and 1 are one scene in both orders.
  np.testing.assert_array_equal(plain['image'][1, 0], plain['image'][0, 1])
  np.testing.assert_array_equal(plain['image'][1, 1], plain['image'][0, 0])
  assert not np.allclose(plain['flow'][1], -plain['flow'][0])  # not a negation
  augmented = stream.batch(1)
  settings = task.generator_settings()
  again = flow_task.make_train_sample(settings, 4, plain=False)
  np.testing.assert_array_equal(augmented['image'][0], again['image'])
  unaugmented = flow_task.make_train_sample(settings, 4, plain=True)
  assert not np.array_equal(again['image'], unaugmented['image'])


def _warp(frame2, flow):
  h, w = frame2.shape[:2]
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  coords = [yy + flow[..., 1], xx + flow[..., 0]]
  return np.stack(
    [
      ndimage.map_coordinates(
        frame2[..., c].astype(np.float64), coords, order=1, mode='nearest'
      )
      for c in range(3)
    ],
    -1,
  )


def test_backward_pairs_have_exact_backward_flow():
  for index in range(3):
    forward = synthetic.sample_at(5, index, 64, 80)
    backward = synthetic.sample_at(5, index, 64, 80, backward=True)
    np.testing.assert_array_equal(backward['frame1'], forward['frame2'])
    np.testing.assert_array_equal(backward['frame2'], forward['frame1'])
    valid = backward['valid'] > 0
    frame1 = backward['frame1'].astype(np.float64)
    warped = np.abs(_warp(backward['frame2'], backward['flow']) - frame1)
    zero = np.abs(backward['frame2'].astype(np.float64) - frame1)
    assert warped.mean(-1)[valid].mean() < 0.25 * zero.mean(-1)[valid].mean()


def test_spatially_augmented_training_pairs_keep_flow_and_frames_consistent():
  # The training stream's scale/flip/crop must move frames and ground truth
  # together: warping frame 2 by the augmented flow must land on frame 1
  # (photometric jitter is switched off, as it changes colours on purpose).
  config = _override(
    optical_flow.get_config('cpu'),
    model__kwargs__train_size=(48, 64),
    data__render_height=60,
    data__render_width=80,
    data__motion_scale=0.15,
    data__augment=True,
  )
  task = tasks.get(config)
  settings = dataclasses.replace(task.generator_settings(), photometric=None)
  # Pooled over pairs: one pair with almost no motion has a small zero-flow
  # error and a ratio near 0.5 from bilinear resampling alone.
  warped_errors, zero_errors = [], []
  for position in range(6):
    sample = flow_task.make_train_sample(settings, position, plain=False)
    frames = (sample['image'].astype(np.float64) + 1.0) * 127.5
    assert frames.shape == (2, 48, 64, 3)
    valid = sample['valid'] > 0
    warped = np.abs(_warp(frames[1], sample['flow']) - frames[0])
    warped_errors.append(warped.mean(-1)[valid])
    zero_errors.append(np.abs(frames[1] - frames[0]).mean(-1)[valid])
  warped_error = np.concatenate(warped_errors).mean()
  assert warped_error < 0.4 * np.concatenate(zero_errors).mean()


# ---------------------------------------------------------------------------
# Tiled evaluation on benchmark layouts, and predict.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def benchmark_dirs(tmp_path_factory):
  """A Sintel layout (clean + final, one scene) and a KITTI layout, 30x50."""
  root = tmp_path_factory.mktemp('bench')
  pair = synthetic.sample_at(
    3,
    0,
    30,
    50,
    synthetic.SyntheticFlowConfig(
      max_translation=6, background_max_translation=3
    ),
  )
  sintel = root / 'sintel' / 'training'
  for pass_name in ('clean', 'final'):
    os.makedirs(sintel / pass_name / 'scene')
    _save_png(sintel / pass_name / 'scene' / 'frame_0001.png', pair['frame1'])
    _save_png(sintel / pass_name / 'scene' / 'frame_0002.png', pair['frame2'])
  os.makedirs(sintel / 'flow' / 'scene')
  gt_flow = np.where(pair['valid'][..., None] > 0, pair['flow'], 1e10)
  flow_formats.write_flo(sintel / 'flow' / 'scene' / 'frame_0001.flo', gt_flow)
  kitti = root / 'kitti' / 'training'
  for sub in ('image_2', 'flow_occ'):
    os.makedirs(kitti / sub)
  _save_png(kitti / 'image_2' / '000000_10.png', pair['frame1'])
  _save_png(kitti / 'image_2' / '000000_11.png', pair['frame2'])
  flow_formats.write_kitti_flow(
    kitti / 'flow_occ' / '000000_10.png', pair['flow'], pair['valid']
  )
  return root, pair


@pytest.mark.slow
def test_tiled_evaluation_on_sintel_and_kitti_layouts_matches_predict(
  flow_run, benchmark_dirs, tmp_path
):
  workdir, config, _, model, variables = flow_run
  root, pair = benchmark_dirs
  frames = [
    str(root / 'sintel' / 'training' / 'clean' / 'scene' / name)
    for name in ('frame_0001.png', 'frame_0002.png')
  ]
  task = tasks.get(config)
  out = str(tmp_path / 'pred.flo')
  task.predict_lines(model, variables, frames, output=out)
  pred = flow_formats.read_flo(out)
  assert pred.shape == (30, 50, 2)
  valid = pair['valid']
  err = np.sqrt(((pred.astype(np.float64) - pair['flow']) ** 2).sum(-1))
  magnitude = np.sqrt((pair['flow'].astype(np.float64) ** 2).sum(-1))
  outliers = ((err > 3) & (err > 0.05 * magnitude))[valid > 0].mean() * 100

  sintel = eval_lib.evaluate_workdir(
    workdir,
    config=_override(
      optical_flow.get_config('tiny'),
      data__eval_source=f'sintel:{root / "sintel"}',
    ),
  )['metrics']
  for pass_name in ('clean', 'final'):
    assert sintel[f'sintel_{pass_name}_epe'] == pytest.approx(
      err[valid > 0].mean(), rel=1e-4
    )
  assert sintel['num_examples'] == 2
  kitti = eval_lib.evaluate_workdir(
    workdir,
    config=_override(
      optical_flow.get_config('tiny'),
      data__eval_source=f'kitti:{root / "kitti"}',
    ),
  )['metrics']
  # KITTI stores flow rounded to 1/64 px.
  assert kitti['epe'] == pytest.approx(err[valid > 0].mean(), abs=0.01)
  assert kitti['fl_all'] == pytest.approx(outliers, abs=0.5)


def test_predict_two_frames_writes_flo_and_colour_png_and_prints_epe(
  flow_run, benchmark_dirs, tmp_path
):
  workdir, _, _, _, _ = flow_run
  root, pair = benchmark_dirs
  frames = [
    str(root / 'kitti' / 'training' / 'image_2' / name)
    for name in ('000000_10.png', '000000_11.png')
  ]
  gt = str(root / 'sintel' / 'training' / 'flow' / 'scene' / 'frame_0001.flo')
  out = str(tmp_path / 'out.flo')
  lines = predict_lib.predict_lines(
    workdir, frames, output=out, ground_truth=gt
  )
  pred = flow_formats.read_flo(out)
  png = np.asarray(Image.open(str(tmp_path / 'out.png')))
  np.testing.assert_array_equal(png, viz.flow_to_color(pred))
  epe_line = [l for l in lines if l.startswith('EPE ')][0]
  epe = float(epe_line.split()[1])
  zero = float(epe_line.split('zero-flow EPE ')[1].split()[0])
  assert epe == pytest.approx(
    _numpy_epe(pred, pair['flow'], pair['valid']), abs=1e-4
  )
  assert zero == pytest.approx(
    _numpy_epe(np.zeros_like(pred), pair['flow'], pair['valid']), abs=1e-4
  )


def test_bad_inputs_are_refused_and_nothing_is_written(flow_run, tmp_path):
  _, config, _, model, variables = flow_run
  task = tasks.get(config)
  rng = np.random.default_rng(0)
  rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  a = _save_png(tmp_path / 'a.png', rgb(20, 30))
  b = _save_png(tmp_path / 'b.png', rgb(20, 30))
  other_size = _save_png(tmp_path / 'c.png', rgb(20, 31))
  grey = _save_png(tmp_path / 'grey.png', rgb(20, 30)[..., 0])
  Image.fromarray(
    rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), 'RGBA'
  ).save(tmp_path / 'rgba.png')
  (tmp_path / 'trunc.png').write_bytes(
    (tmp_path / 'b.png').read_bytes()[:200]
  )  # A truncated frame.
  small1 = _save_png(tmp_path / 's1.png', rgb(10, 30))
  small2 = _save_png(tmp_path / 's2.png', rgb(10, 30))
  flo = tmp_path / 'good.flo'
  flow_formats.write_flo(flo, np.zeros((20, 30, 2), np.float32))
  data = flo.read_bytes()
  (tmp_path / 'magic.flo').write_bytes(b'XXXX' + data[4:])
  (tmp_path / 'short.flo').write_bytes(data[:-8])
  _save_png(tmp_path / 'kitti8.png', rgb(20, 30))  # 8-bit, not KITTI
  out_dir = tmp_path / 'out'
  os.makedirs(out_dir)
  out = str(out_dir / 'f.flo')
  cases = [
    (dict(inputs=[a]), 'exactly two image files'),
    (dict(inputs=[a, other_size]), 'different sizes'),
    (dict(inputs=[a, str(tmp_path / 'trunc.png')]), 'trunc.png: cannot read'),
    (
      dict(inputs=[a, b], ground_truth=str(tmp_path / 'magic.flo')),
      'magic number',
    ),
    (
      dict(inputs=[a, b], ground_truth=str(tmp_path / 'short.flo')),
      'truncated',
    ),
    (dict(inputs=[a, b], ground_truth=str(tmp_path / 'kitti8.png')), '16-bit'),
    (dict(inputs=[small1, small2]), 'smaller than the model'),
    (
      dict(inputs=[a, b], output=str(tmp_path / 'no' / 'f.flo')),
      'does not exist',
    ),
  ]
  for kwargs, message in cases:
    inputs = kwargs.pop('inputs')
    kwargs.setdefault('output', out)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
      task.predict_lines(model, variables, inputs, **kwargs)
    assert not os.listdir(out_dir), message
  # The documented alternative for small frames: pad them.
  task.predict_lines(
    model, variables, [small1, small2], output=out, pad_small=True
  )
  assert flow_formats.read_flo(out).shape == (10, 30, 2)
  # Grayscale and RGBA frames are read as evaluation reads them (gray
  # replicated, alpha dropped), not refused.
  task.predict_lines(
    model, variables, [grey, str(tmp_path / 'rgba.png')], output=out
  )
  assert flow_formats.read_flo(out).shape == (20, 30, 2)
  assert sorted(os.listdir(out_dir)) == ['f.flo', 'f.png']


def test_imported_hf_flow_checkpoint_predicts_pixels(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  from tests import hf_fixtures  # pylint: disable=g-import-not-at-top

  hf_model, _, _, _ = hf_fixtures.build('optical_flow', seed=2)  # 8x12 tiles
  path = str(tmp_path / 'hf_flow')
  hf_model.save_pretrained(path)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
  inputs = [_save_png(tmp_path / f'f{i}.png', frames[i]) for i in range(2)]
  config = _override(
    optical_flow.get_config('default'),
    init_from=f'hf:{path}',
    eval_tile_overlap=2,
  )
  out = str(tmp_path / 'hf.flo')
  predict_lib.predict_pretrained(config, inputs, output=out)
  pred = flow_formats.read_flo(out)
  normalised = frames.astype(np.float32)[None] / 255.0 * 2 - 1  # colab's rule
  patches = hf_fixtures.flow_patches_numpy(normalised).transpose(0, 1, 4, 2, 3)
  with torch.no_grad():
    logits = hf_model(inputs=torch.tensor(patches)).logits.numpy()[0]
  np.testing.assert_allclose(
    pred, logits * 20.0, rtol=1e-3, atol=1e-4 * np.abs(logits * 20).max()
  )
