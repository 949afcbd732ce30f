"""Tests for perceiver_io.flow.formats (.flo, KITTI PNG, images) and perceiver_io.flow.layouts.

Expected values come from hand-written bytes, Pillow (an independent PNG
codec) and a scalar PNG filter written here from the PNG specification.
"""

import io as bytes_io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from perceiver_io.flow import formats
from perceiver_io.flow import layouts


# --------------------------------------------------------------------------
# .flo
# --------------------------------------------------------------------------


def test_flo_exact_byte_layout(tmp_path):
  flow = np.array(
    [
      [[1.0, -2.0], [0.5, 3.25], [-0.125, 7.0]],
      [[10.0, 20.0], [-1.5, 0.0], [4.0, -8.5]],
    ],
    np.float32,
  )  # H=2, W=3
  path = tmp_path / 'tiny.flo'
  formats.write_flo(path, flow)
  data = path.read_bytes()
  expected = b'PIEH' + struct.pack('<i', 3) + struct.pack('<i', 2)
  for value in (
    1.0,
    -2.0,
    0.5,
    3.25,
    -0.125,
    7.0,
    10.0,
    20.0,
    -1.5,
    0.0,
    4.0,
    -8.5,
  ):
    expected += struct.pack('<f', value)
  assert data == expected
  assert struct.unpack('<f', data[:4])[0] == 202021.25
  assert len(data) == 12 + 2 * 3 * 2 * 4


def test_flo_reads_hand_written_file(tmp_path):
  values = [0.25, -1.0, 2.0, 4.5]  # W=1, H=2
  data = (
    struct.pack('<f', 202021.25)
    + struct.pack('<ii', 1, 2)
    + struct.pack('<4f', *values)
  )
  path = tmp_path / 'hand.flo'
  path.write_bytes(data)
  flow = formats.read_flo(path)
  assert flow.dtype == np.float32 and flow.shape == (2, 1, 2)
  np.testing.assert_array_equal(
    flow, np.array(values, np.float32).reshape(2, 1, 2)
  )


def test_flo_round_trip(tmp_path):
  flow = np.random.default_rng(0).normal(0, 30, (7, 11, 2)).astype(np.float32)
  formats.write_flo(tmp_path / 'a.flo', flow)
  np.testing.assert_array_equal(formats.read_flo(tmp_path / 'a.flo'), flow)


def test_flo_wrong_magic(tmp_path):
  path = tmp_path / 'bad.flo'
  path.write_bytes(
    struct.pack('<f', 1.0) + struct.pack('<ii', 1, 1) + b'\0' * 8
  )
  with pytest.raises(ValueError, match='magic number'):
    formats.read_flo(path)
  # A big-endian file is recognised as such in the message.
  path.write_bytes(
    struct.pack('>f', 202021.25) + struct.pack('>ii', 1, 1) + b'\0' * 8
  )
  with pytest.raises(ValueError, match='big-endian'):
    formats.read_flo(path)


def test_flo_truncated(tmp_path):
  path = tmp_path / 'short.flo'
  full = formats.encode_flo(np.ones((4, 5, 2), np.float32))
  path.write_bytes(full[:-4])
  with pytest.raises(
    ValueError, match=r'truncated .flo file.*5x4.*172 bytes.*168'
  ):
    formats.read_flo(path)
  path.write_bytes(full[:6])
  with pytest.raises(ValueError, match='truncated'):
    formats.read_flo(path)


def test_flo_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.flo'):
    formats.read_flo(tmp_path / 'nope.flo')


def test_write_is_atomic_and_keeps_good_file(tmp_path):
  good = np.zeros((2, 2, 2), np.float32)
  path = tmp_path / 'keep.flo'
  formats.write_flo(path, good)
  before = path.read_bytes()
  with pytest.raises(ValueError, match=r'\[H, W, 2\]'):
    formats.write_flo(path, np.zeros((2, 2, 3), np.float32))

  def fails_midway(tmp):
    with open(tmp, 'wb') as f:
      f.write(b'half')
    raise RuntimeError('disk full')

  with pytest.raises(RuntimeError):
    formats.atomic_write(path, fails_midway)
  assert path.read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ['keep.flo']  # no temp files left


def test_known_flow_mask():
  flow = np.array(
    [[[1.0, 2.0], [1e10, 0.0], [np.nan, 0.0], [0.0, -2e9]]], np.float32
  )
  np.testing.assert_array_equal(formats.known_flow_mask(flow), [[1, 0, 0, 0]])


# --------------------------------------------------------------------------
# PNG codec and KITTI flow PNGs
# --------------------------------------------------------------------------


def _scalar_png(image16: np.ndarray, filter_types) -> bytes:
  """A 16-bit RGB PNG encoder written byte by byte from the PNG spec."""
  height, width, _ = image16.shape
  bpp = 6
  rows = [image16[r].astype('>u2').tobytes() for r in range(height)]
  out = bytearray()
  for r, ftype in enumerate(filter_types):
    row, prior = rows[r], rows[r - 1] if r > 0 else bytes(len(rows[r]))
    out.append(ftype)
    for i in range(len(row)):
      a = row[i - bpp] if i >= bpp else 0
      b = prior[i]
      c = prior[i - bpp] if i >= bpp else 0
      if ftype == 0:
        pred = 0
      elif ftype == 1:
        pred = a
      elif ftype == 2:
        pred = b
      elif ftype == 3:
        pred = (a + b) // 2
      else:
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
      out.append((row[i] - pred) % 256)

  def chunk(kind, body):
    return (
      struct.pack('>I', len(body))
      + kind
      + body
      + struct.pack('>I', zlib.crc32(kind + body))
    )

  ihdr = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0)
  return (
    b'\x89PNG\r\n\x1a\n'
    + chunk(b'IHDR', ihdr)
    + chunk(b'IDAT', zlib.compress(bytes(out)))
    + chunk(b'IEND', b'')
  )


@pytest.mark.parametrize(
  'filters', [[0, 1, 2, 3, 4, 4, 3, 2, 1], [1, 2, 0, 1, 2, 2, 1, 0, 1], [4] * 9]
)
def test_png_decoder_matches_spec_filters(filters):
  image = (
    np.random.default_rng(len(filters) + sum(filters))
    .integers(0, 65536, (9, 7, 3))
    .astype(np.uint16)
  )
  image[3:6] = (
    40000 + np.arange(7)[None, :, None] * 3
  )  # smooth rows exercise small deltas
  decoded = formats.decode_png(_scalar_png(image, filters))
  assert decoded.dtype == np.uint16
  np.testing.assert_array_equal(decoded, image)


def test_png_decoder_reads_pillow_png():
  # Pillow's encoder picks Sub/Paeth filters itself: an independent encoder.
  rng = np.random.default_rng(1)
  image = (np.cumsum(rng.integers(0, 20, (40, 50, 3)), axis=1) % 256).astype(
    np.uint8
  )
  buffer = bytes_io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  np.testing.assert_array_equal(formats.decode_png(buffer.getvalue()), image)


def test_png_encoder_readable_by_pillow():
  image16 = (
    np.random.default_rng(2).integers(0, 65536, (13, 17, 3)).astype(np.uint16)
  )
  with Image.open(bytes_io.BytesIO(formats.encode_png(image16))) as im:
    # Pillow decodes 16-bit RGB to 8 bits by keeping the high byte.
    np.testing.assert_array_equal(
      np.asarray(im), (image16 >> 8).astype(np.uint8)
    )
  gray16 = image16[..., 0]
  with Image.open(bytes_io.BytesIO(formats.encode_png(gray16))) as im:
    np.testing.assert_array_equal(np.asarray(im), gray16)


def test_kitti_round_trip_and_encoding(tmp_path):
  rng = np.random.default_rng(3)
  flow = (rng.integers(-64 * 300, 64 * 300, (6, 9, 2)) / 64.0).astype(
    np.float32
  )
  valid = (rng.uniform(size=(6, 9)) > 0.3).astype(np.float32)
  path = tmp_path / '000000_10.png'
  formats.write_kitti_flow(path, flow, valid)
  read_flow, read_valid = formats.read_kitti_flow(path)
  np.testing.assert_array_equal(read_valid, valid)
  np.testing.assert_array_equal(read_flow, flow * valid[..., None])
  # The stored channels are u*64 + 2^15, v*64 + 2^15, valid (checked via Pillow's high byte).
  expected = np.stack(
    [flow[..., 0] * 64 + 32768, flow[..., 1] * 64 + 32768, valid], -1
  )
  expected = np.where(valid[..., None] > 0, expected, [32768, 32768, 0]).astype(
    np.uint16
  )
  with Image.open(path) as im:
    np.testing.assert_array_equal(
      np.asarray(im), (expected >> 8).astype(np.uint8)
    )
  np.testing.assert_array_equal(formats.decode_png(path.read_bytes()), expected)


def test_kitti_hand_built_values(tmp_path):
  # u = (R - 2^15)/64, v = (G - 2^15)/64.
  pixels = np.array(
    [[[32768 + 64, 32768 - 128, 1], [32768, 32768, 0]]], np.uint16
  )
  path = tmp_path / 'k.png'
  path.write_bytes(formats.encode_png(pixels))
  flow, valid = formats.read_kitti_flow(path)
  np.testing.assert_array_equal(flow, [[[1.0, -2.0], [0.0, 0.0]]])
  np.testing.assert_array_equal(valid, [[1.0, 0.0]])


def test_kitti_reader_rejects_8bit_png(tmp_path):
  path = tmp_path / 'eight.png'
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
  with pytest.raises(ValueError, match=r'16-bit RGB PNG.*8-bit RGB'):
    formats.read_kitti_flow(path)
  path.write_bytes(b'not a png at all')
  with pytest.raises(ValueError, match='not a PNG'):
    formats.read_kitti_flow(path)


def test_kitti_writer_rejects_out_of_range(tmp_path):
  with pytest.raises(ValueError, match='KITTI PNG range'):
    formats.write_kitti_flow(
      tmp_path / 'x.png', np.full((2, 2, 2), 600.0, np.float32)
    )
  assert not os.listdir(tmp_path)


def test_truncated_png(tmp_path):
  data = formats.encode_png(np.zeros((5, 5, 3), np.uint16))
  with pytest.raises(ValueError, match='truncated PNG'):
    formats.decode_png(data[:-20])


def test_truncated_or_corrupt_kitti_png_is_one_error_naming_the_file(tmp_path):
  path = tmp_path / '000001_10.png'
  flow = np.random.default_rng(5).normal(0, 20, (16, 24, 2)).astype(np.float32)
  formats.write_kitti_flow(path, flow)
  data = path.read_bytes()
  pixels = data.index(b'IDAT') + 4 + 10  # A byte of compressed pixel data.
  path.write_bytes(
    data[:pixels] + bytes([data[pixels] ^ 0xFF]) + data[pixels + 1 :]
  )
  with pytest.raises(ValueError, match=r'000001_10\.png: corrupt PNG'):
    formats.read_kitti_flow(path)
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=r'000001_10\.png: truncated PNG'):
    formats.read_kitti_flow(path)


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def test_read_image_modes(tmp_path):
  rgb = np.random.default_rng(4).integers(0, 256, (5, 6, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'rgb.ppm')
  np.testing.assert_array_equal(formats.read_image(tmp_path / 'rgb.ppm'), rgb)
  gray = rgb[..., 0]
  Image.fromarray(gray).save(tmp_path / 'gray.png')
  out = formats.read_image(tmp_path / 'gray.png')
  assert out.shape == (5, 6, 3) and out.dtype == np.uint8
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], gray)
  rgba = np.concatenate([rgb, np.full((5, 6, 1), 7, np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / 'rgba.png')
  np.testing.assert_array_equal(formats.read_image(tmp_path / 'rgba.png'), rgb)
  with pytest.raises(ValueError, match='strict'):
    formats.read_image(tmp_path / 'rgba.png', strict=True)
  with pytest.raises(ValueError, match='strict'):
    formats.read_image(tmp_path / 'gray.png', strict=True)
  with pytest.raises(FileNotFoundError, match='missing.png'):
    formats.read_image(tmp_path / 'missing.png')
  (tmp_path / 'junk.png').write_bytes(b'garbage')
  with pytest.raises(ValueError, match='not an image'):
    formats.read_image(tmp_path / 'junk.png')


# --------------------------------------------------------------------------
# Dataset layouts (tiny generated fixtures)
# --------------------------------------------------------------------------

H, W = 6, 8


def _frame(seed, size=(H, W)):
  return (
    np.random.default_rng(seed).integers(0, 256, size + (3,)).astype(np.uint8)
  )


def _flow(seed, size=(H, W)):
  return (
    np.random.default_rng(seed).normal(0, 3, size + (2,)).astype(np.float32)
  )


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _write_flo(path, flow):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  formats.write_flo(path, flow)


def _make_sintel(root):
  truth = {}
  for s, scene in enumerate(['alley_1', 'cave_2']):
    for i in (1, 2, 3):
      for p, pass_name in enumerate(['clean', 'final']):
        _save(
          root / 'training' / pass_name / scene / f'frame_{i:04d}.png',
          _frame(100 * s + 10 * p + i),
        )
    for i in (1, 2):
      flow = _flow(100 * s + i)
      _write_flo(
        root / 'training' / 'flow' / scene / f'frame_{i:04d}.flo', flow
      )
      invalid = np.zeros((H, W), np.uint8)
      invalid[0, i] = 255
      occluded = np.zeros((H, W), np.uint8)
      occluded[2, :3] = 255
      _save(
        root / 'training' / 'invalid' / scene / f'frame_{i:04d}.png', invalid
      )
      _save(
        root / 'training' / 'occlusions' / scene / f'frame_{i:04d}.png',
        occluded,
      )
      truth[(scene, i)] = flow
  return truth


def test_sintel_layout(tmp_path):
  truth = _make_sintel(tmp_path)
  samples = list(layouts.sintel_samples(tmp_path))
  assert [s['name'] for s in samples] == [
    'clean/alley_1/frame_0001',
    'clean/alley_1/frame_0002',
    'clean/cave_2/frame_0001',
    'clean/cave_2/frame_0002',
    'final/alley_1/frame_0001',
    'final/alley_1/frame_0002',
    'final/cave_2/frame_0001',
    'final/cave_2/frame_0002',
  ]
  s = samples[5]  # final/alley_1/frame_0002 -> frames 2 and 3 of the final pass
  np.testing.assert_array_equal(s['frame1'], _frame(10 + 2))
  np.testing.assert_array_equal(s['frame2'], _frame(10 + 3))
  np.testing.assert_array_equal(s['flow'], truth[('alley_1', 2)])
  assert s['flow'].dtype == np.float32 and s['valid'].dtype == np.float32
  expected_valid = np.ones((H, W), np.float32)
  expected_valid[0, 2] = 0  # the invalid mask
  np.testing.assert_array_equal(s['valid'], expected_valid)
  noc = layouts.list_sintel(tmp_path, passes='clean', exclude_occlusions=True)
  assert len(noc) == 4
  s = layouts.load_pair(noc[0])
  expected_valid = np.ones((H, W), np.float32)
  expected_valid[0, 1] = 0
  expected_valid[2, :3] = 0
  np.testing.assert_array_equal(s['valid'], expected_valid)


def test_sintel_missing_next_frame(tmp_path):
  _make_sintel(tmp_path)
  os.remove(tmp_path / 'training' / 'final' / 'cave_2' / 'frame_0003.png')
  with pytest.raises(
    FileNotFoundError, match=r'next frame.*cave_2.*frame_0003.png'
  ):
    layouts.list_sintel(tmp_path)
  with pytest.raises(FileNotFoundError, match='Expected layout'):
    layouts.list_sintel(tmp_path / 'nowhere')


def test_frames_of_different_sizes(tmp_path):
  _make_sintel(tmp_path)
  _save(
    tmp_path / 'training' / 'clean' / 'alley_1' / 'frame_0002.png',
    _frame(0, (H, W + 1)),
  )
  files = layouts.list_sintel(tmp_path, passes='clean')
  with pytest.raises(ValueError, match='different sizes'):
    layouts.load_pair(files[0])


def _make_kitti(root, image_dir, colour=True):
  truth = {}
  for sample_id in (0, 7):
    for t in (10, 11):
      frame = _frame(sample_id * 10 + t)
      _save(
        root / 'training' / image_dir / f'{sample_id:06d}_{t}.png',
        frame if colour else frame[..., 0],
      )
    flow = (np.round(_flow(sample_id) * 64) / 64).astype(np.float32)
    valid = np.ones((H, W), np.float32)
    valid[sample_id % H] = 0
    for gt in ('occ', 'noc'):
      os.makedirs(root / 'training' / f'flow_{gt}', exist_ok=True)
      formats.write_kitti_flow(
        root / 'training' / f'flow_{gt}' / f'{sample_id:06d}_10.png',
        flow,
        valid,
      )
    truth[sample_id] = (flow, valid)
  return truth


def test_kitti_2015_layout(tmp_path):
  truth = _make_kitti(tmp_path, 'image_2')
  samples = list(layouts.kitti_samples(tmp_path))
  assert [s['name'] for s in samples] == ['000000_10', '000007_10']
  flow, valid = truth[7]
  np.testing.assert_array_equal(samples[1]['frame1'], _frame(80))
  np.testing.assert_array_equal(samples[1]['frame2'], _frame(81))
  np.testing.assert_array_equal(samples[1]['flow'], flow * valid[..., None])
  np.testing.assert_array_equal(samples[1]['valid'], valid)


def test_kitti_2012_grayscale_layout(tmp_path):
  _make_kitti(tmp_path, 'image_0', colour=False)
  samples = list(layouts.kitti_samples(tmp_path / 'training', gt='noc'))
  assert len(samples) == 2
  gray = _frame(10)[..., 0]
  np.testing.assert_array_equal(samples[0]['frame1'], np.stack([gray] * 3, -1))
  with pytest.raises(ValueError, match='occ'):
    layouts.list_kitti(tmp_path, gt='all')


def test_kitti_2012_colour_layout(tmp_path):
  _make_kitti(tmp_path, 'colored_0')
  files = layouts.list_kitti(tmp_path)
  assert files[0].frame1.endswith(os.path.join('colored_0', '000000_10.png'))


def test_flying_chairs_layout(tmp_path):
  data = tmp_path / 'data'
  truth = {}
  for i in (1, 2, 3):
    _save(data / f'{i:05d}_img1.ppm', _frame(i))
    _save(data / f'{i:05d}_img2.ppm', _frame(i + 50))
    truth[i] = _flow(i)
    formats.write_flo(data / f'{i:05d}_flow.flo', truth[i])
  (tmp_path / 'FlyingChairs_train_val.txt').write_text('1\n2\n1\n')
  samples = list(layouts.flying_chairs_samples(tmp_path))
  assert [s['name'] for s in samples] == ['00001', '00002', '00003']
  np.testing.assert_array_equal(samples[2]['frame2'], _frame(53))
  np.testing.assert_array_equal(samples[2]['flow'], truth[3])
  assert samples[2]['valid'].all()
  train = layouts.list_flying_chairs(tmp_path, split='train')
  assert [f.name for f in train] == ['00001', '00003']
  assert [f.name for f in layouts.list_flying_chairs(data, split='val')] == [
    '00002'
  ]
  (tmp_path / 'FlyingChairs_train_val.txt').write_text('1\n2\n')
  with pytest.raises(ValueError, match='expected 3 lines'):
    layouts.list_flying_chairs(tmp_path, split='train')
  os.remove(data / '00002_img2.ppm')
  with pytest.raises(FileNotFoundError, match='00002_img2.ppm'):
    layouts.list_flying_chairs(tmp_path)


def test_middlebury_layouts(tmp_path):
  flow = _flow(9)
  flow[1, 2] = [1e10, 1e10]  # Middlebury "unknown"
  for scene in ('RubberWhale', 'Venus'):
    _save(tmp_path / 'other-data' / scene / 'frame10.png', _frame(1))
    _save(tmp_path / 'other-data' / scene / 'frame11.png', _frame(2))
    _write_flo(tmp_path / 'other-gt-flow' / scene / 'flow10.flo', flow)
  samples = list(layouts.middlebury_samples(tmp_path))
  assert [s['name'] for s in samples] == ['RubberWhale', 'Venus']
  expected_valid = np.ones((H, W), np.float32)
  expected_valid[1, 2] = 0
  np.testing.assert_array_equal(samples[0]['valid'], expected_valid)
  expected_flow = flow.copy()
  expected_flow[1, 2] = 0
  np.testing.assert_array_equal(samples[0]['flow'], expected_flow)
  np.testing.assert_array_equal(samples[0]['frame2'], _frame(2))
  flat = tmp_path / 'Grove2'
  _save(flat / 'frame10.png', _frame(3))
  _save(flat / 'frame11.png', _frame(4))
  _write_flo(flat / 'flow10.flo', _flow(3))
  (sample,) = list(layouts.middlebury_samples(flat))
  assert sample['name'] == 'Grove2'
  np.testing.assert_array_equal(sample['flow'], _flow(3))


def test_flow_and_frame_size_mismatch(tmp_path):
  flat = tmp_path / 'scene'
  _save(flat / 'frame10.png', _frame(3))
  _save(flat / 'frame11.png', _frame(4))
  _write_flo(flat / 'flow10.flo', _flow(3, (H + 1, W)))
  with pytest.raises(ValueError, match='flow .* is 8x7 but the frames are 8x6'):
    list(layouts.middlebury_samples(flat))
