"""The official attention computation, and XLA's fused kernel for it.

Official numerics (shared/reference/perceiver-official.md, 1.1-1.2): logits
are scaled by 1/sqrt(q/k head width), which may differ from the value head
width; masked logits become -1e30 (not -inf); attention dropout (inverted)
acts on the softmax weights. The caller zeroes a fully masked query row.
"""

import jax
import jax.numpy as jnp

MASKED_LOGIT = -1e30


def einsum_attention(q, k, v, mask=None, dropout_rate=0.0, dropout_rng=None):
  """softmax(q k^T / sqrt(d)) v: [B,T,H,D] x [B,S,H,D] x [B,S,H,Dv].

  `mask` is [B, T, S] (True: attend) or None; with `dropout_rate` > 0 the
  weights are dropped with `dropout_rng`. Weights are applied in q's dtype.
  """
  scale = 1.0 / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  logits = (
    jnp.einsum('bthd,bshd->bhts', q, k, preferred_element_type=jnp.float32)
    * scale
  )
  if mask is not None:
    logits = jnp.where(mask[:, None, :, :], logits, MASKED_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum('bhts,bshd->bthd', weights.astype(q.dtype), v)


def xla_attention(q, k, v, mask=None):
  """`jax.nn.dot_product_attention` (XLA's kernel) where the q/k and v head
  widths agree, else `einsum_attention`; the same values either way."""
  if q.shape[-1] != v.shape[-1]:
    return einsum_attention(q, k, v, mask)
  return jax.nn.dot_product_attention(
    q,
    k,
    v,
    scale=1.0 / float(q.shape[-1]) ** 0.5,
    mask=None if mask is None else mask[:, None, :, :],
    implementation=None,
  )
