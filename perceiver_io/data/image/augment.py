"""Training augmentation: Inception-style crop, horizontal flip and RandAugment.

Why this module exists: the paper's ImageNet result depends on this recipe
(random crops covering 8-100% of the image with aspect ratios in [3/4, 4/3],
flips, RandAugment(4, 5)), read from the official `perceiver/train/dataset.py`.
Every random choice is a stateless function of the seed it is given, so an
augmented stream is reproducible and resumable.
"""

from typing import Optional, Tuple

from perceiver_io.data.image.evaluation import _center_crop_tf
from perceiver_io.data.image.evaluation import CROP_PADDING
from perceiver_io.data.image.evaluation import IMAGE_SIZE
from perceiver_io.data.image.evaluation import normalize_image
from perceiver_io.data.image.evaluation import resize_bicubic_tf
from perceiver_io.data.image.lazy_tf import import_tf


def _inception_crop_tf(image, seed, image_size: int, crop_padding: int):
  """Inception-style random crop; falls back to the centre crop if sampling gave the full image."""
  tf = import_tf()
  shape = tf.shape(image)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
    seed=seed,
    min_object_covered=0.1,
    aspect_ratio_range=(3 / 4, 4 / 3),
    area_range=(0.08, 1.0),
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  crop = tf.slice(image, begin, size)
  # Like the official code, a crop equal to the whole image means all attempts failed.
  return tf.cond(
    tf.reduce_all(tf.equal(size, shape)),
    lambda: _center_crop_tf(image, image_size, crop_padding),
    lambda: crop,
  )


def train_augment(
  image,
  seed,
  *,
  image_size: int = IMAGE_SIZE,
  randaugment: Optional[Tuple[int, float]] = (4, 5),
  geometry: str = 'imagenet',
  crop_padding: int = CROP_PADDING,
):
  """The uint8 part of training augmentation: crop, flip and RandAugment.

  Args:
    image: uint8 [H, W, 3].
    seed: int32/int64 [2] stateless seed; the output is a pure function of (image, seed).
    image_size: final size (used by the centre-crop fallback and by geometry 'resize').
    randaugment: (num_layers, magnitude), or None to skip RandAugment.
    geometry: 'imagenet' (Inception crop + horizontal flip) or 'resize' (resize the whole image to
      image_size, rounded back to uint8; no flip: for digits and generated data).
    crop_padding: see `center_crop_window`.

  Returns:
    uint8 [h, w, 3] (h, w depend on the crop for 'imagenet').
  """
  # pylint: disable-next=g-import-not-at-top
  from perceiver_io.data import randaugment as randaugment_lib

  tf = import_tf()
  seed = tf.cast(seed, tf.int64)
  crop_seed, flip_seed, augment_seed = tf.unstack(
    tf.random.experimental.stateless_split(seed, 3)
  )
  if geometry == 'imagenet':
    image = _inception_crop_tf(image, crop_seed, image_size, crop_padding)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  elif geometry == 'resize':
    image = tf.cast(
      tf.clip_by_value(tf.round(resize_bicubic_tf(image, image_size)), 0, 255),
      tf.uint8,
    )
  else:
    raise ValueError(
      f'geometry must be "imagenet" or "resize", got {geometry!r}.'
    )
  if randaugment is not None:
    num_layers, magnitude = randaugment
    image = randaugment_lib.randaugment(
      image, augment_seed, num_layers=num_layers, magnitude=magnitude
    )
  return image


def train_preprocess(
  image,
  seed,
  *,
  image_size: int = IMAGE_SIZE,
  randaugment: Optional[Tuple[int, float]] = (4, 5),
  geometry: str = 'imagenet',
  crop_padding: int = CROP_PADDING,
):
  """Full training preprocessing of one image: `train_augment`, bicubic resize, normalise.

  Returns:
    float32 [image_size, image_size, 3].
  """
  image = train_augment(
    image,
    seed,
    image_size=image_size,
    randaugment=randaugment,
    geometry=geometry,
    crop_padding=crop_padding,
  )
  return normalize_image(resize_bicubic_tf(image, image_size))
