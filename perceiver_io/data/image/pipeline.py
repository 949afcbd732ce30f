"""The image-classification pipeline: shard, shuffle, augment or evaluate, batch.

Why this module exists: on top of the official recipe, a framework needs
per-process sharding, padded evaluation batches with a mask (so every process
yields as many batches and every example counts once), and streams that are
reproducible and resumable.

Randomness: every random choice is a function of the seed, the training
shard and the example's global position (never of the process), so a given
seed always yields the same global batches on any process count, and
restarting with `start_batch=k` yields exactly batch k onwards of the
uninterrupted stream.
"""

import math
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from perceiver_io.data import shards as shards_lib
from perceiver_io.data.image.augment import train_preprocess
from perceiver_io.data.image.decoding import _NamedDecodeErrors
from perceiver_io.data.image.decoding import decode_image
from perceiver_io.data.image.evaluation import eval_preprocess
from perceiver_io.data.image.evaluation import IMAGE_SIZE
from perceiver_io.data.image.lazy_tf import import_tf
from perceiver_io.data.image.sources import _make_source
from perceiver_io.data.image.sources import _TableSource
from perceiver_io.data.image.sources import _TfdsSource

Batch = Dict[str, np.ndarray]

# Seed of `max_examples` eval subsets: fixed, so that runs with other seeds score the same images.
EVAL_SUBSET_SEED = 0
# Fewest records a TFDS training shard's shuffle buffer holds.
MIN_SHARD_BUFFER = 64
# Files a TFDS training stream reads at once (TFDS's own default), shared
# by its shards: each open file holds an 8 MiB read buffer.
FILE_CYCLE = 16


def _stream_key(seed: int, stream: int) -> np.ndarray:
  """A [2] int64 key for one random stream (0: shuffling, 1: augmentation).

  The same on every process: streams are keyed by shard and global
  position, not by the process (the 0 keeps the keys of earlier runs)."""
  state = np.random.SeedSequence([seed, 0, stream]).generate_state(2, np.uint32)
  return state.astype(np.int64)


def make_image_dataset(
  source: str,
  split: str,
  *,
  batch_size: int,
  train: bool,
  image_size: int = IMAGE_SIZE,
  seed: int = 0,
  repeat: Optional[bool] = None,
  process_index: int = 0,
  process_count: int = 1,
  randaugment: Optional[Tuple[int, float]] = (4, 5),
  num_classes: Optional[int] = None,
  data_dir: Optional[str] = None,
  manual_dir: Optional[str] = None,
  class_names: Union[None, str, Sequence[str]] = None,
  start_batch: int = 0,
  geometry: Optional[str] = None,
  shuffle_buffer: Optional[int] = None,
  max_examples: int = -1,
  num_shards: int = 0,
) -> Tuple[Iterator[Batch], Dict[str, Any]]:
  """Builds this process's stream of batches for an image-classification source.

  Train streams shuffle (a fresh permutation per epoch), augment with `train_preprocess`, and drop
  the last partial batch. Eval streams keep the order, use `eval_preprocess`, and pad the last
  batches with `mask == 0` examples so that every process yields the same number of batches and
  every example is counted exactly once.

  Args:
    source: see `perceiver_io.data.image.sources` ('imagenet2012', 'tfds:<name>', 'digits',
      'synthetic:<K>[:<N>]', or a directory).
    split: 'train', 'validation'/'test', or any TFDS split string for TFDS sources. For a
      directory, `<dir>/<split>` is used if it exists, else `<dir>` itself.
    batch_size: examples per batch on this process (global batch / process_count).
    train: training (shuffle + augment) or evaluation (ordered, padded) stream.
    image_size: output side in pixels.
    seed: non-negative integer; the whole stream is a function of it.
    repeat: loop over the data forever; default True for train, False for eval.
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()); each reads a disjoint shard.
    randaugment: (num_layers, magnitude) for training, or None. Ignored for eval.
    num_classes: expected number of classes; checked against the source (default: inferred).
    data_dir: TFDS data directory.
    manual_dir: TFDS manual download directory (for preparing imagenet2012 once).
    class_names: ordered class list (sequence or CSV/text file) for folder sources.
    start_batch: skip this many batches of the stream (resume); the batches that follow are
      identical to those of an uninterrupted stream.
    geometry: 'imagenet' (Inception crop / centre crop) or 'resize' (whole image); the default
      is 'imagenet' for photos (TFDS, folders) and 'resize' for digits and synthetic data.
    shuffle_buffer: TFDS training: shuffle buffer over all S shards, each
      shard's stream holding 1/S of it (at least MIN_SHARD_BUFFER); default
      max(16 * global batch, 10_000).
    num_shards: training streams: the rows are cut into this many fixed
      contiguous shards (0: one per process; TFDS: `tfds.even_splits`),
      process i of n owns shards [iS/n, (i+1)S/n), and every global batch
      takes (j+1)B//S - jB//S rows from shard j, drawn from its own
      per-epoch order; so with the same S, 1, 2 or 4 processes train on the
      same global batches (augmentation keyed by the global position). S
      must be a multiple of process_count.
    max_examples: eval streams of folders, digits and synthetic data: at most this many examples,
      a seeded random subset in source order, the same on every call and process (a folder of
      class folders lists its images class by class, so its first ones are a few classes);
      <= 0: all. TFDS streams ignore it (their callers stop early).

  Returns:
    (iterator of dicts with 'image' float32 [B, S, S, 3], 'label' int32 [B], 'mask' int32 [B]
    (1 = real example), info dict with 'num_examples' (whole split), 'num_examples_this_process',
    'num_classes', 'class_names' (or None), 'num_batches' (per pass over this process's shard;
    equal on all processes for eval), 'image_shape').
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  if not (isinstance(seed, (int, np.integer)) and seed >= 0):
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}.')
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
      f'Need 0 <= process_index < process_count, got {process_index} and '
      f'{process_count}.'
    )
  if start_batch < 0:
    raise ValueError(f'start_batch must be >= 0, got {start_batch}.')
  if randaugment is not None and len(tuple(randaugment)) != 2:
    raise ValueError(
      f'randaugment must be (num_layers, magnitude) or None, got {randaugment!r}.'
    )
  repeat = train if repeat is None else repeat
  tf = import_tf()
  src = _make_source(
    source, split, data_dir, manual_dir, class_names, num_classes
  )
  geometry = geometry or src.geometry
  if geometry not in ('imagenet', 'resize'):
    raise ValueError(
      f'geometry must be "imagenet" or "resize", got {geometry!r}.'
    )
  shuffle_key = _stream_key(int(seed), 0)
  augment_key = _stream_key(int(seed), 1)

  def preprocess(image, label, position):
    if train:
      example_seed = tf.random.experimental.stateless_fold_in(
        tf.constant(augment_key), position
      )
      image = train_preprocess(
        image,
        example_seed,
        image_size=image_size,
        randaugment=randaugment,
        geometry=geometry,
      )
    else:
      image = eval_preprocess(image, image_size=image_size, geometry=geometry)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return {
      'image': image,
      'label': tf.cast(label, tf.int32),
      'mask': tf.constant(1, tf.int32),
    }

  def padding_example(_):
    return {
      'image': tf.zeros([image_size, image_size, 3], tf.float32),
      'label': tf.constant(0, tf.int32),
      'mask': tf.constant(0, tf.int32),
    }

  if isinstance(src, _TableSource):
    ds, total, shard_size, indices_at = _table_stream(
      tf,
      src,
      train,
      repeat,
      batch_size,
      start_batch,
      process_index,
      process_count,
      shuffle_key,
      preprocess,
      padding_example,
      max_examples,
      num_shards,
    )
  else:
    ds, total, shard_size = _tfds_stream(
      tf,
      src,
      train,
      repeat,
      batch_size,
      start_batch,
      process_index,
      process_count,
      seed,
      shuffle_buffer,
      preprocess,
      padding_example,
      num_shards,
    )
  if train:
    num_batches = shard_size // batch_size
  else:
    num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  info = {
    'num_examples': total,
    'num_examples_this_process': shard_size,
    'num_classes': src.num_classes,
    'class_names': list(src.class_names)
    if src.class_names is not None
    else None,
    'num_batches': num_batches,
    'image_shape': (image_size, image_size, 3),
  }
  iterator = ds.as_numpy_iterator()
  if isinstance(src, _TableSource) and src.paths is not None:
    iterator = _NamedDecodeErrors(
      iterator, src.paths, indices_at, batch_size, f'{source} [{split}]'
    )
  return iterator, info


def _plain(tf, fn):
  """Marks a map function as plain TF code: skipping AutoGraph makes tracing much faster."""
  return tf.autograph.experimental.do_not_convert(fn)


def _check_shard_count(count, global_batch, total, process_count):
  if count % process_count or count < 1:
    raise ValueError(
      f'num_shards={count} must be a positive multiple of the process '
      f'count {process_count}.'
    )
  if count > min(global_batch, total):
    raise ValueError(
      f'num_shards={count} must be at most the global batch '
      f'{global_batch} and the {total} training examples.'
    )


class _ShardPlan:
  """Which shard and which draw of it each slot of a local batch takes.

  `slots[name][k]` for slot k of this process's batch: 'first' (the
  shard's first row), 'size' (its rows), 'take' (its rows per global
  batch), 'offset' (the slot's place among them) and 'stream' (S * 2**20 +
  j, the shard's permutation stream).
  """

  def __init__(self, total, count, batch_size, process_index, process_count):
    self.global_batch = batch_size * process_count
    _check_shard_count(count, self.global_batch, total, process_count)
    self.bounds = bounds = shards_lib.bounds(total, count)
    owned = shards_lib.owned(count, process_index, process_count)
    rows = {j: shards_lib.rows_of(self.global_batch, count, j) for j in owned}
    take = {j: hi - lo for j, (lo, hi) in rows.items()}
    shards = np.repeat(np.asarray(owned, np.int64), [take[j] for j in owned])
    self.rows = bounds[owned[-1] + 1] - bounds[owned[0]]
    self.slots = {
      'first': np.asarray([bounds[j] for j in shards], np.int64),
      'size': np.asarray([bounds[j + 1] - bounds[j] for j in shards], np.int64),
      'take': np.asarray([take[j] for j in shards], np.int64),
      'offset': np.concatenate([np.arange(take[j]) for j in owned]),
      'stream': np.asarray([count * 2**20 + j for j in shards], np.int64),
    }


def _table_stream(
  tf,
  src: _TableSource,
  train,
  repeat,
  batch_size,
  start_batch,
  process_index,
  process_count,
  shuffle_key,
  preprocess,
  padding_example,
  max_examples=-1,
  num_shards=0,
):
  """Positions -> examples for an index-addressable source. Returns (ds, total, shard_size)."""
  rows = np.arange(src.num_examples, dtype=np.int64)
  if not train and 0 < max_examples < src.num_examples:
    rng = np.random.default_rng(EVAL_SUBSET_SEED)
    rows = np.sort(rng.choice(src.num_examples, max_examples, replace=False))
  shard = rows[process_index::process_count]
  shard_size = len(shard)
  start = start_batch * batch_size
  if train:
    plan = _ShardPlan(
      src.num_examples,
      num_shards or process_count,
      batch_size,
      process_index,
      process_count,
    )
    shard_size = plan.rows
    if shard_size < batch_size:
      raise ValueError(
        f'Process {process_index} has {shard_size} training examples, fewer than '
        f'one batch of {batch_size}.'
      )
    stop = (
      np.iinfo(np.int64).max if repeat else shard_size - shard_size % batch_size
    )
    positions = tf.data.Dataset.range(start, stop)
    table = {k: tf.constant(v) for k, v in plan.slots.items()}

    def row_at(position):
      # Shard j's own permutation per epoch, computed per position: skipping is free.
      k = position % batch_size
      get = lambda name: tf.gather(table[name], k)  # noqa: E731
      drawn = position // batch_size * get('take') + get('offset')
      size = get('size')
      key = tf.constant(shuffle_key)
      if len(plan.bounds) > 2:  # One shard: the single global permutation.
        key = tf.random.experimental.stateless_fold_in(key, get('stream'))
      key = tf.random.experimental.stateless_fold_in(key, drawn // size)
      slot = tf.random.experimental.index_shuffle(drawn % size, key, size - 1)
      return get('first') + slot

    def example(position):
      global_position = (
        position // batch_size * plan.global_batch
        + process_index * batch_size
        + position % batch_size
      )
      image, label = src.load(row_at(position))
      return preprocess(image, label, global_position)

    ds = positions.map(_plain(tf, example), num_parallel_calls=tf.data.AUTOTUNE)

    def indices_at(offsets):
      # Source indices of the examples at these offsets of the stream.
      return np.asarray(
        [int(row_at(tf.constant(int(o) + start, tf.int64))) for o in offsets],
        np.int64,
      )
  else:
    padded = (
      math.ceil(math.ceil(len(rows) / process_count) / batch_size) * batch_size
    )

    def example(position):
      real = position < shard_size
      return tf.cond(
        real,
        lambda: preprocess(
          *src.load(tf.gather(shard, tf.minimum(position, shard_size - 1))),
          position,
        ),
        lambda: padding_example(position),
      )

    positions = tf.data.Dataset.range(padded)
    if repeat:
      positions = positions.repeat()
    ds = positions.skip(start).map(
      _plain(tf, example), num_parallel_calls=tf.data.AUTOTUNE
    )

    def indices_at(offsets):
      position = (np.asarray(offsets, np.int64) + start) % padded
      return shard[position[position < shard_size]]

  return ds, len(rows), shard_size, indices_at


def _tfds_stream(
  tf,
  src: _TfdsSource,
  train,
  repeat,
  batch_size,
  start_batch,
  process_index,
  process_count,
  seed,
  shuffle_buffer,
  preprocess,
  padding_example,
  num_shards=0,
):
  """Records -> examples for a TFDS source. Returns (ds, total, shard_size)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  decoders = {'image': tfds.decode.SkipDecoding()}
  total = _tfds_num_examples(src, decoders)
  if train:
    return _tfds_train_stream(
      tf,
      tfds,
      src,
      total,
      decoders,
      repeat,
      batch_size,
      start_batch,
      process_index,
      process_count,
      seed,
      shuffle_buffer,
      preprocess,
      num_shards or process_count,
    )
  # Evaluation needs no common order: this process's block, in order.
  splits = tfds.even_splits(src.split, n=process_count, drop_remainder=False)
  ds = src.builder.as_dataset(
    split=splits[process_index], shuffle_files=False, decoders=decoders
  )
  shard_size = int(ds.cardinality())
  if shard_size < 0:
    raise ValueError(f'Cannot count the examples of {src.name}:{src.split}.')
  padded = math.ceil(math.ceil(total / process_count) / batch_size) * batch_size
  if shard_size > padded:
    raise ValueError(
      f'{src.name}:{src.split} shard {process_index} has {shard_size} examples, '
      f'more than the {total} / {process_count} expected; split metadata and '
      'data disagree.'
    )
  real = ds.enumerate().map(
    _plain(
      tf,
      lambda position, ex: preprocess(
        decode_image(ex['image']), ex['label'], position
      ),
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  pads = tf.data.Dataset.range(padded - shard_size).map(
    _plain(tf, padding_example)
  )
  ds = real.concatenate(pads)
  if repeat:
    ds = ds.repeat()
  return ds.skip(start_batch * batch_size), total, shard_size


def _tfds_num_examples(src: _TfdsSource, decoders) -> int:
  """Examples in the split: its metadata, else (mocked data) a count."""
  try:
    total = int(src.builder.info.splits[src.split].num_examples)
  except (KeyError, ValueError, TypeError):
    total = 0
  if total <= 0:
    total = int(
      src.builder.as_dataset(split=src.split, decoders=decoders).cardinality()
    )
  if total < 0:
    raise ValueError(f'Cannot count the examples of {src.name}:{src.split}.')
  return total


def _tfds_train_stream(
  tf,
  tfds,
  src: _TfdsSource,
  total,
  decoders,
  repeat,
  batch_size,
  start_batch,
  process_index,
  process_count,
  seed,
  shuffle_buffer,
  preprocess,
  count,
):
  """The fixed-shard training stream of a TFDS split (see `num_shards`).

  Shard j is `tfds.even_splits(split, count)[j]`, read in its own order:
  files and shuffle buffer seeded by (seed, count, j), reshuffled each
  epoch, repeated. Each global batch takes the next rows_of(j) records of
  every shard; a process zips its shards' parts in shard order. With one
  shard the seeds are `seed` itself: the single-process stream. The shuffle
  buffer and the files read at once are split over the shards by `count`
  alone (by the process count they would change the order): one process
  holds the one-shard buffer and about max(FILE_CYCLE, count) open files.
  """
  global_batch = batch_size * process_count
  _check_shard_count(count, global_batch, total, process_count)
  splits = tfds.even_splits(src.split, n=count, drop_remainder=False)
  buffer = shuffle_buffer or max(16 * global_batch, 10_000)
  buffer = max(-(-buffer // count), MIN_SHARD_BUFFER)
  options = tf.data.Options()
  options.deterministic = True
  streams, shard_size = [], 0
  for j in shards_lib.owned(count, process_index, process_count):
    lo, hi = shards_lib.rows_of(global_batch, count, j)
    shard_seed = seed if count == 1 else _shard_seed(seed, count, j)
    ds = src.builder.as_dataset(
      split=splits[j],
      shuffle_files=True,
      read_config=tfds.ReadConfig(
        shuffle_seed=shard_seed,
        shuffle_reshuffle_each_iteration=True,
        interleave_cycle_length=max(FILE_CYCLE // count, 1),
        options=options,
      ),
      decoders=decoders,
    )
    size = int(ds.cardinality())
    if size < hi - lo:
      raise ValueError(
        f'{src.name}:{src.split} shard {j} of {count} has {size} examples, '
        f'fewer than its {hi - lo} of every global batch of {global_batch}; '
        'use fewer shards (num_shards) or a smaller batch.'
      )
    shard_size += size
    ds = ds.map(_plain(tf, lambda ex: (ex['image'], ex['label'])))
    ds = ds.shuffle(buffer, seed=shard_seed, reshuffle_each_iteration=True)
    # Skipping happens on encoded records (no decoding), before batching.
    ds = ds.repeat().skip(start_batch * (hi - lo))
    streams.append(ds.batch(hi - lo, drop_remainder=True))
  ds = tf.data.Dataset.zip(tuple(streams))
  if not repeat:
    ds = ds.take(max(shard_size // batch_size - start_batch, 0))

  def rows(step, parts):
    # The example's global position keys its augmentation.
    first = step * global_batch + process_index * batch_size
    return (
      first + tf.range(batch_size, dtype=tf.int64),
      tf.concat([images for images, _ in parts], 0),
      tf.concat([labels for _, labels in parts], 0),
    )

  ds = ds.enumerate(start_batch).map(_plain(tf, rows)).unbatch()
  ds = ds.map(
    _plain(
      tf,
      lambda position, image, label: preprocess(
        decode_image(image), label, position
      ),
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return ds, total, shard_size


def _shard_seed(seed: int, count: int, j: int) -> int:
  """Shard j of `count`'s own tf.data seed (files and shuffle buffer)."""
  state = np.random.SeedSequence([seed, count, j]).generate_state(2, np.uint32)
  return int(state[0]) << 31 | int(state[1]) >> 1
