"""Fourier and trainable position encodings against a direct NumPy formula.

The reference below is written from the official description (reference
section 2), not from our code: per dimension d, frequencies
`linspace(1, max_resolution[d] / 2, K)`; channels `[pos (d), sin(pi f x)
(dimension-major, d*K), cos(pi f x) (d*K)]`; dense grids `linspace(-1, 1, n)`
in 'ij' order; subsampled query points `-1 + 2 * i / n`. It loops over
channels one by one in float64 so that a wrong channel order, a wrong
frequency or a wrong grid cannot cancel out.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import position_encoding as pe

# float32 sin/cos of arguments up to pi * res / 2 (~ 100 rad here): the
# argument itself carries ~1e-5 absolute error in float32.
ATOL = 1e-4


def reference_fourier(
  pos, num_bands, max_resolution, concat_pos=True, sine_only=False
):
  """[n, d] positions -> [n, C] features, one channel at a time (float64)."""
  pos = np.asarray(pos, np.float64)
  n, d = pos.shape
  channels = []
  if concat_pos:
    for dim in range(d):
      channels.append(pos[:, dim])
  for trig in [np.sin] if sine_only else [np.sin, np.cos]:
    for dim in range(d):  # Dimension-major: all bands of dim 0 first.
      top = max_resolution[dim] / 2.0
      for band in range(num_bands):
        freq = (
          1.0 if num_bands == 1 else 1.0 + band * (top - 1.0) / (num_bands - 1)
        )
        channels.append(trig(np.pi * freq * pos[:, dim]))
  return np.stack(channels, axis=-1)


def reference_grid(index_dims):
  """[prod(index_dims), d] positions: x_i = -1 + 2 i / (n - 1), 'ij' order."""
  rows = []
  for idx in itertools.product(*[range(n) for n in index_dims]):
    rows.append(
      [
        -1.0 + 2.0 * i / (n - 1) if n > 1 else -1.0
        for i, n in zip(idx, index_dims)
      ]
    )
  return np.asarray(rows)


def reference_subsampled(points, index_dims):
  """Flat indices -> positions -1 + 2 i / n (row-major unravel by hand)."""
  rows = []
  for p in points:
    coords = []
    for n in reversed(index_dims):
      coords.append(p % n)
      p //= n
    coords = coords[::-1]
    rows.append([-1.0 + 2.0 * c / n for c, n in zip(coords, index_dims)])
  return np.asarray(rows)


def test_reference_grid_is_sane():
  # Hand-built: a 2 x 3 grid in 'ij' order.
  expected = [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]]
  np.testing.assert_allclose(reference_grid((2, 3)), expected)


@pytest.mark.parametrize('index_dims', [(5,), (3, 4), (2, 3, 4)])
def test_build_linear_positions(index_dims):
  got = pe.build_linear_positions(index_dims)
  assert got.shape == tuple(index_dims) + (len(index_dims),)
  assert got.dtype == np.float32
  np.testing.assert_allclose(
    got.reshape(-1, len(index_dims)), reference_grid(index_dims), atol=1e-6
  )


def test_build_linear_positions_hand_values():
  got = pe.build_linear_positions((3, 2))
  np.testing.assert_allclose(got[..., 0], [[-1, -1], [0, 0], [1, 1]])
  np.testing.assert_allclose(got[..., 1], [[-1, 1], [-1, 1], [-1, 1]])


@pytest.mark.parametrize(
  'concat_pos,sine_only',
  [(True, False), (False, False), (True, True), (False, True)],
)
@pytest.mark.parametrize(
  'index_dims,num_bands,max_res',
  [((7, 5), 6, (14, 20)), ((3, 4, 5), 3, (3, 4, 5)), ((11,), 5, (64,))],
)
def test_generate_fourier_features_matches_formula(
  index_dims, num_bands, max_res, concat_pos, sine_only
):
  pos = reference_grid(index_dims).astype(np.float32)
  expected = reference_fourier(pos, num_bands, max_res, concat_pos, sine_only)
  for array in (pos, jnp.asarray(pos)):  # NumPy and jax.Array inputs.
    got = pe.generate_fourier_features(
      array, num_bands, max_res, concat_pos=concat_pos, sine_only=sine_only
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), expected, atol=ATOL)
  assert expected.shape[-1] == pe.fourier_encoding_size(
    len(index_dims), num_bands, concat_pos, sine_only
  )


def test_fourier_hand_built_single_band():
  # d=1, K=2, res=4: freqs [1, 2]; at x = 0.5 -> [0.5, sin(pi/2), sin(pi),
  # cos(pi/2), cos(pi)] = [0.5, 1, 0, 0, -1].
  got = pe.generate_fourier_features(np.array([[0.5]], np.float32), 2, (4,))
  np.testing.assert_allclose(got, [[0.5, 1.0, 0.0, 0.0, -1.0]], atol=1e-6)


@pytest.mark.parametrize(
  'index_dims,num_bands,size',
  [((4, 5), 64, 258), ((2, 3, 4), 32, 195), ((6,), 192, 385)],
)
def test_official_encoding_sizes(index_dims, num_bands, size):
  enc = pe.FourierPositionEncoding(num_bands=num_bands)
  out = enc.apply({}, 3, index_dims)
  assert out.shape == (3, int(np.prod(index_dims)), size)
  assert enc.output_size(len(index_dims)) == size
  assert pe.fourier_encoding_size(len(index_dims), num_bands) == size


def test_fourier_module_grid_default_resolution_is_grid():
  index_dims, bands = (6, 9), 4
  out = pe.FourierPositionEncoding(num_bands=bands).apply({}, 2, index_dims)
  expected = reference_fourier(reference_grid(index_dims), bands, index_dims)
  np.testing.assert_allclose(out[0], expected, atol=ATOL)
  np.testing.assert_allclose(out[1], expected, atol=ATOL)


def test_fourier_module_explicit_resolution_and_flags():
  index_dims, bands, res = (4, 6), 5, (32, 48)
  out = pe.FourierPositionEncoding(
    num_bands=bands, max_resolution=res, concat_pos=False, sine_only=True
  ).apply({}, 1, index_dims)
  expected = reference_fourier(
    reference_grid(index_dims), bands, res, concat_pos=False, sine_only=True
  )
  np.testing.assert_allclose(out[0], expected, atol=ATOL)


def test_subsampled_positions():
  index_dims = (3, 4, 5)
  points = np.array([0, 1, 7, 23, 59, 33])
  got = pe.subsampled_positions(points, index_dims)
  np.testing.assert_allclose(
    got, reference_subsampled(points, index_dims), atol=1e-6
  )
  # Hand values: the last point (2, 3, 4) -> (-1 + 4/3, -1 + 6/4, -1 + 8/5).
  np.testing.assert_allclose(got[4], [1 / 3, 0.5, 0.6], atol=1e-6)
  # Denominator n, not n - 1: the last index never reaches +1.
  assert float(jnp.max(got)) < 1.0


def test_fourier_module_at_subsampled_points():
  index_dims, bands = (4, 8), 3
  points = np.array([3, 10, 31])
  pos = pe.subsampled_positions(points, index_dims)
  out = pe.FourierPositionEncoding(num_bands=bands).apply(
    {}, 2, index_dims, pos=pos
  )
  expected = reference_fourier(
    reference_subsampled(points, index_dims), bands, index_dims
  )
  assert out.shape == (2, 3, expected.shape[-1])
  np.testing.assert_allclose(out[1], expected, atol=ATOL)


def test_fourier_rejects_wrong_position_dims():
  with pytest.raises(ValueError, match='dimensions'):
    pe.FourierPositionEncoding(num_bands=2).apply(
      {}, 1, (4, 4), pos=jnp.zeros((5, 3))
    )
  with pytest.raises(ValueError, match='max_resolution'):
    pe.generate_fourier_features(np.zeros((5, 2), np.float32), 2, (4,))


def test_trainable_encoding_shape_and_broadcast():
  module = pe.PositionEncoding(
    {'type': 'trainable', 'num_channels': 7, 'index_dims': [3, 4]}
  )
  variables = module.init(jax.random.PRNGKey(0), 2, (3, 4))
  table = variables['params']['trainable']['embeddings']
  assert table.shape == (12, 7)  # Flattened: the official encoding is 1D.
  std = float(jnp.std(table))
  assert 0.005 < std < 0.03  # truncated normal, std 0.02.
  out = module.apply(variables, 2, (3, 4))
  np.testing.assert_array_equal(out[0], table)
  np.testing.assert_array_equal(out[1], table)


def test_position_encoding_projection():
  module = pe.PositionEncoding(
    {'type': 'fourier', 'num_bands': 2}, project_pos_dim=6
  )
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), 1, (3, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
    lambda x: rng.standard_normal(x.shape).astype(np.float32), shapes
  )
  kernel = variables['params']['projection']['kernel']
  bias = variables['params']['projection']['bias']
  assert kernel.shape == (10, 6)  # 2 * (2 * 2 + 1) = 10 Fourier channels.
  out = module.apply(variables, 1, (3, 3))
  feats = reference_fourier(reference_grid((3, 3)), 2, (3, 3))
  np.testing.assert_allclose(
    out[0], feats @ np.asarray(kernel) + bias, atol=1e-5
  )
  assert module.output_size(2) == 6


def test_position_encoding_unknown_type():
  module = pe.PositionEncoding({'type': 'rotary'})
  with pytest.raises(ValueError, match="'fourier' or 'trainable'"):
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), 1, (3,)))
