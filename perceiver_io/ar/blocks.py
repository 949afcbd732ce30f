"""The Perceiver AR layers: rotary attention, the squared-ReLU MLP and the
two pre-LN blocks (reference sections 1.3 and 1.4).

Why not perceiver_io/attention.py's blocks: Perceiver AR rotates q and k
between the projections and the product, uses a squared-ReLU MLP, and its
decoder caches keys and values, so its blocks take precomputed keys. The
products still run through `perceiver_io.kernels` (dense, layer_norm,
attend) with the same `KernelOptions`.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from perceiver_io import kernels
from perceiver_io.ar import positions as pos_lib

LAYER_NORM_EPS = 1e-5
# Haiku's VarianceScaling(1.0) is truncated-normal fan_in: LeCun normal.
KERNEL_INIT = nn.initializers.lecun_normal()


class Attention(nn.Module):
  """Multi-head attention over given keys/values, rotary when
  `rotary_fraction` is set: q, k, v and output projections (with bias)."""

  num_heads: int
  width: int
  output_width: int
  rotary_fraction: Optional[float] = None
  max_wavelength: float = 10000.0
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Any = None

  def setup(self):
    def dense(features):
      return kernels.dense(
        features,
        self.kernel_options,
        dtype=self.dtype,
        kernel_init=KERNEL_INIT,
      )

    self.query = dense(self.width)
    self.key = dense(self.width)
    self.value = dense(self.width)
    self.out = dense(self.output_width)

  def _heads(self, x):
    return x.reshape(x.shape[:2] + (self.num_heads, -1))

  def keys_values(self, x):
    """Unrotated keys and values [B, S, H, d] (what a cache stores)."""
    return self._heads(self.key(x)), self._heads(self.value(x))

  def _rotate(self, x, positions):
    if self.rotary_fraction is None:
      return x
    return pos_lib.apply_rotary(
      x, positions, self.rotary_fraction, self.max_wavelength
    )

  def __call__(
    self, x_q, q_pos, k, v, k_pos, mask, zero_empty_rows=True, options=None
  ):
    q = self._rotate(self._heads(self.query(x_q)), q_pos)
    k = self._rotate(k, k_pos)
    out = kernels.attend(q, k, v, mask, options or self.kernel_options)
    if zero_empty_rows:
      # A query that may see no key outputs zeros, not the mean of all
      # values (which would include the future: reference 6.1.3).
      empty = jnp.logical_not(jnp.any(mask, axis=-1))[..., None, None]
      out = jnp.where(empty, jnp.zeros_like(out), out)
    return self.out(out.reshape(out.shape[:2] + (-1,)))


class MLP(nn.Module):
  """Dense(w * D), squared ReLU, Dense(D), dropout (official `sq_relu`)."""

  widening_factor: int
  dropout_rate: float = 0.0
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Any = None

  @nn.compact
  def __call__(self, x, deterministic=True):
    def dense(features, name):
      return kernels.dense(
        features,
        self.kernel_options,
        dtype=self.dtype,
        kernel_init=KERNEL_INIT,
        name=name,
      )

    h = dense(self.widening_factor * x.shape[-1], 'fc1')(x)
    h = jnp.square(jax.nn.relu(h))
    h = dense(x.shape[-1], 'fc2')(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class _Block(nn.Module):
  num_heads: int
  widening_factor: int
  dropout_rate: float = 0.0
  rotary_fraction: Optional[float] = None
  max_wavelength: float = 10000.0
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Any = None

  def _norm(self):
    return kernels.layer_norm(
      self.kernel_options, epsilon=LAYER_NORM_EPS, dtype=self.dtype
    )

  def _attention(self, width, output_width):
    return Attention(
      self.num_heads,
      width,
      output_width,
      self.rotary_fraction,
      self.max_wavelength,
      self.kernel_options,
      self.dtype,
    )

  def _mlp(self):
    return MLP(
      self.widening_factor,
      self.dropout_rate,
      self.kernel_options,
      self.dtype,
    )


class CrossAttend(_Block):
  """x = z0 + Attn(LN_q(z0), LN_kv(inputs)); x += MLP(LN(x)).

  q/k/v width = the input width (official 'kv'); the query residual adds
  the pre-LN z0. Keys come from `keys_values(inputs)` so the decoder can
  cache them.
  """

  input_width: int = 0
  output_width: int = 0

  def setup(self):
    self.q_norm = self._norm()
    self.kv_norm = self._norm()
    self.attn = self._attention(self.input_width, self.output_width)
    self.mlp_norm = self._norm()
    self.mlp = self._mlp()
    self.dropout = nn.Dropout(self.dropout_rate)

  def keys_values(self, inputs):
    return self.attn.keys_values(self.kv_norm(inputs))

  def __call__(
    self,
    z0,
    q_pos,
    k,
    v,
    k_pos,
    mask,
    deterministic=True,
    zero_empty_rows=True,
    options=None,
  ):
    a = self.attn(
      self.q_norm(z0), q_pos, k, v, k_pos, mask, zero_empty_rows, options
    )
    x = z0 + self.dropout(a, deterministic=deterministic)
    return x + self.mlp(self.mlp_norm(x), deterministic=deterministic)


class SelfAttend(_Block):
  """x += Attn(LN(x)); x += MLP(LN(x)), causal over the latents.

  With `past` (the keys/values of the M latent slots before this step),
  x is the newest latent only: its keys/values are appended at the end
  and the oldest slot drops out. Returns (x, (keys, values)) of all slots.
  """

  width: int = 0

  def setup(self):
    self.attn_norm = self._norm()
    self.attn = self._attention(self.width, self.width)
    self.mlp_norm = self._norm()
    self.mlp = self._mlp()
    self.dropout = nn.Dropout(self.dropout_rate)

  def __call__(self, x, pos, k_pos, mask, deterministic=True, past=None):
    y = self.attn_norm(x)
    k, v = self.attn.keys_values(y)
    if past is not None:
      k = jnp.concatenate([past[0][:, 1:], k], axis=1)
      v = jnp.concatenate([past[1][:, 1:], v], axis=1)
    a = self.attn(y, pos, k, v, k_pos, mask)
    x = x + self.dropout(a, deterministic=deterministic)
    x = x + self.mlp(self.mlp_norm(x), deterministic=deterministic)
    return x, (k, v)
