"""Tests for single-example image preprocessing: training augmentation and eval preprocessing.

Why: the ImageNet recipe's numbers depend on exact preprocessing (crop window, bicubic kernel,
normalisation). Each check compares with an independent reference: NumPy formulas, JAX's
resampler, PIL's float bicubic, crops worked out by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import tensorflow as tf

from perceiver_io.data import image as image_lib
from tests.helpers import random_image as _random_image


def test_train_augment_and_preprocess_shapes_dtypes_and_ranges():
  image = _random_image(90, 120, seed=9)
  for seed in range(3):
    augmented = image_lib.train_augment(
      image, tf.constant([seed, 0]), image_size=64
    )
    assert augmented.dtype == tf.uint8 and augmented.shape[-1] == 3
    assert augmented.shape[0] <= 90 and augmented.shape[1] <= 120
    # Before normalisation: bicubic without clamping may overshoot [0, 255] a little.
    resized = image_lib.resize_bicubic_tf(augmented, 64).numpy()
    assert resized.dtype == np.float32 and resized.shape == (64, 64, 3)
    assert resized.min() >= -0.25 * 255 and resized.max() <= 1.25 * 255
    out = image_lib.train_preprocess(
      image, tf.constant([seed, 0]), image_size=64
    ).numpy()
    assert out.dtype == np.float32 and out.shape == (64, 64, 3)
    np.testing.assert_allclose(
      out * image_lib.STDDEV_RGB + image_lib.MEAN_RGB, resized, atol=1e-3
    )
  a = image_lib.train_preprocess(
    image, tf.constant([1, 2]), image_size=32
  ).numpy()
  b = image_lib.train_preprocess(
    image, tf.constant([1, 2]), image_size=32
  ).numpy()
  np.testing.assert_array_equal(a, b)


def test_inception_crop_statistics_without_randaugment():
  # Crops cover 8%..100% of the area with aspect ratio in [3/4, 4/3] (up to rounding).
  image = _random_image(200, 200, seed=10)
  areas = []
  for seed in range(20):
    crop = image_lib.train_augment(
      image, tf.constant([seed, 3]), randaugment=None
    )
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
  return (x - np.array([0.485, 0.456, 0.406]) * 255) / (
    np.array([0.229, 0.224, 0.225]) * 255
  )


def _pil_float_bicubic(crop, size):
  # PIL's bicubic on float ('F') images: Keys a=-0.5, no clamping; without antialiasing when
  # upsampling, so it is an independent reference for the upsampling case.
  return np.stack(
    [
      np.asarray(
        Image.fromarray(crop[:, :, c].astype(np.float32), mode='F').resize(
          (size, size), Image.BICUBIC
        )
      )
      for c in range(3)
    ],
    -1,
  )


def _jax_bicubic(crop, size):
  side = crop.shape[0]
  out = jax.image.scale_and_translate(
    jnp.asarray(crop, jnp.float32),
    (size, size, 3),
    (0, 1),
    jnp.array([size / side] * 2),
    jnp.zeros(2),
    'cubic',
    antialias=False,
  )
  return np.asarray(out)


@pytest.mark.parametrize(
  'shape', [(375, 500), (300, 300), (120, 90), (64, 400)]
)
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
  np.testing.assert_allclose(
    ours_tf, image_lib.eval_preprocess_numpy(image), atol=1e-4
  )
  side = int(224 / 256 * min(height, width))
  top, left = (height - side + 1) // 2, (width - side + 1) // 2
  crop = image[top : top + side, left : left + side].astype(np.float32)
  np.testing.assert_allclose(
    ours_tf, _normalize(_jax_bicubic(crop, 224)), atol=5e-3
  )
  if side <= 224:
    np.testing.assert_allclose(
      ours_tf, _normalize(_pil_float_bicubic(crop, 224)), atol=5e-3
    )


def test_eval_preprocess_numpy_accepts_grey_and_rejects_bad_input():
  grey = _random_image(50, 60)[:, :, 0]
  out = image_lib.eval_preprocess_numpy(grey, image_size=32)
  assert out.shape == (32, 32, 3)
  np.testing.assert_allclose(
    out[..., 0] * image_lib.STDDEV_RGB[0] + image_lib.MEAN_RGB[0],
    out[..., 1] * image_lib.STDDEV_RGB[1] + image_lib.MEAN_RGB[1],
    atol=1e-3,
  )
  with pytest.raises(ValueError, match='uint8'):
    image_lib.eval_preprocess_numpy(grey.astype(np.float32))
  with pytest.raises(ValueError, match='shape'):
    image_lib.eval_preprocess_numpy(np.zeros((4, 4, 2), np.uint8))
