"""Tests for the text pipelines: local formats, errors, sharding, resume, MLM, TFDS.

Fixtures are generated in temp dirs; expected values are written by hand or
come from the HF-verified tokenizer applied to the hand-written text (never
from the pipeline itself).
"""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from perceiver_io.data import text as text_lib
from perceiver_io.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data if isinstance(data, bytes) else data.encode('utf-8'))
  return path


def _all_batches(ds):
  return list(ds.as_numpy_iterator())


def _take(ds, n):
  it = ds.as_numpy_iterator()
  return [next(it) for _ in range(n)]


def _real_rows(batches, key):
  return np.concatenate([b[key][b['mask'] > 0] for b in batches])


def _ids(text, pair=None, max_length=32):
  return TOK.encode(
    text, pair, max_length=max_length, truncation=True, padding='max_length'
  )['input_ids']


@pytest.fixture()
def numbered_tsv(tmp_path):
  """A TSV of 23 rows 'example <i>' with label i % 3."""
  lines = ['sentence\tlabel'] + [f'example {i}\t{i % 3}' for i in range(23)]
  return _write(str(tmp_path / 'data.tsv'), '\n'.join(lines) + '\n')


# ------------------------------------------------------------- split syntax
def test_parse_split_by_hand():
  select = lambda s, n: [
    i for p in text_lib.parse_split(s) for i in p.indices(n)
  ]
  assert select('train', 5) == [0, 1, 2, 3, 4]
  assert select('train[:3]+train[-2:]', 10) == [0, 1, 2, 8, 9]
  assert select('dev[2:4]', 10) == [2, 3]
  assert select('x[10%:30%]', 10) == [1, 2]
  assert select('x[:33%]', 10) == [0, 1, 2]  # 3.3 rounds to 3.
  assert select('x[-20%:]', 10) == [8, 9]
  assert [p.name for p in text_lib.parse_split('a[:1] + b')] == ['a', 'b']
  for bad in ('', 'train[1:2', 'train[a:b]', 'train[:101%]', 'train[]'):
    with pytest.raises(ValueError, match='split'):
      select(bad, 10)


# ---------------------------------------------------------------- formats
def test_tsv_with_bom_quotes_and_invalid_utf8(tmp_path):
  rows = [
    'he said "great',
    'a "quoted" word',
    '',
    "it's \u00e9t\u00e9 \U0001f600",
  ]
  data = '\ufeffsentence\tlabel\n' + ''.join(
    f'{r}\t{i % 2}\n' for i, r in enumerate(rows)
  )
  data = data.encode('utf-8') + b'bad \xff\xfe bytes\t1\n'
  path = _write(str(tmp_path / 'dev.tsv'), data)
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}', 'dev', max_length=32, batch_size=8, repeat=False
  )
  (batch,) = _all_batches(ds)
  assert info.text_fields == ('sentence',) and info.label_field == 'label'
  want = [_ids(r) for r in rows] + [_ids(b'bad \xff\xfe bytes')]
  np.testing.assert_array_equal(batch['input_ids'][:5], want)
  np.testing.assert_array_equal(batch['label'][:5], [0, 1, 0, 1, 1])
  np.testing.assert_array_equal(batch['mask'], [1, 1, 1, 1, 1, 0, 0, 0])
  assert (
    batch['input_ids'].dtype == np.int32
    and batch['attention_mask'].dtype == np.int32
  )
  assert batch['label'].dtype == np.int32 and batch['mask'].dtype == np.float32
  assert info.stats.num_empty == 1 and info.stats.num_invalid_utf8 == 1
  assert info.stats.label_counts == {0: 2, 1: 3}


def test_csv_pairs_with_quoted_commas_and_newlines(tmp_path):
  path = _write(
    str(tmp_path / 'train.csv'),
    'id,q1,q2,label\n'
    '1,"a, b","line one\nline two",yes\n'
    '2,"say ""hi""",plain,no\n',
  )
  ds, info = text_lib.make_text_dataset(
    f'csv:{path}',
    'train',
    max_length=40,
    batch_size=2,
    repeat=False,
    text_fields=('q1', 'q2'),
    label_field='label',
    classes=['no', 'yes'],
  )
  (batch,) = _all_batches(ds)
  np.testing.assert_array_equal(
    batch['input_ids'],
    [_ids('a, b', 'line one\nline two', 40), _ids('say "hi"', 'plain', 40)],
  )
  np.testing.assert_array_equal(batch['label'], [1, 0])
  assert info.classes == ('no', 'yes') and info.num_classes == 2


def test_jsonl_pairs_guessed_fields_and_split_file_template(tmp_path):
  for name, n in (('train', 5), ('dev', 3)):
    _write(
      str(tmp_path / f'{name}.jsonl'),
      ''.join(
        json.dumps(
          {
            'premise': f'{name} p{i}',
            'hypothesis': f'h{i}',
            'label': ['entailment', 'neutral', 'contradiction'][i % 3],
          }
        )
        + '\n'
        for i in range(n)
      ),
    )
  source = f'jsonl:{tmp_path}/{{split}}.jsonl'
  ds, info = text_lib.make_text_dataset(
    source,
    'train[-2:]+dev[:1]',
    max_length=24,
    batch_size=4,
    repeat=False,
    classes=text_lib.GLUE_TASKS['mnli'].classes,
  )
  (batch,) = _all_batches(ds)
  assert (
    info.text_fields == ('premise', 'hypothesis') and info.num_examples == 3
  )
  np.testing.assert_array_equal(
    batch['input_ids'][:3],
    [
      _ids('train p3', 'h3', 24),
      _ids('train p4', 'h4', 24),
      _ids('dev p0', 'h0', 24),
    ],
  )
  np.testing.assert_array_equal(batch['label'][:3], [0, 1, 0])


def test_aclimdb_layout(tmp_path):
  reviews = {
    ('train', 'neg', '3_2'): 'awful',
    ('train', 'pos', '1_9'): 'great <br />film',
    ('train', 'pos', '10_8'): 'good',
    ('train', 'neg', '2_1'): 'bad',
    ('test', 'pos', '0_10'): 'fine',
  }
  for (split, label, stem), review in reviews.items():
    _write(str(tmp_path / 'aclImdb' / split / label / f'{stem}.txt'), review)
  ds, info = text_lib.make_text_dataset(
    f'aclimdb:{tmp_path}/aclImdb',
    'train',
    max_length=20,
    batch_size=4,
    repeat=False,
  )
  (batch,) = _all_batches(ds)
  # Ordered by review id: 1 (pos), 2 (neg), 3 (neg), 10 (pos).
  np.testing.assert_array_equal(
    batch['input_ids'],
    [
      _ids('great <br />film', max_length=20),
      _ids('bad', max_length=20),
      _ids('awful', max_length=20),
      _ids('good', max_length=20),
    ],
  )
  np.testing.assert_array_equal(batch['label'], [1, 0, 0, 1])
  assert info.classes == ('neg', 'pos')
  _, test_info = text_lib.make_text_dataset(
    f'aclimdb:{tmp_path}/aclImdb',
    'test',
    max_length=20,
    batch_size=4,
    repeat=False,
  )
  assert test_info.num_examples == 1


def test_headerless_tsv_by_column_index_and_regression(tmp_path):
  path = _write(
    str(tmp_path / 'cola.tsv'),
    'gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n',
  )
  ds, _ = text_lib.make_text_dataset(
    f'tsv:{path}',
    'x',
    max_length=16,
    batch_size=2,
    repeat=False,
    has_header=False,
    text_fields=(3,),
    label_field=1,
  )
  (batch,) = _all_batches(ds)
  np.testing.assert_array_equal(
    batch['input_ids'],
    [_ids('The cat sat.', max_length=16), _ids('Cat the sat.', max_length=16)],
  )
  np.testing.assert_array_equal(batch['label'], [1, 0])
  path = _write(
    str(tmp_path / 'sts.tsv'), 's1\ts2\tscore\na\tb\t4.750\nc\td\t0.0\n'
  )
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}',
    'dev',
    max_length=8,
    batch_size=2,
    repeat=False,
    task='regression',
    text_fields=('s1', 's2'),
    label_field='score',
  )
  (batch,) = _all_batches(ds)
  assert batch['label'].dtype == np.float32
  np.testing.assert_allclose(batch['label'], [4.75, 0.0])
  assert info.num_classes is None and info.stats.label_counts == {}


def test_unlabelled_file(tmp_path):
  path = _write(str(tmp_path / 'test.tsv'), 'index\tsentence\n0\tfoo\n1\tbar\n')
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}',
    'test',
    max_length=8,
    batch_size=2,
    repeat=False,
    label_field=False,
  )
  (batch,) = _all_batches(ds)
  np.testing.assert_array_equal(batch['label'], [-1, -1])
  assert info.stats.num_unlabeled == 2


# ----------------------------------------------------------------- errors
def test_errors_name_file_and_row(tmp_path):
  make = lambda source, **kw: text_lib.make_text_dataset(
    source, 'train', max_length=16, batch_size=2, repeat=False, **kw
  )
  missing = str(tmp_path / 'nope.csv')
  with pytest.raises(FileNotFoundError, match='nope.csv'):
    make(f'csv:{missing}')
  path = _write(str(tmp_path / 'a.tsv'), 'sentence\tlabel\nok\t1\nbad\tmaybe\n')
  with pytest.raises(
    ValueError, match=r'a\.tsv, row 2 \(line 3\).*maybe.*classes'
  ):
    make(f'tsv:{path}', classes=['0', '1'])
  with pytest.raises(
    ValueError, match=r'a\.tsv.*label column .*polarity.* not in the header'
  ):
    make(f'tsv:{path}', label_field='polarity')
  path = _write(str(tmp_path / 'b.tsv'), 'sentence\tlabel\nok\t1\nshort\n')
  with pytest.raises(
    ValueError, match=r'b\.tsv, row 2 \(line 3\): has 1 fields'
  ):
    make(f'tsv:{path}')
  path = _write(
    str(tmp_path / 'c.jsonl'), '{"text": "a", "label": 0}\n\n{"text": "b"}\n'
  )
  with pytest.raises(
    ValueError, match=r'c\.jsonl, row 2 \(line 3\): missing label'
  ):
    make(f'jsonl:{path}')
  path = _write(str(tmp_path / 'd.csv'), 'text,label\na,1\nb,7\n')
  with pytest.raises(ValueError, match=r'd\.csv, row 2 \(line 3\).*7'):
    make(f'csv:{path}', classes=2)
  path = _write(str(tmp_path / 'e.csv'), 'body,label\na,1\n')
  with pytest.raises(ValueError, match='cannot guess the text column'):
    make(f'csv:{path}')
  with pytest.raises(FileNotFoundError, match='aclImdb layout'):
    make(f'aclimdb:{tmp_path}')
  with pytest.raises(ValueError, match='unknown source kind'):
    make('parquet:/x')
  with pytest.raises(ValueError, match='make_mlm_dataset'):
    make(f'text:{tmp_path}/*.txt')
  with pytest.raises(ValueError, match='process_index'):
    make(f'csv:{path}', process_index=2, process_count=2)


# ---------------------------------------------------------- truncation
def test_truncation_counts(tmp_path):
  texts = ['x' * 5, 'y' * 9, 'z' * 20, '']
  path = _write(
    str(tmp_path / 't.tsv'),
    'sentence\tlabel\n' + ''.join(f'{t}\t0\n' for t in texts),
  )
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}', 'all', max_length=10, batch_size=4, repeat=False
  )
  (batch,) = _all_batches(ds)
  # Room for 8 bytes: 5 fits, 9 loses 1, 20 loses 12.
  np.testing.assert_array_equal(batch['num_truncated'], [0, 1, 12, 0])
  assert info.stats.num_truncated == 2 and info.stats.num_truncated_tokens == 13
  assert info.stats.num_empty == 1
  assert batch['input_ids'][2].tolist() == [4] + [ord('z') + 6] * 8 + [5]


# ------------------------------------------- determinism, shards, resume
def test_same_seed_same_batches_other_seed_differs(numbered_tsv):
  make = lambda seed: text_lib.make_text_dataset(
    f'tsv:{numbered_tsv}',
    'train',
    max_length=16,
    batch_size=4,
    repeat=True,
    seed=seed,
    shuffle_buffer=100,
  )[0]
  first, again, other = _take(make(1), 8), _take(make(1), 8), _take(make(2), 8)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert any((a['index'] != b['index']).any() for a, b in zip(first, other))


def test_training_epochs_are_permutations(numbered_tsv):
  ds, info = text_lib.make_text_dataset(
    f'tsv:{numbered_tsv}',
    'train',
    max_length=16,
    batch_size=1,
    repeat=True,
    seed=3,
  )
  indices = np.concatenate([b['index'] for b in _take(ds, 3 * 23)])
  epochs = indices.reshape(3, 23)
  for epoch in epochs:
    assert sorted(epoch.tolist()) == list(range(23))
  assert (epochs[0] != epochs[1]).any() and (epochs[0] != np.arange(23)).any()
  assert info.steps_per_epoch == 23
  batch = _take(ds, 1)[0]
  assert batch['input_ids'][0].tolist() == _ids(
    f'example {batch["index"][0]}', max_length=16
  )
  assert batch['label'][0] == batch['index'][0] % 3


@pytest.mark.parametrize('batch_size', [4, 5])
def test_two_process_shards_disjoint_and_complete(numbered_tsv, batch_size):
  seen, counts = [], []
  for p in range(2):
    ds, info = text_lib.make_text_dataset(
      f'tsv:{numbered_tsv}',
      'train',
      max_length=16,
      batch_size=batch_size,
      repeat=False,
      process_index=p,
      process_count=2,
    )
    batches = _all_batches(ds)
    counts.append(len(batches))
    assert len(batches) == info.num_batches
    idx = _real_rows(batches, 'index')
    np.testing.assert_array_equal(_real_rows(batches, 'label'), idx % 3)
    seen.append(set(idx.tolist()))
    assert len(idx) == len(seen[-1])  # No duplicates.
    assert all((b['index'][b['mask'] == 0] == -1).all() for b in batches)
  assert counts[0] == counts[1]  # Same number of eval steps on every process.
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(23))
  # Training shards are disjoint too.
  train = [
    set(
      np.concatenate(
        [
          b['index']
          for b in _take(
            text_lib.make_text_dataset(
              f'tsv:{numbered_tsv}',
              'train',
              max_length=16,
              batch_size=2,
              repeat=True,
              process_index=p,
              process_count=2,
            )[0],
            6,
          )
        ]
      ).tolist()
    )
    for p in range(2)
  ]
  assert not train[0] & train[1] and train[0] | train[1] == set(range(23))


def test_resume_gives_the_same_batches(numbered_tsv):
  make = lambda start: text_lib.make_text_dataset(
    f'tsv:{numbered_tsv}',
    'train',
    max_length=16,
    batch_size=5,
    repeat=True,
    seed=7,
    shuffle_buffer=8,
    start_step=start,
  )[0]
  full = _take(make(0), 14)  # 70 examples: crosses two epoch boundaries of 23.
  for start in (1, 4, 9):
    resumed = _take(make(start), 14 - start)
    for a, b in zip(full[start:], resumed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_eval_padding_mask(numbered_tsv):
  ds, info = text_lib.make_text_dataset(
    f'tsv:{numbered_tsv}',
    'train[:10]',
    max_length=16,
    batch_size=4,
    repeat=False,
  )
  batches = _all_batches(ds)
  assert len(batches) == info.num_batches == 3
  np.testing.assert_array_equal(batches[-1]['mask'], [1, 1, 0, 0])
  np.testing.assert_array_equal(
    np.concatenate([b['index'] for b in batches]), list(range(10)) + [-1, -1]
  )
  assert all(b['input_ids'].shape == (4, 16) for b in batches)
  # Padding rows are a harmless [CLS][SEP], not an all-masked row.
  assert batches[-1]['input_ids'][3, :3].tolist() == [4, 5, 0]
  assert sum(b['mask'].sum() for b in batches) == 10


# ------------------------------------------------------------------- MLM
def _random_word_batch(rng, batch, length):
  rows = []
  for _ in range(batch):
    words = [
      bytes(
        rng.integers(97, 123, rng.integers(1, 12)).astype(np.uint8).tobytes()
      )
      for _ in range(length)
    ]
    rows.append(b' '.join(words)[: rng.integers(length // 2, length)])
  return TOK.batch_encode(rows, max_length=length)


def _words(ids_row, mask_row):
  """Hand-rolled word spans: runs of non-whitespace byte ids with mask 1."""
  spans, start = [], None
  for pos, (i, m) in enumerate(zip(ids_row.tolist(), mask_row.tolist())):
    in_word = m == 1 and i >= 6 and (i - 6) not in b' \t\n\r\x0b\x0c'
    if in_word and start is None:
      start = pos
    if not in_word and start is not None:
      spans.append((start, pos))
      start = None
  if start is not None:
    spans.append((start, len(ids_row)))
  return spans


def test_mask_bytes_for_mlm_statistics():
  rng = np.random.default_rng(0)
  enc = _random_word_batch(rng, 64, 256)
  ids, am = enc['input_ids'], enc['attention_mask']
  out = text_lib.mask_bytes_for_mlm(ids, am, np.random.default_rng(1))
  chosen = out['mlm_weights'] > 0
  real = (am == 1) & (ids >= 6)
  assert 0.14 < chosen.sum() / real.sum() < 0.16
  per_row = chosen.sum(1) / real.sum(1)
  assert np.abs(per_row - 0.15).max() < 0.06  # Within about one word of 15%.
  # Never specials, padding or whitespace.
  assert not chosen[(ids < 6) | (am == 0)].any()
  assert not chosen[ids == ord(' ') + 6].any()
  # Whole words: every word is either fully chosen or not at all.
  for r in range(ids.shape[0]):
    for start, stop in _words(ids[r], am[r]):
      assert chosen[r, start:stop].all() or not chosen[r, start:stop].any()
  # Labels and weights.
  np.testing.assert_array_equal(out['mlm_labels'][chosen], ids[chosen])
  assert (out['mlm_labels'][~chosen] == -100).all()
  np.testing.assert_array_equal(out['input_ids'][~chosen], ids[~chosen])
  # 80 / 10 / 10.
  new = out['input_ids'][chosen]
  masked = np.mean(new == 3)
  kept = np.mean(new == ids[chosen])
  randomised = 1 - masked - kept
  assert (
    0.77 < masked < 0.83 and 0.08 < kept < 0.12 and 0.08 < randomised < 0.12
  )
  assert ((new == 3) | ((new >= 6) & (new < 262))).all()
  assert (
    out['input_ids'].dtype == np.int32
    and out['mlm_weights'].dtype == np.float32
  )


def test_mask_bytes_for_mlm_is_a_function_of_the_rng():
  enc = _random_word_batch(np.random.default_rng(2), 4, 64)
  a = text_lib.mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], 5)
  b = text_lib.mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], 5)
  c = text_lib.mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], 6)
  np.testing.assert_array_equal(a['input_ids'], b['input_ids'])
  assert (a['mlm_weights'] != c['mlm_weights']).any()


@pytest.fixture()
def text_docs(tmp_path):
  for f in range(2):
    _write(
      str(tmp_path / f'docs{f}.txt'),
      ''.join(f'doc {f}-{i} has a few words\n\n' for i in range(15)),
    )
  return f'text:{tmp_path}/docs*.txt'


def test_mlm_pipeline_concatenates_and_crops(text_docs):
  ds, info = text_lib.make_mlm_dataset(
    text_docs,
    'train',
    max_length=128,
    batch_size=4,
    repeat=False,
    docs_per_example=2,
  )
  batches = _all_batches(ds)
  assert info.num_examples == 30 and len(batches) == info.num_batches == 4
  b = batches[0]
  original = np.where(b['mlm_weights'] > 0, b['mlm_labels'], b['input_ids'])
  assert TOK.decode(original[0]).startswith(
    '[CLS]doc 0-0 has a few words\ndoc 0-1 has a few words[SEP]'
  )
  assert (
    b['mlm_weights'].sum() > 0
    and (b['mlm_labels'][b['mlm_weights'] == 0] == -100).all()
  )
  np.testing.assert_array_equal(
    batches[-1]['mask'], [1, 1, 1, 0]
  )  # 15 groups, 4 batches.
  assert (batches[-1]['mlm_weights'][3] == 0).all()
  # A short max_length crops a random window of each group of joined documents.
  ds, _ = text_lib.make_mlm_dataset(
    text_docs,
    'train',
    max_length=20,
    batch_size=5,
    repeat=False,
    docs_per_example=3,
    seed=1,
  )
  b = _take(ds, 1)[0]
  docs = [f'doc {f}-{i} has a few words' for f in range(2) for i in range(15)]
  groups = ['\n'.join(docs[3 * g : 3 * g + 3]) for g in range(5)]
  original = np.where(b['mlm_weights'] > 0, b['mlm_labels'], b['input_ids'])
  assert (b['attention_mask'] == 1).all()
  starts = []
  for row, group, cut in zip(original, groups, b['num_truncated']):
    assert row[0] == 4 and row[-1] == 5
    window = TOK.decode(row[1:-1])
    assert len(window) == 18 and window in group
    assert cut == len(group) - 18
    starts.append(group.index(window))
  assert len(set(starts)) > 1  # Random offsets, not always the start.


def test_mlm_resume_and_shards(text_docs):
  make = lambda start, p=0: text_lib.make_mlm_dataset(
    text_docs,
    'train',
    max_length=32,
    batch_size=2,
    repeat=True,
    docs_per_example=2,
    seed=4,
    start_step=start,
    process_index=p,
    process_count=2,
  )[0]
  full = _take(make(0), 9)  # 36 documents from a shard of 15: crosses epochs.
  resumed = _take(make(5), 4)
  for a, b in zip(full[5:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = _take(make(0, p=1), 1)[0]
  assert (other['input_ids'] != full[0]['input_ids']).any()


# ------------------------------------------------------------------- TFDS
@pytest.fixture()
def mocked_tfds():
  import tensorflow_datasets as tfds

  # mock_data serves random examples from the dataset's code-defined features;
  # it does not mark the builder prepared, so the prepared check is patched.
  with (
    mock.patch.object(
      tfds.core.DatasetBuilder, 'is_prepared', return_value=True
    ),
    tfds.testing.mock_data(num_examples=10),
  ):
    yield tfds


def test_tfds_imdb_and_mrpc_under_mock_data(mocked_tfds):
  ds, info = text_lib.make_text_dataset(
    'tfds:imdb_reviews',
    'train',
    max_length=64,
    batch_size=4,
    repeat=False,
    data_dir='/nonexistent',
  )
  batches = _all_batches(ds)
  assert (
    info.classes == ('neg', 'pos')
    and info.num_examples == 10
    and len(batches) == 3
  )
  raw = list(
    mocked_tfds.load('imdb_reviews', split='train').as_numpy_iterator()
  )
  np.testing.assert_array_equal(
    _real_rows(batches, 'input_ids'),
    [_ids(ex['text'], max_length=64) for ex in raw],
  )
  np.testing.assert_array_equal(
    _real_rows(batches, 'label'), [ex['label'] for ex in raw]
  )

  ds, info = text_lib.make_text_dataset(
    'tfds:glue/mrpc', 'validation', max_length=48, batch_size=4, repeat=False
  )
  batches = _all_batches(ds)
  raw = list(
    mocked_tfds.load('glue/mrpc', split='validation').as_numpy_iterator()
  )
  np.testing.assert_array_equal(
    _real_rows(batches, 'input_ids'),
    [_ids(ex['sentence1'], ex['sentence2'], 48) for ex in raw],
  )
  assert info.metrics == ('f1', 'accuracy') and info.text_fields == (
    'sentence1',
    'sentence2',
  )

  ds, info = text_lib.make_text_dataset(
    'tfds:glue/stsb',
    'train',
    max_length=48,
    batch_size=4,
    repeat=True,
    task='regression',
  )
  batch = _take(ds, 1)[0]
  assert batch['label'].dtype == np.float32 and info.metrics == (
    'pearson',
    'spearman',
  )
  ds, _ = text_lib.make_mlm_dataset(
    'tfds:imdb_reviews', 'train', max_length=32, batch_size=2, repeat=True
  )
  assert _take(ds, 1)[0]['input_ids'].shape == (2, 32)


def test_tfds_not_prepared_names_local_alternative(tmp_path):
  with pytest.raises(
    FileNotFoundError, match=r'imdb_reviews.*offline.*aclimdb:/'
  ):
    text_lib.make_text_dataset(
      'tfds:imdb_reviews',
      'train',
      max_length=16,
      batch_size=2,
      repeat=True,
      data_dir=str(tmp_path),
    )
  with pytest.raises(FileNotFoundError, match=r'glue/mnli.*tsv:/'):
    text_lib.make_text_dataset(
      'tfds:glue/mnli',
      'validation_matched',
      max_length=16,
      batch_size=2,
      repeat=False,
      data_dir=str(tmp_path),
    )
  with pytest.raises(ValueError, match='unknown TFDS dataset'):
    text_lib.make_text_dataset(
      'tfds:no_such_dataset_xyz',
      'train',
      max_length=16,
      batch_size=2,
      repeat=True,
      data_dir=str(tmp_path),
    )
  assert not os.listdir(tmp_path)  # Nothing was downloaded or written.


def test_glue_table_matches_tfds_features():
  import tensorflow_datasets as tfds

  for name, task in text_lib.GLUE_TASKS.items():
    features = tfds.builder(
      task.tfds_name, data_dir='/nonexistent'
    ).info.features
    assert all(f in features for f in task.text_fields), name
    if task.is_regression:
      assert not hasattr(features['label'], 'names') and name == 'stsb'
    else:
      assert tuple(features['label'].names) == task.classes, name
  assert text_lib.GLUE_TASKS['mnli'].eval_splits == (
    'validation_matched',
    'validation_mismatched',
  )
  assert text_lib.GLUE_TASKS['cola'].metrics == ('matthews_corrcoef',)
  assert text_lib.GLUE_TASKS['qqp'].metrics == ('f1', 'accuracy')


def test_import_does_not_load_tensorflow():
  code = (
    'import sys; import perceiver_io.data.text, perceiver_io.tokenizer; '
    'assert "tensorflow" not in sys.modules, "TF imported"'
  )
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + sys.path
    ),
  )
  subprocess.run([sys.executable, '-c', code], check=True, env=env)
