"""Losses and metrics per task: classification, regression (STS-B), MLM.

Why: the loop is the same for every experiment; what differs is how a batch
becomes a loss and how gathered predictions become the task's official
metric. Each task here is a few pure functions:

* `loss_fn(outputs, batch, label_smoothing) -> (per_example_loss, weight)`,
  jitted inside the train step;
* `eval_outputs(outputs, batch) -> dict of per-example arrays` (jitted);
* `summarize(gathered, metric_names) -> dict of floats` on the host (GLUE
  metrics need every prediction, so they are computed after gathering).

GLUE metrics follow the GLUE benchmark's definitions (accuracy, binary F1 of
the positive class 1, Matthews correlation, Pearson and Spearman).
"""

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


# ----------------------------------------------------------------------------
# Losses (traced inside jit).
# ----------------------------------------------------------------------------


def classification_loss(logits, labels, label_smoothing: float = 0.0):
  """Softmax cross-entropy per example, with label smoothing.

  Args:
    logits: [B, C].
    labels: [B] int class ids.
    label_smoothing: s; targets are (1 - s) * one_hot + s / C.

  Returns:
    [B] float32 losses.
  """
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def regression_loss(outputs, targets):
  """Squared error per example; `outputs` [B, 1] or [B]."""
  pred = outputs.reshape(outputs.shape[0]).astype(jnp.float32)
  return jnp.square(pred - targets.astype(jnp.float32))


def mlm_loss(logits, targets, target_weights):
  """Cross-entropy summed over masked positions, per example.

  Returns:
    ([B] loss sums, [B] number of masked positions).
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets)
  weights = target_weights.astype(jnp.float32)
  return jnp.sum(losses * weights, axis=-1), jnp.sum(weights, axis=-1)


def loss_fn(task: str, outputs, batch, label_smoothing: float = 0.0):
  """(per-example loss sum [B], per-example weight [B]) for `task`.

  The batch loss is sum(loss) / sum(weight); padded examples have weight 0.
  """
  weight = batch['weight'].astype(jnp.float32)
  if task == 'classification':
    return (classification_loss(outputs, batch['label'], label_smoothing)
            * weight, weight)
  if task == 'regression':
    return regression_loss(outputs, batch['label']) * weight, weight
  if task == 'mlm':
    total, count = mlm_loss(outputs, batch['targets'], batch['target_weights'])
    return total * weight, count * weight
  raise ValueError(f'unknown task {task!r}; valid: classification, '
                   'regression, mlm.')


def eval_outputs(task: str, outputs, batch) -> Dict[str, jax.Array]:
  """Per-example quantities to gather on the host for `summarize`."""
  loss, weight = loss_fn(task, outputs, batch)
  out = {'loss': loss, 'loss_weight': weight, 'weight': batch['weight']}
  if task == 'classification':
    probs = jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)
    out.update(pred=jnp.argmax(outputs, axis=-1), label=batch['label'],
               prob=jnp.max(probs, axis=-1))
  elif task == 'regression':
    out.update(pred=outputs.reshape(outputs.shape[0]), label=batch['label'])
  elif task == 'mlm':
    correct = (jnp.argmax(outputs, -1) == batch['targets'])
    out.update(correct=jnp.sum(correct * batch['target_weights'], axis=-1))
  return out


# ----------------------------------------------------------------------------
# Metrics (host, NumPy). Independent of sklearn/scipy on purpose; tests check
# them against sklearn and scipy.
# ----------------------------------------------------------------------------


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


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = np.asarray(x)[order]
  ranks = np.empty(len(x), np.float64)
  start = 0
  while start < len(x):
    end = start
    while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
      end += 1
    ranks[order[start:end + 1]] = 0.5 * (start + end) + 1
    start = end + 1
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  return pearson(_average_ranks(x), _average_ranks(y))


_METRIC_FNS = {'accuracy': accuracy, 'f1': f1_binary,
               'matthews_corr': matthews_corr, 'pearson': pearson,
               'spearman': spearman}


def summarize(task: str, gathered: Dict[str, np.ndarray],
              metric_names: Sequence[str] = ()) -> Dict[str, float]:
  """Metrics of a whole evaluation from gathered per-example outputs.

  Args:
    task: 'classification' | 'regression' | 'mlm'.
    gathered: `eval_outputs` arrays concatenated over batches.
    metric_names: extra metrics (from GLUE_METRICS) to compute.

  Returns:
    {'loss': ..., 'num_examples': ..., <metric>: ...}; for GLUE-style
    metric lists also 'score' (their mean, the task's GLUE score).
  """
  keep = gathered['weight'] > 0
  loss_weight = float(np.sum(gathered['loss_weight'][keep]))
  metrics = {'loss': float(np.sum(gathered['loss'][keep]) /
                           max(loss_weight, 1e-9)),
             'num_examples': int(np.sum(keep))}
  if task == 'mlm':
    metrics['masked_accuracy'] = float(
        np.sum(gathered['correct'][keep]) / max(loss_weight, 1e-9))
    metrics['perplexity'] = float(np.exp(min(metrics['loss'], 50.0)))
    return metrics
  pred, label = gathered['pred'][keep], gathered['label'][keep]
  names = list(metric_names) or (
      ['accuracy'] if task == 'classification' else ['pearson', 'spearman'])
  for name in names:
    if name not in _METRIC_FNS:
      raise ValueError(f'unknown metric {name!r}; valid: {sorted(_METRIC_FNS)}.')
    metrics[name] = _METRIC_FNS[name](pred, label)
  if metric_names:
    metrics['score'] = float(np.mean([metrics[n] for n in names]))
  return metrics
