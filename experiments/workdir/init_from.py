"""`config.init_from`: the pretrained weights a run starts from.

Why parsed in one place: the same spec is the starting point of a
fine-tuning run (`train_lib`) and the model that `evaluate` and `predict`
use when there is no workdir (`eval_lib`, `predict_lib`), so every task
accepts the same four forms (`INIT_FROM_USAGE`). 'workdir:<dir>' reads a
run through `workdir.load_workdir`; the other forms import a checkpoint with
`perceiver_io.checkpoints`. Either way the result is a `workdir.Run`.
"""

import os
from typing import List, Tuple

from experiments import workdir as workdir_lib
from perceiver_io import checkpoints

INIT_FROM_USAGE = (
  'hf:<dir or hub id>, haiku:<pickle>[:<preset>], dir:<dir> or workdir:<dir>'
)


def parse_init_from(spec: str) -> Tuple[str, str]:
  """'kind:where' -> (kind, where), or one error naming the valid forms."""
  kind, _, where = str(spec).partition(':')
  if not where or kind not in ('hf', 'haiku', 'dir', 'workdir'):
    raise ValueError(
      f'config.init_from must be {INIT_FROM_USAGE}; got {spec!r}.'
    )
  return kind, where


def _haiku_preset(preset_hint: str) -> str:
  """The architecture of a Haiku pickle that does not name one: the
  official language pickle is the MLM model whatever head is fine-tuned;
  the others are the config's preset at full size."""
  if 'text' in preset_hint or 'language' in preset_hint:
    return 'language_mlm'
  return preset_hint.replace('tiny_', '')


def _hf_label_names(kind: str, where: str) -> List[str]:
  """id2label of a local HuggingFace checkpoint directory, in index order."""
  if kind != 'hf' or not os.path.isdir(where):
    return []
  try:
    id2label = (
      workdir_lib.read_json(os.path.join(where, 'config.json')).get('id2label')
      or {}
    )
    return [id2label[str(i)] for i in range(len(id2label))]
  except (OSError, ValueError, KeyError):
    return []


def load_init_from(
  spec: str, preset_hint: str = '', attention_impl: str = 'auto'
) -> workdir_lib.Run:
  """The model and variables named by `config.init_from`.

  The model is built from the checkpoint's own config (a HuggingFace
  checkpoint keeps its erf GELU and conv padding), not from `config.model`;
  only how it computes comes from the run (`attention_impl`, as
  `config.model.attention_impl`: the runner's kernels, not the library's
  default).

  Args:
    spec: 'hf:<dir or hub id>' (HuggingFace save_pretrained layout),
      'haiku:<pickle>[:<preset>]' (official DeepMind checkpoint),
      'dir:<dir>' (`perceiver_io.checkpoints.save` output) or
      'workdir:<dir>' (a run of experiments.train: its latest checkpoint).
    preset_hint: the config's preset, for Haiku pickles that name none.

  Returns:
    A Run with step 0 (a workdir's: its step and config) and the
    checkpoint's label names in info (HuggingFace id2label; [] if none).
  """
  kind, where = parse_init_from(spec)
  if kind == 'workdir':
    return workdir_lib.load_workdir(where)
  try:
    if kind == 'haiku':
      path, _, preset = where.partition(':')
      model, variables, model_config = checkpoints.from_haiku(
        path,
        preset or _haiku_preset(preset_hint),
        attention_impl=attention_impl,
      )
    elif kind == 'hf':
      model, variables, model_config = checkpoints.from_hf(
        f'hf:{where}', attention_impl=attention_impl
      )
    else:
      model, variables, model_config = checkpoints.load(
        where, attention_impl=attention_impl
      )
  except checkpoints.CheckpointError as e:
    raise ValueError(f'cannot import {spec}: {e}') from e
  return workdir_lib.Run(
    model,
    variables,
    None,
    0,
    model_config,
    {'label_names': _hf_label_names(kind, where)},
  )
