"""Multi-device, multi-process and crash-safety tests of the training loop.

Every run is the quickstart's tiny config for 6 steps of global batch 8,
launched as `python -m experiments.train` in a subprocess:

* reference: 1 process, 1 CPU device;
* 8 simulated CPU devices (XLA_FLAGS), parameters sharded too -> same
  losses and parameters;
* 2 processes joined by `jax.distributed` on loopback, each feeding its own
  half of every batch -> same losses and parameters;
* SIGKILL after a checkpoint, then a restart -> bit-identical parameters;
* SIGTERM -> a checkpoint is saved, exit code 143, and a restart finishes
  bit-identical.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
TIMEOUT = 400


def _command(workdir, extra=()):
  return [
    sys.executable,
    '-m',
    'experiments.train',
    f'--workdir={workdir}',
    *ARGS,
    *extra,
  ]


def _run(workdir, env, extra=()):
  proc = subprocess.run(
    _command(workdir, extra),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _params(workdir):
  run = workdir_lib.load_workdir(str(workdir))
  variables, step = run.variables, run.step
  assert step == STEPS
  return jax.tree_util.tree_map(np.asarray, variables)


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return {r['step']: r['train_loss'] for r in records if 'train_loss' in r}


def _assert_trees(a, b, exact, rtol=2e-5, atol=1e-5, key_bias_atol=1e-4):
  """Equal trees (exact) or close ones.

  Attention key biases get an exactly-zero gradient in theory (softmax
  ignores a shift shared by all keys), so Adam turns float round-off of a
  different reduction order into updates of their own: up to 1.2e-5 apart
  with the CPU's row-major weight gradients (kernels/cpu.py), hence
  `key_bias_atol`, still 20x below one real update (lr 2e-3). Everything
  else agrees to rtol/atol.
  """
  leaves_a = jax.tree_util.tree_leaves_with_path(a)
  leaves_b = jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for (path, x), y in zip(leaves_a, leaves_b):
    name = jax.tree_util.keystr(path)
    if exact:
      np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      key_bias = name.endswith("['key']['bias']")
      np.testing.assert_allclose(
        x, y, rtol=rtol, atol=key_bias_atol if key_bias else atol, err_msg=name
      )


@pytest.fixture(scope='module')
def reference(tmp_path_factory, subprocess_env):
  workdir = str(tmp_path_factory.mktemp('reference'))
  _run(workdir, subprocess_env)
  return workdir, _params(workdir), _losses(workdir)


@pytest.mark.slow
def test_eight_devices_with_sharded_params_match_one(
  reference, tmp_path, subprocess_env
):
  # Batch split 8 ways and every parameter of >= 64 elements split 8 ways.
  env = dict(subprocess_env)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
  proc = _run(str(tmp_path), env, ['--config.shard_params_min_size=64'])
  assert 'mesh: 8 devices over 1 process(es)' in proc.stderr
  sharded = int(proc.stderr.split('state: ')[1].split(' of ')[0])
  assert sharded > 10  # Kernels, embeddings and their Adam moments.
  _, ref_params, ref_losses = reference
  losses = _losses(str(tmp_path))
  assert sorted(losses) == list(range(1, STEPS + 1))
  for step, loss in ref_losses.items():
    assert losses[step] == pytest.approx(loss, rel=1e-5)
  _assert_trees(_params(str(tmp_path)), ref_params, exact=False)


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(reference, tmp_path, subprocess_env):
  port = _free_port()
  procs = [
    subprocess.Popen(
      _command(
        str(tmp_path),
        [
          f'--coordinator_address=localhost:{port}',
          '--num_processes=2',
          f'--process_id={i}',
        ],
      ),
      cwd=REPO,
      env=subprocess_env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=TIMEOUT))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
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
  """Starts a run; returns it once checkpoint `step` is committed."""
  proc = subprocess.Popen(
    _command(workdir),
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  target = os.path.join(workdir, 'checkpoints', str(step))
  deadline = time.time() + TIMEOUT
  while not os.path.isdir(target):
    if proc.poll() is not None:
      _, err = proc.communicate()
      pytest.fail(f'training ended before checkpoint {step}: {err[-3000:]}')
    if time.time() > deadline:
      proc.kill()
      pytest.fail(f'no checkpoint {step} after {TIMEOUT}s')
    time.sleep(0.01)
  return proc


def _uncached(env):
  """The first run of a crash test compiles (no persistent cache), so there
  is time (the eval-step compile after checkpoint 2) to interrupt it."""
  env = dict(env)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  return env


@pytest.mark.slow
def test_sigkill_after_checkpoint_then_restart_is_bit_identical(
  reference, tmp_path, subprocess_env
):
  workdir = str(tmp_path)
  proc = _start_and_wait_for_checkpoint(workdir, _uncached(subprocess_env))
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
  proc = _start_and_wait_for_checkpoint(workdir, _uncached(subprocess_env))
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 143, err[-3000:]
  assert 'preempted: checkpoint at step' in err
  saved = int(err.split('preempted: checkpoint at step ')[1].split()[0])
  assert 2 <= saved < STEPS
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(saved)))
  _run(workdir, subprocess_env)
  _assert_trees(_params(workdir), reference[1], exact=True)
