"""Attention, MLP and the two Perceiver blocks (cross- and self-attention).

Written to reproduce the official Perceiver IO numerics (see
`shared/reference/perceiver-official.md`, sections 1.1-1.4):

* query/key width and value width are separate (`qk_channels`, `v_channels`);
* logits are scaled by 1/sqrt(qk head width); masked logits become -1e30
  (not -inf), and a query row whose mask is all zero outputs exactly zero
  before the output projection;
* blocks are pre-LayerNorm with eps 1e-5; a cross-attention block writes its
  output in the *query* width and adds the query residual only when
  `use_query_residual` is set.

Numerically equivalent attention paths: `jax.nn.dot_product_attention`
(XLA's kernel when the q/k and v head widths match, or with
`attention_impl='cudnn'` cuDNN flash attention on GPU, the narrower width
zero-padded) when no attention dropout is active, an einsum path otherwise,
and on the CPU backend (the default there) a head-major core with a
hand-written gradient (`_cpu_attention`), or for calls with large logits
(long inputs) the same computed one batch element, head and row block at a
time (`_blocked_attention`), Dense layers with row-major weight gradients
(`dense_dot_general`) and blocks whose gradients are computed block by block
(`_call_block`).

CPU gradients, why hand-written: XLA's CPU matmul (YNN) is slower when the
left operand is transposed (fourth session's dev CPU, one thread: 40 vs 75
GFLOP/s for a 1024^3 GEMM; torch 78-85 either way; ninth session's AVX-512
CPU, two threads: 343 vs 469, `benchmarks/gemm.py`). Autodiff gives
exactly that form for every weight gradient (dW = x^T dy) and for the
attention gradients dV = P^T dO and dK = dS^T Q. `_cpu_attention` and
`dense_dot_general` copy one operand into row-major transposed form first (a
memory pass, ~1-2 % of the GEMM) so every backward GEMM is row-major.

CPU gradients, why block by block: XLA's low-memory CPU scheduler (the one
the launchers select, `runtime.prefer_low_memory_cpu`) places every weight
gradient after the whole backward pass, next to the optimizer update that
reads it, so every layer's saved activations and output gradients stay alive
until the end. `_call_block` makes each block's input gradient wait for its
parameter gradients, which frees them layer by layer. With it the row-major
Dense gradients cost no memory: paired train steps on the dev machine,
against autodiff's Dense gradients without it, IMDB 0.90x the time and XLA
temporaries 1.53 vs 1.99 GiB, ImageNet conv 0.91x and 2.61 vs 3.38 GiB,
ImageNet Fourier 0.92x and 3.15 vs 4.01 GiB (BUILD_NOTES.md, ninth session;
XLA's default scheduler plans 2.87 GiB for IMDB with or without it). Other
backends (GPU/TPU BLAS take transposed operands natively, and their
schedulers order the backward themselves) keep autodiff's form. A custom VJP
has no forward-mode rule: for `jax.jvp`/`jax.jacfwd` through the model on
CPU use `attention_impl='einsum'` or `'fused'`, which keep plain autodiff
everywhere.
"""

import contextlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
LAYER_NORM_EPS = 1e-5
_MASKED_LOGIT = -1e30

# Haiku's VarianceScaling(1.0) == truncated-normal fan_in, which is LeCun normal.
default_kernel_init = nn.initializers.lecun_normal()


# `MultiHeadAttention.attention_impl`'s values (its docstring says what each
# means).
ATTENTION_IMPLS = ('auto', 'cudnn', 'fused', 'einsum', 'cpu')
# Set only inside `assume_platform`.
_ASSUMED_PLATFORM = None
# `_call_block`'s switch (`blockwise_cpu_gradients`).
_BLOCKWISE_CPU_GRADIENTS = True


@contextlib.contextmanager
def assume_platform(platform: str):
  """Traces attention as if JAX's default backend were `platform`.

  Why: choosing the CPU or GPU attention path asks `jax.default_backend()`,
  which creates the backend. The launchers count a step's FLOPs from shapes
  before that (`runtime.reuse_host_memory_for_step` must run before the CPU
  backend exists); the paths compute the same products, so the count does
  not depend on the one assumed.
  """
  global _ASSUMED_PLATFORM
  previous, _ASSUMED_PLATFORM = _ASSUMED_PLATFORM, platform
  try:
    yield
  finally:
    _ASSUMED_PLATFORM = previous


@contextlib.contextmanager
def blockwise_cpu_gradients(enabled: bool):
  """Traces the blocks with (the default) or without `_call_block`'s order.

  For A/B measurements (`benchmarks/paired_options.py`) and tests only:
  values are the same either way, and without it XLA's CPU schedule keeps
  every layer's activations alive to the end of the backward pass.
  """
  global _BLOCKWISE_CPU_GRADIENTS
  previous, _BLOCKWISE_CPU_GRADIENTS = _BLOCKWISE_CPU_GRADIENTS, enabled
  try:
    yield
  finally:
    _BLOCKWISE_CPU_GRADIENTS = previous


def _default_platform() -> str:
  return _ASSUMED_PLATFORM or jax.default_backend()


def _on_cpu() -> bool:
  return _default_platform() == 'cpu'


def _custom_cpu_gradients(attention_impl: str) -> bool:
  """Whether this path takes the hand-written CPU gradients (docstring)."""
  return _on_cpu() and attention_impl in ('auto', 'cpu', 'cudnn')


def _matmul(a, b):
  """[..., K] x [K, N] -> [..., N]."""
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())))


def _row_major_t(x):
  """x^T as a materialised row-major array (not a layout bitcast).

  The barrier stops XLA from folding the transpose back into the consuming
  dot, which would turn it into the slow transposed-operand GEMM again.
  """
  return jax.lax.optimization_barrier(jnp.transpose(x))


def _row_major_t_last2(x):
  """`_row_major_t` of the last two axes ([..., M, N] -> [..., N, M])."""
  return jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


@jax.custom_vjp
def _cpu_dense_matmul(x, kernel):
  return _matmul(x, kernel)


def _cpu_dense_matmul_fwd(x, kernel):
  return _matmul(x, kernel), (x, kernel)


def _cpu_dense_matmul_bwd(res, dy):
  x, kernel = res
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  x2 = x.reshape(-1, x.shape[-1])
  dy2 = dy.reshape(-1, dy.shape[-1])
  # dW = x^T dy from a materialised x^T: a row-major GEMM, even where dy is
  # the smaller operand. From a copied dy^T instead, XLA folds the final
  # transpose of dW^T = dy^T x back into the product (the slow
  # transposed-operand Eigen dot again); with a barrier against that, the
  # ImageNet conv step was 1.03x 'auto''s against 0.95x for this form (paired,
  # session 8, BUILD_NOTES.md).
  dw = _matmul(_row_major_t(x2), dy2)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


_cpu_dense_matmul.defvjp(_cpu_dense_matmul_fwd, _cpu_dense_matmul_bwd)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None,
                      preferred_element_type=None):
  """`nn.Dense`'s contraction with a row-major weight gradient on CPU.

  Same forward and same values as `lax.dot_general`; on the CPU backend the
  backward computes dW from an explicitly transposed operand (module
  docstring). Anything but Dense's plain `[..., K] x [K, N]` contraction, or a
  set precision, goes to `lax.dot_general` unchanged.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  plain = (tuple(lhs_contract) == (lhs.ndim - 1,) and
           tuple(rhs_contract) == (0,) and rhs.ndim == 2 and
           not lhs_batch and not rhs_batch)
  if (plain and precision is None and preferred_element_type is None and
      _on_cpu()):
    return _cpu_dense_matmul(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)


def dense(features, name, dtype=None, param_dtype=jnp.float32,
          row_major_grads=False):
  """LeCun-normal `nn.Dense`; `dense_dot_general` if `row_major_grads`."""
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype,
                  kernel_init=default_kernel_init,
                  dot_general=dense_dot_general if row_major_grads else None,
                  name=name)


def make_cross_attention_mask(query_mask, kv_mask):
  """Outer product of a [B, Tq] and a [B, Tkv] mask -> boolean [B, Tq, Tkv]."""
  return jnp.logical_and(query_mask[:, :, None].astype(bool),
                         kv_mask[:, None, :].astype(bool))


def _compute_capability():
  """The first device's CUDA compute capability as a float (9.0: Hopper), or
  None off NVIDIA GPUs (or while `assume_platform` names one not present)."""
  capability = getattr(jax.devices()[0], 'compute_capability', None)
  try:
    return float(capability)
  except (TypeError, ValueError):
    return None


def cudnn_attention_supported(q, mask=None, backend=None, v_head_width=None,
                              compute_capability=None, kv_length=None):
  """Whether cuDNN flash attention takes these queries ([B, T, H, D]).

  Why a predicate rather than try/except: JAX refuses unsupported shapes only
  partly at trace time, so the conservative set is chosen up front: an
  NVIDIA GPU of compute capability 8.0 or later (cuDNN's attention needs
  SM80, its documentation says; JAX 0.10.2 leaves that check as a TODO),
  bf16/fp16 activations, and a head width (the wider of the q/k and v
  widths, `v_head_width`, since `_fused_attention` pads the narrower to
  it) that is a multiple of 8 and at most 128, or 256 on Hopper and later
  (compute capability >= 9.0, cuDNN's own limit there; read from the device
  unless `compute_capability` is given), and even query and key lengths
  (`kv_length`, or the mask's last axis). Why even lengths: JAX refuses a
  training call with a bias (a mask, [B, T, S], becomes one) unless both
  are even, and JAX 0.10.2 passes an empty placeholder as the bias of a call
  without one, so the check hits every call: the classification decoders'
  single query (one head of <= 256) failed with "Unsupported sequence
  length Q 1" (seen compiling for a described H200 on the CPU,
  `benchmarks/gpu_roofline.py --smoke`).
  """
  backend = backend or _default_platform()
  if backend != 'gpu':
    return False
  if compute_capability is None:
    compute_capability = _compute_capability()
  if (compute_capability or 0.0) < 8.0:  # cuDNN's flash attention: sm80+.
    return False
  max_width = 256 if compute_capability >= 9.0 else 128
  widths = (q.shape[-1], v_head_width or q.shape[-1])
  lengths = (q.shape[1], kv_length or (mask.shape[-1] if mask is not None
                                       else q.shape[1]))
  return (all(n % 2 == 0 for n in lengths) and
          q.dtype in (jnp.bfloat16, jnp.float16) and
          all(w % 8 == 0 and w <= max_width for w in widths))


def _fused_attention(q, k, v, mask=None, implementation='cudnn'):
  """`jax.nn.dot_product_attention` for any q/k and v head widths ([B,T,H,D]).

  Why padding: `jax.nn.dot_product_attention` (and cuDNN's kernel behind it)
  wants one head width for q, k and v, but the language perceiver's latent
  attention has q/k heads of 32 and v heads of 160. Zero columns appended
  to q and k leave every logit unchanged (the scale stays 1/sqrt(q/k width)),
  and zero columns appended to v give output columns that are sliced off,
  so values and gradients are those of the unpadded attention. The extra
  logit FLOPs (32 -> 160 per head) are small next to the projections, and
  the fused kernel never writes the [B, H, T, S] fp32 logits and softmax
  to memory. `mask` is [B, T, S] (True: attend). `implementation`: 'cudnn'
  (`attention_impl='cudnn'`), None (JAX's choice, `_xla_attention`) or
  'xla' (tests on the CPU).
  """
  qk_width, v_width = q.shape[-1], v.shape[-1]
  width = max(qk_width, v_width)

  def pad(x):
    extra = width - x.shape[-1]
    return x if extra == 0 else jnp.pad(x, [(0, 0)] * 3 + [(0, extra)])

  out = jax.nn.dot_product_attention(
      pad(q), pad(k), pad(v), scale=1.0 / float(qk_width) ** 0.5,
      mask=None if mask is None else mask[:, None, :, :],
      implementation=implementation)
  return out[..., :v_width]


def _einsum_attention(q, k, v, mask, dropout_rate, deterministic, dropout_rng,
                      dtype):
  """The reference attention: [B,T,H,D] x [B,S,H,D] -> [B,T,H,Dv]."""
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  logits = jnp.einsum('bthd,bshd->bhts', q, k,
                      preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask[:, None, :, :], logits, _MASKED_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and not deterministic:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum('bhts,bshd->bthd', weights.astype(dtype), v)


def _heads_first(x):
  return jnp.transpose(x, (0, 2, 1, 3))  # [B, T, H, D] <-> [B, H, T, D]


def _cpu_attention_forward(q, k, v, mask):
  """Head-major softmax attention; returns (output, residuals)."""
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
  logits = jnp.einsum('bhtd,bhsd->bhts', qh, kh,
                      preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask[:, None, :, :], logits, _MASKED_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('bhts,bhsd->bhtd', weights.astype(vh.dtype), vh)
  return _heads_first(out), (qh, kh, vh, weights, out, mask)


def _xla_attention(q, k, v, mask):
  """The autodiff-friendly forward: XLA's fused kernel if head widths agree."""
  if q.shape[-1] == v.shape[-1]:
    return _fused_attention(q, k, v, mask, implementation=None)
  return _einsum_attention(q, k, v, mask, 0.0, True, None, q.dtype)


@jax.custom_vjp
def _cpu_attention(q, k, v, mask):
  """softmax(q k^T / sqrt(d)) v on [B,T,H,D] arrays, CPU-friendly gradient.

  Without a gradient (inference) this is `_xla_attention`: the head-major
  forward is only used where its residuals serve the backward (it was 6 %
  slower and 0.1 GB larger for ImageNet Fourier inference, paired runs).
  """
  return _xla_attention(q, k, v, mask)


def _softmax_backward(weights, d_weights, d_out, out, mask, scale, dtype):
  """Logit gradients dS = P * (dP - rowsum(dO * O)) * scale, masked; in dtype.

  `mask` (or None) broadcasts against the weights; rowsum(dO * O) equals
  rowsum(dP * P) without another logits-sized product.
  """
  row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1,
                keepdims=True)
  d_logits = weights * (d_weights - row) * scale
  if mask is not None:
    d_logits = jnp.where(mask, d_logits, 0.0)
  return d_logits.astype(dtype)


def _cpu_attention_bwd(res, d_out):
  qh, kh, vh, weights, out, mask = res
  scale = 1.0 / jnp.sqrt(qh.shape[-1]).astype(jnp.float32)
  d_oh = _heads_first(d_out)
  # dV = P^T dO and dK = dS^T Q with P^T, dS^T copied row-major (docstring).
  weights_t = _row_major_t_last2(weights.astype(vh.dtype))
  d_v = jnp.einsum('bhst,bhtd->bhsd', weights_t, d_oh)
  d_weights = jnp.einsum('bhtd,bhsd->bhts', d_oh, vh,
                         preferred_element_type=jnp.float32)
  d_logits = _softmax_backward(
      weights, d_weights, d_oh, out,
      None if mask is None else mask[:, None, :, :], scale, qh.dtype)
  d_q = jnp.einsum('bhts,bhsd->bhtd', d_logits, kh)
  d_k = jnp.einsum('bhst,bhtd->bhsd', _row_major_t_last2(d_logits), qh)
  return (_heads_first(d_q), _heads_first(d_k), _heads_first(d_v), None)


_cpu_attention.defvjp(_cpu_attention_forward, _cpu_attention_bwd)


# `_blocked_attention`: calls whose fp32 logits ([B, H, T, S]) would take at
# least this many bytes run block by block (`blocked_attention_threshold`).
# Measured both sides of it: 196 MiB (ImageNet) pays for the recomputation,
# 512 MiB (64k bytes) and 1.4 GiB (optical flow) do not.
_BLOCKED_ATTENTION_MIN_BYTES = 256 * 2**20
# ... and so do smaller calls whose logits per (batch element, head) take at
# least this many bytes and whose q/k heads are at most this wide: with
# narrow heads recomputing q k^T in the backward is cheap, with large slices
# the loop's per-block cost is. Measured (eleventh session, paired): the
# language classifier's input attention at 4k-16k bytes (4-16 MiB slices,
# 32-wide heads) trains 0.97-1.00x the time with 0.08-0.30 GiB fewer
# temporaries and infers 0.79-0.80x; IMDB's (batch 4, 2 MiB slices) trained
# 1.05x slower, ImageNet Fourier's (one 261-wide head) 1.02x.
_BLOCKED_ATTENTION_MIN_SLICE_BYTES = 4 * 2**20
_BLOCKED_ATTENTION_MAX_QK_WIDTH = 64
# ... in blocks of one (batch, head) and at most this many bytes of logits.
_ATTENTION_BLOCK_BYTES = 64 * 2**20


@contextlib.contextmanager
def blocked_attention_threshold(min_bytes: int,
                                block_bytes: Optional[int] = None):
  """Traces attention with another `_blocked_attention` threshold.

  For A/B measurements (`benchmarks/paired_options.py`) and tests: values
  are the same either way. `min_bytes=0` blocks every CPU attention call that
  takes the custom gradients, a huge value none; either way the rule for
  narrow heads with large per-head slices is then off (`min_bytes` alone
  decides).
  """
  global _BLOCKED_ATTENTION_MIN_BYTES, _ATTENTION_BLOCK_BYTES
  global _BLOCKED_ATTENTION_MIN_SLICE_BYTES
  previous = (_BLOCKED_ATTENTION_MIN_BYTES, _ATTENTION_BLOCK_BYTES,
              _BLOCKED_ATTENTION_MIN_SLICE_BYTES)
  _BLOCKED_ATTENTION_MIN_BYTES = min_bytes
  _ATTENTION_BLOCK_BYTES = block_bytes or _ATTENTION_BLOCK_BYTES
  _BLOCKED_ATTENTION_MIN_SLICE_BYTES = float('inf')
  try:
    yield
  finally:
    (_BLOCKED_ATTENTION_MIN_BYTES, _ATTENTION_BLOCK_BYTES,
     _BLOCKED_ATTENTION_MIN_SLICE_BYTES) = previous


def _use_blocked_attention(q, k) -> bool:
  """Whether this CPU call runs block by block (the thresholds above)."""
  batch, q_len, heads, qk_width = q.shape
  slice_bytes = 4 * q_len * k.shape[1]
  return (batch * heads * slice_bytes >= _BLOCKED_ATTENTION_MIN_BYTES or
          (slice_bytes >= _BLOCKED_ATTENTION_MIN_SLICE_BYTES and
           qk_width <= _BLOCKED_ATTENTION_MAX_QK_WIDTH))


def _for_each_block(q, kv_len, body, carry):
  """`carry = body(b, h, first_row, rows, carry)` over all attention blocks.

  A block is `rows` consecutive query rows of one batch element and head:
  as many rows as fit `_ATTENTION_BLOCK_BYTES` of fp32 logits, then the
  remainder (a second loop, so any query length works). `rows` is static,
  the rest are loop indices.
  """
  batch, q_len, heads, _ = q.shape
  rows = max(1, min(q_len, _ATTENTION_BLOCK_BYTES // (4 * kv_len)))
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
  return jax.lax.dynamic_slice(x, (b, first, h, 0),
                               (1, rows, 1, x.shape[-1])).reshape(rows, -1)


def _put_block(x, block, b, first, h):
  """x[b, first:first + len(block), h, :] = block."""
  block = block.reshape(1, block.shape[0], 1, -1).astype(x.dtype)
  return jax.lax.dynamic_update_slice(x, block, (b, first, h, 0))


def _block_mask(mask, b, first, rows):
  """mask[b, first:first + rows] of a [B, T, S] mask (None stays None)."""
  if mask is None:
    return None
  return jax.lax.dynamic_slice(mask, (b, first, 0),
                               (1, rows, mask.shape[-1]))[0]


def _block_logits(q_block, k_block, mask_block, scale):
  """Scaled, masked fp32 logits of a block: [rows, D], [S, D] -> [rows, S]."""
  logits = jax.lax.dot_general(
      q_block, k_block, (((1,), (1,)), ((), ())),
      preferred_element_type=jnp.float32) * scale
  if mask_block is not None:
    logits = jnp.where(mask_block, logits, _MASKED_LOGIT)
  return logits


def _blocked_attention_forward(q, k, v, mask):
  """Softmax attention block by block; returns (output, softmax statistics).

  The statistics are each row's max logit and 1 / sum(exp(logit - max)),
  [2, B, H, T], from which the backward recomputes the weights exactly
  (a log-sum-exp alone loses the sum of a fully masked row: -1e30 + log S
  rounds to -1e30).
  """
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  kv_len = k.shape[1]
  out = jnp.zeros(q.shape[:3] + v.shape[-1:], v.dtype)
  stats = jnp.zeros((2,) + q.shape[:1] + q.shape[2:3] + q.shape[1:2],
                    jnp.float32)

  def body(b, h, first, rows, carry):
    out, stats = carry
    logits = _block_logits(_block(q, b, first, h, rows),
                           _block(k, b, 0, h, kv_len),
                           _block_mask(mask, b, first, rows), scale)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    unnormalised = jnp.exp(logits - row_max)
    inv_sum = 1.0 / jnp.sum(unnormalised, axis=-1, keepdims=True)
    weights = (unnormalised * inv_sum).astype(v.dtype)
    out = _put_block(out, _matmul(weights, _block(v, b, 0, h, kv_len)),
                     b, first, h)
    block_stats = jnp.stack([row_max, inv_sum]).reshape(2, 1, 1, rows)
    stats = jax.lax.dynamic_update_slice(stats, block_stats, (0, b, h, first))
    return out, stats

  return _for_each_block(q, kv_len, body, (out, stats))


@jax.custom_vjp
def _blocked_attention(q, k, v, mask):
  """`_cpu_attention` one (batch, head, row block) at a time, for long inputs.

  Why: a long input's cross-attention logits are the largest arrays of a
  step (64k input bytes, 8 heads, 256 latents: 512 MiB), and the full-matrix
  path keeps the weights from the forward and makes logits-sized products
  in the backward. Here no array larger than one block
  (`_ATTENTION_BLOCK_BYTES`) exists: the forward keeps only each row's
  softmax statistics, the backward recomputes a block's weights from them
  (one more q k^T product), and heads are sliced one at a time instead of
  copying K, V and their gradients into head-major order. Paired on the dev
  CPU (BUILD_NOTES.md, tenth session): the 64k-byte language classifier's
  train step 0.94-0.99x the time (two paired runs) with 1.64 vs 2.77 GiB of
  XLA temporaries, its inference 0.59-0.65x with 0.81 vs 1.69 GiB,
  optical-flow inference 0.97x with 1.32 vs 3.44 GiB. Where it does not
  pay (`_use_blocked_attention` keeps those on the full matrix): ImageNet
  Fourier's one wide head (261 channels, 196 MiB of logits at batch 2)
  trained 1.02-1.05x slower blocked, IMDB's cross-attention (64 MiB in 2 MiB
  per-head slices) 1.02-1.05x, for 0.05-0.2 GiB; narrow heads with larger
  slices pay from 4 MiB per head (the thresholds' comment).
  """
  return _blocked_attention_forward(q, k, v, mask)[0]


def _blocked_attention_fwd(q, k, v, mask):
  out, stats = _blocked_attention_forward(q, k, v, mask)
  return out, (q, k, v, mask, out, stats)


def _blocked_attention_bwd(res, d_out):
  q, k, v, mask, out, stats = res
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  kv_len = k.shape[1]

  def body(b, h, first, rows, carry):
    d_q, d_k, d_v = carry
    q_b, k_b, v_b = (_block(q, b, first, h, rows), _block(k, b, 0, h, kv_len),
                     _block(v, b, 0, h, kv_len))
    mask_b = _block_mask(mask, b, first, rows)
    block_stats = jax.lax.dynamic_slice(stats, (0, b, h, first),
                                        (2, 1, 1, rows)).reshape(2, rows, 1)
    weights = (jnp.exp(_block_logits(q_b, k_b, mask_b, scale) -
                       block_stats[0]) * block_stats[1])
    d_o = _block(d_out, b, first, h, rows)
    # dV = P^T dO and dK = dS^T Q from row-major copies (module docstring).
    d_v_b = _matmul(_row_major_t(weights.astype(v.dtype)), d_o)
    d_weights = jax.lax.dot_general(d_o, v_b, (((1,), (1,)), ((), ())),
                                    preferred_element_type=jnp.float32)
    d_logits = _softmax_backward(weights, d_weights, d_o,
                                 _block(out, b, first, h, rows), mask_b,
                                 scale, q.dtype)
    d_q = _put_block(d_q, _matmul(d_logits, k_b), b, first, h)
    # Several row blocks of one head add into the same dK, dV rows.
    d_k = _put_block(d_k, _block(d_k, b, 0, h, kv_len) +
                     _matmul(_row_major_t(d_logits), q_b), b, 0, h)
    d_v = _put_block(d_v, _block(d_v, b, 0, h, kv_len) + d_v_b, b, 0, h)
    return d_q, d_k, d_v

  zeros = tuple(jnp.zeros_like(x) for x in (q, k, v))
  return (*_for_each_block(q, kv_len, body, zeros), None)


_blocked_attention.defvjp(_blocked_attention_fwd, _blocked_attention_bwd)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate q/k and v widths.

  Attributes:
    num_heads: number of heads; must divide qk_channels and v_channels.
    qk_channels: total query/key width.
    v_channels: total value width.
    output_channels: width of the output projection.
    dropout_rate: dropout on the attention weights.
    attention_impl: 'auto' (on the CPU backend the hand-written CPU
      gradients of the module docstring, with `_cpu_attention` where no
      attention dropout is active, `_blocked_attention` instead where its
      logits are large (`_use_blocked_attention`); elsewhere the fused
      `jax.nn.dot_product_attention`, XLA's kernel, where the head widths
      agree and no attention dropout is active, else einsum), 'einsum',
      'fused' (error if not possible), 'cudnn' (cuDNN's flash attention where
      `cudnn_attention_supported` says it applies, i.e. on an Ampere or
      later GPU in bf16/fp16 with head widths <= 128, or <= 256 on Hopper,
      and even query and key lengths; unequal q/k and v widths
      are zero-padded and masks passed as a bias, `_fused_attention`;
      elsewhere as 'auto') or 'cpu' (the same as 'auto'; until the ninth
      session it was the opt-in for the row-major Dense gradients, now part
      of 'auto' on CPU).
  """
  num_heads: int
  qk_channels: int
  v_channels: int
  output_channels: int
  dropout_rate: float = 0.0
  attention_impl: str = 'auto'
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, deterministic=True):
    for name, width in (('qk_channels', self.qk_channels),
                        ('v_channels', self.v_channels)):
      if width % self.num_heads:
        raise ValueError(f'{name}={width} must be divisible by '
                         f'num_heads={self.num_heads}.')
    custom_cpu = _custom_cpu_gradients(self.attention_impl)
    proj = lambda feats, name: dense(feats, name, self.dtype, self.param_dtype,
                                     row_major_grads=custom_cpu)
    q = proj(self.qk_channels, 'query')(inputs_q)
    k = proj(self.qk_channels, 'key')(inputs_kv)
    v = proj(self.v_channels, 'value')(inputs_kv)
    batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
    h = self.num_heads
    q = q.reshape(batch, q_len, h, self.qk_channels // h)
    k = k.reshape(batch, kv_len, h, self.qk_channels // h)
    v = v.reshape(batch, kv_len, h, self.v_channels // h)

    use_dropout = self.dropout_rate > 0.0 and not deterministic
    can_fuse = (self.qk_channels == self.v_channels) and not use_dropout
    if self.attention_impl == 'fused' and not can_fuse:
      raise ValueError('attention_impl="fused" needs qk_channels == v_channels '
                       'and no active attention dropout; use "auto".')
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f'attention_impl must be auto, fused, einsum, cudnn or '
                       f'cpu, got {self.attention_impl!r}.')
    if (self.attention_impl == 'cudnn' and not use_dropout and
        cudnn_attention_supported(q, mask, v_head_width=v.shape[-1],
                                  kv_length=k.shape[1])):
      out = _fused_attention(q, k, v, mask)
    elif custom_cpu and not use_dropout:
      attend = (_blocked_attention if _use_blocked_attention(q, k)
                else _cpu_attention)
      out = attend(q, k, v, mask)
    elif can_fuse and self.attention_impl != 'einsum':
      out = _xla_attention(q, k, v, mask)
    else:
      rng = self.make_rng('dropout') if use_dropout else None
      out = _einsum_attention(q, k, v, mask, self.dropout_rate, deterministic,
                              rng, q.dtype)
    out = out.reshape(batch, q_len, self.v_channels)
    if mask is not None:
      # Official quirk: a fully masked query row gives zeros, not the mean of v.
      wipe = jnp.all(jnp.logical_not(mask), axis=-1, keepdims=True)
      out = jnp.where(wipe, jnp.zeros_like(out), out)
    return proj(self.output_channels, 'output')(out)


class MLP(nn.Module):
  """Linear(C -> wC), GELU, Linear(wC -> C), dropout on the output."""
  widening_factor: int = 4
  dropout_rate: float = 0.0
  gelu_approximate: bool = True  # official: tanh GELU; HuggingFace: exact erf.
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  row_major_grads: bool = False  # CPU weight-gradient form (module docstring).

  @nn.compact
  def __call__(self, x, deterministic=True):
    channels = x.shape[-1]
    x = dense(self.widening_factor * channels, 'dense1', self.dtype,
              self.param_dtype, self.row_major_grads)(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = dense(channels, 'dense2', self.dtype, self.param_dtype,
              self.row_major_grads)(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


def _layer_norm(name, dtype, param_dtype):
  """A LayerNorm over the last axis, applied to the input seen as 2-D.

  Why 2-D: the scale and bias gradients sum over every leading axis, and
  XLA:CPU (jaxlib 0.10, YNN) simplifies that sum over a [1, N, C] input
  (batch 1) to a reduction over the middle axis that ran 60x slower than
  the same sum over [N, C] (65,536 x 768: 636 vs 10 ms; batch 2 and more
  were fast). It was the largest op of the 64k-byte train step (650 ms of
  3.7 s, BUILD_NOTES.md, tenth session). Same values and parameters.
  """
  norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype,
                      param_dtype=param_dtype, name=name)
  return lambda x: norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _call_block(module, *args, deterministic):
  """`module._layers(*args, deterministic)`, on CPU with blockwise gradients.

  Why: XLA's low-memory CPU scheduler puts every weight gradient (dW =
  x^T dy, the bias and LayerNorm sums) after the whole backward pass, next
  to the optimizer update that reads it, so each layer's activations and
  output gradients stay alive until then. Here the block's input gradients
  carry a dependency on its parameter gradients (plus exactly zero: 0 * the
  sum of one element of each), so the previous block's backward waits for
  them and each layer's buffers are freed as the backward goes. The
  gradients pass an `optimization_barrier` first so that what the anchor
  reads is the materialised gradient the optimizer reads too: with an
  anchor summing whole gradients and no barrier, XLA fused the bias and
  LayerNorm sums a second time into the late optimizer update, which kept
  dy alive (IMDB 2.22 GiB of temporaries); the one-element anchor measured
  the same with or without it (1.53 GiB) and the barrier costs nothing
  measurable. XLA:CPU drops barriers before scheduling, so one cannot order
  anything alone. (Summing whole gradients cost ImageNet conv's step 4 %:
  48 layer calls x 24 MiB read again.)

  Same values, except that a non-finite element read by the anchor (the
  first of a parameter gradient) makes the input gradients NaN too
  (0 * inf), where the step is lost anyway. CPU only, for the paths with
  custom CPU gradients (`_custom_cpu_gradients`); not while initialising
  (no parameters yet).
  """
  if (not _BLOCKWISE_CPU_GRADIENTS or module.is_initializing() or
      not _custom_cpu_gradients(module.attention_impl)):
    return module._layers(*args, deterministic)  # pylint: disable=protected-access

  def body(mdl, *a):
    return mdl._layers(*a, deterministic)  # pylint: disable=protected-access

  def forward(mdl, *a):
    return nn.vjp(body, mdl, *a)

  def backward(vjp_fn, d_out):
    d_params, *d_inputs = vjp_fn(d_out)
    d_params, d_inputs = jax.lax.optimization_barrier((d_params, d_inputs))
    zero = 0.0 * sum(g.reshape(-1)[0].astype(jnp.float32)
                     for g in jax.tree_util.tree_leaves(d_params))
    d_inputs = [d + zero.astype(d.dtype)
                if d is not None and jnp.issubdtype(d.dtype, jnp.floating)
                else d for d in d_inputs]
    return (d_params, *d_inputs)

  return nn.custom_vjp(body, forward_fn=forward, backward_fn=backward)(
      module, *args)


class CrossAttentionBlock(nn.Module):
  """Pre-LN cross-attention: out = [q +] Attn(LN(q), LN(kv)); out += MLP(LN(out)).

  The q/k width defaults to the kv width ('kv', the official default) or the
  query width ('q'); v width defaults to the q/k width; the output is always in
  the query width.
  """
  num_heads: int = 1
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  widening_factor: int = 1
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  shape_for_attn: str = 'kv'
  use_query_residual: bool = True
  gelu_approximate: bool = True
  attention_impl: str = 'auto'
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  def __call__(self, inputs_q, inputs_kv, mask=None, deterministic=True):
    return _call_block(self, inputs_q, inputs_kv, mask,
                       deterministic=deterministic)

  @nn.compact
  def _layers(self, inputs_q, inputs_kv, mask, deterministic):
    if self.shape_for_attn not in ('kv', 'q'):
      raise ValueError(f"shape_for_attn must be 'kv' or 'q', got "
                       f'{self.shape_for_attn!r}.')
    q_width = inputs_q.shape[-1]
    qk = self.qk_channels or (inputs_kv.shape[-1] if self.shape_for_attn == 'kv'
                              else q_width)
    v = self.v_channels or qk
    x_q = _layer_norm('query_norm', self.dtype, self.param_dtype)(inputs_q)
    x_kv = _layer_norm('kv_norm', self.dtype, self.param_dtype)(inputs_kv)
    attn = MultiHeadAttention(
        num_heads=self.num_heads, qk_channels=qk, v_channels=v,
        output_channels=q_width, dropout_rate=self.attention_dropout_rate,
        attention_impl=self.attention_impl, dtype=self.dtype,
        param_dtype=self.param_dtype, name='attention')(
            x_q, x_kv, mask=mask, deterministic=deterministic)
    attn = nn.Dropout(self.dropout_rate)(attn, deterministic=deterministic)
    x = inputs_q + attn if self.use_query_residual else attn
    y = _layer_norm('mlp_norm', self.dtype, self.param_dtype)(x)
    y = MLP(self.widening_factor, self.dropout_rate, self.gelu_approximate,
            dtype=self.dtype, param_dtype=self.param_dtype,
            row_major_grads=_custom_cpu_gradients(self.attention_impl),
            name='mlp')(
                y, deterministic=deterministic)
    return x + y


class SelfAttentionBlock(nn.Module):
  """Pre-LN self-attention: x += Attn(LN(x)); x += MLP(LN(x))."""
  num_heads: int = 8
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  widening_factor: int = 4
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  gelu_approximate: bool = True
  attention_impl: str = 'auto'
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  def __call__(self, x, mask=None, deterministic=True):
    return _call_block(self, x, mask, deterministic=deterministic)

  @nn.compact
  def _layers(self, x, mask, deterministic):
    width = x.shape[-1]
    qk = self.qk_channels or width
    v = self.v_channels or qk
    y = _layer_norm('attention_norm', self.dtype, self.param_dtype)(x)
    y = MultiHeadAttention(
        num_heads=self.num_heads, qk_channels=qk, v_channels=v,
        output_channels=v, dropout_rate=self.attention_dropout_rate,
        attention_impl=self.attention_impl, dtype=self.dtype,
        param_dtype=self.param_dtype, name='attention')(
            y, y, mask=mask, deterministic=deterministic)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + y
    y = _layer_norm('mlp_norm', self.dtype, self.param_dtype)(x)
    y = MLP(self.widening_factor, self.dropout_rate, self.gelu_approximate,
            dtype=self.dtype, param_dtype=self.param_dtype,
            row_major_grads=_custom_cpu_gradients(self.attention_impl),
            name='mlp')(
                y, deterministic=deterministic)
    return x + y
