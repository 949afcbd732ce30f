"""Full-frame optical flow: model-sized tiles over whole frames.

Why apart from the task: training and the generated evaluation run at the
model's size, but benchmark frames (Sintel 436x1024, KITTI ~375x1242) and
the frames given to `predict` do not. They go through overlapping
model-sized tiles with distance-weighted blending (official: 368x496, min
overlap 20, weights = 1 + distance to the tile border), read from benchmark
folders (`listings`) or image files (`read_frame`, `read_ground_truth`) the
same way. EPE is pooled over all valid pixels (Sintel convention);
`epe_per_image` is the mean of per-image EPEs (RAFT's KITTI convention);
Fl-all is the % of valid pixels with error > 3 px and > 5 % of |gt|.

Not a task (experiments/tasks/__init__.py says so): `optical_flow.Task`
inherits `FullFrameFlow`.
"""

import logging
import os
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image

from experiments import input_pipeline
from experiments import progress as eval_progress
from perceiver_io.flow import formats as flow_formats
from perceiver_io.flow import layouts as flow_layouts
from perceiver_io.flow import metrics as flow_metrics
from perceiver_io.flow import tiling

_GRAYSCALE_MODES = ('L', '1', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F')
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'PA', 'La')


def normalize_frames(frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
  """Two uint8 [H, W, 3] frames -> float32 [2, H, W, 3] in [-1, 1]."""
  return np.stack([frame1, frame2]).astype(np.float32) / 127.5 - 1.0


def check_tile_overlap(overlap: int, tile_size: Tuple[int, int]) -> int:
  """`overlap` if tiles of `tile_size` (height, width) can overlap by it.

  Why a function of its own: the overlap is a config field but the tile is
  the model's size, so a config can pair a small model with the official
  overlap (20 px for 368x496 tiles); that must fail when a run starts, not
  when tiled evaluation or predict first meets it.

  Raises:
    ValueError: the overlap is negative or not smaller than the tile.
  """
  overlap = int(overlap)
  height, width = tile_size
  if not 0 <= overlap < min(tile_size):
    raise ValueError(
      f'config.eval_tile_overlap={overlap} must be in [0, {min(tile_size)}) '
      f"for this model's {width}x{height} (WxH) tiles (official: 20 for "
      '496x368; the cpu and tiny configs use 4); set '
      '--config.eval_tile_overlap=<value> (with --workdir, together with '
      "--config=<the run's config file>)."
    )
  return overlap


class FullFrameFlow:
  """Tiled flow of whole frames, for a task with `config`, `train_size`
  (the model's frame size, the tile) and `flow_scale` (output -> pixels)."""

  def listings(self, kind: str, root: str):
    """(name, [FlowPairFiles]) groups to report separately."""
    if kind == 'sintel':
      groups = [
        (f'sintel_{p}', flow_layouts.list_sintel(root, passes=p))
        for p in ('clean', 'final')
        if os.path.isdir(os.path.join(root, 'training', p))
        or os.path.isdir(os.path.join(root, p))
      ]
      # No pass folder: let the lister raise its layout message.
      return groups or [('sintel', flow_layouts.list_sintel(root))]
    if kind in ('sintel_clean', 'sintel_final'):
      return [(kind, flow_layouts.list_sintel(root, passes=kind.split('_')[1]))]
    if kind == 'kitti':
      return [('kitti', flow_layouts.list_kitti(root))]
    if kind == 'middlebury':
      return [('middlebury', flow_layouts.list_middlebury(root))]
    return [('chairs', flow_layouts.list_flying_chairs(root))]

  def make_predict_fn(self, model, variables):
    """float32 tiles [N, 2, th, tw, 3] in [-1, 1] -> flow in pixels."""
    apply = jax.jit(lambda v, x: model.apply(v, x, deterministic=True))

    def predict(tiles):
      return (
        np.asarray(apply(variables, jnp.asarray(tiles)), np.float32)
        * self.flow_scale
      )

    return predict

  def full_frame_flow(
    self, predict_fn, frame1, frame2, pad_small: bool = False
  ) -> np.ndarray:
    """Flow of a whole frame pair by tiling at the model size."""
    d = self.config
    overlap = check_tile_overlap(d.eval_tile_overlap, self.train_size)
    frames = normalize_frames(frame1, frame2)
    return tiling.tiled_flow(
      predict_fn,
      frames[0],
      frames[1],
      tile_size=self.train_size,
      min_overlap=overlap,
      batch_size=int(d.eval_tile_batch),
      pad_small=pad_small,
    )

  def evaluate_directory(
    self, model, variables, kind: str, root: str
  ) -> Dict[str, float]:
    """Tiled full-frame EPE / Fl-all over a benchmark folder.

    Each process reads and evaluates every n-th pair of the (subset of
    the) listing, then the processes add their metric sums, so every pair
    is evaluated once and every process returns the same metrics.
    """
    index, count = jax.process_index(), jax.process_count()
    predict_fn = self.make_predict_fn(model, variables)
    limit = int(self.config.max_eval_examples)
    pad_small = bool(self.config.data.pad_small)
    metrics = {}
    groups = [
      (
        name,
        [listing[i] for i in input_pipeline.eval_rows(len(listing), limit)],
      )
      for name, listing in self.listings(kind, root)
    ]
    totals = [len(listing) for _, listing in groups]
    groups = [(name, listing[index::count]) for name, listing in groups]
    progress = eval_progress.EvalProgress(
      self.config,
      sum(len(listing) for _, listing in groups),
      'pair',
      desc=f'eval {kind}',
    )
    with progress:
      for name, listing in groups:
        sums, per_image = {}, []
        for files in listing:
          sample = flow_layouts.load_pair(files)
          self._check_tile_fits(
            sample['frame1'].shape,
            files.frame1,
            pad_small,
            '--config.data.pad_small=True',
          )
          flow = self.full_frame_flow(
            predict_fn, sample['frame1'], sample['frame2'], pad_small
          )
          one = flow_metrics.flow_metric_sums(
            flow, sample['flow'], sample['valid']
          )
          sums = flow_metrics.add_sums(sums, one)
          if one['count'] > 0:
            per_image.append(one['epe'] / one['count'])
          progress.update(1)
        sums, per_image = sum_over_processes(sums, per_image)
        pooled = flow_metrics.metrics_from_sums(sums)
        prefix = f'{name}_' if kind == 'sintel' else ''
        metrics.update(
          {
            f'{prefix}epe': pooled['epe'],
            f'{prefix}epe_per_image': per_image,
            f'{prefix}fl_all': pooled['fl_all'],
            f'{prefix}acc_1px': pooled['acc_1px'],
          }
        )
    metrics['num_examples'] = sum(totals)
    return metrics

  def _check_tile_fits(self, shape, path, pad_small, how):
    th, tw = self.train_size
    if (shape[0] < th or shape[1] < tw) and not pad_small:
      raise ValueError(
        f"{path} is {shape[1]}x{shape[0]} (WxH), smaller than the model's "
        f'{tw}x{th} tile. Resize the frames to at least {tw}x{th}, or pass '
        f'{how} to pad them by edge replication (the padded border is '
        'invented content; its flow is cropped away).'
      )

  @staticmethod
  def read_frame(path: str) -> np.ndarray:
    """An RGB frame as uint8 [H, W, 3], read exactly as evaluation reads it.

    Prediction and `evaluate` share `formats.read_image`'s policy: grayscale
    (e.g. KITTI 2012 `image_0`) is replicated to 3 channels, alpha is dropped,
    palette images are converted; 16/32-bit images and unreadable or
    truncated files are one ValueError naming the file.
    """
    if not os.path.isfile(path):
      raise FileNotFoundError(f'frame not found: {path}')
    frame = flow_formats.read_image(path)
    with Image.open(path) as image:
      mode = image.mode
    if mode in _GRAYSCALE_MODES:
      logging.info(
        '%s is grayscale (mode %s): replicated to 3 channels, as '
        'evaluation does.',
        path,
        mode,
      )
    elif mode in _ALPHA_MODES:
      logging.info(
        '%s has an alpha channel (mode %s): dropped, as evaluation does.',
        path,
        mode,
      )
    return frame

  @staticmethod
  def read_ground_truth(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(flow [H, W, 2], valid [H, W]) from a .flo or a KITTI 16-bit PNG."""
    lower = path.lower()
    if lower.endswith('.flo'):
      flow = flow_formats.read_flo(path)
      valid = flow_formats.known_flow_mask(flow)
      return np.where(valid[..., None] > 0, flow, 0.0), valid
    if lower.endswith('.png'):
      return flow_formats.read_kitti_flow(path)
    raise ValueError(
      f'--ground_truth {path!r}: expected a Middlebury .flo '
      'file or a KITTI 16-bit flow .png.'
    )


def sum_over_processes(sums: Dict[str, float], per_image: List[float]):
  """(metric sums added over the processes, mean per-image EPE over all
  processes' images)."""
  zero = np.zeros((1, 1, 2), np.float32)
  keys = sorted(flow_metrics.flow_metric_sums(zero, zero))
  sums = {k: sums.get(k, 0.0) for k in keys}
  local = np.asarray(
    [sums[k] for k in keys] + [sum(per_image), len(per_image)], np.float64
  )
  if jax.process_count() > 1:
    local = np.sum(multihost_utils.process_allgather(local), axis=0)
  total = {k: float(v) for k, v in zip(keys, local)}
  return total, float(local[-2] / max(local[-1], 1.0))
