"""Multi-host launch: flags, SLURM detection, preemption and resume.

The plan (`experiments.multihost.plan`) is checked case by case without
JAX, its SLURM reading against JAX's own `SlurmCluster`; one slow test
runs the whole story with 4 processes on loopback: train, SIGTERM to all
(each saves the same step and exits 143), relaunch through the SLURM
detection path (faked SLURM variables, no flags), finish, and end with
parameters bit-identical to an uninterrupted 4-process run.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from experiments import multihost
from tests import parallel_helpers as ph

STEPS = 8
ARGS = [
  '--config=configs/quickstart.py:tiny',
  f'--config.num_train_steps={STEPS}',
  '--config.checkpoint_every_steps=2',
  '--config.eval_every_steps=4',
  '--config.log_every_steps=1',  # Processes agree on SIGTERM every step.
  '--config.batch_size=8',
  '--config.eval_batch_size=8',
  '--config.predict_examples=0',
]


def _slurm(count, index, job='4242', nodes='node[007-009],gpu1'):
  return {
    'SLURM_JOB_ID': job,
    'SLURM_STEP_NODELIST': nodes,
    'SLURM_NTASKS': str(count),
    'SLURM_PROCID': str(index),
    'SLURM_LOCALID': str(index),
  }


@pytest.mark.parametrize(
  'nodes', ['node007', 'node007,gpu1', 'node[007-009],gpu1', 'n[7,9-12]']
)
def test_slurm_step_reads_what_jax_reads(monkeypatch, nodes):
  from jax._src.clusters import slurm_cluster  # The reference.

  env = _slurm(4, 2, nodes=nodes)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  monkeypatch.delenv('JAX_COORDINATOR_PORT', raising=False)
  cluster = slurm_cluster.SlurmCluster
  assert cluster.is_env_present()
  assert multihost.plan('', 1, 0, env) == multihost.Plan(
    'slurm',
    cluster.get_process_count(),
    cluster.get_process_id(),
    cluster.get_coordinator_address(None, None),
  )
  env['JAX_COORDINATOR_PORT'] = '1234'
  assert multihost.plan('', -1, 0, env).coordinator.endswith(':1234')


def test_plan_cases():
  plan = multihost.plan
  assert plan('', 1, 0, {}) == multihost.Plan('single')
  assert plan('h:1', 4, 3, {}) == multihost.Plan('flags', 4, 3, 'h:1')
  # Explicit flags win over a SLURM step.
  assert plan('h:1', 2, 1, _slurm(4, 2)).kind == 'flags'
  # One task is not a multi-process job; neither is a batch script (no step).
  assert plan('', 1, 0, _slurm(1, 0)).kind == 'single'
  batch_script = _slurm(4, 0)
  del batch_script['SLURM_STEP_NODELIST']
  assert plan('', 1, 0, batch_script).kind == 'single'
  assert plan('', -1, 0, {'OMPI_MCA_orte_hnp_uri': 'x'}).kind == 'cluster'


@pytest.mark.parametrize(
  'flags, match',
  [
    (('', 0, 0), 'give the number of processes'),
    (('', -2, 0), 'give the number of processes'),
    (('', 4, 0), 'needs --coordinator_address'),
    (('h:1', 4, 4), r'outside 0\.\.3'),
    (('h:1', 4, -1), r'outside 0\.\.3'),
    (('h', 4, 0), 'is not HOST:PORT'),
    (('h:1', 1, 0), 'need --num_processes=N > 1'),
    (('', 1, 2), 'need --num_processes=N > 1'),
    (('', -1, 2), 'the cluster numbers the processes'),
    (('', -1, 0), 'shows none it knows'),
  ],
)
def test_bad_combinations_are_one_line(monkeypatch, flags, match):
  monkeypatch.setattr(multihost, '_jax_detected_cluster', lambda: None)
  with pytest.raises(ValueError, match=match) as e:
    multihost.plan(*flags, {})
  assert '\n' not in str(e.value)


def test_launcher_prints_the_bad_combination(subprocess_env, tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/quickstart.py:tiny',
      f'--workdir={tmp_path / "w"}',
      '--num_processes=4',
    ],
    cwd=ph.REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1
  assert (
    proc.stderr.strip()
    .splitlines()[-1]
    .startswith('error: --num_processes=4 needs --coordinator_address')
  )
  assert not (tmp_path / 'w').exists()


def _without_slurm(env):
  return {k: v for k, v in env.items() if not k.startswith('SLURM_')}


def _popen_slurm(workdir, env, count):
  """`count` processes that learn who they are only from SLURM variables."""
  port = str(ph.free_port())
  procs = []
  for i in range(count):
    task_env = dict(env, JAX_COORDINATOR_PORT=port)
    task_env.update(_slurm(count, i, job='77', nodes='localhost'))
    procs.append(
      subprocess.Popen(
        ph.train_command(workdir, ARGS),
        cwd=ph.REPO,
        env=task_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  return procs, port


def _wait_for_checkpoint(procs, workdir, step):
  target = os.path.join(workdir, 'checkpoints', str(step))
  import time  # pylint: disable=g-import-not-at-top

  deadline = time.time() + ph.TIMEOUT
  while not os.path.isdir(target):
    if any(p.poll() is not None for p in procs) or time.time() > deadline:
      outputs = ph.communicate_all(procs, timeout=5)
      pytest.fail(f'no checkpoint {step}: {outputs[0][1][-3000:]}')
    time.sleep(0.01)


@pytest.mark.slow
def test_four_processes_preempted_and_requeued_through_slurm(
  tmp_path, subprocess_env
):
  env = _without_slurm(subprocess_env)
  # Interrupted run (compiling, so SIGTERM lands mid-run): SIGTERM to all.
  workdir = str(tmp_path / 'preempted')
  procs = ph.popen_processes(workdir, ph.uncached(env), ARGS, 4)
  _wait_for_checkpoint(procs, workdir, 2)
  for proc in procs:
    proc.send_signal(signal.SIGTERM)
  errs = [err for _, err in ph.communicate_all(procs)]
  assert [p.returncode for p in procs] == [143] * 4, errs[0][-3000:]
  saved = {
    int(m) for err in errs for m in re.findall(r'checkpoint at step (\d+)', err)
  }
  assert len(saved) == 1, saved  # Every process saved the same step.
  (step,) = saved
  assert 2 <= step < STEPS
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(step)))
  assert not os.path.exists(os.path.join(workdir, '.lock'))

  # Requeued: the same command under SLURM, no process flags.
  procs, port = _popen_slurm(workdir, env, 4)
  outputs = ph.communicate_all(procs)
  for i, (proc, (_, err)) in enumerate(zip(procs, outputs)):
    assert proc.returncode == 0, err[-3000:]
    assert (
      f'multi-host: SLURM step detected; process {i} of 4, coordinator '
      f'localhost:{port}.'
    ) in err
  assert f'resuming from {workdir}/checkpoints step {step}' in (
    outputs[0][1].replace(os.path.realpath(workdir), workdir)
  )

  # Uninterrupted 4-process run with explicit flags: the same parameters.
  reference = str(tmp_path / 'uninterrupted')
  errs = ph.run_processes(reference, env, ARGS, 4)
  assert 'multi-host: explicit flags; process 3 of 4' in errs[3]
  ph.assert_trees(
    ph.read_params(workdir, STEPS), ph.read_params(reference, STEPS), True
  )
  assert ph.read_losses(workdir) == ph.read_losses(reference)
