"""Tests for tiled flow inference, the Middlebury colour coding and flow metrics.

Expected colours are derived here from the published wheel definition (ramp
lengths RY 15, YG 6, GC 4, CB 11, BM 13, MR 6), not from the module's wheel.
"""

import math

import numpy as np
import pytest
from PIL import Image

from perceiver_io.flow import metrics
from perceiver_io.flow import tiling
from perceiver_io.flow import viz


# --------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  'size,tile,overlap',
  [
    (436, 368, 20),
    (1024, 496, 20),
    (1242, 496, 20),
    (496, 496, 20),
    (500, 100, 37),
    (101, 100, 0),
    (375, 368, 20),
  ],
)
def test_tile_origins_cover_with_overlap(size, tile, overlap):
  for layout in ('even', 'colab'):
    origins = tiling.tile_origins_1d(size, tile, overlap, layout)
    covered = np.zeros(size, int)
    for o in origins:
      assert 0 <= o <= size - tile
      covered[o : o + tile] += 1
    assert covered.min() >= 1
    if layout == 'even':
      assert (
        origins == sorted(origins)
        and origins[0] == 0
        and origins[-1] == size - tile
      )
      gaps = np.diff(origins)
      assert np.all(tile - gaps >= overlap)
      # Fewest tiles: one fewer tile could not keep the overlap.
      assert (
        len(origins) == 1 or (len(origins) - 2) * (tile - overlap) < size - tile
      )


def test_sintel_and_colab_layouts():
  assert len(tiling.tile_origins((436, 1024))) == 6
  # The colab's rule by hand: range(0, 436, 348) = [0, 348] -> last moved to 436 - 368 = 68;
  # range(0, 1024, 476) = [0, 476, 952] -> last moved to 1024 - 496 = 528.
  assert tiling.tile_origins((436, 1024), layout='colab') == [
    (0, 0),
    (0, 476),
    (0, 528),
    (68, 0),
    (68, 476),
    (68, 528),
  ]


def test_tile_weights_by_hand():
  np.testing.assert_array_equal(
    tiling.tile_weights((3, 5)),
    [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]],
  )
  np.testing.assert_array_equal(
    tiling.tile_weights((1, 6))[0], [1, 1, 1, 1, 1, 1]
  )
  np.testing.assert_array_equal(
    tiling.tile_weights((6, 6))[2], [1, 2, 3, 3, 2, 1]
  )


def _random_frames(height, width, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (height, width, 3)), rng.uniform(
    -1, 1, (height, width, 3)
  )


def test_single_tile_equals_single_pass():
  frame1, frame2 = _random_frames(24, 32)

  def predict(frames):
    return np.stack(
      [
        frames[:, 0, ..., 0] * 2 - frames[:, 1, ..., 1],
        np.sin(frames[:, 1, ..., 2]),
      ],
      -1,
    )

  expected = predict(np.stack([frame1, frame2])[None].astype(np.float32))[0]
  out = tiling.tiled_flow(predict, frame1, frame2, tile_size=(24, 32))
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def _coordinate_frames(height, width):
  """Frames whose channels 0/1 hold each pixel's absolute x/y coordinate."""
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  frame = np.stack([xx, yy, np.zeros_like(xx)], -1)
  return frame, frame.copy()


def _smooth_function(x, y):
  return np.stack(
    [np.sin(x / 17.0) + 0.01 * y, np.cos(y / 9.0) * x / 100.0], -1
  )


@pytest.mark.parametrize('layout', ['even', 'colab'])
def test_position_aware_predictor_is_reproduced_everywhere(layout):
  height, width = 75, 203
  frame1, frame2 = _coordinate_frames(height, width)
  calls = []

  def predict(frames):
    calls.append(frames.shape)
    assert frames.dtype == np.float32
    return _smooth_function(
      frames[:, 0, ..., 0].astype(np.float64), frames[:, 0, ..., 1]
    )

  out = tiling.tiled_flow(
    predict,
    frame1,
    frame2,
    tile_size=(40, 64),
    min_overlap=7,
    batch_size=4,
    layout=layout,
  )
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  np.testing.assert_allclose(out, _smooth_function(xx, yy), atol=1e-5)
  num_tiles = len(tiling.tile_origins((height, width), (40, 64), 7, layout))
  assert num_tiles > 4
  assert len(calls) == math.ceil(num_tiles / 4)
  assert all(shape == (4, 2, 40, 64, 3) for shape in calls)  # last batch padded


def test_blending_weights_by_hand():
  # Width 10, tile 7x6, overlap 2: origins x = 0 and 4. Tile 0 predicts 0, tile 1 predicts 10.
  # Weights are min(row weight, column weight). In the middle row (row weight 4) the column
  # weights decide: tile 0 at columns 4, 5 -> min(j+1, 6-j) = 2, 1; tile 1 (j = 0, 1) -> 1, 2.
  # In the top row the row weight 1 caps both tiles at 1, so the overlap is a plain average.
  frame = np.zeros((7, 10, 3))
  frame[..., 0] = np.arange(10)

  def predict(frames):
    first_x = frames[:, 0, 0, 0, 0]
    return np.broadcast_to(
      np.where(first_x == 0, 0.0, 10.0)[:, None, None, None],
      (frames.shape[0], 7, 6, 2),
    ).copy()

  out = tiling.tiled_flow(
    predict, frame, frame, tile_size=(7, 6), min_overlap=2, batch_size=1
  )
  np.testing.assert_allclose(
    out[3, :, 0], [0, 0, 0, 0, 10 / 3, 20 / 3, 10, 10, 10, 10], rtol=1e-6
  )
  np.testing.assert_allclose(
    out[0, :, 1], [0, 0, 0, 0, 5, 5, 10, 10, 10, 10], rtol=1e-6
  )


def test_small_frames_rejected_or_padded():
  frame1, frame2 = _coordinate_frames(30, 50)
  identity = lambda frames: frames[:, 0, ..., :2].astype(np.float64)
  with pytest.raises(ValueError, match='smaller than the 40x64 tile'):
    tiling.tiled_flow(identity, frame1, frame2, tile_size=(40, 64))
  out = tiling.tiled_flow(
    identity, frame1, frame2, tile_size=(40, 64), pad_small=True
  )
  assert out.shape == (30, 50, 2)
  np.testing.assert_allclose(out, frame1[..., :2])
  with pytest.raises(ValueError, match='same shape'):
    tiling.tiled_flow(
      identity, frame1, frame2[:-1], tile_size=(20, 20), min_overlap=4
    )
  with pytest.raises(ValueError, match='predict_fn returned shape'):
    tiling.tiled_flow(
      lambda f: np.zeros((1, 2, 2, 2)),
      frame1,
      frame2,
      tile_size=(20, 20),
      min_overlap=4,
    )
  with pytest.raises(ValueError, match='min_overlap'):
    tiling.tiled_flow(
      identity, frame1, frame2, tile_size=(20, 20), min_overlap=20
    )


# --------------------------------------------------------------------------
# Colour wheel
# --------------------------------------------------------------------------

# Ramp lengths from the Middlebury definition; entry i of a ramp moves one channel by
# floor(255 * i / n) from the ramp's start colour towards its end colour.
_RAMPS = [('RY', 15), ('YG', 6), ('GC', 4), ('CB', 11), ('BM', 13), ('MR', 6)]


def _wheel_entry(index):
  for name, n in _RAMPS:
    if index < n:
      step = math.floor(255 * index / n)
      return {
        'RY': (255, step, 0),
        'YG': (255 - step, 255, 0),
        'GC': (0, 255, step),
        'CB': (0, 255 - step, 255),
        'BM': (step, 0, 255),
        'MR': (255, 0, 255 - step),
      }[name]
    index -= n
  raise IndexError(index)


def test_wheel_definition():
  assert viz.COLOUR_WHEEL.shape == (55, 3)
  for i in range(55):
    np.testing.assert_array_equal(viz.COLOUR_WHEEL[i], _wheel_entry(i))
  assert _wheel_entry(0) == (255, 0, 0) and _wheel_entry(15) == (255, 255, 0)
  assert _wheel_entry(21) == (0, 255, 0) and _wheel_entry(36) == (0, 0, 255)


def test_flow_to_color_known_values():
  m = 4.0
  flow = np.array(
    [
      [[m, 0.0], [0.0, 0.0], [-m, 0.0], [m / 2, 0.0]],
      [[2 * m, 0.0], [1e10, 0.0], [np.nan, 1.0], [m, -0.0]],
    ],
    np.float32,
  )
  out = viz.flow_to_color(flow, max_flow=m)
  assert out.dtype == np.uint8 and out.shape == (2, 4, 3)
  # +x at full radius: angle atan2(-0, -1)/pi = -1 -> wheel position 0.
  np.testing.assert_array_equal(out[0, 0], _wheel_entry(0))
  np.testing.assert_array_equal(
    out[1, 3], _wheel_entry(0)
  )  # sign of zero does not matter
  np.testing.assert_array_equal(
    out[0, 1], [255, 255, 255]
  )  # zero flow is white
  # -x: angle 0 -> position (0 + 1) / 2 * 54 = 27.
  np.testing.assert_array_equal(out[0, 2], _wheel_entry(27))
  # Half radius desaturates halfway to white: floor(255 * (1 - 0.5 * (1 - c))).
  expected = [
    math.floor(255 * (1 - 0.5 * (1 - c / 255))) for c in _wheel_entry(0)
  ]
  np.testing.assert_array_equal(out[0, 3], expected)
  # Beyond max_flow: 75 % of the wheel colour.
  np.testing.assert_array_equal(out[1, 0], [math.floor(255 * 0.75), 0, 0])
  # Unknown flow is black.
  np.testing.assert_array_equal(out[1, 1], [0, 0, 0])
  np.testing.assert_array_equal(out[1, 2], [0, 0, 0])


def test_flow_to_color_interpolates_between_entries():
  # +y (downwards): angle atan2(-1, -0)/pi = -1/2 -> position 13.5, between entries 13 and 14.
  out = viz.flow_to_color(np.array([[[0.0, 1.0]]], np.float32), max_flow=1.0)
  expected = (np.array(_wheel_entry(13)) + np.array(_wheel_entry(14))) / 2
  np.testing.assert_allclose(out[0, 0], np.floor(expected), atol=1)
  # Default max_flow is the largest known magnitude: the biggest vector is fully saturated.
  flow = np.array([[[0.0, 0.0], [-3.0, 0.0], [1.0, 0.0]]], np.float32)
  np.testing.assert_array_equal(viz.flow_to_color(flow)[0, 1], _wheel_entry(27))


def test_save_flow_png(tmp_path):
  flow = np.random.default_rng(0).normal(0, 5, (9, 13, 2)).astype(np.float32)
  viz.save_flow_png(tmp_path / 'f.png', flow)
  with Image.open(tmp_path / 'f.png') as im:
    np.testing.assert_array_equal(np.asarray(im), viz.flow_to_color(flow))
  with pytest.raises(ValueError, match=r'\[H, W, 2\]'):
    viz.flow_to_color(np.zeros((3, 3)))


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def test_metrics_hand_built():
  gt = np.zeros((1, 5, 2), np.float32)
  gt[0, 4] = [100.0, 0.0]
  # EPEs: 0.5, 2, 4, 10 (against zero gt) and 4 (against |gt| = 100: 4 < 5 % of 100).
  pred = np.array(
    [[[0.5, 0.0], [0.0, 2.0], [0.0, -4.0], [6.0, 8.0], [104.0, 0.0]]],
    np.float32,
  )
  np.testing.assert_allclose(
    metrics.endpoint_error(pred, gt), [[0.5, 2, 4, 10, 4]], rtol=1e-6
  )
  result = metrics.flow_metrics(pred, gt)
  assert result['count'] == 5
  np.testing.assert_allclose(result['epe'], (0.5 + 2 + 4 + 10 + 4) / 5)
  np.testing.assert_allclose(
    result['fl_all'], 100 * 2 / 5
  )  # EPE 4 and 10 on zero gt
  np.testing.assert_allclose(result['acc_1px'], 1 / 5)
  np.testing.assert_allclose(result['acc_3px'], 2 / 5)
  np.testing.assert_allclose(result['acc_5px'], 4 / 5)
  valid = np.array([[1, 1, 0, 0, 1]], np.float32)
  masked = metrics.flow_metrics(pred, gt, valid)
  np.testing.assert_allclose(masked['epe'], (0.5 + 2 + 4) / 3)
  assert masked['fl_all'] == 0.0 and masked['count'] == 3


def test_metric_sums_pool_pixels():
  rng = np.random.default_rng(0)
  pred, gt = rng.normal(0, 4, (2, 6, 7, 2)), rng.normal(0, 4, (2, 6, 7, 2))
  valid = (rng.uniform(size=(2, 6, 7)) > 0.3).astype(np.float32)
  pooled = metrics.add_sums(
    metrics.flow_metric_sums(pred[0], gt[0], valid[0]),
    metrics.flow_metric_sums(pred[1], gt[1], valid[1]),
  )
  batched = metrics.flow_metrics(pred, gt, valid)
  for key, value in metrics.metrics_from_sums(pooled).items():
    np.testing.assert_allclose(value, batched[key])
  epe = np.sqrt(((pred - gt) ** 2).sum(-1))
  np.testing.assert_allclose(batched['epe'], epe[valid > 0].mean())


def test_metrics_bad_input():
  with pytest.raises(ValueError, match='same shape'):
    metrics.flow_metrics(np.zeros((2, 2, 2)), np.zeros((2, 3, 2)))
  with pytest.raises(ValueError, match='valid must have shape'):
    metrics.flow_metrics(
      np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.ones((2, 3))
    )
  with pytest.raises(ValueError, match='no valid pixels'):
    metrics.flow_metrics(
      np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2))
    )
