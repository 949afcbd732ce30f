"""Image files to uint8 RGB pixels, identically in the TF pipeline and in NumPy.

Why this module exists: the pipeline decodes with TensorFlow and prediction
with PIL, and both must give the same pixels (JPEG IDCT, 16-bit PNGs), or a
model would be evaluated on other inputs than it predicts on. A folder of a
million images may also hold a file TF cannot decode; the pipeline then names
that file in one error instead of failing with a bare TF op error.
"""

import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from perceiver_io.data.image.lazy_tf import import_tf


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
        raise ValueError(
          '32-bit float images are not supported (TF cannot decode them either)'
        )
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
    raise ValueError(
      f'{path}: 32-bit integer pixel values outside 0..65535 are not supported.'
    )
  grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
  return np.repeat(grey[:, :, None], 3, axis=-1)


def decode_image(image_bytes):
  """Decodes JPEG/PNG/GIF/BMP bytes to uint8 RGB [h, w, 3] (grey images become RGB).

  JPEGs use libjpeg's accurate integer IDCT, which gives exactly PIL's pixels, so the NumPy/PIL
  prediction path sees the same images as the pipeline. (TF's default fast IDCT, which the
  official code used, differs from it by about 1 grey level on average and up to ~20 at edges.)
  """
  tf = import_tf()
  image = tf.cond(
    tf.io.is_jpeg(image_bytes),
    lambda: tf.io.decode_jpeg(
      image_bytes, channels=3, dct_method='INTEGER_ACCURATE'
    ),
    lambda: tf.io.decode_image(
      image_bytes, channels=3, expand_animations=False
    ),
  )
  return tf.ensure_shape(image, [None, None, 3])


class ImageDecodeError(ValueError):
  """Image files of a folder source that TensorFlow cannot decode (the message names them)."""


def undecodable_image(path: str) -> Optional[str]:
  """Why `decode_image` (the pipeline's decoder) fails on the file `path`, or None if it decodes."""
  tf = import_tf()
  try:
    decode_image(tf.io.read_file(path))
  except tf.errors.OpError as e:
    return _tf_reason(e)
  return None


def _tf_reason(error) -> str:
  """The readable part of a TF error: no '{{function_node ...}}' prefix or '[Op:...]' tail."""
  import re  # pylint: disable=g-import-not-at-top

  text = (
    getattr(error, 'message', '') or str(error) or type(error).__name__
  ).strip()
  text = re.sub(r'\{\{[^}]*\}\}\s*', '', text.splitlines()[0])
  return (
    re.sub(r'\s*\[Op:[^\]]*\].*$', '', text).strip() or type(error).__name__
  )


def _bad_files_message(bad: Sequence[Tuple[str, str]], where: str) -> str:
  shown = '; '.join(f'{path} ({why.rstrip(".")})' for path, why in bad[:10])
  more = f' (and {len(bad) - 10} more)' if len(bad) > 10 else ''
  return (
    f'{len(bad)} image file(s) in {where} cannot be decoded as JPEG/PNG/GIF/BMP: {shown}'
    f'{more}. Remove or re-encode them (e.g. PIL: Image.open(p).convert("RGB").save(q)), '
    'then run again.'
  )


class _NamedDecodeErrors:
  """Wraps a batch iterator of a folder source: a TF decode error becomes one `ImageDecodeError`
  naming the bad file(s).

  Nothing is checked up front (a 1.28M-image folder would take minutes to decode): when pulling a
  batch fails, only the files of that batch and the next one are decoded again, one by one, to
  find the culprit; if none of them fails (the error surfaced elsewhere in the prefetch window),
  the file headers of the whole folder are checked (16 bytes per file). Bad files are not skipped
  silently: skipping would change the example count and the deterministic stream (and so resume).
  """

  def __init__(
    self,
    iterator,
    paths: Sequence[str],
    indices_at: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    where: str,
  ):
    self._it = iterator
    self._paths = paths
    self._indices_at = indices_at
    self._batch_size = batch_size
    self._where = where
    self._batches = 0

  def __iter__(self):
    return self

  def __next__(self):
    tf = import_tf()
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
      bad = [
        (p, 'not a JPEG/PNG/GIF/BMP file (header ' + head.hex() + ')')
        for p, head in ((p, _file_header(p)) for p in self._paths)
        if not _known_image_header(head)
      ]
    if not bad:
      reason = _tf_reason(error)
      return ImageDecodeError(
        f'An image in {self._where} cannot be decoded ({reason}), but '
        'no single file could be pinned down; check the folder with '
        'perceiver_io.data.image.undecodable_image(path).'
      )
    return ImageDecodeError(_bad_files_message(bad, self._where))


_IMAGE_MAGIC = (
  b'\xff\xd8\xff',
  b'\x89PNG\r\n\x1a\n',
  b'GIF87a',
  b'GIF89a',
  b'BM',
)


def _file_header(path: str) -> bytes:
  try:
    with open(path, 'rb') as f:
      return f.read(16)
  except OSError:
    return b''


def _known_image_header(head: bytes) -> bool:
  return head.startswith(_IMAGE_MAGIC) or (
    head[:4] == b'RIFF' and head[8:12] == b'WEBP'
  )
