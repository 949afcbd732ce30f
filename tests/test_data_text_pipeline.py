"""The text pipeline's batch order: the same seed gives the same batches,
training epochs are permutations, process shards are disjoint and complete,
a resumed stream gives the same batches, and eval padding is masked.

Expected values are written by hand or come from the HF-verified tokenizer
applied to the hand-written text, never from the pipeline itself.
"""

import numpy as np
import pytest

from perceiver_io.data import text as text_lib
from tests.text_data_helpers import all_batches as _all_batches
from tests.text_data_helpers import ids as _ids
from tests.text_data_helpers import real_rows as _real_rows
from tests.text_data_helpers import take as _take
from tests.text_data_helpers import write as _write


@pytest.fixture()
def numbered_tsv(tmp_path):
  """A TSV of 23 rows 'example <i>' with label i % 3."""
  lines = ['sentence\tlabel'] + [f'example {i}\t{i % 3}' for i in range(23)]
  return _write(str(tmp_path / 'data.tsv'), '\n'.join(lines) + '\n')


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
