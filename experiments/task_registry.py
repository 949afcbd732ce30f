"""Tasks that bring their own data, loss, evaluation and prediction.

Why: the runner's built-in tasks (classification, regression, MLM) read
in-memory tables or one text stream. ImageNet (1.28M images through tf.data,
MixUp/CutMix inside the step) and optical flow (procedurally generated pairs,
EPE, tiled full-frame evaluation, `.flo` outputs) need more than a table, so
they are written as task objects that the loop asks at a few fixed points
instead of growing the loop with modality branches.

A task object is built from the experiment config (and, for imported
checkpoints, the checkpoint's own model config) and provides:

  data_info() -> (train_info, eval_info)          # dicts: num_examples, ...
  example_batch() -> {'image': ...}               # one example, for init
  train_stream(start_step) -> obj with .batch(step) (this process's rows)
  train_transform(batch, key) -> batch            # traced (e.g. MixUp)
  loss_fn(outputs, batch) -> (loss_sum [B], weight [B])   # traced
  make_eval_step(model) -> fn(params, model_state, batch) -> dict
  evaluate(eval_step, state, mesh, model) -> {metric: float}
  predict_lines(model, variables, inputs, **options) -> [str]

Modules are imported lazily so that `experiments.train_lib` does not import
TensorFlow for text runs.
"""

import importlib
import os
from typing import Any, Dict, Optional

import jax
import ml_collections

# Task name -> 'module:class'.
TASKS = {
    'image_classification': 'experiments.vision:ImageClassificationTask',
    'optical_flow': 'experiments.flow_task:OpticalFlowTask',
}


def get(config: ml_collections.ConfigDict,
        model_config: Optional[Dict[str, Any]] = None):
  """The task object of `config.task`, or None for the runner's own tasks.

  Args:
    config: the experiment config.
    model_config: the perceiver_io config of the model actually used (an
      imported checkpoint's); default: the one `config.model` builds.
  """
  spec = TASKS.get(str(config.task))
  if spec is None:
    return None
  module_name, _, class_name = spec.partition(':')
  module = importlib.import_module(module_name)
  return getattr(module, class_name)(config, model_config)


def evaluate_variables(task, model, variables) -> Dict[str, float]:
  """Evaluates `variables` with `task` on every local device (no training)."""
  from experiments import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  replicated = sharding.replicated(mesh)
  variables = jax.device_put(dict(variables), replicated)
  state = {'params': variables['params'],
           'model_state': {k: v for k, v in variables.items()
                           if k != 'params'}}
  eval_step = jax.jit(task.make_eval_step(model),
                      in_shardings=(replicated, replicated,
                                    sharding.batch_sharding(mesh)),
                      out_shardings=replicated)
  return task.evaluate(eval_step, state, mesh, model)


# ----------------------------------------------------------------------------
# Imported checkpoints (evaluate / predict without a training workdir).
# ----------------------------------------------------------------------------


def load_pretrained_model(config: ml_collections.ConfigDict):
  """(model, variables, model_config, label_names) named by config.init_from.

  The model is built from the checkpoint's own config (e.g. a HuggingFace
  checkpoint keeps its erf GELU and conv padding), not from `config.model`.

  Args:
    config: experiment config whose `init_from` is 'hf:<dir or hub id>',
      'haiku:<pickle>[:<preset>]' (default preset: config.model.preset),
      'dir:<dir>' (perceiver_io.checkpoints.save) or 'workdir:<dir>'.

  Returns:
    model, variables, model config dict, label names from the checkpoint
    (HuggingFace id2label or a workdir's data_info.json; [] if none).
  """
  from perceiver_io import checkpoints  # pylint: disable=g-import-not-at-top
  spec = str(config.init_from)
  kind, _, where = spec.partition(':')
  if not where or kind not in ('hf', 'haiku', 'dir', 'workdir'):
    raise ValueError(f'config.init_from must be hf:<dir or hub id>, '
                     f'haiku:<pickle>[:<preset>], dir:<dir> or workdir:<dir>; '
                     f'got {spec!r}.')
  if kind == 'workdir':
    from experiments import predict_lib  # pylint: disable=g-import-not-at-top
    model, variables, run_config, _ = predict_lib.load_workdir(where)
    names = predict_lib.label_names(where, run_config)
    return model, variables, model.config, names
  try:
    if kind == 'haiku':
      path, _, preset = where.partition(':')
      model, variables, model_config = checkpoints.from_haiku(
          path, preset or config.model.preset.replace('tiny_', ''))
    elif kind == 'hf':
      model, variables, model_config = checkpoints.from_hf(spec)
    else:
      model, variables, model_config = checkpoints.load(where)
  except checkpoints.CheckpointError as e:
    raise ValueError(f'cannot import {spec}: {e}') from e
  return model, variables, model_config, _hf_label_names(kind, where)


def _hf_label_names(kind: str, where: str):
  """id2label of a local HuggingFace checkpoint directory, in index order."""
  if kind != 'hf' or not os.path.isdir(where):
    return []
  import json  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(where, 'config.json')) as f:
      id2label = json.load(f).get('id2label') or {}
    return [id2label[str(i)] for i in range(len(id2label))]
  except (OSError, ValueError, KeyError):
    return []


def _task_for_pretrained(config):
  if str(config.task) not in TASKS:
    raise ValueError(
        f'evaluating or predicting with config.init_from and no --workdir is '
        f'supported for the tasks {sorted(TASKS)}; config.task is '
        f'{config.task!r}. Train a workdir first (experiments.train).')
  model, variables, model_config, names = load_pretrained_model(config)
  return get(config, model_config), model, variables, names


def evaluate_pretrained(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Evaluates the checkpoint named by config.init_from on config's eval data.

  Returns:
    {'step': 0, 'split': eval split, 'metrics': {...}} (like
    eval_lib.evaluate_workdir).
  """
  config = config.copy_and_resolve_references()
  from experiments import train_lib  # pylint: disable=g-import-not-at-top
  train_lib.configure_jax(config)
  task, model, variables, names = _task_for_pretrained(config)
  task.label_names = names
  metrics = evaluate_variables(task, model, variables)
  return {'step': 0, 'split': config.data.eval_split, 'metrics': metrics}


def predict_pretrained(config: ml_collections.ConfigDict, inputs,
                       **options):
  """Prediction lines of the checkpoint named by config.init_from."""
  config = config.copy_and_resolve_references()
  task, model, variables, names = _task_for_pretrained(config)
  task.label_names = names
  lines = [f'# {config.init_from}']
  return lines + task.predict_lines(model, variables, inputs, **options)
