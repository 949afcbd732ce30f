"""Position encodings: Fourier features (official channel order) and trainable.

Fourier features follow the official `generate_fourier_features`: for each
spatial dimension d, frequencies `linspace(1, max_resolution[d] / 2, K)`;
features `[pos (d channels), sin(pi f x) (dimension-major, d*K),
cos(pi f x) (d*K)]`, so a 2D encoding with K=64 bands has 258 channels.

Dense grids use `linspace(-1, 1, n)` per dimension; subsampled query points use
the official `-1 + 2 * i / n` mapping (denominator n, not n - 1), which the
video checkpoint was trained with.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def build_linear_positions(index_dims: Sequence[int]) -> np.ndarray:
  """[*index_dims, d] float32 grid of positions in [-1, 1] ('ij' order)."""
  axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in index_dims]
  return np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1)


def subsampled_positions(points, index_dims: Sequence[int]):
  """Flat indices into `index_dims` -> positions `-1 + 2 * idx / dim`."""
  coords = jnp.stack(
    jnp.unravel_index(jnp.asarray(points), tuple(index_dims)), axis=-1
  ).astype(jnp.float32)
  return -1.0 + 2.0 * coords / jnp.asarray(index_dims, jnp.float32)


def fourier_encoding_size(
  num_dims: int, num_bands: int, concat_pos=True, sine_only=False
) -> int:
  size = num_dims * num_bands * (1 if sine_only else 2)
  return size + (num_dims if concat_pos else 0)


def generate_fourier_features(
  pos,
  num_bands: int,
  max_resolution: Sequence[int],
  concat_pos: bool = True,
  sine_only: bool = False,
):
  """Fourier features of positions `pos` [..., n, d] in the official order."""
  xp = jnp if not isinstance(pos, np.ndarray) else np
  d = pos.shape[-1]
  if len(max_resolution) != d:
    raise ValueError(
      f'max_resolution has {len(max_resolution)} entries but '
      f'positions have {d} dimensions.'
    )
  bands = np.stack(
    [
      np.linspace(1.0, res / 2.0, num_bands, dtype=np.float32)
      for res in max_resolution
    ]
  )  # [d, K]
  per_pos = pos[..., :, None] * bands  # [..., n, d, K]
  per_pos = per_pos.reshape(per_pos.shape[:-2] + (d * num_bands,))
  feats = [xp.sin(np.pi * per_pos)]
  if not sine_only:
    feats.append(xp.cos(np.pi * per_pos))
  if concat_pos:
    feats.insert(0, pos)
  return xp.concatenate(feats, axis=-1)


class FourierPositionEncoding(nn.Module):
  """Parameter-free Fourier features for a grid or for given positions.

  Attributes:
    num_bands: frequency bands K per dimension.
    max_resolution: per-dimension resolution that sets the top frequency
      (the official default is the grid size itself).
  """

  num_bands: int
  max_resolution: Optional[Sequence[int]] = None
  concat_pos: bool = True
  sine_only: bool = False

  def output_size(self, num_dims: int) -> int:
    return fourier_encoding_size(
      num_dims, self.num_bands, self.concat_pos, self.sine_only
    )

  def __call__(self, batch_size: int, index_dims: Sequence[int], pos=None):
    """Returns [B, prod(index_dims) or n, C] float32 features."""
    max_res = tuple(self.max_resolution or index_dims)
    if pos is None:
      # A small [n, d] constant; the n x C features are computed in-graph so
      # that large grids do not become large compile-time constants.
      grid = jnp.asarray(
        build_linear_positions(index_dims).reshape(-1, len(index_dims))
      )
      enc = generate_fourier_features(
        grid, self.num_bands, max_res, self.concat_pos, self.sine_only
      )
      return jnp.broadcast_to(enc, (batch_size,) + enc.shape)
    if pos.shape[-1] != len(max_res):
      raise ValueError(
        f'pos has {pos.shape[-1]} dimensions, expected {len(max_res)}.'
      )
    enc = generate_fourier_features(
      pos, self.num_bands, max_res, self.concat_pos, self.sine_only
    )
    if enc.ndim == 2:
      enc = jnp.broadcast_to(enc, (batch_size,) + enc.shape)
    return enc


class TrainablePositionEncoding(nn.Module):
  """A learned [index_dim, num_channels] array broadcast over the batch."""

  index_dim: int
  num_channels: int
  init_scale: float = 0.02
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, batch_size: int):
    emb = self.param(
      'embeddings',
      nn.initializers.truncated_normal(self.init_scale),
      (self.index_dim, self.num_channels),
      self.param_dtype,
    )
    return jnp.broadcast_to(emb, (batch_size,) + emb.shape)


class PositionEncoding(nn.Module):
  """Builds either encoding from a config dict, with optional projection.

  Config keys: `type` ('fourier' | 'trainable'), then for fourier `num_bands`,
  `max_resolution`, `concat_pos`, `sine_only`; for trainable `num_channels`,
  `index_dims` (the flattened size is used: the official encoding is 1D),
  `init_scale`. `project_pos_dim > 0` adds a Linear to that width.
  """

  config: dict
  project_pos_dim: int = -1
  dtype: Optional[jnp.dtype] = None

  def output_size(self, num_dims: int) -> int:
    if self.project_pos_dim > 0:
      return self.project_pos_dim
    cfg = self.config
    if cfg['type'] == 'fourier':
      return fourier_encoding_size(
        num_dims,
        cfg['num_bands'],
        cfg.get('concat_pos', True),
        cfg.get('sine_only', False),
      )
    return cfg['num_channels']

  @nn.compact
  def __call__(self, batch_size, index_dims, pos=None):
    cfg = dict(self.config)
    kind = cfg.pop('type')
    if kind == 'fourier':
      enc = FourierPositionEncoding(
        num_bands=cfg['num_bands'],
        max_resolution=tuple(cfg['max_resolution'])
        if cfg.get('max_resolution')
        else None,
        concat_pos=cfg.get('concat_pos', True),
        sine_only=cfg.get('sine_only', False),
      )(batch_size, index_dims, pos)
    elif kind == 'trainable':
      size = int(np.prod(cfg['index_dims']))
      if size != int(np.prod(index_dims)):
        raise ValueError(
          f'trainable position encoding was built for {cfg["index_dims"]} '
          f'positions ({size}) but the input has index dims '
          f'{tuple(index_dims)}; resize the input or the encoding.'
        )
      enc = TrainablePositionEncoding(
        size, cfg['num_channels'], cfg.get('init_scale', 0.02), name='trainable'
      )(batch_size)
    else:
      raise ValueError(
        f"position encoding type must be 'fourier' or "
        f"'trainable', got {kind!r}."
      )
    if self.dtype is not None:
      enc = enc.astype(self.dtype)
    if self.project_pos_dim > 0:
      enc = nn.Dense(self.project_pos_dim, dtype=self.dtype, name='projection')(
        enc
      )
    return enc
