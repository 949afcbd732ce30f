"""Bad input as a property: local text sources (CSV, TSV, JSONL, aclImdb).

Each example writes a valid file (a few lines of csv / json code, the
reference), damages it or not, and reads it with the project's reader. The
unchanged file must read back exactly as written; a damaged one must give
well-formed rows or one line of the project's error naming the file.
"""

import csv
import io
import json
import os

from hypothesis import strategies as st
import numpy as np
import pytest

from perceiver_io.data import text as text_lib
from perceiver_io.data.text.fields import UNLABELED
from perceiver_io.data.text.local import read_local_rows
from tests import property_helpers as ph


@pytest.fixture(autouse=True, scope='module')
def _tensorflow_loaded():
  """TensorFlow's first import and op registration (seconds) belong to
  setup, not to the first example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.constant(0)


_TEXT = st.text(
  st.characters(blacklist_categories=('Cs',)), min_size=0, max_size=12
)
# TSV is written with quoting off: no tabs or line breaks inside a text.
_TSV_TEXT = st.text(
  st.characters(
    blacklist_categories=('Cs', 'Zl', 'Zp', 'Cc'),
  ),
  max_size=12,
).filter(lambda t: t.strip() == t and t)
_ROWS = st.lists(st.tuples(_TEXT, st.integers(0, 3)), min_size=1, max_size=5)
_TSV_ROWS = st.lists(
  st.tuples(_TSV_TEXT, st.integers(0, 3)), min_size=1, max_size=5
)

# JSON values of every type, including ones no reader expects.
_JSON = st.recursive(
  st.none()
  | st.booleans()
  | st.integers(-(2**70), 2**70)
  | st.floats(allow_nan=False)
  | st.text(max_size=8),
  lambda inner: (
    st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3)
  ),
  max_leaves=6,
)
_HUGE = st.sampled_from(
  ['1' * 5000, '-' + '9' * 400, '1e999', '1e39', '2147483648', '9' * 30]
)


def _csv_bytes(rows):
  out = io.StringIO(newline='')
  # The default line end, \r\n, makes csv quote texts holding a \r.
  writer = csv.writer(out)
  writer.writerow(['text', 'label'])
  writer.writerows(rows)
  return out.getvalue().encode('utf-8')


def _tsv_bytes(rows):
  body = ''.join(f'{t}\t{label}\n' for t, label in rows)
  return ('sentence\tlabel\n' + body).encode('utf-8')


def _jsonl_bytes(rows):
  return ''.join(
    json.dumps({'text': t, 'label': label}) + '\n' for t, label in rows
  ).encode('utf-8')


@st.composite
def _wrong_json_types(draw):
  """JSONL lines whose fields hold any JSON type, huge numbers, nesting."""
  lines = []
  for _ in range(draw(st.integers(1, 4))):
    choice = draw(st.integers(0, 4))
    if choice == 0:
      lines.append(json.dumps({'text': draw(_JSON), 'label': draw(_JSON)}))
    elif choice == 1:
      lines.append('{"text": "a", "label": %s}' % draw(_HUGE))
    elif choice == 2:
      lines.append(json.dumps(draw(_JSON)))
    elif choice == 3:
      lines.append('[' * draw(st.sampled_from([10, 5000, 100000])))
    else:
      lines.append(json.dumps({'text': draw(_TEXT), 'label': draw(_JSON)}))
  return '\n'.join(lines).encode('utf-8')


@st.composite
def _huge_csv_labels(draw):
  rows = draw(_ROWS)
  lines = [['text', 'label']] + [[t, draw(_HUGE)] for t, _ in rows]
  out = io.StringIO(newline='')
  csv.writer(out).writerows(lines)
  return out.getvalue().encode('utf-8')


def _check_rows(rows, task):
  """A read that succeeded is well-formed, whatever the file held."""
  assert all(isinstance(t, bytes) for t in rows.text_a)
  assert len(rows.labels) == len(rows.text_a)
  if task == 'regression':
    assert rows.labels.dtype == np.float32
    assert np.all(np.isfinite(rows.labels))
  else:
    assert rows.labels.dtype == np.int64
    assert np.all((rows.labels >= 0) | (rows.labels == UNLABELED))
  invalid = sum(1 for t in rows.text_a if not _utf8(t))
  assert rows.num_invalid_utf8 == invalid


def _utf8(data):
  try:
    data.decode('utf-8')
    return True
  except UnicodeDecodeError:
    return False


def _read(kind, path, task='classification'):
  return read_local_rows(kind, path, 'train', task=task)


def _table_property(kind, to_bytes, rows_strategy, extra):
  @st.composite
  def case(draw):
    rows = draw(rows_strategy)
    return rows, draw(ph.mutated(to_bytes(rows), extra))

  def body(example):
    written, (mutation, data) = example
    with ph.scratch_dir() as folder:
      path = ph.write_bytes(os.path.join(folder, f'train.{kind}'), data)
      rows = ph.outcome(
        f'text {kind}', mutation, lambda: _read(kind, path), [path]
      )
    if rows is None:
      assert mutation != 'valid'
      return
    _check_rows(rows, 'classification')
    if mutation == 'valid':
      assert rows.text_a == [t.encode('utf-8') for t, _ in written]
      assert rows.labels.tolist() == [label for _, label in written]

  return ph.twin_tests(body, case())


test_csv, test_csv_many = _table_property(
  'csv', _csv_bytes, _ROWS, {'huge_labels': _huge_csv_labels()}
)
test_tsv, test_tsv_many = _table_property('tsv', _tsv_bytes, _TSV_ROWS, {})
test_jsonl, test_jsonl_many = _table_property(
  'jsonl', _jsonl_bytes, _ROWS, {'wrong_types': _wrong_json_types()}
)


@st.composite
def _regression_case(draw):
  values = draw(
    st.lists(
      st.floats(-1e30, 1e30, allow_nan=False) | _HUGE, min_size=1, max_size=4
    )
  )
  body = ''.join(
    '{"text": "x", "label": %s}\n'
    % (v if isinstance(v, str) else json.dumps(v))
    for v in values
  )
  return draw(ph.mutated(body.encode('utf-8')))


def _regression_body(example):
  mutation, data = example
  with ph.scratch_dir() as folder:
    path = ph.write_bytes(os.path.join(folder, 'train.jsonl'), data)
    rows = ph.outcome(
      'text jsonl regression',
      mutation,
      lambda: _read('jsonl', path, 'regression'),
      [path],
    )
  if rows is not None:
    _check_rows(rows, 'regression')


test_regression_labels, test_regression_labels_many = ph.twin_tests(
  _regression_body, _regression_case()
)


@st.composite
def _aclimdb_case(draw):
  reviews = draw(
    st.lists(
      st.tuples(st.sampled_from(['neg', 'pos']), st.binary(max_size=40)),
      min_size=0,
      max_size=4,
    )
  )
  names = draw(
    st.lists(
      st.sampled_from(['{i}_7.txt', '{i}.txt', 'x_{i}.txt', '{i}_7.TXT']),
      min_size=len(reviews),
      max_size=len(reviews),
    )
  )
  return reviews, names


def _aclimdb_body(example):
  reviews, names = example
  with ph.scratch_dir() as root:
    os.makedirs(os.path.join(root, 'train', 'neg'))
    for i, ((label, data), name) in enumerate(zip(reviews, names)):
      ph.write_bytes(os.path.join(root, 'train', label, name.format(i=i)), data)
    rows = ph.outcome(
      'text aclimdb',
      'folder',
      lambda: _read('aclimdb', root),
      [os.path.join(root, 'train')],
      (ValueError, FileNotFoundError),
    )
  if rows is None:
    return
  _check_rows(rows, 'classification')
  kept = sorted(
    (label == 'pos', data)
    for (label, data), name in zip(reviews, names)
    if name.endswith('.txt')
  )
  assert sorted(zip(rows.labels.astype(bool), rows.text_a)) == kept


test_aclimdb, test_aclimdb_many = ph.twin_tests(_aclimdb_body, _aclimdb_case())


def _pipeline_body(example):
  """Through tf.data: errors surface at make_text_dataset or while
  iterating; every batch has the promised shapes."""
  written, (mutation, data) = example
  with ph.scratch_dir() as folder:
    path = ph.write_bytes(os.path.join(folder, 'train.csv'), data)

    def read():
      ds, info = text_lib.make_text_dataset(
        f'csv:{path}', 'train', max_length=8, batch_size=2, repeat=False
      )
      return info, list(ds.as_numpy_iterator())

    result = ph.outcome('text csv tf.data', mutation, read, [path])
  if result is None:
    assert mutation != 'valid'
    return
  info, batches = result
  assert len(batches) == info.num_batches
  for batch in batches:
    assert batch['input_ids'].shape == (2, 8)
    assert batch['input_ids'].dtype == np.int32
  if mutation == 'valid':
    labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
    assert labels.tolist() == [label for _, label in written]


@st.composite
def _pipeline_case(draw):
  rows = draw(_ROWS)
  return rows, draw(ph.mutated(_csv_bytes(rows)))


test_csv_pipeline, test_csv_pipeline_many = ph.twin_tests(
  _pipeline_body, _pipeline_case(), fast=8, slow=60
)
