"""Byte-level language-model windows for Perceiver AR (`perceiver_io.ar`).

Why rows of N + 1 tokens: the model reads N inputs and its M latents sit on
the last M of them, each predicting the next token, so a row holds the N
inputs and, shifted by one, their targets. Rows shorter than N + 1 (the
start of a corpus, a short document) are padded with PAD at the *start*, so
the latents always sit on the newest tokens (the model's right-aligned
convention).

A corpus is one array of token ids (UTF-8 byte + 6, the ids of
`perceiver_io.tokenizer`), documents joined with EOS. Training rows end at
uniform random positions drawn from ``(seed, step)`` for the whole global
batch, and each process gathers only its own rows, so batch ``step`` is a
pure function of the step (a resumed run reads the same rows) and the
process count does not change what the global batch holds. Evaluation
tiles the held-out stream in blocks of M targets (the official
"block eval"): every target is scored once, with at least N - M tokens of
context after the first window.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from perceiver_io import tokenizer as tokenizer_lib

PAD_ID = tokenizer_lib.PAD_ID
BOS_ID = tokenizer_lib.BOS_ID
EOS_ID = tokenizer_lib.EOS_ID
VOCAB_SIZE = tokenizer_lib.VOCAB_SIZE


def encode_bytes(data: bytes) -> np.ndarray:
  """UTF-8 bytes -> int32 token ids (byte + 6)."""
  return np.frombuffer(data, np.uint8).astype(np.int32) + (
    tokenizer_lib.NUM_SPECIAL_TOKENS
  )


def decode_ids(ids) -> bytes:
  """Token ids -> bytes; reserved ids (PAD, EOS, ...) are dropped."""
  ids = np.asarray(ids, np.int64)
  ids = ids[ids >= tokenizer_lib.NUM_SPECIAL_TOKENS]
  return (ids - tokenizer_lib.NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes()


def join_documents(docs) -> np.ndarray:
  """Token arrays of documents -> one stream, each document ended by EOS."""
  parts = []
  for doc in docs:
    parts += [np.asarray(doc, np.int32), np.array([EOS_ID], np.int32)]
  return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def left_pad(tokens: np.ndarray, length: int) -> np.ndarray:
  """The last `length` tokens, PAD-padded at the start if fewer."""
  tokens = np.asarray(tokens, np.int32)[-length:] if length else tokens[:0]
  out = np.full(length, PAD_ID, np.int32)
  out[length - len(tokens) :] = tokens
  return out


def check_sizes(max_context: int, num_latents: int) -> None:
  if not 1 <= int(num_latents) <= int(max_context):
    raise ValueError(
      f'num_latents={num_latents} must be in [1, max_context='
      f'{max_context}]: the latents are the last M of the N inputs.'
    )


def rows_to_batch(
  rows: np.ndarray, num_latents: int, target_weights=None
) -> dict[str, np.ndarray]:
  """[B, N + 1] rows -> the model's inputs and the latents' targets.

  Returns:
    dict(inputs int32 [B, N], targets int32 [B, M] (the token after each
    latent's position), target_weights float32 [B, M]: 1 where the latent's
    own input and its target are real tokens (and `target_weights` allows)).
  """
  rows = np.asarray(rows, np.int32)
  inputs, targets = rows[:, :-1], rows[:, 1:][:, -num_latents:]
  real = (inputs[:, -num_latents:] != PAD_ID) & (targets != PAD_ID)
  weights = real.astype(np.float32)
  if target_weights is not None:
    weights *= np.asarray(target_weights, np.float32)
  return {'inputs': inputs, 'targets': targets, 'target_weights': weights}


def process_rows(
  global_batch: int, process_index: int, process_count: int
) -> slice:
  """This process's rows of a global batch (contiguous, equal counts)."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
      f'process_index={process_index} must be in [0, process_count='
      f'{process_count}).'
    )
  if global_batch % process_count:
    raise ValueError(
      f'batch size {global_batch} must be divisible by the '
      f'{process_count} processes.'
    )
  per = global_batch // process_count
  return slice(process_index * per, (process_index + 1) * per)


@dataclasses.dataclass
class TrainWindows:
  """Random windows of a token stream; `batch(step)` depends on step only.

  Attributes:
    tokens: the training stream (int32 ids).
    max_context: N, the model's inputs per row.
    num_latents: M.
    global_batch: rows of every global batch (all processes).
    seed: seed of the window positions.
    process_index, process_count: which rows this process returns.
  """

  tokens: np.ndarray
  max_context: int
  num_latents: int
  global_batch: int
  seed: int = 0
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    check_sizes(self.max_context, self.num_latents)
    self.tokens = np.asarray(self.tokens, np.int32)
    if len(self.tokens) < 2:
      raise ValueError(
        f'the training text has {len(self.tokens)} token(s); a language '
        'model needs at least 2 (an input and its target).'
      )
    self._rows = process_rows(
      self.global_batch, self.process_index, self.process_count
    )

  def ends(self, step: int) -> np.ndarray:
    """Exclusive end of every global row of batch `step` in the stream."""
    rng = np.random.default_rng([int(self.seed), int(step)])
    length = len(self.tokens)
    low = min(self.max_context + 1, length)
    return rng.integers(low, length + 1, self.global_batch)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    width = self.max_context + 1
    rows = np.stack(
      [
        left_pad(self.tokens[max(0, end - width) : end], width)
        for end in self.ends(step)[self._rows]
      ]
    )
    out = rows_to_batch(rows, self.num_latents)
    out['weight'] = np.ones(len(rows), np.float32)
    return out


def eval_windows(
  tokens: np.ndarray, max_context: int, num_latents: int
) -> dict[str, np.ndarray]:
  """Every target of the stream exactly once, M per row (block eval).

  Row k scores targets ``tokens[k*M + 1 : (k+1)*M + 1]`` with up to N
  tokens of context; the last row is shifted back to end at the stream's
  end, and its targets already scored get weight 0.
  """
  check_sizes(max_context, num_latents)
  tokens = np.asarray(tokens, np.int32)
  n, m = int(max_context), int(num_latents)
  count = max(0, math.ceil((len(tokens) - 1) / m))
  rows = np.full((count, n + 1), PAD_ID, np.int32)
  weights = np.ones((count, m), np.float32)
  for k in range(count):
    last = (k + 1) * m  # Index of the row's last target.
    if last > len(tokens) - 1:
      weights[k, : last - (len(tokens) - 1)] = 0.0
      last = len(tokens) - 1
    rows[k] = left_pad(tokens[max(0, last - n) : last + 1], n + 1)
  return rows_to_batch(rows, m, weights)


def batches(
  windows: dict[str, np.ndarray],
  global_batch: int,
  process_index: int = 0,
  process_count: int = 1,
  limit: int = -1,
):
  """This process's rows of every global eval batch, the last one padded
  with weight-0 rows. `limit` > 0 keeps the first `limit` windows."""
  total = len(windows['inputs'])
  if limit > 0:
    total = min(total, limit)
  rows = process_rows(global_batch, process_index, process_count)
  for start in range(0, total, global_batch):
    index = np.arange(start, start + global_batch)[rows]
    real = index < total
    index = np.where(real, index, 0)
    out = {k: v[index] for k, v in windows.items()}
    out['target_weights'] = out['target_weights'] * real[:, None]
    out['weight'] = real.astype(np.float32)
    yield out
