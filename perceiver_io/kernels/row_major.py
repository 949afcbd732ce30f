"""Row-major GEMM helpers shared by the CPU kernels (kernels/cpu.py, 1.).

XLA:CPU's matmul is slow on a transposed left operand; these build the
products from explicitly transposed, materialised copies instead.
"""

import jax
import jax.numpy as jnp


def matmul(a, b):
  """[..., K] x [K, N] -> [..., N]."""
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())))


def row_major_t(x):
  """x^T as a materialised row-major array (not a layout bitcast).

  The barrier stops XLA from folding the transpose back into the consuming
  dot, which would turn it into the slow transposed-operand GEMM again.
  """
  return jax.lax.optimization_barrier(jnp.transpose(x))


def row_major_t_last2(x):
  """`row_major_t` of the last two axes ([..., M, N] -> [..., N, M])."""
  return jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


def softmax_backward(weights, d_weights, d_out, out, mask, scale, dtype):
  """Logit gradients dS = P * (dP - rowsum(dO * O)) * scale, masked; in dtype.

  `mask` (or None) broadcasts against the weights; rowsum(dO * O) equals
  rowsum(dP * P) without another logits-sized product.
  """
  row = jnp.sum(
    d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True
  )
  d_logits = weights * (d_weights - row) * scale
  if mask is not None:
    d_logits = jnp.where(mask, d_logits, 0.0)
  return d_logits.astype(dtype)
