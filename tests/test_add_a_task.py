"""Adding a task is one module in experiments/tasks/ plus one config.

The walkthrough docs/extending.md quotes, done for real: a new task module
(`has_x.py`: does a string of random letters contain an 'x'?) and its
config are written to a temporary directory whose `tasks/` folder is put on
`experiments.tasks`' search path (as if the file were in experiments/tasks/,
without touching the source tree); then the run trains, evaluates and
predicts through the unchanged train loop, evaluate and predict.
"""

import sys

import pytest

from configs import imdb_bytes
from experiments import cli
from experiments import eval_lib
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib

TASK_MODULE = '''\
"""Does a string of random letters contain an 'x'? (a toy task)"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.tasks import base
from perceiver_io import tokenizer


class Task(base.Task):
  """Generated strings; batch `step` is a pure function of the step."""

  def encode(self, texts):
    ids = tokenizer.ByteTokenizer().batch_encode(
        texts, None, max_length=self.config.data.max_length,
        padding='max_length', truncation=True)
    return {'input_ids': np.asarray(ids['input_ids'], np.int32),
            'attention_mask': np.asarray(ids['attention_mask'], np.int32)}

  def strings(self, key, count):
    rng = np.random.default_rng([self.config.seed, *key])
    texts = [''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), 8))
             for _ in range(count)]
    return {**self.encode(texts),
            'label': np.array(['x' in t for t in texts], np.int32),
            'weight': np.ones(count, np.float32)}

  def data_info(self):
    return ({'num_examples': 1024, 'label_names': ['no x', 'x']},
            {'num_examples': 32})

  def example_batch(self):
    return self.strings((0, 0), 1)

  def train_stream(self, start_step):
    rows = self.config.batch_size // jax.process_count()
    return types.SimpleNamespace(batch=lambda step: self.strings(
        (1, step, jax.process_index()), rows))

  def eval_data(self):
    rows = self.config.eval_batch_size // jax.process_count()
    return [self.strings((2, i, jax.process_index()), rows)
            for i in range(32 // self.config.eval_batch_size)], 32

  def loss_fn(self, outputs, batch):
    loss = optax.softmax_cross_entropy_with_integer_labels(
        outputs.astype(jnp.float32), batch['label'])
    return loss * batch['weight'], batch['weight']

  def eval_outputs(self, outputs, batch):
    correct = (jnp.argmax(outputs, -1) == batch['label']) * batch['weight']
    return {**super().eval_outputs(outputs, batch), 'correct': correct}

  def summarize(self, gathered):
    accuracy = gathered['correct'].sum() / gathered['weight'].sum()
    return {**super().summarize(gathered), 'accuracy': float(accuracy)}

  def predict_lines(self, model, variables, inputs, **options):
    logits = self.predict(model, variables, self.encode(inputs))
    probs = np.asarray(jax.nn.softmax(logits))
    return [f'{text}: p(x) = {p[1]:.2f}' for text, p in zip(inputs, probs)]
'''

CONFIG_MODULE = '''\
"""Toy: does a string contain an 'x'? (experiments/tasks/has_x.py)

  python -m experiments.train --config=configs/has_x.py --workdir=/tmp/has_x
"""

from configs import common


def get_config(arg: str = ''):
  del arg
  c = common.base_config()
  c.task = 'has_x'
  c.model.preset = 'tiny_text_classification'
  c.data.source = 'generated'
  c.data.max_length = 16
  c.data.num_classes = 2
  c.batch_size = c.eval_batch_size = 8
  c.num_train_steps = 2
  c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
  c.progress_bar = False
  c.disable_most_optimizations = True
  return c
'''


@pytest.fixture
def new_task(tmp_path, monkeypatch):
  """experiments/tasks/has_x.py and configs/has_x.py, in tmp_path."""
  (tmp_path / 'tasks').mkdir()
  (tmp_path / 'tasks' / 'has_x.py').write_text(TASK_MODULE)
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'has_x.py').write_text(CONFIG_MODULE)
  monkeypatch.setattr(
    tasks, '__path__', [*tasks.__path__, str(tmp_path / 'tasks')]
  )
  monkeypatch.setattr(sys, 'path', list(sys.path))  # Restored afterwards.
  for name in ('experiments.tasks.has_x', 'has_x'):
    monkeypatch.delitem(sys.modules, name, raising=False)
  return tmp_path


@pytest.mark.slow
def test_a_new_task_module_and_config_train_evaluate_and_predict(new_task):
  # The launcher's own config loading (--config=configs/has_x.py).
  config = cli.load_config_file(str(new_task / 'configs' / 'has_x.py'))
  assert 'has_x' in tasks.names()
  workdir = str(new_task / 'run')

  result = train_lib.train_and_evaluate(config, workdir)
  assert result['step'] == 2
  assert result['eval']['num_examples'] == 32
  assert 0.0 <= result['eval']['accuracy'] <= 1.0  # The best_metric.

  evaluated = eval_lib.evaluate_workdir(workdir)
  assert evaluated['step'] == 2
  assert evaluated['metrics'] == pytest.approx(result['eval'])

  lines = predict_lib.predict_lines(workdir, ['abcxyz', 'abc'])
  assert lines[0] == f'# {workdir} (checkpoint step 2)'
  assert [line.split(':')[0] for line in lines[1:]] == ['abcxyz', 'abc']
  assert all(' p(x) = ' in line for line in lines[1:])


def test_a_task_outside_the_package_is_named_by_its_import_path(new_task):
  sys.path.insert(0, str(new_task / 'tasks'))
  assert tasks.task_class('has_x:Task').__module__ == 'has_x'
  assert tasks.task_class('has_x').__module__ == 'experiments.tasks.has_x'


def test_an_unknown_task_lists_the_task_modules(new_task):
  del new_task
  with pytest.raises(
    ValueError,
    match=r"unknown config.task 'has_y'; the "
    r'task modules in experiments/tasks/ are classification, '
    r'has_x, image_classification, mlm, multimodal_autoencoding, '
    r'optical_flow, perceiver_ar, '
    r'regression',
  ):
    tasks.task_class('has_y')
  with pytest.raises(
    ValueError,
    match='defines no class Tsk derived from experiments.tasks.base.Task',
  ):
    tasks.task_class('experiments.tasks.mlm:Tsk')


def test_every_task_names_its_predict_example():
  args = {name: tasks.task_class(name).predict_args for name in tasks.names()}
  assert args['image_classification'] == 'IMAGE.jpg'
  assert '--prompt=' in args['perceiver_ar']
  assert '[MASK]' in args['mlm']
  assert len(set(args.values())) >= 5
  text = tasks.task_class('classification')(imdb_bytes.get_config('tiny'))
  assert '--pair=' in text.predict_example({'text_fields': ['a', 'b']})
  assert text.predict_example({}) == text.predict_args
