"""TFDS text sources and GLUE: IMDB and MRPC under TFDS mock data, the
local alternative named when a dataset is not prepared, the GLUE table
against TFDS's features, and no TensorFlow on import.

Expected values are written by hand or come from the HF-verified tokenizer
applied to the hand-written text, never from the pipeline itself.
"""

import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from perceiver_io.data import text as text_lib
from tests.text_data_helpers import all_batches as _all_batches
from tests.text_data_helpers import ids as _ids
from tests.text_data_helpers import real_rows as _real_rows
from tests.text_data_helpers import take as _take


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
