"""Evaluation metrics on the host: GLUE's metrics and the weighted loss.

Why NumPy and not scikit-learn / SciPy: they run on every evaluation of
every run and are a few lines each; tests check them against scikit-learn
and SciPy. GLUE metrics follow the GLUE benchmark's definitions (accuracy,
binary F1 of the positive class 1, Matthews correlation, Pearson and
Spearman) and need every prediction, so tasks gather per-example outputs
(`Task.eval_outputs`) and summarise them here.
"""

from typing import Dict, Sequence

import numpy as np

# Official metric(s) of each GLUE task; the task score is their mean.
GLUE_METRICS = {
  'cola': ('matthews_corr',),
  'sst2': ('accuracy',),
  'mrpc': ('f1', 'accuracy'),
  'qqp': ('f1', 'accuracy'),
  'stsb': ('pearson', 'spearman'),
  'mnli': ('accuracy',),
  'mnli_matched': ('accuracy',),
  'mnli_mismatched': ('accuracy',),
  'qnli': ('accuracy',),
  'rte': ('accuracy',),
  'wnli': ('accuracy',),
}


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
  return float(np.mean(pred == label)) if len(label) else float('nan')


def f1_binary(pred: np.ndarray, label: np.ndarray) -> float:
  """F1 of the positive class (1), as GLUE reports for MRPC/QQP."""
  tp = float(np.sum((pred == 1) & (label == 1)))
  fp = float(np.sum((pred == 1) & (label != 1)))
  fn = float(np.sum((pred != 1) & (label == 1)))
  denom = 2 * tp + fp + fn
  return 2 * tp / denom if denom else 0.0


def matthews_corr(pred: np.ndarray, label: np.ndarray) -> float:
  """Matthews correlation (binary, or multiclass via the R_K formula)."""
  classes = np.union1d(pred, label)
  conf = np.zeros((len(classes), len(classes)), np.float64)
  index = {c: i for i, c in enumerate(classes)}
  for p, t in zip(pred, label):
    conf[index[t], index[p]] += 1
  t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
  n, correct = conf.sum(), np.trace(conf)
  cov_ytyp = correct * n - np.dot(t_sum, p_sum)
  cov_ypyp = n * n - np.dot(p_sum, p_sum)
  cov_ytyt = n * n - np.dot(t_sum, t_sum)
  denom = np.sqrt(cov_ytyt * cov_ypyp)
  return float(cov_ytyp / denom) if denom else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  x = np.asarray(x, np.float64) - np.mean(x)
  y = np.asarray(y, np.float64) - np.mean(y)
  denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
  return float(np.sum(x * y) / denom) if denom else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = np.asarray(x)[order]
  ranks = np.empty(len(x), np.float64)
  start = 0
  while start < len(x):
    end = start
    while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
      end += 1
    ranks[order[start : end + 1]] = 0.5 * (start + end) + 1
    start = end + 1
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  return pearson(average_ranks(x), average_ranks(y))


METRIC_FNS = {
  'accuracy': accuracy,
  'f1': f1_binary,
  'matthews_corr': matthews_corr,
  'pearson': pearson,
  'spearman': spearman,
}


def metric_names(text: str) -> tuple:
  """'f1,accuracy' (config.eval_metrics) -> ('f1', 'accuracy')."""
  return tuple(n.strip() for n in str(text).split(',') if n.strip())


def loss_summary(gathered: Dict[str, np.ndarray]) -> Dict[str, float]:
  """{'loss', 'num_examples'} of gathered per-example outputs.

  Args:
    gathered: arrays concatenated over eval batches, with 'loss' (per
      example sum), 'loss_weight' (what the loss is divided by) and
      'weight' (0 for padding rows, which are left out).
  """
  keep = gathered['weight'] > 0
  loss_weight = float(np.sum(gathered['loss_weight'][keep]))
  return {
    'loss': float(np.sum(gathered['loss'][keep]) / max(loss_weight, 1e-9)),
    'num_examples': int(np.sum(keep)),
  }


def summarize(
  gathered: Dict[str, np.ndarray],
  names: Sequence[str] = (),
  default: Sequence[str] = ('accuracy',),
) -> Dict[str, float]:
  """Loss and metrics of predictions ('pred') against labels ('label').

  Args:
    gathered: per-example arrays (see `loss_summary`) plus 'pred', 'label'.
    names: metrics to compute (GLUE_METRICS values); with names, 'score'
      (their mean, the task's GLUE score) is reported too.
    default: metrics computed when `names` is empty.

  Returns:
    {'loss': ..., 'num_examples': ..., <metric>: ...[, 'score': ...]}.
  """
  metrics = loss_summary(gathered)
  keep = gathered['weight'] > 0
  pred, label = gathered['pred'][keep], gathered['label'][keep]
  for name in list(names) or list(default):
    if name not in METRIC_FNS:
      raise ValueError(f'unknown metric {name!r}; valid: {sorted(METRIC_FNS)}.')
    metrics[name] = METRIC_FNS[name](pred, label)
  if names:
    metrics['score'] = float(np.mean([metrics[n] for n in names]))
  return metrics
