"""Tests for the image-classification sources and pipeline.

Why: sharding, padding, shuffling and resuming must neither drop nor repeat an example, and every
source must give the labels its conventions promise. Each check compares with an independent
reference: hand-made image fixtures whose pixel values encode their identity, PIL/NumPy
prediction-path preprocessing, TFDS mock data.
"""

import csv
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import tensorflow_datasets as tfds

from perceiver_io.data import image as image_lib
from tests.helpers import smooth_image as _smooth_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------
# Import hygiene.
# ------------------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_tensorflow():
  code = (
    'import sys; import perceiver_io.data.image, perceiver_io.data.randaugment; '
    'assert "tensorflow" not in sys.modules, "tensorflow was imported"'
  )
  env = dict(
    os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', '')
  )
  result = subprocess.run(
    [sys.executable, '-c', code],
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------
# Sources and the pipeline.
# ------------------------------------------------------------------------------------------


def _write_image(path, value, size=(10, 12), mode='RGB'):
  array = np.full((size[0], size[1], 3), value, np.uint8)
  image = (
    Image.fromarray(array[:, :, 0], 'L')
    if mode == 'L'
    else Image.fromarray(array)
  )
  # PIL picks the format from the extension (.png / .jpeg); JPEG at top quality.
  image.save(
    path,
    format='JPEG' if path.lower().endswith(('.jpg', '.jpeg')) else 'PNG',
    quality=100,
  )


def _decode_value(batch_images):
  """Recovers the constant pixel value of each image from normalised pixels."""
  pixels = batch_images[:, 4, 4, :] * image_lib.STDDEV_RGB + image_lib.MEAN_RGB
  return np.round(pixels[:, 0]).astype(int)


@pytest.fixture
def class_tree(tmp_path):
  root = tmp_path / 'tree'
  names = ['n002', 'n000', 'n001']
  for i, name in enumerate(sorted(names)):
    (root / name).mkdir(parents=True)
    _write_image(str(root / name / 'a.png'), 10 + 50 * i)
    _write_image(str(root / name / 'b.JPEG'), 20 + 50 * i)
  _write_image(str(root / 'n001' / 'grey.png'), 200, mode='L')
  (root / 'n001' / 'notes.txt').write_text('not an image')
  return root


def test_class_per_folder_source(class_tree):
  it, info = image_lib.make_image_dataset(
    str(class_tree), 'validation', batch_size=4, train=False, image_size=8
  )
  batches = list(it)
  assert (
    info['class_names'] == ['n000', 'n001', 'n002'] and info['num_classes'] == 3
  )
  assert (
    info['num_examples'] == 7 and info['num_batches'] == 2 and len(batches) == 2
  )
  labels = np.concatenate([b['label'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  values = np.concatenate([_decode_value(b['image']) for b in batches])
  assert mask.tolist() == [1] * 7 + [0]
  # Sorted files per sorted folder; PNG values are exact, JPEG within a few levels.
  np.testing.assert_array_equal(labels[:7], [0, 0, 1, 1, 1, 2, 2])
  np.testing.assert_allclose(
    values[:7], [10, 20, 60, 70, 200, 110, 120], atol=3
  )
  assert np.all(batches[-1]['image'][-1] == 0)


def test_pipeline_eval_equals_pil_numpy_prediction_path(tmp_path):
  """What `predict` computes (PIL decode + eval_preprocess_numpy) is what evaluation sees."""
  root = tmp_path / 'photos'
  (root / 'only').mkdir(parents=True)
  paths = []
  for i, (height, width) in enumerate([(90, 120), (64, 48)]):
    for ext in ('jpg', 'png'):
      paths.append(str(root / 'only' / f'{i}.{ext}'))
      Image.fromarray(_smooth_image(height, width, seed=i)).save(
        paths[-1], quality=90
      )
  it, _ = image_lib.make_image_dataset(
    str(root), 'validation', batch_size=4, train=False, image_size=32
  )
  batch = next(it)
  for image, path in zip(batch['image'], sorted(paths)):
    expected = image_lib.eval_preprocess_numpy(
      image_lib.load_image_numpy(path), image_size=32
    )
    np.testing.assert_allclose(image, expected, atol=1e-4, err_msg=path)


def test_class_list_from_csv_sets_the_indices_and_unknown_folder_is_an_error(
  class_tree, tmp_path
):
  class_csv = tmp_path / 'classes.csv'
  with open(class_csv, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['class_index', 'wnid', 'name_from_filename'])
    for row in [
      (1, 'n000', 'zero'),
      (0, 'n002', 'two'),
      (3, 'n999', 'other'),
      (2, 'n001', 'one'),
    ]:
      writer.writerow(row)
  assert image_lib.load_class_names(str(class_csv)) == [
    'n002',
    'n000',
    'n001',
    'n999',
  ]
  it, info = image_lib.make_image_dataset(
    str(class_tree),
    'train',
    batch_size=7,
    train=False,
    image_size=8,
    class_names=str(class_csv),
  )
  batch = next(it)
  assert info['num_classes'] == 4
  np.testing.assert_array_equal(batch['label'], [1, 1, 2, 2, 2, 0, 0])
  with pytest.raises(ValueError, match=r"'n001'.*first are: n000, n002"):
    image_lib.make_image_dataset(
      str(class_tree),
      'train',
      batch_size=2,
      train=False,
      class_names=['n000', 'n002'],
    )


def test_labels_csv_source_with_integer_and_name_labels(tmp_path):
  root = tmp_path / 'flat'
  (root / 'img').mkdir(parents=True)
  rows = []
  for i in range(5):
    _write_image(str(root / 'img' / f'{i}.png'), 30 * i + 5)
    rows.append((f'img/{i}.png', (2 * i) % 3))
  with open(root / 'labels.csv', 'w', newline='') as f:
    csv.writer(f).writerows([('filename', 'label')] + rows)
  it, info = image_lib.make_image_dataset(
    str(root), 'test', batch_size=5, train=False, image_size=8, num_classes=4
  )
  batch = next(it)
  assert info['num_classes'] == 4 and info['class_names'] is None
  np.testing.assert_array_equal(batch['label'], [0, 2, 1, 0, 2])
  np.testing.assert_array_equal(
    _decode_value(batch['image']), [5, 35, 65, 95, 125]
  )
  # The imagenet_samples layout: file, class_index, wnid; checked against the class list.
  with open(root / 'labels.csv', 'w', newline='') as f:
    csv.writer(f).writerows(
      [('file', 'class_index', 'wnid')]
      + [(name, label, f'w{label}') for name, label in rows]
    )
  _, info = image_lib.make_image_dataset(
    str(root), 'test', batch_size=5, train=False, class_names=['w0', 'w1', 'w2']
  )
  assert info['num_examples'] == 5
  with pytest.raises(ValueError, match='different order'):
    image_lib.make_image_dataset(
      str(root),
      'test',
      batch_size=5,
      train=False,
      class_names=['w1', 'w0', 'w2'],
    )
  with open(root / 'labels.csv', 'w', newline='') as f:
    csv.writer(f).writerows(
      [('file', 'wnid')] + [(name, f'w{label}') for name, label in rows]
    )
  it, _ = image_lib.make_image_dataset(
    str(root),
    'test',
    batch_size=5,
    train=False,
    class_names=['w2', 'w1', 'w0'],
    image_size=8,
  )
  np.testing.assert_array_equal(next(it)['label'], [2, 0, 1, 2, 0])
  with pytest.raises(ValueError, match='pass class_names'):
    image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False)
  with open(root / 'labels.csv', 'a', newline='') as f:
    csv.writer(f).writerow(('img/missing.png', 'w0'))
  with pytest.raises(FileNotFoundError, match='missing.png'):
    image_lib.make_image_dataset(
      str(root),
      'test',
      batch_size=5,
      train=False,
      class_names=['w0', 'w1', 'w2'],
    )


def test_bad_sources_and_class_lists_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='Unknown image source'):
    image_lib.make_image_dataset(
      'no/such/dir', 'train', batch_size=2, train=True
    )
  with pytest.raises(ValueError, match='synthetic'):
    image_lib.make_image_dataset(
      'synthetic:x', 'train', batch_size=2, train=True
    )
  with pytest.raises(ValueError, match='splits train and test'):
    image_lib.make_image_dataset('synthetic:3', 'dev', batch_size=2, train=True)
  with pytest.raises(ValueError, match='num_classes=7'):
    image_lib.make_image_dataset(
      'digits', 'train', batch_size=2, train=True, num_classes=7
    )
  dup = tmp_path / 'dup.txt'
  dup.write_text('a\nb\na\n')
  with pytest.raises(ValueError, match='unique'):
    image_lib.load_class_names(str(dup))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='class sub-folders'):
    image_lib.make_image_dataset(
      str(tmp_path / 'empty'), 'train', batch_size=2, train=True
    )


@pytest.fixture
def numbered_folder(tmp_path):
  """11 PNGs whose constant pixel value 20 * i + 10 identifies example i."""
  root = tmp_path / 'numbered'
  (root / 'c').mkdir(parents=True)
  for i in range(11):
    _write_image(str(root / 'c' / f'{i:02d}.png'), 20 * i + 10)
  return root


def test_eval_sharding_is_disjoint_covering_and_padded(numbered_folder):
  seen = []
  for process_index in range(3):
    it, info = image_lib.make_image_dataset(
      str(numbered_folder),
      'validation',
      batch_size=2,
      train=False,
      image_size=8,
      process_index=process_index,
      process_count=3,
    )
    batches = list(it)
    # ceil(11 / 3) = 4 examples -> 2 batches on every process.
    assert info['num_batches'] == 2 and len(batches) == 2
    mask = np.concatenate([b['mask'] for b in batches]).astype(bool)
    values = np.concatenate([_decode_value(b['image']) for b in batches])
    assert mask.sum() == info['num_examples_this_process']
    assert np.all(np.concatenate([b['image'] for b in batches])[~mask] == 0)
    seen.extend(values[mask].tolist())
  assert sorted(seen) == [20 * i + 10 for i in range(11)]


def test_train_sharding_is_disjoint_and_covering(numbered_folder):
  seen = []
  for process_index in range(2):
    it, info = image_lib.make_image_dataset(
      str(numbered_folder),
      'train',
      batch_size=1,
      train=True,
      image_size=8,
      repeat=False,
      randaugment=None,
      geometry='resize',
      process_index=process_index,
      process_count=2,
    )
    seen.extend(int(v) for b in it for v in _decode_value(b['image']))
  assert sorted(seen) == [20 * i + 10 for i in range(11)]


def test_train_stream_is_deterministic_reshuffles_per_epoch_and_resumes(
  numbered_folder,
):
  def stream(seed, start_batch=0, n=4):
    it, _ = image_lib.make_image_dataset(
      str(numbered_folder),
      'train',
      batch_size=11,
      train=True,
      image_size=8,
      seed=seed,
      randaugment=None,
      geometry='resize',
      start_batch=start_batch,
    )
    return [_decode_value(next(it)['image']) for _ in range(n)]

  first = stream(0)
  for (
    epoch
  ) in first:  # batch size = shard size: each batch is exactly one epoch.
    assert sorted(epoch) == [20 * i + 10 for i in range(11)]
  assert any(not np.array_equal(first[0], e) for e in first[1:])
  np.testing.assert_array_equal(np.stack(first), np.stack(stream(0)))
  np.testing.assert_array_equal(
    np.stack(first[2:]), np.stack(stream(0, start_batch=2, n=2))
  )
  assert not np.array_equal(np.stack(first), np.stack(stream(1)))


def test_augmented_train_batches_are_reproducible_and_resume_exactly():
  def batches(seed, start_batch=0, n=3):
    it, _ = image_lib.make_image_dataset(
      'synthetic:4:40',
      'train',
      batch_size=4,
      train=True,
      image_size=24,
      seed=seed,
      start_batch=start_batch,
      geometry='imagenet',
    )
    return [next(it) for _ in range(n)]

  run = batches(3)
  again = batches(3, start_batch=1, n=2)
  for a, b in zip(run[1:], again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  for b in run:
    assert b['image'].shape == (4, 24, 24, 3) and b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32 and b['mask'].tolist() == [1, 1, 1, 1]
  assert not np.array_equal(run[0]['image'], batches(4, n=1)[0]['image'])


def test_digits_source_shapes_split_sizes_and_content():
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

  it, info = image_lib.make_image_dataset(
    'digits', 'train', batch_size=32, train=False, image_size=16
  )
  train = list(it)
  assert info['num_examples'] == 1437 and info['num_classes'] == 10
  assert sum(int(b['mask'].sum()) for b in train) == 1437
  it, info = image_lib.make_image_dataset(
    'digits', 'test', batch_size=32, train=False, image_size=16
  )
  test = list(it)
  assert info['num_examples'] == 360 and len(test) == info['num_batches'] == 12
  labels = np.concatenate([b['label'] for b in test])[:360]
  assert np.bincount(labels, minlength=10).min() >= 34  # stratified split
  assert test[0]['image'].shape == (32, 16, 16, 3)
  # Every test image is the bicubic 2x upscale of an original 8x8 digit (scaled 16 -> 255).
  digits = sk_datasets.load_digits()
  first = test[0]['image'][0] * image_lib.STDDEV_RGB + image_lib.MEAN_RGB
  candidates = [
    i for i in range(len(digits.target)) if digits.target[i] == labels[0]
  ]
  errors = [
    np.abs(
      image_lib.resize_bicubic_numpy(
        np.repeat(np.round(digits.images[i] * 255 / 16)[..., None], 3, -1),
        16,
        16,
      )
      - first
    ).max()
    for i in candidates
  ]
  assert min(errors) < 1e-2


def test_synthetic_source_is_deterministic_and_labelled():
  it, info = image_lib.make_image_dataset(
    'synthetic:3:10', 'test', batch_size=4, train=False, image_size=16
  )
  first = list(it)
  it, _ = image_lib.make_image_dataset(
    'synthetic:3:10', 'test', batch_size=4, train=False, image_size=16
  )
  for a, b in zip(first, it):
    np.testing.assert_array_equal(a['image'], b['image'])
  labels = np.concatenate([b['label'] for b in first])[:10]
  assert info['num_classes'] == 3 and set(labels.tolist()) <= {0, 1, 2}
  # Same class -> similar mean colour; this is what makes the data learnable.
  images = np.concatenate([b['image'] for b in first])[:10]
  means = images.mean(axis=(1, 2))
  for c in set(labels.tolist()):
    group = means[labels == c]
    assert np.abs(group - group.mean(0)).max() < 0.1


def test_tfds_imagenet2012_with_mock_data(tmp_path):
  with tfds.testing.mock_data(
    num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    it, info = image_lib.make_image_dataset(
      'imagenet2012',
      'validation',
      batch_size=4,
      train=False,
      image_size=16,
      manual_dir=str(tmp_path),
    )
    batches = list(it)
    assert info['num_classes'] == 1000 and info['num_batches'] == 2
    # TFDS labels are 0..999 in sorted-wnid order (0 = n01440764 tench): no background class.
    assert info['class_names'][0] == 'n01440764' and info[
      'class_names'
    ] == sorted(info['class_names'])
    assert [b['mask'].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 0, 0]]
    labels = np.concatenate([b['label'] for b in batches])
    assert labels.min() >= 0 and labels.max() < 1000
    assert batches[0]['image'].shape == (4, 16, 16, 3)
    it, _ = image_lib.make_image_dataset(
      'imagenet2012',
      'train',
      batch_size=4,
      train=True,
      image_size=16,
      manual_dir=str(tmp_path),
      randaugment=(2, 9),
    )
    batch = next(it)
    assert (
      batch['image'].shape == (4, 16, 16, 3)
      and np.isfinite(batch['image']).all()
    )


def test_unprepared_imagenet_without_manual_dir_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='manual_dir'):
    image_lib.make_image_dataset(
      'imagenet2012',
      'validation',
      batch_size=4,
      train=False,
      data_dir=str(tmp_path),
    )
  with pytest.raises(FileNotFoundError, match='manual_dir'):
    image_lib.make_image_dataset(
      'imagenet2012',
      'validation',
      batch_size=4,
      train=False,
      data_dir=str(tmp_path),
      manual_dir=str(tmp_path / 'nope'),
    )
