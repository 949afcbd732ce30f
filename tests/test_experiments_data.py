"""The runner's in-memory data order, checked against its definition: each
epoch a permutation and every batch a function of its step, process shards
that concatenate to the global batch, zero-weight eval padding, the digits
split, and the message for an unknown data source.
"""

import numpy as np
import pytest

from configs import quickstart
from experiments import input_pipeline


def test_batches_cover_each_epoch_once_and_are_step_indexed():
  n, b = 10, 4
  stream = np.concatenate(
    [input_pipeline.batch_indices(s, b, n, seed=3) for s in range(5)]
  )  # 20 rows = 2 epochs.
  assert sorted(stream[:10]) == list(range(10))
  assert sorted(stream[10:20]) == list(range(10))
  assert not np.array_equal(stream[:10], stream[10:20])
  np.testing.assert_array_equal(
    input_pipeline.batch_indices(3, b, n, 3), stream[12:16]
  )
  assert not np.array_equal(
    input_pipeline.batch_indices(0, b, n, 4), stream[:4]
  )


def test_process_shards_concatenate_to_the_global_batch():
  table = {'x': np.arange(30) * 10, 'label': np.arange(30)}
  full = input_pipeline.train_batch(table, 7, 6, 0)
  halves = [input_pipeline.train_batch(table, 7, 6, 0, i, 2) for i in (0, 1)]
  np.testing.assert_array_equal(
    np.concatenate([h['x'] for h in halves]), full['x']
  )
  with pytest.raises(ValueError, match='divisible'):
    input_pipeline.train_batch(table, 0, 5, 0, 0, 2)


def test_eval_batches_pad_with_zero_weight():
  table = {'x': np.arange(5), 'label': np.arange(5)}
  batches = list(input_pipeline.eval_batches(table, 4))
  assert [list(b['weight']) for b in batches] == [[1, 1, 1, 1], [1, 0, 0, 0]]
  assert list(batches[1]['x'][:1]) == [4]


def test_digits_split_is_the_libraries_stratified_split():
  train, info = input_pipeline.load_digits_table('train')
  test, _ = input_pipeline.load_digits_table('test')
  assert train['image'].shape == (1437, 8, 8, 1)
  assert test['image'].shape == (360, 8, 8, 1)
  assert info['num_classes'] == 10
  assert 0.0 <= train['image'].min() and train['image'].max() <= 1.0
  # Stratified: every class in the test split, 36 +- 1 each.
  counts = np.bincount(test['label'], minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37
  # The same examples, in the same order, as the library's tf.data source.
  from perceiver_io.data import image as image_data  # pylint: disable=g-import-not-at-top

  stream, _ = image_data.make_image_dataset(
    'digits', 'test', batch_size=360, train=False, image_size=8
  )
  batch = next(iter(stream))
  np.testing.assert_array_equal(batch['label'], test['label'])
  grey = batch['image'][..., 0]  # Normalised differently: compare shapes.
  corr = np.corrcoef(grey.reshape(-1), test['image'][..., 0].reshape(-1))[0, 1]
  assert corr > 0.99


def test_unknown_data_source_lists_the_valid_ones():
  config = quickstart.get_config('tiny')
  config.unlock()
  config.data.source = 'digitz'
  with pytest.raises(ValueError, match=r"\['digits'\].*csv:/data/train.csv"):
    input_pipeline.load_table(config, 'train')
