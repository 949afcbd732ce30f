"""Regression on an in-memory text table (GLUE STS-B: a similarity score).

Why a subclass of the classification task: the data is the same kind of
table of texts or sentence pairs, and only the label (a number), the loss
(squared error), the metrics (Pearson and Spearman correlation) and what a
prediction prints (the score) differ.
"""

from typing import Any, Dict, List, Optional, Sequence

import jax.numpy as jnp

from experiments import metrics
from experiments.tasks import classification


class Task(classification.Task):
  """One number per text (or pair), trained with the squared error."""

  label_kind = 'regression'

  def num_outputs(self) -> Optional[int]:
    return 1

  def check_labels(self, train_table, eval_table) -> None:
    del train_table, eval_table  # Any number is a label.

  def check_eval_labels(self, labels, info) -> None:
    del labels, info  # Any number is a label; no classes.

  def loss_fn(self, outputs, batch):
    weight = batch['weight'].astype(jnp.float32)
    pred = outputs.reshape(outputs.shape[0]).astype(jnp.float32)
    loss = jnp.square(pred - batch['label'].astype(jnp.float32))
    return loss * weight, weight

  def eval_outputs(self, outputs, batch):
    loss, weight = self.loss_fn(outputs, batch)
    return {
      'loss': loss,
      'loss_weight': weight,
      'weight': batch['weight'],
      'pred': outputs.reshape(outputs.shape[0]),
      'label': batch['label'],
    }

  def summarize(self, gathered):
    return metrics.summarize(
      gathered,
      metrics.metric_names(self.config.eval_metrics),
      default=('pearson', 'spearman'),
    )

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    info: Optional[Dict[str, Any]] = None,
    pairs: Optional[Sequence[Optional[str]]] = None,
    **unused,
  ) -> List[str]:
    """'<score>\\t<input>' per input (pair models: two texts per input)."""
    if not inputs:
      raise ValueError('give texts as arguments or --input_file=FILE.')
    texts, seconds, shown = classification.split_pairs(
      name, classification.pair_fields(info or {}, self.config), inputs, pairs
    )
    batch = classification.text_batch(texts, self.config, seconds)
    scores = self.predict(model, variables, batch).reshape(-1)
    return [f'{score:.3f}\t{item}' for item, score in zip(shown, scores)]

  def eval_predictions(self, model, variables, count: int) -> List[str]:
    del model, variables, count
    return []
