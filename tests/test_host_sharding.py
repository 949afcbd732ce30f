"""Per-host input: 4 processes (simulated by passing process_index=i,
process_count=4 to the readers in one Python process) read disjoint parts
of every source whose union is the whole split, the same global training
batches as one process where the runner promises it, and evaluation
scores every example exactly once with uneven process counts.

What each process *read* is observed, not inferred from its output: the
texts the byte tokenizer encoded (local files, GLUE TSVs, a TFDS dataset
prepared by the test), the images decoded (folders carry their index in
their pixels), the MLM documents, the generated flow pairs made, the clip
shards and shares opened.
"""

import types
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
  sizes = [len(t['label']) for t in tables]
  # Cut by bytes: the rows whose line starts in the process's quarter (no
  # CSV field here holds a line break; tests/test_host_csv_blocks.py has
  # those).
  data = open(f'{text_files}/train.{kind}', 'rb').read()
  starts = [0] + [i + 1 for i, c in enumerate(data[:-1]) if c == ord('\n')]
  starts = starts[1:] if kind != 'jsonl' else starts  # The header.
  assert sizes == [
    sum(p * len(data) // P <= s < (p + 1) * len(data) // P for s in starts)
    for p in range(P)
  ]
  _check_eval(config)
  with mock.patch.object(config, 'max_eval_examples', 7):
    _check_eval(config)


def test_digits_table():
  config = _config('digits')
  with config.unlocked():
    config.data.num_shards = 4
  tables = _check_train(config)
  assert sum(len(t['label']) for t in tables) == 1437
  _check_eval(config)


@pytest.fixture(scope='module')
def prepared_tfds(tmp_path_factory):
  """A real TFDS dataset prepared on disk (23 train / 10 test texts), so
  even splits read real records (mock data serves every split whole)."""
  import tensorflow_datasets as tfds

  class PerceiverHostTestTexts(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            'text': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=['neg', 'pos']),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {
        split: self._generate_examples(split, n)
        for split, n in (('train', 23), ('test', 10))
      }

    def _generate_examples(self, split, n):
      for i, text in enumerate(_texts(n, split)):
        yield i, {'text': text, 'label': i % 2}

  root = tmp_path_factory.mktemp('tfds')
  PerceiverHostTestTexts(data_dir=str(root)).download_and_prepare()
  return str(root)


@pytest.mark.slow  # ~3 s: prepares a dataset
def test_tfds_text_each_process_reads_its_records(prepared_tfds):
  config = _config(
    'tfds:perceiver_host_test_texts',
    text_fields='text',
    label_names='',
    num_shards=P,
    data_dir=prepared_tfds,
  )
  # Each process tokenises exactly the rows of its even splits; together
  # the whole split, in order; the same global batches as one process.
  tables = _check_train(config, read=_text_of)
  assert [len(t['label']) for t in tables] == [6, 6, 6, 5]  # tfds cuts
  _check_eval(config)


@pytest.mark.parametrize('total, count', [(23, 4), (10, 8), (64, 8), (5, 1)])
def test_tfds_bounds_are_where_tfds_cuts(total, count):
  import tensorflow_datasets as tfds

  info = tfds.core.SplitDict(
    [tfds.core.SplitInfo(name='train', shard_lengths=[total], num_bytes=0)]
  )
  cuts = [0]
  for part in tfds.even_splits('train', n=count):
    (instruction,) = part.to_absolute(info)
    cuts.append(total if instruction.to is None else instruction.to)
  assert host_data.tfds_bounds(total, count) == cuts


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

  docs = [f'doc{i:02d}' for i in range(9)]
  for i, d in enumerate(docs):
    write(str(tmp_path / 'train' / f'{i}.txt'), d + '\n')
  masked = []
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
    mine = sorted(t for t in encoded.texts if t)
    assert len(mine) == info.num_examples_per_process[i]
    masked += mine
  assert sorted(masked) == docs  # Each document tokenised by one process.


@pytest.fixture(scope='module')
def flow_task():
  from experiments import cli
  from experiments import tasks

  config = cli.load_config_file('configs/optical_flow.py:cpu')
  with config.unlocked():
    config.batch_size = 8
    config.eval_batch_size = 8
    config.data.num_workers = 0
  task = tasks.get(config)
  task.train_size = (16, 24)  # The :cpu model's frames (use_model's value).
  return task


def _as_process(monkeypatch, i, count=P):
  import jax

  monkeypatch.setattr(jax, 'process_index', lambda: i)
  monkeypatch.setattr(jax, 'process_count', lambda: count)


def test_generated_flow_pairs_each_process_makes_only_its_own(
  flow_task, monkeypatch
):
  from experiments.tasks import optical_flow

  made = []
  original = optical_flow.make_train_sample
  monkeypatch.setattr(
    optical_flow,
    'make_train_sample',
    lambda settings, index, plain: (
      made.append(index) or original(settings, index, plain)
    ),
  )
  original_eval = flow_task.generated_eval_sample
  monkeypatch.setattr(
    flow_task,
    'generated_eval_sample',
    lambda i: made.append(-1 - i) or original_eval(i),
  )
  with mock.patch.object(flow_task.config, 'max_eval_examples', 10):
    trained, scored = [], []
    for i in range(P):
      _as_process(monkeypatch, i)
      made.clear()
      flow_task.train_stream(3).batch(3)
      assert made == list(range(24 + 2 * i, 26 + 2 * i))
      trained += made
      made.clear()
      batches, count = flow_task.eval_data()
      for b in batches:  # 10 pairs, 2 batches of 8: rows 8..9 on process 0.
        assert len(b['weight']) == 2
        scored += [-1 - r for r in made[-2:]][: int(b['weight'].sum())]
      assert set(made) <= {-1 - r for r in range(10)}
  assert sorted(trained) == list(range(24, 32))
  assert sorted(scored) == list(range(10)) and count == 10


def test_flow_dataset_eval_splits_pairs_and_adds_sums(flow_task, monkeypatch):
  from experiments.tasks import flow_full_frame

  rng = np.random.default_rng(0)
  listing = [types.SimpleNamespace(frame1=f'pair{i}') for i in range(7)]
  truth = {
    f.frame1: rng.normal(size=(16, 24, 2)).astype(np.float32) for f in listing
  }
  read = []

  def load_pair(files):
    read.append(files)
    frame = np.zeros((16, 24, 3), np.uint8)
    flow = truth[files.frame1]
    valid = np.ones(flow.shape[:2], bool)
    return {'frame1': frame, 'frame2': frame, 'flow': flow, 'valid': valid}

  monkeypatch.setattr(flow_full_frame.flow_layouts, 'load_pair', load_pair)
  monkeypatch.setattr(flow_task, 'listings', lambda k, r: [('x', listing)])
  monkeypatch.setattr(flow_task, 'make_predict_fn', lambda m, v: None)
  monkeypatch.setattr(
    flow_task, 'full_frame_flow', lambda *a: np.zeros((16, 24, 2))
  )
  one = flow_task.evaluate_directory(None, None, 'kitti', '/data')
  assert read == listing

  def run(process_allgather):
    monkeypatch.setattr(
      flow_full_frame.multihost_utils, 'process_allgather', process_allgather
    )
    results, reads = [], []
    for i in range(P):
      _as_process(monkeypatch, i)
      read.clear()
      results.append(flow_task.evaluate_directory(None, None, 'kitti', '/d'))
      reads.append(list(read))
    return results, reads

  local = []
  run(lambda x: local.append(x) or x[None])
  results, reads = run(lambda x: np.stack(local))
  names = sorted(f.frame1 for f in sum(reads, []))
  assert names == sorted(f.frame1 for f in listing)  # Each pair read once.
  for result in results:
    assert result.keys() == one.keys()
    for k, v in one.items():
      assert result[k] == pytest.approx(v, rel=1e-12)


def test_multimodal_training_clips_per_process_same_batches():
  from experiments.tasks import multimodal_stream
  from perceiver_io.data import video

  def run(count):
    opened, batches = [], []
    for i in range(count):

      def open_shard(j, shards):
        opened.append((i, j, shards))
        return video.open_source(
          'synthetic:44',
          num_frames=2,
          size=8,
          audio_samples=64,
          process_index=j,
          process_count=shards,
        )

      clips = multimodal_stream.ShardedClips(
        open_shard,
        batch_size=8,
        requested_shards=0,
        seed=3,
        process_index=i,
        process_count=count,
      )
      batches.append([clips.keys(step) for step in range(12)])
      if count == 1:  # (several processes sum it with a collective)
        assert clips.total() == len(clips) == 44
    # Each process opened only its own shards, and together all of them.
    shards = {j for _, j, _ in opened}
    assert len(opened) == len(shards) == 8
    # Global batch = the processes' rows in process order, whatever count.
    return [sum((b[step] for b in batches), []) for step in range(12)]

  one = run(1)
  assert run(2) == one and run(4) == one
  keys = {f'synthetic:{i}' for i in range(44)}
  # 12 batches of 8 = 96 draws; every clip at least once (each shard cycles
  # through its own permutation), no clip from outside the split.
  drawn = [k for batch in one for k in batch]
  assert set(drawn) == keys
  # Within an epoch of a shard no clip repeats: the first 5 steps draw
  # 5 rows from each 5- or 6-clip shard.
  first = [k for batch in one[:5] for k in batch]
  assert len(first) == len(set(first))


def test_multimodal_eval_clips_each_process_opens_only_its_share(
  monkeypatch,
):
  from configs import multimodal_autoencoding
  from experiments import tasks
  from experiments.tasks import multimodal_autoencoding as mm_task

  def scored(count, limit):
    config = multimodal_autoencoding.get_config('tiny')
    with config.unlocked():
      config.data.source = 'synthetic:10'  # 10 held-out clips
      config.eval_batch_size = 4
      config.max_eval_examples = limit
    task = tasks.get(config)
    # Opened up front (so the sizes need no collective), then recorded.
    sizes = [len(task.source('eval', i, count)) for i in range(count)]
    monkeypatch.setattr(
      mm_task.host_data, 'process_counts', lambda local: list(sizes)
    )
    original, opened, seen, batch_counts = task.source, [], [], set()
    monkeypatch.setattr(
      task,
      'source',
      lambda split, j=0, n=1: (
        opened.append((split, j, n)) or original(split, j, n)
      ),
    )
    for i in range(count):
      _as_process(monkeypatch, i, count)
      batches, total = task.eval_data()
      batches = list(batches)
      batch_counts.add(len(batches))
      for b in batches:
        assert len(b['weight']) == 4 // count
        real = b['weight'] > 0
        seen += [v.tobytes() for v in b['video'][real]]
    # Each process opened only its own share of the eval split.
    assert opened == [('eval', i, count) for i in range(count)]
    assert len(batch_counts) == 1  # Every process runs the same batches.
    assert len(seen) == len(set(seen)) == total
    return set(seen)

  everything = scored(1, -1)
  assert len(everything) == 10
  assert scored(4, -1) == everything  # Every clip scored exactly once.
  # A subset (max_eval_examples) is drawn over the shares in process order.
  assert len(scored(4, 7)) == 7 and scored(4, 7) <= everything


def test_image_folder_training_batches_are_the_same_for_any_process_count(
  tmp_path,
):
  from perceiver_io.data import image as image_lib

  _write_numbered(tmp_path / 'images', 12)
  read = []

  def global_batches(count, steps=7):
    per_process = []
    for i in range(count):
      it, info = image_lib.make_image_dataset(
        str(tmp_path / 'images'),
        'train',
        batch_size=4 // count,
        train=True,
        image_size=4,
        randaugment=None,
        geometry='resize',
        process_index=i,
        process_count=count,
        num_shards=4,
      )
      batches = [_values(next(it)) for _ in range(steps)]
      per_process.append(batches)
      read.append((count, i, sorted({int(v) for b in batches for v in b})))
    return [
      [int(v) for p in per_process for v in p[step]] for step in range(steps)
    ]

  one = global_batches(1)
  assert global_batches(2) == one and global_batches(4) == one
  # Shard j (rows 3j..3j+2) gives one row per batch, each row once per epoch
  # of 3 batches.
  every = [20 * i + 10 for i in range(12)]
  assert sorted(v for b in one[:3] for v in b) == every
  # A process of 4 reads only its own shard's images.
  for count, i, values in read:
    if count == 4:
      assert values == every[3 * i : 3 * i + 3]
