"""Tests for the image-classification pipeline and RandAugment.

Why: the ImageNet recipe's numbers depend on exact preprocessing (crop window, bicubic kernel,
normalisation) and on augmentation/mixing doing what the paper says. Each check here compares with
an independent reference: PIL's ImageOps/ImageEnhance, NumPy formulas, JAX's resampler, hand-made
image fixtures whose pixel values encode their identity.
"""

import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps
import pytest

import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_io.data import image as image_lib
from perceiver_io.data import randaugment as ra

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_image(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth_image(height, width, seed=0):
  small = _random_image(max(height // 16, 2), max(width // 16, 2), seed)
  return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


# ------------------------------------------------------------------------------------------
# Import hygiene.
# ------------------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_tensorflow():
  code = ('import sys; import perceiver_io.data.image, perceiver_io.data.randaugment; '
          'assert "tensorflow" not in sys.modules, "tensorflow was imported"')
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------
# RandAugment ops against PIL / NumPy references.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize('name', ra.OP_NAMES)
@pytest.mark.parametrize('magnitude', [5, 10])
def test_each_op_runs_and_keeps_shape_and_dtype(name, magnitude):
  image = _random_image(23, 31)
  out = ra.apply_op(image, name, magnitude, tf.constant([3, 4]))
  assert out.dtype == tf.uint8
  assert tuple(out.shape) == image.shape


def test_sixteen_ops_in_the_tensorflow_tpu_order():
  assert ra.OP_NAMES == (
      'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
      'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
      'Cutout', 'SolarizeAdd')


def _pil(op, image, *args):
  return np.asarray(op(Image.fromarray(image), *args), np.int32)


def test_pixel_ops_match_pil_exactly():
  image = _random_image(20, 24, seed=1)
  image[..., 1] = image[..., 1] // 4 + 60  # a channel with a narrow range
  image[..., 2] = 9  # a flat channel
  np.testing.assert_array_equal(ra.equalize(image).numpy(), _pil(ImageOps.equalize, image))
  np.testing.assert_array_equal(ra.invert(image).numpy(), _pil(ImageOps.invert, image))
  np.testing.assert_array_equal(ra.posterize(image, 2).numpy(),
                                _pil(ImageOps.posterize, image, 2))
  np.testing.assert_array_equal(ra.solarize(image, 128).numpy(),
                                _pil(ImageOps.solarize, image, 128))
  # AutoContrast: PIL computes the lookup table in float64, we in float32: allow one level.
  np.testing.assert_allclose(ra.autocontrast(image).numpy(), _pil(ImageOps.autocontrast, image),
                             atol=1)


def test_solarize_add_matches_numpy_formula():
  image = _random_image(10, 12, seed=2)
  expected = np.where(image < 128, np.clip(image.astype(int) + 55, 0, 255), image)
  np.testing.assert_array_equal(ra.solarize_add(image, 55).numpy(), expected)


@pytest.mark.parametrize('factor', [0.3, 1.9])
def test_enhance_ops_match_pil(factor):
  # Rounding differs (PIL rounds, the TF port truncates) and TF's grey weights are 0.2989/0.587/
  # 0.114 vs PIL's 0.299/0.587/0.114: a few levels of difference, measured max 2.
  image = _smooth_image(32, 40, seed=3)
  for ours, theirs in [(ra.color, ImageEnhance.Color), (ra.contrast, ImageEnhance.Contrast),
                       (ra.brightness, ImageEnhance.Brightness),
                       (ra.sharpness, ImageEnhance.Sharpness)]:
    expected = np.asarray(theirs(Image.fromarray(image)).enhance(factor), np.int32)
    np.testing.assert_allclose(ours(image, factor).numpy(), expected, atol=2,
                               err_msg=ours.__name__)


def test_enhance_factor_one_is_identity():
  # At magnitude 5, the official recipe's enhance factor is 5/10 * 1.8 + 0.1 == 1.0.
  image = _random_image(9, 9, seed=4)
  for name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    np.testing.assert_array_equal(ra.apply_op(image, name, 5, [0, 0]).numpy(), image)


def test_rotate_by_90_degrees_is_numpy_rot90():
  image = _random_image(9, 9, seed=5)
  np.testing.assert_array_equal(ra.rotate(image, 90.0).numpy(), np.rot90(image, 1))
  np.testing.assert_array_equal(ra.rotate(image, -90.0).numpy(), np.rot90(image, -1))


def test_translate_and_shear_match_numpy_with_grey_fill():
  image = _random_image(12, 15, seed=6)
  shifted = np.full_like(image, 128)
  shifted[:, :-5] = image[:, 5:]
  np.testing.assert_array_equal(ra.translate_x(image, 5.0).numpy(), shifted)
  shifted = np.full_like(image, 128)
  shifted[3:] = image[:-3]
  np.testing.assert_array_equal(ra.translate_y(image, -3.0).numpy(), shifted)
  # Shear with level 1: output (x, y) samples input (x + y, y).
  sheared = np.full_like(image, 128)
  for y in range(12):
    for x in range(15):
      if x + y < 15:
        sheared[y, x] = image[y, x + y]
  np.testing.assert_array_equal(ra.shear_x(image, 1.0).numpy(), sheared)
  np.testing.assert_array_equal(ra.shear_y(image.transpose(1, 0, 2), 1.0).numpy(),
                                sheared.transpose(1, 0, 2))


def test_cutout_fills_one_clipped_square():
  image = np.full((30, 40, 3), 7, np.uint8)
  for seed in range(5):
    out = ra.cutout(image, 6, tf.constant([seed, 1])).numpy()
    filled = np.all(out == 128, axis=-1)
    assert np.all(out[~filled] == 7)
    rows, cols = np.nonzero(filled)
    assert filled.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a full rectangle
    assert np.ptp(rows) + 1 <= 12 and np.ptp(cols) + 1 <= 12


def test_randaugment_is_deterministic_for_a_seed_eager_and_in_tf_data():
  image = _random_image(40, 48, seed=7)
  first = ra.randaugment(image, [5, 6]).numpy()
  np.testing.assert_array_equal(first, ra.randaugment(image, [5, 6]).numpy())
  ds = tf.data.Dataset.from_tensors(image).map(
      lambda x: ra.randaugment(x, tf.constant([5, 6], tf.int64)))
  np.testing.assert_array_equal(first, next(iter(ds)).numpy())
  # 16^4 op sequences: two other seeds giving this exact output would be a broken seed path.
  others = [ra.randaugment(image, [5, s]).numpy() for s in (7, 8)]
  assert any(not np.array_equal(first, other) for other in others)


def test_randaugment_layers_and_probability():
  image = _random_image(16, 16, seed=8)
  np.testing.assert_array_equal(ra.randaugment(image, [1, 2], num_layers=0).numpy(), image)
  # With an apply probability of 0 nothing may change.
  np.testing.assert_array_equal(
      ra.randaugment(image, [1, 2], op_prob_range=(0.0, 0.0)).numpy(), image)
  with pytest.raises(ValueError, match='magnitude'):
    ra.randaugment(image, [1, 2], magnitude=11)
  with pytest.raises(ValueError, match='uint8'):
    ra.randaugment(image.astype(np.float32), [1, 2])
  with pytest.raises(ValueError, match='Unknown RandAugment op'):
    ra.apply_op(image, 'Blur', 5, [1, 2])


# ------------------------------------------------------------------------------------------
# Single-example preprocessing.
# ------------------------------------------------------------------------------------------


def test_train_augment_and_preprocess_shapes_dtypes_and_ranges():
  image = _random_image(90, 120, seed=9)
  for seed in range(3):
    augmented = image_lib.train_augment(image, tf.constant([seed, 0]), image_size=64)
    assert augmented.dtype == tf.uint8 and augmented.shape[-1] == 3
    assert augmented.shape[0] <= 90 and augmented.shape[1] <= 120
    # Before normalisation: bicubic without clamping may overshoot [0, 255] a little.
    resized = image_lib.resize_bicubic_tf(augmented, 64).numpy()
    assert resized.dtype == np.float32 and resized.shape == (64, 64, 3)
    assert resized.min() >= -0.25 * 255 and resized.max() <= 1.25 * 255
    out = image_lib.train_preprocess(image, tf.constant([seed, 0]), image_size=64).numpy()
    assert out.dtype == np.float32 and out.shape == (64, 64, 3)
    np.testing.assert_allclose(out * image_lib.STDDEV_RGB + image_lib.MEAN_RGB, resized,
                               atol=1e-3)
  a = image_lib.train_preprocess(image, tf.constant([1, 2]), image_size=32).numpy()
  b = image_lib.train_preprocess(image, tf.constant([1, 2]), image_size=32).numpy()
  np.testing.assert_array_equal(a, b)


def test_inception_crop_statistics_without_randaugment():
  # Crops cover 8%..100% of the area with aspect ratio in [3/4, 4/3] (up to rounding).
  image = _random_image(200, 200, seed=10)
  areas = []
  for seed in range(20):
    crop = image_lib.train_augment(image, tf.constant([seed, 3]), randaugment=None)
    h, w = crop.shape[:2]
    areas.append(h * w / 200 / 200)
    assert 0.75 - 0.02 <= w / h <= 4 / 3 + 0.02 or (h, w) == (175, 175)
  assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
  assert len(set(np.round(areas, 4))) > 10


def test_center_crop_window_by_hand():
  # 224 / 256 * 375 = 328.125 -> 328; offsets ((500 - 328) + 1) // 2 = 86 and
  # ((375 - 328) + 1) // 2 = 24.
  assert image_lib.center_crop_window(375, 500) == (24, 86, 328)
  assert image_lib.center_crop_window(500, 375) == (86, 24, 328)
  assert image_lib.center_crop_window(1, 7) == (0, 3, 1)


def _normalize(x):
  return (x - np.array([0.485, 0.456, 0.406]) * 255) / (np.array([0.229, 0.224, 0.225]) * 255)


def _pil_float_bicubic(crop, size):
  # PIL's bicubic on float ('F') images: Keys a=-0.5, no clamping; without antialiasing when
  # upsampling, so it is an independent reference for the upsampling case.
  return np.stack([np.asarray(Image.fromarray(crop[:, :, c].astype(np.float32), mode='F')
                              .resize((size, size), Image.BICUBIC)) for c in range(3)], -1)


def _jax_bicubic(crop, size):
  side = crop.shape[0]
  out = jax.image.scale_and_translate(jnp.asarray(crop, jnp.float32), (size, size, 3), (0, 1),
                                      jnp.array([size / side] * 2), jnp.zeros(2), 'cubic',
                                      antialias=False)
  return np.asarray(out)


@pytest.mark.parametrize('shape', [(375, 500), (300, 300), (120, 90), (64, 400)])
def test_eval_preprocess_matches_independent_references(shape):
  """TF eval preprocessing vs (a) our NumPy twin, (b) JAX, (c) PIL for upsampling.

  Measured (max |diff| in normalised units, random-noise images, i.e. the worst case):
  TF vs NumPy twin 2e-6; TF vs JAX 3.7e-3 (TF tabulates the cubic kernel in 1/1024 steps, i.e.
  0.2 grey levels); TF vs PIL 'F' (upsampling only) 3.5e-3. PIL antialiases when downsampling,
  so it is no reference there.
  """
  height, width = shape
  image = _random_image(height, width, seed=11)
  ours_tf = image_lib.eval_preprocess(image).numpy()
  assert ours_tf.shape == (224, 224, 3) and ours_tf.dtype == np.float32
  np.testing.assert_allclose(ours_tf, image_lib.eval_preprocess_numpy(image), atol=1e-4)
  side = int(224 / 256 * min(height, width))
  top, left = (height - side + 1) // 2, (width - side + 1) // 2
  crop = image[top:top + side, left:left + side].astype(np.float32)
  np.testing.assert_allclose(ours_tf, _normalize(_jax_bicubic(crop, 224)), atol=5e-3)
  if side <= 224:
    np.testing.assert_allclose(ours_tf, _normalize(_pil_float_bicubic(crop, 224)), atol=5e-3)


def test_eval_preprocess_numpy_accepts_grey_and_rejects_bad_input():
  grey = _random_image(50, 60)[:, :, 0]
  out = image_lib.eval_preprocess_numpy(grey, image_size=32)
  assert out.shape == (32, 32, 3)
  np.testing.assert_allclose(out[..., 0] * image_lib.STDDEV_RGB[0] + image_lib.MEAN_RGB[0],
                             out[..., 1] * image_lib.STDDEV_RGB[1] + image_lib.MEAN_RGB[1],
                             atol=1e-3)
  with pytest.raises(ValueError, match='uint8'):
    image_lib.eval_preprocess_numpy(grey.astype(np.float32))
  with pytest.raises(ValueError, match='shape'):
    image_lib.eval_preprocess_numpy(np.zeros((4, 4, 2), np.uint8))


# ------------------------------------------------------------------------------------------
# MixUp / CutMix / label smoothing.
# ------------------------------------------------------------------------------------------


def _constant_batch(batch, size=8):
  """Example i is the constant image i + 1 with its own class i (one-hot over `batch` classes)."""
  images = jnp.broadcast_to(jnp.arange(1.0, batch + 1.0)[:, None, None, None],
                            (batch, size, size, 3))
  return images, jax.nn.one_hot(jnp.arange(batch), batch)


def _check_cutmix_rows(mixed, mixed_labels, rows):
  """CutMix rows hold only the two source values; the label weight is the kept-pixel fraction."""
  batch = mixed.shape[0]
  for i in rows:
    partner = batch - 1 - i
    values = mixed[i, :, :, 0]
    own, other = np.mean(values == i + 1), np.mean(values == partner + 1)
    assert own + other == pytest.approx(1.0)
    assert mixed_labels[i, i] == pytest.approx(own, abs=1e-5)
    assert mixed_labels[i, partner] == pytest.approx(other, abs=1e-5)


def test_smooth_labels_formula():
  smoothed = image_lib.smooth_labels(jnp.array([[0.0, 1.0, 0.0, 0.0]]), 0.1)
  np.testing.assert_allclose(smoothed, [[0.025, 0.925, 0.025, 0.025]], atol=1e-7)
  with pytest.raises(ValueError, match='smoothing'):
    image_lib.smooth_labels(jnp.ones((1, 2)), 1.0)


def test_cutmix_label_ratio_equals_pasted_area_fraction():
  images, labels = _constant_batch(8, size=16)
  mix = jax.jit(lambda key, x, y: image_lib.mixup_cutmix(key, x, y, None, True))
  mixed, mixed_labels = map(np.asarray, mix(jax.random.PRNGKey(0), images, labels))
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, atol=1e-6)
  _check_cutmix_rows(mixed, mixed_labels, range(8))
  assert len({float(mixed_labels[i, i]) for i in range(8)}) > 4  # the boxes vary


def test_mixup_and_cutmix_halves_like_the_official_code():
  from scipy import stats  # pylint: disable=g-import-not-at-top
  batch = 2000
  images, labels = _constant_batch(batch)
  mix = jax.jit(lambda key, x, y: image_lib.mixup_cutmix(key, x, y, 0.2, True))
  mixed, mixed_labels = map(np.asarray, mix(jax.random.PRNGKey(3), images, labels))
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, atol=1e-5)
  # First half: MixUp, a constant image r * (i + 1) + (1 - r) * (partner + 1).
  half = batch // 2
  own_value = np.arange(1.0, half + 1.0)
  partner_value = batch - np.arange(half)
  assert np.ptp(mixed[:half], axis=(1, 2, 3)).max() < 1e-3
  ratios = (mixed[:half, 0, 0, 0] - partner_value) / (own_value - partner_value)
  np.testing.assert_allclose(np.diagonal(mixed_labels)[:half], ratios, atol=1e-4)
  # The ratios are Beta(0.2, 0.2) samples (U-shaped): compare the empirical CDF with scipy's.
  for x in (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
    assert np.mean(ratios <= x) == pytest.approx(stats.beta.cdf(x, 0.2, 0.2), abs=0.06)
  # Second half: CutMix.
  _check_cutmix_rows(mixed, mixed_labels, range(half, batch, 37))


def test_no_mixing_is_identity_and_bad_alpha_is_an_error():
  images, labels = _constant_batch(4)
  same_images, same_labels = image_lib.mixup_cutmix(jax.random.PRNGKey(1), images, labels, None,
                                                    False)
  np.testing.assert_array_equal(same_images, images)
  np.testing.assert_array_equal(same_labels, labels)
  with pytest.raises(ValueError, match='mixup_alpha'):
    image_lib.mixup_cutmix(jax.random.PRNGKey(1), images, labels, 0.0, False)


# ------------------------------------------------------------------------------------------
# Sources and the pipeline.
# ------------------------------------------------------------------------------------------


def _write_image(path, value, size=(10, 12), mode='RGB'):
  array = np.full((size[0], size[1], 3), value, np.uint8)
  image = Image.fromarray(array[:, :, 0], 'L') if mode == 'L' else Image.fromarray(array)
  # PIL picks the format from the extension (.png / .jpeg); JPEG at top quality.
  image.save(path, format='JPEG' if path.lower().endswith(('.jpg', '.jpeg')) else 'PNG',
             quality=100)


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
  it, info = image_lib.make_image_dataset(str(class_tree), 'validation', batch_size=4,
                                          train=False, image_size=8)
  batches = list(it)
  assert info['class_names'] == ['n000', 'n001', 'n002'] and info['num_classes'] == 3
  assert info['num_examples'] == 7 and info['num_batches'] == 2 and len(batches) == 2
  labels = np.concatenate([b['label'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  values = np.concatenate([_decode_value(b['image']) for b in batches])
  assert mask.tolist() == [1] * 7 + [0]
  # Sorted files per sorted folder; PNG values are exact, JPEG within a few levels.
  np.testing.assert_array_equal(labels[:7], [0, 0, 1, 1, 1, 2, 2])
  np.testing.assert_allclose(values[:7], [10, 20, 60, 70, 200, 110, 120], atol=3)
  assert np.all(batches[-1]['image'][-1] == 0)


def test_pipeline_eval_equals_pil_numpy_prediction_path(tmp_path):
  """What `predict` computes (PIL decode + eval_preprocess_numpy) is what evaluation sees."""
  root = tmp_path / 'photos'
  (root / 'only').mkdir(parents=True)
  paths = []
  for i, (height, width) in enumerate([(90, 120), (64, 48)]):
    for ext in ('jpg', 'png'):
      paths.append(str(root / 'only' / f'{i}.{ext}'))
      Image.fromarray(_smooth_image(height, width, seed=i)).save(paths[-1], quality=90)
  it, _ = image_lib.make_image_dataset(str(root), 'validation', batch_size=4, train=False,
                                       image_size=32)
  batch = next(it)
  for image, path in zip(batch['image'], sorted(paths)):
    expected = image_lib.eval_preprocess_numpy(image_lib.load_image_numpy(path), image_size=32)
    np.testing.assert_allclose(image, expected, atol=1e-4, err_msg=path)


def test_class_list_from_csv_sets_the_indices_and_unknown_folder_is_an_error(class_tree, tmp_path):
  class_csv = tmp_path / 'classes.csv'
  with open(class_csv, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['class_index', 'wnid', 'name_from_filename'])
    for row in [(1, 'n000', 'zero'), (0, 'n002', 'two'), (3, 'n999', 'other'), (2, 'n001', 'one')]:
      writer.writerow(row)
  assert image_lib.load_class_names(str(class_csv)) == ['n002', 'n000', 'n001', 'n999']
  it, info = image_lib.make_image_dataset(str(class_tree), 'train', batch_size=7, train=False,
                                          image_size=8, class_names=str(class_csv))
  batch = next(it)
  assert info['num_classes'] == 4
  np.testing.assert_array_equal(batch['label'], [1, 1, 2, 2, 2, 0, 0])
  with pytest.raises(ValueError, match=r"'n001'.*first are: n000, n002"):
    image_lib.make_image_dataset(str(class_tree), 'train', batch_size=2, train=False,
                                 class_names=['n000', 'n002'])


def test_labels_csv_source_with_integer_and_name_labels(tmp_path):
  root = tmp_path / 'flat'
  (root / 'img').mkdir(parents=True)
  rows = []
  for i in range(5):
    _write_image(str(root / 'img' / f'{i}.png'), 30 * i + 5)
    rows.append((f'img/{i}.png', (2 * i) % 3))
  with open(root / 'labels.csv', 'w', newline='') as f:
    csv.writer(f).writerows([('filename', 'label')] + rows)
  it, info = image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False,
                                          image_size=8, num_classes=4)
  batch = next(it)
  assert info['num_classes'] == 4 and info['class_names'] is None
  np.testing.assert_array_equal(batch['label'], [0, 2, 1, 0, 2])
  np.testing.assert_array_equal(_decode_value(batch['image']), [5, 35, 65, 95, 125])
  # The imagenet_samples layout: file, class_index, wnid; checked against the class list.
  with open(root / 'labels.csv', 'w', newline='') as f:
    csv.writer(f).writerows([('file', 'class_index', 'wnid')] + [
        (name, label, f'w{label}') for name, label in rows])
  _, info = image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False,
                                         class_names=['w0', 'w1', 'w2'])
  assert info['num_examples'] == 5
  with pytest.raises(ValueError, match='different order'):
    image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False,
                                 class_names=['w1', 'w0', 'w2'])
  with open(root / 'labels.csv', 'w', newline='') as f:
    csv.writer(f).writerows([('file', 'wnid')] + [(name, f'w{label}') for name, label in rows])
  it, _ = image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False,
                                       class_names=['w2', 'w1', 'w0'], image_size=8)
  np.testing.assert_array_equal(next(it)['label'], [2, 0, 1, 2, 0])
  with pytest.raises(ValueError, match='pass class_names'):
    image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False)
  with open(root / 'labels.csv', 'a', newline='') as f:
    csv.writer(f).writerow(('img/missing.png', 'w0'))
  with pytest.raises(FileNotFoundError, match='missing.png'):
    image_lib.make_image_dataset(str(root), 'test', batch_size=5, train=False,
                                 class_names=['w0', 'w1', 'w2'])


def test_bad_sources_and_class_lists_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='Unknown image source'):
    image_lib.make_image_dataset('no/such/dir', 'train', batch_size=2, train=True)
  with pytest.raises(ValueError, match='synthetic'):
    image_lib.make_image_dataset('synthetic:x', 'train', batch_size=2, train=True)
  with pytest.raises(ValueError, match='splits train and test'):
    image_lib.make_image_dataset('synthetic:3', 'dev', batch_size=2, train=True)
  with pytest.raises(ValueError, match='num_classes=7'):
    image_lib.make_image_dataset('digits', 'train', batch_size=2, train=True, num_classes=7)
  dup = tmp_path / 'dup.txt'
  dup.write_text('a\nb\na\n')
  with pytest.raises(ValueError, match='unique'):
    image_lib.load_class_names(str(dup))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='class sub-folders'):
    image_lib.make_image_dataset(str(tmp_path / 'empty'), 'train', batch_size=2, train=True)


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
        str(numbered_folder), 'validation', batch_size=2, train=False, image_size=8,
        process_index=process_index, process_count=3)
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
        str(numbered_folder), 'train', batch_size=1, train=True, image_size=8, repeat=False,
        randaugment=None, geometry='resize', process_index=process_index, process_count=2)
    seen.extend(int(v) for b in it for v in _decode_value(b['image']))
  assert sorted(seen) == [20 * i + 10 for i in range(11)]


def test_train_stream_is_deterministic_reshuffles_per_epoch_and_resumes(numbered_folder):
  def stream(seed, start_batch=0, n=4):
    it, _ = image_lib.make_image_dataset(
        str(numbered_folder), 'train', batch_size=11, train=True, image_size=8, seed=seed,
        randaugment=None, geometry='resize', start_batch=start_batch)
    return [_decode_value(next(it)['image']) for _ in range(n)]

  first = stream(0)
  for epoch in first:  # batch size = shard size: each batch is exactly one epoch.
    assert sorted(epoch) == [20 * i + 10 for i in range(11)]
  assert any(not np.array_equal(first[0], e) for e in first[1:])
  np.testing.assert_array_equal(np.stack(first), np.stack(stream(0)))
  np.testing.assert_array_equal(np.stack(first[2:]), np.stack(stream(0, start_batch=2, n=2)))
  assert not np.array_equal(np.stack(first), np.stack(stream(1)))


def test_augmented_train_batches_are_reproducible_and_resume_exactly():
  def batches(seed, start_batch=0, n=3):
    it, _ = image_lib.make_image_dataset('synthetic:4:40', 'train', batch_size=4, train=True,
                                         image_size=24, seed=seed, start_batch=start_batch,
                                         geometry='imagenet')
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
  it, info = image_lib.make_image_dataset('digits', 'train', batch_size=32, train=False,
                                          image_size=16)
  train = list(it)
  assert info['num_examples'] == 1437 and info['num_classes'] == 10
  assert sum(int(b['mask'].sum()) for b in train) == 1437
  it, info = image_lib.make_image_dataset('digits', 'test', batch_size=32, train=False,
                                          image_size=16)
  test = list(it)
  assert info['num_examples'] == 360 and len(test) == info['num_batches'] == 12
  labels = np.concatenate([b['label'] for b in test])[:360]
  assert np.bincount(labels, minlength=10).min() >= 34  # stratified split
  assert test[0]['image'].shape == (32, 16, 16, 3)
  # Every test image is the bicubic 2x upscale of an original 8x8 digit (scaled 16 -> 255).
  digits = sk_datasets.load_digits()
  first = test[0]['image'][0] * image_lib.STDDEV_RGB + image_lib.MEAN_RGB
  candidates = [i for i in range(len(digits.target)) if digits.target[i] == labels[0]]
  errors = [np.abs(image_lib.resize_bicubic_numpy(
      np.repeat(np.round(digits.images[i] * 255 / 16)[..., None], 3, -1), 16, 16) - first).max()
            for i in candidates]
  assert min(errors) < 1e-2


def test_synthetic_source_is_deterministic_and_labelled():
  it, info = image_lib.make_image_dataset('synthetic:3:10', 'test', batch_size=4, train=False,
                                          image_size=16)
  first = list(it)
  it, _ = image_lib.make_image_dataset('synthetic:3:10', 'test', batch_size=4, train=False,
                                       image_size=16)
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
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    it, info = image_lib.make_image_dataset('imagenet2012', 'validation', batch_size=4,
                                            train=False, image_size=16, manual_dir=str(tmp_path))
    batches = list(it)
    assert info['num_classes'] == 1000 and info['num_batches'] == 2
    # TFDS labels are 0..999 in sorted-wnid order (0 = n01440764 tench): no background class.
    assert info['class_names'][0] == 'n01440764' and info['class_names'] == sorted(
        info['class_names'])
    assert [b['mask'].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 0, 0]]
    labels = np.concatenate([b['label'] for b in batches])
    assert labels.min() >= 0 and labels.max() < 1000
    assert batches[0]['image'].shape == (4, 16, 16, 3)
    it, _ = image_lib.make_image_dataset('imagenet2012', 'train', batch_size=4, train=True,
                                         image_size=16, manual_dir=str(tmp_path),
                                         randaugment=(2, 9))
    batch = next(it)
    assert batch['image'].shape == (4, 16, 16, 3) and np.isfinite(batch['image']).all()


def test_unprepared_imagenet_without_manual_dir_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='manual_dir'):
    image_lib.make_image_dataset('imagenet2012', 'validation', batch_size=4, train=False,
                                 data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='manual_dir'):
    image_lib.make_image_dataset('imagenet2012', 'validation', batch_size=4, train=False,
                                 data_dir=str(tmp_path), manual_dir=str(tmp_path / 'nope'))
