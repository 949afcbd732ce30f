"""Optical-flow file formats: Middlebury `.flo`, KITTI 16-bit flow PNGs, frames and masks.

Why this module exists: flow benchmarks store ground truth in formats that are
easy to misread (a 16-bit PNG decoded as 8-bit, or a big-endian `.flo`) into
plausible but wrong numbers. This module reads and writes them byte-exactly
and rejects malformed files with one clear message naming the file. It depends
on NumPy, Pillow and OpenCV, not on TensorFlow; `perceiver_io.flow.layouts`
finds the files in each benchmark's folder tree.

Pillow cannot decode 16-bit RGB PNGs (it silently keeps only the high byte),
so KITTI flow PNGs are read and written with OpenCV (opencv-python-headless,
imported on first use). Why OpenCV rather than pypng, the small pure-Python
alternative: reading one KITTI 2012 flow map (1226x370, 16-bit RGB, from
shared/data/kitti2012_flow) took about 20 ms with OpenCV and 800 ms with
pypng (median of 9 reads on a busy 2-core CPU), and a KITTI evaluation reads
one per image. Both decoded every PNG in that folder (3 flow maps, 4 frames)
bit-identically to a NumPy decoder written from the PNG specification. The
price is a large wheel (about 60 MB).
"""

import dataclasses
import os
import struct
import tempfile
import zlib
from typing import Callable, Optional, Tuple, Union

import numpy as np
from PIL import Image

PathLike = Union[str, os.PathLike]

FLO_MAGIC = 202021.25
FLO_MAGIC_BYTES = struct.pack('<f', FLO_MAGIC)  # b'PIEH'
# Middlebury marks unknown flow with values above 1e9.
FLO_UNKNOWN_THRESHOLD = 1e9
KITTI_FLOW_SCALE = 64.0
KITTI_FLOW_OFFSET = 2.0**15


# --------------------------------------------------------------------------
# Atomic writes.
# --------------------------------------------------------------------------


def atomic_write(path: PathLike, write_fn: Callable[[str], None]) -> None:
  """Calls `write_fn(tmp_path)` and renames the result onto `path`.

  The temporary file lives in the destination folder (so the rename is atomic
  on POSIX) and is removed if `write_fn` raises, so an existing good file at
  `path` is never replaced by a half-written one.

  Args:
    path: destination file.
    write_fn: writes the complete file to the path it is given.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise FileNotFoundError(
      f'Cannot write {path}: folder {directory} does not exist.'
    )
  fd, tmp_path = tempfile.mkstemp(
    dir=directory, prefix='.' + os.path.basename(path), suffix='.tmp'
  )
  os.close(fd)
  try:
    write_fn(tmp_path)
    # mkstemp creates the file 0600; give it the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def _atomic_write_bytes(path: PathLike, data: bytes) -> None:
  def write(tmp_path):
    with open(tmp_path, 'wb') as f:
      f.write(data)

  atomic_write(path, write)


def _read_bytes(path: PathLike, what: str) -> bytes:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} not found: {path}')
  with open(path, 'rb') as f:
    return f.read()


# --------------------------------------------------------------------------
# Middlebury .flo
# --------------------------------------------------------------------------


def _check_flow_array(flow: np.ndarray, what: str = 'flow') -> np.ndarray:
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(
      f'{what} must have shape [H, W, 2] (u, v); got {flow.shape}.'
    )
  if flow.shape[0] < 1 or flow.shape[1] < 1:
    raise ValueError(f'{what} must be non-empty; got shape {flow.shape}.')
  if not np.issubdtype(flow.dtype, np.number):
    raise ValueError(f'{what} must be numeric; got dtype {flow.dtype}.')
  return flow


def decode_flo(data: bytes, source: str = '<bytes>') -> np.ndarray:
  """Decodes the bytes of a Middlebury `.flo` file.

  Layout (little-endian): float32 magic 202021.25 (the ASCII bytes 'PIEH'),
  int32 width, int32 height, then height*width*2 float32 values, row-major,
  with u and v interleaved per pixel.

  Args:
    data: the whole file.
    source: file name used in error messages.

  Returns:
    float32 [H, W, 2] flow, exactly as stored (unknown-flow markers > 1e9 are
    kept; see `known_flow_mask`).
  """
  if len(data) < 12:
    raise ValueError(
      f'{source}: truncated .flo file: {len(data)} bytes, but the header alone '
      'is 12 bytes (magic, width, height).'
    )
  magic = struct.unpack('<f', data[:4])[0]
  if data[:4] != FLO_MAGIC_BYTES:
    swapped = struct.unpack('>f', data[:4])[0]
    hint = (
      ' (it looks big-endian; .flo files are little-endian)'
      if swapped == FLO_MAGIC
      else ''
    )
    raise ValueError(
      f'{source}: not a Middlebury .flo file: magic number is {magic!r} '
      f'(bytes {data[:4]!r}), expected {FLO_MAGIC} '
      f'(bytes {FLO_MAGIC_BYTES!r}){hint}.'
    )
  width, height = struct.unpack('<ii', data[4:12])
  if width <= 0 or height <= 0 or width > 1 << 16 or height > 1 << 16:
    raise ValueError(
      f'{source}: invalid .flo header: width={width}, height={height}; both must '
      'be in [1, 65536].'
    )
  expected = 12 + width * height * 2 * 4
  if len(data) != expected:
    kind = 'truncated' if len(data) < expected else 'oversized'
    raise ValueError(
      f'{source}: {kind} .flo file: the header says {width}x{height}, which needs '
      f'{expected} bytes (12 header + {width}*{height}*2*4 data), but the file has '
      f'{len(data)} bytes.'
    )
  flow = np.frombuffer(data, dtype='<f4', offset=12).reshape(height, width, 2)
  return flow.astype(np.float32)


def encode_flo(flow: np.ndarray) -> bytes:
  """Encodes a [H, W, 2] flow as the bytes of a Middlebury `.flo` file."""
  flow = _check_flow_array(flow)
  height, width, _ = flow.shape
  header = FLO_MAGIC_BYTES + struct.pack('<ii', width, height)
  return header + np.ascontiguousarray(flow, dtype='<f4').tobytes()


def read_flo(path: PathLike) -> np.ndarray:
  """Reads a Middlebury `.flo` file into a float32 [H, W, 2] array."""
  return decode_flo(_read_bytes(path, '.flo file'), source=os.fspath(path))


def write_flo(path: PathLike, flow: np.ndarray) -> None:
  """Writes a [H, W, 2] flow as a `.flo` file (atomically)."""
  _atomic_write_bytes(path, encode_flo(flow))


def known_flow_mask(flow: np.ndarray) -> np.ndarray:
  """1.0 where a `.flo` value is a real flow (finite and |u|, |v| < 1e9), else 0.0."""
  flow = np.asarray(flow)
  known = np.all(
    np.isfinite(flow) & (np.abs(flow) < FLO_UNKNOWN_THRESHOLD), axis=-1
  )
  return known.astype(np.float32)


# --------------------------------------------------------------------------
# PNGs of any bit depth, through OpenCV (Pillow truncates 16-bit RGB).
# --------------------------------------------------------------------------

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# The IEND chunk (empty, fixed CRC) that closes every complete PNG.
_PNG_IEND = b'\x00\x00\x00\x00IEND\xaeB`\x82'
_PNG_COLOUR_NAMES = {
  0: 'grayscale',
  2: 'RGB',
  3: 'palette',
  4: 'grayscale+alpha',
  6: 'RGBA',
}


def _cv2():
  """OpenCV, imported on first use: importing it takes a few hundred ms."""
  import cv2  # pylint: disable=g-import-not-at-top

  return cv2


@dataclasses.dataclass(frozen=True)
class PngHeader:
  """The IHDR fields of a PNG (colour_type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA)."""

  width: int
  height: int
  bit_depth: int
  colour_type: int
  interlace: int


def _png_header(data: bytes, source: str) -> PngHeader:
  """The IHDR fields (always the first chunk, at a fixed offset), read without decoding."""
  if data[:8] != _PNG_SIGNATURE:
    raise ValueError(f'{source}: not a PNG file (missing the PNG signature).')
  if len(data) < 33:
    raise ValueError(
      f'{source}: truncated PNG (the file ends inside its header).'
    )
  if data[12:16] != b'IHDR':
    raise ValueError(
      f'{source}: corrupt PNG (the first chunk is {data[12:16]!r}, not IHDR).'
    )
  width, height, depth, colour, _, _, interlace = struct.unpack(
    '>IIBBBBB', data[16:29]
  )
  return PngHeader(width, height, depth, colour, interlace)


def encode_png(image: np.ndarray) -> bytes:
  """Encodes a uint8 or uint16 [H, W] / [H, W, C] (C in 1, 3, 4) image as PNG bytes.

  uint16 images are written as 16-bit PNGs, which Pillow cannot write for
  colour images. Channels are RGB(A) order.
  """
  image = np.asarray(image)
  if image.dtype not in (np.uint8, np.uint16):
    raise ValueError(f'PNG image must be uint8 or uint16; got {image.dtype}.')
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
    raise ValueError(
      f'PNG image must have shape [H, W] or [H, W, C] with C in 1, 3 or 4; '
      f'got {image.shape}.'
    )
  cv2 = _cv2()
  if image.shape[2] > 1:  # OpenCV stores BGR(A).
    image = image[:, :, [2, 1, 0, 3][: image.shape[2]]]
  what = f'a {image.shape} {image.dtype} image'
  try:
    ok, encoded = cv2.imencode('.png', np.ascontiguousarray(image))
  except (
    cv2.error
  ) as e:  # Not expected: the checks above cover what OpenCV accepts.
    raise ValueError(
      f'OpenCV cannot encode {what} as PNG ({str(e).strip()}).'
    ) from None
  if not ok:
    raise ValueError(f'OpenCV cannot encode {what} as PNG.')
  return encoded.tobytes()


def decode_png(
  data: bytes,
  source: str = '<bytes>',
  require: Optional[Callable[[PngHeader], Optional[str]]] = None,
) -> np.ndarray:
  """Decodes a PNG exactly, 16-bit samples included.

  Args:
    data: the whole file.
    source: file name used in error messages.
    require: optional check of the header; returns an error message (raised as
      ValueError before any pixel data is decoded) or None.

  Returns:
    uint8 or uint16 [H, W, C] array, C = 1 (gray), 2 (gray+alpha), 3 (RGB)
    or 4 (RGBA). Palette and 1/2/4-bit images come out as 8-bit RGB(A) / gray.
  """
  header = _png_header(data, source)
  if require is not None:
    message = require(header)
    if message:
      raise ValueError(f'{source}: {message}')
  if _PNG_IEND not in data:
    raise ValueError(
      f'{source}: truncated PNG (the file ends before its IEND chunk).'
    )
  cv2 = _cv2()
  try:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  except cv2.error:  # E.g. a header that claims more pixels than OpenCV allows.
    pixels = None
  if pixels is None:
    raise ValueError(
      f'{source}: corrupt PNG (OpenCV cannot decode its image data).'
    )
  if pixels.ndim == 2:
    return pixels[:, :, None]
  if header.colour_type == 4:  # OpenCV expands gray+alpha to BGRA.
    return np.ascontiguousarray(pixels[:, :, [0, 3]])
  return np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]])


# --------------------------------------------------------------------------
# KITTI 16-bit flow PNG
# --------------------------------------------------------------------------


def _require_kitti_png(header: PngHeader) -> Optional[str]:
  if header.bit_depth == 16 and header.colour_type == 2:
    return None
  return (
    'not a KITTI flow PNG: KITTI stores flow as a 16-bit RGB PNG (R = u*64 + 2^15, '
    'G = v*64 + 2^15, B = valid), but this file is a '
    f'{header.bit_depth}-bit {_PNG_COLOUR_NAMES.get(header.colour_type, "?")} PNG.'
  )


def read_kitti_flow(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
  """Reads a KITTI flow PNG.

  Args:
    path: a 16-bit RGB PNG (KITTI `flow_occ` / `flow_noc`).

  Returns:
    (flow float32 [H, W, 2] with u, v = (value - 2^15) / 64,
     valid float32 [H, W] = 1 where the blue channel is non-zero).
    Flow is 0 where invalid.
  """
  data = _read_bytes(path, 'KITTI flow PNG')
  pixels = decode_png(data, source=os.fspath(path), require=_require_kitti_png)
  valid = (pixels[..., 2] > 0).astype(np.float32)
  flow = (
    pixels[..., :2].astype(np.float32) - KITTI_FLOW_OFFSET
  ) / KITTI_FLOW_SCALE
  flow *= valid[..., None]
  return flow, valid


def write_kitti_flow(
  path: PathLike, flow: np.ndarray, valid: Optional[np.ndarray] = None
) -> None:
  """Writes flow as a KITTI 16-bit PNG (atomically).

  Args:
    path: destination `.png`.
    flow: [H, W, 2] flow in pixels; valid values must lie in [-512, 511.984]
      (the range of (uint16 - 2^15) / 64). Values are rounded to 1/64 px.
    valid: optional [H, W] mask (non-zero = valid); default all valid. Invalid
      pixels are written as u = v = 0, valid = 0.
  """
  flow = _check_flow_array(flow).astype(np.float64)
  if valid is None:
    valid = np.ones(flow.shape[:2], bool)
  valid = np.asarray(valid)
  if valid.shape != flow.shape[:2]:
    raise ValueError(
      f'valid mask shape {valid.shape} does not match flow shape {flow.shape[:2]}.'
    )
  valid = valid != 0
  flow = np.where(valid[..., None], flow, 0.0)
  if not np.all(np.isfinite(flow)):
    raise ValueError(
      'KITTI flow PNG cannot store non-finite flow at valid pixels.'
    )
  encoded = np.round(flow * KITTI_FLOW_SCALE + KITTI_FLOW_OFFSET)
  if encoded.min() < 0 or encoded.max() > 65535:
    raise ValueError(
      'flow out of the KITTI PNG range [-512, 511.984] px: min '
      f'{flow.min():.3f}, max {flow.max():.3f}.'
    )
  pixels = np.concatenate([encoded, valid[..., None]], axis=-1).astype(
    np.uint16
  )
  _atomic_write_bytes(path, encode_png(pixels))


# --------------------------------------------------------------------------
# Images and masks
# --------------------------------------------------------------------------


def read_image(path: PathLike, strict: bool = False) -> np.ndarray:
  """Reads a PNG/JPEG/PPM/... image as uint8 [H, W, 3] RGB.

  Policy for other modes (when `strict=False`): grayscale (L, 1, LA) is
  replicated to 3 channels, alpha (RGBA, LA) is dropped, palette/CMYK/YCbCr are
  converted to RGB. With `strict=True` anything that is not already 8-bit RGB
  is rejected. 16/32-bit images are always rejected (their scaling to 8 bits
  is ambiguous).

  Args:
    path: image file.
    strict: reject non-RGB images instead of converting them.

  Returns:
    uint8 [H, W, 3].
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Image not found: {path}')
  im = _load_pil(path, 'image')
  mode = im.mode
  if mode == 'RGB':
    rgb = np.asarray(im)
  elif strict:
    raise ValueError(
      f'{path}: expected an 8-bit RGB image (strict=True), got mode {mode!r}. '
      'Use strict=False to replicate grayscale and drop alpha.'
    )
  elif mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
    raise ValueError(
      f'{path}: {mode!r} is a 16/32-bit single-channel image; expected an '
      '8-bit RGB or grayscale frame (is this a flow/depth map?).'
    )
  elif mode in ('L', '1', 'LA'):
    gray = np.asarray(im.convert('L'))
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
  else:  # RGBA, P, CMYK, YCbCr, ...: drop alpha / convert to RGB.
    rgb = np.asarray(im.convert('RGB'))
  return np.ascontiguousarray(rgb, dtype=np.uint8)


def _load_pil(path: str, what: str):
  """The decoded Pillow image of `path`; a file Pillow cannot decode is one
  ValueError naming it."""
  try:
    with Image.open(path) as im:
      im.load()
      return im
  except Image.UnidentifiedImageError as e:
    raise ValueError(f'{path}: not an image file Pillow can read ({e}).') from e
  except _PIL_READ_ERRORS as e:  # E.g. 'image file is truncated'.
    raise ValueError(f'{path}: cannot read the {what} ({e}).') from e


# What Pillow raises for a file whose header it recognised but whose data is truncated or corrupt
# (OSError 'image file is truncated', SyntaxError 'broken PNG file', EOFError, zlib errors), or
# whose header claims more pixels than Pillow will allocate (DecompressionBombError).
_PIL_READ_ERRORS = (
  OSError,
  SyntaxError,
  EOFError,
  zlib.error,
  Image.DecompressionBombError,
  ValueError,  # PPM/TIFF plugins: 'not enough image data', bad header fields.
)


def read_mask(path: PathLike) -> np.ndarray:
  """Reads an 8-bit mask image (e.g. Sintel occlusions/invalid) as bool [H, W] (True = non-zero)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Mask image not found: {path}')
  im = _load_pil(path, 'mask image')
  if im.mode not in ('L', '1', 'P', 'RGB', 'RGBA', 'LA'):
    raise ValueError(
      f'{path}: expected an 8-bit mask image, got mode {im.mode!r}.'
    )
  gray = np.asarray(im.convert('L'))
  return gray > 0
