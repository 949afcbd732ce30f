"""Subprocess helpers for multi-device and multi-process training tests.

Each run is `python -m experiments.train` in a child process, so the parent
test process keeps its one CPU device: simulated devices come from
`XLA_FLAGS` in the child's environment, and several processes join through
`jax.distributed` on a free loopback port.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 400


def free_port():
  """A loopback port nobody listens on (for the coordinator)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def with_devices(env, count):
  """A copy of `env` whose processes see `count` simulated CPU devices."""
  env = dict(env)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={count}'
  return env


def uncached(env):
  """A copy of `env` without the persistent compilation cache: a run then
  compiles, which leaves time to interrupt it between checkpoints."""
  env = dict(env)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  return env


def train_command(workdir, args, extra=()):
  return [
    sys.executable,
    '-m',
    'experiments.train',
    f'--workdir={workdir}',
    *args,
    *extra,
  ]


def run_train(workdir, env, args, extra=(), timeout=TIMEOUT):
  """One training process to completion; fails the test on a non-zero exit."""
  proc = subprocess.run(
    train_command(workdir, args, extra),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def process_flags(port, num_processes, process_id):
  return [
    f'--coordinator_address=localhost:{port}',
    f'--num_processes={num_processes}',
    f'--process_id={process_id}',
  ]


def popen_processes(workdir, env, args, num_processes, extra=()):
  """Starts `num_processes` joined training processes (not waited for)."""
  port = free_port()
  return [
    subprocess.Popen(
      train_command(
        workdir, args, [*process_flags(port, num_processes, i), *extra]
      ),
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(num_processes)
  ]


def communicate_all(procs, timeout=TIMEOUT):
  """(stdout, stderr) of every process; kills the ones still running if
  any wait fails, so no test leaves processes behind."""
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  return outputs


def run_processes(workdir, env, args, num_processes, extra=()):
  """Runs `num_processes` joined training processes to completion; fails the
  test if any exits non-zero. Returns each one's stderr."""
  procs = popen_processes(workdir, env, args, num_processes, extra)
  outputs = communicate_all(procs)
  for proc, (_, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  return [err for _, err in outputs]


def start_and_wait_for_checkpoint(workdir, env, args, step=2):
  """Starts a run; returns it once checkpoint `step` is committed."""
  proc = subprocess.Popen(
    train_command(workdir, args),
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


def read_params(workdir, step):
  """The workdir's latest parameters as NumPy; checks they are of `step`."""
  run = workdir_lib.load_workdir(str(workdir))
  assert run.step == step
  return jax.tree_util.tree_map(np.asarray, run.variables)


def read_losses(workdir):
  """step -> train loss, from the workdir's metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return {r['step']: r['train_loss'] for r in records if 'train_loss' in r}


def assert_trees(a, b, exact, rtol=2e-5, atol=1e-5, key_bias_atol=1e-4):
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
