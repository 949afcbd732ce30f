"""A run resumes on another topology: other device and process counts, and
another mesh shape, all at once.

One run trains on 2 processes x 4 simulated devices (8 devices, mesh 2x4:
data across the processes, fsdp inside each), checkpointing at steps 2 and
4. A copy without step 4 is that run preempted after step 2; it resumes as
1 process of 2 devices with mesh 1x2 (Orbax restores the saved arrays
into the new target shardings) and must continue as the uninterrupted run
did: the same batches (the data order is a function of the step and the
global batch, not of the devices or processes: checked bit for bit below)
and the same parameters to float round-off. Not to the bit: steps 3-4 now
sum 2 batch shards where the first run summed 8 (and reduce-scatters over
fsdp=2, not 4), which adds in another order; every topology gives the
one-device result to round-off (tests/test_mesh_2d.py), and a resume on the
same topology is bit-identical (tests/test_experiments_parallel.py).
"""

import shutil

import numpy as np
import pytest

from experiments import input_pipeline
from tests import parallel_helpers as ph

STEPS = 4
FIELDS = dict(
  num_train_steps=STEPS,
  checkpoint_every_steps=2,
  eval_every_steps=100,
  batch_size=8,
  eval_batch_size=8,
  predict_examples=0,
  keep_checkpoints=3,
)
ARGS = [
  '--config=configs/quickstart.py:tiny',
  *(f'--config.{k}={v}' for k, v in FIELDS.items()),
]


@pytest.fixture(scope='module')
def eight_devices_two_processes(tmp_path_factory, subprocess_env):
  workdir = str(tmp_path_factory.mktemp('two_processes'))
  errs = ph.run_processes(
    workdir,
    ph.with_devices(subprocess_env, 4),
    ARGS + ['--config.mesh.data=2', '--config.mesh.fsdp=4'],
    2,
  )
  for err in errs:
    assert 'mesh: 8 devices over 2 process(es), data=2 x fsdp=4' in err
  return workdir


def _preempted_after_step_2(source, target):
  """A copy of `source` as if the run had stopped after checkpoint 2."""
  shutil.copytree(source, target)
  shutil.rmtree(target / 'checkpoints' / str(STEPS))
  return str(target)


@pytest.mark.slow
def test_eight_devices_of_two_processes_resume_on_two_devices_of_one(
  eight_devices_two_processes, tmp_path, subprocess_env
):
  uninterrupted = eight_devices_two_processes
  params = ph.read_params(uninterrupted, STEPS)
  losses = ph.read_losses(uninterrupted)
  workdir = _preempted_after_step_2(uninterrupted, tmp_path / 'w')
  proc = ph.run_train(
    workdir,
    ph.with_devices(subprocess_env, 2),
    ARGS + ['--config.mesh.data=1', '--config.mesh.fsdp=2'],
  )
  assert 'resuming from' in proc.stderr and 'step 2.' in proc.stderr
  assert 'mesh: 2 devices over 1 process(es), data=1 x fsdp=2' in proc.stderr
  resumed = ph.read_losses(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 1))
  for step in (1, 2):  # The first run's records, kept.
    assert resumed[step] == losses[step]
  for step in (3, 4):  # Written by the resumed run: the same batches.
    assert resumed[step] == pytest.approx(losses[step], rel=1e-5), step
  ph.assert_trees(ph.read_params(workdir, STEPS), params, exact=False)


@pytest.mark.parametrize('processes', [2, 4, 8])
def test_the_data_order_is_per_global_batch_not_per_device(processes):
  """The rows every process feeds at a step, in process order, are the one
  global batch of that step, bit for bit, whatever the process count."""
  table = {'x': np.arange(100, dtype=np.float32)}
  for step in (0, 3, 12):
    whole = input_pipeline.train_batch(table, step, 16, seed=7)
    parts = [
      input_pipeline.train_batch(table, step, 16, 7, i, processes)
      for i in range(processes)
    ]
    for key in ('x', 'weight'):
      np.testing.assert_array_equal(
        np.concatenate([p[key] for p in parts]), whole[key]
      )
