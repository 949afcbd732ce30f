"""Helpers shared by the text-data tests (tests/test_data_text_*.py).

Expected values in those tests are written by hand or come from the
HF-verified tokenizer applied to the hand-written text (`ids`), never from
the pipeline itself; fixtures are generated in temp dirs (`write`).
"""

import builtins
import os
from unittest import mock

import numpy as np

from perceiver_io.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
# `line_tables.process_rows` keywords for a table with a header whose
# fields are guessed.
HEADER_READ = dict(
  text_fields=None,
  label_field=None,
  has_header=True,
  task='classification',
  class_map=None,
)


def write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data if isinstance(data, bytes) else data.encode('utf-8'))
  return path


def all_batches(ds):
  return list(ds.as_numpy_iterator())


def take(ds, n):
  it = ds.as_numpy_iterator()
  return [next(it) for _ in range(n)]


def real_rows(batches, key):
  return np.concatenate([b[key][b['mask'] > 0] for b in batches])


def ids(text, pair=None, max_length=32):
  return TOK.encode(
    text, pair, max_length=max_length, truncation=True, padding='max_length'
  )['input_ids']


def eval_rows(source, split, index, count):
  """(index, label) of every real row process `index` of `count` gets from
  `make_text_dataset` (evaluation order), and the dataset's info."""
  from perceiver_io.data import text as text_data  # pylint: disable=g-import-not-at-top

  ds, info = text_data.make_text_dataset(
    source,
    split,
    max_length=16,
    batch_size=4,
    repeat=False,
    process_index=index,
    process_count=count,
  )
  got = [
    (int(i), int(y))
    for b in ds.as_numpy_iterator()
    for i, y, m in zip(b['index'], b['label'], b['mask'])
    if m
  ]
  return got, info


def assert_same_training_batches(config, split, steps, counts=(2, 4)):
  """Training tables of 2 and 4 simulated processes build, step by step,
  the global batches of one process (`host_data`'s fixed shards)."""
  from experiments import host_data  # pylint: disable=g-import-not-at-top

  single, info = host_data.load_process_table(
    config, split, 'classification', True, 0, 1
  )
  bounds = info['bounds']
  stream = host_data.ShardedTableStream(single, bounds, 8, 5)
  for count in counts:
    streams = []
    for i in range(count):
      table, part = host_data.load_process_table(
        config, split, 'classification', True, i, count
      )
      assert part['bounds'] == bounds
      streams.append(
        host_data.ShardedTableStream(table, bounds, 8, 5, i, count)
      )
    for step in steps:
      got = [s.batch(step) for s in streams]
      for k, v in stream.batch(step).items():
        np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), v)
  return bounds


class Opened:
  """Records the files under `root` opened while active, and the byte
  intervals [offset, offset + n) each read/readline call returned."""

  def __init__(self, root):
    self.root, self.paths, self.spans = str(root), [], []

  def __enter__(self):
    original, recorder = builtins.open, self

    def spy(path, *args, **kwargs):
      f = original(path, *args, **kwargs)
      if not str(path).startswith(recorder.root):
        return f
      recorder.paths.append(str(path))
      for name in ('read', 'readline'):
        method = getattr(f, name)

        def counted(*a, _method=method, **k):
          offset = f.tell()
          data = _method(*a, **k)
          recorder.spans.append((str(path), offset, offset + len(data)))
          return data

        setattr(f, name, counted)
      return f

    self._patch = mock.patch.object(builtins, 'open', spy)
    self._patch.start()
    return self

  def __exit__(self, *exc):
    self._patch.stop()
