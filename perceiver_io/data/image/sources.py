"""Image-classification input pipelines: the official Perceiver ImageNet recipe, in tf.data.

Why this file exists: Perceiver IO's ImageNet result (paper Sec. 4.5, App. A) depends on a specific
input pipeline: Inception-style random crops, flips, RandAugment(4, 5), bicubic resizing without
clamping, ImageNet mean/std normalisation, and MixUp + CutMix on the batch; evaluation uses a centre
crop of 224/256 of the shorter side. This module reproduces that pipeline (read from DeepMind's
`perceiver/train/dataset.py`), adds what a framework needs on top (stateless randomness so a run
is reproducible and resumable, per-process sharding, padded evaluation batches with a mask, local
folders and small built-in datasets), and offers a NumPy twin of the eval preprocessing for
prediction without TensorFlow.

Sources (`make_image_dataset(source, ...)`):
  * `'imagenet2012'` or `'tfds:<name>'`: a TFDS image-classification dataset (`image`, `label`
    features). ImageNet cannot be downloaded by TFDS: pass `manual_dir` (holding
    `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar`) once to prepare it, or use a folder.
  * a directory (optionally `'dir:<path>'`): `<path>/<split>/` if that exists, else `<path>`. If it
    holds `labels.csv` the images are listed there (flat layout); otherwise every sub-folder is a
    class (`<root>/<class_name>/*.jpg|jpeg|png`, any case).
  * `'digits'`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), split
    1437 train / 360 test with a fixed stratified shuffle; upscaled to `image_size`.
  * `'synthetic:<num_classes>'` or `'synthetic:<num_classes>:<num_examples>'`: generated 32x32
    images whose colour depends on the label; deterministic, needs no files.

Label conventions:
  * TFDS `imagenet2012` labels are 0..999 in the order of the sorted WordNet ids (0 = n01440764
    tench, 999 = n15075141 toilet tissue). This is the same order as PyTorch/Keras ImageNet
    indices and as `class_index` in `shared/data/imagenet_samples/synsets_all_1000.csv`; a
    class-per-folder ImageNet tree with wnid folder names gets the same indices when the class list
    is the sorted wnids (the default) or that CSV.
  * The official Perceiver code feeds TFDS labels unchanged into `one_hot(label, 1000)`: there is no
    -1/+1 shift anywhere in `perceiver/train/` (checked in `dataset.py` and `experiment.py`), and
    the released Perceiver checkpoints have 1000 outputs in the same order.
  * Some TF-slim / tensorflow/models checkpoints (Inception, older ResNets) have 1001 outputs with
    index 0 = "background". Their class `c + 1` is our class `c`: use `logits[..., 1:]` to get
    1000-class logits, and `label + 1` to go the other way.

Randomness: every random choice is a stateless function of `(seed, process_index, position in the
stream)`, so a given seed always yields the same batches, and restarting with `start_batch=k`
yields exactly batch k onwards of the uninterrupted stream.

TensorFlow (and TFDS) are imported lazily, inside the functions that need them: importing this
module costs only NumPy and JAX.
"""

import csv
import dataclasses
import math
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SIZE = 224
CROP_PADDING = 32
MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')

DIGITS_NUM_TEST = 360  # 1797 - 360 = 1437 train images.
DIGITS_SPLIT_SEED = 0
SYNTHETIC_SIZE = 32
SYNTHETIC_NUM_EXAMPLES = {'train': 1024, 'test': 256}
_EVAL_SPLIT_ALIASES = {'test': 'test', 'validation': 'test', 'val': 'test', 'eval': 'test'}
# TF's bicubic kernel is tabulated at 1/1024 steps of the sub-pixel offset.
_TF_CUBIC_TABLE_SIZE = 1024

Batch = Dict[str, np.ndarray]


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


def center_crop_window(height: int, width: int, image_size: int = IMAGE_SIZE,
                       crop_padding: int = CROP_PADDING) -> Tuple[int, int, int]:
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
  centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  first = np.floor(centres)
  offset = np.rint((centres - first) * _TF_CUBIC_TABLE_SIZE) / _TF_CUBIC_TABLE_SIZE
  taps = first[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]
  weights = _cubic_weights(offset[:, None].astype(np.float64) - np.arange(-1, 3)[None, :])
  weights = np.where((taps >= 0) & (taps < in_size), weights, 0.0)
  weights /= weights.sum(axis=1, keepdims=True)
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.repeat(np.arange(out_size), 4), np.clip(taps, 0, in_size - 1).ravel()),
            weights.ravel())
  return matrix


def resize_bicubic_numpy(image: np.ndarray, height: int, width: int) -> np.ndarray:
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
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
    raise ValueError(f'Expected an image [H, W, 1|3|4] with H, W >= 1, got shape {image.shape}.')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[:, :, :3]


def eval_preprocess_numpy(image: np.ndarray, image_size: int = IMAGE_SIZE,
                          crop_padding: int = CROP_PADDING) -> np.ndarray:
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
  top, left, side = center_crop_window(image.shape[0], image.shape[1], image_size, crop_padding)
  crop = image[top:top + side, left:left + side]
  return normalize_image(resize_bicubic_numpy(crop, image_size, image_size)).astype(np.float32)


def load_image_numpy(path: str) -> np.ndarray:
  """Reads an image file (JPEG, PNG, ...) as uint8 RGB [H, W, 3] with PIL.

  The pixels equal those of the pipeline's `decode_image`, including 16-bit grey PNGs (scaled to
  8 bits by keeping the high byte, as TF does) and 16-bit RGB PNGs (PIL keeps the high byte too).

  Raises:
    FileNotFoundError: if the file does not exist.
    ValueError: if PIL cannot decode it.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Image file not found: {path}')
  try:
    with Image.open(path) as img:
      if img.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_grey_to_rgb(np.asarray(img), path)
      if img.mode == 'F':
        raise ValueError('32-bit float images are not supported (TF cannot decode them either)')
      return np.asarray(img.convert('RGB'), np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'Cannot decode image {path}: {e}') from e


# PIL modes of single-channel images wider than 8 bits (16-bit PNGs open as I;16 or, in some
# Pillow versions, I).
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


def _sixteen_bit_grey_to_rgb(values: np.ndarray, path: str) -> np.ndarray:
  """16-bit grey -> uint8 RGB as TF's `decode_image` does it (keep the high byte, v >> 8).

  PIL's `convert('RGB')` would clip the values to 255 instead (a nearly white image), so
  prediction would see other pixels than the pipeline.
  """
  values = np.asarray(values)
  if values.size and (values.min() < 0 or values.max() > 65535):
    raise ValueError(f'{path}: 32-bit integer pixel values outside 0..65535 are not supported.')
  grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
  return np.repeat(grey[:, :, None], 3, axis=-1)


# ============================================================================================
# Batch-level augmentation in JAX (runs inside the jitted train step).
# ============================================================================================


def smooth_labels(labels, smoothing: float):
  """Label smoothing as in the official code: (1 - s) * y + s / K.

  Args:
    labels: [..., K] one-hot or soft labels (each row sums to 1).
    smoothing: s in [0, 1) (official: 0.1).

  Returns:
    [..., K] labels; rows still sum to 1.
  """
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f'label smoothing must be in [0, 1), got {smoothing}.')
  if smoothing == 0.0:
    return labels
  return (1.0 - smoothing) * labels + smoothing / labels.shape[-1]


def cutmix_masks(rng, batch: int, height: int, width: int):
  """Random CutMix boxes, as in the official `cutmix_padding` (uniform area ratio).

  A centre is drawn uniformly over the pixels and a box of sides sqrt(1 - u) * (H, W), u ~ U(0, 1),
  is placed there and clipped to the image.

  Args:
    rng: JAX PRNG key.
    batch: number of masks.
    height: image height.
    width: image width.

  Returns:
    (mask float32 [batch, height, width, 1] with 1 inside the box, box_fraction float32 [batch]
    = mean of each mask).
  """
  key_y, key_x, key_area = jax.random.split(rng, 3)
  centre_y = jax.random.randint(key_y, (batch,), 0, height)
  centre_x = jax.random.randint(key_x, (batch,), 0, width)
  side = jnp.sqrt(1.0 - jax.random.uniform(key_area, (batch,)))
  half_h = (side * height).astype(jnp.int32) // 2
  half_w = (side * width).astype(jnp.int32) // 2
  top = jnp.clip(centre_y - half_h, 0, height)[:, None, None]
  bottom = jnp.clip(centre_y + half_h, 0, height)[:, None, None]
  left = jnp.clip(centre_x - half_w, 0, width)[:, None, None]
  right = jnp.clip(centre_x + half_w, 0, width)[:, None, None]
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  mask = ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)).astype(jnp.float32)
  return mask[..., None], mask.mean(axis=(1, 2))


def mixup_cutmix(rng, images, labels_onehot, mixup_alpha: Optional[float] = None,
                 cutmix: bool = False):
  """MixUp and/or CutMix on a batch, paired as in the official Perceiver code.

  Each example i is mixed with partner B-1-i (the batch reversed). With only MixUp, every example
  gets MixUp with ratio ~ Beta(alpha, alpha); with only CutMix, every example gets a CutMix box;
  with both, the first half (B // 2) gets MixUp and the rest CutMix, like `my_mixup_cutmix`. The
  label is `ratio * y_i + (1 - ratio) * y_partner`, where for CutMix `ratio` is the exact fraction
  of pixels kept from example i. Differences from the official code: it draws the two sides of a
  pair from a doubled batch (2B inputs -> B outputs), we pair within the batch, so an epoch still
  sees every example once as the main image.

  Args:
    rng: JAX PRNG key.
    images: [B, H, W, C] float (normalised or not: mixing is linear).
    labels_onehot: [B, K] one-hot (or soft) labels.
    mixup_alpha: Beta parameter for MixUp (official: 0.2); None disables MixUp.
    cutmix: whether to use CutMix (official: True).

  Returns:
    (images [B, H, W, C], labels [B, K] float32 summing to 1 per row).
  """
  use_mixup = mixup_alpha is not None
  if use_mixup and mixup_alpha <= 0:
    raise ValueError(f'mixup_alpha must be > 0 (or None to disable), got {mixup_alpha}.')
  labels = jnp.asarray(labels_onehot, jnp.float32)
  if not use_mixup and not cutmix:
    return images, labels
  batch, height, width = images.shape[:3]
  partner_images, partner_labels = images[::-1], labels[::-1]
  key_mixup, key_cutmix = jax.random.split(rng)

  mixup_ratio = jnp.ones((batch,), jnp.float32)
  if use_mixup:
    mixup_ratio = jax.random.beta(key_mixup, mixup_alpha, mixup_alpha, (batch,)).astype(
        jnp.float32)
  cut_mask = jnp.ones((batch, height, width, 1), jnp.float32)
  cut_ratio = jnp.ones((batch,), jnp.float32)
  if cutmix:
    cut_mask, cut_ratio = cutmix_masks(key_cutmix, batch, height, width)

  if use_mixup and cutmix:
    is_mixup = jnp.arange(batch) < batch // 2
  else:
    is_mixup = jnp.full((batch,), use_mixup)
  # Per-pixel weight of example i: a constant for MixUp rows, the box mask for CutMix rows.
  pixel_weight = jnp.where(is_mixup[:, None, None, None], mixup_ratio[:, None, None, None],
                           cut_mask)
  ratio = jnp.where(is_mixup, mixup_ratio, cut_ratio)
  mixed = pixel_weight * images + (1.0 - pixel_weight) * partner_images
  mixed_labels = ratio[:, None] * labels + (1.0 - ratio[:, None]) * partner_labels
  return mixed.astype(images.dtype), mixed_labels


# ============================================================================================
# Class lists.
# ============================================================================================


def load_class_names(path: str, column: Optional[str] = None) -> List[str]:
  """Reads an ordered class list (e.g. the 1000 ImageNet wnids) from a CSV or text file.

  * A `.csv` file needs a header. The names come from `column`, or else the first of `wnid`,
    `class_name`, `name`, `label` present. If it has a `class_index` (or `index`) column, rows are
    ordered by it and it must be 0..K-1, each once.
  * Any other file: one name per non-empty line, in order.

  Args:
    path: the file.
    column: CSV column holding the names.

  Returns:
    The names; position = class index.

  Raises:
    FileNotFoundError: if the file is missing.
    ValueError: for a missing column, bad indices, empty or duplicate names.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Class list file not found: {path}')
  if path.lower().endswith('.csv'):
    with open(path, newline='', encoding='utf-8-sig') as f:
      reader = csv.DictReader(f)
      fields = reader.fieldnames or []
      rows = list(reader)
    if column is None:
      column = next((c for c in ('wnid', 'class_name', 'name', 'label') if c in fields), None)
    if column is None or column not in fields:
      wanted = column or 'wnid, class_name, name or label'
      raise ValueError(f'{path}: no class-name column ({wanted}); the header has {fields}.')
    index_column = next((c for c in ('class_index', 'index') if c in fields), None)
    if index_column is not None:
      try:
        indices = [int(row[index_column]) for row in rows]
      except ValueError as e:
        raise ValueError(f'{path}: column {index_column!r} must hold integers: {e}') from e
      if sorted(indices) != list(range(len(rows))):
        raise ValueError(f'{path}: column {index_column!r} must list 0..{len(rows) - 1} once each.')
      rows = [row for _, row in sorted(zip(indices, rows), key=lambda pair: pair[0])]
    names = [(row[column] or '').strip() for row in rows]
  else:
    with open(path, encoding='utf-8-sig') as f:
      names = [line.strip() for line in f if line.strip()]
  if not names or any(not name for name in names):
    raise ValueError(f'{path}: the class list is empty or has an empty name.')
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise ValueError(f'{path}: class names must be unique; repeated: {duplicates[:5]}. '
                     'For ImageNet use the wnid column, not the short names.')
  return names


def _resolve_class_names(class_names: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
  if class_names is None:
    return None
  if isinstance(class_names, (str, os.PathLike)):
    return load_class_names(os.fspath(class_names))
  names = [str(name) for name in class_names]
  if len(set(names)) != len(names):
    raise ValueError('class_names must be unique.')
  return names


def _unknown_class_error(what: str, name: str, class_names: Sequence[str]) -> ValueError:
  shown = ', '.join(class_names[:5])
  return ValueError(
      f'{what} {name!r} is not in the class list ({len(class_names)} classes; the first are: '
      f'{shown}{", ..." if len(class_names) > 5 else ""}). Pass class_names with the full, '
      'ordered class list (e.g. a CSV with a wnid column) or remove it.')


# ============================================================================================
# Sources. A table source can load example i of its split by index; TFDS streams records.
# ============================================================================================


@dataclasses.dataclass(frozen=True)
class _TableSource:
  """A split whose examples can be read by index (files on disk or in-memory arrays)."""
  num_examples: int
  num_classes: int
  class_names: Optional[Tuple[str, ...]]
  geometry: str
  load: Callable[[Any], Tuple[Any, Any]]  # TF int64 index -> (uint8 [h, w, 3], int32 label)
  # Files on disk: the file of each index, to name a file TF cannot decode.
  paths: Optional[Sequence[str]] = None


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
  name: str
  builder: Any
  split: str
  num_classes: int
  class_names: Optional[Tuple[str, ...]]
  geometry: str = 'imagenet'


def _import_tf():
  """Imports TensorFlow for the input pipeline and hides accelerators from it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    # The pipeline runs on the host; JAX owns the GPUs/TPUs.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF devices were already initialised by someone else.
    pass
  return tf


def decode_image(image_bytes):
  """Decodes JPEG/PNG/GIF/BMP bytes to uint8 RGB [h, w, 3] (grey images become RGB).

  JPEGs use libjpeg's accurate integer IDCT, which gives exactly PIL's pixels, so the NumPy/PIL
  prediction path sees the same images as the pipeline. (TF's default fast IDCT, which the
  official code used, differs from it by about 1 grey level on average and up to ~20 at edges.)
  """
  tf = _import_tf()
  image = tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False))
  return tf.ensure_shape(image, [None, None, 3])


class ImageDecodeError(ValueError):
  """Image files of a folder source that TensorFlow cannot decode (the message names them)."""


def undecodable_image(path: str) -> Optional[str]:
  """Why `decode_image` (the pipeline's decoder) fails on the file `path`, or None if it decodes."""
  tf = _import_tf()
  try:
    decode_image(tf.io.read_file(path))
  except tf.errors.OpError as e:
    return _tf_reason(e)
  return None


def _tf_reason(error) -> str:
  """The readable part of a TF error: no '{{function_node ...}}' prefix or '[Op:...]' tail."""
  import re  # pylint: disable=g-import-not-at-top
  text = (getattr(error, 'message', '') or str(error) or type(error).__name__).strip()
  text = re.sub(r'\{\{[^}]*\}\}\s*', '', text.splitlines()[0])
  return re.sub(r'\s*\[Op:[^\]]*\].*$', '', text).strip() or type(error).__name__


def _bad_files_message(bad: Sequence[Tuple[str, str]], where: str) -> str:
  shown = '; '.join(f'{path} ({why.rstrip(".")})' for path, why in bad[:10])
  more = f' (and {len(bad) - 10} more)' if len(bad) > 10 else ''
  return (f'{len(bad)} image file(s) in {where} cannot be decoded as JPEG/PNG/GIF/BMP: {shown}'
          f'{more}. Remove or re-encode them (e.g. PIL: Image.open(p).convert("RGB").save(q)), '
          'then run again.')


class _NamedDecodeErrors:
  """Wraps a batch iterator of a folder source: a TF decode error becomes one `ImageDecodeError`
  naming the bad file(s).

  Nothing is checked up front (a 1.28M-image folder would take minutes to decode): when pulling a
  batch fails, only the files of that batch and the next one are decoded again, one by one, to
  find the culprit; if none of them fails (the error surfaced elsewhere in the prefetch window),
  the file headers of the whole folder are checked (16 bytes per file). Bad files are not skipped
  silently: skipping would change the example count and the deterministic stream (and so resume).
  """

  def __init__(self, iterator, paths: Sequence[str], indices_at: Callable[[np.ndarray], np.ndarray],
               batch_size: int, where: str):
    self._it = iterator
    self._paths = paths
    self._indices_at = indices_at
    self._batch_size = batch_size
    self._where = where
    self._batches = 0

  def __iter__(self):
    return self

  def __next__(self):
    tf = _import_tf()
    try:
      batch = next(self._it)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      raise self._named_error(e) from None
    self._batches += 1
    return batch

  def _named_error(self, error) -> Exception:
    first = self._batches * self._batch_size
    positions = np.arange(first, first + 2 * self._batch_size, dtype=np.int64)
    candidates = sorted({int(i) for i in self._indices_at(positions)})
    bad = []
    for i in candidates:
      why = undecodable_image(self._paths[i])
      if why is not None:
        bad.append((self._paths[i], why))
    if not bad:
      bad = [(p, 'not a JPEG/PNG/GIF/BMP file (header ' + head.hex() + ')')
             for p, head in ((p, _file_header(p)) for p in self._paths)
             if not _known_image_header(head)]
    if not bad:
      reason = _tf_reason(error)
      return ImageDecodeError(f'An image in {self._where} cannot be decoded ({reason}), but '
                              'no single file could be pinned down; check the folder with '
                              'perceiver_io.data.image.undecodable_image(path).')
    return ImageDecodeError(_bad_files_message(bad, self._where))


_IMAGE_MAGIC = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'GIF87a', b'GIF89a', b'BM')


def _file_header(path: str) -> bytes:
  try:
    with open(path, 'rb') as f:
      return f.read(16)
  except OSError:
    return b''


def _known_image_header(head: bytes) -> bool:
  return head.startswith(_IMAGE_MAGIC) or (head[:4] == b'RIFF' and head[8:12] == b'WEBP')


def _list_image_files(folder: str) -> List[str]:
  return sorted(f for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


def _scan_class_folders(root: str, class_names: Optional[List[str]]):
  """Lists `root/<class>/<image>` files. Returns (paths, labels, class_names)."""
  folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                   and not d.startswith('.'))
  if not folders:
    raise ValueError(f'{root} has neither a labels.csv nor class sub-folders '
                     '(expected <root>/<class_name>/*.jpg|jpeg|png).')
  if class_names is None:
    class_names = folders
  index = {name: i for i, name in enumerate(class_names)}
  paths, labels = [], []
  for folder in folders:
    if folder not in index:
      raise _unknown_class_error(f'Class folder {os.path.join(root, folder)!r}: name', folder,
                                 class_names)
    for file_name in _list_image_files(os.path.join(root, folder)):
      paths.append(os.path.join(root, folder, file_name))
      labels.append(index[folder])
  if not paths:
    raise ValueError(f'No .jpg/.jpeg/.png images found under the class folders of {root}.')
  return paths, labels, class_names


def _read_labels_csv(root: str, class_names: Optional[List[str]]):
  """Reads `root/labels.csv`. Returns (paths, labels, class_names or None)."""
  csv_path = os.path.join(root, 'labels.csv')
  with open(csv_path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    rows = list(reader)
  file_column = next((c for c in ('filename', 'file', 'path') if c in fields), None)
  label_column = next((c for c in ('label', 'class_index', 'wnid', 'class_name') if c in fields),
                      None)
  if file_column is None or label_column is None:
    raise ValueError(f'{csv_path}: expected a header with a file column (filename/file/path) and '
                     f'a label column (label/class_index/wnid); got {fields}.')
  if not rows:
    raise ValueError(f'{csv_path} lists no images.')
  values = [(row[label_column] or '').strip() for row in rows]
  if all(v.lstrip('-').isdigit() for v in values):
    labels = [int(v) for v in values]
    limit = len(class_names) if class_names is not None else None
    bad = [v for v in labels if v < 0 or (limit is not None and v >= limit)]
    if bad:
      allowed = f'0..{limit - 1} (the class list)' if limit is not None else '>= 0'
      raise ValueError(f'{csv_path}: label {bad[0]} in column {label_column!r} is not in '
                       f'{allowed}.')
    if class_names is not None and 'wnid' in fields and label_column != 'wnid':
      # Cross-check the integer labels against the wnids when both are present.
      for row, label in zip(rows, labels):
        if class_names[label] != row['wnid'].strip():
          raise ValueError(
              f'{csv_path}: {row[file_column]} has {label_column}={label}, which is '
              f'{class_names[label]!r} in the class list, but wnid={row["wnid"]!r}. The class '
              'list is in a different order than the CSV.')
  else:
    if class_names is None:
      raise ValueError(f'{csv_path}: labels in column {label_column!r} are names; pass '
                       'class_names (a list or a CSV/text file) to map them to indices.')
    index = {name: i for i, name in enumerate(class_names)}
    for v in values:
      if v not in index:
        raise _unknown_class_error(f'{csv_path}: label', v, class_names)
    labels = [index[v] for v in values]
  paths = [os.path.join(root, row[file_column].strip()) for row in rows]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f'{csv_path} lists {len(missing)} missing file(s), e.g. {missing[:3]}.')
  return paths, labels, class_names


def _folder_source(root: str, split: str, class_names: Optional[List[str]],
                   num_classes: Optional[int]) -> _TableSource:
  if not os.path.isdir(root):
    raise FileNotFoundError(f'Image folder not found: {root}')
  folder = split_folder(root, split)
  if os.path.isfile(os.path.join(folder, 'labels.csv')):
    paths, labels, class_names = _read_labels_csv(folder, class_names)
  else:
    paths, labels, class_names = _scan_class_folders(folder, class_names)
  inferred = len(class_names) if class_names is not None else max(labels) + 1
  num_classes = _check_num_classes(num_classes, inferred, class_names is not None, folder)
  paths_array = np.asarray(paths)
  labels_array = np.asarray(labels, np.int32)

  def load(index):
    tf = _import_tf()
    image = decode_image(tf.io.read_file(tf.gather(paths_array, index)))
    return image, tf.gather(labels_array, index)

  return _TableSource(len(paths), num_classes,
                      tuple(class_names) if class_names is not None else None, 'imagenet', load,
                      paths=paths)


# Folder names that hold a split, by the split names a config uses.
_SPLIT_FOLDERS = {'train': ('train',), 'validation': ('validation', 'val'),
                  'val': ('val', 'validation'), 'test': ('test',),
                  'eval': ('eval',)}


def split_folder(root: str, split: str) -> str:
  """The folder of `split` under a `dir:` root: `root/<split>` (validation
  also as val/), or `root` itself when it has no split folders at all.

  Why so strict: a root with train/ and val/ asked for 'validation' used to
  fall back to the root, so train/ and val/ became two "classes" and the
  run failed at its first evaluation, after training.
  """
  for name in _SPLIT_FOLDERS.get(split, (split,)):
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  present = sorted(name for names in _SPLIT_FOLDERS.values() for name in names
                   if os.path.isdir(os.path.join(root, name)))
  if present:
    raise ValueError(f'{root} has split folders {sorted(set(present))} but none for split '
                     f'{split!r}; set the config\'s split to one of them (e.g. '
                     f'--config.data.eval_split={sorted(set(present))[-1]}).')
  return root


def _check_num_classes(requested: Optional[int], inferred: int, exact: bool, where: str) -> int:
  """Returns the number of classes; `exact` means `inferred` comes from a class list."""
  if requested is None:
    return inferred
  if (exact and requested != inferred) or requested < inferred:
    raise ValueError(f'num_classes={requested} does not match the data in {where}, which has '
                     f'{inferred} classes{"" if exact else " or more"}.')
  return requested


def _eval_split_name(split: str, source: str) -> str:
  if split == 'train':
    return 'train'
  if split in _EVAL_SPLIT_ALIASES:
    return 'test'
  raise ValueError(f'Source {source!r} has splits train and test (alias validation); '
                   f'got {split!r}.')


def _digits_source(split: str, num_classes: Optional[int]) -> _TableSource:
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  train_idx, test_idx = model_selection.train_test_split(
      np.arange(len(digits.target)), test_size=DIGITS_NUM_TEST, random_state=DIGITS_SPLIT_SEED,
      stratify=digits.target)
  indices = train_idx if _eval_split_name(split, 'digits') == 'train' else test_idx
  # Pixel values are 0..16; map them to 0..255.
  images = np.round(digits.images[indices] * (255.0 / 16.0)).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = digits.target[indices].astype(np.int32)
  num_classes = _check_num_classes(num_classes, 10, True, 'digits')

  def load(index):
    tf = _import_tf()
    return tf.gather(images, index), tf.gather(labels, index)

  return _TableSource(len(indices), num_classes, tuple(str(d) for d in range(10)), 'resize', load)


def _synthetic_source(spec: str, split: str, num_classes: Optional[int]) -> _TableSource:
  parts = spec.split(':')
  try:
    classes = int(parts[1])
    count = int(parts[2]) if len(parts) > 2 else None
    if len(parts) > 3 or classes < 1 or (count is not None and count < 1):
      raise ValueError
  except (IndexError, ValueError):
    raise ValueError(f'Bad synthetic source {spec!r}: expected synthetic:<num_classes> or '
                     'synthetic:<num_classes>:<num_examples> with positive integers.') from None
  split = _eval_split_name(split, spec)
  count = count or SYNTHETIC_NUM_EXAMPLES[split]
  split_code = 0 if split == 'train' else 1
  num_classes = _check_num_classes(num_classes, classes, True, spec)

  def load(index):
    tf = _import_tf()
    key = tf.stack([tf.constant(split_code, tf.int64), tf.cast(index, tf.int64)])
    label = tf.random.stateless_uniform([], key, minval=0, maxval=classes, dtype=tf.int32)
    # A fixed colour per class plus per-example noise: learnable, but not trivially constant.
    colour = tf.random.stateless_uniform(
        [3], tf.stack([tf.constant(7, tf.int64), tf.cast(label, tf.int64)]), 32.0, 224.0)
    noise = tf.random.stateless_uniform([SYNTHETIC_SIZE, SYNTHETIC_SIZE, 3],
                                        tf.random.experimental.stateless_fold_in(key, 1),
                                        -32.0, 32.0)
    image = tf.cast(tf.clip_by_value(colour + noise, 0.0, 255.0), tf.uint8)
    return image, label

  return _TableSource(count, num_classes, None, 'resize', load)


def _tfds_source(name: str, split: str, data_dir: Optional[str], manual_dir: Optional[str],
                 num_classes: Optional[int]) -> _TfdsSource:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _import_tf()
  builder = tfds.builder(name, data_dir=data_dir)
  is_prepared = getattr(builder, 'is_prepared', None)
  prepared = is_prepared() if is_prepared is not None else os.path.exists(
      os.path.join(builder.data_dir, 'dataset_info.json'))
  if not prepared:
    needs_manual = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) is not None
    if manual_dir is None and needs_manual:
      raise ValueError(
          f'TFDS dataset {name!r} is not prepared in {builder.data_dir} and TFDS cannot download '
          'it. Either pass manual_dir=<folder holding the archives downloaded by hand> '
          '(for imagenet2012: ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
          'image-net.org) to prepare it once, or use a local image folder source '
          '(<root>/<class_name>/*.JPEG, or <root>/labels.csv).')
    if manual_dir is not None and not os.path.isdir(manual_dir):
      raise FileNotFoundError(f'manual_dir {manual_dir!r} does not exist.')
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'Could not prepare TFDS dataset {name!r} in {builder.data_dir} '
                       f'(manual_dir={manual_dir!r}): {e}') from e
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'TFDS dataset {name!r} has features {list(features.keys())}; an image '
                     'classification source needs "image" and "label".')
  label_feature = features['label']
  names = getattr(label_feature, 'names', None)
  inferred = getattr(label_feature, 'num_classes', None) or (len(names) if names else None)
  if inferred is None and num_classes is None:
    raise ValueError(f'Cannot tell the number of classes of {name!r}; pass num_classes.')
  num_classes = _check_num_classes(num_classes, inferred or num_classes, True, name)
  return _TfdsSource(name, builder, split, num_classes, tuple(names) if names else None)


def _make_source(source: str, split: str, data_dir, manual_dir, class_names, num_classes):
  if not isinstance(source, str) or not source:
    raise ValueError(f'source must be a non-empty string, got {source!r}.')
  if source == 'digits':
    return _digits_source(split, num_classes)
  if source.startswith('synthetic:'):
    return _synthetic_source(source, split, num_classes)
  if source.startswith('tfds:') or source == 'imagenet2012' or source.startswith('imagenet2012:'):
    return _tfds_source(source[len('tfds:'):] if source.startswith('tfds:') else source, split,
                        data_dir, manual_dir, num_classes)
  path = source[len('dir:'):] if source.startswith('dir:') else source
  if os.path.isdir(path):
    return _folder_source(path, split, _resolve_class_names(class_names), num_classes)
  raise ValueError(
      f'Unknown image source {source!r}. Expected "imagenet2012", "tfds:<name>", "digits", '
      '"synthetic:<num_classes>[:<num_examples>]", or an existing directory ("dir:<path>" or a '
      'path): <root>/<class_name>/*.jpg, or <root>/labels.csv with filename,label.')


# ============================================================================================
# TF preprocessing of single examples.
# ============================================================================================


def _center_crop_tf(image, image_size: int, crop_padding: int):
  tf = _import_tf()
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  side = tf.maximum(tf.cast(
      np.float32(image_size / (image_size + crop_padding))
      * tf.cast(tf.minimum(height, width), tf.float32), tf.int32), 1)
  top = (height - side + 1) // 2
  left = (width - side + 1) // 2
  return tf.image.crop_to_bounding_box(image, top, left, side, side)


def _inception_crop_tf(image, seed, image_size: int, crop_padding: int):
  """Inception-style random crop; falls back to the centre crop if sampling gave the full image."""
  tf = _import_tf()
  shape = tf.shape(image)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, size)
  # Like the official code, a crop equal to the whole image means all attempts failed.
  return tf.cond(tf.reduce_all(tf.equal(size, shape)),
                 lambda: _center_crop_tf(image, image_size, crop_padding), lambda: crop)


def resize_bicubic_tf(image, image_size: int):
  """Bicubic resize to [image_size, image_size] in float32, unclamped (as the official code)."""
  tf = _import_tf()
  return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size],
                         method='bicubic', antialias=False)


def train_augment(image, seed, *, image_size: int = IMAGE_SIZE,
                  randaugment: Optional[Tuple[int, float]] = (4, 5), geometry: str = 'imagenet',
                  crop_padding: int = CROP_PADDING):
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
  tf = _import_tf()
  seed = tf.cast(seed, tf.int64)
  crop_seed, flip_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if geometry == 'imagenet':
    image = _inception_crop_tf(image, crop_seed, image_size, crop_padding)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  elif geometry == 'resize':
    image = tf.cast(tf.clip_by_value(tf.round(resize_bicubic_tf(image, image_size)), 0, 255),
                    tf.uint8)
  else:
    raise ValueError(f'geometry must be "imagenet" or "resize", got {geometry!r}.')
  if randaugment is not None:
    num_layers, magnitude = randaugment
    image = randaugment_lib.randaugment(image, augment_seed, num_layers=num_layers,
                                        magnitude=magnitude)
  return image


def train_preprocess(image, seed, *, image_size: int = IMAGE_SIZE,
                     randaugment: Optional[Tuple[int, float]] = (4, 5), geometry: str = 'imagenet',
                     crop_padding: int = CROP_PADDING):
  """Full training preprocessing of one image: `train_augment`, bicubic resize, normalise.

  Returns:
    float32 [image_size, image_size, 3].
  """
  image = train_augment(image, seed, image_size=image_size, randaugment=randaugment,
                        geometry=geometry, crop_padding=crop_padding)
  return normalize_image(resize_bicubic_tf(image, image_size))


def eval_preprocess(image, *, image_size: int = IMAGE_SIZE, geometry: str = 'imagenet',
                    crop_padding: int = CROP_PADDING):
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
    raise ValueError(f'geometry must be "imagenet" or "resize", got {geometry!r}.')
  return normalize_image(resize_bicubic_tf(image, image_size))


# ============================================================================================
# The pipeline.
# ============================================================================================


def _process_seed(seed: int, process_index: int, stream: int) -> np.ndarray:
  """A [2] int64 key for one random stream (0: shuffling, 1: augmentation) of one process."""
  state = np.random.SeedSequence([seed, process_index, stream]).generate_state(2, np.uint32)
  return state.astype(np.int64)


def make_image_dataset(
    source: str,
    split: str,
    *,
    batch_size: int,
    train: bool,
    image_size: int = IMAGE_SIZE,
    seed: int = 0,
    repeat: Optional[bool] = None,
    process_index: int = 0,
    process_count: int = 1,
    randaugment: Optional[Tuple[int, float]] = (4, 5),
    num_classes: Optional[int] = None,
    data_dir: Optional[str] = None,
    manual_dir: Optional[str] = None,
    class_names: Union[None, str, Sequence[str]] = None,
    start_batch: int = 0,
    geometry: Optional[str] = None,
    shuffle_buffer: Optional[int] = None,
) -> Tuple[Iterator[Batch], Dict[str, Any]]:
  """Builds this process's stream of batches for an image-classification source.

  Train streams shuffle (a fresh permutation per epoch), augment with `train_preprocess`, and drop
  the last partial batch. Eval streams keep the order, use `eval_preprocess`, and pad the last
  batches with `mask == 0` examples so that every process yields the same number of batches and
  every example is counted exactly once.

  Args:
    source: see the module docstring ('imagenet2012', 'tfds:<name>', 'digits',
      'synthetic:<K>[:<N>]', or a directory).
    split: 'train', 'validation'/'test', or any TFDS split string for TFDS sources. For a
      directory, `<dir>/<split>` is used if it exists, else `<dir>` itself.
    batch_size: examples per batch on this process (global batch / process_count).
    train: training (shuffle + augment) or evaluation (ordered, padded) stream.
    image_size: output side in pixels.
    seed: non-negative integer; the whole stream is a function of it.
    repeat: loop over the data forever; default True for train, False for eval.
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()); each reads a disjoint shard.
    randaugment: (num_layers, magnitude) for training, or None. Ignored for eval.
    num_classes: expected number of classes; checked against the source (default: inferred).
    data_dir: TFDS data directory.
    manual_dir: TFDS manual download directory (for preparing imagenet2012 once).
    class_names: ordered class list (sequence or CSV/text file) for folder sources.
    start_batch: skip this many batches of the stream (resume); the batches that follow are
      identical to those of an uninterrupted stream.
    geometry: 'imagenet' (Inception crop / centre crop) or 'resize' (whole image); the default
      is 'imagenet' for photos (TFDS, folders) and 'resize' for digits and synthetic data.
    shuffle_buffer: TFDS only: shuffle-buffer size (default max(16 * batch_size, 10_000)).

  Returns:
    (iterator of dicts with 'image' float32 [B, S, S, 3], 'label' int32 [B], 'mask' int32 [B]
    (1 = real example), info dict with 'num_examples' (whole split), 'num_examples_this_process',
    'num_classes', 'class_names' (or None), 'num_batches' (per pass over this process's shard;
    equal on all processes for eval), 'image_shape').
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  if not (isinstance(seed, (int, np.integer)) and seed >= 0):
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}.')
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'Need 0 <= process_index < process_count, got {process_index} and '
                     f'{process_count}.')
  if start_batch < 0:
    raise ValueError(f'start_batch must be >= 0, got {start_batch}.')
  if randaugment is not None and len(tuple(randaugment)) != 2:
    raise ValueError(f'randaugment must be (num_layers, magnitude) or None, got {randaugment!r}.')
  repeat = train if repeat is None else repeat
  tf = _import_tf()
  src = _make_source(source, split, data_dir, manual_dir, class_names, num_classes)
  geometry = geometry or src.geometry
  if geometry not in ('imagenet', 'resize'):
    raise ValueError(f'geometry must be "imagenet" or "resize", got {geometry!r}.')
  shuffle_key = _process_seed(int(seed), process_index, 0)
  augment_key = _process_seed(int(seed), process_index, 1)

  def preprocess(image, label, position):
    if train:
      example_seed = tf.random.experimental.stateless_fold_in(tf.constant(augment_key), position)
      image = train_preprocess(image, example_seed, image_size=image_size,
                               randaugment=randaugment, geometry=geometry)
    else:
      image = eval_preprocess(image, image_size=image_size, geometry=geometry)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return {'image': image, 'label': tf.cast(label, tf.int32), 'mask': tf.constant(1, tf.int32)}

  def padding_example(_):
    return {'image': tf.zeros([image_size, image_size, 3], tf.float32),
            'label': tf.constant(0, tf.int32), 'mask': tf.constant(0, tf.int32)}

  if isinstance(src, _TableSource):
    ds, total, shard_size, indices_at = _table_stream(
        tf, src, train, repeat, batch_size, start_batch, process_index, process_count,
        shuffle_key, preprocess, padding_example)
  else:
    ds, total, shard_size = _tfds_stream(tf, src, train, repeat, batch_size, start_batch,
                                         process_index, process_count, seed, shuffle_buffer,
                                         preprocess, padding_example)
  if train:
    num_batches = shard_size // batch_size
  else:
    num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  info = {
      'num_examples': total,
      'num_examples_this_process': shard_size,
      'num_classes': src.num_classes,
      'class_names': list(src.class_names) if src.class_names is not None else None,
      'num_batches': num_batches,
      'image_shape': (image_size, image_size, 3),
  }
  iterator = ds.as_numpy_iterator()
  if isinstance(src, _TableSource) and src.paths is not None:
    iterator = _NamedDecodeErrors(iterator, src.paths, indices_at, batch_size,
                                  f'{source} [{split}]')
  return iterator, info


def _plain(tf, fn):
  """Marks a map function as plain TF code: skipping AutoGraph makes tracing much faster."""
  return tf.autograph.experimental.do_not_convert(fn)


def _table_stream(tf, src: _TableSource, train, repeat, batch_size, start_batch, process_index,
                  process_count, shuffle_key, preprocess, padding_example):
  """Positions -> examples for an index-addressable source. Returns (ds, total, shard_size)."""
  shard = np.arange(src.num_examples, dtype=np.int64)[process_index::process_count]
  shard_size = len(shard)
  start = start_batch * batch_size
  if train:
    if shard_size < batch_size:
      raise ValueError(f'Process {process_index} has {shard_size} training examples, fewer than '
                       f'one batch of {batch_size}.')
    stop = np.iinfo(np.int64).max if repeat else shard_size - shard_size % batch_size
    positions = tf.data.Dataset.range(start, stop)

    def example(position):
      # A fresh permutation of the shard per epoch, computed per position: skipping is free.
      epoch = position // shard_size
      epoch_key = tf.random.experimental.stateless_fold_in(tf.constant(shuffle_key), epoch)
      slot = tf.random.experimental.index_shuffle(position % shard_size, epoch_key,
                                                  tf.constant(shard_size - 1, tf.int64))
      image, label = src.load(tf.gather(shard, slot))
      return preprocess(image, label, position)

    ds = positions.map(_plain(tf, example), num_parallel_calls=tf.data.AUTOTUNE)

    def indices_at(offsets):
      # Source indices of the examples at these offsets of the stream (same maths as `example`).
      slots = []
      for position in np.asarray(offsets, np.int64) + start:
        epoch_key = tf.random.experimental.stateless_fold_in(tf.constant(shuffle_key),
                                                             tf.constant(position // shard_size))
        slots.append(tf.random.experimental.index_shuffle(
            tf.constant(position % shard_size), epoch_key, tf.constant(shard_size - 1, tf.int64)))
      return shard[np.asarray([int(x) for x in slots], np.int64)]
  else:
    padded = math.ceil(math.ceil(src.num_examples / process_count) / batch_size) * batch_size

    def example(position):
      real = position < shard_size
      return tf.cond(
          real,
          lambda: preprocess(*src.load(tf.gather(shard, tf.minimum(position, shard_size - 1))),
                             position),
          lambda: padding_example(position))

    positions = tf.data.Dataset.range(padded)
    if repeat:
      positions = positions.repeat()
    ds = positions.skip(start).map(_plain(tf, example), num_parallel_calls=tf.data.AUTOTUNE)

    def indices_at(offsets):
      position = (np.asarray(offsets, np.int64) + start) % padded
      return shard[position[position < shard_size]]
  return ds, src.num_examples, shard_size, indices_at


def _tfds_stream(tf, src: _TfdsSource, train, repeat, batch_size, start_batch, process_index,
                 process_count, seed, shuffle_buffer, preprocess, padding_example):
  """Records -> examples for a TFDS source. Returns (ds, total, shard_size)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  shard_split = tfds.even_splits(src.split, n=process_count, drop_remainder=False)[process_index]
  read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=True)
  decoders = {'image': tfds.decode.SkipDecoding()}
  ds = src.builder.as_dataset(split=shard_split, shuffle_files=train, read_config=read_config,
                              decoders=decoders)
  shard_size = int(ds.cardinality())
  try:
    total = int(src.builder.info.splits[src.split].num_examples)
  except (KeyError, ValueError, TypeError):
    total = 0
  if total <= 0:  # Split metadata unavailable (e.g. mocked data): count the split itself.
    total = int(src.builder.as_dataset(split=src.split, decoders=decoders).cardinality())
  if shard_size < 0 or total < 0:
    raise ValueError(f'Cannot count the examples of {src.name}:{src.split}.')

  def decode(example):
    return decode_image(example['image']), example['label']

  start = start_batch * batch_size
  if train:
    if shard_size < batch_size:
      raise ValueError(f'Process {process_index} has {shard_size} training examples in '
                       f'{src.name}:{src.split}, fewer than one batch of {batch_size}.')
    buffer = shuffle_buffer or max(16 * batch_size, 10_000)
    ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
      ds = ds.repeat()
    # Skipping happens on encoded records (no decoding), before augmentation.
    ds = ds.enumerate().skip(start)
    ds = ds.map(_plain(tf, lambda position, ex: preprocess(*decode(ex), position)),
                num_parallel_calls=tf.data.AUTOTUNE)
  else:
    padded = math.ceil(math.ceil(total / process_count) / batch_size) * batch_size
    if shard_size > padded:
      raise ValueError(f'{src.name}:{src.split} shard {process_index} has {shard_size} examples, '
                       f'more than the {total} / {process_count} expected; split metadata and '
                       'data disagree.')
    real = ds.enumerate().map(_plain(tf, lambda position, ex: preprocess(*decode(ex), position)),
                              num_parallel_calls=tf.data.AUTOTUNE)
    pads = tf.data.Dataset.range(padded - shard_size).map(_plain(tf, padding_example))
    ds = real.concatenate(pads)
    if repeat:
      ds = ds.repeat()
    ds = ds.skip(start)
  return ds, total, shard_size
