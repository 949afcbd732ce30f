"""Helpers shared by the text-data tests (tests/test_data_text_*.py).

Expected values in those tests are written by hand or come from the
HF-verified tokenizer applied to the hand-written text (`ids`), never from
the pipeline itself; fixtures are generated in temp dirs (`write`).
"""

import os

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
