"""Positions as the official Perceiver AR code computes them.

Reference: shared/reference/perceiver-ar.md sections 1.1 and 2.5.

* Absolute tables have max_context + 1 rows; a token at 0-based position p
  reads row p + 1 and padding reads row 0 (the official code's 1-based data
  positions). The 'absolute' table is a frozen sinusoid: the first half of
  the channels sin(p w_j), the second half cos(p w_j), w_j =
  10000^(-j / (D/2 - 1)), j = 0 .. D/2 - 1 (not interleaved).
* Rotary rotates the first r = 2 floor(d_h f / 2) channels of every head
  (f = rotary_fraction), in interleaved pairs (2j, 2j+1):
  (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) with angle p w_j and
  w_j = max_wavelength^(-j / (r/2 - 1)): an inclusive linspace of
  exponents, so the slowest band is exactly 1 / max_wavelength (standard
  RoPE uses base^(-2j/r)). q and k are rotated after their projections;
  angles are computed in float32.
"""

import math

import jax.numpy as jnp
import numpy as np


def sinusoid_table(rows: int, channels: int) -> np.ndarray:
  """[rows, channels] float32: row p holds the sinusoid of position p."""
  half = channels // 2
  position = np.arange(rows, dtype=np.float64)[:, None]
  rates = np.exp(np.arange(half) * (-np.log(10000.0) / max(half - 1, 1)))
  table = np.zeros((rows, channels), np.float32)
  table[:, :half] = np.sin(position * rates)
  table[:, half : 2 * half] = np.cos(position * rates)
  return table


def rotated_channels(head_width: int, fraction: float) -> int:
  return int(math.floor(head_width * fraction / 2.0) * 2)


def apply_rotary(x, positions, fraction: float, max_wavelength: float):
  """x [B, T, H, d] rotated by `positions` [B, T] (see the module doc)."""
  r = rotated_channels(x.shape[-1], fraction)
  if r == 0:
    return x
  bands = r // 2
  exponents = np.linspace(0.0, 1.0, bands) if bands > 1 else np.zeros(1)
  inv_freq = jnp.asarray(float(max_wavelength) ** -exponents, jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, n]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  rot = x[..., :r].astype(jnp.float32)
  x0, x1 = rot[..., 0::2], rot[..., 1::2]
  out = jnp.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
  out = out.reshape(rot.shape).astype(x.dtype)
  return jnp.concatenate([out, x[..., r:]], axis=-1)
