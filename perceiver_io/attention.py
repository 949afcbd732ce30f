"""Multi-head attention, the MLP, and the Perceiver's two blocks.

The official computation (shared/reference/perceiver-official.md, 1.1-1.4):

* queries, keys and values are linear projections; the query/key width and
  the value width are separate (`qk_channels`, `v_channels`), split evenly
  over the heads;
* attention is softmax(q k^T / sqrt(q/k head width)) v per head; masked
  logits become -1e30, and a query row whose mask is all zero outputs
  exactly zero before the output projection (kernels/reference.py holds
  the einsum form of this computation);
* blocks are pre-LayerNorm (eps 1e-5): a cross-attention block writes its
  output in the *query* width and adds the query residual only when
  `use_query_residual` is set; both blocks end with a residual MLP
  (Linear, GELU, Linear; tanh GELU officially, erf GELU in HuggingFace).

How the products run (XLA's fused attention, cuDNN, the CPU kernels) is the
`perceiver_io.kernels` package's business: every module here takes one
`kernel_options` and hands it on, and the values are the same whichever is
chosen.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from perceiver_io import kernels

Dtype = Any
LAYER_NORM_EPS = 1e-5

# Haiku's VarianceScaling(1.0) == truncated-normal fan_in, which is LeCun normal.
default_kernel_init = nn.initializers.lecun_normal()


def make_cross_attention_mask(query_mask, kv_mask):
  """Outer product of a [B, Tq] and a [B, Tkv] mask -> boolean [B, Tq, Tkv]."""
  return jnp.logical_and(
    query_mask[:, :, None].astype(bool), kv_mask[:, None, :].astype(bool)
  )


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate q/k and v widths.

  Attributes:
    num_heads: number of heads; must divide qk_channels and v_channels.
    qk_channels: total query/key width.
    v_channels: total value width.
    output_channels: width of the output projection.
    dropout_rate: dropout on the attention weights.
    kernel_options: how the products run (perceiver_io.kernels).
  """

  num_heads: int
  qk_channels: int
  v_channels: int
  output_channels: int
  dropout_rate: float = 0.0
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  def _dense(self, features, name):
    return kernels.dense(
      features,
      self.kernel_options,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=default_kernel_init,
      name=name,
    )

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, deterministic=True):
    for name, width in (
      ('qk_channels', self.qk_channels),
      ('v_channels', self.v_channels),
    ):
      if width % self.num_heads:
        raise ValueError(
          f'{name}={width} must be divisible by num_heads={self.num_heads}.'
        )
    h = self.num_heads
    batch, q_len, kv_len = (
      inputs_q.shape[0],
      inputs_q.shape[1],
      inputs_kv.shape[1],
    )
    q = self._dense(self.qk_channels, 'query')(inputs_q).reshape(
      batch, q_len, h, self.qk_channels // h
    )
    k = self._dense(self.qk_channels, 'key')(inputs_kv).reshape(
      batch, kv_len, h, self.qk_channels // h
    )
    v = self._dense(self.v_channels, 'value')(inputs_kv).reshape(
      batch, kv_len, h, self.v_channels // h
    )
    use_dropout = self.dropout_rate > 0.0 and not deterministic
    out = kernels.attend(
      q,
      k,
      v,
      mask,
      self.kernel_options,
      dropout_rate=self.dropout_rate,
      deterministic=deterministic,
      dropout_rng=self.make_rng('dropout') if use_dropout else None,
    )
    out = out.reshape(batch, q_len, self.v_channels)
    if mask is not None:
      # Official quirk: a fully masked query row gives zeros, not the mean of v.
      wipe = jnp.all(jnp.logical_not(mask), axis=-1, keepdims=True)
      out = jnp.where(wipe, jnp.zeros_like(out), out)
    return self._dense(self.output_channels, 'output')(out)


class MLP(nn.Module):
  """Linear(C -> wC), GELU, Linear(wC -> C), dropout on the output."""

  widening_factor: int = 4
  dropout_rate: float = 0.0
  gelu_approximate: bool = True  # official: tanh GELU; HuggingFace: exact erf.
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    dense = lambda features, name: kernels.dense(
      features,
      self.kernel_options,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=default_kernel_init,
      name=name,
    )
    channels = x.shape[-1]
    x = dense(self.widening_factor * channels, 'dense1')(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = dense(channels, 'dense2')(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class _Block(nn.Module):
  """Fields and layers shared by the two Perceiver blocks."""

  num_heads: int = 1
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  widening_factor: int = 1
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  gelu_approximate: bool = True
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  def _norm(self, name):
    return kernels.layer_norm(
      self.kernel_options,
      epsilon=LAYER_NORM_EPS,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )

  def _attention(self, qk, v, output_channels):
    return MultiHeadAttention(
      num_heads=self.num_heads,
      qk_channels=qk,
      v_channels=v,
      output_channels=output_channels,
      dropout_rate=self.attention_dropout_rate,
      kernel_options=self.kernel_options,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='attention',
    )

  def _mlp(self):
    return MLP(
      self.widening_factor,
      self.dropout_rate,
      self.gelu_approximate,
      kernel_options=self.kernel_options,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='mlp',
    )


class CrossAttentionBlock(_Block):
  """Pre-LN cross-attention: out = [q +] Attn(LN(q), LN(kv)); out += MLP(LN(out)).

  The q/k width defaults to the kv width ('kv', the official default) or the
  query width ('q'); the v width defaults to the q/k width; the output is
  always in the query width.
  """

  shape_for_attn: str = 'kv'
  use_query_residual: bool = True

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, deterministic=True):
    if self.shape_for_attn not in ('kv', 'q'):
      raise ValueError(
        f"shape_for_attn must be 'kv' or 'q', got {self.shape_for_attn!r}."
      )
    q_width = inputs_q.shape[-1]
    qk = self.qk_channels or (
      inputs_kv.shape[-1] if self.shape_for_attn == 'kv' else q_width
    )
    v = self.v_channels or qk
    x_q = self._norm('query_norm')(inputs_q)
    x_kv = self._norm('kv_norm')(inputs_kv)
    attn = self._attention(qk, v, output_channels=q_width)(
      x_q, x_kv, mask=mask, deterministic=deterministic
    )
    attn = nn.Dropout(self.dropout_rate)(attn, deterministic=deterministic)
    x = inputs_q + attn if self.use_query_residual else attn
    return x + self._mlp()(
      self._norm('mlp_norm')(x), deterministic=deterministic
    )


class SelfAttentionBlock(_Block):
  """Pre-LN self-attention: x += Attn(LN(x)); x += MLP(LN(x))."""

  num_heads: int = 8
  widening_factor: int = 4

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True):
    qk = self.qk_channels or x.shape[-1]
    v = self.v_channels or qk
    y = self._norm('attention_norm')(x)
    y = self._attention(qk, v, output_channels=v)(
      y, y, mask=mask, deterministic=deterministic
    )
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return x + self._mlp()(
      self._norm('mlp_norm')(x), deterministic=deterministic
    )
