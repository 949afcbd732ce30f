"""Training clips of the multimodal task, per host: each process opens and
decodes only its shards of the training split.

Why: decoding video is the expensive part of the input (a Kinetics epoch is
545k clips), so a process that decoded every clip would make more hosts add
no input capacity. The scheme is the tables' (`experiments/host_data.py`):
the split is cut into `S` fixed shards (`data.num_shards`, S from the
config and the batch, never from the process count; a shard is
`open_source(process_index=j, process_count=S)`, the same clips whoever
opens it), every global batch takes a fixed number of rows from each shard,
drawn from that shard's own per-epoch permutation, and process i of n owns
shards [iS/n, (i+1)S/n). So 1, 2 or 4 processes with the same S train on
the same batches, row for row, and a run resumes on another process count
with the same data order. A bad clip left out of a shard changes only that
shard's length, which only its owner needs.
"""

import concurrent.futures
import logging
from typing import Callable, Dict, List, Tuple


from experiments import host_data
from experiments import input_pipeline
from perceiver_io.data import shards as shards_lib


class ShardedClips:
  """This process's shards of the training split, and its rows of every
  global batch.

  `open_shard(j, count)` opens shard j of `count` (a `ClipSource`).
  """

  def __init__(
    self,
    open_shard: Callable[[int, int], object],
    *,
    batch_size: int,
    requested_shards: int,
    seed: int,
    num_workers: int = 1,
    process_index: int = 0,
    process_count: int = 1,
  ):
    input_pipeline.process_slice(batch_size, process_index, process_count)
    # The clip count is known only after opening: S is chosen as for a table
    # large enough, and an empty shard is one error below.
    self.count = host_data.num_shards(
      requested_shards, batch_size, batch_size, process_count
    )
    self.batch_size, self.seed = batch_size, seed
    self.process_index, self.process_count = process_index, process_count
    self.owned = list(
      shards_lib.owned(self.count, process_index, process_count)
    )
    self.shards = [open_shard(j, self.count) for j in self.owned]
    for j, shard in zip(self.owned, self.shards):  # Its bad-clip counts.
      logging.info('training shard %d of %d: %s', j, self.count, shard.summary)
    for j, shard in zip(self.owned, self.shards):
      if len(shard) < 1:
        raise ValueError(
          f'training shard {j} of {self.count} has no clips: the split has '
          f'too few for {self.count} shards; set data.num_shards to a '
          'smaller divisor of batch_size (a multiple of the process count).'
        )
    self.pool = concurrent.futures.ThreadPoolExecutor(max(num_workers, 1))

  def __len__(self) -> int:
    """Clips in this process's shards."""
    return sum(len(s) for s in self.shards)

  def total(self) -> int:
    """Clips in every process's shards (a collective with several)."""
    return sum(host_data.process_counts(len(self)))

  @property
  def first(self):
    return self.shards[0]

  def rows(self, step: int) -> List[Tuple[object, int]]:
    """(shard source, index in it) of this process's rows of global batch
    `step`, in batch order."""
    return [
      (shard, int(i))
      for j, shard in zip(self.owned, self.shards)
      for i in host_data.shard_rows(
        step, self.batch_size, self.count, j, len(shard), self.seed
      )
    ]

  def keys(self, step: int) -> List[str]:
    """The clips' names (`ClipSource.keys`) of `rows(step)`."""
    return [shard.keys[i] for shard, i in self.rows(step)]

  def clips(self, step: int) -> List[Dict[str, object]]:
    """This process's clips of global batch `step`, read in parallel."""
    return list(self.pool.map(lambda p: p[0][p[1]], self.rows(step)))

  def positions(self, step: int) -> range:
    """Stream positions of this process's rows of global batch `step`."""
    local = self.batch_size // self.process_count
    first = step * self.batch_size + self.process_index * local
    return range(first, first + local)


def summary(spec: str, clips: ShardedClips, total: int) -> str:
  """One line: the split's size and what this process reads of it."""
  lo, hi = clips.owned[0], clips.owned[-1]
  return (
    f'{spec}: {total} clips in {clips.count} shards; process '
    f'{clips.process_index} of {clips.process_count} reads shards {lo}..{hi}'
    f' ({len(clips)} clips, {clips.first.num_classes} classes)'
  )
