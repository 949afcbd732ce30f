"""Joining the processes of a multi-host job: explicit flags or the cluster.

Why a module of its own: a user moves from one GPU to `srun` on a cluster,
and the launcher must decide, before JAX starts, whether this process is
one of many, which one, and where process 0 listens; and say so in one
line, because a job that waits for a process that never comes looks hung.
`plan` reads only the flags and the environment (no JAX), so every case is
a plain unit test; `initialize` then calls `jax.distributed.initialize`.

What JAX detects by itself (`jax.distributed.initialize()` without
arguments, JAX 0.10-0.12, `jax/_src/clusters/`): SLURM (inside an `srun`
step: SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID,
SLURM_LOCALID; coordinator = the step's first node, port 61440 +
job id mod 4096 unless JAX_COORDINATOR_PORT), Open MPI (`mpirun`:
OMPI_MCA_orte_hnp_uri), Kubernetes (KUBERNETES_SERVICE_HOST with the
`kubernetes` package: JobSet/indexed Jobs), Cloud TPU VMs (GCE and GKE);
mpi4py only on request (`cluster_detection_method='mpi4py'`). Explicit
flags always win over what a cluster says.

This module imports no JAX at the top: the launchers import it before
`process_tuning.configure_process`.
"""

import dataclasses
import logging
import os
from typing import Mapping, Optional

# SLURM variables JAX's SlurmCluster needs (an `srun` step sets them all).
SLURM_VARS = (
  'SLURM_JOB_ID',
  'SLURM_STEP_NODELIST',
  'SLURM_NTASKS',
  'SLURM_PROCID',
  'SLURM_LOCALID',
)
# Cluster kinds by the variable that shows each (Kubernetes and Cloud TPU are
# left to JAX: their detection queries services).
_ENV_CLUSTERS = (('Open MPI', 'OMPI_MCA_orte_hnp_uri'),)
DETECTED_BY_JAX = 'SLURM (srun), Open MPI (mpirun), Kubernetes, Cloud TPU'
_FLAGS_HINT = (
  'give --coordinator_address=HOST:PORT --num_processes=N --process_id=I '
  '(the same address and N on every process, I = 0..N-1)'
)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How this process joins its job (`initialize` carries it out).

  kind: 'single' (no jax.distributed), 'flags' (explicit), 'slurm' or
  'cluster' (JAX's own detection of another cluster kind).
  Unknown values (left to JAX) are None.
  """

  kind: str
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  coordinator: Optional[str] = None

  @property
  def distributed(self) -> bool:
    return self.kind != 'single'


def slurm_step(environ: Mapping[str, str]) -> Optional[Plan]:
  """The SLURM step this process is a task of, if it is one of several.

  A step of one task (a plain `sbatch` script, `salloc`) is not a
  multi-process job; neither is a batch script outside `srun` (no
  SLURM_STEP_NODELIST), where SLURM_NTASKS counts tasks not started.
  """
  if not all(environ.get(v) for v in SLURM_VARS):
    return None
  try:
    count = int(environ['SLURM_NTASKS'])
    index = int(environ['SLURM_PROCID'])
    job = int(environ['SLURM_JOB_ID'])
  except ValueError:
    return None
  if count < 2:
    return None
  port = environ.get('JAX_COORDINATOR_PORT') or str(job % 4096 + 61440)
  return Plan('slurm', count, index, f'{first_node(environ)}:{port}')


def first_node(environ: Mapping[str, str]) -> str:
  """The first host of SLURM_STEP_NODELIST ('node[003-005,9],gpu1' ->
  'node003'), the one JAX makes the coordinator."""
  nodes = environ['SLURM_STEP_NODELIST']
  head = nodes.split(',', 1)[0]
  if '[' not in head:
    return head
  prefix, _, ranges = nodes.partition('[')
  return prefix + ranges.split(',', 1)[0].split('-', 1)[0].rstrip(']')


def other_cluster(environ: Mapping[str, str]) -> Optional[str]:
  """The name of a non-SLURM cluster kind shown by the environment."""
  for name, variable in _ENV_CLUSTERS:
    if environ.get(variable):
      return name
  return None


def plan(
  coordinator_address: str,
  num_processes: int,
  process_id: int,
  environ: Optional[Mapping[str, str]] = None,
) -> Plan:
  """How to join, from the three flags and the environment.

  * `--num_processes=-1`: JAX detects the cluster; an error if the
    environment shows none of the kinds it knows (and no explicit
    `--coordinator_address`).
  * flags with N > 1: exactly those (they win over a cluster).
  * no flags inside a SLURM step of several tasks: SLURM, detected.
  * otherwise one process.

  Raises ValueError (one line) for a combination that cannot work.
  """
  environ = os.environ if environ is None else environ
  if num_processes == 0 or num_processes < -1:
    raise ValueError(
      f'--num_processes={num_processes}: give the number of processes of '
      'the job (1 = this one alone), or -1 to detect the cluster '
      f'({DETECTED_BY_JAX}).'
    )
  if coordinator_address:
    host, _, port = coordinator_address.rpartition(':')
    if not host or not port.isdigit():
      raise ValueError(
        f'--coordinator_address={coordinator_address!r} is not HOST:PORT '
        "(process 0's host name or address and a free port, e.g. "
        'node001:12345).'
      )
  if num_processes == -1:
    if process_id != 0 and not coordinator_address:
      raise ValueError(
        '--process_id with --num_processes=-1: the cluster numbers the '
        'processes; drop --process_id, or ' + _FLAGS_HINT + '.'
      )
    step = slurm_step(environ)
    if step is not None:
      if coordinator_address:
        return dataclasses.replace(step, coordinator=coordinator_address)
      return step
    kind = other_cluster(environ)
    if kind is None and not coordinator_address:
      kind = _jax_detected_cluster()
    if kind is None and not coordinator_address:
      raise ValueError(
        '--num_processes=-1 asks JAX to detect the cluster, but this '
        f'environment shows none it knows ({DETECTED_BY_JAX}); launch with '
        'srun/mpirun, or ' + _FLAGS_HINT + '.'
      )
    return Plan('cluster', coordinator=coordinator_address or None)
  if num_processes > 1:
    if not 0 <= process_id < num_processes:
      raise ValueError(
        f'--process_id={process_id} is outside 0..{num_processes - 1} '
        f'(--num_processes={num_processes}).'
      )
    if not coordinator_address:
      raise ValueError(
        f'--num_processes={num_processes} needs --coordinator_address='
        'HOST:PORT of process 0 (or --num_processes=-1 inside a cluster '
        f'job: {DETECTED_BY_JAX}).'
      )
    return Plan('flags', num_processes, process_id, coordinator_address)
  if coordinator_address or process_id:
    raise ValueError(
      '--coordinator_address/--process_id need --num_processes=N > 1 '
      '(or -1 to detect the cluster); alone this process would wait for '
      'no one.'
    )
  return slurm_step(environ) or Plan('single')


def _jax_detected_cluster() -> Optional[str]:
  """The cluster kind JAX's own detection finds, or None.

  Uses JAX's private cluster registry (the list `initialize()` walks); if
  it moved, the answer is 'unknown' and `initialize` decides.
  """
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top

    for env in clusters.ClusterEnv._cluster_types:  # noqa: SLF001
      if not env.opt_in_only_method and env.is_env_present():
        return env.name or env.__name__
  except (ImportError, AttributeError):
    return 'unknown'
  return None


def describe(joined: Plan, process_index: int, process_count: int) -> str:
  """The launcher's one line about how this process joined."""
  how = {
    'flags': 'explicit flags',
    'slurm': 'SLURM step detected',
    'cluster': 'cluster detected by JAX',
  }[joined.kind]
  where = joined.coordinator or _jax_coordinator() or 'unknown'
  return (
    f'multi-host: {how}; process {process_index} of {process_count}, '
    f'coordinator {where}.'
  )


def _jax_coordinator() -> Optional[str]:
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top

    return distributed.global_state.coordinator_address
  except (ImportError, AttributeError):
    return None


def initialize(joined: Plan) -> None:
  """`jax.distributed.initialize` as planned, then the one log line.

  A SLURM plan passes its values explicitly (what JAX would detect, so
  the log line and JAX agree); the others leave unknowns to JAX.
  """
  if not joined.distributed:
    return
  # Not at the top: JAX must load after `process_tuning.configure_process`.
  import jax  # pylint: disable=g-import-not-at-top

  kwargs = {}
  if joined.coordinator:
    kwargs['coordinator_address'] = joined.coordinator
  if joined.num_processes is not None:
    kwargs['num_processes'] = joined.num_processes
    kwargs['process_id'] = joined.process_id
  jax.distributed.initialize(**kwargs)
  logging.info('%s', describe(joined, jax.process_index(), jax.process_count()))
