"""Multi-device, multi-process and crash-safety tests of the training loop.

Every run is the quickstart's tiny config for 6 steps of global batch 8,
launched as `python -m experiments.train` in a subprocess:

* reference: 1 process, 1 CPU device;
* 8 simulated CPU devices (XLA_FLAGS), parameters sharded too (mesh 1x8)
  -> same losses and parameters;
* 2 processes joined by `jax.distributed` on loopback, each feeding its own
  half of every batch -> same losses and parameters;
* SIGKILL after a checkpoint, then a restart -> bit-identical parameters;
* SIGTERM -> a checkpoint is saved, exit code 143, and a restart finishes
  bit-identical.
"""

import os
import signal

import pytest

from tests import parallel_helpers as ph

STEPS = 6
ARGS = [
  '--config=configs/quickstart.py:tiny',
  f'--config.num_train_steps={STEPS}',
  '--config.checkpoint_every_steps=2',
  '--config.eval_every_steps=3',
  '--config.batch_size=8',
  '--config.eval_batch_size=8',
  '--config.predict_examples=0',
]


def _run(workdir, env, extra=()):
  return ph.run_train(workdir, env, ARGS, extra)


def _params(workdir):
  return ph.read_params(workdir, STEPS)


_losses = ph.read_losses
_assert_trees = ph.assert_trees


@pytest.fixture(scope='module')
def reference(tmp_path_factory, subprocess_env):
  workdir = str(tmp_path_factory.mktemp('reference'))
  _run(workdir, subprocess_env)
  return workdir, _params(workdir), _losses(workdir)


@pytest.mark.slow
def test_eight_devices_with_sharded_params_match_one(
  reference, tmp_path, subprocess_env
):
  # Batch split 8 ways and every parameter of >= 64 elements split 8 ways
  # where its rule finds an axis (mesh 1x8: all devices on fsdp).
  env = ph.with_devices(subprocess_env, 8)
  proc = _run(
    str(tmp_path),
    env,
    [
      '--config.mesh.data=1',
      '--config.mesh.fsdp=-1',
      '--config.shard_params_min_size=64',
    ],
  )
  assert 'mesh: 8 devices over 1 process(es)' in proc.stderr
  sharded = int(proc.stderr.split('state: ')[1].split(' of ')[0])
  assert sharded > 10  # Kernels, embeddings and their Adam moments.
  _, ref_params, ref_losses = reference
  losses = _losses(str(tmp_path))
  assert sorted(losses) == list(range(1, STEPS + 1))
  for step, loss in ref_losses.items():
    assert losses[step] == pytest.approx(loss, rel=1e-5)
  _assert_trees(_params(str(tmp_path)), ref_params, exact=False)


@pytest.mark.slow
def test_two_processes_match_one(reference, tmp_path, subprocess_env):
  procs = ph.popen_processes(str(tmp_path), subprocess_env, ARGS, 2)
  outputs = ph.communicate_all(procs)
  for proc, (_, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
    assert 'mesh: 2 devices over 2 process(es)' in err
  _, ref_params, ref_losses = reference
  losses = _losses(str(tmp_path))  # Written by process 0 only.
  assert sorted(losses) == list(range(1, STEPS + 1))
  for step, loss in ref_losses.items():
    assert losses[step] == pytest.approx(loss, rel=1e-5)
  _assert_trees(_params(str(tmp_path)), ref_params, exact=False)


def _start_and_wait_for_checkpoint(workdir, env, step=2):
  return ph.start_and_wait_for_checkpoint(workdir, env, ARGS, step)


@pytest.mark.slow
def test_sigkill_after_checkpoint_then_restart_is_bit_identical(
  reference, tmp_path, subprocess_env
):
  workdir = str(tmp_path)
  proc = _start_and_wait_for_checkpoint(workdir, ph.uncached(subprocess_env))
  proc.kill()  # SIGKILL: no handler, no final save.
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  done = sorted(
    int(s)
    for s in os.listdir(os.path.join(workdir, 'checkpoints'))
    if s.isdigit()
  )
  assert done and done[-1] < STEPS, 'the run finished before it was killed'
  proc = _run(workdir, subprocess_env)
  assert 'resuming from' in proc.stderr
  _assert_trees(_params(workdir), reference[1], exact=True)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(
  reference, tmp_path, subprocess_env
):
  workdir = str(tmp_path)
  proc = _start_and_wait_for_checkpoint(workdir, ph.uncached(subprocess_env))
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=ph.TIMEOUT)
  assert proc.returncode == 143, err[-3000:]
  assert 'preempted: checkpoint at step' in err
  saved = int(err.split('preempted: checkpoint at step ')[1].split()[0])
  assert 2 <= saved < STEPS
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(saved)))
  _run(workdir, subprocess_env)
  _assert_trees(_params(workdir), reference[1], exact=True)
