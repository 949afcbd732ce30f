"""Data and fully-sharded data parallelism with jit over a 2-D Mesh.

Why: `jax.pmap` is in maintenance mode; `jax.jit` over a `Mesh` is the
modern form and scales unchanged to many hosts. The mesh has two axes,
'data' x 'fsdp' (sizes from `config.mesh`): the batch is split over both,
and parameters and optimizer state are split over 'fsdp' by a rule per
parameter (`experiments.partition_rules`), so XLA all-gathers each weight
where it is used (ZeRO-3 style) and each device keeps 1/fsdp of the state.
Each process hands over only its own rows
(`jax.make_array_from_process_local_data`).
"""

from typing import Any, Dict, List, Tuple

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import partition_rules

DATA_AXIS = 'data'
FSDP_AXIS = partition_rules.FSDP_AXIS
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def mesh_shape(data: int, fsdp: int, device_count: int) -> Tuple[int, int]:
  """(data, fsdp) with a -1 resolved to the rest of `device_count`.

  Raises:
    ValueError: one line naming the shapes that fit `device_count`.
  """
  data, fsdp = int(data), int(fsdp)
  valid = [
    f'({d},{device_count // d})'
    for d in range(1, device_count + 1)
    if device_count % d == 0
  ]
  fix = (
    f'valid (data, fsdp) for {device_count} device(s): {", ".join(valid)}; '
    '-1 for one of them means the rest.'
  )
  given = f'config.mesh.data={data}, config.mesh.fsdp={fsdp}'
  if data == fsdp == -1 or any(n == 0 or n < -1 for n in (data, fsdp)):
    raise ValueError(f'{given}: not a mesh shape; {fix}')
  if data == -1 or fsdp == -1:
    known = fsdp if data == -1 else data
    if device_count % known:
      raise ValueError(
        f'{given}: {known} does not divide the {device_count} device(s); {fix}'
      )
    rest = device_count // known
    return (rest, fsdp) if data == -1 else (data, rest)
  if data * fsdp != device_count:
    raise ValueError(
      f'{given}: {data}x{fsdp} is not the {device_count} device(s); {fix}'
    )
  return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh over `devices` (default: all devices of all
  processes).

  Devices keep `jax.devices()` order (process by process), so each
  process's devices hold one contiguous block of the batch, the rows it
  feeds (`global_batch`); 'fsdp' is the faster-varying axis, inside a host
  where it fits.
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  shape = mesh_shape(data, fsdp, devices.size)
  return Mesh(devices.reshape(shape), BATCH_AXES)


def axis_sizes(mesh: Mesh) -> Dict[str, int]:
  return dict(zip(mesh.axis_names, mesh.devices.shape))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(
  abstract_state: Any, mesh: Mesh, min_size: int = 0
) -> Tuple[Any, List[str]]:
  """(a NamedSharding per leaf of the train state, the paths whose rule
  wanted a split that the fsdp size does not divide) by
  `partition_rules`; leaves of fewer than `min_size` elements stay
  replicated."""
  specs, unsplit = partition_rules.state_specs(
    abstract_state, axis_sizes(mesh)[FSDP_AXIS], min_size
  )
  shardings = jax.tree_util.tree_map(
    lambda s: NamedSharding(mesh, s),
    specs,
    is_leaf=lambda s: isinstance(s, P),
  )
  return shardings, unsplit


def state_bytes_per_device(abstract_state: Any, shardings: Any) -> int:
  """Bytes of `abstract_state` each device holds when laid out as
  `shardings` (from shapes alone: nothing is allocated)."""
  leaves = jax.tree_util.tree_leaves(shardings)
  if not leaves:
    return 0
  specs = jax.tree_util.tree_map(lambda s: s.spec, shardings)
  return partition_rules.bytes_per_device(
    abstract_state, specs, axis_sizes(leaves[0].mesh)
  )


def format_bytes(n: int) -> str:
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= size:
      return f'{n / size:.2f} {unit}'
  return f'{n} B'


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data' and 'fsdp'; other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(
  global_batch: int, mesh: Mesh, what: str = 'batch_size'
) -> None:
  if global_batch % mesh.size:
    raise ValueError(
      f'{what}={global_batch} must be divisible by the number '
      f'of devices ({mesh.size}); use a multiple of '
      f'{mesh.size}.'
    )


def global_batch(
  local_batch: Dict[str, np.ndarray], mesh: Mesh
) -> Dict[str, jax.Array]:
  """Assembles this process's rows into global arrays (`batch_sharding`).

  Args:
    local_batch: arrays whose leading axis is this process's share of the
      global batch (global batch / process count rows).
    mesh: the mesh.

  Returns:
    Global jax.Arrays of leading size local * process_count.
  """
  sharding = batch_sharding(mesh)
  n = jax.process_count()

  def one(x):
    x = np.asarray(x)
    shape = (x.shape[0] * n,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, shape)

  return {k: one(v) for k, v in local_batch.items()}


def to_host(tree: Any) -> Any:
  """Fully replicated or fully addressable arrays -> NumPy on every host."""
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
