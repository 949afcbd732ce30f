"""`max_eval_examples` scores a seeded subset that represents the split.

The first N rows of a label-sorted file (IMDB's test.csv: all negative
reviews first) are one class, and accuracy on them said 1.0000.
"""

import logging

import numpy as np
import pytest

from configs import imdb_bytes
from experiments import input_pipeline
from experiments import tasks
from tests.helpers import override_config


def _sorted_table(n=100):
  """A label-sorted table: the first half class 0, the second class 1."""
  return {'x': np.arange(n) * 10, 'label': (np.arange(n) >= n // 2) * 1}


def test_the_whole_split_keeps_its_order():
  np.testing.assert_array_equal(input_pipeline.eval_rows(7, -1), np.arange(7))
  np.testing.assert_array_equal(input_pipeline.eval_rows(7, 7), np.arange(7))
  np.testing.assert_array_equal(input_pipeline.eval_rows(7, 50), np.arange(7))
  table = _sorted_table(10)
  batches = list(input_pipeline.eval_batches(table, 4))
  xs = np.concatenate([b['x'][b['weight'] > 0] for b in batches])
  np.testing.assert_array_equal(xs, table['x'])


def test_a_subset_is_seeded_spread_and_the_same_every_time():
  rows = input_pipeline.eval_rows(1000, 20)
  assert len(rows) == 20 == len(set(rows.tolist()))
  assert list(rows) == sorted(rows)  # Table order, for readable outputs.
  np.testing.assert_array_equal(rows, input_pipeline.eval_rows(1000, 20))
  assert rows.max() >= 500  # Not the first rows.
  # A label-sorted table gives both classes, about half each.
  labels = _sorted_table(1000)['label'][input_pipeline.eval_rows(1000, 200)]
  assert 60 <= labels.sum() <= 140


def test_eval_batches_score_the_subset_once_each():
  table = _sorted_table(100)
  batches = list(input_pipeline.eval_batches(table, 8, max_examples=20))
  got = np.concatenate([b['x'][b['weight'] > 0] for b in batches])
  np.testing.assert_array_equal(
    got, table['x'][input_pipeline.eval_rows(100, 20)]
  )
  assert sum(b['weight'].sum() for b in batches) == 20
  assert len(set(table['label'][got // 10].tolist())) == 2


@pytest.mark.parametrize('max_examples', [-1, 20])
def test_process_shards_join_to_the_single_process_batches(max_examples):
  table = _sorted_table(50)
  one = list(input_pipeline.eval_batches(table, 8, 0, 1, max_examples))
  two = [
    list(input_pipeline.eval_batches(table, 8, i, 2, max_examples))
    for i in (0, 1)
  ]
  assert len(two[0]) == len(two[1]) == len(one)
  for whole, first, second in zip(one, *two):
    for key in ('x', 'weight'):
      np.testing.assert_array_equal(
        np.concatenate([first[key], second[key]]), whole[key]
      )


def test_a_single_class_warns(caplog):
  with caplog.at_level(logging.WARNING):
    assert input_pipeline.warn_if_single_class(
      np.zeros(5, int), ['neg', 'pos'], 'reviews [test]'
    )
  assert 'reviews [test]' in caplog.text and 'label neg' in caplog.text
  assert 'single class' in caplog.text
  caplog.clear()
  assert not input_pipeline.warn_if_single_class(
    np.array([0, 1, 0]), ['neg', 'pos'], 'x'
  )
  assert not caplog.text


def _write_sorted_csv(tmp_path, n=40):
  rows = ['text,label']
  rows += [f'review number {i},{int(i >= n // 2)}' for i in range(n)]
  path = tmp_path / 'test.csv'
  path.write_text('\n'.join(rows) + '\n')
  (tmp_path / 'train.csv').write_text('\n'.join(rows) + '\n')
  return f'csv:{tmp_path}/{{split}}.csv'


def _task(source='csv:/data/{split}.csv', **fields):
  fields = {'data__eval_split': 'test', **fields}
  config = override_config(
    imdb_bytes.get_config('tiny'), data__source=source, **fields
  )
  return tasks.get(config)


@pytest.fixture
def sorted_table(monkeypatch):
  """The classification task reads a label-sorted table of 40 rows."""
  table = {
    'input_ids': np.zeros((40, 64), np.int32),
    'attention_mask': np.ones((40, 64), np.int32),
    'label': (np.arange(40) >= 20).astype(np.int32),
  }
  info = input_pipeline.TableInfo(
    label_names=['neg', 'pos'], num_examples=40, num_examples_per_process=[40]
  )
  monkeypatch.setattr(
    input_pipeline,
    'load_table',
    lambda config, split, kind, *_, **__: (
      table,
      info,
    ),
  )
  return table


def _eval_labels(task):
  batches, expected = task.eval_data()
  batches = list(batches)
  labels = np.concatenate([b['label'][b['weight'] > 0] for b in batches])
  return labels, expected


def test_a_label_sorted_table_gives_both_classes(sorted_table, caplog):
  with caplog.at_level(logging.WARNING):
    labels, expected = _eval_labels(_task(max_eval_examples=8))
  assert expected == 8 == len(labels)
  assert set(labels.tolist()) == {0, 1}
  assert 'single class' not in caplog.text


def test_an_eval_set_of_one_class_warns(sorted_table, caplog):
  with caplog.at_level(logging.WARNING):
    labels, _ = _eval_labels(_task(max_eval_examples=-1))
  assert len(labels) == 40 and not caplog.text
  sorted_table['label'][:] = 1
  with caplog.at_level(logging.WARNING):
    _eval_labels(_task(max_eval_examples=-1))
  assert 'single class' in caplog.text and 'label pos' in caplog.text
  assert 'csv:/data/{split}.csv [test]' in caplog.text


def test_eval_labels_outside_the_models_classes_are_one_error(sorted_table):
  task = _task()
  task.num_classes = 1  # A model trained on one class.
  with pytest.raises(ValueError, match=r"label 1, outside 0..0 of the model's"):
    task.eval_data()


@pytest.mark.slow
def test_a_label_sorted_csv_file_gives_both_classes(tmp_path, caplog):
  source = _write_sorted_csv(tmp_path)
  with caplog.at_level(logging.WARNING):
    labels, expected = _eval_labels(_task(source, max_eval_examples=8))
    _eval_labels(_task(source, data__eval_split='test[:10]'))
  assert expected == 8 and set(labels.tolist()) == {0, 1}
  assert caplog.text.count('single class') == 1
  assert 'test[:10]' in caplog.text


# ---------------------------------------------------------------------------
# Image streams (perceiver_io.data.image): a folder of class folders lists
# its images class by class.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def sorted_folder(tmp_path_factory):
  """Class folders c0..c3 of 6 PNGs each; pixel value 10 * i names image i."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp('sorted')
  for i in range(24):
    folder = root / f'c{i // 6}'
    folder.mkdir(exist_ok=True)
    pixels = np.full((8, 8, 3), 10 * i, np.uint8)
    Image.fromarray(pixels).save(folder / f'{i:02d}.png')
  return str(root)


def _image_stream(root, max_examples, process_index=0, process_count=1):
  from perceiver_io.data import image as image_data  # pylint: disable=g-import-not-at-top

  iterator, info = image_data.make_image_dataset(
    root,
    'validation',
    batch_size=4,
    train=False,
    image_size=8,
    geometry='resize',
    process_index=process_index,
    process_count=process_count,
    max_examples=max_examples,
  )
  batches = list(iterator)
  mask = np.concatenate([b['mask'] for b in batches]) > 0
  labels = np.concatenate([b['label'] for b in batches])[mask]
  return labels, info, len(batches)


@pytest.mark.slow
def test_an_image_folder_subset_spans_its_classes(sorted_folder):
  labels, info, _ = _image_stream(sorted_folder, 8)
  assert info['num_examples'] == 8 == len(labels)
  assert len(set(labels.tolist())) >= 3  # The first 8 are classes 0 and 1.
  assert list(labels) == sorted(labels)  # Source order.
  again, _, _ = _image_stream(sorted_folder, 8)
  np.testing.assert_array_equal(again, labels)
  whole, info, _ = _image_stream(sorted_folder, -1)
  assert info['num_examples'] == 24
  np.testing.assert_array_equal(whole, np.arange(24) // 6)
  # Two processes: the same subset, split between them, as many batches.
  halves = [_image_stream(sorted_folder, 8, i, 2) for i in (0, 1)]
  assert halves[0][2] == halves[1][2]
  joined = np.concatenate([h[0] for h in halves])
  assert sorted(joined.tolist()) == labels.tolist()
