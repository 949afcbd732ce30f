"""Tests for MixUp, CutMix and label smoothing (perceiver_io.mixing).

Why: augmentation/mixing must do what the paper's official code does: pairing, halves, label
ratios equal to the pasted area. Hand-made constant images make every output pixel tell where it
came from.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import mixing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_importing_mixing_does_not_import_tensorflow():
  code = (
    'import sys; import perceiver_io.mixing; '
    'assert "tensorflow" not in sys.modules, "tensorflow was imported"'
  )
  env = dict(
    os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', '')
  )
  result = subprocess.run(
    [sys.executable, '-c', code],
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]


def _constant_batch(batch, size=8):
  """Example i is the constant image i + 1 with its own class i (one-hot over `batch` classes)."""
  images = jnp.broadcast_to(
    jnp.arange(1.0, batch + 1.0)[:, None, None, None], (batch, size, size, 3)
  )
  return images, jax.nn.one_hot(jnp.arange(batch), batch)


def _check_cutmix_rows(mixed, mixed_labels, rows):
  """CutMix rows hold only the two source values; the label weight is the kept-pixel fraction."""
  batch = mixed.shape[0]
  for i in rows:
    partner = batch - 1 - i
    values = mixed[i, :, :, 0]
    own, other = np.mean(values == i + 1), np.mean(values == partner + 1)
    assert own + other == pytest.approx(1.0)
    assert mixed_labels[i, i] == pytest.approx(own, abs=1e-5)
    assert mixed_labels[i, partner] == pytest.approx(other, abs=1e-5)


def test_smooth_labels_formula():
  smoothed = mixing.smooth_labels(jnp.array([[0.0, 1.0, 0.0, 0.0]]), 0.1)
  np.testing.assert_allclose(
    smoothed, [[0.025, 0.925, 0.025, 0.025]], atol=1e-7
  )
  with pytest.raises(ValueError, match='smoothing'):
    mixing.smooth_labels(jnp.ones((1, 2)), 1.0)


def test_cutmix_label_ratio_equals_pasted_area_fraction():
  images, labels = _constant_batch(8, size=16)
  mix = jax.jit(lambda key, x, y: mixing.mixup_cutmix(key, x, y, None, True))
  mixed, mixed_labels = map(
    np.asarray, mix(jax.random.PRNGKey(0), images, labels)
  )
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, atol=1e-6)
  _check_cutmix_rows(mixed, mixed_labels, range(8))
  assert (
    len({float(mixed_labels[i, i]) for i in range(8)}) > 4
  )  # the boxes vary


@pytest.mark.slow
def test_mixup_and_cutmix_halves_like_the_official_code():
  from scipy import stats  # pylint: disable=g-import-not-at-top

  batch = 2000
  images, labels = _constant_batch(batch)
  mix = jax.jit(lambda key, x, y: mixing.mixup_cutmix(key, x, y, 0.2, True))
  mixed, mixed_labels = map(
    np.asarray, mix(jax.random.PRNGKey(3), images, labels)
  )
  np.testing.assert_allclose(mixed_labels.sum(-1), 1.0, atol=1e-5)
  # First half: MixUp, a constant image r * (i + 1) + (1 - r) * (partner + 1).
  half = batch // 2
  own_value = np.arange(1.0, half + 1.0)
  partner_value = batch - np.arange(half)
  assert np.ptp(mixed[:half], axis=(1, 2, 3)).max() < 1e-3
  ratios = (mixed[:half, 0, 0, 0] - partner_value) / (own_value - partner_value)
  np.testing.assert_allclose(
    np.diagonal(mixed_labels)[:half], ratios, atol=1e-4
  )
  # The ratios are Beta(0.2, 0.2) samples (U-shaped): compare the empirical CDF with scipy's.
  for x in (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
    assert np.mean(ratios <= x) == pytest.approx(
      stats.beta.cdf(x, 0.2, 0.2), abs=0.06
    )
  # Second half: CutMix.
  _check_cutmix_rows(mixed, mixed_labels, range(half, batch, 37))


def test_no_mixing_is_identity_and_bad_alpha_is_an_error():
  images, labels = _constant_batch(4)
  same_images, same_labels = mixing.mixup_cutmix(
    jax.random.PRNGKey(1), images, labels, None, False
  )
  np.testing.assert_array_equal(same_images, images)
  np.testing.assert_array_equal(same_labels, labels)
  with pytest.raises(ValueError, match='mixup_alpha'):
    mixing.mixup_cutmix(jax.random.PRNGKey(1), images, labels, 0.0, False)
