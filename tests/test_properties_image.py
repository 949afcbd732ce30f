"""Bad input as a property: image folders, labels.csv, class lists, and
image files through both decoders (tf.data and PIL).

A folder of valid PNG/JPEG files (written with Pillow) is damaged or not;
errors from the tf.data pipeline surface while iterating and must still be
one line of the project's error naming the file.
"""

import csv
import io
import os

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest
from PIL import Image

from perceiver_io.data import image as image_lib
from tests import property_helpers as ph


@pytest.fixture(autouse=True, scope='module')
def _tensorflow_loaded():
  """TensorFlow's first import and op registration (seconds) belong to
  setup, not to the first example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.constant(0)


_PIXELS = hnp.arrays(
  np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3))
)


def _encode(pixels, fmt):
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, fmt)
  return out.getvalue()


def _batches(root, batch_size=2):
  iterator, info = image_lib.make_image_dataset(
    root, 'train', batch_size=batch_size, train=False, image_size=8
  )
  return info, list(iterator)


def _real_labels(batches):
  return np.concatenate([b['label'][b['mask'] > 0] for b in batches]).tolist()


def _check_batches(info, batches):
  assert len(batches) == info['num_batches']
  for batch in batches:
    assert batch['image'].shape == (2, 8, 8, 3)
    assert batch['image'].dtype == np.float32
    assert np.all(np.isfinite(batch['image']))


@st.composite
def _image_file_case(draw):
  """Class folders a/ and b/; one file of them damaged (or not)."""
  fmt = draw(st.sampled_from(['PNG', 'JPEG']))
  images = draw(st.lists(_PIXELS, min_size=2, max_size=4))
  target = draw(st.integers(0, len(images) - 1))
  extra = {'huge_header': ph.png_claiming(8, 2)}
  mutation = draw(ph.mutated(_encode(images[target], fmt), extra))
  return fmt, images, target, mutation


def _image_file_body(example):
  fmt, images, target, (mutation, data) = example
  ext = '.png' if fmt == 'PNG' else '.jpg'
  with ph.scratch_dir() as root:
    paths = []
    for i, pixels in enumerate(images):
      path = os.path.join(root, 'ab'[i % 2], f'{i}{ext}')
      ph.write_bytes(path, data if i == target else _encode(pixels, fmt))
      paths.append(path)
    result = ph.outcome(
      'image folder tf.data',
      mutation,
      lambda: _batches(root),
      [paths[target]],
    )
    pil = ph.outcome(
      'image file PIL',
      mutation,
      lambda: image_lib.load_image_numpy(paths[target]),
      [paths[target]],
    )
  if result is None:
    assert mutation != 'valid'
  else:
    info, batches = result
    _check_batches(info, batches)
    want = sorted(i % 2 for i in range(len(images)))
    assert sorted(_real_labels(batches)) == want
  if pil is None:
    assert mutation != 'valid'
  else:
    assert pil.dtype == np.uint8 and pil.ndim == 3 and pil.shape[2] == 3
    if mutation == 'valid' and fmt == 'PNG':
      np.testing.assert_array_equal(pil, images[target])


test_image_files, test_image_files_many = ph.twin_tests(
  _image_file_body, _image_file_case(), fast=5, slow=100
)


_HUGE_LABELS = st.sampled_from(['2147483648', '9' * 5000, '-1', '1e3', ''])


@st.composite
def _labels_csv_case(draw):
  n = draw(st.integers(1, 4))
  labels = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
  out = io.StringIO(newline='')
  writer = csv.writer(out)
  writer.writerow(['filename', 'label'])
  writer.writerows([f'{i}.png', label] for i, label in enumerate(labels))
  valid = out.getvalue().encode('utf-8')
  huge = out.getvalue().replace(
    f'0.png,{labels[0]}', f'0.png,{draw(_HUGE_LABELS)}'
  )
  extra = {
    'huge_label': st.just(huge.encode('utf-8')),
    'short_row': st.just(valid + b'9.png\r\n'),
  }
  return labels, draw(ph.mutated(valid, extra))


def _labels_csv_body(example):
  labels, (mutation, data) = example
  with ph.scratch_dir() as root:
    for i in range(len(labels)):
      ph.write_bytes(
        os.path.join(root, f'{i}.png'),
        _encode(np.full((3, 3, 3), 40 * i, np.uint8), 'PNG'),
      )
    csv_path = ph.write_bytes(os.path.join(root, 'labels.csv'), data)
    result = ph.outcome(
      'image labels.csv', mutation, lambda: _batches(root), [csv_path]
    )
  if result is None:
    assert mutation != 'valid'
    return
  info, batches = result
  _check_batches(info, batches)
  assert all(
    0 <= label < info['num_classes'] for label in _real_labels(batches)
  )
  if mutation == 'valid':
    assert _real_labels(batches) == labels


test_labels_csv, test_labels_csv_many = ph.twin_tests(
  _labels_csv_body, _labels_csv_case(), fast=10, slow=100
)


@st.composite
def _class_list_case(draw):
  names = draw(
    st.lists(
      st.text(
        st.characters(whitelist_categories=('Ll', 'Lu', 'Nd')),
        min_size=1,
        max_size=6,
      ),
      min_size=1,
      max_size=4,
      unique=True,
    )
  )
  ext = draw(st.sampled_from(['.csv', '.txt']))
  if ext == '.csv':
    body = 'class_index,wnid\n' + ''.join(
      f'{i},{n}\n' for i, n in enumerate(names)
    )
    extra = {
      'huge_index': st.just(
        ('class_index,wnid\n' + '9' * 5000 + ',x\n').encode()
      ),
    }
  else:
    body = ''.join(f'{n}\n' for n in names)
    extra = {}
  return names, ext, draw(ph.mutated(body.encode('utf-8'), extra))


def _class_list_body(example):
  names, ext, (mutation, data) = example
  with ph.scratch_dir() as folder:
    path = ph.write_bytes(os.path.join(folder, 'classes' + ext), data)
    got = ph.outcome(
      'image class list',
      mutation,
      lambda: image_lib.load_class_names(path),
      [path],
    )
  if got is None:
    assert mutation != 'valid'
    return
  assert got and all(isinstance(n, str) and n for n in got)
  assert len(set(got)) == len(got)
  if mutation == 'valid':
    assert got == names


test_class_list, test_class_list_many = ph.twin_tests(
  _class_list_body, _class_list_case()
)
