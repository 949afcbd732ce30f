"""Tasks by name: `config.task = '<name>'` is `experiments/tasks/<name>.py`.

Why by module name (big_vision's habit) and not a registry: adding a task
is adding its module, with nothing else to edit, and a task's dependencies
(TensorFlow for ImageNet, the flow generator) are imported only when a run
uses it. The interface is `experiments.tasks.base.Task`.

A task outside this package is named by its import path,
'package.module' (its class `Task`) or 'package.module:Class', as long as
the module is importable (e.g. on PYTHONPATH).
"""

import importlib
import pkgutil
from typing import Any, Dict, List, Optional

import ml_collections

from experiments import models
from experiments.tasks import base

# Modules of this package that are not tasks: the interface, and the
# full-frame (tiled) evaluation and frame reading that optical_flow inherits,
# the files a multimodal prediction writes and its per-process clips.
_NOT_TASKS = (
  'base',
  'flow_full_frame',
  'multimodal_files',
  'multimodal_stream',
)


def names() -> List[str]:
  """The task modules in experiments/tasks/."""
  return sorted(
    m.name
    for m in pkgutil.iter_modules(__path__)
    if m.name not in _NOT_TASKS and not m.name.startswith('_')
  )


def task_class(name: str) -> type:
  """The Task class that `config.task = name` names.

  Raises:
    ValueError: no such task module (the error lists those that exist), or
      the module has no `Task` subclass of `experiments.tasks.base.Task`.
  """
  name = str(name)
  module_name, _, class_name = name.partition(':')
  module = None
  if '.' not in module_name and ':' not in name:  # One of ours.
    module_name = (
      f'{__name__}.{module_name}'
      if module_name and module_name not in _NOT_TASKS
      else ''
    )
  if module_name:
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      # A task module that fails to import one of *its* dependencies is
      # that error, not an unknown task.
      if not e.name or not (module_name + '.').startswith(e.name + '.'):
        raise
  if module is None:
    raise ValueError(
      f'unknown config.task {name!r}; the task modules in experiments/'
      f'tasks/ are {", ".join(names())} (a task of your own: '
      "'package.module' or 'package.module:Class' on the Python path)."
    )
  class_name = class_name or 'Task'
  cls = getattr(module, class_name, None)
  if not (isinstance(cls, type) and issubclass(cls, base.Task)):
    raise ValueError(
      f'config.task {name!r}: {module_name} defines no class '
      f'{class_name} derived from experiments.tasks.base.Task.'
    )
  return cls


def get(
  config: ml_collections.ConfigDict,
  model_config: Optional[Dict[str, Any]] = None,
) -> base.Task:
  """The task of `config`, ready for `model_config`.

  Args:
    config: the experiment config (`config.task` names the task).
    model_config: the perceiver_io config of the model the task runs (a
      workdir's or an imported checkpoint's); default: the one `config`
      builds.
  """
  task = task_class(config.task)(config)
  if model_config is None:
    model_config = models.model_config(config, task.num_outputs())
  task.use_model(model_config)
  return task
