"""The GLUE task table: TFDS names, text fields, classes, splits and metrics.

Why a table: the runner, the predict script and the TFDS source all need to
know, per task, which features hold the text(s), the class names in TFDS label
order (to read the original TSVs with string labels), which splits are
labelled and which metric is the headline. Keeping it in one place keeps them
in agreement.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """How to read and score one GLUE task.

  Attributes:
    tfds_name: TFDS name (``glue/<config>``).
    text_fields: TFDS feature names of the text(s), one or a pair.
    num_classes: number of classes, or None for regression (STS-B).
    classes: class names in TFDS label order (None for regression); pass them
      as `classes` when reading the original GLUE TSVs with string labels.
    train_split: the training split, or None (AX is test only).
    eval_splits: labelled splits to report (dev sets).
    test_splits: unlabelled splits (labels are -1).
    metrics: the official metric names, the first one being the headline.
  """

  tfds_name: str
  text_fields: tuple[str, ...]
  num_classes: int | None
  classes: tuple[str, ...] | None
  train_split: str | None
  eval_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  metrics: tuple[str, ...]

  @property
  def is_regression(self) -> bool:
    return self.num_classes is None


def _glue(
  config,
  fields,
  classes,
  metrics,
  eval_splits=('validation',),
  test_splits=('test',),
  train_split='train',
):
  return GlueTask(
    f'glue/{config}',
    fields,
    None if classes is None else len(classes),
    classes,
    train_split,
    eval_splits,
    test_splits,
    metrics,
  )


GLUE_TASKS: dict[str, GlueTask] = {
  'cola': _glue(
    'cola',
    ('sentence',),
    ('unacceptable', 'acceptable'),
    ('matthews_corrcoef',),
  ),
  'sst2': _glue('sst2', ('sentence',), ('negative', 'positive'), ('accuracy',)),
  'mrpc': _glue(
    'mrpc',
    ('sentence1', 'sentence2'),
    ('not_equivalent', 'equivalent'),
    ('f1', 'accuracy'),
  ),
  'qqp': _glue(
    'qqp',
    ('question1', 'question2'),
    ('not_duplicate', 'duplicate'),
    ('f1', 'accuracy'),
  ),
  'stsb': _glue(
    'stsb', ('sentence1', 'sentence2'), None, ('pearson', 'spearman')
  ),
  'mnli': _glue(
    'mnli',
    ('premise', 'hypothesis'),
    ('entailment', 'neutral', 'contradiction'),
    ('accuracy',),
    eval_splits=('validation_matched', 'validation_mismatched'),
    test_splits=('test_matched', 'test_mismatched'),
  ),
  'qnli': _glue(
    'qnli',
    ('question', 'sentence'),
    ('entailment', 'not_entailment'),
    ('accuracy',),
  ),
  'rte': _glue(
    'rte',
    ('sentence1', 'sentence2'),
    ('entailment', 'not_entailment'),
    ('accuracy',),
  ),
  'wnli': _glue(
    'wnli',
    ('sentence1', 'sentence2'),
    ('not_entailment', 'entailment'),
    ('accuracy',),
  ),
  # The diagnostic set: test only, scored with Matthews correlation (R3).
  'ax': _glue(
    'ax',
    ('premise', 'hypothesis'),
    ('entailment', 'neutral', 'contradiction'),
    ('matthews_corrcoef',),
    eval_splits=(),
    train_split=None,
  ),
}
