"""Per-host input: 4 processes (simulated by passing process_index=i,
process_count=4 to the readers in one Python process) read disjoint parts
of every source whose union is the whole split, the same global training
batches as one process where the runner promises it, and evaluation
scores every example exactly once with uneven process counts.

What each process *read* is observed, not inferred from its output: the
texts the byte tokenizer encoded (local files, GLUE TSVs, TFDS), the TFDS
read instructions, the images decoded (folders carry their index in their
pixels), the MLM documents, the generated flow pairs made.
"""

from unittest import mock

import numpy as np
import pytest

from configs import common
from experiments import host_data
from perceiver_io import tokenizer as tokenizer_lib
from tests.text_data_helpers import write

P = 4


class _Encoded:
  """Records every text the byte tokenizer encodes (what was read)."""

  def __init__(self):
    self.texts = []

  def __enter__(self):
    original = tokenizer_lib.ByteTokenizer.batch_encode
    recorder = self

    def batch_encode(tok, texts, pairs=None, **kwargs):
      recorder.texts.extend(
        t.decode() if isinstance(t, bytes) else t for t in texts
      )
      return original(tok, texts, pairs, **kwargs)

    self._patch = mock.patch.object(
      tokenizer_lib.ByteTokenizer, 'batch_encode', batch_encode
    )
    self._patch.start()
    return self

  def __exit__(self, *exc):
    self._patch.stop()


def _config(source, **data):
  c = common.base_config()
  with c.unlocked():
    c.task = 'classification'
    c.data.source = source
    c.data.train_split = 'train'
    c.data.eval_split = 'test'
    c.data.max_length = 24
    c.data.label_names = 'neg,pos'
    c.batch_size = 8
    c.eval_batch_size = 8
    c.seed = 3
    for k, v in data.items():
      c.data[k] = v
  return c


def _texts(n, split):
  return [f'{split} review {i}' for i in range(n)]


@pytest.fixture(scope='module')
def text_files(tmp_path_factory):
  """The same 21 train / 10 test rows as CSV, GLUE-style TSV and JSONL."""
  root = tmp_path_factory.mktemp('tables')
  for split, n in (('train', 21), ('test', 10)):
    rows = [(t, i % 2) for i, t in enumerate(_texts(n, split))]
    write(
      str(root / f'{split}.csv'),
      'text,label\n' + ''.join(f'{t},{y}\n' for t, y in rows),
    )
    write(
      str(root / f'{split}.tsv'),
      'sentence\tlabel\n' + ''.join(f'{t}\t{y}\n' for t, y in rows),
    )
    write(
      str(root / f'{split}.jsonl'),
      ''.join(f'{{"text": "{t}", "label": {y}}}\n' for t, y in rows),
    )
  return root


def _text_of(table):
  tok = tokenizer_lib.ByteTokenizer()
  return [
    tok.decode(ids, skip_special_tokens=True) for ids in table['input_ids']
  ]


def _rows(table):
  """Each row's identity: its text, or its image's bytes."""
  if 'input_ids' in table:
    return _text_of(table)
  return [image.tobytes() for image in table['image']]


def _check_train(config, task='classification', read=None):
  """4 processes' shards: disjoint, covering, and the same global batches
  as one process. Returns the processes' tables."""
  whole, info = host_data.load_process_table(config, 'train', task, True, 0, 1)
  tables = []
  for i in range(P):
    with _Encoded() as encoded:
      table, part = host_data.load_process_table(
        config, 'train', task, True, i, P
      )
    if read is not None:
      assert sorted(t for t in encoded.texts if t) == sorted(read(table))
    assert part['bounds'] == info['bounds']
    tables.append(table)
  for k in whole:  # Contiguous shards in process order = the whole split.
    np.testing.assert_array_equal(
      np.concatenate([t[k] for t in tables]), whole[k]
    )
  one = host_data.ShardedTableStream(whole, info['bounds'], 8, 3)
  many = [
    host_data.ShardedTableStream(t, info['bounds'], 8, 3, i, P)
    for i, t in enumerate(tables)
  ]
  for step in (0, 1, 5, 40):
    joined = [s.batch(step) for s in many]
    for k, v in one.batch(step).items():
      np.testing.assert_array_equal(np.concatenate([b[k] for b in joined]), v)
  return tables


def _check_eval(config, task='classification'):
  """Every eval row scored exactly once; equal batch counts; weight-0 pads."""
  whole, _ = host_data.load_process_table(config, 'test', task, False, 0, 1)
  scored, counts = [], set()
  for i in range(P):
    table, info = host_data.load_process_table(
      config, 'test', task, False, i, P
    )
    batches = list(
      host_data.sharded_eval_batches(
        table, info['process_sizes'], 8, i, int(config.max_eval_examples)
      )
    )
    counts.add(len(batches))
    for b in batches:
      assert len(b['weight']) == 8 // P
      scored += [r for r, w in zip(_rows(b), b['weight']) if w]
  assert len(counts) == 1
  plan, total = host_data.eval_plan(
    [len(whole['label'])], int(config.max_eval_examples)
  )
  expected = [_rows(whole)[r] for r in plan[0]]
  assert len(scored) == total and sorted(scored) == sorted(expected)


@pytest.mark.parametrize(
  'kind, fields',
  [('csv', {}), ('tsv', {'text_fields': 'sentence'}), ('jsonl', {})],
)
def test_local_text_tables(text_files, kind, fields):
  config = _config(f'{kind}:{text_files}/{{split}}.{kind}', **fields)
  tables = _check_train(config, read=_text_of)
  # 21 rows, 8 shards: 2 or 3 rows each, 5 or 6 per process.
  assert [len(t['label']) for t in tables] == [5, 5, 5, 6]
  _check_eval(config)  # 10 rows: 2, 3, 2, 3.
  with mock.patch.object(config, 'max_eval_examples', 7):
    _check_eval(config)


def test_digits_table():
  config = _config('digits')
  with config.unlocked():
    config.data.num_shards = 4
  tables = _check_train(config)
  assert sum(len(t['label']) for t in tables) == 1437
  _check_eval(config)


@pytest.fixture()
def mocked_tfds():
  import tensorflow_datasets as tfds

  with (
    mock.patch.object(
      tfds.core.DatasetBuilder, 'is_prepared', return_value=True
    ),
    tfds.testing.mock_data(num_examples=10),
  ):
    yield tfds


def test_tfds_text_reads_only_its_even_splits(mocked_tfds):
  config = _config(
    'tfds:glue/cola', text_fields='sentence', label_names='', num_shards=8
  )
  with config.unlocked():
    config.eval_batch_size = 4
    config.data.eval_split = 'validation'
  builder_cls = mocked_tfds.core.DatasetBuilder
  original = builder_cls.as_dataset
  for i in range(P):
    splits = []

    def as_dataset(builder, *args, split=None, **kwargs):
      # Reads for the table pass a read_config; counting the mocked split
      # (real TFDS metadata has the counts) does not.
      if 'read_config' in kwargs:
        splits.append(split)  # pylint: disable=cell-var-from-loop
      return original(builder, *args, split=split, **kwargs)

    with mock.patch.object(builder_cls, 'as_dataset', as_dataset):
      host_data.load_process_table(
        config, 'train', 'classification', True, i, P
      )
    # The whole split ('train') is only opened to count it, never iterated:
    # the tokenizer sees only this process's rows (_check_train below).
    shards = [(s.index, s.count) for s in splits if not isinstance(s, str)]
    assert shards == [(2 * i, 8), (2 * i + 1, 8)]
  _check_train(config, read=_text_of)


def _write_numbered(root, count):
  from PIL import Image

  (root / 'c').mkdir(parents=True)
  for i in range(count):
    Image.fromarray(np.full((4, 4, 3), 20 * i + 10, np.uint8)).save(
      str(root / 'c' / f'{i:02d}.png')
    )


def _values(batch):
  # Resize keeps a constant image constant; normalised back to the pixel.
  from perceiver_io.data import image as image_lib

  mean = np.asarray(image_lib.MEAN_RGB, np.float32)
  std = np.asarray(image_lib.STDDEV_RGB, np.float32)
  pixel = batch['image'][:, 0, 0, 0] * std[0] + mean[0]
  return np.rint(pixel).astype(int)


def test_image_folder_train_epoch_and_eval_exactly_once(tmp_path):
  from perceiver_io.data import image as image_lib

  _write_numbered(tmp_path / 'images', 11)
  seen, evaluated, counts = [], [], set()
  for i in range(P):
    it, info = image_lib.make_image_dataset(
      str(tmp_path / 'images'),
      'train',
      batch_size=1,
      train=True,
      image_size=8,
      repeat=False,
      randaugment=None,
      geometry='resize',
      process_index=i,
      process_count=P,
    )
    seen.extend(int(v) for b in it for v in _values(b))
    it, info = image_lib.make_image_dataset(
      str(tmp_path / 'images'),
      'validation',
      batch_size=2,
      train=False,
      image_size=8,
      process_index=i,
      process_count=P,
    )
    batches = list(it)
    counts.add(len(batches))
    for b in batches:
      evaluated += [int(v) for v, m in zip(_values(b), b['mask']) if m]
  every = [20 * i + 10 for i in range(11)]
  # Training drops each process's last partial batch: none at batch 1.
  assert sorted(seen) == every
  assert sorted(evaluated) == every and len(counts) == 1


def test_mlm_text_files_split_documents(tmp_path):
  from perceiver_io.data import text as text_lib

  docs = [f'document number {i} ' * 3 for i in range(9)]
  for i, d in enumerate(docs):
    write(str(tmp_path / 'train' / f'{i}.txt'), d)
  owned = []
  for i in range(P):
    with _Encoded() as encoded:
      ds, info = text_lib.make_mlm_dataset(
        f'text:{tmp_path}/{{split}}/*.txt',
        'train',
        max_length=16,
        batch_size=1,
        repeat=False,
        docs_per_example=1,
        process_index=i,
        process_count=P,
      )
      list(ds.as_numpy_iterator())
    owned.append(info.num_examples_per_process[i])
    del encoded
  assert sum(owned) == len(docs) and max(owned) - min(owned) <= 1
