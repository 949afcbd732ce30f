"""Evaluation preprocessing: the official centre crop, bicubic resize and normalisation.

Why this module exists: the eval recipe (a centred square of 224/256 of the
shorter side, TF2's unclamped bicubic resize, ImageNet mean/std) decides the
reported accuracy, and prediction must see the same inputs as evaluation even
where TensorFlow is not installed. So each step exists twice: in TF for the
pipeline (`eval_preprocess`) and in NumPy for prediction
(`eval_preprocess_numpy`), and the two agree to about 1e-4. Training
augmentation reuses the normalisation and the TF resize from here.
"""

from typing import Tuple

import numpy as np

from perceiver_io.data.image.lazy_tf import import_tf

IMAGE_SIZE = 224
CROP_PADDING = 32
MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
# TF's bicubic kernel is tabulated at 1/1024 steps of the sub-pixel offset.
_TF_CUBIC_TABLE_SIZE = 1024


# ============================================================================================
# NumPy preprocessing (no TensorFlow): used by prediction and as the TF pipeline's twin.
# ============================================================================================


def normalize_image(image):
  """Maps pixel values in [0, 255] to ImageNet-standardised values: (x - mean) / std.

  Args:
    image: float array or tensor [..., 3] (NumPy, JAX or TF).

  Returns:
    The same type, (image - MEAN_RGB) / STDDEV_RGB.
  """
  return (image - MEAN_RGB) / STDDEV_RGB


def center_crop_window(
  height: int,
  width: int,
  image_size: int = IMAGE_SIZE,
  crop_padding: int = CROP_PADDING,
) -> Tuple[int, int, int]:
  """Returns (top, left, side) of the official eval crop.

  The crop is a centred square of side `image_size / (image_size + crop_padding) * min(H, W)`
  (224/256 of the shorter side by default), truncated to an integer in float32 like the TF code
  (and at least 1).

  Args:
    height: image height in pixels.
    width: image width in pixels.
    image_size: final image side.
    crop_padding: the padding of the "resize to image_size + padding, crop image_size" recipe.

  Returns:
    (top, left, side) in pixels.
  """
  ratio = np.float32(image_size / (image_size + crop_padding))
  # At least one pixel, so that 1-pixel-wide images do not give an empty crop.
  side = max(int(ratio * np.float32(min(height, width))), 1)
  return (height - side + 1) // 2, (width - side + 1) // 2, side


def _cubic_weights(distance: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (the one TF2 and PIL use)."""
  d = np.abs(distance)
  a = -0.5
  near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
  far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
  return np.where(d <= 1.0, near, np.where(d < 2.0, far, 0.0))


def _bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] interpolation matrix matching `tf.image.resize(method='bicubic')`.

  TF2 samples at half-pixel centres, gives zero weight to taps outside the image and renormalises
  the remaining ones, and never antialiases. It looks the kernel up in a table indexed by
  round(offset * 1024); we quantise the offset the same way so both agree to float rounding.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  centres = (
    np.arange(out_size, dtype=np.float32) + np.float32(0.5)
  ) * scale - np.float32(0.5)
  first = np.floor(centres)
  offset = (
    np.rint((centres - first) * _TF_CUBIC_TABLE_SIZE) / _TF_CUBIC_TABLE_SIZE
  )
  taps = first[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]
  weights = _cubic_weights(
    offset[:, None].astype(np.float64) - np.arange(-1, 3)[None, :]
  )
  weights = np.where((taps >= 0) & (taps < in_size), weights, 0.0)
  weights /= weights.sum(axis=1, keepdims=True)
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(
    matrix,
    (np.repeat(np.arange(out_size), 4), np.clip(taps, 0, in_size - 1).ravel()),
    weights.ravel(),
  )
  return matrix


def resize_bicubic_numpy(
  image: np.ndarray, height: int, width: int
) -> np.ndarray:
  """Bicubic resize of [H, W, C] to [height, width, C] float32, without clamping (TF semantics).

  Args:
    image: [H, W, C] array of any real dtype.
    height: output height.
    width: output width.

  Returns:
    float32 [height, width, C]; values may overshoot the input range, as in TF.
  """
  image = np.asarray(image, np.float64)
  rows = _bicubic_matrix(image.shape[0], height)
  cols = _bicubic_matrix(image.shape[1], width)
  resized_rows = np.tensordot(rows, image, axes=(1, 0))  # [height, W, C]
  return np.einsum('pw,owc->opc', cols, resized_rows).astype(np.float32)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'Expected a uint8 image, got dtype {image.dtype}.')
  if image.ndim == 2:
    image = image[:, :, None]
  if (
    image.ndim != 3
    or image.shape[-1] not in (1, 3, 4)
    or min(image.shape[:2]) < 1
  ):
    raise ValueError(
      f'Expected an image [H, W, 1|3|4] with H, W >= 1, got shape {image.shape}.'
    )
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[:, :, :3]


def eval_preprocess_numpy(
  image: np.ndarray,
  image_size: int = IMAGE_SIZE,
  crop_padding: int = CROP_PADDING,
) -> np.ndarray:
  """Official eval preprocessing without TensorFlow: centre crop, bicubic resize, normalise.

  Matches `eval_preprocess` (the TF version used by the pipeline) to about 1e-4 in normalised
  units, so a model evaluated with the pipeline sees the same inputs at prediction time.

  Args:
    image: uint8 [H, W, 3] (or [H, W] / [H, W, 1] grey, or RGBA whose alpha is dropped).
    image_size: output side.
    crop_padding: see `center_crop_window`.

  Returns:
    float32 [image_size, image_size, 3], normalised with ImageNet mean/std.
  """
  image = _as_rgb_uint8(image)
  top, left, side = center_crop_window(
    image.shape[0], image.shape[1], image_size, crop_padding
  )
  crop = image[top : top + side, left : left + side]
  return normalize_image(
    resize_bicubic_numpy(crop, image_size, image_size)
  ).astype(np.float32)


# ============================================================================================
# The same in TensorFlow (the pipeline's version).
# ============================================================================================


def _center_crop_tf(image, image_size: int, crop_padding: int):
  tf = import_tf()
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  side = tf.maximum(
    tf.cast(
      np.float32(image_size / (image_size + crop_padding))
      * tf.cast(tf.minimum(height, width), tf.float32),
      tf.int32,
    ),
    1,
  )
  top = (height - side + 1) // 2
  left = (width - side + 1) // 2
  return tf.image.crop_to_bounding_box(image, top, left, side, side)


def resize_bicubic_tf(image, image_size: int):
  """Bicubic resize to [image_size, image_size] in float32, unclamped (as the official code)."""
  tf = import_tf()
  return tf.image.resize(
    tf.cast(image, tf.float32),
    [image_size, image_size],
    method='bicubic',
    antialias=False,
  )


def eval_preprocess(
  image,
  *,
  image_size: int = IMAGE_SIZE,
  geometry: str = 'imagenet',
  crop_padding: int = CROP_PADDING,
):
  """Eval preprocessing: centre crop (224/256 of the shorter side), bicubic resize, normalise.

  Args:
    image: uint8 [H, W, 3].
    image_size: output side.
    geometry: 'imagenet' (centre crop first) or 'resize' (resize the whole image).
    crop_padding: see `center_crop_window`.

  Returns:
    float32 [image_size, image_size, 3].
  """
  if geometry == 'imagenet':
    image = _center_crop_tf(image, image_size, crop_padding)
  elif geometry != 'resize':
    raise ValueError(
      f'geometry must be "imagenet" or "resize", got {geometry!r}.'
    )
  return normalize_image(resize_bicubic_tf(image, image_size))
