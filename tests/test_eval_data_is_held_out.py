"""Evaluation never silently reads the training data.

A local source without per-split files used to hand every split the same
rows (a csv without {split}, a text glob, an image folder without split
folders), so the reported test accuracy was training accuracy.
"""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from configs import imagenet
from configs import imdb_bytes
from configs import mlm_bytes
from experiments import input_pipeline
from experiments import train_lib
from perceiver_io.data import image as image_data
from tests.helpers import override_config as _override


@pytest.mark.parametrize(
  'source', ['csv:/data/reviews.csv', 'text:/data/*.txt']
)
def test_split_names_a_single_file_would_ignore_are_refused(source):
  config = _override(
    imdb_bytes.get_config('tiny'),
    data__source=source,
    data__train_split='train',
    data__eval_split='test',
  )
  with pytest.raises(
    ValueError,
    match=r'no \{split\} in its path.*'
    r"\['test', 'train'\].*training data.*"
    r"train_split='train\[:90%\]'",
  ):
    input_pipeline.check_eval_is_not_train(config)


def test_mlm_default_eval_split_on_a_glob_is_refused():
  config = _override(mlm_bytes.get_config(), data__source='text:/data/*.txt')
  with pytest.raises(ValueError, match='validation.*read the same rows'):
    input_pipeline.check_eval_is_not_train(config)


def test_split_files_and_slices_of_one_file_pass(caplog):
  ok = [
    dict(data__source='csv:/data/{split}.csv'),
    dict(data__source='tfds:imdb_reviews'),
    dict(
      data__source='csv:/data/all.csv',
      data__train_split='all[:90%]',
      data__eval_split='all[90%:]',
    ),
  ]
  for fields in ok:
    config = _override(imdb_bytes.get_config('tiny'), **fields)
    with caplog.at_level(logging.WARNING):
      input_pipeline.check_eval_is_not_train(config)
  assert 'overlaps' not in caplog.text
  overlapping = _override(
    imdb_bytes.get_config('tiny'),
    data__source='csv:/data/all.csv',
    data__train_split='all',
    data__eval_split='all[:50]',
  )
  with caplog.at_level(logging.WARNING):
    input_pipeline.check_eval_is_not_train(overlapping)
  assert 'overlaps training split' in caplog.text


def _image_folder(root, classes=('cat', 'dog'), per_class=2):
  for name in classes:
    os.makedirs(root / name, exist_ok=True)
    for i in range(per_class):
      Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(
        root / name / f'{i}.jpg'
      )


def test_image_split_folders_resolve_with_aliases_or_fail(tmp_path):
  _image_folder(tmp_path / 'train')
  _image_folder(tmp_path / 'val')
  assert image_data.split_folder(str(tmp_path), 'train') == str(
    tmp_path / 'train'
  )
  assert image_data.split_folder(str(tmp_path), 'validation') == str(
    tmp_path / 'val'
  )
  # A split with no folder is refused (it used to read the root, taking
  # train/ and val/ as two classes, and failed after training).
  with pytest.raises(
    ValueError,
    match=r"split folders \['train', 'val'\] "
    r"but none for split 'test'.*eval_split=val",
  ):
    image_data.split_folder(str(tmp_path), 'test')
  flat = tmp_path / 'flat'
  _image_folder(flat)
  assert image_data.split_folder(str(flat), 'validation') == str(flat)


def test_image_training_on_its_eval_folder_is_refused(tmp_path):
  _image_folder(
    tmp_path / 'flat', classes=tuple(f'c{i}' for i in range(10)), per_class=1
  )
  config = _override(
    imagenet.get_config('fourier,tiny'), data__source=f'dir:{tmp_path / "flat"}'
  )
  with pytest.raises(
    ValueError, match='would both read every image.*eval_source'
  ):
    train_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
