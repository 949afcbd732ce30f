"""XLA:CPU kernels: row-major weight gradients, a hand-written attention
backward, block-by-block layer gradients and a 2-D LayerNorm.

Used with `attention_impl='cpu'` or `'auto'` on the CPU backend (what the
experiment runner uses there). Every kernel gives the values and gradients
of plain autodiff through kernels/reference.py to float round-off
(tests/test_kernels_cpu.py). Custom VJPs have no forward-mode rule, so
`jax.jvp` / `jax.jacfwd` need the default 'xla' kernels. Measured on a
2-core AMD EPYC with jaxlib 0.10.2 unless said otherwise; the train-step
ratios are against the same model under autodiff.

1. Row-major weight gradients (`dense_dot_general`, `full_attention`'s
   backward). XLA:CPU's matmul is slow when its left operand is transposed
   (a 1024^3 fp32 GEMM on one thread: 41 vs 75 GFLOP/s; 343 vs 469 on two
   threads of an AVX-512 machine; `benchmarks/gemm.py`), and autodiff gives
   exactly that form for every weight gradient (dW = x^T dy) and for the
   attention gradients dV = P^T dO, dK = dS^T Q. Here one operand is copied
   into transposed row-major form first (a memory pass, 1-2 % of the GEMM).
   The attention backward alone made train steps 0.90x (IMDB), 0.92x
   (ImageNet Fourier), 0.95x (ImageNet conv). Remove when XLA:CPU runs
   transposed-operand GEMMs at full speed (`benchmarks/gemm.py` says).
2. Blockwise layer gradients (`ordered_gradients`). XLA's low-memory CPU
   scheduler (the one the launchers select) places every weight gradient
   after the whole backward pass, next to the optimizer update, so every
   layer's activations stay alive to the end. Tying each block's input
   gradient to its parameter gradients frees them layer by layer: with the
   row-major gradients, train steps 0.90-0.92x the time and XLA temporaries
   1.53 vs 1.99 GiB (IMDB), 2.61 vs 3.38 (conv), 3.15 vs 4.01 (Fourier).
   Remove when XLA:CPU schedules weight gradients as they become ready.
3. A 2-D LayerNorm (`LayerNorm`). XLA:CPU turned the scale/bias gradient
   sum over a batch-1 [1, N, C] input into a middle-axis reduction 60x
   slower than the same sum over [N, C] (65,536 x 768: 636 vs 10 ms; 650 ms
   of the 3.7 s 64k-byte train step). Remove when that reduction is fast.
4. Long inputs' attention one block at a time: kernels/blocked.py.
"""

import functools
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp

from perceiver_io.kernels import blocked
from perceiver_io.kernels import reference
from perceiver_io.kernels.row_major import matmul
from perceiver_io.kernels.row_major import row_major_t
from perceiver_io.kernels.row_major import row_major_t_last2
from perceiver_io.kernels.row_major import softmax_backward


# ------------------------------------------------------------------ Dense --


@jax.custom_vjp
def _dense_matmul(x, kernel):
  return matmul(x, kernel)


def _dense_matmul_fwd(x, kernel):
  return matmul(x, kernel), (x, kernel)


def _dense_matmul_bwd(res, dy):
  x, kernel = res
  dx = jax.lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
  x2 = x.reshape(-1, x.shape[-1])
  dy2 = dy.reshape(-1, dy.shape[-1])
  # dW = x^T dy from a materialised x^T, even where dy is the smaller
  # operand: from a copied dy^T, XLA folds the final transpose of
  # dW^T = dy^T x back into the product (the slow form again).
  dw = matmul(row_major_t(x2), dy2)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


_dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def dense_dot_general(
  lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None
):
  """`nn.Dense`'s contraction with a row-major weight gradient.

  Same forward and values as `lax.dot_general`. Anything but Dense's plain
  `[..., K] x [K, N]` contraction, or a set precision, goes to
  `lax.dot_general` unchanged.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  plain = (
    tuple(lhs_contract) == (lhs.ndim - 1,)
    and tuple(rhs_contract) == (0,)
    and rhs.ndim == 2
    and not lhs_batch
    and not rhs_batch
  )
  if plain and precision is None and preferred_element_type is None:
    return _dense_matmul(lhs, rhs)
  return jax.lax.dot_general(
    lhs,
    rhs,
    dimension_numbers,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


# -------------------------------------------------------------- attention --


def _heads_first(x):
  return jnp.transpose(x, (0, 2, 1, 3))  # [B, T, H, D] <-> [B, H, T, D]


def _full_attention_fwd(q, k, v, mask):
  """Head-major softmax attention; returns (output, residuals)."""
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
  logits = (
    jnp.einsum('bhtd,bhsd->bhts', qh, kh, preferred_element_type=jnp.float32)
    * scale
  )
  if mask is not None:
    logits = jnp.where(mask[:, None, :, :], logits, reference.MASKED_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('bhts,bhsd->bhtd', weights.astype(vh.dtype), vh)
  return _heads_first(out), (qh, kh, vh, weights, out, mask)


@jax.custom_vjp
def full_attention(q, k, v, mask):
  """softmax(q k^T / sqrt(d)) v on [B,T,H,D] arrays, row-major gradients.

  Without a gradient (inference) this is `reference.xla_attention`: the
  head-major forward runs only where its residuals serve the backward (it
  was 6 % slower for ImageNet Fourier inference).
  """
  return reference.xla_attention(q, k, v, mask)


def _full_attention_bwd(res, d_out):
  qh, kh, vh, weights, out, mask = res
  scale = 1.0 / jnp.sqrt(qh.shape[-1]).astype(jnp.float32)
  d_oh = _heads_first(d_out)
  # dV = P^T dO and dK = dS^T Q with P^T, dS^T copied row-major.
  weights_t = row_major_t_last2(weights.astype(vh.dtype))
  d_v = jnp.einsum('bhst,bhtd->bhsd', weights_t, d_oh)
  d_weights = jnp.einsum(
    'bhtd,bhsd->bhts', d_oh, vh, preferred_element_type=jnp.float32
  )
  d_logits = softmax_backward(
    weights,
    d_weights,
    d_oh,
    out,
    None if mask is None else mask[:, None, :, :],
    scale,
    qh.dtype,
  )
  d_q = jnp.einsum('bhts,bhsd->bhtd', d_logits, kh)
  d_k = jnp.einsum('bhst,bhtd->bhsd', row_major_t_last2(d_logits), qh)
  return (_heads_first(d_q), _heads_first(d_k), _heads_first(d_v), None)


full_attention.defvjp(_full_attention_fwd, _full_attention_bwd)


def attention(q, k, v, mask, options):
  """The CPU attention for one call: blocked for large logits, else full."""
  if blocked.use_blocked(q, k, options):
    return blocked.blocked_attention(
      q, k, v, mask, options.attention_block_bytes
    )
  return full_attention(q, k, v, mask)


# -------------------------------------------------------------- LayerNorm --


class LayerNorm(nn.LayerNorm):
  """`nn.LayerNorm` over the last axis of its input seen as 2-D.

  Same values and parameters; the scale and bias gradients become sums over
  the rows of a 2-D array (module docstring, 3.).
  """

  def __call__(self, x, *args, **kwargs):
    y = super().__call__(x.reshape(-1, x.shape[-1]), *args, **kwargs)
    return y.reshape(x.shape)


# ------------------------------------------------- blockwise layer gradients --


@functools.lru_cache(maxsize=None)
def ordered_gradients(block_cls):
  """A subclass of `block_cls` whose backward finishes its parameter
  gradients before it passes the input gradients on (module docstring, 2.).

  The block's input gradients carry a dependency on its parameter gradients
  (plus exactly zero: 0 * the sum of one element of each), so the previous
  block's backward waits for them. The gradients pass an
  `optimization_barrier` first, so that what the anchor reads is the
  materialised gradient the optimizer reads too (without it XLA fused the
  bias and LayerNorm sums a second time into the late optimizer update and
  kept dy alive). Same values, except that a non-finite element read by the
  anchor makes the input gradients NaN too (0 * inf), where the step is lost
  anyway. Plain while initialising (no parameters yet) and where the
  options turn it off (A/B measurements). `block_cls.__call__` takes arrays
  (or None) and a static `deterministic` flag.
  """
  signature = inspect.signature(block_cls.__call__)

  def backward(vjp_fn, d_out):
    d_params, *d_inputs = vjp_fn(d_out)
    d_params, d_inputs = jax.lax.optimization_barrier((d_params, d_inputs))
    zero = 0.0 * sum(
      g.reshape(-1)[0].astype(jnp.float32)
      for g in jax.tree_util.tree_leaves(d_params)
    )
    d_inputs = [
      d + zero.astype(d.dtype)
      if d is not None and jnp.issubdtype(d.dtype, jnp.floating)
      else d
      for d in d_inputs
    ]
    return (d_params, *d_inputs)

  class Ordered(block_cls):  # pylint: disable=missing-class-docstring
    def __call__(self, *args, **kwargs):
      if self.is_initializing() or not self.kernel_options.blockwise_gradients:
        return super().__call__(*args, **kwargs)
      bound = signature.bind(self, *args, **kwargs)
      bound.apply_defaults()
      arrays = dict(bound.arguments)
      del arrays['self']
      deterministic = arrays.pop('deterministic')

      def body(module, *a):
        return block_cls.__call__(module, *a, deterministic=deterministic)

      def forward(module, *a):
        return nn.vjp(body, module, *a)

      return nn.custom_vjp(body, forward_fn=forward, backward_fn=backward)(
        self, *arrays.values()
      )

  Ordered.__name__ = Ordered.__qualname__ = block_cls.__name__
  return Ordered
