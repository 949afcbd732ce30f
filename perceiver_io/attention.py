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

Two numerically equivalent attention paths exist: `jax.nn.dot_product_attention`
(which selects cuDNN flash attention on GPU) when the q/k and v head widths
match and no attention dropout is active, and an einsum path otherwise.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
LAYER_NORM_EPS = 1e-5
_MASKED_LOGIT = -1e30

# Haiku's VarianceScaling(1.0) == truncated-normal fan_in, which is LeCun normal.
default_kernel_init = nn.initializers.lecun_normal()


def make_cross_attention_mask(query_mask, kv_mask):
  """Outer product of a [B, Tq] and a [B, Tkv] mask -> boolean [B, Tq, Tkv]."""
  return jnp.logical_and(query_mask[:, :, None].astype(bool),
                         kv_mask[:, None, :].astype(bool))


def cudnn_attention_supported(q, mask=None, backend=None):
  """Whether cuDNN flash attention takes these queries ([B, T, H, D]).

  Why a predicate rather than try/except: JAX refuses unsupported shapes only
  partly at trace time, so the conservative set is chosen up front: a GPU
  backend, bf16/fp16 activations, a head width that is a multiple of 8 and at
  most 128, and no mask (the masked perceiver paths are the language ones,
  whose q/k and v widths differ and never fuse anyway).
  """
  backend = backend or jax.default_backend()
  head_width = q.shape[-1]
  return (backend == 'gpu' and mask is None and
          q.dtype in (jnp.bfloat16, jnp.float16) and
          head_width % 8 == 0 and head_width <= 128)


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


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate q/k and v widths.

  Attributes:
    num_heads: number of heads; must divide qk_channels and v_channels.
    qk_channels: total query/key width.
    v_channels: total value width.
    output_channels: width of the output projection.
    dropout_rate: dropout on the attention weights.
    attention_impl: 'auto' (fused `jax.nn.dot_product_attention` where the
      head widths agree and no attention dropout is active; XLA's kernel),
      'einsum', 'fused' (error if not possible) or 'cudnn' (cuDNN's flash
      attention where `cudnn_attention_supported` says it applies, i.e. on a
      GPU in bf16/fp16 with head width <= 128; elsewhere as 'auto').
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
    dense = lambda feats, name: nn.Dense(
        feats, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=default_kernel_init, name=name)
    q = dense(self.qk_channels, 'query')(inputs_q)
    k = dense(self.qk_channels, 'key')(inputs_kv)
    v = dense(self.v_channels, 'value')(inputs_kv)
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
    if self.attention_impl not in ('auto', 'fused', 'einsum', 'cudnn'):
      raise ValueError(f'attention_impl must be auto, fused, einsum or cudnn, '
                       f'got {self.attention_impl!r}.')
    if (can_fuse and self.attention_impl == 'cudnn' and
        cudnn_attention_supported(q, mask)):
      out = jax.nn.dot_product_attention(q, k, v, implementation='cudnn')
    elif can_fuse and self.attention_impl != 'einsum':
      fused_mask = None if mask is None else mask[:, None, :, :]
      out = jax.nn.dot_product_attention(q, k, v, mask=fused_mask)
    else:
      rng = self.make_rng('dropout') if use_dropout else None
      out = _einsum_attention(q, k, v, mask, self.dropout_rate, deterministic,
                              rng, q.dtype)
    out = out.reshape(batch, q_len, self.v_channels)
    if mask is not None:
      # Official quirk: a fully masked query row gives zeros, not the mean of v.
      wipe = jnp.all(jnp.logical_not(mask), axis=-1, keepdims=True)
      out = jnp.where(wipe, jnp.zeros_like(out), out)
    return dense(self.output_channels, 'output')(out)


class MLP(nn.Module):
  """Linear(C -> wC), GELU, Linear(wC -> C), dropout on the output."""
  widening_factor: int = 4
  dropout_rate: float = 0.0
  gelu_approximate: bool = True  # official: tanh GELU; HuggingFace: exact erf.
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    channels = x.shape[-1]
    x = nn.Dense(self.widening_factor * channels, dtype=self.dtype,
                 param_dtype=self.param_dtype, kernel_init=default_kernel_init,
                 name='dense1')(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = nn.Dense(channels, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=default_kernel_init, name='dense2')(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


def _layer_norm(name, dtype, param_dtype):
  return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype,
                      param_dtype=param_dtype, name=name)


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

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, deterministic=True):
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
            dtype=self.dtype, param_dtype=self.param_dtype, name='mlp')(
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

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True):
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
            dtype=self.dtype, param_dtype=self.param_dtype, name='mlp')(
                y, deterministic=deterministic)
    return x + y
