"""In-memory tables per host: each process reads only its rows.

Why: a table (text files, GLUE TSVs, TFDS text, the digits) read whole by
every process costs each host the whole split's tokenising and memory, so
adding hosts would not add input capacity. Yet the runner's guarantee is
that training does not depend on the process count: global batch `step` is
a pure function of the step, and the union of the processes' rows of it is
the same batch a single process builds.

Both hold with fixed *shards*: the table's rows are cut into `S` contiguous
blocks (S from the config, never from the process count), and every global
batch takes a fixed number of rows from each block, `(j+1)B//S - jB//S`
from block j, drawn from block j's own stream (a fresh permutation of its
rows per epoch, seeded by (seed, S, j, epoch)). Process i of n (n divides
S) owns blocks [iS/n, (i+1)S/n), reads only their rows, and builds exactly
its rows of every global batch (`input_pipeline.process_slice`), so a
1-, 2-, 4- or 8-process run with the same S trains on the same batches,
row for row. With S = 1 this is the single global permutation of
`input_pipeline.batch_indices`.

An unsliced TSV, JSONL or CSV split (`perceiver_io/data/text/
line_tables.py`) is cut by bytes instead: block j = the rows whose line (a
CSV: record) starts in bytes [jN/S, (j+1)N/S), so a process reads only its
byte range (its blocks' row counts gathered into the bounds), and a run on
one process cuts the same blocks. A sliced or joined split keeps the equal
row blocks; each process reads the byte blocks that hold its rows.

Image folders (`perceiver_io/data/image/pipeline.py`), MLM documents
(`perceiver_io/data/text/mlm_shards.py`) and multimodal clips
(`experiments/tasks/multimodal_stream.py`) train on the same scheme, with
the shard count this module picks.

`config.data.num_shards = 0` (auto) picks the largest divisor of
gcd(batch_size, 64) that the process count divides and the table can fill:
8 for a batch of 8, so 1, 2, 4 and 8 processes see the same batches. A
process count that does not divide it (3 processes) gets a larger S from
the batch size's divisors, whose batches then differ from one process's.
An epoch is approximate: each block cycles at its own length (sizes differ
by at most one row).

Evaluation needs no common order, only every example exactly once: process
i reads its contiguous block of the split, keeps the rows of the fixed eval
subset (`input_pipeline.eval_rows`) that fall in it, and pads to the
largest process's count with weight-0 rows, so every process runs the same
number of eval batches.
"""

import math
from typing import Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np

from experiments import input_pipeline
from perceiver_io.data import shards as shards_lib
from perceiver_io.data.text import line_tables

Table = input_pipeline.Table
MAX_AUTO_SHARDS = 64


def tfds_bounds(total: int, count: int) -> List[int]:
  """Block boundaries as `tfds.even_splits(drop_remainder=False)` cuts them
  (the first `total % count` blocks one row longer)."""
  per, extra = divmod(total, count)
  return [k * per + min(k, extra) for k in range(count + 1)]


def num_shards(
  requested: int, batch_size: int, num_examples: int, process_count: int
) -> int:
  """The shard count S for a table (see the module docstring)."""
  if requested > 0:
    problem = None
    if requested % process_count:
      problem = f'a multiple of the process count {process_count}'
    elif requested > batch_size:
      problem = f'at most batch_size {batch_size}'
    elif requested > num_examples:
      problem = f'at most the {num_examples} training examples'
    if problem:
      raise ValueError(
        f'config.data.num_shards={requested} must be {problem} (each '
        'process reads whole shards and every batch draws from every '
        'shard); 0 picks one.'
      )
    return requested

  def fits(d):
    return d % process_count == 0 and d <= num_examples

  power_of_two = [
    d for d in _divisors(math.gcd(batch_size, MAX_AUTO_SHARDS)) if fits(d)
  ]
  choices = power_of_two or [d for d in _divisors(batch_size) if fits(d)]
  if not choices:
    raise ValueError(
      f'{num_examples} training examples cannot be shared by '
      f'{process_count} processes with batch_size {batch_size}.'
    )
  return max(choices)


def _divisors(n: int) -> List[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def shard_batch_rows(
  step: int,
  batch_size: int,
  bounds: Sequence[int],
  shards: Sequence[int],
  seed: int,
) -> np.ndarray:
  """Global row indices of the given shards' part of global batch `step`.

  `bounds`: the S + 1 shard boundaries; `shards`: which shards, in order.
  """
  count = len(bounds) - 1
  parts = [
    shard_rows(step, batch_size, count, j, bounds[j + 1] - bounds[j], seed)
    + bounds[j]
    for j in shards
  ]
  return np.concatenate(parts)


def shard_rows(
  step: int, batch_size: int, count: int, j: int, size: int, seed: int
) -> np.ndarray:
  """Shard j's part of global batch `step`, as indices into its own `size`
  rows (only the shard's own size is needed: a process reads no other)."""
  lo, hi = shards_lib.rows_of(batch_size, count, j)
  stream = () if count == 1 else (count, j)
  return input_pipeline.batch_indices(step, hi - lo, size, seed, stream)


class ShardedTableStream:
  """Step-indexed training batches of this process's shards of a table.

  `table` holds exactly the rows [bounds[first], bounds[last + 1]) of the
  split, where first..last are the shards this process owns.
  """

  def __init__(
    self,
    table: Table,
    bounds: Sequence[int],
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ):
    self.table, self.bounds = table, list(bounds)
    self.batch_size, self.seed = batch_size, seed
    input_pipeline.process_slice(batch_size, process_index, process_count)
    self.shards = shards_lib.owned(
      len(bounds) - 1, process_index, process_count
    )
    self.offset = self.bounds[self.shards[0]]
    rows = len(next(iter(table.values())))
    if rows != self.bounds[self.shards[-1] + 1] - self.offset:
      raise ValueError(
        f'process {process_index} holds {rows} rows, not its shards '
        f'{self.shards[0]}..{self.shards[-1]} '
        f'({self.bounds[self.shards[-1] + 1] - self.offset} rows).'
      )

  def batch(self, step: int) -> Table:
    idx = shard_batch_rows(
      step, self.batch_size, self.bounds, self.shards, self.seed
    )
    idx = idx - self.offset
    batch = {k: v[idx] for k, v in self.table.items()}
    batch['weight'] = np.ones(len(idx), np.float32)
    return batch


def process_counts(local: int) -> List[int]:
  """Every process's `local` count, in process order (a collective with
  several processes)."""
  if jax.process_count() == 1:
    return [int(local)]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  gathered = multihost_utils.process_allgather(np.asarray([local], np.int64))
  return [int(n) for n in np.asarray(gathered).reshape(-1)]


def eval_plan(
  process_sizes: Sequence[int], max_examples: int = -1
) -> Tuple[List[np.ndarray], int]:
  """(per process: its local rows to score, in order; the total scored).

  `process_sizes`: how many rows of the split each process holds
  (contiguous blocks in process order).
  """
  offsets = np.cumsum([0, *process_sizes])
  order = input_pipeline.eval_rows(int(offsets[-1]), max_examples)
  local = [
    order[(order >= offsets[p]) & (order < offsets[p + 1])] - offsets[p]
    for p in range(len(process_sizes))
  ]
  return local, len(order)


def sharded_eval_batches(
  table: Table,
  process_sizes: Sequence[int],
  global_batch: int,
  process_index: int,
  max_examples: int = -1,
) -> Iterator[Table]:
  """This process's eval batches: its rows of the eval subset, then weight-0
  padding up to the batch count of the process with the most rows."""
  count = len(process_sizes)
  per = global_batch // count
  input_pipeline.process_slice(global_batch, process_index, count)
  plan, _ = eval_plan(process_sizes, max_examples)
  mine = plan[process_index]
  num_batches = max(math.ceil(len(rows) / per) for rows in plan)
  for b in range(num_batches):
    idx = mine[b * per : (b + 1) * per]
    weight = np.zeros(per, np.float32)
    weight[: len(idx)] = 1.0
    padded = np.concatenate([idx, np.zeros(per - len(idx), idx.dtype)])
    batch = {k: v[padded] for k, v in table.items()}
    batch['weight'] = weight
    yield batch


def load_process_table(
  config,
  split: str,
  task: str,
  train: bool,
  process_index: Optional[int] = None,
  process_count: Optional[int] = None,
):
  """(this process's rows of `split`, info): the shards it owns (training)
  or its contiguous block (evaluation), read without the other rows.

  info adds 'bounds' (training: the S + 1 shard boundaries) and
  'process_sizes' (evaluation: every process's row count). The process
  defaults to JAX's.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  tfds = str(config.data.source).lower().startswith('tfds:')
  if train and tfds:  # Read shard by shard: TFDS cuts its own blocks.
    total = tfds_num_examples(config, split, task)
    shards = _train_shards(config, total, count)
    parts = [
      input_pipeline.load_table(
        config, split, task, j, shards, stats=count == 1 and j == 0
      )
      for j in shards_lib.owned(shards, index, count)
    ]
    table = {k: np.concatenate([p[k] for p, _ in parts]) for k in parts[0][0]}
    info = parts[0][1]
    info['num_examples'] = total
    info['bounds'] = tfds_bounds(total, shards)
    return table, info
  table, info = input_pipeline.load_table(
    config, split, task, index, count, stats=count == 1
  )
  if not train:
    info['process_sizes'] = list(info['num_examples_per_process'])
    return table, info
  total = int(info['num_examples'])
  shards = _train_shards(config, total, count)
  kind, _, path = str(config.data.source).partition(':')
  kind = kind.strip().lower()
  cuts = None
  if kind == 'csv' and line_tables.splittable(kind, split):
    name = line_tables.target(path, split)
    cuts = line_tables.csv_cuts(name, shards, index, count)
  if line_tables.splittable(kind, split) and (kind != 'csv' or cuts):
    info['bounds'] = _byte_shard_bounds(
      config, kind, path, split, shards, index, count, cuts
    )
    owned = shards_lib.owned(len(info['bounds']) - 1, index, count)
    rows = info['bounds'][owned.stop] - info['bounds'][owned.start]
    if rows != len(table['label']):  # The counts and the reader disagree.
      raise RuntimeError(
        f'{config.data.source} [{split}]: {rows} rows counted in this '
        f"process's byte range, {len(table['label'])} read."
      )
  else:
    info['bounds'] = shards_lib.bounds(total, shards)
  return table, info


def _byte_shard_bounds(config, kind, path, split, shards, index, count, cuts):
  """Training shards of a TSV/JSONL/CSV file cut by bytes as processes read
  it (`line_tables`; a CSV at its record starts `cuts`): row bounds from
  every shard's gathered row count. With `config.data.num_shards=0`, fewer
  shards if a shard would hold no row (lines longer than the file's size /
  S)."""
  has_header = bool(config.data.has_header)

  def counts_of(p):
    owned = shards_lib.owned(shards, p, count)
    return line_tables.shard_counts(
      kind, path, split, has_header, owned, shards, cuts
    )

  local = np.asarray(counts_of(index), np.int64)
  gathered = local
  if count > 1:
    gathered = shards_lib.gather_counts(counts_of, count)(local)
  counts = np.asarray(gathered).reshape(-1)
  auto = not int(config.data.get('num_shards', 0) or 0)
  for d in sorted(_divisors(shards), reverse=True) if auto else [shards]:
    grouped = counts.reshape(d, -1).sum(axis=1)
    if d % count == 0 and grouped.min() > 0:
      return [0] + np.cumsum(grouped).tolist()
  empty = int(np.argmin(counts))
  raise ValueError(
    f'{config.data.source} [{split}]: training shard {empty} of {shards} '
    f'(its bytes) holds no row; lower config.data.num_shards (0 picks '
    'one), or use fewer processes.'
  )


def tfds_num_examples(config, split: str, task: str) -> int:
  """Examples in a TFDS split, from its metadata (no record is read)."""
  from perceiver_io.data import text as text_data  # pylint: disable=g-import-not-at-top

  data = config.data
  _, info = text_data.make_text_dataset(
    data.source,
    split,
    max_length=int(data.max_length),
    batch_size=1,
    repeat=False,
    task=task if task == 'regression' else 'classification',
    compute_stats=False,
    **input_pipeline.text_source_kwargs(data),
  )
  return int(info.num_examples)


def _train_shards(config, total: int, count: int) -> int:
  return num_shards(
    int(config.data.get('num_shards', 0) or 0),
    int(config.batch_size),
    total,
    count,
  )
