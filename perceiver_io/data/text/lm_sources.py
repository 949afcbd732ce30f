"""Where the byte streams of a Perceiver AR language model come from.

Why a split is a slice of *bytes* here: language-model baselines split a
corpus by position (tiny Shakespeare: the first 90 % of the bytes train,
the last 10 % validate), not by lines, so ``train[:90%]`` and
``train[90%:]`` of one file are two disjoint streams. Sources:

* ``text:GLOB``: the matching files, sorted, each one document (ended by
  EOS); a ``{split}`` in the glob is replaced by the split name, so
  separate files per split work too. The split's slice applies to the
  joined stream.
* ``tfds:pg19`` / ``tfds:wiki40b/en`` (any prepared TFDS text dataset): the
  documents of the split, streamed (books do not fit in memory); an
  unprepared dataset is one error naming the local alternative.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from perceiver_io.data.text import lm
from perceiver_io.data.text.local import parse_split
from perceiver_io.data.text.pipeline import parse_source
from perceiver_io.data.text.tfds_source import _tfds_builder
from perceiver_io.data.text.tfds_source import _tfds_even_splits

# The document feature of the TFDS corpora the configs name.
TFDS_TEXT_FEATURES = {'pg19': 'book_text', 'wiki40b': 'text'}
_LOCAL_HINT = (
  "source='text:/path/corpus.txt' (plain text files; slice one file with "
  "train_split='train[:90%]', eval_split='train[90%:]')"
)


def read_text_stream(pattern: str, split: str) -> np.ndarray:
  """The token stream that `split` selects from the files of `pattern`."""
  cache: dict[str, np.ndarray] = {}
  parts = []
  for part in parse_split(split):
    target = pattern.replace('{split}', part.name)
    if target not in cache:
      paths = sorted(p for p in glob.glob(target) if os.path.isfile(p))
      if not paths:
        raise FileNotFoundError(
          f'no text files match {target!r} (data.source text:{pattern}).'
        )
      docs = []
      for path in paths:
        with open(path, 'rb') as f:
          docs.append(lm.encode_bytes(f.read()))
      cache[target] = lm.join_documents(docs)
    stream = cache[target]
    idx = part.indices(len(stream))
    parts.append(stream[idx.start : idx.stop])
  tokens = np.concatenate(parts)
  if len(tokens) < 2:
    raise ValueError(
      f'split {split!r} of text:{pattern} holds {len(tokens)} byte(s); a '
      'language model needs at least 2 (check the slice).'
    )
  return tokens


def tfds_name(path: str) -> str:
  return path.split('/')[0].split(':')[0]


def tfds_documents(
  path: str,
  split: str,
  *,
  data_dir: str | None = None,
  process_index: int = 0,
  process_count: int = 1,
  text_feature: str = '',
):
  """(tf.data dataset of this process's documents as bytes, name).

  Raises:
    FileNotFoundError: the dataset is not prepared (one line, with the
      local-text alternative).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = _tfds_builder(path, data_dir or None, False, task='mlm')
  except (FileNotFoundError, ValueError) as e:
    first = str(e).split(' Either prepare')[0].split('; check')[0]
    raise FileNotFoundError(
      f'{first.rstrip(".")}: prepare it (`tfds build {path}` on a machine '
      f'with network, then copy the folder), or pass {_LOCAL_HINT}.'
    ) from None
  feature = text_feature or TFDS_TEXT_FEATURES.get(tfds_name(path), 'text')
  if feature not in builder.info.features:
    raise ValueError(
      f'TFDS dataset {path!r} has no feature {feature!r}; it has '
      f'{list(builder.info.features.keys())} (set data.text_fields).'
    )
  ds = builder.as_dataset(
    split=_tfds_even_splits(split, process_count)[process_index],
    shuffle_files=False,
    read_config=tfds.ReadConfig(interleave_cycle_length=1),
  )
  return ds.map(lambda ex: ex[feature])


class TfdsTrainWindows:
  """Training rows from a streamed TFDS corpus: row r of batch `step` is a
  random window of the document the stream gives it, drawn from
  ``(seed, process, step, r)``. Read in step order from `start_step`."""

  def __init__(
    self,
    path,
    split,
    *,
    max_context,
    num_latents,
    batch_size,
    start_step,
    seed=0,
    data_dir=None,
    process_index=0,
    process_count=1,
    text_feature='',
  ):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    lm.check_sizes(max_context, num_latents)
    docs = tfds_documents(
      path,
      split,
      data_dir=data_dir,
      process_index=process_index,
      process_count=process_count,
      text_feature=text_feature,
    )
    self.n, self.m, self.rows = max_context, num_latents, batch_size
    self.seed, self.process = seed, process_index
    ds = docs.repeat().skip(int(start_step) * batch_size).batch(batch_size)
    options = tf.data.Options()
    options.deterministic = True
    self._it = ds.with_options(options).as_numpy_iterator()
    self._next = int(start_step)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    if step != self._next:
      raise ValueError(
        f'TFDS stream expected step {self._next}, got {step}; rebuild it '
        'with start_step.'
      )
    self._next += 1
    rng = np.random.default_rng([self.seed, self.process, int(step)])
    width = self.n + 1
    rows = []
    for doc in next(self._it):
      tokens = lm.join_documents([lm.encode_bytes(bytes(doc))])
      end = int(rng.integers(min(width, len(tokens)), len(tokens) + 1))
      rows.append(lm.left_pad(tokens[max(0, end - width) : end], width))
    out = lm.rows_to_batch(np.stack(rows), self.m)
    out['weight'] = np.ones(len(rows), np.float32)
    return out


def tfds_eval_stream(path, split, *, limit_bytes, data_dir=None):
  """The first `limit_bytes` tokens of a TFDS split, documents joined."""
  docs = tfds_documents(path, split, data_dir=data_dir)
  parts, total = [], 0
  for doc in docs.as_numpy_iterator():
    parts.append(lm.encode_bytes(bytes(doc)))
    total += len(parts[-1]) + 1
    if total >= limit_bytes:
      break
  return lm.join_documents(parts)[:limit_bytes]


def source_kind(source: str) -> tuple[str, str]:
  """('text' | 'tfds' | 'random_mirrored', rest) of a data.source."""
  if source.startswith('random_mirrored'):
    return 'random_mirrored', source.partition(':')[2]
  kind, path = parse_source(source)
  if kind not in ('text', 'tfds'):
    raise ValueError(
      f'data.source={source!r}: Perceiver AR reads text:GLOB, '
      'tfds:pg19 / tfds:wiki40b/en, or random_mirrored.'
    )
  return kind, path
