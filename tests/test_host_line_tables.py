"""TSV and JSONL tables read by byte blocks (perceiver_io/data/text/line_tables.py).

Blocks in order must be exactly the rows of reading the file whole (the
reference: `local.read_local_rows`, the whole-file reader), with a byte order
mark, blank and whitespace lines before the header, CRLF and lone CR line
ends, lines longer than a block and a raw U+2028 inside a JSON string; each
block reads only its bytes (observed by recording `open`), and the runner's
training shards of such a file give 1, 2 and 4 processes the same batches.
"""

import json
from unittest import mock

import numpy as np
import pytest

from configs import common
from experiments import host_data
from perceiver_io.data import shards as shards_lib
from perceiver_io.data.text import line_tables
from perceiver_io.data.text.local import read_local_rows
from tests.text_data_helpers import eval_rows
from tests.text_data_helpers import Opened
from tests.text_data_helpers import write

_LONG = 'x' * 700  # Longer than a block of the files below at 7 blocks.


def _tsv_rows(n, long=True):
  long_text = _LONG if long else 'w' * 40
  return [
    (f'text {i} ' + (long_text if i == 5 else ''), i % 3) for i in range(n)
  ]


def _tsv(header=True, long=True):
  lines = [f'{t}\t{y}' for t, y in _tsv_rows(30, long)]
  body = '\r\n'.join(lines[:10]) + '\r\n' + '\r'.join(lines[10:20])
  body += '\n\n  \n' + '\n'.join(lines[20:]) + '\n'
  head = ' \n\n' + ('sentence\tlabel\n' if header else '')
  return '\ufeff' + head + body


def _jsonl():
  rows = [json.dumps({'text': t, 'label': y}) for t, y in _tsv_rows(30)]
  rows[7] = '{"text": "a\u2028b", "label": 1}'  # Raw, as JSON allows.
  return '\ufeff\n' + '\n'.join(rows[:15]) + '\r\n\n' + '\r\n'.join(rows[15:])


_FILES = {
  'tsv': (_tsv(), dict(text_fields=None, label_field=None, has_header=True)),
  'tsv_no_header': (
    _tsv(header=False),
    dict(text_fields=(0,), label_field=1, has_header=False),
  ),
  'jsonl': (
    _jsonl(),
    dict(text_fields=None, label_field=None, has_header=True),
  ),
}


def _read(name, tmp_path):
  text, fields = _FILES[name]
  kind = name.split('_')[0]
  path = write(str(tmp_path / f'data.{kind}'), text)
  read = dict(task='classification', class_map=None, **fields)
  return kind, path, read


@pytest.mark.parametrize('name', sorted(_FILES))
def test_blocks_in_order_are_the_whole_file(name, tmp_path):
  kind, path, read = _read(name, tmp_path)
  whole = read_local_rows(kind, path, 'train', **_FILES[name][1])
  assert len(whole.text_a) == 30
  if kind == 'jsonl':
    assert whole.text_a[7] == 'a\u2028b'.encode()
  size = len(open(path, 'rb').read())
  for blocks in (2, 3, 4, 7):
    parts = []
    for b in range(blocks):
      start, stop = b * size // blocks, (b + 1) * size // blocks
      with Opened(tmp_path) as opened:
        rows, _, _ = line_tables.read_block(
          kind, path, 'train', b, blocks, **read
        )
      for _, lo, hi in opened.spans:  # Its range, one line on, the header.
        assert hi <= 80 or (lo >= start - 1 and hi <= stop + 720)
      counted = line_tables.shard_counts(
        kind, path, 'train', read['has_header'], [b], blocks
      )
      assert counted == [len(rows.text_a)]
      parts.append(rows)
    if blocks == 7:  # Blocks inside the long line hold no row.
      assert any(len(p.text_a) == 0 for p in parts)
    assert [t for p in parts for t in p.text_a] == whole.text_a
    np.testing.assert_array_equal(
      np.concatenate([p.labels for p in parts]), whole.labels
    )


@pytest.mark.parametrize('long_line', [False, True])
def test_pipeline_counts_and_classes_from_every_block(tmp_path, long_line):
  # Labels 0..2 with label 3 only in the last row: every process reports
  # the split's 4 classes and every block's size, and the rows in process
  # order are the one-process rows. A line longer than a block would leave
  # a process without rows: then each reads by row position and keeps an
  # equal share.
  rows = [f'text {i} {"w" * 40 * (i < 10)}\t{i % 3}' for i in range(29)]
  rows.append('last\t3')  # Byte blocks: fewer rows in the first ones.
  if long_line:
    rows[5] = _LONG + '\t1'
  path = write(
    str(tmp_path / 'train.tsv'), 'sentence\tlabel\n' + '\n'.join(rows)
  )

  one, info = eval_rows(f'tsv:{path}', 'train', 0, 1)
  parts = [eval_rows(f'tsv:{path}', 'train', i, 4) for i in range(4)]
  assert [r for got, _ in parts for r in got] == one
  sizes = [len(got) for got, _ in parts]
  assert (sizes == [7, 8, 7, 8]) == long_line  # Equal shares by position.
  for _, part in parts:
    assert part.num_classes == info.num_classes == 4
    assert list(part.num_examples_per_process) == sizes
    assert part.num_examples == 30


class _OwnReads(Opened):
  """`Opened`, but not counting the reads a simulated gather makes for the
  other processes (a multi-process run gathers their counts instead)."""

  def __enter__(self):
    super().__enter__()
    real, recorder = shards_lib.gather_counts, self

    def paused(count, process_count):
      def count_unrecorded(p):
        recorder._patch.stop()  # pylint: disable=protected-access
        try:
          return count(p)
        finally:
          recorder._patch.start()  # pylint: disable=protected-access

      return real(count_unrecorded, process_count)

    self._gather = mock.patch.object(shards_lib, 'gather_counts', paused)
    self._gather.start()
    return self

  def __exit__(self, *exc):
    self._gather.stop()
    super().__exit__(*exc)


def _config(source, **data):
  c = common.base_config()
  with c.unlocked():
    c.task = 'classification'
    c.data.source = source
    c.data.max_length = 16
    c.data.label_names = 'a,b,c'
    c.data.text_fields = 'sentence'
    c.batch_size = 8
    c.seed = 5
    for k, v in data.items():
      c.data[k] = v
  return c


def test_training_shards_same_batches_for_any_process_count(tmp_path):
  path = write(str(tmp_path / 'train.tsv'), _tsv(long=False))
  config = _config(f'tsv:{path}')
  one, info = host_data.load_process_table(
    config, 'train', 'classification', True, 0, 1
  )
  size = len(open(path, 'rb').read())
  bounds = info['bounds']
  assert bounds[-1] == 30 and min(np.diff(bounds)) > 0
  stream = host_data.ShardedTableStream(one, bounds, 8, 5)
  for count in (2, 4):
    tables = []
    for i in range(count):
      with _OwnReads(tmp_path) as opened:
        table, part = host_data.load_process_table(
          config, 'train', 'classification', True, i, count
        )
      assert part['bounds'] == bounds
      lo, hi = i * size // count, (i + 1) * size // count
      # Its bytes, the header, and on to the end of its last line (past
      # lone \r line ends: to the next \n, 10 short rows on).
      assert opened.spans and all(
        b <= 21 or (a >= lo - 1 and b <= hi + 120) for _, a, b in opened.spans
      )
      tables.append(table)
    streams = [
      host_data.ShardedTableStream(t, bounds, 8, 5, i, count)
      for i, t in enumerate(tables)
    ]
    for step in (0, 3, 11):
      parts = [s.batch(step) for s in streams]
      for k, v in stream.batch(step).items():
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), v)


def test_a_shard_without_rows(tmp_path):
  # 8 short rows, then one row holding most of the bytes: at 8 byte shards
  # the last ones hold no row start. Auto shards choose fewer; a set count
  # is one line naming the setting.
  rows = [f'r{i}\t{i % 3}' for i in range(8)] + [_LONG + '\t1']
  path = write(
    str(tmp_path / 'train.tsv'), 'sentence\tlabel\n' + '\n'.join(rows)
  )
  config = _config(f'tsv:{path}')
  _, info = host_data.load_process_table(
    config, 'train', 'classification', True, 0, 1
  )
  assert len(info['bounds']) - 1 < 8 and min(np.diff(info['bounds'])) > 0
  with config.unlocked():
    config.data.num_shards = 8
  with pytest.raises(ValueError, match=r'training shard \d of 8 .*num_shards'):
    host_data.load_process_table(config, 'train', 'classification', True, 0, 2)
