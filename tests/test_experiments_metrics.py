"""Losses and evaluation metrics: label-smoothed cross-entropy and the MLM
loss against NumPy, GLUE metrics against scikit-learn / SciPy, padding left
out of summaries, and the GLUE summary over a folder of runs.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn import metrics as sk_metrics

from experiments import eval_lib
from experiments import metrics
from experiments.tasks import classification
from experiments.tasks import mlm
from tests.helpers import fake_glue_run

# ------------------------------------------------------------ losses, metrics --


def test_label_smoothed_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 2, 3])
  s = 0.1
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  targets = np.full((5, 4), s / 4)
  targets[np.arange(5), labels] += 1 - s
  expected = -(targets * log_probs).sum(-1)
  got = classification.classification_loss(
    jnp.asarray(logits), jnp.asarray(labels), s
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mlm_loss_counts_only_masked_positions():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  targets = np.array([[1, 2, 3], [4, 0, 1]])
  weights = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  total, count = mlm.mlm_loss(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)
  )
  np.testing.assert_allclose(total, (nll * weights).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(count, [2, 1])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_glue_metrics_match_sklearn_and_scipy(seed):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 2, 50)
  pred = np.where(rng.random(50) < 0.7, label, 1 - label)
  assert metrics.accuracy(pred, label) == pytest.approx(
    sk_metrics.accuracy_score(label, pred)
  )
  assert metrics.f1_binary(pred, label) == pytest.approx(
    sk_metrics.f1_score(label, pred)
  )
  assert metrics.matthews_corr(pred, label) == pytest.approx(
    sk_metrics.matthews_corrcoef(label, pred)
  )
  label3, pred3 = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
  assert metrics.matthews_corr(pred3, label3) == pytest.approx(
    sk_metrics.matthews_corrcoef(label3, pred3)
  )
  x = np.round(rng.normal(size=40), 1)  # Rounded: ties for Spearman.
  y = x + rng.normal(size=40)
  assert metrics.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0])
  assert metrics.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0])


def test_summarize_ignores_padding_and_reports_glue_score():
  gathered = {
    'loss': np.array([1.0, 3.0, 100.0]),
    'loss_weight': np.array([1.0, 1.0, 0.0]),
    'weight': np.array([1.0, 1.0, 0.0]),
    'pred': np.array([1, 0, 1]),
    'label': np.array([1, 1, 0]),
    'prob': np.array([0.9, 0.8, 0.7]),
  }
  m = metrics.summarize(gathered, ('f1', 'accuracy'))
  assert m['num_examples'] == 2 and m['loss'] == pytest.approx(2.0)
  assert m['accuracy'] == pytest.approx(0.5)
  assert m['f1'] == pytest.approx(2 / 3)
  assert m['score'] == pytest.approx((0.5 + 2 / 3) / 2)


# ------------------------------------------------------------- glue summary --


def test_glue_summary_averages_task_scores_without_wnli(tmp_path):
  root = str(tmp_path)
  fake_glue_run(
    root,
    'cola',
    [
      {'step': 10, 'train_loss': 1.0},
      {'step': 10, 'eval_score': 0.2, 'eval_matthews_corr': 0.2},
      {'step': 20, 'eval_score': 0.5, 'eval_matthews_corr': 0.5},
    ],
  )
  fake_glue_run(
    root,
    'mnli',
    [
      {'step': 5, 'eval_score': 0.8, 'eval_accuracy': 0.8},
      {
        'step': 5,
        'split': 'validation_mismatched',
        'eval_score': 0.7,
        'eval_accuracy': 0.7,
      },
    ],
    eval_split='validation_matched',
  )
  fake_glue_run(root, 'wnli', [{'step': 1, 'eval_score': 0.1}])
  summary = eval_lib.glue_summary(root)
  assert summary['scores']['cola'] == pytest.approx(50.0)
  assert summary['scores']['mnli'] == pytest.approx(75.0)
  assert summary['average'] == pytest.approx((50.0 + 75.0) / 2)
  assert 'rte' in summary['missing'] and 'wnli' not in summary['missing']
  table = eval_lib.format_table(summary['rows'], ['task', 'split', 'score'])
  assert '| cola | validation | 50.0000 |' in table
