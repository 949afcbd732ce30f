"""Masked byte language modelling (the paper's MLM pretraining, Table 12).

Why a stream and not a table: a pretraining corpus (C4, or any text files)
does not fit in memory. `perceiver_io.data.text.make_mlm_dataset` joins
documents, crops them to the model's length and masks 15 % of the bytes in
whole words (80 % [MASK], 10 % random, 10 % kept); its `start_step` makes
the stream resume exactly where a checkpoint left it. Runs are sized in
steps (a stream is counted as it is read). Metrics: the loss over masked
bytes, their accuracy and the perplexity. Predict fills every [MASK] byte.
"""

from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import host_data
from experiments import input_pipeline
from experiments import metrics
from experiments.tasks import base
from perceiver_io import tokenizer as tokenizer_lib


def mlm_loss(logits, targets, target_weights):
  """Cross-entropy summed over masked positions, per example.

  Returns:
    ([B] loss sums, [B] number of masked positions).
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), targets
  )
  weights = target_weights.astype(jnp.float32)
  return jnp.sum(losses * weights, axis=-1), jnp.sum(weights, axis=-1)


class Task(base.Task):
  """Predict the masked bytes of a text stream."""

  eval_unit = 'sequence'
  predict_args = (
    "'This is an [MASK][MASK][MASK][MASK][MASK][MASK][MASK] example.'"
  )

  def use_model(self, model_config: Dict[str, Any]) -> None:
    super().use_model(model_config)
    if model_config['preprocessor'].get('type') != 'text':
      return
    length = int(self.config.data.max_length)
    out = int(model_config['decoder']['output_index_dims'][0])
    if length != out:
      raise ValueError(
        f'config.data.max_length={length} must equal the MLM '
        f"decoder's output length {out} (model max_seq_len)."
      )

  # ------------------------------------------------------------------ data --

  def data_info(self):
    config = self.config
    input_pipeline.check_eval_is_not_train(config)
    if config.num_train_steps <= 0:
      raise ValueError(
        'MLM runs are sized in steps: set config.num_train_steps > 0.'
      )
    summary = (
      f'MLM stream from {config.data.source} (train split '
      f'{config.data.train_split}, eval split '
      f'{config.data.eval_split})'
    )
    return (
      {'num_examples': 0, 'label_names': [], 'summary': summary},
      {'num_examples': -1, 'label_names': []},
    )

  def example_batch(self) -> Dict[str, np.ndarray]:
    length = int(self.config.data.max_length)
    return {
      'input_ids': np.zeros((1, length), np.int32),
      'attention_mask': np.ones((1, length), np.int32),
    }

  def train_stream(self, start_step: int):
    # Fixed document shards: the same batches on any process count that
    # divides their number (see perceiver_io.data.text.mlm_shards).
    batch = int(self.config.batch_size)
    shards = host_data.num_shards(
      int(self.config.data.get('num_shards', 0) or 0),
      batch,
      batch,
      jax.process_count(),
    )
    return input_pipeline.MlmTrainStream(self.config, start_step, shards)

  def eval_data(self):
    limit = int(self.config.max_eval_examples)
    # The stream's length is unknown until it is read.
    return input_pipeline.mlm_eval_batches(self.config), (
      limit if limit > 0 else None
    )

  # ----------------------------------------------------- traced functions --

  def loss_fn(self, outputs, batch):
    weight = batch['weight'].astype(jnp.float32)
    total, count = mlm_loss(outputs, batch['targets'], batch['target_weights'])
    return total * weight, count * weight

  def eval_outputs(self, outputs, batch):
    out = super().eval_outputs(outputs, batch)
    correct = jnp.argmax(outputs, -1) == batch['targets']
    out['correct'] = jnp.sum(correct * batch['target_weights'], axis=-1)
    return out

  # ------------------------------------------------------------------ host --

  def summarize(self, gathered):
    result = metrics.loss_summary(gathered)
    keep = gathered['weight'] > 0
    masked = float(np.sum(gathered['loss_weight'][keep]))
    result['masked_accuracy'] = float(
      np.sum(gathered['correct'][keep]) / max(masked, 1e-9)
    )
    result['perplexity'] = float(np.exp(min(result['loss'], 50.0)))
    return result

  def fill_masks(self, model, variables, texts: Sequence[str]) -> List[str]:
    """Replaces every [MASK] byte of each text with the model's best byte."""
    tok = tokenizer_lib.ByteTokenizer()
    batch = input_pipeline.tokenize_texts(
      list(texts), None, int(self.config.data.max_length), 'inputs'
    )
    del batch['num_truncated']
    logits = self.predict(model, variables, batch)
    out = []
    for ids, mask, row_logits in zip(
      batch['input_ids'], batch['attention_mask'], logits
    ):
      ids = ids.copy()
      masked = ids == tokenizer_lib.MASK_ID
      ids[masked] = np.argmax(row_logits[masked], axis=-1)
      out.append(tok.decode(ids[mask.astype(bool)], skip_special_tokens=True))
    return out

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    pairs: Optional[Sequence[Optional[str]]] = None,
    **unused,
  ) -> List[str]:
    """ "'<text>' -> '<text with its [MASK] bytes filled>'" per input."""
    base.refuse_pairs(pairs, name)
    if not inputs:
      raise ValueError('give texts as arguments or --input_file=FILE.')
    return [
      f'{text!r} -> {filled!r}'
      for text, filled in zip(inputs, self.fill_masks(model, variables, inputs))
    ]
