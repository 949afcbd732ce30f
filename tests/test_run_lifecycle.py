"""A run's workdir over its life: refused starts, crashes, corrupt files.

What a user must be able to count on: a start that is refused changes
nothing in the workdir; predicting needs only the parameters, not the
optimizer settings; a corrupt checkpoint is named with the steps still
good; a crash leaves one metrics record per step after the resume; and a
bad setting or path fails before anything runs.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import quickstart
from experiments import checkpointing
from experiments import eval_lib
from experiments import predict_lib
from experiments import train_lib
from experiments import workdir as workdir_lib
from tests.helpers import override_config as _override
from tests import helpers


def _config(**fields):
  return _override(quickstart.get_config('tiny'), **fields)


def _train(config, workdir):
  previous = jax.config.read('jax_disable_most_optimizations')
  try:
    return train_lib.train_and_evaluate(config, workdir)
  finally:
    jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished tiny quickstart run (checkpoints at steps 2 and 3)."""
  workdir = str(tmp_path_factory.mktemp('run'))
  _train(_config(), workdir)
  return workdir


def _copy(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  return workdir


@pytest.mark.slow
def test_refused_start_changes_nothing_and_predict_still_works(
  trained, tmp_path
):
  workdir = _copy(trained, tmp_path)
  before = helpers.file_fingerprints(workdir)
  with pytest.raises(
    ValueError,
    match=r'another run.*optimizer.name: '
    r"'adamw' -> 'sgd'.*overwrite",
  ):
    _train(_config(optimizer__name='sgd'), workdir)
  assert helpers.file_fingerprints(workdir) == before
  assert predict_lib.predict_lines(workdir, [], digits='0:2')


def test_predict_reads_only_parameters(trained, tmp_path):
  """config.json's optimizer no longer has to match the saved moments."""
  workdir = _copy(trained, tmp_path)
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  config = json.load(open(path))
  config['optimizer']['name'] = 'sgd'
  config['optimizer']['accumulate_steps'] = 4
  workdir_lib.write_json_atomic(path, config)
  run = workdir_lib.load_workdir(workdir)
  assert run.step == 3
  assert 'params' in run.variables
  assert eval_lib.evaluate_workdir(workdir)['step'] == 3


def _corrupt(workdir, step):
  """Truncates the array data files of a checkpoint step."""
  root = os.path.join(workdir, 'checkpoints', str(step))
  truncated = 0
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      if '/d/' in path + '/' or os.sep + 'd' + os.sep in path:
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[: len(data) // 3])
        truncated += 1
  assert truncated, 'no array data files found to truncate'


def test_corrupt_checkpoint_names_the_good_steps(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _corrupt(workdir, 3)
  with pytest.raises(
    checkpointing.CorruptCheckpointError,
    match=r'step 3 .*corrupt or truncated.*Other steps: '
    r'\[2\].*--checkpoint=2',
  ):
    workdir_lib.load_workdir(workdir, '3')
  # 'latest' is the newest step that reads (tests/test_checkpoint_fallback).
  assert workdir_lib.load_workdir(workdir).step == 2


@pytest.mark.slow
def test_resume_after_a_crash_keeps_one_record_per_step(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '3'))  # Lost in a crash.
  metrics = os.path.join(workdir, workdir_lib.METRICS_FILE)
  before = [json.loads(line) for line in open(metrics)]
  assert max(r['step'] for r in before) == 3
  _train(_config(), workdir)
  records = [json.loads(line) for line in open(metrics)]
  train = [r['step'] for r in records if 'train_loss' in r]
  evals = [r['step'] for r in records if 'eval_accuracy' in r]
  assert train == sorted(set(train)), train
  assert evals == sorted(set(evals)), evals
  assert train[-1] == 3 and evals[-1] == 3


@pytest.mark.parametrize(
  'field',
  [
    'batch_size',
    'eval_batch_size',
    'log_every_steps',
    'eval_every_steps',
    'checkpoint_every_steps',
  ],
)
def test_nonpositive_loop_settings_fail_before_anything_runs(field, tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(ValueError, match=f'config.{field}=0: must be >= 1'):
    _train(_config(**{field: 0}), workdir)
  assert not os.path.exists(workdir)


def test_unusable_workdir_is_one_error(tmp_path):
  a_file = tmp_path / 'afile'
  a_file.write_text('x')
  with pytest.raises(
    ValueError, match='cannot use --workdir=.*afile/run.*writable directory'
  ):
    _train(_config(), str(a_file / 'run'))


def test_bad_init_from_fails_before_the_data_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(Exception, match='nope.*does not exist'):
    _train(_config(init_from=f'hf:{tmp_path}/nope'), str(workdir))
  assert not (workdir / 'config.json').exists()
  assert not (workdir / 'metrics.jsonl').exists()


@pytest.mark.slow
def test_misspelt_best_metric_stops_after_saving(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(
    ValueError,
    match=r"best_metric='acc' is not an eval "
    r'metric.*accuracy.*saved at step 1',
  ):
    _train(_config(best_metric='acc', eval_every_steps=1), workdir)
  # The same command with the metric spelt right resumes from that step.
  result = _train(_config(eval_every_steps=1), workdir)
  assert result['step'] == 3
  assert np.isfinite(result['train_loss'])


def test_failed_save_is_one_error_naming_the_intact_steps(trained, tmp_path):
  """A full disk: the half-written step goes, the error says what is kept."""
  workdir = _copy(trained, tmp_path)
  ckpt = workdir_lib.open_checkpoints(workdir)
  partial = os.path.join(ckpt.directory, '4.orbax-checkpoint-tmp')

  def full_disk(*args, **kwargs):
    del args, kwargs
    os.makedirs(partial)
    raise ValueError(
      'RESOURCE_EXHAUSTED: Error writing local file "x": '
      'Failed to write 25180 bytes to file 7: No space left '
      "on device [os_error_code='28']"
    )

  ckpt.manager.save = full_disk
  with pytest.raises(
    checkpointing.CheckpointWriteError,
    match=r'failed: No space left on device\. Removed the '
    r'partial step \(4.orbax-checkpoint-tmp\); intact steps: '
    r'\[2, 3\].*resume from step 3',
  ):
    ckpt.save(4, {'step': np.int32(4)})
  assert not os.path.exists(partial)
  ckpt.close()  # The same failure again on close is not reported twice.


def test_orbax_thread_errors_lose_their_tracebacks():
  import logging  # pylint: disable=g-import-not-at-top
  from experiments import cli  # pylint: disable=g-import-not-at-top

  try:
    raise ValueError('RESOURCE_EXHAUSTED')
  except ValueError:
    import sys  # pylint: disable=g-import-not-at-top

    exc_info = sys.exc_info()
  record = logging.LogRecord(
    'absl',
    logging.ERROR,
    '/x/site-packages/orbax/checkpoint/future.py',
    1,
    'thread failed',
    None,
    exc_info,
  )
  assert cli.one_line_orbax_errors(record)
  assert record.exc_info is None
  ours = logging.LogRecord(
    'absl', logging.ERROR, '/x/experiments/train.py', 1, 'ours', None, exc_info
  )
  cli.one_line_orbax_errors(ours)
  assert ours.exc_info is exc_info
  between_evals = logging.LogRecord(
    'absl',
    logging.WARNING,
    '/x/orbax/checkpoint/checkpoint_manager.py',
    1,
    'Requested `tracked_metric`; did not provide metrics.',
    None,
    None,
  )
  assert not cli.one_line_orbax_errors(between_evals)


def test_out_of_memory_is_one_line_with_what_to_lower():
  from experiments import cli  # pylint: disable=g-import-not-at-top

  xla = (
    'RESOURCE_EXHAUSTED: Out of memory while trying to allocate '
    '214748364800 bytes.\nBufferAssignment OOM Debugging.\n' + 'x' * 5000
  )
  message = cli.out_of_memory_error(RuntimeError(xla))
  assert message.startswith(
    'out of memory (an allocation of 214748364800 bytes)'
  )
  assert '--config.eval_batch_size' in message and '\n' not in message
  tf = 'RESOURCE_EXHAUSTED: OOM when allocating tensor of 1.5GiB'
  assert '1.5GiB' in cli.out_of_memory_error(RuntimeError(tf))
  assert cli.out_of_memory_error(ValueError('shapes differ')) is None
