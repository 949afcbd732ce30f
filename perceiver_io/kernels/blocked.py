"""Attention one (batch element, head, row block) at a time, for long inputs.

Part of the CPU kernels (kernels/cpu.py). Why: a long input's
cross-attention logits are the largest arrays of a step (64k input bytes,
8 heads, 256 latents: 512 MiB), and the full-matrix path keeps the weights
from the forward and makes logits-sized products in the backward. Here no
array larger than one block exists: the forward keeps only each row's
softmax statistics, the backward recomputes a block's weights from them (one
more q k^T product), and heads are sliced one at a time instead of copied
into head-major order.

What it buys (2-core AMD EPYC, jaxlib 0.10.2, paired runs against the full
matrix): the 64k-byte language classifier's train step 0.94-0.99x the time
with 1.64 vs 2.77 GiB of XLA temporaries, its inference 0.59-0.65x with
0.81 vs 1.69 GiB; optical-flow inference 0.97x with 1.32 vs 3.44 GiB. Where
it does not pay, `use_blocked` keeps the full matrix: ImageNet Fourier's one
wide head (261 channels, 196 MiB of logits at batch 2) trained 1.02-1.05x
slower blocked, IMDB's cross-attention (2 MiB per-head slices) 1.02-1.05x.
How to remove: when XLA:CPU fuses attention without materialising the
logits (a flash-attention kernel for CPU), `kernels.attend` stops calling it.
"""

import functools

import jax
import jax.numpy as jnp

from perceiver_io.kernels import reference
from perceiver_io.kernels.row_major import matmul
from perceiver_io.kernels.row_major import row_major_t
from perceiver_io.kernels.row_major import softmax_backward

# Calls whose fp32 logits ([B, H, T, S]) take at least this many bytes run
# block by block. Measured both sides: 196 MiB (ImageNet) pays for the
# recomputation, 512 MiB (64k bytes) and 1.4 GiB (optical flow) do not.
MIN_BYTES = 256 * 2**20
# ... and so do smaller calls whose logits per (batch element, head) take at
# least this many bytes and whose q/k heads are at most this wide: with
# narrow heads recomputing q k^T is cheap, with large slices the loop's
# per-block cost is. Measured: the language classifier's input attention at
# 4k-16k bytes (4-16 MiB slices, 32-wide heads) trains 0.97-1.00x the time
# with 0.08-0.30 GiB fewer temporaries and infers 0.79-0.80x.
MIN_SLICE_BYTES = 4 * 2**20
MAX_QK_WIDTH = 64


def use_blocked(q, k, options) -> bool:
  """Whether this call runs block by block: `options.blocked_attention_
  min_bytes` alone if set, else the measured rule above."""
  batch, q_len, heads, qk_width = q.shape
  slice_bytes = 4 * q_len * k.shape[1]
  if options.blocked_attention_min_bytes is not None:
    return batch * heads * slice_bytes >= options.blocked_attention_min_bytes
  return batch * heads * slice_bytes >= MIN_BYTES or (
    slice_bytes >= MIN_SLICE_BYTES and qk_width <= MAX_QK_WIDTH
  )


def _for_each_block(q, kv_len, block_bytes, body, carry):
  """`carry = body(b, h, first_row, rows, carry)` over all attention blocks.

  A block is `rows` consecutive query rows of one batch element and head:
  as many rows as fit `block_bytes` of fp32 logits, then the remainder (a
  second loop, so any query length works). `rows` is static, the rest are
  loop indices.
  """
  batch, q_len, heads, _ = q.shape
  rows = max(1, min(q_len, block_bytes // (4 * kv_len)))
  full = q_len // rows
  loops = [(full, rows, 0)]
  if q_len % rows:
    loops.append((1, q_len % rows, full * rows))
  for count, size, offset in loops:

    def step(i, c, count=count, size=size, offset=offset):
      b, h = i // (heads * count), (i // count) % heads
      return body(b, h, offset + (i % count) * size, size, c)

    carry = jax.lax.fori_loop(0, batch * heads * count, step, carry)
  return carry


def _block(x, b, first, h, rows):
  """x[b, first:first + rows, h, :] of a [B, T, H, D] array, as [rows, D]."""
  return jax.lax.dynamic_slice(
    x, (b, first, h, 0), (1, rows, 1, x.shape[-1])
  ).reshape(rows, -1)


def _put_block(x, block, b, first, h):
  """x[b, first:first + len(block), h, :] = block."""
  block = block.reshape(1, block.shape[0], 1, -1).astype(x.dtype)
  return jax.lax.dynamic_update_slice(x, block, (b, first, h, 0))


def _block_mask(mask, b, first, rows):
  """mask[b, first:first + rows] of a [B, T, S] mask (None stays None)."""
  if mask is None:
    return None
  return jax.lax.dynamic_slice(mask, (b, first, 0), (1, rows, mask.shape[-1]))[
    0
  ]


def _block_logits(q_block, k_block, mask_block, scale):
  """Scaled, masked fp32 logits of a block: [rows, D], [S, D] -> [rows, S]."""
  logits = (
    jax.lax.dot_general(
      q_block,
      k_block,
      (((1,), (1,)), ((), ())),
      preferred_element_type=jnp.float32,
    )
    * scale
  )
  if mask_block is not None:
    logits = jnp.where(mask_block, logits, reference.MASKED_LOGIT)
  return logits


def _forward(q, k, v, mask, block_bytes):
  """Softmax attention block by block; returns (output, softmax statistics).

  The statistics are each row's max logit and 1 / sum(exp(logit - max)),
  [2, B, H, T], from which the backward recomputes the weights exactly
  (a log-sum-exp alone loses the sum of a fully masked row: -1e30 + log S
  rounds to -1e30).
  """
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  kv_len = k.shape[1]
  out = jnp.zeros(q.shape[:3] + v.shape[-1:], v.dtype)
  stats = jnp.zeros(
    (2,) + q.shape[:1] + q.shape[2:3] + q.shape[1:2], jnp.float32
  )

  def body(b, h, first, rows, carry):
    out, stats = carry
    logits = _block_logits(
      _block(q, b, first, h, rows),
      _block(k, b, 0, h, kv_len),
      _block_mask(mask, b, first, rows),
      scale,
    )
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    unnormalised = jnp.exp(logits - row_max)
    inv_sum = 1.0 / jnp.sum(unnormalised, axis=-1, keepdims=True)
    weights = (unnormalised * inv_sum).astype(v.dtype)
    out = _put_block(
      out, matmul(weights, _block(v, b, 0, h, kv_len)), b, first, h
    )
    block_stats = jnp.stack([row_max, inv_sum]).reshape(2, 1, 1, rows)
    stats = jax.lax.dynamic_update_slice(stats, block_stats, (0, b, h, first))
    return out, stats

  return _for_each_block(q, kv_len, block_bytes, body, (out, stats))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def blocked_attention(q, k, v, mask, block_bytes):
  """softmax(q k^T / sqrt(d)) v on [B,T,H,D] arrays in blocks of at most
  `block_bytes` of fp32 logits (module docstring)."""
  return _forward(q, k, v, mask, block_bytes)[0]


def _blocked_attention_fwd(q, k, v, mask, block_bytes):
  out, stats = _forward(q, k, v, mask, block_bytes)
  return out, (q, k, v, mask, out, stats)


def _blocked_attention_bwd(block_bytes, res, d_out):
  q, k, v, mask, out, stats = res
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  kv_len = k.shape[1]

  def body(b, h, first, rows, carry):
    d_q, d_k, d_v = carry
    q_b, k_b, v_b = (
      _block(q, b, first, h, rows),
      _block(k, b, 0, h, kv_len),
      _block(v, b, 0, h, kv_len),
    )
    mask_b = _block_mask(mask, b, first, rows)
    block_stats = jax.lax.dynamic_slice(
      stats, (0, b, h, first), (2, 1, 1, rows)
    ).reshape(2, rows, 1)
    weights = (
      jnp.exp(_block_logits(q_b, k_b, mask_b, scale) - block_stats[0])
      * block_stats[1]
    )
    d_o = _block(d_out, b, first, h, rows)
    # dV = P^T dO and dK = dS^T Q from row-major copies (kernels/cpu.py, 1.).
    d_v_b = matmul(row_major_t(weights.astype(v.dtype)), d_o)
    d_weights = jax.lax.dot_general(
      d_o, v_b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    d_logits = softmax_backward(
      weights,
      d_weights,
      d_o,
      _block(out, b, first, h, rows),
      mask_b,
      scale,
      q.dtype,
    )
    d_q = _put_block(d_q, matmul(d_logits, k_b), b, first, h)
    # Several row blocks of one head add into the same dK, dV rows.
    d_k = _put_block(
      d_k,
      _block(d_k, b, 0, h, kv_len) + matmul(row_major_t(d_logits), q_b),
      b,
      0,
      h,
    )
    d_v = _put_block(d_v, _block(d_v, b, 0, h, kv_len) + d_v_b, b, 0, h)
    return d_q, d_k, d_v

  zeros = tuple(jnp.zeros_like(x) for x in (q, k, v))
  return (*_for_each_block(q, kv_len, block_bytes, body, zeros), None)


blocked_attention.defvjp(_blocked_attention_fwd, _blocked_attention_bwd)
