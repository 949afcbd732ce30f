"""CSV files read by byte blocks (perceiver_io/data/text/csv_blocks.py).

The reference is the whole-file reader (`local.read_local_rows`, Python's
csv module): the blocks in order must be exactly its rows for files that
Python's csv.writer wrote (quoted fields holding commas, doubled quotes and
line breaks of every kind), with a byte order mark and blank lines; a file
whose quotes break RFC 4180 (read differently by the csv module) must be
read whole; each process reads only its bytes (observed at `open`); the
runner's training shards give 1, 2 and 4 processes the same batches.
"""

import csv
import io
import random

import numpy as np
import pytest

from perceiver_io.data.text import csv_blocks
from perceiver_io.data.text import line_tables
from perceiver_io.data.text.local import read_local_rows
from tests.test_host_line_tables import _config
from tests.test_host_line_tables import _OwnReads
from tests.text_data_helpers import assert_same_training_batches
from tests.text_data_helpers import eval_rows
from tests.text_data_helpers import HEADER_READ
from tests.text_data_helpers import write

_PIECES = ['a', 'word', ',', '"', '""', '\n', '\r\n', '\r', ' ', 'é', '€']


def _random_csv(seed, rows=40, quoting=csv.QUOTE_MINIMAL, terminator='\r\n'):
  """(file text, texts, labels) written by csv.writer."""
  rng = random.Random(seed)
  texts = [
    ''.join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 30)))
    for _ in range(rows)
  ]
  labels = [rng.randrange(3) for _ in range(rows)]
  out = io.StringIO(newline='')
  writer = csv.writer(out, quoting=quoting, lineterminator=terminator)
  writer.writerow(['text', 'label'])
  for k, (t, y) in enumerate(zip(texts, labels)):
    writer.writerow([t, y])
    if k % 9 == 4:
      out.write(terminator)  # A blank line.
  return '\ufeff' + out.getvalue(), texts, labels


def _simulated_cuts(path, blocks, processes):
  return line_tables.csv_cuts(path, blocks, 0, processes)


@pytest.mark.parametrize(
  'quoting, terminator',
  [
    (csv.QUOTE_MINIMAL, '\r\n'),
    (csv.QUOTE_ALL, '\n'),
    (csv.QUOTE_NONNUMERIC, '\r'),
  ],
)
def test_blocks_in_order_are_the_whole_file(quoting, terminator, tmp_path):
  for seed in range(6):
    text, texts, labels = _random_csv(seed, 40, quoting, terminator)
    path = write(str(tmp_path / f'data{seed}.csv'), text)
    whole = read_local_rows('csv', path, 'train')
    assert [t.decode() for t in whole.text_a] == texts
    assert whole.labels.tolist() == labels
    for blocks in (2, 3, 4, 7, 16):
      cuts = _simulated_cuts(path, blocks, blocks)
      assert cuts is not None and cuts[0] == 0
      assert cuts == sorted(cuts) and cuts[-1] == len(text.encode())
      parts = [
        line_tables.read_block(
          'csv', path, 'train', b, blocks, **HEADER_READ, cuts=cuts
        )[0]
        for b in range(blocks)
      ]
      assert [t for p in parts for t in p.text_a] == whole.text_a
      np.testing.assert_array_equal(
        np.concatenate([p.labels for p in parts]), whole.labels
      )
      counted = line_tables.shard_counts(
        'csv', path, 'train', True, range(blocks), blocks, cuts
      )
      assert counted == [len(p.text_a) for p in parts]


@pytest.mark.parametrize(
  'body',
  [
    'a"b,1\n',  # A quote inside an unquoted field: a literal quote.
    '"a"b,1\n',  # Text after a closing quote: joined to the field.
    '"a" ,1\n',  # A space after a closing quote.
  ],
)
def test_quotes_outside_rfc_4180_read_whole(body, tmp_path):
  rows = ''.join(f'row {k},{k % 2}\n' for k in range(30))
  path = write(str(tmp_path / 'train.csv'), 'text,label\n' + rows + body + rows)
  assert _simulated_cuts(path, 4, 4) is None
  assert not csv_blocks.conforms(body.encode())
  whole = read_local_rows('csv', path, 'train')
  parts = [
    line_tables.process_rows('csv', path, 'train', p, 4, **HEADER_READ)
    for p in range(4)
  ]
  sizes = parts[0][3]
  assert sizes == [15, 15, 15, 16]  # Equal shares of the rows read whole.
  got = []
  for p, (rows, *_, offset, _) in enumerate(parts):
    assert (offset, len(rows.text_a)) == (0, 61)  # Read whole.
    start = sum(sizes[:p])
    got += rows.text_a[start : start + sizes[p]]
  assert got == whole.text_a


def test_conforms():
  assert csv_blocks.conforms(b'h\n"a\nb",1\r\n"c""\r",2\rx,3')
  assert csv_blocks.conforms(b'"a""",1\n,\n""\n')
  assert not csv_blocks.conforms(b'"open\n')


def test_next_record_in_a_file(tmp_path):
  data = b'h\n"a\nb",1\r\n"c""\r",2\rx,3'
  path = str(tmp_path / 'r.csv')
  with open(path, 'wb') as f:
    f.write(data)
  size = len(data)
  starts = [0, 2, 11, 20, size]  # h | "a\nb",1 | "c""\r",2 | x,3
  for pos in range(size + 1):
    inside = data[:pos].count(b'"') % 2 == 1
    want = next(s for s in starts if s >= pos)
    assert csv_blocks.next_record(path, size, pos, inside) == want, pos


def test_each_process_reads_its_bytes(tmp_path):
  text, _, _ = _random_csv(11, rows=400)
  path = write(str(tmp_path / 'train.csv'), text)
  size = len(text.encode())
  whole = read_local_rows('csv', path, 'train')
  got = []
  for p in range(4):
    with _OwnReads(tmp_path) as opened:
      rows, *_ = line_tables.process_rows(
        'csv', path, 'train', p, 4, **HEADER_READ
      )
    got += rows.text_a
    lo, hi = p * size // 4, (p + 1) * size // 4
    # The header (a first read of at most 1 KiB from it), or its bytes and
    # on to the end of its last record (read 1 KiB, then 2 KiB, ...).
    for _, a, b in opened.spans:
      header = a < 40 and b - a <= 1024
      assert header or (a >= lo - 1 and b <= hi + 3072), (p, a, b, lo, hi)
  assert got == whole.text_a


def test_pipeline_and_training_shards_on_any_process_count(tmp_path):
  text, _, _ = _random_csv(5, rows=60)
  path = write(str(tmp_path / 'train.csv'), text)

  source = f'csv:{path}'
  one, info = eval_rows(source, 'train', 0, 1)
  parts = [eval_rows(source, 'train', i, 4) for i in range(4)]
  assert [r for got, _ in parts for r in got] == one
  assert all(part.num_classes == info.num_classes == 3 for _, part in parts)

  config = _config(source)
  with config.unlocked():
    config.data.text_fields = 'text'
  assert_same_training_batches(config, 'train', steps=(0, 4, 9))
