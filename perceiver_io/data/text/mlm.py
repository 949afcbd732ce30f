"""Byte-level masked language modelling: the paper's masking and its pipeline.

Why this module exists: the paper pretrains on UTF-8 bytes with whole-word
masking, so the masking works on byte ids (words are runs of non-whitespace
bytes), and the pipeline concatenates documents and crops a random window
before masking. Crops and masks come from a NumPy generator seeded per batch,
so a resumed run gets the same batches as an uninterrupted one.

Per host: each process reads only its part of the split. Training reads
fixed shards of it (`mlm_shards`), so its global batches do not depend on
the process count. Evaluation reads every document once: ``text:`` globs
of whole files are cut by bytes (`text_files`; a sliced split such as
``train[:90%]`` is shared out in equal blocks, each process reading the
byte ranges that hold its block, `line_tables`), so a process knows only
its own document count; every process's count
(for a sliced split and for the evaluation batch count, which must be
equal everywhere) comes from one gather while the dataset is built
(`make_mlm_dataset`'s ``gather_counts``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from perceiver_io import tokenizer as tokenizer_lib
from perceiver_io.data.text.fields import _as_tuple
from perceiver_io.data import shards as shards_lib
from perceiver_io.data.text import mlm_shards
from perceiver_io.data.text import text_files
from perceiver_io.data.text.local import parse_split
from perceiver_io.data.text.pipeline import _check_int
from perceiver_io.data.text.pipeline import _check_processes
from perceiver_io.data.text.pipeline import _deterministic
from perceiver_io.data.text.pipeline import _epoch_stream
from perceiver_io.data.text.pipeline import _string_tensor
from perceiver_io.data.text.pipeline import parse_source
from perceiver_io.data.text.pipeline import TextDatasetInfo
from perceiver_io.data.text.tfds_source import _tfds_builder
from perceiver_io.data.text.tfds_source import _tfds_count
from perceiver_io.data.text.tfds_source import _tfds_even_splits
from perceiver_io.data.text.tfds_source import _tfds_fields
from perceiver_io.data.text.tfds_source import _tfds_raw

IGNORE_LABEL = -100  # mlm_labels value at positions that are not predicted.
_WHITESPACE_IDS = np.array(
  [c + tokenizer_lib.NUM_SPECIAL_TOKENS for c in b' \t\n\r\x0b\x0c']
)


def mask_bytes_for_mlm(
  input_ids: np.ndarray,
  attention_mask: np.ndarray,
  rng: np.random.Generator | int,
  mask_prob: float = 0.15,
) -> dict[str, np.ndarray]:
  """The paper's whole-word byte masking (BERT's 80/10/10), vectorised.

  A word is a maximal run of non-whitespace byte ids (>= 6) with attention 1;
  whitespace, [CLS]/[SEP]/[PAD] and any other special id are never chosen. Per
  example, words are taken in random order while the running count stays
  about `mask_prob` of its real (non-special) tokens: a word is taken if the
  count before it plus half its length is within the target, so the expected
  count matches the target with no bias. Of the chosen positions, 80% become
  [MASK] (id 3), 10% a uniform random byte id in [6, 262), 10% stay as they
  are (each position drawn independently, as in BERT).

  Args:
    input_ids: int [B, L] token ids.
    attention_mask: int [B, L], 1 for real tokens.
    rng: a NumPy Generator (or an int seed).
    mask_prob: fraction of real tokens to predict.

  Returns:
    dict(input_ids int32 [B, L] (corrupted), mlm_labels int32 [B, L]
    (original id where chosen, -100 elsewhere), mlm_weights float32 [B, L]
    (1.0 where chosen)).
  """
  if not isinstance(rng, np.random.Generator):
    rng = np.random.default_rng(rng)
  ids = np.asarray(input_ids)
  if ids.ndim != 2 or np.shape(attention_mask) != ids.shape:
    raise ValueError(
      f'input_ids and attention_mask must both be [B, L], got {ids.shape} '
      f'and {np.shape(attention_mask)}.'
    )
  if not 0.0 <= mask_prob <= 1.0:
    raise ValueError(f'mask_prob must be in [0, 1], got {mask_prob}.')
  real = (np.asarray(attention_mask) == 1) & (
    ids >= tokenizer_lib.NUM_SPECIAL_TOKENS
  )
  in_word = real & ~np.isin(ids, _WHITESPACE_IDS)
  previous = np.zeros_like(in_word)
  previous[:, 1:] = in_word[:, :-1]
  starts = in_word & ~previous
  word_of = (np.cumsum(starts.ravel()) - 1).reshape(
    ids.shape
  )  # Row-major word ids.
  num_words = int(starts.sum())
  chosen = np.zeros(ids.shape, bool)
  if num_words:
    word_len = np.bincount(word_of[in_word], minlength=num_words)
    word_row = np.nonzero(starts)[0]
    order = np.lexsort(
      (rng.random(num_words), word_row)
    )  # By row, random within.
    sorted_len, sorted_row = word_len[order], word_row[order]
    row_total = np.bincount(word_row, weights=word_len, minlength=ids.shape[0])
    row_offset = np.concatenate([[0.0], np.cumsum(row_total)[:-1]])
    before = np.cumsum(sorted_len) - sorted_len - row_offset[sorted_row]
    target = mask_prob * real.sum(axis=1)
    take_sorted = before + sorted_len / 2.0 <= target[sorted_row]
    take = np.zeros(num_words, bool)
    take[order] = take_sorted
    chosen = in_word & take[np.where(in_word, word_of, 0)]
  draw = rng.random(ids.shape)
  random_ids = rng.integers(
    tokenizer_lib.NUM_SPECIAL_TOKENS, tokenizer_lib.VOCAB_SIZE, ids.shape
  )
  corrupted = np.where(
    chosen & (draw < 0.8),
    tokenizer_lib.MASK_ID,
    np.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, ids),
  )
  return {
    'input_ids': corrupted.astype(np.int32),
    'mlm_labels': np.where(chosen, ids, IGNORE_LABEL).astype(np.int32),
    'mlm_weights': chosen.astype(np.float32),
  }


_MLM_KEYS = (
  'input_ids',
  'attention_mask',
  'mlm_labels',
  'mlm_weights',
  'mask',
  'num_truncated',
  'index',
)


def _mlm_batch(
  texts,
  *,
  rng_key,
  first_index,
  tokenizer,
  max_length,
  batch_size,
  mask_prob,
):
  """NumPy: joined documents -> random crop -> ids -> masked batch.

  `rng_key` seeds the crops and masks; `first_index`: the first row's index.
  """
  rng = np.random.default_rng(rng_key)
  budget = max_length - 2
  crops, cut = [], np.zeros(batch_size, np.int32)
  for i, text in enumerate(texts):
    text = bytes(text)
    if len(text) > budget:
      start = int(rng.integers(0, len(text) - budget + 1))
      cut[i] = len(text) - budget
      text = text[start : start + budget]
    crops.append(text)
  num_real = len(crops)
  crops += [b''] * (batch_size - num_real)
  enc = tokenizer.batch_encode(
    crops, max_length=max_length, padding='max_length', truncation=True
  )
  masked = mask_bytes_for_mlm(
    enc['input_ids'], enc['attention_mask'], rng, mask_prob
  )
  mask = np.zeros(batch_size, np.float32)
  mask[:num_real] = 1.0
  masked['mlm_weights'] *= mask[:, None]
  masked['mlm_labels'] = np.where(
    mask[:, None] > 0, masked['mlm_labels'], IGNORE_LABEL
  ).astype(np.int32)
  index = np.full(batch_size, -1, np.int32)
  index[:num_real] = first_index + np.arange(num_real)
  return (
    masked['input_ids'],
    enc['attention_mask'],
    masked['mlm_labels'],
    masked['mlm_weights'],
    mask,
    cut + enc['num_truncated'],
    index,
  )


def make_mlm_dataset(
  source: str,
  split: str,
  *,
  max_length: int,
  batch_size: int,
  repeat: bool,
  tokenizer: tokenizer_lib.ByteTokenizer | None = None,
  text_field: Any = None,
  docs_per_example: int = 10,
  doc_separator: str | bytes = '\n',
  mask_prob: float = 0.15,
  shuffle: bool | None = None,
  seed: int = 0,
  shuffle_buffer: int = 16_384,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  data_dir: str | None = None,
  download: bool = False,
  has_header: bool = True,
  gather_counts: Callable[[np.ndarray], Any] | None = None,
  num_shards: int | None = None,
):
  """Byte MLM pipeline: concatenate documents, crop, mask (paper recipe).

  `docs_per_example` consecutive documents of the (shuffled) stream are joined
  with `doc_separator`, a random window of ``max_length - 2`` bytes is cropped
  and wrapped in [CLS] ... [SEP], and `mask_bytes_for_mlm` picks the targets.
  Training (`repeat`) reads fixed document shards (`mlm_shards`): its global
  batches are the same for every process count that divides `num_shards`.
  Crops and masks come from NumPy generators seeded by the step (and, in
  training, the shard; in evaluation, the process), so a resumed run
  (``start_step``) gets the same batches as an uninterrupted one.

  Args:
    source: ``tfds:<name>`` (a text feature), ``text:<glob>`` (one document a
      line) or a ``tsv:|csv:|jsonl:`` file with `text_field`.
    split: split string (see `parse_split`).
    max_length: tokens per example, [CLS] and [SEP] included.
    batch_size: examples per batch for this process.
    repeat: True for training (endless, shuffled); False for one padded pass.
    tokenizer: a `ByteTokenizer` (default ``ByteTokenizer()``).
    text_field: the document field (TFDS / table sources; default 'text').
    docs_per_example: documents concatenated before cropping (paper: 10).
    doc_separator: bytes put between joined documents.
    mask_prob: fraction of real tokens to predict.
    shuffle: defaults to `repeat` (documents are shuffled before grouping).
    seed: seed of the shuffle, crops and masks.
    shuffle_buffer: document shuffle buffer (training: shared out equally
      by the shards).
    start_step: first batch to yield (resume).
    process_index: this process; it reads only its part of the split.
    process_count: number of processes.
    data_dir: TFDS data dir.
    download: allow TFDS to download a missing dataset.
    has_header: TSV/CSV files have a header line.
    gather_counts: ``text:`` sources with several processes: maps this
      process's document counts (int64 [T], one per file pattern of the
      split) to every process's ([process_count, T]). Default: JAX's
      ``multihost_utils.process_allgather``, a collective (every process
      builds its dataset at the same point, as the runner does); when JAX
      runs fewer processes (simulated ones), the counts come from reading
      the other processes' ranges too.
    num_shards: training shards S (a multiple of `process_count`, at most
      the global batch); default `process_count`.

  Returns:
    (dataset, info): dicts with input_ids, attention_mask, mlm_labels,
    mlm_weights, mask, num_truncated (bytes not used by the crop), index.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  max_length = _check_int('max_length', max_length, 2)
  batch_size = _check_int('batch_size', batch_size, 1)
  start_step = _check_int('start_step', start_step, 0)
  docs_per_example = _check_int('docs_per_example', docs_per_example, 1)
  _check_processes(process_index, process_count)
  tokenizer = tokenizer or tokenizer_lib.ByteTokenizer()
  shuffle = repeat if shuffle is None else shuffle
  kind, path = parse_source(source)
  whole_text = kind == 'text' and not any(
    part.start or part.stop for part in parse_split(split)
  )
  if repeat:
    return _train_dataset(
      tf,
      kind,
      path,
      source=source,
      split=split,
      max_length=max_length,
      batch_size=batch_size,
      tokenizer=tokenizer,
      text_field=text_field,
      docs_per_example=docs_per_example,
      doc_separator=doc_separator,
      mask_prob=mask_prob,
      shuffle=shuffle,
      seed=seed,
      shuffle_buffer=shuffle_buffer,
      start_step=start_step,
      process_index=process_index,
      process_count=process_count,
      data_dir=data_dir,
      download=download,
      has_header=has_header,
      gather_counts=gather_counts,
      whole_text=whole_text,
      num_shards=process_count if num_shards is None else num_shards,
    )
  if kind == 'tfds':
    builder = _tfds_builder(path, data_dir, download, task='mlm')
    text_fields, _ = _tfds_fields(
      builder, path, _as_tuple(text_field or 'text'), None, 'mlm'
    )
    shard_splits = _tfds_even_splits(split, process_count)
    sizes = [_tfds_count(builder, s) for s in shard_splits]
    base = _tfds_raw(
      tf,
      builder,
      shard_splits[process_index],
      text_fields,
      False,
      False,
      False,
      index_offset=0,
    )
    base = base.map(lambda ex: ex['text_a'])
  elif whole_text:
    # Whole files: each process reads its byte range. A sliced split
    # (train[90%:]) goes below: every process gets an equal share of it (a
    # byte range may hold none of a slice's rows), read by row position.
    text_fields = ('text',)
    local, sizes = text_documents(
      path, split, process_index, process_count, gather_counts
    )
    base = tf.data.Dataset.from_tensor_slices(_string_tensor(tf, local))
  else:
    local, sizes, text_fields = mlm_shards.process_documents(
      kind, path, split, process_index, process_count, text_field, has_header
    )
    base = tf.data.Dataset.from_tensor_slices(_string_tensor(tf, local))
  num_local = sizes[process_index]
  if num_local == 0:
    raise ValueError(
      f'process {process_index} of {process_count} has no documents in '
      f'{source!r} split {split!r}.'
    )
  docs = _epoch_stream(
    tf,
    base,
    num_examples=num_local,
    batch_size=batch_size,
    start_step=start_step,
    shuffle=shuffle,
    seed=seed,
    shuffle_buffer=shuffle_buffer,
    repeat=False,
    examples_per_step=batch_size * docs_per_example,
  )
  joined = docs.batch(docs_per_example).map(
    lambda group: tf.strings.reduce_join(group, separator=doc_separator)
  )
  kwargs = dict(
    tokenizer=tokenizer,
    max_length=max_length,
    batch_size=batch_size,
    mask_prob=mask_prob,
  )
  fn = lambda step, texts: _mlm_batch(  # noqa: E731
    texts,
    rng_key=[seed, process_index, int(step)],
    first_index=int(step) * batch_size,
    **kwargs,
  )

  def crop_and_mask(step, texts):
    outs = tf.numpy_function(fn, [step, texts], _DTYPES, stateful=False)
    for out, shape in zip(outs, _shapes(batch_size, max_length)):
      out.set_shape(shape)
    return dict(zip(_MLM_KEYS, outs))

  ds = joined.batch(batch_size).enumerate(start=start_step)
  ds = ds.map(
    crop_and_mask, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  groups = [math.ceil(n / docs_per_example) for n in sizes]
  num_batches = max(math.ceil(g / batch_size) for g in groups)
  have = max(0, math.ceil(groups[process_index] / batch_size) - start_step)
  want = max(0, num_batches - start_step)
  if want > have:
    pad = dict(zip(_MLM_KEYS, fn(np.int64(0), np.array([], object))))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(want - have))
  ds = _deterministic(tf, ds.prefetch(tf.data.AUTOTUNE))
  return ds, _info(
    source,
    split,
    text_fields,
    sizes,
    (batch_size, max_length, num_batches),
    num_local // (batch_size * docs_per_example),
  )


_DTYPES = [np.int32] * 3 + [np.float32] * 2 + [np.int32] * 2


def _shapes(batch_size, max_length):
  return ([batch_size, max_length],) * 4 + ([batch_size],) * 3


def _info(source, split, fields, sizes, batching, steps_per_epoch):
  batch_size, max_length, num_batches = batching
  return TextDatasetInfo(
    source=source,
    split=split,
    task='mlm',
    text_fields=tuple(fields),
    label_field=False,
    classes=None,
    num_classes=None,
    num_examples=sum(sizes),
    num_examples_per_process=tuple(sizes),
    batch_size=batch_size,
    max_length=max_length,
    num_batches=num_batches,
    steps_per_epoch=steps_per_epoch,
  )


def _train_dataset(
  tf,
  kind,
  path,
  *,
  source,
  split,
  max_length,
  batch_size,
  tokenizer,
  text_field,
  docs_per_example,
  doc_separator,
  mask_prob,
  shuffle,
  seed,
  shuffle_buffer,
  start_step,
  process_index,
  process_count,
  data_dir,
  download,
  has_header,
  gather_counts,
  whole_text,
  num_shards,
):
  """The training stream: this process's rows of each global batch."""
  global_batch = batch_size * process_count
  shards = mlm_shards.check_shards(num_shards, global_batch, process_count)
  sources, sizes, fields = mlm_shards.shard_sources(
    tf,
    kind,
    path,
    split,
    shards=shards,
    process_index=process_index,
    process_count=process_count,
    text_field=text_field,
    has_header=has_header,
    data_dir=data_dir,
    download=download,
    gather_counts=gather_counts,
    whole_text=whole_text,
  )

  def chunk(step, j, texts):
    lo, hi = shards_lib.rows_of(global_batch, shards, j)
    return _mlm_batch(
      texts,
      rng_key=mlm_shards.rng_key(seed, shards, j, step),
      first_index=step * global_batch + lo,
      tokenizer=tokenizer,
      max_length=max_length,
      batch_size=hi - lo,
      mask_prob=mask_prob,
    )

  ds = mlm_shards.train_stream(
    tf,
    sources,
    shards=shards,
    global_batch=global_batch,
    docs_per_example=docs_per_example,
    doc_separator=doc_separator,
    start_step=start_step,
    shuffle=shuffle,
    seed=seed,
    shuffle_buffer=shuffle_buffer,
    chunk_fn=chunk,
    shapes=_shapes(batch_size, max_length),
    dtypes=_DTYPES,
    keys=_MLM_KEYS,
  )
  ds = _deterministic(tf, ds.prefetch(tf.data.AUTOTUNE))
  return ds, _info(
    source,
    split,
    fields,
    sizes,
    (batch_size, max_length, None),
    sum(sizes) // (global_batch * docs_per_example),
  )


def text_documents(path, split, process_index, process_count, gather):
  """(this process's documents of a ``text:`` split, every process's count).

  Each process reads only its byte range of each file pattern
  (`text_files`); the counts of all processes place its documents in the
  split's order, so a slice (``train[:100]``) keeps the same documents as
  one process reading everything, each in exactly one process. `gather`:
  as `make_mlm_dataset`'s ``gather_counts`` (None: its default).
  """
  parts = parse_split(split)
  targets = list(dict.fromkeys(path.replace('{split}', p.name) for p in parts))
  read = [
    text_files.read_documents(t, process_index, process_count) for t in targets
  ]
  local = np.asarray([len(docs) for docs in read], np.int64)
  counts = local[None]
  if process_count > 1:
    counts = np.asarray(
      (
        gather
        or shards_lib.gather_counts(
          lambda p: [
            len(text_files.read_documents(t, p, process_count)) for t in targets
          ],
          process_count,
        )
      )(local)
    )
    if counts.shape != (process_count, len(targets)):
      raise ValueError(
        f'gather_counts returned shape {counts.shape}; expected '
        f'{(process_count, len(targets))} (processes, file patterns).'
      )
  starts = np.concatenate([np.zeros((1, len(targets)), np.int64), counts])
  starts = np.cumsum(starts, axis=0)  # [P + 1, T] first document of each.
  mine, sizes = [], [0] * process_count
  for part in parts:
    t = targets.index(path.replace('{split}', part.name))
    rows = part.indices(int(starts[-1, t]))
    for p in range(process_count):
      lo = max(rows.start, int(starts[p, t]))
      hi = min(rows.stop, int(starts[p + 1, t]))
      sizes[p] += max(hi - lo, 0)
      if p == process_index and hi > lo:
        mine += read[t][lo - starts[p, t] : hi - starts[p, t]]
  return mine, sizes
