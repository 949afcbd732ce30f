"""MLM training documents in fixed shards, so batches ignore the process count.

Why: the runner's guarantee is that global batch `step` does not depend on
how many processes build it, so a run can resume on another process count
with the same data. The split's documents are cut into `S` fixed shards
(S from the caller, never from the process count); every global batch of
`B` examples takes ``(j+1)B//S - jB//S`` of them from shard j, each example
`docs_per_example` consecutive documents of shard j's own shuffled,
repeating stream (seeded by (seed, S, j); one shard keeps the seed, so it
is the single-process stream). Process i of n (n divides S) owns shards
[iS/n, (i+1)S/n), reads only their documents and builds its rows of every
global batch in shard order, its `input_pipeline.process_slice`. Crops and
masks of shard j's rows of batch `step` are seeded by (seed, S, j, step),
the same wherever they are built.

How shards are cut: a ``text:`` split of whole files and a TSV/JSONL/CSV
table by bytes (shard j = the lines, or CSV records, whose first byte is in
[jN/S, (j+1)N/S), `text_files`, `line_tables`), so process i's shards are
exactly its byte range; TFDS by ``tfds.even_splits`` per shard (a process
reads only its shards' records); any other source by contiguous blocks of
rows: a sliced or joined split read by row position (each process reads
the byte blocks that hold its rows, `line_tables.process_rows`), aclImdb
folders listed whole (each process opens only its reviews) and a CSV
whose quotes break RFC 4180 read whole.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from perceiver_io.data import shards as shards_lib
from perceiver_io.data.text import line_tables
from perceiver_io.data.text import text_files
from perceiver_io.data.text.fields import _as_tuple
from perceiver_io.data.text.local import parse_split
from perceiver_io.data.text.pipeline import _epoch_stream
from perceiver_io.data.text.pipeline import _string_tensor
from perceiver_io.data.text.tfds_source import _tfds_builder
from perceiver_io.data.text.tfds_source import _tfds_count
from perceiver_io.data.text.tfds_source import _tfds_even_splits
from perceiver_io.data.text.tfds_source import _tfds_fields
from perceiver_io.data.text.tfds_source import _tfds_raw


def _table_read(kind, text_field, has_header):
  """The local readers' keywords for MLM documents: texts, unlabelled."""
  return dict(
    text_fields=_as_tuple(text_field)
    if text_field is not None
    else (None if kind in ('tsv', 'csv', 'jsonl') else ('text',)),
    label_field=False,
    task='classification',
    class_map=None,
    has_header=has_header,
  )


def process_documents(kind, path, split, index, count, text_field, has_header):
  """(this process's documents of a local source, every process's count,
  the text fields): by byte blocks or row position where the source allows
  (`line_tables.process_rows`), else read whole and cut into equal blocks."""
  rows, fields, _, sizes, offset, _ = line_tables.process_rows(
    kind, path, split, index, count, **_table_read(kind, text_field, has_header)
  )
  start = sum(sizes[:index])
  return (
    rows.text_a[start - offset : start - offset + sizes[index]],
    sizes,
    fields,
  )


def check_shards(shards: int, global_batch: int, process_count: int) -> int:
  """The shard count, or one line saying what a valid one is."""
  if (
    isinstance(shards, bool)
    or not isinstance(shards, (int, np.integer))
    or shards < 1
    or shards % process_count
    or shards > global_batch
  ):
    raise ValueError(
      f'num_shards={shards!r} must be a multiple of the process count '
      f'{process_count} and at most the global batch {global_batch}.'
    )
  return int(shards)


def shard_seed(seed: int, shards: int, j: int) -> int:
  """Shard j's document-order seed (one shard: `seed` itself)."""
  if shards == 1:
    return int(seed)
  return int(np.random.SeedSequence([seed, shards, j]).generate_state(1)[0])


def rng_key(seed: int, shards: int, j: int, step: int) -> list[int]:
  """Crop and mask seed of shard j's rows of global batch `step`."""
  return [seed, 0, step] if shards == 1 else [seed, shards, j, step]


def shard_sources(
  tf,
  kind: str,
  path: str,
  split: str,
  *,
  shards: int,
  process_index: int,
  process_count: int,
  text_field: Any,
  has_header: bool,
  data_dir: str | None,
  download: bool,
  gather_counts: Callable[[np.ndarray], Any] | None,
  whole_text: bool,
):
  """(this process's shards as {j: (documents dataset, count)}, every
  process's document count, the text fields)."""
  mine = shards_lib.owned(shards, process_index, process_count)
  cuts = None  # A CSV's record starts (None: read whole).
  if kind == 'csv' and line_tables.splittable(kind, split):
    name = line_tables.target(path, split)
    cuts = line_tables.csv_cuts(name, shards, process_index, process_count)
  by_bytes = line_tables.splittable(kind, split) and (kind != 'csv' or cuts)
  if kind == 'tfds':
    builder = _tfds_builder(path, data_dir, download, task='mlm')
    fields, _ = _tfds_fields(
      builder, path, _as_tuple(text_field or 'text'), None, 'mlm'
    )
    splits = _tfds_even_splits(split, shards)
    counts = [_tfds_count(builder, s) for s in splits]
    out = {
      j: (
        _tfds_raw(
          tf, builder, splits[j], fields, False, False, False, index_offset=0
        ).map(lambda ex: ex['text_a']),
        counts[j],
      )
      for j in mine
    }
  elif whole_text or by_bytes:
    fields = ('text',)

    def shard_docs(j):
      nonlocal fields
      if whole_text:
        return _text_shard(path, split, j, shards)
      rows, fields, _ = line_tables.read_block(
        kind,
        path,
        split,
        j,
        shards,
        **_table_read(kind, text_field, has_header),
        cuts=cuts,
      )
      return rows.text_a

    docs = {j: shard_docs(j) for j in mine}
    local = np.asarray([sum(len(d) for d in docs.values())], np.int64)
    per = local
    if process_count > 1:  # The others' counts, for the run's summary.
      gather = gather_counts or shards_lib.gather_counts(
        lambda p: sum(
          len(shard_docs(j)) for j in shards_lib.owned(shards, p, process_count)
        ),
        process_count,
      )
      per = np.asarray(gather(local)).reshape(process_count, -1).sum(axis=1)
    out = {
      j: (tf.data.Dataset.from_tensor_slices(_string_tensor(tf, d)), len(d))
      for j, d in docs.items()
    }
    return out, [int(n) for n in per], fields
  else:
    # This process's equal share of the split, read by row position
    # (`line_tables.process_rows`); its shards' bounds nest in the shares'.
    docs, sizes, fields = process_documents(
      kind, path, split, process_index, process_count, text_field, has_header
    )
    bounds = shards_lib.bounds(sum(sizes), shards)
    counts = [bounds[k + 1] - bounds[k] for k in range(shards)]
    offset = bounds[mine.start]
    out = {
      j: (
        tf.data.Dataset.from_tensor_slices(
          _string_tensor(tf, docs[bounds[j] - offset : bounds[j + 1] - offset])
        ),
        counts[j],
      )
      for j in mine
    }
  per = [
    sum(counts[j] for j in shards_lib.owned(shards, p, process_count))
    for p in range(process_count)
  ]
  return out, per, fields


def _text_shard(path: str, split: str, j: int, shards: int) -> list[bytes]:
  """Shard j of a whole-file ``text:`` split: per part, the lines whose
  first byte is in its j-th byte block (`text_files.read_documents`)."""
  read = {}
  docs = []
  for part in parse_split(split):
    target = path.replace('{split}', part.name)
    if target not in read:
      read[target] = text_files.read_documents(target, j, shards)
    docs += read[target]
  return docs


def train_stream(
  tf,
  sources,
  *,
  shards: int,
  global_batch: int,
  docs_per_example: int,
  doc_separator,
  start_step: int,
  shuffle: bool,
  seed: int,
  shuffle_buffer: int,
  chunk_fn: Callable[..., tuple],
  shapes,
  dtypes,
  keys,
):
  """Endless dataset of this process's rows of every global batch.

  `chunk_fn(step, j, texts)` crops and masks shard j's joined documents of
  batch `step` into a tuple of arrays (rows first); the chunks of the
  owned shards are concatenated in shard order.
  """
  buffer = max(1, math.ceil(shuffle_buffer / shards))
  streams, order = [], sorted(sources)
  for j in order:
    base, count = sources[j]
    if count == 0:
      raise ValueError(
        f'MLM training shard {j} of {shards} has no documents; use fewer '
        'shards (data.num_shards) or more documents.'
      )
    lo, hi = shards_lib.rows_of(global_batch, shards, j)
    docs = _epoch_stream(
      tf,
      base,
      num_examples=count,
      batch_size=hi - lo,
      start_step=start_step,
      shuffle=shuffle,
      seed=shard_seed(seed, shards, j),
      shuffle_buffer=buffer,
      repeat=True,
      examples_per_step=(hi - lo) * docs_per_example,
    )
    streams.append(docs.batch((hi - lo) * docs_per_example))
  sep = (
    doc_separator.encode()
    if isinstance(doc_separator, str)
    else bytes(doc_separator)
  )

  def fn(step, *texts):
    chunks = []
    for j, docs in zip(order, texts):
      docs = [bytes(d) for d in docs]
      joined = [
        sep.join(docs[k : k + docs_per_example])
        for k in range(0, len(docs), docs_per_example)
      ]
      chunks.append(chunk_fn(int(step), j, joined))
    return tuple(np.concatenate(parts) for parts in zip(*chunks))

  def crop_and_mask(step, texts):
    outs = tf.numpy_function(fn, [step, *texts], list(dtypes), stateful=False)
    for out, shape in zip(outs, shapes):
      out.set_shape(shape)
    return dict(zip(keys, outs))

  ds = tf.data.Dataset.zip(tuple(streams)).enumerate(start=start_step)
  return ds.map(
    crop_and_mask, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
