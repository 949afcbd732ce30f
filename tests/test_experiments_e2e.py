"""One-step-scale end-to-end runs (train, evaluate, predict) of every config's
tiny variant, on generated local files, plus bad-input handling.

Runs happen in this process (no subprocess start-up); the JAX option
`jax_disable_most_optimizations` that the tiny configs turn on is restored
after each test so other test files compile normally.
"""

import csv
import glob
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import glue_bytes
from configs import imdb_bytes
from configs import mlm_bytes
from configs import quickstart
from experiments import eval_lib
from experiments.workdir import init_from as init_from_lib
from experiments import input_pipeline
from experiments import models
from experiments import predict_lib
from experiments import sharding
from experiments import steps
from experiments import tasks
from experiments import train_lib
from experiments import workdir as workdir_lib
from experiments.tasks import base
from perceiver_io import checkpoints as ckpt_lib
from tests.helpers import override_config as _override

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSITIVE = ['great', 'wonderful', 'loved', 'superb', 'brilliant']
NEGATIVE = ['awful', 'boring', 'hated', 'terrible', 'dull']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """Small generated CSV / TSV / text files in the formats users bring."""
  root = tmp_path_factory.mktemp('data')
  rng = np.random.default_rng(0)
  for split, n in (('train', 24), ('test', 10)):
    with open(root / f'{split}.csv', 'w', newline='', encoding='utf-8') as f:
      writer = csv.writer(f)
      writer.writerow(['id', 'text', 'label'])
      for i in range(n):
        label = i % 2
        words = rng.choice(POSITIVE if label else NEGATIVE, 3)
        writer.writerow(
          [i, f'The film was {", ".join(words)} "really".', label]
        )
    with open(root / f'{split}.tsv', 'w', encoding='utf-8') as f:
      f.write('sentence1\tsentence2\tlabel\n')
      for i in range(n):
        f.write(
          f'A man plays {i}.\tSomeone plays {i % 3}.\t{(i % 6) * 0.8:.1f}\n'
        )
  with open(root / 'corpus.txt', 'w', encoding='utf-8') as f:
    for _ in range(20):
      f.write(
        ' '.join(rng.choice(POSITIVE + NEGATIVE + ['the', 'film'], 10)) + '\n'
      )
  with open(root / 'badlabel.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['text', 'label'])
    writer.writerows([['fine', 0], ['good', 1], ['odd', 5], ['ok', 0]])
  return root


@pytest.fixture(scope='module')
def quickstart_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('quickstart'))
  config = _override(quickstart.get_config('tiny'), eval_every_steps=1)
  previous = jax.config.read('jax_disable_most_optimizations')
  steps.TRACE_COUNTS.clear()
  result = train_lib.train_and_evaluate(config, workdir)
  counts = dict(steps.TRACE_COUNTS)
  jax.config.update('jax_disable_most_optimizations', previous)
  return workdir, config, result, counts


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_quickstart_tiny_writes_a_complete_workdir(quickstart_run):
  workdir, config, result, counts = quickstart_run
  assert result['step'] == 3
  # The step compiled once for 3 steps; the eval step once for 3 evals.
  assert counts['train_step'] == 1
  assert counts['eval_step'] == 1
  for name in ('config.json', 'model.json', 'metrics.jsonl'):
    assert os.path.exists(os.path.join(workdir, name)), name
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['model']['preset'] == 'imagenet_fourier'
  assert glob.glob(os.path.join(workdir, 'tb', 'events.out.tfevents.*'))
  records = _read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train = [r for r in records if 'train_loss' in r]
  evals = [r for r in records if 'eval_accuracy' in r]
  assert [r['step'] for r in train] == [1, 2, 3]
  assert [r['step'] for r in evals] == [1, 2, 3]
  assert all(np.isfinite(r['train_loss']) for r in train)
  # Speed is reported from the second step on (the first one compiles).
  assert 'examples_per_sec' not in train[0]
  assert all(r['examples_per_sec'] > 0 for r in train[1:])
  assert evals[-1]['eval_num_examples'] == 16
  steps = sorted(
    int(s)
    for s in os.listdir(os.path.join(workdir, 'checkpoints'))
    if s.isdigit()
  )
  # Latest 2 kept, plus the best by eval accuracy (ties: the later step).
  accuracy = {r['step']: r['eval_accuracy'] for r in evals}
  best = max(accuracy, key=lambda s: (accuracy[s], s))
  assert steps == sorted({2, 3, best})
  ckpt = workdir_lib.open_checkpoints(workdir, keep=100, best_metric='accuracy')
  try:
    assert ckpt.best_step() == best
    assert workdir_lib.choose_step(ckpt, 'best') == best
    assert workdir_lib.choose_step(ckpt, 'latest') == 3
  finally:
    ckpt.close()


@pytest.mark.slow
def test_quickstart_tiny_evaluate_and_predict(quickstart_run, tmp_path):
  workdir, _, result, _ = quickstart_run
  evaluated = eval_lib.evaluate_workdir(workdir)
  assert evaluated['step'] == 3
  for key in ('loss', 'accuracy'):
    assert evaluated['metrics'][key] == pytest.approx(
      result['eval'][key], rel=1e-5
    )
  last = _read_jsonl(os.path.join(workdir, 'metrics.jsonl'))[-1]
  assert last['checkpoint'] == 'latest' and last['step'] == 3
  lines = predict_lib.predict_lines(workdir, [], digits='0:3')
  labelled = [l for l in lines if '(p=' in l]
  assert len(labelled) == 3 and all('[true: ' in l for l in labelled)
  # An image file (dark digit on white paper, 32x32) goes through the same
  # model at 8x8.
  from PIL import Image  # pylint: disable=g-import-not-at-top

  table, _ = input_pipeline.load_digits_table('test')
  img = Image.fromarray(
    (255 - table['image'][0, ..., 0] * 255).astype(np.uint8)
  ).resize((32, 32))
  path = str(tmp_path / 'digit.png')
  img.save(path)
  lines = predict_lib.predict_lines(workdir, [path], top_k=3)
  assert lines[-1].endswith(path) and lines[-1].count('(p=') == 3
  with pytest.raises(FileNotFoundError, match='nope.png'):
    predict_lib.predict_lines(workdir, [str(tmp_path / 'nope.png')])


@pytest.mark.slow
def test_predictions_are_one_compiled_call_reused_for_the_same_model(
  quickstart_run,
):
  # predict_batch jits the forward (eagerly every op compiled on its own) and
  # keeps it per model: a second batch of the same shape compiles nothing,
  # and the outputs are the eager forward's.
  workdir = quickstart_run[0]
  run = workdir_lib.load_workdir(workdir)
  task = tasks.get(run.config, run.model_config)
  table, _ = input_pipeline.load_digits_table('test')
  batches = [{'image': table['image'][i : i + 4]} for i in (0, 4)]
  got = [task.predict(run.model, run.variables, b) for b in batches]
  forward = steps.jitted_forward(run.model, task.model_inputs)
  assert forward._cache_size() == 1  # pylint: disable=protected-access
  eager, _ = steps.apply_model(
    run.model, run.variables, task.model_inputs(batches[1]), train=False
  )
  np.testing.assert_allclose(got[1], np.asarray(eager), rtol=1e-5, atol=1e-5)


def test_workdir_of_a_different_model_is_refused(quickstart_run):
  workdir = quickstart_run[0]
  config = _override(
    quickstart.get_config('tiny'), model__kwargs__num_latents=4
  )
  with pytest.raises(ValueError, match='different model.*overwrite'):
    train_lib.train_and_evaluate(config, workdir)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '3'))


def test_init_from_workdir_and_library_checkpoint(quickstart_run, tmp_path):
  workdir = quickstart_run[0]
  trained = init_from_lib.load_init_from(f'workdir:{workdir}').variables
  # A 12-class model: everything but the classifier output comes from the run.
  config = _override(quickstart.get_config('tiny'), data__num_classes=12)
  task = tasks.get(config)
  model, _ = models.build(config, task.num_outputs())
  fresh = jax.eval_shape(
    lambda: steps.init_variables(
      model, task.model_inputs(task.example_batch()), 0
    )
  )
  fresh = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), fresh)
  merged, new, _ = models.merge_pretrained(fresh, trained)
  assert sorted(new) == [
    'params/decoder/basic/decoder/output/bias',
    'params/decoder/basic/decoder/output/kernel',
  ]
  np.testing.assert_array_equal(
    merged['params']['encoder']['latents'],
    trained['params']['encoder']['latents'],
  )
  # The library's own checkpoint format (dir:) round-trips into init_from.
  model_cfg = json.load(open(os.path.join(workdir, 'model.json')))
  ckpt_lib.save(str(tmp_path / 'export'), trained, model_cfg['perceiver'])
  exported = init_from_lib.load_init_from(
    f'dir:{tmp_path / "export"}'
  ).variables
  np.testing.assert_array_equal(
    exported['params']['encoder']['latents'],
    trained['params']['encoder']['latents'],
  )


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = _override(
    quickstart.get_config('tiny'),
    num_train_steps=6,
    checkpoint_every_steps=1,
    eval_every_steps=100,
    optimizer__learning_rate=1e30,
    optimizer__grad_clip_norm=0.0,
    schedule__name='constant',
    predict_examples=0,
  )
  with pytest.raises(train_lib.NonFiniteError, match='last good checkpoint'):
    train_lib.train_and_evaluate(config, str(tmp_path))
  steps = sorted(
    int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()
  )
  assert steps and steps[-1] < 6
  variables = workdir_lib.load_workdir(str(tmp_path)).variables
  assert all(
    np.all(np.isfinite(np.asarray(x)))
    for x in jax.tree_util.tree_leaves(variables)
  )


@pytest.mark.slow
def test_imdb_tiny_on_local_csv_with_cli_predict(
  data_dir, tmp_path, subprocess_env
):
  config = _override(
    imdb_bytes.get_config('tiny'),
    data__source=f'csv:{data_dir}/{{split}}.csv',
    data__train_split='train',
    data__eval_split='test',
  )
  workdir = str(tmp_path / 'imdb')
  result = train_lib.train_and_evaluate(config, workdir)
  assert result['eval']['num_examples'] == 8
  assert 0.0 <= result['eval']['accuracy'] <= 1.0
  inputs = tmp_path / 'reviews.txt'
  inputs.write_text('I loved this epic movie.\nDull and boring.\n')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.predict',
      f'--workdir={workdir}',
      f'--input_file={inputs}',
      'A third review, on the command line.',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [l for l in proc.stdout.splitlines() if '(p=' in l]
  assert len(lines) == 3
  assert lines[0].endswith('A third review, on the command line.')
  assert lines[1].endswith('I loved this epic movie.')
  assert all(l.split(' ')[0] in ('0', '1') for l in lines)


@pytest.mark.slow
def test_glue_tiny_regression_and_tanh_head_then_summary(data_dir, tmp_path):
  stsb = _override(
    glue_bytes.get_config('stsb,tiny'),
    data__source=f'tsv:{data_dir}/{{split}}.tsv',
    data__eval_split='test',
  )
  result = train_lib.train_and_evaluate(stsb, str(tmp_path / 'stsb'))
  assert {'pearson', 'spearman', 'score'} <= set(result['eval'])
  with pytest.raises(ValueError, match='trained on sentence pairs'):
    predict_lib.predict_lines(str(tmp_path / 'stsb'), ['A man plays.'])
  lines = predict_lib.predict_lines(
    str(tmp_path / 'stsb'), ['A man plays.\tSomeone plays.']
  )
  assert float(lines[-1].split('\t')[0]) == pytest.approx(
    float(lines[-1].split('\t')[0])
  )  # A number, tab, the input.
  cola = _override(
    glue_bytes.get_config('cola,tiny'),
    data__source=f'csv:{data_dir}/{{split}}.csv',
    data__eval_split='test',
  )
  result = train_lib.train_and_evaluate(cola, str(tmp_path / 'cola'))
  assert 'matthews_corr' in result['eval']
  params = result['state']['params']
  assert set(params) == {'perceiver', 'head'}
  assert params['head']['kernel'].shape == (16, 2)
  summary = eval_lib.glue_summary(str(tmp_path))
  assert sorted(summary['scores']) == ['cola', 'stsb']
  assert summary['average'] == pytest.approx(
    (summary['scores']['cola'] + summary['scores']['stsb']) / 2
  )


@pytest.mark.slow
def test_mlm_tiny_on_local_text_fills_masks(data_dir, tmp_path):
  config = _override(
    mlm_bytes.get_config('tiny'), data__source=f'text:{data_dir}/corpus.txt'
  )
  workdir = str(tmp_path / 'mlm')
  result = train_lib.train_and_evaluate(config, workdir)
  assert result['eval']['num_examples'] > 0
  assert 0.0 <= result['eval']['masked_accuracy'] <= 1.0
  lines = predict_lib.predict_lines(workdir, ['The film was [MASK][MASK].'])
  assert '[MASK]' not in lines[-1].split(' -> ')[1]
  run = workdir_lib.load_workdir(workdir)
  task = tasks.get(run.config, run.model_config)
  filled = task.fill_masks(run.model, run.variables, ['ab[MASK]d'])[0]
  assert filled.startswith('ab') and filled.endswith('d')
  assert '[MASK]' not in filled


def test_missing_local_file_is_one_clear_error(tmp_path):
  config = _override(
    imdb_bytes.get_config('tiny'),
    data__source=f'csv:{tmp_path}/absent_{{split}}.csv',
    data__train_split='train',
  )
  with pytest.raises((FileNotFoundError, ValueError), match='absent_train'):
    train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')  # Nothing written, no workdir.


def test_labels_outside_the_classes_name_the_row(data_dir, tmp_path):
  config = _override(
    imdb_bytes.get_config('tiny'),
    data__source=f'csv:{data_dir}/badlabel.csv',
    data__eval_split='train',
  )  # One file: one split name.
  with pytest.raises(
    ValueError, match=r'row 3 \(1 = the first data row\) has label 5'
  ):
    train_lib.train_and_evaluate(config, str(tmp_path / 'w'))


@pytest.mark.slow
def test_init_from_hf_mlm_checkpoint_gets_a_fresh_head(
  data_dir, tmp_path, caplog
):
  """The IMDB demo path: a HuggingFace MLM checkpoint (here a tiny random one
  saved with transformers) initialises the classifier's preprocessor and
  encoder; the classification decoder is new."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  hf_config = transformers.PerceiverConfig(
    d_model=32,
    max_position_embeddings=64,
    num_latents=8,
    d_latents=48,
    num_blocks=1,
    num_self_attends_per_block=2,
    num_self_attention_heads=4,
    num_cross_attention_heads=4,
    qk_channels=16,
    v_channels=48,
  )
  hf_dir = str(tmp_path / 'hf_mlm')
  transformers.PerceiverForMaskedLM(hf_config).save_pretrained(hf_dir)
  _, hf_variables, _ = ckpt_lib.from_hf(hf_dir)
  config = _override(
    imdb_bytes.get_config('tiny'),
    init_from=f'hf:{hf_dir}',
    num_train_steps=1,
    optimizer__learning_rate=0.0,
    eval_every_steps=1,
    data__source=f'csv:{data_dir}/{{split}}.csv',
    data__train_split='train',
    data__eval_split='test',
    predict_examples=0,
  )
  caplog.set_level(logging.INFO)
  result = train_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  new_line = [
    r.getMessage()
    for r in caplog.records
    if 'newly initialised' in r.getMessage()
  ]
  assert new_line and 'params/decoder/basic/' in new_line[0]
  assert 'params/encoder' not in new_line[0]
  params = jax.device_get(result['state']['params'])
  for part in ('preprocessor', 'encoder'):
    for (path, ours), theirs in zip(
      jax.tree_util.tree_leaves_with_path(params[part]),
      jax.tree_util.tree_leaves(hf_variables['params'][part]),
    ):
      np.testing.assert_array_equal(
        ours, theirs, err_msg=jax.tree_util.keystr(path)
      )
  assert 'basic' in params['decoder']  # The new classification decoder.


class FakeDigitsTask(base.Task):
  """A task of the test's own (config.task names it by its import path) over
  the digits table, with its own evaluation loop, to test the loop's hooks
  without the task modules of experiments/tasks/."""

  def __init__(self, config):
    super().__init__(config)
    self.train_table, _ = input_pipeline.load_digits_table('train')
    self.test_table, _ = input_pipeline.load_digits_table('test')
    self.transform_calls = 0

  def data_info(self):
    return (
      {'num_examples': 1437, 'label_names': [str(i) for i in range(10)]},
      {'num_examples': 360},
    )

  def example_batch(self):
    return {'image': np.zeros((1, 8, 8, 1), np.float32)}

  def train_stream(self, start_step):
    config, table = self.config, self.train_table

    class Stream:
      def batch(self, step):
        return input_pipeline.train_batch(
          table, step, config.batch_size, config.seed
        )

    return Stream()

  def train_transform(self, batch, key):
    self.transform_calls += 1
    del key
    return {**batch, 'targets': jax.nn.one_hot(batch['label'], 10)}

  def loss_fn(self, outputs, batch):
    import optax  # pylint: disable=g-import-not-at-top

    loss = optax.softmax_cross_entropy(outputs, batch['targets'])
    return loss * batch['weight'], batch['weight']

  def eval_outputs(self, outputs, batch):
    correct = (outputs.argmax(-1) == batch['label']) * batch['weight']
    return {'correct': correct, 'weight': batch['weight']}

  def evaluate(self, eval_step, state, mesh, model=None):
    sums = {'correct': 0.0, 'weight': 0.0}
    for local in input_pipeline.eval_batches(
      self.test_table, 8, max_examples=16
    ):
      out = sharding.to_host(
        eval_step(
          state['params'],
          state['model_state'],
          sharding.global_batch(local, mesh),
        )
      )
      for k in sums:
        sums[k] += float(np.sum(out[k]))
    return {
      'top1': sums['correct'] / sums['weight'],
      'num_examples': int(sums['weight']),
    }

  def predict_lines(self, model, variables, inputs, top_k=0, **unused):
    return [f'fake {x} top{top_k}' for x in inputs]


@pytest.mark.slow
def test_task_objects_plug_into_train_evaluate_predict(tmp_path):
  # A classification decoder's size is data.num_classes (10) for any task.
  config = _override(
    quickstart.get_config('tiny'),
    task=f'{__name__}:FakeDigitsTask',
    best_metric='top1',
    predict_examples=0,
  )
  workdir = str(tmp_path)
  result = train_lib.train_and_evaluate(config, workdir)
  assert isinstance(result['task'], FakeDigitsTask)
  assert result['task'].transform_calls == 1  # Traced once, in the step.
  assert result['eval']['num_examples'] == 16
  records = _read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert records[-1]['eval_top1'] == pytest.approx(result['eval']['top1'])
  evaluated = eval_lib.evaluate_workdir(workdir)
  assert evaluated['metrics']['top1'] == pytest.approx(result['eval']['top1'])
  lines = predict_lib.predict_lines(workdir, ['a.png'], top_k=3)
  assert lines[-1] == 'fake a.png top3'


@pytest.mark.slow
def test_train_launcher_with_host_memory_reuse(tmp_path, subprocess_env):
  # PERCEIVER_IO_REUSE_HOST_MEMORY=1 (what 'auto' picks for large CPU steps)
  # changes the process: glibc keeps freed memory, synchronous CPU dispatch,
  # `settle_host_memory` after each train and eval step. The launcher must
  # still train, evaluate and resume; unset ('auto'), the launcher sizes the
  # step before JAX makes its backend and keeps the defaults for this one.
  env = {**subprocess_env, 'PERCEIVER_IO_REUSE_HOST_MEMORY': '1'}
  workdir = str(tmp_path / 'reuse')
  cmd = [
    sys.executable,
    '-m',
    'experiments.train',
    '--config=configs/quickstart.py:tiny',
    f'--workdir={workdir}',
  ]
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'CPU memory: kept between steps for reuse (set by ' in proc.stderr, (
    proc.stderr[-3000:]
  )
  assert 'final step' in proc.stdout
  final = [l for l in proc.stdout.splitlines() if l.startswith('final step')]
  env = {
    k: v
    for k, v in subprocess_env.items()
    if k != 'PERCEIVER_IO_REUSE_HOST_MEMORY'
  }
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )  # Resumes: already done.
  assert proc.returncode == 0, proc.stderr[-3000:]
  # 'auto' keeps the default for this small step, and says nothing about it.
  assert 'CPU memory' not in proc.stderr, proc.stderr[-3000:]
  assert 'GFLOP' not in proc.stderr, proc.stderr[-3000:]
  assert [l for l in proc.stdout.splitlines() if l.startswith('final step')][
    :1
  ] == final[:1]
