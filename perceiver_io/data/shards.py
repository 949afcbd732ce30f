"""The arithmetic of fixed training shards, shared by every stream that
trains on them (tables in experiments/host_data.py, image folders, MLM
documents, multimodal clips): S shards of contiguous rows, process i of n
owns shards [iS/n, (i+1)S/n), and every global batch of B rows takes rows
[jB//S, (j+1)B//S) of it from shard j."""

from typing import List, Tuple

import numpy as np


def bounds(total: int, shards: int) -> List[int]:
  """Shard boundaries `total * j // shards`, j = 0..shards (nested: the
  bounds for n shards are among those for S when n divides S)."""
  return [total * j // shards for j in range(shards + 1)]


def owned(shards: int, process_index: int, process_count: int) -> range:
  """The shards process `process_index` of `process_count` reads."""
  per = shards // process_count
  return range(process_index * per, (process_index + 1) * per)


def rows_of(global_batch: int, shards: int, j: int) -> Tuple[int, int]:
  """Shard j's rows [start, stop) of every global batch."""
  return (j * global_batch // shards, (j + 1) * global_batch // shards)


def gather_counts(count, process_count):
  """A function from this process's counts to every process's: JAX's
  allgather; for processes simulated in one Python process (JAX runs
  fewer), `count(p)` reads process p's part to count it (a number or a row
  of numbers)."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() == process_count:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return multihost_utils.process_allgather
  return lambda local: np.asarray(
    [np.atleast_1d(count(p)) for p in range(process_count)], np.int64
  )
