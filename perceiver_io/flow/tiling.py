"""Tiled optical-flow inference for frames larger than the training size.

Why: the Perceiver IO flow model is trained at 368x496 and its Fourier
position features are tied to that size, so the official colab evaluates
larger frames (Sintel 436x1024, KITTI ~375x1242) by cutting them into
overlapping 368x496 tiles, predicting every tile, and blending the tile
predictions with weights that fall off towards each tile's border (tile
edges have the least context). This module does the same for any
`predict_fn`.

Blending weight of tile pixel (i, j) in a th x tw tile (the colab's rule):
w = min(i + 1, th - i, j + 1, tw - j), i.e. one plus the distance to the
nearest tile border. The output at a pixel is sum_t w_t * flow_t / sum_t w_t
over the tiles covering it.

Tile layouts (per axis, size n, tile t, min_overlap m):

* 'even' (default): the fewest tiles, 1 + ceil((n - t) / (t - m)), with
  origins spread evenly from 0 to n - t, so every pair of neighbouring tiles
  overlaps by at least m. Sintel 436x1024 at 368x496 gives 2 x 3 = 6 tiles.
* 'colab': the official colab's origins, range(0, n, t - m) with the last
  origin moved to n - t (it may repeat or reorder tiles; kept for exact
  reproduction of the released evaluation).

`predict_fn` receives float32 tiles exactly as cut from the inputs (no
normalisation here: pass frames already normalised, e.g. to [-1, 1], or have
`predict_fn` normalise them).
"""

import itertools
import math
from typing import Callable, List, Sequence, Tuple

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]
TRAIN_SIZE = (368, 496)


def tile_origins_1d(
  size: int, tile: int, min_overlap: int, layout: str = 'even'
) -> List[int]:
  """Tile start offsets along one axis.

  Args:
    size: image extent (>= tile).
    tile: tile extent.
    min_overlap: minimum overlap of neighbouring tiles (< tile).
    layout: 'even' or 'colab' (see module docstring).

  Returns:
    list of origins; tiles [o, o + tile) cover [0, size).
  """
  if tile < 1 or size < tile:
    raise ValueError(f'tile extent {tile} must be in [1, image extent {size}].')
  if not 0 <= min_overlap < tile:
    raise ValueError(
      f'min_overlap must be in [0, tile extent {tile}); got {min_overlap}.'
    )
  stride = tile - min_overlap
  if layout == 'colab':
    origins = list(range(0, size, stride))
    origins[-1] = size - tile
    return origins
  if layout != 'even':
    raise ValueError(
      f'Unknown tile layout {layout!r}; expected "even" or "colab".'
    )
  num_tiles = 1 + math.ceil((size - tile) / stride)
  if num_tiles == 1:
    return [0]
  # Spacing (size - tile) / (num_tiles - 1) <= stride, and rounding keeps every
  # gap <= ceil(spacing) <= stride because stride is an integer.
  return [
    int(round(i * (size - tile) / (num_tiles - 1))) for i in range(num_tiles)
  ]


def tile_origins(
  image_size: Tuple[int, int],
  tile_size: Tuple[int, int] = TRAIN_SIZE,
  min_overlap: int = 20,
  layout: str = 'even',
) -> List[Tuple[int, int]]:
  """(y, x) origins of all tiles, row-major."""
  ys = tile_origins_1d(image_size[0], tile_size[0], min_overlap, layout)
  xs = tile_origins_1d(image_size[1], tile_size[1], min_overlap, layout)
  return list(itertools.product(ys, xs))


def tile_weights(tile_size: Tuple[int, int]) -> np.ndarray:
  """float32 [th, tw] blending weights: 1 + distance to the nearest tile border."""
  th, tw = tile_size
  wy = np.minimum(np.arange(th) + 1, th - np.arange(th))
  wx = np.minimum(np.arange(tw) + 1, tw - np.arange(tw))
  return np.minimum(wy[:, None], wx[None, :]).astype(np.float32)


def tiled_flow(
  predict_fn: PredictFn,
  frame1: np.ndarray,
  frame2: np.ndarray,
  tile_size: Sequence[int] = TRAIN_SIZE,
  min_overlap: int = 20,
  batch_size: int = 6,
  layout: str = 'even',
  pad_small: bool = False,
  pad_last_batch: bool = True,
) -> np.ndarray:
  """Predicts flow for a frame pair of any size >= tile_size by tiling.

  Args:
    predict_fn: maps float32 frames [N, 2, th, tw, C] to flow [N, th, tw, 2].
    frame1: [H, W, C] first frame (any numeric dtype; passed through as float32).
    frame2: [H, W, C] second frame, same shape.
    tile_size: (th, tw), the model's input size.
    min_overlap: minimum overlap between neighbouring tiles, in pixels.
    batch_size: tiles per predict_fn call.
    layout: 'even' or 'colab' tile origins (module docstring).
    pad_small: if the frames are smaller than a tile along an axis, pad them
      at the bottom/right by edge replication up to the tile size and crop the
      prediction back (the model then sees replicated border pixels); if
      False such frames are rejected.
    pad_last_batch: repeat the last tile so every predict_fn call gets exactly
      batch_size tiles (keeps a jitted predict_fn from recompiling); the extra
      predictions are discarded.

  Returns:
    float32 [H, W, 2] blended flow.
  """
  frame1 = np.asarray(frame1)
  frame2 = np.asarray(frame2)
  if frame1.ndim != 3 or frame1.shape != frame2.shape:
    raise ValueError(
      f'frames must both be [H, W, C] with the same shape; got {frame1.shape} '
      f'and {frame2.shape}.'
    )
  th, tw = int(tile_size[0]), int(tile_size[1])
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1; got {batch_size}.')
  height, width = frame1.shape[:2]
  frames = np.stack([frame1, frame2]).astype(np.float32)  # [2, H, W, C]
  if height < th or width < tw:
    if not pad_small:
      raise ValueError(
        f'frames are {height}x{width}, smaller than the {th}x{tw} tile; resize '
        'them, use a smaller tile_size, or pass pad_small=True to pad them.'
      )
    pad = ((0, 0), (0, max(0, th - height)), (0, max(0, tw - width)), (0, 0))
    frames = np.pad(frames, pad, mode='edge')
  padded_h, padded_w = frames.shape[1:3]
  origins = tile_origins((padded_h, padded_w), (th, tw), min_overlap, layout)
  weights = tile_weights((th, tw))

  flow_sum = np.zeros((padded_h, padded_w, 2), np.float64)
  weight_sum = np.zeros((padded_h, padded_w), np.float64)
  for start in range(0, len(origins), batch_size):
    batch_origins = origins[start : start + batch_size]
    tiles = [frames[:, y : y + th, x : x + tw] for y, x in batch_origins]
    if pad_last_batch:
      tiles += [tiles[-1]] * (batch_size - len(tiles))
    predictions = np.asarray(predict_fn(np.stack(tiles)))
    if predictions.shape != (len(tiles), th, tw, 2):
      raise ValueError(
        f'predict_fn returned shape {predictions.shape}; expected '
        f'{(len(tiles), th, tw, 2)} for {len(tiles)} tiles of {th}x{tw}.'
      )
    for (y, x), prediction in zip(batch_origins, predictions):
      flow_sum[y : y + th, x : x + tw] += prediction * weights[..., None]
      weight_sum[y : y + th, x : x + tw] += weights
  flow = flow_sum / weight_sum[..., None]
  return flow[:height, :width].astype(np.float32)
