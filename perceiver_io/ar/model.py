"""Perceiver AR (Hawthorne et al. 2022), as the official code computes it.

Reference: shared/reference/perceiver-ar.md, sections 1 and 2.

  tokens [B, N], right-aligned (PAD at the start of short rows)
    -> embed tokens (+ absolute position table)          emb [B, N, D_in]
    -> the last M positions are the latents:  z0 = z_linear(emb[:, N-M:])
    -> causal cross-attend: latent m (at input N-M+m) sees inputs <= its
       own position                                       z [B, M, D]
    -> L causal self-attend layers over the latents
    -> final LayerNorm, logits (own, zero-initialised weights)  [B, M, V]

Convention: logits[:, m] are computed at input position N-M+m (the latent
sees that token and all before it) and predict the token that follows it,
i.e. for a sequence s[0..N] the model reads s[:N] and latent m is scored
on s[N-M+m+1]. Latents at padding positions carry no information (their
cross-attend row is empty and outputs zero); give them weight 0.

Rngs: 'dropout' serves both the residual dropout and the cross-attend
input dropout (training only, `deterministic=False`).
"""

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from perceiver_io import kernels
from perceiver_io.ar import blocks
from perceiver_io.ar import model_config as config_lib
from perceiver_io.ar import positions as pos_lib


def sequence_lengths(tokens):
  """Valid tokens per right-aligned row: N minus the leading PADs."""
  n = tokens.shape[1]
  is_data = tokens != config_lib.PAD_ID
  leading = jnp.where(jnp.any(is_data, axis=1), jnp.argmax(is_data, 1), n)
  return n - leading


def token_layout(tokens, input_lengths=None, positions=None):
  """(valid [B, N], positions [B, N]) of right-aligned rows.

  valid: the last `input_lengths` slots of each row (default: all but the
  leading PADs); positions: 0-based, counted from the row's first valid
  token unless given; 0 at padding.
  """
  n = tokens.shape[1]
  lengths = sequence_lengths(tokens) if input_lengths is None else input_lengths
  start = (n - jnp.asarray(lengths))[:, None]
  index = jnp.arange(n)[None, :]
  valid = index >= start
  if positions is None:
    positions = index - start
  return valid, jnp.where(valid, positions, 0)


def latent_positions(valid, positions, num_latents):
  """[B, M] the position each latent sits at, -1 for latents at padding
  (the official `latent_last_steps`)."""
  m = num_latents
  return jnp.where(valid[:, -m:], positions[:, -m:], -1)


def cross_attend_mask(valid, num_latents):
  """[B, M, N]: latent m (input slot N-M+m) sees valid inputs up to its own
  slot, its own token included."""
  n, m = valid.shape[1], num_latents
  own = (n - m + jnp.arange(m))[:, None]
  return jnp.logical_and(jnp.arange(n)[None, :] <= own, valid[:, None, :])


def self_attend_mask(valid, num_latents, active=None):
  """[B, M, M]: latent a sees valid (and active) latents b <= a; every
  latent sees itself (the official diagonal), so no row is empty."""
  m = num_latents
  key_ok = valid[:, -m:]
  if active is not None:
    key_ok = jnp.logical_and(key_ok, active)
  causal = jnp.arange(m)[None, :] <= jnp.arange(m)[:, None]
  mask = jnp.logical_and(causal[None], key_ok[:, None, :])
  return jnp.logical_or(mask, jnp.eye(m, dtype=bool))


class PerceiverAR(nn.Module):
  """Perceiver AR; `config` is a dict as `perceiver_io.ar.config` makes."""

  config: Dict[str, Any]

  def setup(self):
    c = config_lib.config(**dict(self.config))
    self.cfg = c
    dtype = jnp.dtype(c['dtype'])
    options = kernels.KernelOptions.from_config(c)
    rotary = c['rotary_fraction'] if c['position'] == 'rotary' else None
    d_in, d = c['input_channels'], c['num_channels']
    self.token_embed = nn.Embed(
      c['vocab_size'],
      d_in,
      embedding_init=nn.initializers.truncated_normal(1.0),
    )
    if c['position'] == 'absolute':
      self.pos_embed = self.param(
        'pos_embed',
        lambda _, shape: jnp.asarray(pos_lib.sinusoid_table(*shape)),
        (c['max_context'] + 1, d_in),
      )
    elif c['position'] == 'learned':
      self.pos_embed = self.param(
        'pos_embed',
        nn.initializers.truncated_normal(1.0),
        (c['max_context'] + 1, d_in),
      )
    self.z_linear = kernels.dense(
      d, options, dtype=dtype, kernel_init=blocks.KERNEL_INIT
    )
    common = dict(
      dropout_rate=c['dropout_rate'],
      rotary_fraction=rotary,
      max_wavelength=c['max_wavelength'],
      kernel_options=options,
      dtype=dtype,
    )
    self.cross_attn = blocks.CrossAttend(
      num_heads=c['num_cross_attend_heads'],
      widening_factor=c['cross_attend_widening_factor'],
      input_width=d_in,
      output_width=d,
      **common,
    )
    self.self_attn = [
      blocks.SelfAttend(
        num_heads=c['num_heads'],
        widening_factor=c['widening_factor'],
        width=d,
        **common,
      )
      for _ in range(c['num_self_attend_layers'])
    ]
    self.final_norm = kernels.layer_norm(
      options, epsilon=blocks.LAYER_NORM_EPS, dtype=dtype
    )
    self.logits = kernels.dense(
      c['vocab_size'],
      options,
      dtype=dtype,
      kernel_init=nn.initializers.zeros,
      bias_init=nn.initializers.zeros,
    )
    self.options = options

  def _embed(self, tokens, positions, valid):
    emb = self.token_embed(tokens)
    if self.cfg['position'] != 'rotary':
      table = self.pos_embed
      if self.cfg['position'] == 'absolute':
        table = jax.lax.stop_gradient(table)  # frozen, as officially
      rows = jnp.where(valid, positions + 1, 0)
      emb = emb + jnp.take(table, rows, axis=0, mode='clip')
    return emb.astype(jnp.dtype(self.cfg['dtype']))

  def _check_shape(self, tokens):
    n, m = tokens.shape[-1], self.cfg['num_latents']
    if tokens.ndim != 2 or not m <= n <= self.cfg['max_context']:
      raise ValueError(
        f'tokens must be [batch, length] with num_latents ({m}) <= length '
        f'<= max_context ({self.cfg["max_context"]}); got shape '
        f'{tuple(tokens.shape)}.'
      )

  def __call__(
    self,
    tokens,
    *,
    deterministic=True,
    input_lengths=None,
    positions=None,
    num_latents=None,
    return_cache=False,
  ):
    """Logits [B, M, V] (float32) of the last M positions.

    Args:
      tokens: int [B, N], right-aligned; M <= N <= max_context.
      deterministic: False trains (dropout, cross-attend input dropout).
      input_lengths: int [B] valid tokens per row; default: N minus the
        leading PADs.
      positions: int [B, N] 0-based position of each token; default: its
        index counted from the row's first valid token.
      num_latents: int or int [B]: only the last `num_latents` latents are
        keys of the self-attention, i.e. the model with fewer latents (the
        others' logits are then meaningless). The decoder uses it.
      return_cache: also return the keys/values a decoder continues from.
    """
    self._check_shape(tokens)
    c = self.cfg
    b, n = tokens.shape
    m = c['num_latents']
    valid, positions = token_layout(tokens, input_lengths, positions)
    index = jnp.arange(n)
    emb = self._embed(tokens, positions, valid)
    lat_pos = positions[:, n - m :]

    cross_mask = cross_attend_mask(valid, m)
    training_drop = c['cross_attend_dropout_rate'] > 0 and not deterministic
    options = self.options
    zero_empty = True
    if training_drop:
      keep = jax.random.bernoulli(
        self.make_rng('dropout'),
        1.0 - c['cross_attend_dropout_rate'],
        (b, n),
      )
      if c['cross_attend_dropout_mode'] == 'safe':
        keep = jnp.logical_or(keep, index[None, :] >= n - m)
      else:
        # Official: rows that lose every key average over all keys.
        zero_empty = False
        options = kernels.KernelOptions(attention='einsum')
      cross_mask = jnp.logical_and(cross_mask, keep[:, None, :])

    z0 = self.z_linear(emb[:, n - m :])
    k, v = self.cross_attn.keys_values(emb)
    x = self.cross_attn(
      z0,
      lat_pos,
      k,
      v,
      positions,
      cross_mask,
      deterministic,
      zero_empty,
      options,
    )
    active = None
    if num_latents is not None:
      active = jnp.arange(m)[None, :] >= m - jnp.reshape(num_latents, (-1, 1))
    self_mask = self_attend_mask(valid, m, active)
    cache_k, cache_v = [], []
    for layer in self.self_attn:
      x, (lk, lv) = layer(x, lat_pos, lat_pos, self_mask, deterministic)
      cache_k.append(lk)
      cache_v.append(lv)
    logits = self.logits(self.final_norm(x)).astype(jnp.float32)
    if not return_cache:
      return logits
    cache = {
      'cross_k': k,
      'cross_v': v,
      'positions': positions,
      'valid': valid,
      'latent_k': jnp.stack(cache_k),
      'latent_v': jnp.stack(cache_v),
    }
    return logits, cache

  def decode_step(self, token, position, cache, num_cached):
    """One new token per row after `cache` -> (logits [B, V], cache).

    The caches slide by one slot: the oldest input (and latent) drops out
    and the new token becomes input N-1 and latent M-1. The new latent sees
    the `num_cached` latents before it, so the logits equal those of the
    full forward (`__call__`) with `num_latents=num_cached + 1` on the
    slid window.
    """
    c = self.cfg
    m = c['num_latents']
    n = cache['valid'].shape[1]

    def slide(old, new):
      return jnp.concatenate([old[:, 1:], new], axis=1)

    position = position[:, None]
    valid = slide(cache['valid'], jnp.ones_like(cache['valid'][:, :1]))
    positions = slide(cache['positions'], position)
    emb = self._embed(token[:, None], position, jnp.ones_like(position, bool))
    k_new, v_new = self.cross_attn.keys_values(emb)
    k = slide(cache['cross_k'], k_new)
    v = slide(cache['cross_v'], v_new)
    x = self.cross_attn(
      self.z_linear(emb), position, k, v, positions, valid[:, None, :]
    )
    active = jnp.arange(m) >= m - (num_cached + 1)
    key_ok = jnp.logical_and(valid[:, n - m :], active[None, :])
    lat_pos = positions[:, n - m :]
    latent_k, latent_v = [], []
    for i, layer in enumerate(self.self_attn):
      past = (cache['latent_k'][i], cache['latent_v'][i])
      x, (lk, lv) = layer(x, position, lat_pos, key_ok[:, None, :], past=past)
      latent_k.append(lk)
      latent_v.append(lv)
    logits = self.logits(self.final_norm(x)).astype(jnp.float32)
    new_cache = {
      'cross_k': k,
      'cross_v': v,
      'positions': positions,
      'valid': valid,
      'latent_k': jnp.stack(latent_k),
      'latent_v': jnp.stack(latent_v),
    }
    return logits[:, 0], new_cache


def loss(logits, targets, weights, z_loss=0.0):
  """(per-example loss sum [B], weight sum [B]); the step's loss is
  sum/sum. Cross-entropy plus the official z-loss, z_loss * log(Z)^2 per
  token, which keeps the softmax normaliser near 1."""
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  if z_loss:
    nll = nll + z_loss * jnp.square(jax.nn.logsumexp(logits, axis=-1))
  return jnp.sum(nll * weights, axis=-1), jnp.sum(weights, axis=-1)
