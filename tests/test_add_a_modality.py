"""Adding a modality: a preprocessor, a preset that uses it, a task, a config.

The "Add a modality" walkthrough of docs/extending.md, done for real: multichannel time
series (sensor readings, [B, T, F] floats) become Perceiver inputs through a
new preprocessor (a per-step linear embedding plus 1-D Fourier positions),
registered under a new type name; a preset swaps it into the ImageNet
model's encoder and classification decoder; a task module generates series
whose label is their frequency band, and a config runs it. The library, the
train loop, evaluate and predict are unchanged; the two new modules live in
a temporary directory (the task module in `experiments.tasks`' search path,
as if it were in experiments/tasks/).
"""

import sys

import numpy as np
import pytest

from experiments import cli
from experiments import eval_lib
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib
from perceiver_io import postprocessors
from perceiver_io import preprocessors
from perceiver_io import presets

MODALITY_MODULE = '''\
"""Multichannel time series [B, T, F] as Perceiver inputs."""

from typing import Any, Dict, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_io import preprocessors
from perceiver_io import presets


@preprocessors.register('series')
class SeriesPreprocessor(nn.Module):
  """Each time step's F readings -> `num_channels` features, + positions."""
  num_channels: int = 16
  position_encoding: Optional[Dict[str, Any]] = None
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @classmethod
  def example_input(cls, config, batch_size):
    length = config['position_encoding']['max_resolution'][0]
    return np.zeros((batch_size, length, 2), np.float32)

  @nn.compact
  def __call__(self, x, deterministic=True):
    x = nn.Dense(self.num_channels, dtype=self.dtype,
                 param_dtype=self.param_dtype, name='embed')(x)
    return preprocessors.network_inputs(
        self, x, self.position_encoding, project_pos_dim=-1,
        concat_or_add_pos='concat', dtype=self.dtype)


@presets.register('series_classification')
def series_classification(num_classes=2, length=32, num_bands=8, **encoder):
  """The ImageNet model's latents and classifier over a series."""
  config = presets.get_config('tiny_imagenet_fourier',
                              num_classes=num_classes, **encoder)
  config['preprocessor'] = {
      'type': 'series', 'num_channels': 16,
      'position_encoding': {'type': 'fourier', 'num_bands': num_bands,
                            'max_resolution': [length], 'concat_pos': True,
                            'sine_only': False}}
  return config
'''

TASK_MODULE = '''\
"""Which frequency band is a noisy two-channel series in? (a toy task)"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

import series_modality  # Registers the preprocessor and the preset.
from experiments.tasks import base

LENGTH = 32


class Task(base.Task):
  """Generated series; batch `step` is a pure function of the step."""

  def series(self, key, count):
    rng = np.random.default_rng([self.config.seed, *key])
    label = rng.integers(0, 2, count)
    freq = np.where(label == 1, 6.0, 2.0) + rng.uniform(-0.5, 0.5, count)
    t = np.arange(LENGTH) / LENGTH
    wave = np.sin(2 * np.pi * freq[:, None] * t + rng.uniform(0, 6, (count, 1)))
    x = np.stack([wave, rng.normal(0, 0.1, wave.shape)], axis=-1)
    return {'series': x.astype(np.float32), 'label': label.astype(np.int32),
            'weight': np.ones(count, np.float32)}

  def data_info(self):
    return ({'num_examples': 1024, 'label_names': ['low', 'high']},
            {'num_examples': 16})

  def example_batch(self):
    return self.series((0, 0), 1)

  def train_stream(self, start_step):
    rows = self.config.batch_size // jax.process_count()
    return types.SimpleNamespace(batch=lambda step: self.series(
        (1, step, jax.process_index()), rows))

  def eval_data(self):
    rows = self.config.eval_batch_size // jax.process_count()
    return [self.series((2, i, jax.process_index()), rows)
            for i in range(16 // self.config.eval_batch_size)], 16

  def model_inputs(self, batch):
    return batch['series'], {}

  def loss_fn(self, outputs, batch):
    loss = optax.softmax_cross_entropy_with_integer_labels(
        outputs.astype(jnp.float32), batch['label'])
    return loss * batch['weight'], batch['weight']

  def predict_lines(self, model, variables, inputs, **options):
    """Inputs are .npy files of [T, 2] series."""
    batch = {'series': np.stack([np.load(path) for path in inputs])}
    probs = np.asarray(jax.nn.softmax(self.predict(model, variables, batch)))
    return [f'{path}: p(high) = {p[1]:.2f}' for path, p in zip(inputs, probs)]
'''

CONFIG_MODULE = '''\
"""Toy: the frequency band of a time series (experiments/tasks/tone_band.py).

  python -m experiments.train --config=configs/tone_band.py --workdir=/tmp/tb
"""

from configs import common


def get_config(arg: str = ''):
  del arg
  c = common.base_config()
  c.task = 'tone_band'
  c.model.preset = 'series_classification'
  c.data.source = 'generated'
  c.data.num_classes = 2
  c.batch_size = c.eval_batch_size = 8
  c.num_train_steps = 2
  c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
  c.best_metric = ''
  c.progress_bar = False
  c.disable_most_optimizations = True
  return c
'''


@pytest.fixture
def new_modality(tmp_path, monkeypatch):
  """series_modality.py on sys.path, tasks/tone_band.py, configs/."""
  (tmp_path / 'series_modality.py').write_text(MODALITY_MODULE)
  (tmp_path / 'tasks').mkdir()
  (tmp_path / 'tasks' / 'tone_band.py').write_text(TASK_MODULE)
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'tone_band.py').write_text(CONFIG_MODULE)
  monkeypatch.setattr(
    tasks, '__path__', [*tasks.__path__, str(tmp_path / 'tasks')]
  )
  monkeypatch.setattr(sys, 'path', [str(tmp_path), *sys.path])
  # The registries are restored afterwards (the module registers once).
  monkeypatch.setattr(
    preprocessors, 'PREPROCESSORS', dict(preprocessors.PREPROCESSORS)
  )
  monkeypatch.setattr(presets, 'PRESETS', dict(presets.PRESETS))
  for name in ('experiments.tasks.tone_band', 'series_modality'):
    monkeypatch.delitem(sys.modules, name, raising=False)
  return tmp_path


@pytest.mark.slow
def test_a_new_modality_trains_evaluates_and_predicts(new_modality):
  config = cli.load_config_file(str(new_modality / 'configs' / 'tone_band.py'))
  workdir = str(new_modality / 'run')
  result = train_lib.train_and_evaluate(config, workdir)
  assert result['step'] == 2
  assert result['eval']['num_examples'] == 16
  assert np.isfinite(result['eval']['loss'])
  # The new preprocessor is in the model: its embedding and 1-D positions.
  params = result['state']['params']
  assert params['preprocessor']['embed']['kernel'].shape == (2, 16)
  assert 'series' in preprocessors.PREPROCESSORS

  evaluated = eval_lib.evaluate_workdir(workdir)
  assert evaluated['metrics'] == pytest.approx(result['eval'])

  series = new_modality / 'one.npy'
  np.save(series, np.zeros((32, 2), np.float32))
  lines = predict_lib.predict_lines(workdir, [str(series)])
  assert lines[0] == f'# {workdir} (checkpoint step 2)'
  assert lines[1].startswith(f'{series}: p(high) = ')


def test_a_type_registers_once_and_must_be_a_module():
  with pytest.raises(
    ValueError, match="preprocessor type 'text' is already registered"
  ):
    preprocessors.register('text')(type('X', (), {}))
  with pytest.raises(TypeError, match='takes a flax.linen.Module class'):
    preprocessors.register('not_a_module_type')(object)
  assert 'not_a_module_type' not in preprocessors.PREPROCESSORS
  with pytest.raises(ValueError, match="postprocessor type 'audio' is already"):
    postprocessors.register('audio')(type('X', (), {}))
  with pytest.raises(ValueError, match="preset 'imagenet_fourier' is already"):
    presets.register('imagenet_fourier')(lambda: {})
  with pytest.raises(
    ValueError,
    match=r"unknown preprocessor type 'sonar'.*"
    r'perceiver_io.preprocessors.register',
  ):
    preprocessors.build_preprocessor({'type': 'sonar'})
