"""A bad newest checkpoint, and a run that diverges after a save.

What a user must be able to count on: a corrupt newest step is named in
one line; predict and evaluate use the newest step that reads (unless
--checkpoint names one); a resumed run moves the bad step aside (kept, not
deleted) and ends where an uninterrupted run ends; a NaN loss after a save
keeps that save intact, and the run resumes from it.
"""

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from experiments import checkpointing
from experiments import eval_lib
from experiments import predict_lib
from experiments import steps
from experiments import train_lib
from experiments import workdir as workdir_lib
from tests.helpers import override_config
from tests import helpers

STEPS = 4  # Checkpoints at 2 and 4.


def _config(**fields):
  fields = dict(num_train_steps=STEPS, eval_every_steps=STEPS, **fields)
  return override_config(quickstart.get_config('tiny'), **fields)


def _train(config, workdir):
  previous = jax.config.read('jax_disable_most_optimizations')
  try:
    return train_lib.train_and_evaluate(config, workdir)
  finally:
    jax.config.update('jax_disable_most_optimizations', previous)


def _params(result):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(result['state'])]


def _bit_identical(a, b):
  return len(a) == len(b) and all(
    x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b)
  )


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run: (workdir, its final state's arrays)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  return workdir, _params(_train(_config(), workdir))


def _corrupt_copy(reference, tmp_path, step=STEPS):
  """A copy of the reference run with `step`'s parameter files truncated."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference[0], workdir)
  root = os.path.join(workdir, 'checkpoints', str(step), 'default')
  data = [
    os.path.join(root, 'd', n) for n in os.listdir(os.path.join(root, 'd'))
  ]
  data += [
    os.path.join(root, 'ocdbt.process_0', 'd', n)
    for n in os.listdir(os.path.join(root, 'ocdbt.process_0', 'd'))
  ]
  for path in data:
    with open(path, 'rb') as f:
      content = f.read()
    with open(path, 'wb') as f:
      f.write(content[: len(content) // 3])
  return workdir


def test_short_cause_is_one_line_without_tensorstore_specs():
  spec = "{\n  'path': 'params.encoder.kernel/',\n},\n 'x': [0, 0],\n})>."
  error = Exception(
    'Encountered error while reading array index: (slice(0, 35, 1),). '
    f'See full TensorStore details: <bound method spec of TensorStore({spec}'
  )
  assert checkpointing.short_cause(error) == (
    'Exception: error reading array params.encoder.kernel'
  )
  long = ValueError('DATA_LOSS: Error reading "x":\n' + 'y' * 300 + ': gone')
  assert checkpointing.short_cause(long) == 'ValueError: gone'


@pytest.mark.slow
def test_predict_and_evaluate_use_the_newest_intact_step(
  reference, tmp_path, caplog
):
  workdir = _corrupt_copy(reference, tmp_path)
  with caplog.at_level(logging.WARNING):
    lines = predict_lib.predict_lines(workdir, [], digits='0:1')
  assert lines[0].endswith('(checkpoint step 2)'), lines[0]
  named = [r.getMessage() for r in caplog.records if 'step 4' in r.getMessage()]
  assert len(named) == 1 and '\n' not in named[0], named
  assert 'cannot be read' in named[0] and 'TensorStore' not in named[0]
  assert eval_lib.evaluate_workdir(workdir)['step'] == 2
  # An explicit step is read as asked: one line naming the way out.
  with pytest.raises(checkpointing.CorruptCheckpointError) as error:
    workdir_lib.load_workdir(workdir, str(STEPS))
  message = str(error.value)
  assert '\n' not in message and '})>' not in message, message
  assert 'Other steps: [2]' in message and '--checkpoint=latest' in message
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(STEPS)))


@pytest.mark.slow
def test_resume_moves_a_corrupt_step_aside_and_ends_as_uninterrupted(
  reference, tmp_path, caplog
):
  workdir = _corrupt_copy(reference, tmp_path)
  bad = helpers.file_fingerprints(
    os.path.join(workdir, 'checkpoints', str(STEPS))
  )
  with caplog.at_level(logging.WARNING):
    result = _train(_config(), workdir)
  aside = os.path.join(workdir, workdir_lib.CORRUPT_CHECKPOINT_DIR, str(STEPS))
  assert helpers.file_fingerprints(aside) == bad  # Moved whole, never deleted.
  said = [r.getMessage() for r in caplog.records if aside in r.getMessage()]
  assert len(said) == 1 and '\n' not in said[0], said
  assert f'step {STEPS} cannot be read' in said[0]
  # Steps 3 and 4 were trained again from step 2, to the same parameters.
  assert result['step'] == STEPS
  assert _bit_identical(_params(result), reference[1])
  ckpt = workdir_lib.open_checkpoints(workdir)
  assert ckpt.all_steps() == [2, STEPS]  # Orbax ignores the moved step.
  ckpt.close()


def _nan_from(step_number):
  """`steps.make_train_step` whose loss is NaN from `step_number` on."""
  make = steps.make_train_step

  def make_poisoned(*args, **kwargs):
    train_step = make(*args, **kwargs)

    def poisoned(state, batch):
      state, metrics = train_step(state, batch)
      nan = state['step'] >= step_number
      return state, dict(metrics, loss=jnp.where(nan, jnp.nan, metrics['loss']))

    return poisoned

  return make_poisoned


@pytest.mark.slow
def test_nan_after_a_save_keeps_it_and_the_run_resumes_from_it(
  reference, tmp_path, monkeypatch
):
  workdir = str(tmp_path / 'run')
  monkeypatch.setattr(steps, 'make_train_step', _nan_from(3))
  with pytest.raises(
    train_lib.NonFiniteError,
    match=r'loss is nan at step 3.*last good checkpoint \(step 2\) is kept',
  ):
    _train(_config(), workdir)
  monkeypatch.undo()
  ckpt = workdir_lib.open_checkpoints(workdir)
  assert ckpt.all_steps() == [2]
  ckpt.close()
  assert workdir_lib.load_workdir(workdir).step == 2  # It reads.
  result = _train(_config(), workdir)
  assert result['step'] == STEPS
  assert _bit_identical(_params(result), reference[1])
