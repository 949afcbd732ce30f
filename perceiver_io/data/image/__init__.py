"""Image-classification input pipelines: the official Perceiver ImageNet recipe, in tf.data.

Why this package exists: Perceiver IO's ImageNet result (paper Sec. 4.5, App. A) depends on a
specific input pipeline: Inception-style random crops, flips, RandAugment(4, 5), bicubic resizing
without clamping, ImageNet mean/std normalisation, and MixUp + CutMix on the batch; evaluation uses
a centre crop of 224/256 of the shorter side. This package reproduces that pipeline (read from
DeepMind's `perceiver/train/dataset.py`), adds what a framework needs on top (stateless randomness so
a run is reproducible and resumable, per-process sharding, padded evaluation batches with a mask,
local folders and small built-in datasets), and offers a NumPy twin of the eval preprocessing for
prediction without TensorFlow. MixUp and CutMix run inside the jitted train step, so they live in
`perceiver_io.mixing`, not here.

* `sources`: TFDS, `dir:` folders, digits and synthetic sources; class lists.
* `decoding`: image files to pixels (TF and PIL, identical), naming files that do not decode.
* `augment`: training augmentation (Inception crop, flip, RandAugment).
* `evaluation`: eval preprocessing (centre crop, bicubic resize, normalisation), in TF and NumPy.
* `pipeline`: `make_image_dataset`.

This file re-exports the public API: `from perceiver_io.data import image` then
`image.make_image_dataset(...)`. TensorFlow (and TFDS) are imported lazily, inside the functions
that need them: importing this package costs only NumPy.
"""

from perceiver_io.data.image.augment import train_augment
from perceiver_io.data.image.augment import train_preprocess
from perceiver_io.data.image.decoding import decode_image
from perceiver_io.data.image.decoding import ImageDecodeError
from perceiver_io.data.image.decoding import load_image_numpy
from perceiver_io.data.image.decoding import undecodable_image
from perceiver_io.data.image.evaluation import center_crop_window
from perceiver_io.data.image.evaluation import CROP_PADDING
from perceiver_io.data.image.evaluation import eval_preprocess
from perceiver_io.data.image.evaluation import eval_preprocess_numpy
from perceiver_io.data.image.evaluation import IMAGE_SIZE
from perceiver_io.data.image.evaluation import MEAN_RGB
from perceiver_io.data.image.evaluation import normalize_image
from perceiver_io.data.image.evaluation import resize_bicubic_numpy
from perceiver_io.data.image.evaluation import resize_bicubic_tf
from perceiver_io.data.image.evaluation import STDDEV_RGB
from perceiver_io.data.image.pipeline import Batch
from perceiver_io.data.image.pipeline import make_image_dataset
from perceiver_io.data.image.sources import DIGITS_NUM_TEST
from perceiver_io.data.image.sources import DIGITS_SPLIT_SEED
from perceiver_io.data.image.sources import IMAGE_EXTENSIONS
from perceiver_io.data.image.sources import load_class_names
from perceiver_io.data.image.sources import split_folder
from perceiver_io.data.image.sources import SYNTHETIC_NUM_EXAMPLES
from perceiver_io.data.image.sources import SYNTHETIC_SIZE

__all__ = [
  'Batch',
  'CROP_PADDING',
  'DIGITS_NUM_TEST',
  'DIGITS_SPLIT_SEED',
  'IMAGE_EXTENSIONS',
  'IMAGE_SIZE',
  'ImageDecodeError',
  'MEAN_RGB',
  'STDDEV_RGB',
  'SYNTHETIC_NUM_EXAMPLES',
  'SYNTHETIC_SIZE',
  'center_crop_window',
  'decode_image',
  'eval_preprocess',
  'eval_preprocess_numpy',
  'load_class_names',
  'load_image_numpy',
  'make_image_dataset',
  'normalize_image',
  'resize_bicubic_numpy',
  'resize_bicubic_tf',
  'split_folder',
  'train_augment',
  'train_preprocess',
  'undecodable_image',
]
