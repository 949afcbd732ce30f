"""MLM training on fixed document shards: 1, 2 and 4 processes (simulated
with process_index / process_count) build the same global batches, row for
row, across an epoch boundary; a resumed stream equals the uninterrupted
one; each process reads only its bytes (``text:``) or uses only its rows
(a table, TFDS even splits).

Expected shards are re-derived here from the files' bytes (the lines
whose first byte is in [jN/S, (j+1)N/S)) and from the table's rows, never
from the pipeline. What a process read is observed at `open` (as in
tests/test_host_text_files.py).
"""

import json
import re

import numpy as np
import pytest

from experiments import host_data
from perceiver_io import tokenizer as tokenizer_lib
from perceiver_io.data.text import mlm
from tests.text_data_helpers import Opened
from tests.text_data_helpers import write

S, B, STEPS = 4, 8, 6  # Each shard of ~16 documents wraps at step 4.
KEYS = ('input_ids', 'mlm_labels', 'mlm_weights', 'index')
TOK = tokenizer_lib.ByteTokenizer()
_DOC = re.compile(r'(?<![\w])doc(\d+) ')


def _make(source, i, count, start=0, split='train', **kwargs):
  ds, _ = mlm.make_mlm_dataset(
    source,
    split,
    max_length=40,
    batch_size=B // count,
    repeat=True,
    docs_per_example=2,
    seed=3,
    start_step=start,
    process_index=i,
    process_count=count,
    num_shards=S,
    gather_counts=lambda c: np.repeat(c[None], count, 0),
    **kwargs,
  )
  return list(ds.take(STEPS - start).as_numpy_iterator())


def _global(per_process):
  """Per step, the processes' rows concatenated in process order."""
  return [
    {k: np.concatenate([p[s][k] for p in per_process]) for k in KEYS}
    for s in range(len(per_process[0]))
  ]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _doc_ids(batch):
  """Per row: the whole `docN ` words its (unmasked) crop shows."""
  original = np.where(
    batch['mlm_weights'] > 0, batch['mlm_labels'], batch['input_ids']
  )
  return [
    {int(n) for n in _DOC.findall(TOK.decode(row, skip_special_tokens=True))}
    for row in original
  ]


def _assert_rows_from_shards(batches, shard_of):
  """Global row r of every batch comes from shard r // (B // S)."""
  seen = 0
  for batch in batches:
    for r, ids in enumerate(_doc_ids(batch)):
      assert {shard_of[d] for d in ids} <= {r // (B // S)}, (r, ids)
      seen += len(ids)
  assert seen > len(batches) * B  # Crops show whole documents.


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp('mlm_shards')
  rng = np.random.default_rng(0)
  docs, k = [], 0
  for name, n in (('a.txt', 20), ('b.txt', 30), ('c.txt', 14)):
    lines = []
    for _ in range(n):
      words = ' '.join(f'w{x}' for x in rng.integers(0, 99, rng.integers(1, 6)))
      lines.append(f'doc{k} {words}')
      k += 1
    docs.append(lines)
    write(str(root / name), ''.join(line + '\n' for line in lines))
  data = b''.join((root / n).read_bytes() for n in ('a.txt', 'b.txt', 'c.txt'))
  starts = [0] + [m.end() for m in re.finditer(b'\n', data)][:-1]
  shard_of = {d: s * S // len(data) for d, s in enumerate(starts)}
  return root, data, shard_of


@pytest.mark.slow  # 7 simulated processes and a resumed pair
def test_text_glob_same_global_batches_on_1_2_4_processes(corpus):
  root, data, shard_of = corpus
  source = f'text:{root}/*.txt'
  offsets = {}
  total = 0
  for n in ('a.txt', 'b.txt', 'c.txt'):
    offsets[str(root / n)] = total
    total += len((root / n).read_bytes())
  runs = {}
  for count in (1, 2, 4):
    per_process = []
    for i in range(count):
      with Opened(root) as seen:
        per_process.append(_make(source, i, count))
      start, stop = len(data) * i // count, len(data) * (i + 1) // count
      end = data.find(b'\n', stop - 1) + 1  # The end of its last line.
      for path, lo, hi in seen.spans:  # Only its bytes (and line ends).
        lo, hi = lo + offsets[path], hi + offsets[path]
        assert start - 1 <= lo and hi <= end, (count, i, lo, hi)
    runs[count] = _global(per_process)
  _assert_rows_from_shards(runs[1], shard_of)
  _assert_same(runs[2], runs[1])
  _assert_same(runs[4], runs[1])
  # Resume at step 3 on 2 processes = the uninterrupted stream.
  resumed = _global([_make(source, i, 2, start=3) for i in range(2)])
  _assert_same(resumed, runs[1][3:])


def _runs_from_shards(source, shard_of, **kwargs):
  """Global batches of 1, 2 and 4 processes of a table (documents -> shard
  in `shard_of`): each process uses only (and all of) its shards' rows,
  every batch row comes from its shard, and the runs are equal."""
  runs = {}
  for count in (1, 2, 4):
    per_process = [
      _make(source, i, count, text_field='text', **kwargs) for i in range(count)
    ]
    for i, batches in enumerate(per_process):
      mine = set(range(i * S // count, (i + 1) * S // count))
      used = {shard_of[d] for b in batches for ids in _doc_ids(b) for d in ids}
      assert used == mine
    runs[count] = _global(per_process)
  _assert_rows_from_shards(runs[1], shard_of)
  _assert_same(runs[2], runs[1])
  _assert_same(runs[4], runs[1])
  return runs


def test_table_same_global_batches_and_each_process_uses_its_rows(tmp_path):
  rows = [f'doc{k} ' + 'w' * (k % 7) + ' end' for k in range(30)]
  path = write(
    str(tmp_path / 'train.jsonl'),
    ''.join(json.dumps({'text': r}) + '\n' for r in rows),
  )
  # A JSONL table is cut by bytes: row d is in the shard whose bytes hold
  # the start of its line.
  lines = [len(json.dumps({'text': r})) + 1 for r in rows]
  starts, size = np.cumsum([0] + lines[:-1]), sum(lines)
  shard_of = {d: int(starts[d] * S // size) for d in range(30)}
  assert len(set(np.bincount(list(shard_of.values())))) > 1  # Not by rows.
  runs = _runs_from_shards(f'jsonl:{path}', shard_of)
  resumed = _global([_make(f'jsonl:{path}', 0, 1, 4, text_field='text')])
  _assert_same(resumed, runs[1][4:])


def test_csv_same_global_batches_from_record_shards(tmp_path):
  # Quoted CSV fields holding line breaks: a shard is the records that
  # start in its bytes, wherever their line breaks fall.
  records = [
    f'"doc{k} '
    + 'w' * (k % 7)
    + (' ""q""\r\nnext' if k % 3 else '')
    + ' end"\n'
    for k in range(30)
  ]
  path = write(str(tmp_path / 'train.csv'), 'text\n' + ''.join(records))
  starts = np.cumsum([5] + [len(r.encode()) for r in records[:-1]])
  size = 5 + sum(len(r.encode()) for r in records)
  shard_of = {d: int(starts[d] * S // size) for d in range(30)}
  _runs_from_shards(f'csv:{path}', shard_of)


def test_sliced_table_same_global_batches_from_row_shards(tmp_path):
  # A slice of a JSONL table is cut by rows: the split's 24 documents in
  # 4 shards of 6, each process reading the byte blocks that hold its rows.
  rows = [f'doc{k} ' + 'w' * (k % 7) + ' end' for k in range(30)]
  path = write(
    str(tmp_path / 'train.jsonl'),
    ''.join(json.dumps({'text': r}) + '\n' for r in rows),
  )
  split = 'train[4:28]'
  shard_of = {d: (d - 4) // 6 for d in range(4, 28)}
  _runs_from_shards(f'jsonl:{path}', shard_of, split=split)


@pytest.fixture(scope='module')
def prepared_tfds(tmp_path_factory):
  """A real TFDS dataset on disk, so even splits read real records."""
  import tensorflow_datasets as tfds

  class PerceiverMlmShardTexts(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({'text': tfds.features.Text()}),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for k in range(26):
        yield k, {'text': f'doc{k} ' + 'w' * (k % 5) + ' end'}

  root = tmp_path_factory.mktemp('tfds')
  PerceiverMlmShardTexts(data_dir=str(root)).download_and_prepare()
  return str(root)


def test_tfds_same_global_batches_and_each_process_uses_its_records(
  prepared_tfds,
):
  source = 'tfds:perceiver_mlm_shard_texts'
  import tensorflow_datasets as tfds

  records = tfds.builder(source[5:], data_dir=prepared_tfds).as_dataset(
    split='train', shuffle_files=False
  )
  order = [  # Document ids in record order (TFDS shuffles when preparing).
    int(_DOC.match(r['text'].decode() + ' ')[1]) for r in tfds.as_numpy(records)
  ]
  bounds = host_data.tfds_bounds(26, S)  # Where tfds.even_splits cuts.
  shard_of = {
    d: int(np.searchsorted(bounds, k, 'right')) - 1 for k, d in enumerate(order)
  }
  runs = {}
  for count in (1, 2, 4):
    per_process = [
      _make(source, i, count, data_dir=prepared_tfds) for i in range(count)
    ]
    for i, batches in enumerate(per_process):
      used = {shard_of[d] for b in batches for ids in _doc_ids(b) for d in ids}
      assert used == set(range(i * S // count, (i + 1) * S // count))
    runs[count] = _global(per_process)
  _assert_rows_from_shards(runs[1], shard_of)
  _assert_same(runs[2], runs[1])
  _assert_same(runs[4], runs[1])


def test_a_shard_count_the_processes_cannot_share_is_one_clear_error(corpus):
  with pytest.raises(ValueError, match='multiple of the process count 2'):
    mlm.make_mlm_dataset(
      f'text:{corpus[0]}/*.txt',
      'train',
      max_length=40,
      batch_size=4,
      repeat=True,
      process_index=0,
      process_count=2,
      num_shards=3,
    )
