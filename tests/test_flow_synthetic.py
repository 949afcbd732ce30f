"""Tests for the synthetic flow generator and flow augmentation.

Ground truth is checked by warping frame 2 back onto frame 1 with
scipy.ndimage.map_coordinates (an independent bilinear sampler).
"""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from perceiver_io.flow import augment
from perceiver_io.flow import synthetic

H, W = 96, 128


def _warp_back(frame2, flow):
  """frame2 sampled at x + flow(x), bilinear, per channel."""
  height, width = frame2.shape[:2]
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  coords = [yy + flow[..., 1], xx + flow[..., 0]]
  return np.stack(
    [
      ndimage.map_coordinates(
        frame2[..., c].astype(np.float64), coords, order=1, mode='nearest'
      )
      for c in range(3)
    ],
    -1,
  )


def _photometric_errors(sample):
  """(mean |warped - frame1| on valid, same on invalid, zero-flow error on valid)."""
  frame1 = sample['frame1'].astype(np.float64)
  valid = sample['valid'] > 0
  warped = np.abs(_warp_back(sample['frame2'], sample['flow']) - frame1).mean(
    -1
  )
  zero = np.abs(sample['frame2'].astype(np.float64) - frame1).mean(-1)
  invalid = warped[~valid].mean() if (~valid).any() else np.nan
  return warped[valid].mean(), invalid, zero[valid].mean()


@pytest.fixture(scope='module')
def samples():
  return [synthetic.sample_at(11, i, H, W) for i in range(6)]


def test_output_types(samples):
  s = samples[0]
  assert s['frame1'].shape == (H, W, 3) and s['frame1'].dtype == np.uint8
  assert s['frame2'].shape == (H, W, 3) and s['frame2'].dtype == np.uint8
  assert s['flow'].shape == (H, W, 2) and s['flow'].dtype == np.float32
  assert s['valid'].shape == (H, W) and s['valid'].dtype == np.float32
  assert set(np.unique(s['valid'])) <= {0.0, 1.0}


def test_ground_truth_warps_frame2_onto_frame1(samples):
  warped_total, zero_total, invalid_errors, gross, num_valid = (
    0.0,
    0.0,
    [],
    0,
    0,
  )
  for s in samples:
    warped, invalid, zero = _photometric_errors(s)
    # Gross per-pixel mismatches on valid pixels reveal missed occlusions (interpolation
    # error alone stays far below 40 grey levels).
    per_pixel = np.abs(_warp_back(s['frame2'], s['flow']) - s['frame1']).mean(
      -1
    )
    gross += np.count_nonzero(per_pixel[s['valid'] > 0] > 40)
    num_valid += np.count_nonzero(s['valid'])
    assert warped < 0.25 * zero, (warped, zero)
    warped_total += warped
    zero_total += zero
    if not np.isnan(invalid):
      invalid_errors.append(invalid)
  assert warped_total < 0.15 * zero_total
  assert gross < 0.005 * num_valid, gross / num_valid
  # Pixels marked invalid (occluded / leaving the frame) do not match: the mask means something.
  assert len(invalid_errors) >= 3
  assert np.mean(invalid_errors) > 5 * warped_total / len(samples)
  # The scenes actually move and have occlusions.
  assert max(np.abs(s['flow']).max() for s in samples) > 5
  assert 0.5 < np.mean([s['valid'].mean() for s in samples]) < 1.0


def test_translation_only_flow_is_piecewise_constant():
  config = synthetic.SyntheticFlowConfig(
    min_foreground_layers=3,
    max_foreground_layers=3,
    max_rotation_deg=0,
    max_log_scale=0,
    max_shear=0,
    background_max_rotation_deg=0,
    background_max_log_scale=0,
  )
  s = synthetic.generate_pair(5, H, W, config)
  distinct = np.unique(s['flow'].reshape(-1, 2), axis=0)
  assert 2 <= len(distinct) <= 4  # one vector per visible layer


def test_background_only_flow_is_affine():
  config = synthetic.SyntheticFlowConfig(
    min_foreground_layers=0, max_foreground_layers=0
  )
  s = synthetic.generate_pair(np.random.default_rng(2), H, W, config)
  yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
  design = np.stack([xx.ravel(), yy.ravel(), np.ones(H * W)], -1)
  for c in range(2):
    coef, *_ = np.linalg.lstsq(
      design, s['flow'][..., c].ravel().astype(np.float64), rcond=None
    )
    np.testing.assert_allclose(
      design @ coef, s['flow'][..., c].ravel(), atol=1e-3
    )
  # Only pixels leaving the frame are invalid: exactly those with x + flow outside the image.
  x2, y2 = xx + s['flow'][..., 0], yy + s['flow'][..., 1]
  inside = (
    (x2 >= -1e-3) & (x2 <= W - 1 + 1e-3) & (y2 >= -1e-3) & (y2 <= H - 1 + 1e-3)
  )
  assert np.mean((s['valid'] > 0) == inside) > 0.999


def test_determinism_and_skip_ahead():
  a = synthetic.generate_pair(3, 32, 40)
  b = synthetic.generate_pair(3, 32, 40)
  c = synthetic.generate_pair(4, 32, 40)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['frame1'], c['frame1'])
  stream = synthetic.synthetic_flow_batches(
    9, batch_size=2, height=32, width=40, num_batches=3
  )
  batches = list(stream)
  assert len(batches) == 3 and batches[0]['frame1'].shape == (2, 32, 40, 3)
  np.testing.assert_array_equal(
    np.concatenate([b['index'] for b in batches]), np.arange(6)
  )
  resumed = next(
    synthetic.synthetic_flow_batches(
      9, batch_size=3, height=32, width=40, start_index=3
    )
  )
  np.testing.assert_array_equal(resumed['index'], [3, 4, 5])
  for key in ('frame1', 'frame2', 'flow', 'valid'):
    np.testing.assert_array_equal(
      resumed[key][0], batches[1][key][1]
    )  # sample 3
    np.testing.assert_array_equal(
      resumed[key][2], batches[2][key][1]
    )  # sample 5
    np.testing.assert_array_equal(
      resumed[key][1], synthetic.sample_at(9, 4, 32, 40)[key]
    )


def test_generator_bad_input():
  with pytest.raises(ValueError, match='>= 8'):
    synthetic.generate_pair(0, 4, 40)
  with pytest.raises(ValueError, match='non-negative'):
    synthetic.generate_pair(-1, 32, 40)
  with pytest.raises(ValueError, match='min_foreground_layers'):
    synthetic.SyntheticFlowConfig(
      min_foreground_layers=5, max_foreground_layers=2
    )


# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------


def test_flips_keep_flow_consistent(samples):
  s = samples[1]
  for horizontal, vertical in [(True, False), (False, True), (True, True)]:
    flipped = augment.flip_sample(s, horizontal=horizontal, vertical=vertical)
    warped, _, zero = _photometric_errors(flipped)
    original, _, _ = _photometric_errors(s)
    np.testing.assert_allclose(warped, original, rtol=1e-6)  # a flip is exact
    assert warped < 0.25 * zero
    back = augment.flip_sample(
      flipped, horizontal=horizontal, vertical=vertical
    )
    for key in ('frame1', 'frame2', 'flow', 'valid'):
      np.testing.assert_array_equal(back[key], s[key])
  flipped = augment.flip_sample(s, horizontal=True)
  np.testing.assert_array_equal(flipped['flow'][:, 0, 0], -s['flow'][:, -1, 0])
  np.testing.assert_array_equal(flipped['flow'][:, 0, 1], s['flow'][:, -1, 1])


def test_resize_keeps_flow_consistent(samples):
  s = samples[2]
  _, _, zero = _photometric_errors(s)
  for size in [(120, 200), (80, 100)]:
    resized = augment.resize_sample(s, size)
    assert resized['frame1'].shape == size + (3,) and resized[
      'flow'
    ].shape == size + (2,)
    warped, _, zero_resized = _photometric_errors(resized)
    assert warped < 0.25 * zero_resized, (size, warped, zero_resized)


def test_resize_scales_constant_flow_exactly():
  flow = np.tile(np.array([3.0, -2.0], np.float32), (10, 20, 1))
  s = {
    'frame1': np.zeros((10, 20, 3), np.uint8),
    'frame2': np.zeros((10, 20, 3), np.uint8),
    'flow': flow,
    'valid': np.ones((10, 20), np.float32),
    'name': 'x',
  }
  out = augment.resize_sample(s, (15, 50))
  np.testing.assert_allclose(out['flow'][..., 0], 3.0 * 50 / 20, rtol=1e-6)
  np.testing.assert_allclose(out['flow'][..., 1], -2.0 * 15 / 10, rtol=1e-6)
  assert out['name'] == 'x'


def test_sparse_resize_moves_points():
  flow = np.zeros((10, 20, 2), np.float32)
  valid = np.zeros((10, 20), np.float32)
  flow[3, 5] = [1.0, 2.0]
  valid[3, 5] = 1
  flow[0, 0] = [4.0, 4.0]  # invalid: must not appear
  s = {
    'frame1': np.zeros((10, 20, 3), np.uint8),
    'frame2': np.zeros((10, 20, 3), np.uint8),
    'flow': flow,
    'valid': valid,
  }
  out = augment.resize_sample(s, (20, 40), sparse=True)
  # Pixel centre (5, 3) maps to ((5 + 0.5) * 2 - 0.5, (3 + 0.5) * 2 - 0.5) = (10.5, 6.5),
  # which rounds (half to even) to (10, 6).
  assert out['valid'].sum() == 1 and out['valid'][6, 10] == 1
  np.testing.assert_array_equal(out['flow'][6, 10], [2.0, 4.0])
  assert np.count_nonzero(out['flow']) == 2


def test_crop_and_spatial_augment(samples):
  s = samples[3]
  cropped = augment.crop_sample(s, 10, 20, (50, 60))
  np.testing.assert_array_equal(cropped['flow'], s['flow'][10:60, 20:80])
  with pytest.raises(ValueError, match='does not fit'):
    augment.crop_sample(s, 60, 0, (50, 60))
  config = augment.SpatialConfig(
    crop_size=(64, 96), hflip_prob=0.5, vflip_prob=0.5
  )
  out1 = augment.spatial_augment(np.random.default_rng(0), s, config)
  out2 = augment.spatial_augment(np.random.default_rng(0), s, config)
  for key in ('frame1', 'frame2', 'flow', 'valid'):
    np.testing.assert_array_equal(out1[key], out2[key])
  for seed in range(4):
    out = augment.spatial_augment(np.random.default_rng(seed), s, config)
    assert out['frame1'].shape == (64, 96, 3) and out['valid'].shape == (64, 96)
    if out['valid'].mean() > 0.3:
      warped, _, zero = _photometric_errors(out)
      assert warped < 0.3 * zero
  with pytest.raises(ValueError, match='smaller than crop_size'):
    augment.spatial_augment(
      np.random.default_rng(0),
      s,
      augment.SpatialConfig(crop_size=(200, 200), scale_prob=0.0),
    )
  # With scaling on, the scale is raised so the crop fits.
  big = augment.spatial_augment(
    np.random.default_rng(0),
    s,
    augment.SpatialConfig(crop_size=(200, 200), scale_prob=1.0),
  )
  assert big['frame1'].shape == (200, 200, 3)


def test_adjust_colours_reference_values():
  rng = np.random.default_rng(0)
  image = rng.uniform(0.1, 0.9, (5, 6, 3)).astype(np.float32)
  luma = image @ np.array([0.299, 0.587, 0.114], np.float32)
  gray = augment.adjust_colours(image, saturation=0.0)
  for c in range(3):
    np.testing.assert_allclose(gray[..., c], luma, atol=1e-6)
  np.testing.assert_allclose(
    augment.adjust_colours(image, brightness=0.5), image * 0.5, atol=1e-7
  )
  np.testing.assert_allclose(
    augment.adjust_colours(image, hue=1.0), image, atol=1e-5
  )
  np.testing.assert_allclose(
    augment.adjust_colours(image, gamma=2.0), image**2, atol=1e-6
  )
  gray_image = np.repeat(luma[..., None], 3, -1)
  np.testing.assert_allclose(
    augment.adjust_colours(gray_image, hue=0.3), gray_image, atol=1e-5
  )
  contrast = augment.adjust_colours(image, contrast=0.0)
  np.testing.assert_allclose(
    contrast, np.full_like(image, luma.mean()), atol=1e-6
  )


def test_photometric_symmetric_and_asymmetric(samples):
  s = samples[4]
  symmetric = augment.PhotometricConfig(asymmetric_prob=0.0)
  a1, a2 = augment.photometric_augment(
    np.random.default_rng(1), s['frame1'], s['frame2'], symmetric
  )
  b1, b2 = augment.photometric_augment(
    np.random.default_rng(1), s['frame1'], s['frame2'], symmetric
  )
  np.testing.assert_array_equal(a1, b1)
  np.testing.assert_array_equal(a2, b2)
  assert a1.dtype == np.uint8 and a1.shape == s['frame1'].shape
  assert not np.array_equal(a1, s['frame1'])
  # The same colour map on both frames keeps the flow's photometric consistency.
  jittered = dict(s, frame1=a1, frame2=a2)
  warped, _, zero = _photometric_errors(jittered)
  assert warped < 0.25 * zero
  # Identical input frames stay identical under symmetric jitter, but not asymmetric.
  same1, same2 = augment.photometric_augment(
    np.random.default_rng(2), s['frame1'], s['frame1'], symmetric
  )
  np.testing.assert_array_equal(same1, same2)
  asym = augment.PhotometricConfig(asymmetric_prob=1.0)
  diff1, diff2 = augment.photometric_augment(
    np.random.default_rng(2), s['frame1'], s['frame1'], asym
  )
  assert not np.array_equal(diff1, diff2)
  noisy = dataclasses.replace(
    symmetric, brightness=0, contrast=0, saturation=0, hue=0, noise_std=0.05
  )
  n1, n2 = augment.photometric_augment(
    np.random.default_rng(3), s['frame1'], s['frame1'], noisy
  )
  assert not np.array_equal(n1, n2)  # noise is independent per frame


def test_augment_sample_runs_both(samples):
  out = augment.augment_sample(
    np.random.default_rng(5),
    samples[5],
    spatial=augment.SpatialConfig(crop_size=(48, 64)),
  )
  assert out['frame1'].shape == (48, 64, 3) and out['flow'].shape == (48, 64, 2)
  assert out['flow'].dtype == np.float32 and out['valid'].dtype == np.float32
