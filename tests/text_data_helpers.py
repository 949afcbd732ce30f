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
