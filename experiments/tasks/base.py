"""The task interface: everything the runner asks of an experiment's task.

Why one small interface: the train loop, evaluate and predict are the same
for every experiment; what differs (where the data comes from, how a batch
becomes a model call and a loss, which metrics count, what a prediction
prints) is a task. A task is a class `Task` in `experiments/tasks/<name>.py`,
found by `config.task = '<name>'`, so adding one is one module there plus a
config in `configs/`, with no edit to the loop, evaluate or predict.

The contract (this class gives the defaults marked *). A task is built as
`Task(config)` (cheap: no data is read) and holds `self.config`, the
experiment config, and, after `use_model`, `self.model_config`.

Model
  num_outputs()*            size of a classification decoder (default:
                            data.num_classes; decoders of other types
                            ignore it); None keeps the preset's.
  use_model(model_config)*  called once the model is known (the config's,
                            a workdir's or an imported one): refuse a model
                            the task cannot use, keep what it needs of it.
Data (host, NumPy; each process gets its own rows of every global batch)
  data_info()               (train_info, eval_info); training calls it
                            first. Dicts with 'num_examples' (-1: unknown),
                            optional 'label_names', 'text_fields' (recorded
                            in the workdir) and 'summary' (the log line).
  example_batch()           one example, for init and FLOP counting; reads
                            no data and creates no JAX backend.
  train_stream(start_step)  an object whose batch(step) returns this
                            process's rows of global batch `step`, a pure
                            function of the step (resume is bit-identical).
  eval_data()               (this process's ordered eval batches, how many
                            items to expect or None); padding rows have
                            'weight' 0.
Traced (inside jax.jit)
  model_inputs(batch)*      (inputs, kwargs) of the model call.
  train_transform(batch, key)*  batch -> batch (e.g. MixUp); identity.
  loss_fn(outputs, batch)   (per-example loss sum [B], weight [B]); the
                            step's loss is sum(loss) / sum(weight).
  eval_outputs(outputs, batch)*  dict of per-example arrays, with 'weight'.
Host
  summarize(gathered)*      metrics from the eval outputs concatenated
                            over the eval data.
  evaluate(eval_step, state, mesh, model)*  the eval loop (progress, host
                            memory) over `eval_data`, then `summarize`.
  predict_lines(model, variables, inputs, **options)  the predict launcher's
                            output lines. Options: name (workdir or
                            checkpoint, for messages), info (label_names,
                            text_fields), and the launcher's flags (top_k,
                            pairs, digits, class_names, output, ...); a task
                            ignores the ones it has no use for.
  eval_predictions(model, variables, count)*  lines printed after training
                            (config.predict_examples); none by default.
  eval_data_description()*  what evaluate reports it evaluated.
  predict_example(info)*    the arguments of the predict command printed at
                            the end of a run (info: the workdir's data
                            info); `predict_args` by default.
Helper
  predict(model, variables, batch)  the model's outputs for a batch (one
                            compiled call per model), for predict_lines.

Every batch is a dict of arrays with a leading batch axis and a 'weight'
array [B] (1 = a real example, 0 = padding).
"""

import collections
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import progress as eval_progress
from experiments import metrics
from experiments import process_tuning
from experiments import sharding
from experiments import steps

Batch = Dict[str, Any]


class Task:
  """Defaults for the task interface (see the module docstring)."""

  # What evaluation counts, for its progress lines ('image', 'pair', ...).
  eval_unit = 'example'
  # Example arguments of `experiments.predict` for this task's workdirs.
  predict_args = "'A text to classify.'"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model_config: Dict[str, Any] = {}

  def missing(self, method: str) -> NotImplementedError:
    return NotImplementedError(
      f'task {self.config.task!r} ({type(self).__module__}.'
      f'{type(self).__name__}) defines no {method}(); the methods a task '
      'defines are listed in experiments/tasks/base.py.'
    )

  # ------------------------------------------------------------------ model --

  def num_outputs(self) -> Optional[int]:
    return int(self.config.data.num_classes)

  def use_model(self, model_config: Dict[str, Any]) -> None:
    self.model_config = model_config

  # ------------------------------------------------------------------- data --

  def data_info(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    raise self.missing('data_info')

  def example_batch(self) -> Batch:
    raise self.missing('example_batch')

  def train_stream(self, start_step: int):
    raise self.missing('train_stream')

  def eval_data(self) -> Tuple[Iterable[Batch], Optional[int]]:
    raise self.missing('eval_data')

  # ----------------------------------------------------------------- traced --

  def model_inputs(self, batch: Batch) -> steps.ModelInputs:
    """Images ('image'), or byte ids with their mask ('input_ids',
    'attention_mask')."""
    if 'image' in batch:
      return batch['image'], {}
    return batch['input_ids'], {'attention_mask': batch['attention_mask']}

  def train_transform(self, batch: Batch, key: jax.Array) -> Batch:
    del key
    return batch

  def loss_fn(self, outputs, batch: Batch) -> Tuple[jax.Array, jax.Array]:
    raise self.missing('loss_fn')

  def eval_outputs(self, outputs, batch: Batch) -> Dict[str, jax.Array]:
    loss, weight = self.loss_fn(outputs, batch)
    return {
      'loss': loss,
      'loss_weight': weight,
      'weight': batch['weight'].astype(jnp.float32),
    }

  # ------------------------------------------------------------------- host --

  def summarize(self, gathered: Dict[str, np.ndarray]) -> Dict[str, Any]:
    return metrics.loss_summary(gathered)

  def evaluate(self, eval_step, state, mesh, model=None) -> Dict[str, Any]:
    """Runs `eval_step` over the eval data and summarises its outputs.

    Args:
      eval_step: jitted (params, model_state, global batch) -> the task's
        `eval_outputs`, replicated.
      state: {'params': ..., 'model_state': ...}.
      mesh: the device mesh the batches are sharded over.
      model: the flax module (for tasks that evaluate outside eval_step).
    """
    del model
    gathered = collections.defaultdict(list)
    batches, expected = self.eval_data()
    with eval_progress.EvalProgress(
      self.config, expected, self.eval_unit
    ) as progress:
      for local in batches:
        out = sharding.to_host(
          eval_step(
            state['params'],
            state['model_state'],
            sharding.global_batch(local, mesh),
          )
        )
        process_tuning.settle_host_memory()
        for key, value in out.items():
          gathered[key].append(np.asarray(value))
        progress.update(int(np.sum(np.asarray(out['weight']) > 0)))
    return self.summarize({k: np.concatenate(v) for k, v in gathered.items()})

  def predict(self, model, variables, batch: Batch) -> np.ndarray:
    """The model's outputs for `batch` (one compiled call per model)."""
    return steps.predict_batch(model, variables, batch, self.model_inputs)

  def predict_lines(
    self, model, variables, inputs: Sequence[str], **options
  ) -> List[str]:
    raise self.missing('predict_lines')

  def eval_predictions(self, model, variables, count: int) -> List[str]:
    del model, variables, count
    return []

  def predict_example(self, info: Dict[str, Any]) -> str:
    del info
    return self.predict_args

  def eval_data_description(self) -> str:
    return f'split {self.config.data.eval_split}'


def refuse_pairs(pairs: Optional[Sequence[Optional[str]]], name: str) -> None:
  """Sentence pairs (--pair) are for text models trained on pairs."""
  if pairs is not None and any(p is not None for p in pairs):
    raise ValueError(
      f'--pair is for text models trained on sentence pairs; {name} is not one.'
    )
