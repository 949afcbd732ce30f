"""Bad input as a property: optical-flow files (.flo, KITTI 16-bit PNG,
frames and masks, the FlyingChairs split file).

Valid files come from the project's writers (`write_flo`,
`write_kitti_flow`) or Pillow; damaged ones must read as arrays of the
right shape and dtype or raise one line naming the file.
"""

import io
import os
import struct

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
from PIL import Image

from perceiver_io.flow import formats
from perceiver_io.flow import layouts
from tests import property_helpers as ph

_SHAPE = st.tuples(st.integers(1, 5), st.integers(1, 5))


@st.composite
def _flo_claiming(draw):
  """A .flo header claiming any width and height (e.g. 2^31 x 2^31)."""
  side = st.sampled_from([-1, 0, 1, 2, 65536, 65537, 2**31 - 1, -(2**31)])
  header = formats.FLO_MAGIC_BYTES + struct.pack('<ii', draw(side), draw(side))
  return header + draw(st.binary(max_size=64))


@st.composite
def _flo_case(draw):
  flow = draw(
    hnp.arrays(np.float32, draw(_SHAPE) + (2,), elements=st.floats(width=32))
  )
  return flow, draw(
    ph.mutated(formats.encode_flo(flow), {'huge_header': _flo_claiming()})
  )


def _flo_body(example):
  written, (mutation, data) = example
  with ph.scratch_dir() as folder:
    path = os.path.join(folder, 'frame.flo')
    if mutation == 'valid':
      formats.write_flo(path, written)  # The project's writer.
    else:
      ph.write_bytes(path, data)
    flow = ph.outcome(
      'flow .flo', mutation, lambda: formats.read_flo(path), [path]
    )
  if flow is None:
    assert mutation != 'valid'
    return
  assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2
  assert 12 + flow.size * 4 == len(data)
  if mutation == 'valid':
    assert flow.tobytes() == written.tobytes()


test_flo, test_flo_many = ph.twin_tests(_flo_body, _flo_case())


@st.composite
def _kitti_case(draw):
  shape = draw(_SHAPE)
  steps = draw(
    hnp.arrays(np.int32, shape + (2,), elements=st.integers(-32768, 32767))
  )
  flow = steps.astype(np.float32) / formats.KITTI_FLOW_SCALE
  valid = draw(hnp.arrays(np.bool_, shape))
  with ph.scratch_dir() as folder:
    path = os.path.join(folder, 'flow.png')
    formats.write_kitti_flow(path, flow, valid)
    with open(path, 'rb') as f:
      png = f.read()
  extra = {
    'huge_header': ph.png_claiming(),
    'other_png': st.sampled_from(
      [
        formats.encode_png(np.zeros((2, 3, 3), np.uint8)),
        formats.encode_png(np.zeros((2, 3), np.uint16)),
        formats.encode_png(np.zeros((2, 3, 4), np.uint16)),
      ]
    ),
  }
  return (flow, valid), draw(ph.mutated(png, extra))


def _kitti_body(example):
  (flow, valid), (mutation, data) = example
  with ph.scratch_dir() as folder:
    path = ph.write_bytes(os.path.join(folder, 'flow.png'), data)
    result = ph.outcome(
      'flow KITTI png',
      mutation,
      lambda: formats.read_kitti_flow(path),
      [path],
    )
  if result is None:
    assert mutation != 'valid'
    return
  got_flow, got_valid = result
  assert got_flow.dtype == np.float32 and got_valid.dtype == np.float32
  assert got_flow.shape == got_valid.shape + (2,)
  assert np.all(np.abs(got_flow) <= 512) and set(np.unique(got_valid)) <= {0, 1}
  if mutation == 'valid':
    np.testing.assert_array_equal(got_valid, valid.astype(np.float32))
    np.testing.assert_array_equal(got_flow, np.where(valid[..., None], flow, 0))


test_kitti_png, test_kitti_png_many = ph.twin_tests(_kitti_body, _kitti_case())


def _image_bytes(pixels, mode, fmt):
  out = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(out, fmt)
  return out.getvalue()


@st.composite
def _frame_case(draw):
  pixels = draw(hnp.arrays(np.uint8, draw(_SHAPE) + (3,)))
  mode = draw(st.sampled_from(['RGB', 'L', 'RGBA', 'P', 'I;16', 'I', 'F']))
  fmt = draw(st.sampled_from(['PNG', 'PPM', 'TIFF']))
  if fmt == 'PPM' and mode not in ('RGB', 'L'):
    fmt = 'PNG'
  if mode in ('I', 'F'):  # Pillow writes these as TIFF only.
    fmt = 'TIFF'
  data = _image_bytes(pixels, mode, fmt)
  return (pixels, mode), draw(
    ph.mutated(data, {'huge_header': ph.png_claiming(8, 2)})
  )


def _frame_body(example):
  (pixels, mode), (mutation, data) = example
  with ph.scratch_dir() as folder:
    path = ph.write_bytes(os.path.join(folder, 'frame'), data)
    image = ph.outcome(
      'flow frame image',
      mutation,
      lambda: formats.read_image(path),
      [path],
    )
    mask = ph.outcome(
      'flow mask image', mutation, lambda: formats.read_mask(path), [path]
    )
  if image is not None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if mutation == 'valid' and mode == 'RGB':
      np.testing.assert_array_equal(image, pixels)
  if mask is not None:
    assert mask.dtype == np.bool_ and mask.ndim == 2
  if mutation == 'valid' and mode in ('RGB', 'L', 'RGBA', 'P'):
    assert image is not None and mask is not None


test_frames_and_masks, test_frames_and_masks_many = ph.twin_tests(
  _frame_body, _frame_case()
)


@st.composite
def _split_file_case(draw):
  labels = draw(st.lists(st.sampled_from('12'), min_size=2, max_size=2))
  valid = ''.join(f'{x}\n' for x in labels).encode()
  return labels, draw(ph.mutated(valid))


def _split_file_body(example):
  labels, (mutation, data) = example
  with ph.scratch_dir() as root:
    for i in (1, 2):
      for name in (f'{i:05d}_img1.ppm', f'{i:05d}_img2.ppm'):
        ph.write_bytes(os.path.join(root, 'data', name), b'')
      ph.write_bytes(os.path.join(root, 'data', f'{i:05d}_flow.flo'), b'')
    split_file = ph.write_bytes(
      os.path.join(root, 'FlyingChairs_train_val.txt'), data
    )
    pairs = ph.outcome(
      'flow FlyingChairs split file',
      mutation,
      lambda: layouts.list_flying_chairs(root, split='train'),
      [split_file],
    )
  if pairs is None:
    assert mutation != 'valid'
    return
  assert len(pairs) <= 2
  if mutation == 'valid':
    assert [p.name for p in pairs] == [
      f'{i + 1:05d}' for i, x in enumerate(labels) if x == '1'
    ]


test_flying_chairs_split_file, test_flying_chairs_split_file_many = (
  ph.twin_tests(_split_file_body, _split_file_case())
)
