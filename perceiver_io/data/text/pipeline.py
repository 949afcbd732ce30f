"""Text classification / regression pipelines: read, tokenize, batch, shard, resume.

Why this module exists: Perceiver IO reads raw UTF-8 bytes, so every text task
needs the same steps (read examples from TFDS or local files, byte-tokenize to a
fixed length, batch, shard per host), and the runner should only see dicts of
NumPy arrays with fixed shapes. `make_text_dataset` does them for any source;
`perceiver_io.data.text.mlm` reuses the stream parts for masked LM.

Pipelines return a ``tf.data.Dataset`` of dicts of fixed-shape tensors
(iterate with ``ds.as_numpy_iterator()`` for NumPy) and an info object with
counts:

* Each process reads only its own contiguous shard of the split
  (`process_index` of `process_count`; TFDS via ``tfds.even_splits``). TFDS
  files are read in their stored order (already shuffled when TFDS prepared
  them); the shuffle buffer does the rest.
* Training (``repeat=True``) shuffles with a buffer, re-seeded every epoch
  with ``(seed, epoch)``, repeats forever, drops no example inside an epoch
  (batches run across epoch boundaries) and has full batches.
* Resuming: ``start_step=k`` yields exactly the batches k, k+1, ... that an
  uninterrupted run yields. The element offset ``k * batch_size`` is split
  into (epoch, position); the stream starts at that epoch (same per-epoch
  seed) and skips `position` raw examples before any tokenization, so a
  resume costs at most one epoch of reading, never of tokenizing.
* Evaluation (``repeat=False``) is one pass in order; the last batch is padded
  and every batch has a ``mask`` (1.0 real, 0.0 padding). Every process yields
  the same number of batches (extra all-padding batches where its shard is
  shorter), so a multi-host eval step never hangs and no example is dropped or
  counted twice.
* Batches: ``input_ids`` int32 [B, L], ``attention_mask`` int32 [B, L],
  ``label`` int32 (float32 for regression) [B], ``mask`` float32 [B],
  ``num_truncated`` int32 [B] (bytes cut from the example) and ``index`` int32
  [B] (position in the selected split, -1 for padding; for a TFDS split made
  of several ``+`` parts read by several processes it is the shard offset plus
  the position in the shard). MLM batches have
  ``mlm_labels`` (original id where masked, -100 elsewhere) and
  ``mlm_weights`` (1.0 where masked) instead of ``label``.

Bad data never passes silently: a missing file, a missing column, a short row
or a label outside the class list is one error naming the file and row. Empty
texts and invalid UTF-8 are kept (as bytes) and counted, and truncation is
counted, in `TextStats`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from perceiver_io import tokenizer as tokenizer_lib
from perceiver_io.data.text.fields import _class_map
from perceiver_io.data.text.fields import UNLABELED
from perceiver_io.data.text.glue import GLUE_TASKS
from perceiver_io.data.text.local import _is_utf8
from perceiver_io.data.text import line_tables
from perceiver_io.data.text.local import _Rows
from perceiver_io.data.text.tfds_source import _tfds_builder
from perceiver_io.data.text.tfds_source import _tfds_classes
from perceiver_io.data.text.tfds_source import _tfds_count
from perceiver_io.data.text.tfds_source import _tfds_even_splits
from perceiver_io.data.text.tfds_source import _tfds_fields
from perceiver_io.data.text.tfds_source import _tfds_raw

_LOCAL_KINDS = ('tsv', 'csv', 'jsonl', 'aclimdb', 'text')
_TASKS = ('classification', 'regression')


# ------------------------------------------------------------------ results
@dataclasses.dataclass
class TextStats:
  """Counts over the examples of a split, for the runner to log.

  Attributes:
    num_examples: examples in the split (all processes).
    num_empty: examples with an empty text (any text of a pair).
    num_invalid_utf8: examples whose bytes are not valid UTF-8 (kept as bytes).
    num_truncated: examples longer than max_length, cut.
    num_truncated_tokens: total bytes (tokens) cut.
    num_unlabeled: examples with label -1 (unlabelled test data).
    label_counts: class id -> count (classification only).
  """

  num_examples: int = 0
  num_empty: int = 0
  num_invalid_utf8: int = 0
  num_truncated: int = 0
  num_truncated_tokens: int = 0
  num_unlabeled: int = 0
  label_counts: dict[int, int] = dataclasses.field(default_factory=dict)

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class TextDatasetInfo:
  """What a pipeline yields, for the runner.

  Attributes:
    source: the source string.
    split: the split string.
    task: 'classification', 'regression' or 'mlm'.
    text_fields: the text field(s) read.
    label_field: the label field read (False if unlabelled / MLM).
    classes: class names in label-id order, or None.
    num_classes: number of classes (None for regression / MLM).
    num_examples: examples (documents for MLM) in the split, all processes.
    num_examples_per_process: the shard sizes, by process index.
    batch_size: per-process batch size.
    max_length: sequence length L.
    num_batches: batches per pass for this process (repeat=False), else None.
    steps_per_epoch: full batches in one pass over this process's shard.
    metrics: official metric names (GLUE), or ().
    stats: `TextStats`, or None when not computed (large TFDS training splits;
      each batch still carries `num_truncated`).
  """

  source: str
  split: str
  task: str
  text_fields: tuple[Any, ...]
  label_field: Any  # False when unlabelled.
  classes: tuple[str, ...] | None
  num_classes: int | None
  num_examples: int
  num_examples_per_process: tuple[int, ...]
  batch_size: int
  max_length: int
  num_batches: int | None
  steps_per_epoch: int
  metrics: tuple[str, ...] = ()
  stats: TextStats | None = None


# --------------------------------------------------------------- arguments
def parse_source(source: str) -> tuple[str, str]:
  """Splits ``'kind:rest'``; kind is tfds or one of the local kinds."""
  if not isinstance(source, str) or ':' not in source:
    raise ValueError(
      f'source {source!r} must look like "tfds:imdb_reviews", "tfds:glue/mrpc", '
      '"tsv:/path/dev.tsv", "csv:/path/train.csv", "jsonl:/path/x.jsonl", '
      '"aclimdb:/path/aclImdb" or "text:/path/*.txt".'
    )
  kind, rest = source.split(':', 1)
  kind = kind.strip().lower()
  if kind not in ('tfds',) + _LOCAL_KINDS or not rest:
    raise ValueError(
      f'unknown source kind {kind!r} in {source!r}; use one of '
      f'{("tfds",) + _LOCAL_KINDS} followed by ":" and a name or path.'
    )
  return kind, rest


def _check_int(name: str, value: Any, minimum: int) -> int:
  if (
    isinstance(value, bool)
    or not isinstance(value, (int, np.integer))
    or value < minimum
  ):
    raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}.')
  return int(value)


def _check_processes(process_index: int, process_count: int) -> None:
  _check_int('process_count', process_count, 1)
  _check_int('process_index', process_index, 0)
  if process_index >= process_count:
    raise ValueError(
      f'process_index={process_index} must be < process_count={process_count}.'
    )


# ------------------------------------------------------------------- stats
class _StatsCounter:
  """Accumulates `TextStats` over chunks of examples."""

  def __init__(self, tokenizer, max_length, task):
    self.stats = TextStats()
    self._tokenizer, self._max_length, self._task = tokenizer, max_length, task

  def add(self, text_a, text_b, labels) -> None:
    s = self.stats
    for i, a in enumerate(text_a):
      b = None if text_b is None else text_b[i]
      texts = [a] if b is None else [a, b]
      s.num_examples += 1
      s.num_empty += any(len(t) == 0 for t in texts)
      s.num_invalid_utf8 += any(not _is_utf8(t) for t in texts)
      cut = self._tokenizer.num_tokens(a, b) - self._max_length
      if cut > 0:
        s.num_truncated += 1
        s.num_truncated_tokens += cut
    labels = np.asarray(labels)
    s.num_unlabeled += int(np.sum(labels == UNLABELED))
    if self._task == 'classification':
      for value, count in zip(
        *np.unique(labels[labels != UNLABELED], return_counts=True)
      ):
        s.label_counts[int(value)] = s.label_counts.get(int(value), 0) + int(
          count
        )


# --------------------------------------------------------------- tf.data parts
def _epoch_stream(
  tf,
  base,
  *,
  num_examples,
  batch_size,
  start_step,
  shuffle,
  seed,
  shuffle_buffer,
  repeat,
  examples_per_step=None,
):
  """Raw-example stream that starts at batch `start_step` (see module doc)."""
  per_step = examples_per_step or batch_size
  offset = start_step * per_step
  first_epoch, skip = divmod(offset, num_examples) if repeat else (0, offset)
  buffer = max(1, min(shuffle_buffer, num_examples))

  def one_epoch(epoch):
    if not shuffle:
      return base
    epoch_seed = tf.constant(seed, tf.int64) * 1_000_003 + tf.cast(
      epoch, tf.int64
    )
    return base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  last_epoch = np.iinfo(np.int64).max if repeat else 1
  ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)
  return ds.skip(skip) if skip else ds


def _deterministic(tf, ds):
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def _tokenize_batch(
  text_a,
  text_b,
  label,
  index,
  *,
  tokenizer,
  max_length,
  batch_size,
  pair,
  regression,
):
  """NumPy: one raw batch -> fixed-shape arrays; pads a short batch (mask 0)."""
  num_real = len(text_a)
  num_pad = batch_size - num_real
  a = list(text_a) + [b''] * num_pad
  b = (list(text_b) + [b''] * num_pad) if pair else None
  enc = tokenizer.batch_encode(
    a, b, max_length=max_length, padding='max_length', truncation=True
  )
  label_dtype = np.float32 if regression else np.int32
  labels = np.zeros(batch_size, label_dtype)
  labels[:num_real] = label
  indices = np.full(batch_size, -1, np.int32)
  indices[:num_real] = index
  mask = np.zeros(batch_size, np.float32)
  mask[:num_real] = 1.0
  return (
    enc['input_ids'],
    enc['attention_mask'],
    labels,
    mask,
    enc['num_truncated'],
    indices,
  )


_CLS_KEYS = (
  'input_ids',
  'attention_mask',
  'label',
  'mask',
  'num_truncated',
  'index',
)


def _classification_batches(
  tf,
  raw,
  *,
  tokenizer,
  max_length,
  batch_size,
  pair,
  regression,
  drop_remainder,
):
  """Batches raw dict examples and tokenizes each batch in one NumPy call."""
  fn = lambda a, b, y, i: _tokenize_batch(  # noqa: E731
    a,
    b,
    y,
    i,
    tokenizer=tokenizer,
    max_length=max_length,
    batch_size=batch_size,
    pair=pair,
    regression=regression,
  )
  label_dtype = tf.float32 if regression else tf.int32
  shapes = ([batch_size, max_length], [batch_size, max_length]) + (
    [batch_size],
  ) * 4

  def tokenize(batch):
    outs = tf.numpy_function(
      fn,
      [batch['text_a'], batch['text_b'], batch['label'], batch['index']],
      [tf.int32, tf.int32, label_dtype, tf.float32, tf.int32, tf.int32],
      stateful=False,
    )
    for out, shape in zip(outs, shapes):
      out.set_shape(shape)
    return dict(zip(_CLS_KEYS, outs))

  ds = raw.batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(
    tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  ), fn


def _pad_to_num_batches(tf, ds, fn, *, have, want, regression):
  """Appends all-padding batches (mask 0) so every process has `want` batches."""
  if want <= have:
    return ds
  empty = np.array([], object)
  pad = fn(
    empty,
    empty,
    np.zeros(0, np.float32 if regression else np.int64),
    np.zeros(0, np.int64),
  )
  return ds.concatenate(
    tf.data.Dataset.from_tensors(dict(zip(_CLS_KEYS, pad))).repeat(want - have)
  )


# ------------------------------------------------------------- public: tasks
def make_text_dataset(
  source: str,
  split: str,
  *,
  max_length: int,
  batch_size: int,
  repeat: bool,
  tokenizer: tokenizer_lib.ByteTokenizer | None = None,
  task: str = 'classification',
  text_fields: Any = None,
  label_field: Any = None,
  classes: Any = None,
  shuffle: bool | None = None,
  seed: int = 0,
  shuffle_buffer: int = 16_384,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  data_dir: str | None = None,
  download: bool = False,
  has_header: bool = True,
  compute_stats: bool | None = None,
):
  """Builds a text classification / regression pipeline.

  Args:
    source: ``tfds:<name>`` or ``tsv:|csv:|jsonl:<path>`` or
      ``aclimdb:<root>`` (see `perceiver_io.data.text.local`).
    split: TFDS-style split string, e.g. ``'train'``, ``'validation[:50%]'``.
    max_length: tokens per example L (with [CLS]/[SEP]); longer texts are cut
      (HF 'longest_first' for pairs) and counted.
    batch_size: examples per batch for this process.
    repeat: True for training (shuffled, endless, full batches); False for one
      in-order pass with the last batch padded (``mask`` 0) and the same batch
      count on every process.
    tokenizer: a `ByteTokenizer` (default: HF-compatible ``ByteTokenizer()``).
    task: 'classification' (int32 labels) or 'regression' (float32 labels).
    text_fields: one field or a pair; None guesses GLUE/IMDB names.
    label_field: the label field (name, or column index for header-less
      files); None guesses it (local files) or uses 'label' (TFDS); False
      reads the data as unlabelled (labels -1, e.g. GLUE test files).
    classes: None (TFDS ClassLabel names, or integer labels in files), an int
      n (labels 0..n-1), a list of label names (id = position) or a dict
      name -> id. Labels outside it are an error naming the file and row.
    shuffle: defaults to `repeat`.
    seed: shuffle seed; the stream is a pure function of (seed, start_step).
    shuffle_buffer: shuffle buffer size (capped at the shard size).
    start_step: first batch to yield (resume); see the module docstring.
    process_index: this process; it reads only its shard.
    process_count: number of processes.
    data_dir: TFDS data dir.
    download: allow TFDS to download and prepare a missing dataset.
    has_header: TSV/CSV files have a header line (else use column indices).
    compute_stats: count empty / invalid UTF-8 / truncated examples up front.
      Default: always for local files (aclImdb: this process's rows, the only
      files it opens), for TFDS only when ``repeat=False``.

  Returns:
    (dataset, info): a ``tf.data.Dataset`` of dicts (see module docstring)
    and a `TextDatasetInfo`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if task not in _TASKS:
    raise ValueError(f'task must be one of {_TASKS}, got {task!r}.')
  max_length = _check_int('max_length', max_length, 2)
  batch_size = _check_int('batch_size', batch_size, 1)
  start_step = _check_int('start_step', start_step, 0)
  _check_processes(process_index, process_count)
  tokenizer = tokenizer or tokenizer_lib.ByteTokenizer()
  shuffle = repeat if shuffle is None else shuffle
  kind, path = parse_source(source)
  regression = task == 'regression'
  if kind == 'text':
    raise ValueError(
      'text: sources are plain documents for MLM (make_mlm_dataset); '
      'use tsv:, csv:, jsonl:, aclimdb: or tfds: for classification.'
    )

  stats = None
  glue = next(
    (t for t in GLUE_TASKS.values() if kind == 'tfds' and t.tfds_name == path),
    None,
  )
  if kind == 'tfds':
    builder = _tfds_builder(path, data_dir, download)
    text_fields, label_field = _tfds_fields(
      builder, path, text_fields, label_field, task
    )
    if regression or label_field is False:
      class_names, num_classes = None, None
    else:
      class_names, num_classes = _tfds_classes(builder, label_field, classes)
    shard_splits = _tfds_even_splits(split, process_count)
    sizes = [_tfds_count(builder, s) for s in shard_splits]
    pair = len(text_fields) == 2
    base = _tfds_raw(
      tf,
      builder,
      shard_splits[process_index],
      text_fields,
      label_field,
      pair,
      regression,
      index_offset=sum(sizes[:process_index]),
    )
    if compute_stats if compute_stats is not None else not repeat:
      counter = _StatsCounter(tokenizer, max_length, task)
      for chunk in (
        _tfds_raw(
          tf, builder, split, text_fields, label_field, pair, regression, 0
        )
        .batch(1024)
        .as_numpy_iterator()
      ):
        counter.add(
          chunk['text_a'], chunk['text_b'] if pair else None, chunk['label']
        )
      stats = counter.stats
  else:
    class_map, class_names, num_classes = (
      (None, None, None) if regression else _class_map(classes)
    )
    rows, text_fields, label_field, sizes, offset, top = (
      line_tables.process_rows(
        kind,
        path,
        split,
        process_index,
        process_count,
        text_fields=text_fields,
        label_field=label_field,
        task=task,
        class_map=class_map,
        has_header=has_header,
      )
    )
    if kind == 'aclimdb' and not regression and num_classes is None:
      class_names, num_classes = ('neg', 'pos'), 2  # As TFDS imdb_reviews.
    if not regression and num_classes is None:
      num_classes = top or None
    pair = rows.text_b is not None
    start = sum(sizes[:process_index])
    stop = start + sizes[process_index]
    base = _local_raw(tf, rows, start, stop, regression, offset)
    if compute_stats is None or compute_stats:
      counter = _StatsCounter(tokenizer, max_length, task)
      part = slice(start, stop) if kind == 'aclimdb' else slice(None)
      counter.add(rows.text_a[part], rows.text_b, rows.labels[part])
      stats = counter.stats

  if len(tuple(text_fields)) == 2 and max_length < 3:
    raise ValueError(
      'max_length must be >= 3 for text pairs ([CLS] a [SEP] b [SEP]).'
    )
  num_local = sizes[process_index]
  if num_local == 0:
    raise ValueError(
      f'process {process_index} of {process_count} has no examples: the split '
      f'{split!r} of {source!r} has {sum(sizes)} in all.'
    )
  raw = _epoch_stream(
    tf,
    base,
    num_examples=num_local,
    batch_size=batch_size,
    start_step=start_step,
    shuffle=shuffle,
    seed=seed,
    shuffle_buffer=shuffle_buffer,
    repeat=repeat,
  )
  ds, fn = _classification_batches(
    tf,
    raw,
    tokenizer=tokenizer,
    max_length=max_length,
    batch_size=batch_size,
    pair=pair,
    regression=regression,
    drop_remainder=repeat,
  )
  num_batches = None
  if not repeat:
    num_batches = max(math.ceil(n / batch_size) for n in sizes)
    have = max(0, math.ceil(num_local / batch_size) - start_step)
    ds = _pad_to_num_batches(
      tf,
      ds,
      fn,
      have=have,
      want=max(0, num_batches - start_step),
      regression=regression,
    )
  ds = _deterministic(tf, ds.prefetch(tf.data.AUTOTUNE))
  info = TextDatasetInfo(
    source=source,
    split=split,
    task=task,
    text_fields=tuple(text_fields),
    label_field=label_field,
    classes=class_names,
    num_classes=num_classes,
    num_examples=sum(sizes),
    num_examples_per_process=tuple(sizes),
    batch_size=batch_size,
    max_length=max_length,
    num_batches=num_batches,
    steps_per_epoch=num_local // batch_size,
    metrics=glue.metrics if glue else (),
    stats=stats,
  )
  return ds, info


# ---------------------------------------------------------- tf.data from rows
def _local_raw(tf, rows: _Rows, start, stop, regression, offset=0):
  """The split's rows [start, stop) as dicts text_a / text_b / label /
  index, from `rows` holding its rows from `offset` on."""
  a, b, n = start - offset, stop - offset, stop - start
  text_b = rows.text_b[a:b] if rows.text_b is not None else [b''] * n
  return tf.data.Dataset.from_tensor_slices(
    {
      'text_a': _string_tensor(tf, rows.text_a[a:b]),
      'text_b': _string_tensor(tf, text_b),
      'label': rows.labels[a:b].astype(np.float32 if regression else np.int64),
      'index': np.arange(start, stop, dtype=np.int64),
    }
  )


def _string_tensor(tf, texts: list[bytes]):
  """A 1-D tf.string tensor from a list of bytes (any content, any count)."""
  return tf.constant(
    np.array(texts, dtype=object), tf.string, shape=[len(texts)]
  )
