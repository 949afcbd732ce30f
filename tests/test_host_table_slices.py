"""Sliced and joined splits of TSV / JSONL tables on several processes
(`line_tables.process_rows`, by row position).

The reference is the whole-file reader (`local.read_local_rows`): the
processes' rows in process order must be exactly its rows of the split,
cut into equal shares; each process reads its own byte block (to count it)
and the blocks that hold its share, observed at `open`; training on 1, 2
and 4 processes gives the same batches.
"""

import json

import numpy as np
import pytest

from perceiver_io.data import shards as shards_lib
from perceiver_io.data.text import line_tables
from perceiver_io.data.text import mlm_shards
from perceiver_io.data.text.local import read_local_rows
from tests.test_host_line_tables import _config
from tests.test_host_line_tables import _FILES
from tests.test_host_line_tables import _OwnReads
from tests.text_data_helpers import assert_same_training_batches
from tests.text_data_helpers import eval_rows
from tests.text_data_helpers import HEADER_READ
from tests.text_data_helpers import write

_SPLITS = (
  'train[:90%]',
  'train[25%:]',
  'train[-7:]',
  'train[3:12]+train[-5:]',
  'train[:40%]+train[60%:]+train[:2]',
  'train[12:3]+train[4:9]',  # An empty part.
)


def _process_rows(kind, path, split, count, read):
  return [
    line_tables.process_rows(kind, path, split, p, count, **read)
    for p in range(count)
  ]


def _assert_equal_shares(parts, whole, count):
  """Rows in process order = the whole split's; equal shares; positions."""
  total = len(whole.text_a)
  sizes = np.diff(shards_lib.bounds(total, count)).tolist()
  for p, (rows, _, _, got_sizes, offset, _) in enumerate(parts):
    assert got_sizes == sizes
    assert offset == sum(sizes[:p])
    assert len(rows.text_a) == len(rows.labels) == sizes[p]
  assert [t for r, *_ in parts for t in r.text_a] == whole.text_a
  np.testing.assert_array_equal(
    np.concatenate([r.labels for r, *_ in parts]), whole.labels
  )
  assert sum(r.num_invalid_utf8 for r, *_ in parts) == whole.num_invalid_utf8
  tops = {top for *_, top in parts}
  want = int(whole.labels.max()) + 1 if total else 0
  assert tops == {want}


@pytest.mark.parametrize('split', _SPLITS)
@pytest.mark.parametrize('name', sorted(_FILES))
def test_slices_and_joins_equal_the_whole_file_split(name, split, tmp_path):
  text, fields = _FILES[name]
  kind = name.split('_')[0]
  path = write(str(tmp_path / f'data.{kind}'), text)
  whole = read_local_rows(kind, path, split, **fields)
  read = dict(task='classification', class_map=None, **fields)
  for count in (2, 3, 4):
    parts = _process_rows(kind, path, split, count, read)
    _assert_equal_shares(parts, whole, count)
    for _, got_fields, label, *_ in parts:
      assert (got_fields, label) == (parts[0][1], parts[0][2])


def test_parts_from_several_files(tmp_path):
  for name, n in (('a', 13), ('b', 21)):
    write(
      str(tmp_path / f'{name}.jsonl'),
      ''.join(
        json.dumps({'text': f'{name}{k} ' + 'z' * (k % 4), 'label': k % 2})
        + '\n'
        for k in range(n)
      ),
    )
  path = str(tmp_path / '{split}.jsonl')
  split = 'a[2:]+b[:60%]+a[:3]'
  whole = read_local_rows('jsonl', path, split)
  assert len(whole.text_a) == 11 + 13 + 3
  for count in (2, 4):
    _assert_equal_shares(
      _process_rows('jsonl', path, split, count, HEADER_READ), whole, count
    )


_ROW = 11  # 'row 0001\t1\n'
_HEAD = 'sentence\tlabel\n'


@pytest.mark.parametrize('split', ['train[30%:80%]', 'train[:10]+train[-90%:]'])
def test_each_process_reads_its_block_and_its_rows_blocks(split, tmp_path):
  # Fixed-width rows: row r starts at byte len(_HEAD) + 11 r, so the
  # blocks a process may read are known from its rows alone: its own
  # (counted) and those holding the starts of its share's rows.
  n, count = 400, 4
  path = write(
    str(tmp_path / 'train.tsv'),
    _HEAD + ''.join(f'row {r:04d}\t{r % 3}\n' for r in range(n)),
  )
  size = len(_HEAD) + _ROW * n
  whole = read_local_rows('tsv', path, split)
  split_rows = [int(t.split()[1]) for t in whole.text_a]
  edges = shards_lib.bounds(len(split_rows), count)

  def block_of(byte):
    return byte * count // size

  for p in range(count):
    with _OwnReads(tmp_path) as opened:
      rows, *_ = line_tables.process_rows(
        'tsv', path, split, p, count, **HEADER_READ
      )
    mine = split_rows[edges[p] : edges[p + 1]]
    assert [int(t.split()[1]) for t in rows.text_a] == mine
    allowed = {p} | {block_of(len(_HEAD) + _ROW * r) for r in mine}
    assert len(allowed) < count  # Not the whole file.
    for _, lo, hi in opened.spans:
      if hi <= len(_HEAD) + 1:
        continue  # The header line, read by every block.
      assert any(
        lo >= b * size // count - 1 and hi <= (b + 1) * size // count + _ROW
        for b in allowed
      ), (p, lo, hi, sorted(allowed))


def test_pipeline_and_training_on_a_slice(tmp_path):
  path = write(
    str(tmp_path / 'train.tsv'),
    _HEAD + ''.join(f'text {r} {"w" * (r % 9)}\t{r % 3}\n' for r in range(60)),
  )
  split = 'train[10%:95%]'

  source = f'tsv:{path}'
  one, info = eval_rows(source, split, 0, 1)
  assert info.num_examples == 51 and [i for i, _ in one] == list(range(51))
  parts = [eval_rows(source, split, i, 4) for i in range(4)]
  assert [r for got, _ in parts for r in got] == one
  assert all(part.num_classes == 3 for _, part in parts)

  bounds = assert_same_training_batches(_config(source), split, (0, 5, 13))
  assert bounds == shards_lib.bounds(51, len(bounds) - 1)


def test_sliced_text_documents_by_position(tmp_path):
  # MLM `text:` files (two, one byte stream): a slice gives equal shares,
  # each process reading its own byte range and the ranges of its share.
  for name, n in (('a', 150), ('b', 250)):
    write(
      str(tmp_path / f'{name}.txt'),
      ''.join(f'doc {name}{k:03d}\n' for k in range(n)),
    )
  pattern = str(tmp_path / '*.txt')
  size = sum(
    len(open(str(tmp_path / f), 'rb').read()) for f in ('a.txt', 'b.txt')
  )
  split = 'train[45%:70%]'
  whole = read_local_rows('text', pattern, split, label_field=False)
  assert len(whole.text_a) == 100
  docs = []
  for p in range(4):
    with _OwnReads(tmp_path) as opened:
      mine, sizes, fields = mlm_shards.process_documents(
        'text', pattern, split, p, 4, None, True
      )
    assert (sizes, fields) == ([25] * 4, ('text',))
    docs += mine
    read = sum(hi - lo for _, lo, hi in opened.spans)
    assert read <= 3 * size // 4 + 40  # Its range and at most two more.
  assert docs == whole.text_a
