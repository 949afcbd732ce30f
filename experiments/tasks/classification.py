"""Classification of an in-memory table: texts, text pairs, or small images.

Why a table: every fine-tuning set of this project (IMDB, GLUE, local
CSV/TSV/JSONL files, the quickstart's 8x8 digits) fits in memory, and a
table makes the order of training examples a pure function of the step
(`input_pipeline.train_batch`), so resumed runs are bit-identical. Texts
are byte ids with an attention mask; GLUE's sentence pairs are
`[CLS] first [SEP] second [SEP]`. Metrics: accuracy, or the GLUE task's
official ones (`config.eval_metrics`, with their mean as 'score').

Predict takes texts (pair models: two per input, refusing single ones), or
image files and `--digits=a:b` test digits for the quickstart.
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from experiments import host_data
from experiments import input_pipeline
from experiments import metrics
from experiments.tasks import base
from perceiver_io import tokenizer as tokenizer_lib
from perceiver_io.data import image as image_data
from perceiver_io.data import text as text_data

DIGITS = 'digits'


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


def check_labels(
  config, train_table, eval_table, num_classes: Optional[int] = None
) -> None:
  """Labels must lie in [0, num_classes) (default: config.data.num_classes).

  `num_classes` is the model's when it is known: a trained model's head
  cannot take more classes whatever the config says.
  """
  k = int(config.data.num_classes if num_classes is None else num_classes)
  tables = [('train', train_table), ('eval', eval_table)]
  for name, table in tables if train_table is not None else tables[1:]:
    labels = table['label']
    bad = np.nonzero((labels < 0) | (labels >= k))[0]
    if len(bad):
      raise ValueError(
        f'{name} row {int(bad[0]) + 1} (1 = the first data row) has label '
        f"{int(labels[bad[0]])}, outside 0..{k - 1} of the model's {k} "
        f'classes (config.data.num_classes={config.data.num_classes}); '
        'train with --config.data.num_classes set to the number of classes '
        'of the data, or fix the data.'
      )


class Task(base.Task):
  """Labels of texts (or pairs) or of the quickstart's digit images."""

  # How perceiver_io.data.text reads the label column.
  label_kind = 'classification'

  def predict_example(self, info: Dict[str, Any]) -> str:
    if self.config.data.source == 'digits':
      return '--digits=0:5'
    if len(info.get('text_fields') or []) == 2:
      return "'A first sentence.' --pair='A second sentence.'"
    return self.predict_args

  def __init__(self, config):
    super().__init__(config)
    self.is_image = config.data.source == DIGITS
    self._tables = {}
    self._eval_checked = False

  def use_model(self, model_config: Dict[str, Any]) -> None:
    super().use_model(model_config)
    decoder = model_config['decoder'].get('type')
    if decoder != 'classification':
      raise ValueError(
        f'task {self.config.task!r} needs a preset with a '
        f'classification decoder; {self.config.model.preset!r} '
        f'has {decoder!r}.'
      )
    # The model's class count (its head), the one the labels must fit; a
    # tanh head's decoder emits hidden features, its classes are the data's.
    self.num_classes = (
      int(self.config.data.num_classes)
      if self.config.model.get('head') == 'tanh_mlp'
      else int(model_config['decoder']['num_classes'])
    )
    pre = model_config['preprocessor']
    length = int(self.config.data.max_length)
    if pre.get('type') == 'text' and length > int(pre['max_seq_len']):
      raise ValueError(
        f"config.data.max_length={length} exceeds the model's "
        f'max_seq_len={pre["max_seq_len"]}; lower '
        'config.data.max_length.'
      )

  # ------------------------------------------------------------------ data --

  def table(
    self, split: str, train: bool = False
  ) -> Tuple[input_pipeline.Table, Dict[str, Any]]:
    """(this process's rows of `split`, info), read once: its shards for
    training, its block for evaluation (`experiments.host_data`)."""
    if (split, train) not in self._tables:
      self._tables[split, train] = host_data.load_process_table(
        self.config, split, self.label_kind, train
      )
    return self._tables[split, train]

  def check_labels(self, train_table, eval_table) -> None:
    check_labels(self.config, train_table, eval_table, self.num_classes)

  def check_eval_labels(self, labels: np.ndarray, info) -> None:
    """The evaluated labels fit the model; warns if they are one class."""
    if self._eval_checked:
      return
    self._eval_checked = True
    self.check_labels(None, {'label': labels})
    input_pipeline.warn_if_single_class(
      labels,
      list(info.get('label_names') or []),
      f'{self.config.data.source} [{self.config.data.eval_split}]',
    )

  def data_info(self):
    input_pipeline.check_eval_is_not_train(self.config)
    train_table, train_info = self.table(self.config.data.train_split, True)
    eval_table, eval_info = self.table(self.config.data.eval_split)
    self.check_labels(train_table, eval_table)
    return train_info, eval_info

  def example_batch(self) -> Dict[str, np.ndarray]:
    if self.is_image:
      size = int(self.config.data.image_size)
      return {'image': np.zeros((1, size, size, 1), np.float32)}
    length = int(self.config.data.max_length)
    return {
      'input_ids': np.zeros((1, length), np.int32),
      'attention_mask': np.ones((1, length), np.int32),
    }

  def train_stream(self, start_step: int):
    del start_step  # Any step, in any order.
    table, info = self.table(self.config.data.train_split, True)
    return host_data.ShardedTableStream(
      table,
      info['bounds'],
      int(self.config.batch_size),
      int(self.config.seed),
      jax.process_index(),
      jax.process_count(),
    )

  def eval_data(self):
    table, info = self.table(self.config.data.eval_split)
    limit = int(self.config.max_eval_examples)
    plan, expected = host_data.eval_plan(info['process_sizes'], limit)
    self.check_eval_labels(table['label'][plan[jax.process_index()]], info)
    batches = host_data.sharded_eval_batches(
      table,
      info['process_sizes'],
      int(self.config.eval_batch_size),
      jax.process_index(),
      limit,
    )
    return batches, expected

  # ----------------------------------------------------- traced functions --

  def loss_fn(self, outputs, batch):
    return self._loss(outputs, batch, float(self.config.label_smoothing))

  def _loss(self, outputs, batch, label_smoothing: float = 0.0):
    weight = batch['weight'].astype(jnp.float32)
    loss = classification_loss(outputs, batch['label'], label_smoothing)
    return loss * weight, weight

  def eval_outputs(self, outputs, batch):
    loss, weight = self._loss(outputs, batch)  # Unsmoothed.
    probs = jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)
    return {
      'loss': loss,
      'loss_weight': weight,
      'weight': batch['weight'],
      'pred': jnp.argmax(outputs, axis=-1),
      'label': batch['label'],
      'prob': jnp.max(probs, axis=-1),
    }

  # ------------------------------------------------------------------ host --

  def summarize(self, gathered):
    return metrics.summarize(
      gathered, metrics.metric_names(self.config.eval_metrics)
    )

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    info: Optional[Dict[str, Any]] = None,
    top_k: int = 0,
    digits: str = '',
    pairs: Optional[Sequence[Optional[str]]] = None,
    **unused,
  ) -> List[str]:
    """Top-k labels with probabilities, one line per input.

    Args:
      model: the flax module.
      variables: its variables.
      inputs: texts (pair models: FIRST<TAB>SECOND or with `pairs`), or
        image files for a digits model.
      name: the workdir or checkpoint (for messages).
      info: the run's 'label_names' and 'text_fields'.
      top_k: labels per input (0 = 1).
      digits: digits models: 'a:b' predicts test digits a..b-1.
      pairs: pair models: the second text of each input (None entries: that
        input holds both).
    """
    info = info or {}
    names = list(info.get('label_names') or [])
    truth = None
    if self.is_image:
      base.refuse_pairs(pairs, name)
      if digits:
        batch, truth, first = digits_range(digits, self.config)
        shown = [f'test digit {i}' for i in range(first, first + len(truth))]
      else:
        if not inputs:
          raise ValueError('give image files (or --digits=a:b) to predict.')
        batch, shown = image_batch(inputs, self.config), list(inputs)
    else:
      if not inputs:
        raise ValueError('give texts as arguments or --input_file=FILE.')
      texts, seconds, shown = split_pairs(
        name, pair_fields(info, self.config), inputs, pairs
      )
      batch = text_batch(texts, self.config, seconds)
    lines = []
    results = classify(
      self.predict(model, variables, batch), names, max(top_k, 1)
    )
    for i, (item, result) in enumerate(zip(shown, results)):
      labels = ', '.join(f'{label} (p={prob:.3f})' for label, prob in result)
      item = item if len(item) <= 80 else item[:77] + '...'
      extra = f'  [true: {names[int(truth[i])]}]' if truth is not None else ''
      if truth is not None:
        lines += ['    ' + row for row in render_digit(batch['image'][i])]
      lines.append(f'{labels}\t{item}{extra}')
    return lines

  def eval_predictions(self, model, variables, count: int) -> List[str]:
    """The first `count` eval examples: predicted and true labels."""
    table, info = self.table(self.config.data.eval_split)
    count = min(count, len(next(iter(table.values()))))
    batch = {k: v[:count] for k, v in table.items() if k != 'label'}
    names = list(info.get('label_names') or []) or [
      str(i) for i in range(self.num_classes)
    ]
    tokenizer = tokenizer_lib.ByteTokenizer()
    lines = [f'Predictions for the first {count} test examples:']
    results = classify(self.predict(model, variables, batch), names)
    for i, ((label, prob),) in enumerate(results):
      true = names[int(table['label'][i])]
      if 'image' in table:
        lines += ['    ' + row for row in render_digit(table['image'][i])]
      else:
        text = tokenizer.decode(table['input_ids'][i], skip_special_tokens=True)
        lines.append(f'  text: {text[:80]!r}')
      lines.append(
        f'  example {i}: predicted {label} (p={prob:.3f}), true '
        f'{true} [{"correct" if label == true else "WRONG"}]'
      )
    return lines


def classify(
  logits: np.ndarray, names: Sequence[str], top_k: int = 1
) -> List[List[Tuple[str, float]]]:
  """Top-k (label, probability) per example of a batch of logits."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1)[:, :top_k]
  return [
    [(names[j] if j < len(names) else str(j), float(p[j])) for j in row]
    for row, p in zip(order, probs)
  ]


# ----------------------------------------------------------------------------
# Text inputs.
# ----------------------------------------------------------------------------


def text_batch(
  texts: Sequence[str], config, pairs: Optional[Sequence[str]] = None
) -> Dict[str, np.ndarray]:
  table = input_pipeline.tokenize_texts(
    list(texts),
    None if pairs is None else list(pairs),
    int(config.data.max_length),
    'inputs',
  )
  table.pop('num_truncated')
  return table


def pair_fields(info: Dict[str, Any], config) -> Optional[List[str]]:
  """The two text fields of a model trained on sentence pairs, else None.

  From the run's info (the fields training actually read), else from
  config.data.text_fields, else (text_fields '' = the task's own fields) from
  the GLUE task of config.glue_task.
  """
  fields = list(info.get('text_fields') or [])
  if not fields:
    fields = [
      f.strip()
      for f in str(config.data.get('text_fields', '')).split(',')
      if f.strip()
    ]
  if not fields and config.get('glue_task'):
    glue = text_data.GLUE_TASKS.get(config.glue_task)
    fields = list(glue.text_fields) if glue is not None else []
  return [str(f) for f in fields] if len(fields) == 2 else None


PAIR_USAGE = (
  'give each input as its two texts: "FIRST" --pair="SECOND" '
  '(one --pair per text argument, in order), or one argument or '
  '--input_file line FIRST<TAB>SECOND (in bash: '
  "$'FIRST\\tSECOND')"
)


def split_pairs(
  name: str,
  fields: Optional[Sequence[str]],
  inputs: Sequence[str],
  pairs: Optional[Sequence[Optional[str]]] = None,
) -> Tuple[List[str], Optional[List[str]], List[str]]:
  """(first texts, second texts or None, shown names) of the inputs.

  A model trained on pairs (`fields`, see `pair_fields`) gets
  `[CLS] first [SEP] second [SEP]`; fed one text it would silently see
  another input format, so single texts are refused for it (and `--pair`
  for a single-text model). `name` (the workdir) is for the messages.
  """
  for i, text in enumerate(inputs):
    if not text.strip():
      raise ValueError(
        f'input {i + 1} is empty{" (only whitespace)" if text else ""}: '
        f'{name} predicts from a text; give one.'
      )
  pairs = list(pairs) if pairs is not None else [None] * len(inputs)
  if fields is None:
    if any(p is not None for p in pairs):
      raise ValueError(
        f'{name} was trained on single texts, not sentence pairs; drop --pair.'
      )
    return list(inputs), None, list(inputs)
  firsts, seconds = [], []
  for text, second in zip(inputs, pairs):
    if second is None:
      parts = text.split('\t')
      if len(parts) != 2:
        shown = text if len(text) <= 60 else text[:57] + '...'
        raise ValueError(
          f'{name} was trained on sentence pairs ({fields[0]}, '
          f'{fields[1]}) but {shown!r} is '
          + (
            'a single text'
            if len(parts) == 1
            else f'{len(parts)} tab-separated texts'
          )
          + f'; {PAIR_USAGE}.'
        )
      text, second = parts
    if not text.strip() or not second.strip():
      raise ValueError(
        f'{name} was trained on sentence pairs ({fields[0]}, {fields[1]}) '
        f'but the {"first" if not text.strip() else "second"} text of '
        f'{text!r} + {second!r} is empty; {PAIR_USAGE}.'
      )
    firsts.append(text)
    seconds.append(second)
  return firsts, seconds, [f'{a} [SEP] {b}' for a, b in zip(firsts, seconds)]


# ----------------------------------------------------------------------------
# Digit images.
# ----------------------------------------------------------------------------


def digits_image(path: str, size: int = 8) -> np.ndarray:
  """An image file -> [size, size, 1] in [0, 1], dark ink on light paper
  inverted to match scikit-learn's digits (bright ink on black)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'image file {path!r} not found (or not a file).')
  try:
    with Image.open(path) as opened:
      img = opened.convert('L').resize((size, size), Image.BILINEAR)
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises UnidentifiedImageError, OSError or ValueError by format.
    raise ValueError(
      f'{path} is not an image file Pillow can read ({e}); '
      'this digits model takes image files (PNG, JPEG, ...) '
      'or --digits=a:b.'
    ) from e
  x = np.asarray(img, np.float32) / 255.0
  if x.mean() > 0.5:  # Light background: invert.
    x = 1.0 - x
  return x[..., None]


def image_batch(paths: Sequence[str], config) -> Dict[str, np.ndarray]:
  if config.data.source == DIGITS:
    images = [digits_image(p, int(config.data.image_size)) for p in paths]
  else:
    images = [
      image_data.eval_preprocess_numpy(
        image_data.load_image_numpy(p), int(config.data.image_size)
      )
      for p in paths
    ]
  return {'image': np.stack(images).astype(np.float32)}


def render_digit(image: np.ndarray) -> List[str]:
  """8x8 image in [0, 1] -> ASCII art lines."""
  shades = ' .:-=+*#%@'
  img = np.asarray(image)[..., 0]
  return [
    ''.join(
      shades[min(int(v * (len(shades) - 1) + 0.5), len(shades) - 1)] * 2
      for v in row
    )
    for row in img
  ]


def digits_range(
  spec: str, config
) -> Tuple[Dict[str, np.ndarray], np.ndarray, int]:
  """(batch, true labels, first index) of test digits 'a:b'."""
  a, _, b = spec.partition(':')
  try:
    start, stop = int(a or 0), int(b or int(a or 0) + 1)
  except ValueError:
    raise ValueError(f"--digits must look like '0:5', got {spec!r}.") from None
  table, _ = input_pipeline.load_digits_table(config.data.eval_split)
  if not 0 <= start < stop <= len(table['label']):
    raise ValueError(
      f'--digits {spec!r} is outside the {len(table["label"])} test digits.'
    )
  return (
    {'image': table['image'][start:stop]},
    table['label'][start:stop],
    start,
  )
