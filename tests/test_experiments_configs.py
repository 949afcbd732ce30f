"""The experiment configs: every config module builds a model consistent with
its task, `attention_impl` reaches the model, and a misspelt field or a
missing config file is one clear error, in-process and on the command line.
"""

import os
import subprocess
import sys

import pytest

from configs import common
from configs import glue_bytes
from configs import imdb_bytes
from configs import mlm_bytes
from configs import quickstart
from experiments import cli
from experiments import models
from experiments import tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_arg_types_and_errors():
  args = common.parse_arg(
    'cola,lr=2e-5,batch=16,tiny', task='', lr=5e-5, batch=32, tiny=False
  )
  assert (args.task, args.lr, args.batch, args.tiny) == ('cola', 2e-5, 16, True)
  with pytest.raises(ValueError, match='valid arguments'):
    common.parse_arg('lrr=1', task='', lr=5e-5)
  with pytest.raises(ValueError, match='must be a int'):
    common.parse_arg('batch=x', batch=32)


@pytest.mark.parametrize(
  'module,arg',
  [
    (quickstart, ''),
    (quickstart, 'tiny'),
    (imdb_bytes, ''),
    (imdb_bytes, 'full'),
    (imdb_bytes, 'scratch'),
    (imdb_bytes, 'tiny'),
    (mlm_bytes, ''),
    (mlm_bytes, 'tiny'),
  ]
  + [(glue_bytes, task) for task in glue_bytes.TASKS]
  + [(glue_bytes, f'{task},tiny') for task in glue_bytes.TASKS],
)
def test_every_config_builds_a_consistent_model(module, arg):
  config = module.get_config(arg)
  assert module.__doc__ and 'python -m experiments.train' in module.__doc__
  # Same field set as the base config, so overrides mean the same everywhere.
  assert set(config.keys()) == set(common.base_config().keys())
  model, description = models.build(config, tasks.get(config).num_outputs())
  cfg = description['perceiver']
  if config.task == 'mlm':
    assert cfg['decoder']['output_index_dims'] == [config.data.max_length]
  elif config.data.source != 'digits':
    assert config.data.max_length <= cfg['preprocessor']['max_seq_len']
  if module is glue_bytes:
    assert config.optimizer.name == 'lamb'
    assert config.optimizer.weight_decay == 0.01
    assert config.schedule.warmup_steps in (200, 1)
    assert config.model.head == 'tanh_mlp'
    assert config.task == (
      'regression' if config.glue_task == 'stsb' else 'classification'
    )
  assert model is not None


def test_attention_impl_reaches_the_model_and_typos_are_one_error():
  # A GPU run chooses cuDNN attention from the command line
  # (--config.model.attention_impl=cudnn); the stored model config keeps it.
  config = quickstart.get_config('tiny')
  config.model.attention_impl = 'cudnn'
  _, description = models.build(config, 10)
  assert description['perceiver']['attention_impl'] == 'cudnn'
  assert (
    models.model_config(quickstart.get_config('tiny'))['attention_impl']
    == 'auto'
  )
  config.model.attention_impl = 'cuddn'
  with pytest.raises(ValueError, match="attention_impl='cuddn'.*cudnn"):
    models.build(config, 10)


def test_glue_without_task_names_the_tasks():
  with pytest.raises(ValueError, match='cola, sst2, mrpc'):
    glue_bytes.get_config('')


def test_misspelt_field_names_closest_valid_ones():
  config = quickstart.get_config('tiny')
  message = cli.field_error(config, 'optimizer.lerning_rate')
  assert 'optimizer.learning_rate' in message
  message = cli.field_error(config, 'optimiser.learning_rate')
  assert 'optimizer' in message
  assert cli.field_error(config, 'optimizer.learning_rate') is None


def test_misspelt_override_on_the_command_line_exits_with_names(subprocess_env):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/quickstart.py:tiny',
      '--workdir=/nonexistent/x',
      '--config.optimizer.lerning_rate=0.1',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert 'optimizer.learning_rate' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists('/nonexistent/x')


def test_missing_config_file_is_one_clear_error(subprocess_env):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/nope.py',
      '--workdir=/tmp/unused',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert "config file 'configs/nope.py' not found" in proc.stderr
