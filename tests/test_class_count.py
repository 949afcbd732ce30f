"""The class count has one source in every task: the model's head.

`imagenet.py:tiny` with 10-class data and `--config.data.num_classes=20`
failed with `TypeError: mul got incompatible shapes (8, 10), (8, 20)`: the
labels were one-hot to the preset's count, the head sized from the data
setting.
"""

import logging

import jax
import numpy as np
import pytest

from configs import imagenet
from configs import quickstart
from experiments import models
from experiments import tasks
from tests.helpers import override_config


@pytest.mark.slow
def test_image_targets_match_the_head_sized_from_the_data_setting():
  config = override_config(
    imagenet.get_config('tiny'),
    data__source='synthetic:10:64',
    data__num_classes=20,
  )
  task = tasks.get(config)
  assert task.num_classes == 20 == task.num_outputs()
  _, description = models.build(config, task.num_outputs())
  assert description['perceiver']['decoder']['num_classes'] == 20
  batch = {
    'image': np.zeros((8, 16, 16, 3), np.float32),
    'label': np.arange(8, dtype=np.int32),
    'weight': np.ones(8, np.float32),
  }
  out = task.train_transform(batch, jax.random.PRNGKey(0))
  assert out['targets'].shape == (8, 20)


@pytest.mark.slow
def test_more_data_classes_than_the_head_is_one_error():
  config = override_config(
    imagenet.get_config('tiny'),
    data__source='synthetic:10:64',
    data__num_classes=5,
  )
  with pytest.raises(
    ValueError,
    match=r'synthetic:10:64 has 10 classes but the model predicts 5; '
    r'set config.data.num_classes',
  ):
    tasks.get(config).data_info()


def test_a_trained_models_class_count_wins_over_the_config():
  trained = override_config(quickstart.get_config('tiny'), data__num_classes=10)
  model_config = models.model_config(trained, 10)
  config = override_config(quickstart.get_config('tiny'), data__num_classes=5)
  task = tasks.get(config, model_config)
  assert task.num_classes == 10
  labels = {'label': np.array([0, 9])}
  task.check_labels(None, labels)  # Fits the model's ten classes.
  with pytest.raises(ValueError, match=r'label 10, outside 0..9 of the model'):
    task.check_labels(None, {'label': np.array([10])})


def test_image_evaluation_of_one_class_warns(caplog):
  task = tasks.get(imagenet.get_config('tiny'))
  gathered = {
    'top1': np.array([1.0, 1.0, 1.0, 0.0]),
    'top5': np.array([1.0, 1.0, 1.0, 0.0]),
    'loss': np.zeros(4),
    'weight': np.array([1.0, 1.0, 1.0, 0.0]),
    'label': np.array([3, 3, 3, 0]),  # The padding row does not count.
  }
  with caplog.at_level(logging.WARNING):
    metrics = task.summarize(gathered)
  assert metrics['top1'] == 1.0 and metrics['num_examples'] == 3
  assert 'all 3 evaluated examples have label 3' in caplog.text
  caplog.clear()
  gathered['label'] = np.array([3, 4, 3, 0])
  task.summarize(gathered)
  assert 'single class' not in caplog.text
