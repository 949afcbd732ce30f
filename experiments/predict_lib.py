"""Predicting with a trained workdir or an imported checkpoint.

Why this is short: a workdir is self-describing (`experiments.workdir`
reads its config, model and data info back), and what a prediction is
(labels, a score, filled-in bytes, a flow field) is the task's
`predict_lines`. This module joins the two for the predict launcher and
prints a few eval predictions after training.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from experiments.workdir import init_from as init_from_lib
from experiments import exported_loader
from experiments import tasks
from experiments import workdir as workdir_lib


def read_pairs(arguments: Sequence[str], pair: Optional[Sequence[str]]):
  """The second texts of the inputs (None: the input holds both, tab-split).

  --pair values go with the text arguments in order; --input_file lines
  (after the arguments) carry their own FIRST<TAB>SECOND.
  """
  if not pair:
    return None
  if len(pair) != len(arguments):
    raise ValueError(
      f'{len(pair)} --pair value(s) for {len(arguments)} text '
      'argument(s): give one --pair per text argument, in '
      'order (lines of --input_file use FIRST<TAB>SECOND).'
    )
  for i, text in enumerate(pair):
    if not text.strip():
      raise ValueError(
        f'--pair number {i + 1} is empty{_blank(text)}: give the second '
        'text of the pair.'
      )
  return list(pair)


def _blank(text: str) -> str:
  return ' (only whitespace)' if text else ''


def read_inputs(arguments: Sequence[str], input_file: str) -> List[str]:
  """The inputs to predict: arguments, then --input_file's non-blank lines.

  Why refuse blank ones: a model answers anything, so an empty text (a
  shell variable that was never set) printed a confident label.
  """
  inputs = list(arguments)
  for i, text in enumerate(inputs):
    if not text.strip():
      raise ValueError(
        f'input argument {i + 1} is empty{_blank(text)}: give the text (or '
        'image file) to predict, or --input_file=FILE with one per line.'
      )
  if input_file:
    try:
      with open(input_file, encoding='utf-8', errors='replace') as f:
        lines = [line.rstrip('\n') for line in f if line.strip()]
    except FileNotFoundError:
      raise FileNotFoundError(
        f'--input_file {input_file!r} not found.'
      ) from None
    except IsADirectoryError:
      raise ValueError(
        f'--input_file {input_file!r} is a directory; give a file with one '
        'input per line.'
      ) from None
    if not lines:
      raise ValueError(
        f'--input_file {input_file!r} holds no input (it is empty or only '
        'blank lines); write one text (or image file) per line.'
      )
    inputs += lines
  return inputs


def read_prompts(prompts: Optional[Sequence[str]]) -> List[str]:
  """--prompt values (texts to continue); an empty one is refused."""
  for i, text in enumerate(prompts or []):
    if not text:
      raise ValueError(
        f'--prompt number {i + 1} is empty: give the text to continue.'
      )
  return list(prompts or [])


def predict_lines(
  workdir: str,
  inputs: Sequence[str],
  which: str = 'latest',
  config: Optional[ml_collections.ConfigDict] = None,
  **options,
) -> List[str]:
  """Human-readable predictions of a workdir's model for `inputs`.

  Args:
    workdir: a trained workdir.
    inputs: what the task predicts on (texts, image paths, two frames).
    which: checkpoint: 'latest', 'best' or a step.
    config: a config to use instead of the workdir's config.json.
    **options: the launcher's options for the task's `predict_lines`
      (top_k, digits, pairs, class_names, output, ground_truth, pad_small).

  Returns:
    A header line, then the task's lines.
  """
  run = workdir_lib.load_workdir(workdir, which, config)
  task = tasks.get(run.config, run.model_config)
  return [f'# {workdir} (checkpoint step {run.step})'] + task.predict_lines(
    run.model,
    run.variables,
    list(inputs),
    name=workdir,
    info=run.info,
    **options,
  )


def predict_pretrained(
  config: ml_collections.ConfigDict, inputs: Sequence[str], **options
) -> List[str]:
  """Prediction lines of the checkpoint named by config.init_from."""
  config = config.copy_and_resolve_references()
  imported = init_from_lib.load_init_from(
    config.init_from, config.model.preset, config.model.attention_impl
  )
  task = tasks.get(config, imported.model_config)
  return [f'# {config.init_from}'] + task.predict_lines(
    imported.model,
    imported.variables,
    list(inputs),
    name=config.init_from,
    info=imported.info,
    **options,
  )


class ExportedModule:
  """An exported artifact behind the flax call the tasks make
  (`model.apply(variables, inputs, deterministic=..., **kwargs)`), so that
  `predict --exported` prints what the task prints for a workdir."""

  def __init__(self, artifact: exported_loader.ExportedModel):
    self.artifact = artifact
    self.inputs = artifact.signature['inputs']
    self.outputs = list(artifact.signature['outputs'])

  def apply(self, variables, inputs, deterministic=True, **kwargs):
    del deterministic
    kwargs = {k: v for k, v in kwargs.items() if k not in ('rngs', 'mutable')}
    if 'input_ids' in self.inputs:
      named = {'input_ids': inputs, **kwargs}
    elif isinstance(inputs, dict):
      named = dict(inputs)
    else:
      named = {next(iter(self.inputs)): inputs}
    named = {
      k: jnp.asarray(v).astype(self.inputs[k]['dtype'])
      for k, v in named.items()
    }
    out = self.artifact.call(variables, named)
    return out[self.outputs[0]] if len(self.outputs) == 1 else out


def predict_exported(path: str, inputs: Sequence[str], **options) -> List[str]:
  """Prediction lines of an artifact of experiments.export, formatted by
  the task of the config saved in it."""
  artifact = exported_loader.load(path)
  config_path = os.path.join(path, 'config.json')
  if not os.path.isfile(config_path):
    raise ValueError(
      f'{path} holds no config.json (it was exported from a model without '
      'a task config), so there is no task to format predictions; call it '
      'with experiments/exported_loader.py instead.'
    )
  config = ml_collections.ConfigDict(workdir_lib.read_json(config_path))
  signature = artifact.signature
  task = tasks.get(config, signature['model_config'])
  return [f'# {path} (exported)'] + task.predict_lines(
    ExportedModule(artifact),
    artifact.params,
    list(inputs),
    name=path,
    info=signature.get('info', {}),
    **options,
  )


def print_eval_predictions(result: Dict[str, Any], count: int) -> None:
  """Prints the task's predictions for the first `count` eval examples
  after training (`config.predict_examples`), on process 0."""
  if jax.process_index() != 0:
    return
  state = result['state']
  tree = {'params': state['params'], **state['model_state']}
  if not all(
    x.is_fully_addressable or x.is_fully_replicated
    for x in jax.tree_util.tree_leaves(tree)
  ):
    print(
      '(predictions skipped: parameters are sharded across processes; '
      'run experiments.predict on the workdir.)'
    )
    return
  variables = jax.device_get(tree)
  for line in result['task'].eval_predictions(
    result['model'], variables, count
  ):
    print(line)
