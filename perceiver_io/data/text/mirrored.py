"""The Perceiver AR paper's copy task (`random_mirrored`), generated.

Why this task: the second half of a row is the first half reversed, so the
token at distance d from the middle is a copy of the token 2d + 1 positions
back. With N = 2L inputs and M latents on the last M positions, every
target sits 2(L - M) + 1 to 2L - 1 tokens after its source: a model that
sees only its last M tokens scores chance (1/256), and one that reads the
whole input through the cross-attention can reach 100 %.

A row is ``[BOS] x reversed(x)``, x of L uniform random bytes (as ids
byte + 6), 2L + 1 tokens: the N = 2L inputs and their targets. Row r of
global batch `step` is drawn from ``(seed, step, r)``, so a batch is a
function of the step and a process generates only its own rows. The
'copied' flag marks targets in the reversed half (all of them when
M <= L). Evaluation always scores whole rows (the longest distances).
"""

from __future__ import annotations

import numpy as np

from perceiver_io.data.text import lm


def mirrored_row(rng: np.random.Generator, half: int) -> np.ndarray:
  """``[BOS] x reversed(x)``: 2 * half + 1 token ids."""
  x = rng.integers(256, size=half).astype(np.int32) + 6
  return np.concatenate([[lm.BOS_ID], x, x[::-1]]).astype(np.int32)


def check_half(half: int, max_context: int, num_latents: int) -> None:
  lm.check_sizes(max_context, num_latents)
  if 2 * int(half) != int(max_context):
    raise ValueError(
      f'random_mirrored: a row is 2 x {half} tokens, so max_context must '
      f'be {2 * half}, not {max_context} (set data.mirrored_half to '
      f'{max_context // 2}, or model.kwargs.max_context to {2 * half}).'
    )


def mirrored_batch(
  rows, half: int, num_latents: int, seed: int, key, crop: bool = False
) -> dict[str, np.ndarray]:
  """The rows `rows` (global indices) of the batch drawn from `key`.

  With `crop`, each row is a prefix of its sequence ending at a random
  token of the copied half (at least M into it), padded at the start, as
  the official training crops are: short prefixes put sources close to
  their copies, so the position lookup is learnt near before far, and
  positions still count from BOS.
  """
  width, m = 2 * half + 1, int(num_latents)
  drawn, ends = [], []
  for r in rows:
    rng = np.random.default_rng([int(seed), *key, int(r)])
    row = mirrored_row(rng, half)
    end = width
    if crop:
      end = int(rng.integers(min(half + 1 + m, width), width + 1))
    drawn.append(lm.left_pad(row[:end], width))
    ends.append(end)
  out = lm.rows_to_batch(np.stack(drawn), m)
  # Latent j's target is token end - M + j of the sequence (BOS = 0);
  # tokens after the first half (index > L) are copies.
  target = np.asarray(ends)[:, None] - m + np.arange(m)[None, :]
  out['copied'] = (target > half).astype(np.float32) * out['target_weights']
  out['weight'] = np.ones(len(drawn), np.float32)
  return out


class MirroredTrainRows:
  """Training rows: `batch(step)` is a pure function of the step."""

  def __init__(
    self,
    half,
    max_context,
    num_latents,
    global_batch,
    seed=0,
    process_index=0,
    process_count=1,
    crop=False,
  ):
    check_half(half, max_context, num_latents)
    self.half, self.m, self.seed = int(half), int(num_latents), int(seed)
    self.crop = bool(crop)
    rows = lm.process_rows(global_batch, process_index, process_count)
    self.rows = range(rows.start, rows.stop)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    return mirrored_batch(
      self.rows, self.half, self.m, self.seed, (0, step), self.crop
    )


def mirrored_eval_batches(
  half,
  max_context,
  num_latents,
  count,
  global_batch,
  seed=0,
  process_index=0,
  process_count=1,
):
  """`count` held-out rows (another key than training's), in batches of
  `global_batch`; the last batch is padded with weight-0 rows."""
  check_half(half, max_context, num_latents)
  rows = lm.process_rows(global_batch, process_index, process_count)
  for start in range(0, int(count), global_batch):
    index = range(start + rows.start, start + rows.stop)
    out = mirrored_batch(index, half, num_latents, seed, (1, 0))
    real = np.asarray(index) < count
    out['weight'] = real.astype(np.float32)
    out['target_weights'] *= real[:, None]
    yield out
