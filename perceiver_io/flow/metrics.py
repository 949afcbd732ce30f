"""Optical-flow evaluation metrics: EPE, KITTI Fl-all and n-pixel accuracies.

Why: Perceiver IO reports average end-point error (EPE) on Sintel and KITTI,
and KITTI's own leaderboard reports Fl-all, the share of outlier pixels. The
definitions differ in small but result-changing ways (which pixels count, how
images are pooled), so they are fixed here once:

* EPE(x) = ||pred(x) - gt(x)||_2, averaged over valid pixels.
* Fl-all: percentage of valid pixels whose EPE is > 3 px AND > 5 % of the
  ground-truth magnitude ||gt(x)|| (the KITTI 2015 outlier definition).
* acc_1px / acc_3px / acc_5px: fraction (0..1) of valid pixels with EPE < 1 /
  3 / 5 px (as RAFT reports "1px", "3px", "5px").

`flow_metric_sums` returns sums and a pixel count so an evaluator can pool
pixels over a whole data set (the Sintel convention, and KITTI's for Fl-all);
`flow_metrics` divides them. Inputs may have any leading batch dimensions.
"""

from typing import Dict, Optional

import numpy as np

_SUM_KEYS = ('epe', 'fl_all', 'acc_1px', 'acc_3px', 'acc_5px')


def endpoint_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Per-pixel end-point error ||pred - gt||_2 over the last axis (u, v)."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.shape != gt.shape or pred.shape[-1:] != (2,):
    raise ValueError(
      f'pred and gt must have the same shape [..., H, W, 2]; got {pred.shape} '
      f'and {gt.shape}.'
    )
  return np.sqrt(np.sum((pred - gt) ** 2, axis=-1))


def flow_metric_sums(
  pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None
) -> Dict[str, float]:
  """Sums of the per-pixel metrics over valid pixels, plus 'count'.

  Args:
    pred: [..., H, W, 2] predicted flow.
    gt: [..., H, W, 2] ground-truth flow.
    valid: optional [..., H, W] mask (non-zero = evaluated); default all.

  Returns:
    dict with 'epe', 'fl_all' (outlier count), 'acc_1px', 'acc_3px',
    'acc_5px' (counts) and 'count' (number of valid pixels).
  """
  epe = endpoint_error(pred, gt)
  if valid is None:
    mask = np.ones(epe.shape, bool)
  else:
    valid = np.asarray(valid)
    if valid.shape != epe.shape:
      raise ValueError(
        f'valid must have shape {epe.shape} (the flow without its last axis); '
        f'got {valid.shape}.'
      )
    mask = valid != 0
  gt_magnitude = np.sqrt(np.sum(np.asarray(gt, np.float64) ** 2, axis=-1))
  e = epe[mask]
  outlier = (e > 3.0) & (e > 0.05 * gt_magnitude[mask])
  return {
    'epe': float(e.sum()),
    'fl_all': float(outlier.sum()),
    'acc_1px': float((e < 1.0).sum()),
    'acc_3px': float((e < 3.0).sum()),
    'acc_5px': float((e < 5.0).sum()),
    'count': float(mask.sum()),
  }


def metrics_from_sums(sums: Dict[str, float]) -> Dict[str, float]:
  """Turns (possibly accumulated) sums into metrics: EPE in px, fl_all in %, acc_* in 0..1."""
  count = sums['count']
  if count <= 0:
    raise ValueError(
      'no valid pixels: metrics are undefined (check the valid masks).'
    )
  out = {key: sums[key] / count for key in _SUM_KEYS}
  out['fl_all'] *= 100.0
  out['count'] = count
  return out


def flow_metrics(
  pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None
) -> Dict[str, float]:
  """EPE, Fl-all (%), acc_1px/3px/5px (fractions) pooled over all valid pixels given."""
  return metrics_from_sums(flow_metric_sums(pred, gt, valid))


def add_sums(a: Dict[str, float], b: Dict[str, float]) -> Dict[str, float]:
  """Adds two dicts of sums (for accumulating over a data set)."""
  return {key: a.get(key, 0.0) + b.get(key, 0.0) for key in set(a) | set(b)}
