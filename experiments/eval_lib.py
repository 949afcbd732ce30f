"""Evaluating a trained workdir or an imported checkpoint; GLUE summaries.

Why separate from the loop: evaluation of a finished run (the latest or the
best checkpoint, possibly on other data) must not touch its training state,
and the GLUE summary reads only what runs wrote (config.json,
metrics.jsonl), so it also works on runs from other machines.
"""

import os
from typing import Any, Dict, List

import jax
import ml_collections
import numpy as np

from experiments.workdir import init_from as init_from_lib
from experiments import compile_cache
from experiments import metrics as metrics_lib
from experiments import sharding
from experiments import steps
from experiments import tasks
from experiments import train_lib
from experiments import workdir as workdir_lib

# GLUE tasks whose mean is the paper's "GLUE avg" (dev sets, WNLI excluded).
GLUE_AVERAGE_TASKS = (
  'cola',
  'sst2',
  'mrpc',
  'qqp',
  'stsb',
  'mnli',
  'qnli',
  'rte',
)


def evaluate_variables(task, model, variables) -> Dict[str, Any]:
  """The task's eval metrics of `variables`, on every local device."""
  mesh = sharding.make_mesh()
  sharding.check_batch_size(
    int(task.config.eval_batch_size), mesh, 'eval_batch_size'
  )
  replicated = sharding.replicated(mesh)
  variables = jax.device_put(dict(variables), replicated)
  state = {
    'params': variables['params'],
    'model_state': {k: v for k, v in variables.items() if k != 'params'},
  }
  eval_step = jax.jit(
    steps.make_eval_step(model, task),
    in_shardings=(replicated, replicated, sharding.batch_sharding(mesh)),
    out_shardings=replicated,
  )
  return task.evaluate(eval_step, state, mesh, model)


def evaluate_workdir(
  workdir: str, which: str = 'latest', split: str = '', config=None
) -> Dict[str, Any]:
  """Evaluates a checkpoint of `workdir`; appends the result to metrics.jsonl.

  Args:
    workdir: a directory written by experiments.train.
    which: 'latest', 'best' or a step number.
    split: eval split ('' = the config's `data.eval_split`).
    config: a config to evaluate with (default: the workdir's config.json).

  Returns:
    {'step': checkpoint step, 'split': split, 'data': what was evaluated,
     'metrics': {...}}.
  """
  run = workdir_lib.load_workdir(
    workdir,
    which,
    None if config is None else config.copy_and_resolve_references(),
  )
  config = run.config
  config.unlock()
  if split:
    config.data.eval_split = split
  train_lib.configure_jax(config)
  task = tasks.get(config, run.model_config)
  with compile_cache.scope() as cache:  # The train run's eval step.
    cache.enable(config, workdir)
    metrics = evaluate_variables(task, run.model, run.variables)
  workdir_lib.append_metrics(
    workdir,
    {
      'step': int(run.step),
      'checkpoint': which,
      'split': config.data.eval_split,
      **{f'eval_{k}': v for k, v in metrics.items()},
    },
  )
  return {
    'step': int(run.step),
    'split': config.data.eval_split,
    'data': task.eval_data_description(),
    'metrics': metrics,
  }


def evaluate_pretrained(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Evaluates the checkpoint named by config.init_from on config's eval data.

  Returns:
    {'step': 0, 'split': eval split, 'data': what was evaluated,
     'metrics': {...}} (as `evaluate_workdir`).
  """
  config = config.copy_and_resolve_references()
  train_lib.configure_jax(config)
  imported = init_from_lib.load_init_from(
    config.init_from, config.model.preset, config.model.attention_impl
  )
  task = tasks.get(config, imported.model_config)
  metrics = evaluate_variables(task, imported.model, imported.variables)
  return {
    'step': 0,
    'split': config.data.eval_split,
    'data': task.eval_data_description(),
    'metrics': metrics,
  }


def format_table(rows: List[Dict[str, Any]], columns: List[str]) -> str:
  """A Markdown table of `rows` (dicts) with `columns`."""

  def cell(v):
    if isinstance(v, float):
      return f'{v:.4f}'
    return str(v)

  lines = [
    '| ' + ' | '.join(columns) + ' |',
    '| ' + ' | '.join('---' for _ in columns) + ' |',
  ]
  for row in rows:
    lines.append(
      '| ' + ' | '.join(cell(row.get(c, '')) for c in columns) + ' |'
    )
  return '\n'.join(lines)


def metrics_table(result: Dict[str, Any]) -> str:
  rows = [{'metric': k, 'value': v} for k, v in result['metrics'].items()]
  return format_table(rows, ['metric', 'value'])


def best_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The highest-scoring row per (task, split), each with `runs` counted.

  Why: a hyperparameter grid leaves several workdirs per task, and the
  paper's GLUE number takes the best of the grid per task; averaging the
  grid would report the mean of good and bad learning rates instead.
  Ties keep the first row (workdirs are read in sorted order).
  """
  best, runs = {}, {}
  for row in rows:
    key = (row['task'], row['split'])
    runs[key] = runs.get(key, 0) + 1
    if key not in best or row['score'] > best[key]['score']:
      best[key] = row
  return [dict(best[key], runs=runs[key]) for key in sorted(best)]


def glue_summary(root: str) -> Dict[str, Any]:
  """Scores of the GLUE workdirs under `root` and their average.

  A workdir counts if its config.json has `glue_task` set. A run's score is
  the mean of its task's official metrics x 100 (`eval_score`) in its last
  evaluation of each split; a task's score is the best run's (the paper:
  best of the grid per task), and MNLI's is the mean of the best matched
  and the best mismatched when both were evaluated. The average is over the
  tasks found among GLUE_AVERAGE_TASKS (the paper excludes WNLI).

  Returns:
    {'rows': the best run per (task, split): [{task, split, workdir, step,
     score, runs, ...}], 'all_rows': every run's row, 'scores': {task:
     score}, 'average': float or None, 'missing': tasks not found}.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f'--glue_summary directory {root!r} not found.')
  rows = []
  for workdir, config in workdir_lib.find_runs(root):
    task = config.get('glue_task') or ''
    if not task:
      continue
    records = workdir_lib.last_eval_records(workdir)
    default_split = config.get('data', {}).get('eval_split', '')
    if '' in records:  # Training-loop evals are on the config's split.
      records.setdefault(default_split, records.pop(''))
    for split, record in sorted(records.items()):
      if 'eval_score' not in record:
        continue
      row = {
        'task': task,
        'split': split,
        'workdir': workdir,
        'step': record['step'],
        'score': 100.0 * float(record['eval_score']),
      }
      for name in metrics_lib.GLUE_METRICS.get(task, ()):
        if f'eval_{name}' in record:
          row[name] = 100.0 * float(record[f'eval_{name}'])
      rows.append(row)
  best = best_rows(rows)
  by_task = {}
  for row in best:  # MNLI: mean of the matched and mismatched rows.
    by_task.setdefault(row['task'], []).append(row['score'])
  scores = {t: float(np.mean(v)) for t, v in by_task.items()}
  counted = [scores[t] for t in GLUE_AVERAGE_TASKS if t in scores]
  return {
    'rows': best,
    'all_rows': rows,
    'scores': scores,
    'average': float(np.mean(counted)) if counted else None,
    'missing': [t for t in GLUE_AVERAGE_TASKS if t not in scores],
  }
