"""RandAugment on uint8 images with stateless TensorFlow ops.

Why this file exists: the official Perceiver ImageNet recipe (paper Sec. 4.5 / App. A) trains with
RandAugment(num_layers=4, magnitude=5) from DeepMind's port of the tensorflow/tpu `autoaugment.py`.
That code draws its randomness from stateful `tf.random_uniform` calls and depends on
`tensorflow_addons`, which is end-of-life. This module re-implements the same 16 ops and the same
magnitude-to-argument rules with *stateless* random ops, so the augmentation of an example is a pure
function of `(image, seed)`: reproducible across runs and hosts, and exactly repeatable after a
resume. It only needs core TensorFlow.

The 16 ops (tensorflow/tpu order): AutoContrast, Equalize, Invert, Rotate, Posterize, Solarize,
Color, Contrast, Brightness, Sharpness, ShearX, ShearY, TranslateX, TranslateY, Cutout, SolarizeAdd.
Magnitude `m` (out of `MAX_LEVEL = 10`) maps to: rotate +-30*m/10 degrees; posterize to
int(4*m/10) bits; solarize threshold int(256*m/10); solarize-add int(110*m/10); enhance factors
1.8*m/10 + 0.1; shear +-0.3*m/10; translate +-translate_const*m/10 pixels; cutout half-size
int(cutout_const*m/10). Geometric ops use nearest-neighbour sampling and fill empty pixels with
`fill` (128). Signs of rotate/shear/translate are flipped with probability 1/2.

Two deliberate, documented details:
  * Apply probability. The tensorflow/tpu and DeepMind code draw `prob ~ U(0.2, 0.8)` for every op
    but then discard it (`func, _, args = _parse_policy_info(...)`): the op chosen for a layer is
    *always* applied. `op_prob_range=None` (the default) reproduces that. Passing
    `op_prob_range=(0.2, 0.8)` applies each chosen op only with a probability drawn from that range,
    which is what the RandAugment description in some write-ups says.
  * Contrast. The tensorflow/tpu `contrast` blends towards `num_pixels / 256` (a histogram-sum
    bug) instead of the mean grey level. We use the mean grey level, as PIL's
    `ImageEnhance.Contrast` does. At magnitude 5 every enhance factor is exactly 1.0, so the
    official recipe is unaffected.

TensorFlow is imported inside each function so that importing this module stays cheap and
`import perceiver_io` never pulls TensorFlow in.
"""

import math
from typing import Optional, Sequence, Tuple

MAX_LEVEL = 10.0

OP_NAMES = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateX',
  'TranslateY',
  'Cutout',
  'SolarizeAdd',
)


# --------------------------------------------------------------------------------------------
# Pixel-value ops (uint8 [H, W, 3] -> uint8 [H, W, 3]).
# --------------------------------------------------------------------------------------------


def blend(image1, image2, factor: float):
  """Interpolates (0 <= factor <= 1) or extrapolates (factor > 1) from image1 towards image2.

  Args:
    image1: uint8 image, the value at factor 0.
    image2: uint8 image, the value at factor 1.
    factor: Python float or scalar tensor.

  Returns:
    uint8 image `clip(image1 + factor * (image2 - image1), 0, 255)`, truncated like the original.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if isinstance(factor, (int, float)):
    if factor == 0.0:
      return tf.convert_to_tensor(image1)
    if factor == 1.0:
      return tf.convert_to_tensor(image2)
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  mixed = image1 + tf.cast(factor, tf.float32) * (image2 - image1)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def autocontrast(image):
  """Stretches each channel linearly so its min becomes 0 and its max 255 (PIL AutoContrast)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  pixels = tf.cast(image, tf.float32)
  lo = tf.reduce_min(pixels, axis=[0, 1])
  hi = tf.reduce_max(pixels, axis=[0, 1])
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  stretched = tf.clip_by_value(pixels * scale - lo * scale, 0.0, 255.0)
  # A flat channel (hi == lo) is left as it is.
  return tf.where(hi > lo, tf.cast(stretched, tf.uint8), image)


def equalize(image):
  """Equalises the histogram of each channel independently (PIL ImageOps.equalize)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  values = tf.cast(image, tf.int32)
  # One 256-bin histogram per channel, from a single bincount over channel-offset values.
  flat = tf.reshape(values + tf.range(3) * 256, [-1])
  hist = tf.reshape(
    tf.math.bincount(flat, minlength=768, maxlength=768), [3, 256]
  )
  num_pixels = tf.reduce_sum(hist, axis=1)
  brightest = tf.reduce_max(values, axis=[0, 1])
  # PIL leaves the count of the brightest occupied bin out of the step.
  step = (num_pixels - tf.gather(hist, brightest, batch_dims=1)) // 255
  safe_step = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(hist, axis=1) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(
    tf.concat([tf.zeros([3, 1], lut.dtype), lut[:, :-1]], axis=1), 0, 255
  )
  equalized = tf.cast(
    tf.transpose(
      tf.gather(lut, tf.transpose(values, [2, 0, 1]), batch_dims=1), [1, 2, 0]
    ),
    tf.uint8,
  )
  # A channel with a single occupied bin (step == 0) is left unchanged.
  return tf.where(step > 0, equalized, image)


def invert(image):
  """Returns 255 - image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.constant(255, tf.uint8) - image


def posterize(image, bits: int):
  """Keeps the `bits` most significant bits of every value (PIL ImageOps.posterize)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold: int = 128):
  """Inverts every value >= threshold (PIL ImageOps.solarize)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition: int, threshold: int = 128):
  """Adds `addition` (clipped to [0, 255]) to every value below threshold."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  values = tf.cast(image, tf.int32)
  added = tf.cast(tf.clip_by_value(values + addition, 0, 255), tf.uint8)
  return tf.where(values < threshold, added, image)


def _grayscale_rgb(image):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def color(image, factor: float):
  """Blends between the grey version of the image (0) and the image (1) (PIL Color)."""
  return blend(_grayscale_rgb(image), image, factor)


def contrast(image, factor: float):
  """Blends between the mean grey level (0) and the image (1) (PIL Contrast)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)
  mean = tf.floor(tf.reduce_mean(gray) + 0.5)
  return blend(tf.cast(tf.fill(tf.shape(image), mean), tf.uint8), image, factor)


def brightness(image, factor: float):
  """Blends between black (0) and the image (1) (PIL Brightness)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor: float):
  """Blends between a smoothed image (0) and the image (1) (PIL Sharpness).

  The smoothing is PIL's SMOOTH 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13; the one-pixel border
  keeps its original values, as in PIL.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  kernel = (
    tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  )
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smoothed = tf.nn.depthwise_conv2d(
    tf.cast(image, tf.float32)[None],
    kernel,
    strides=[1, 1, 1, 1],
    padding='VALID',
  )[0]
  smoothed = tf.cast(tf.clip_by_value(smoothed, 0.0, 255.0), tf.uint8)
  interior = tf.pad(tf.ones_like(smoothed, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(
    interior, tf.pad(smoothed, [[1, 1], [1, 1], [0, 0]]), image
  )
  return blend(degenerate, image, factor)


# --------------------------------------------------------------------------------------------
# Geometric ops. A transform [a0, a1, a2, b0, b1, b2, 0, 0] maps each *output* pixel (x, y) to
# the *input* location (a0 x + a1 y + a2, b0 x + b1 y + b2), sampled with nearest neighbour.
# --------------------------------------------------------------------------------------------


def _transform(image, transform: Sequence, fill: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  transform = tf.cast(tf.stack(list(transform)), tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=transform[None],
    output_shape=tf.shape(image)[:2],
    fill_value=tf.cast(fill, tf.float32),
    interpolation='NEAREST',
    fill_mode='CONSTANT',
  )
  return out[0]


def rotate(image, degrees, fill: int = 128):
  """Rotates the image about its centre; positive degrees turn it counter-clockwise on screen."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
  cos, sin = tf.cos(radians), tf.sin(radians)
  # input = R(output - centre) + centre, with R the rotation by +radians in (x right, y down).
  return _transform(
    image,
    [
      cos,
      -sin,
      cx - cos * cx + sin * cy,
      sin,
      cos,
      cy - sin * cx - cos * cy,
      0.0,
      0.0,
    ],
    fill,
  )


def shear_x(image, level, fill: int = 128):
  """Output (x, y) samples input (x + level * y, y)."""
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def shear_y(image, level, fill: int = 128):
  """Output (x, y) samples input (x, level * x + y)."""
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], fill)


def translate_x(image, pixels, fill: int = 128):
  """Output (x, y) samples input (x + pixels, y): content moves left by `pixels`."""
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def translate_y(image, pixels, fill: int = 128):
  """Output (x, y) samples input (x, y + pixels): content moves up by `pixels`."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], fill)


def cutout(image, pad_size: int, seed, fill: int = 128):
  """Fills a (2*pad_size)^2 square, centred at a uniform random pixel and clipped, with `fill`.

  Args:
    image: uint8 [H, W, 3].
    pad_size: half the side of the square.
    seed: int32/int64 [2] stateless seed; picks the centre.
    fill: value written into the square.

  Returns:
    uint8 [H, W, 3].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  height, width = tf.shape(image)[0], tf.shape(image)[1]
  centre = tf.random.stateless_uniform(
    [2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32
  ) % tf.stack([height, width])
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = (
    (rows >= centre[0] - pad_size)
    & (rows < centre[0] + pad_size)
    & (cols >= centre[1] - pad_size)
    & (cols < centre[1] + pad_size)
  )
  return tf.where(inside[:, :, None], tf.cast(fill, tf.uint8), image)


# --------------------------------------------------------------------------------------------
# RandAugment.
# --------------------------------------------------------------------------------------------


def _random_sign(value, seed):
  """Returns -value or +value with probability 1/2 each."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.where(flip, -tf.cast(value, tf.float32), tf.cast(value, tf.float32))


def apply_op(
  image,
  name: str,
  magnitude: float,
  seed,
  *,
  fill: int = 128,
  cutout_const: int = 40,
  translate_const: int = 100,
):
  """Applies one named RandAugment op at `magnitude`, with the tensorflow/tpu level rules.

  Args:
    image: uint8 [H, W, 3].
    name: one of `OP_NAMES`.
    magnitude: 0..MAX_LEVEL (a Python number, fixed at trace time).
    seed: int32/int64 [2] stateless seed (random sign, cutout centre).
    fill: grey value for pixels uncovered by geometric ops and for cutout.
    cutout_const: cutout half-size at magnitude MAX_LEVEL.
    translate_const: translation in pixels at magnitude MAX_LEVEL.

  Returns:
    uint8 [H, W, 3].

  Raises:
    ValueError: for an unknown op name.
  """
  level = float(magnitude) / MAX_LEVEL
  enhance = level * 1.8 + 0.1
  if name == 'AutoContrast':
    return autocontrast(image)
  if name == 'Equalize':
    return equalize(image)
  if name == 'Invert':
    return invert(image)
  if name == 'Rotate':
    return rotate(image, _random_sign(level * 30.0, seed), fill)
  if name == 'Posterize':
    return posterize(image, int(level * 4))
  if name == 'Solarize':
    return solarize(image, int(level * 256))
  if name == 'SolarizeAdd':
    return solarize_add(image, int(level * 110))
  if name == 'Color':
    return color(image, enhance)
  if name == 'Contrast':
    return contrast(image, enhance)
  if name == 'Brightness':
    return brightness(image, enhance)
  if name == 'Sharpness':
    return sharpness(image, enhance)
  if name == 'ShearX':
    return shear_x(image, _random_sign(level * 0.3, seed), fill)
  if name == 'ShearY':
    return shear_y(image, _random_sign(level * 0.3, seed), fill)
  if name == 'TranslateX':
    return translate_x(image, _random_sign(level * translate_const, seed), fill)
  if name == 'TranslateY':
    return translate_y(image, _random_sign(level * translate_const, seed), fill)
  if name == 'Cutout':
    return cutout(image, int(level * cutout_const), seed, fill)
  raise ValueError(
    f'Unknown RandAugment op {name!r}; expected one of {", ".join(OP_NAMES)}.'
  )


def randaugment(
  image,
  seed,
  *,
  num_layers: int = 4,
  magnitude: float = 5,
  op_prob_range: Optional[Tuple[float, float]] = None,
  fill: int = 128,
  cutout_const: int = 40,
  translate_const: int = 100,
):
  """Applies `num_layers` ops, each chosen uniformly from the 16 `OP_NAMES`.

  Deterministic: the same (image, seed) always gives the same output, in eager mode and inside
  `tf.data` alike.

  Args:
    image: uint8 [H, W, 3] (any H, W >= 1).
    seed: int32/int64 [2] stateless seed.
    num_layers: number of ops applied in sequence (official recipe: 4).
    magnitude: shared magnitude 0..10 (official recipe: 5).
    op_prob_range: None applies every chosen op (what the official code does); (lo, hi) applies
      it with probability p ~ U(lo, hi).
    fill: grey value for uncovered pixels and cutout (official: 128).
    cutout_const: cutout half-size at magnitude 10 (official RandAugment: 40).
    translate_const: translation at magnitude 10 (official RandAugment: 100).

  Returns:
    uint8 [H, W, 3].

  Raises:
    ValueError: for a negative num_layers, a magnitude outside [0, 10] or a bad probability range.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if num_layers < 0:
    raise ValueError(f'num_layers must be >= 0, got {num_layers}.')
  if not 0 <= magnitude <= MAX_LEVEL:
    raise ValueError(
      f'magnitude must be in [0, {MAX_LEVEL:g}], got {magnitude}.'
    )
  if (
    op_prob_range is not None
    and not 0.0 <= op_prob_range[0] <= op_prob_range[1] <= 1.0
  ):
    raise ValueError(
      f'op_prob_range must be (lo, hi) with 0 <= lo <= hi <= 1, '
      f'got {op_prob_range}.'
    )
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    raise ValueError(
      f'randaugment expects a uint8 image, got {image.dtype.name}.'
    )
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)

  def layer(index, image):
    # A tf.while_loop traces the 16 branches once, not once per layer.
    layer_seed = tf.random.experimental.stateless_fold_in(
      seed, tf.cast(index, tf.int64)
    )
    choice_seed, op_seed, prob_seed, draw_seed = tf.unstack(
      tf.random.experimental.stateless_split(layer_seed, 4)
    )
    op_index = tf.random.stateless_uniform(
      [], choice_seed, minval=0, maxval=len(OP_NAMES), dtype=tf.int32
    )
    branches = [
      (
        lambda name=name: apply_op(
          image,
          name,
          magnitude,
          op_seed,
          fill=fill,
          cutout_const=cutout_const,
          translate_const=translate_const,
        )
      )
      for name in OP_NAMES
    ]
    augmented = tf.switch_case(op_index, branches)
    if op_prob_range is not None:
      prob = tf.random.stateless_uniform(
        [], prob_seed, minval=op_prob_range[0], maxval=op_prob_range[1]
      )
      augmented = tf.where(
        tf.random.stateless_uniform([], draw_seed) < prob, augmented, image
      )
    return index + 1, tf.ensure_shape(augmented, [None, None, 3])

  _, image = tf.while_loop(
    lambda index, _: index < num_layers,
    layer,
    (tf.constant(0), image),
    shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None, 3])),
  )
  return image
