"""Evaluating a trained workdir, and summarising GLUE over many workdirs.

Why separate from the loop: evaluation of a finished run (the latest or the
best checkpoint, possibly on another split) must not touch its training
state, and the GLUE summary reads only what runs wrote (config.json,
metrics.jsonl), so it also works on runs from other machines.
"""

import glob
import json
import os
from typing import Any, Dict, List

import jax
import numpy as np

from experiments import checkpointing
from experiments import input_pipeline
from experiments import predict_lib
from experiments import sharding
from experiments import tasks
from experiments import train_lib

# GLUE tasks whose mean is the paper's "GLUE avg" (dev sets, WNLI excluded).
GLUE_AVERAGE_TASKS = ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'qnli',
                      'rte')


def evaluate_workdir(workdir: str, which: str = 'latest',
                     split: str = '', config=None) -> Dict[str, Any]:
  """Evaluates a checkpoint of `workdir`; appends the result to metrics.jsonl.

  Args:
    workdir: a directory written by experiments.train.
    which: 'latest', 'best' or a step number.
    split: eval split ('' = the config's `data.eval_split`).
    config: a config to evaluate with (default: the workdir's config.json).

  Returns:
    {'step': checkpoint step, 'split': split, 'metrics': {...}}.
  """
  model, variables, config, step = predict_lib.load_workdir(
      workdir, which, None if config is None else config.copy_and_resolve_references())
  config.unlock()
  if split:
    config.data.eval_split = split
  train_lib.configure_jax(config)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(int(config.eval_batch_size), mesh,
                            'eval_batch_size')
  task_object = train_lib.get_task(config, getattr(model, 'config', None))
  table = None
  if config.task != 'mlm' and task_object is None:
    table, _ = input_pipeline.load_table(config, config.data.eval_split)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  state = {'params': variables['params'],
           'model_state': {k: v for k, v in variables.items()
                           if k != 'params'}}
  eval_fn = (task_object.make_eval_step(model) if task_object is not None
             else train_lib.make_eval_step(model, config.task))
  eval_step = jax.jit(eval_fn,
                      in_shardings=(sharding.replicated(mesh),
                                    sharding.replicated(mesh),
                                    sharding.batch_sharding(mesh)),
                      out_shardings=sharding.replicated(mesh))
  metrics = train_lib.run_evaluation(task_object, eval_step, state, table,
                                     config, mesh, model)
  record = {'checkpoint': which, 'split': config.data.eval_split,
            **{f'eval_{k}': v for k, v in metrics.items()}}
  if jax.process_index() == 0:
    train_lib.append_jsonl(os.path.join(workdir, train_lib.METRICS_FILE),
                           {'step': int(step), **record})
  return {'step': int(step), 'split': config.data.eval_split,
          'data': eval_data_description(config), 'metrics': metrics}


def eval_data_description(config) -> str:
  """What was evaluated, for the header line: 'split <name>', or for a flow
  benchmark folder (whose listing involves no split) 'source <kind:dir>'."""
  source = str(config.data.get('eval_source', '') or '')
  if config.task == 'optical_flow' and source and not source.startswith(
      'generated'):
    return f'source {source}'
  return f'split {config.data.eval_split}'


def format_table(rows: List[Dict[str, Any]], columns: List[str]) -> str:
  """A Markdown table of `rows` (dicts) with `columns`."""
  def cell(v):
    if isinstance(v, float):
      return f'{v:.4f}'
    return str(v)
  lines = ['| ' + ' | '.join(columns) + ' |',
           '| ' + ' | '.join('---' for _ in columns) + ' |']
  for row in rows:
    lines.append('| ' + ' | '.join(cell(row.get(c, '')) for c in columns)
                 + ' |')
  return '\n'.join(lines)


def metrics_table(result: Dict[str, Any]) -> str:
  rows = [{'metric': k, 'value': v} for k, v in result['metrics'].items()]
  return format_table(rows, ['metric', 'value'])


def last_eval_records(workdir: str) -> Dict[str, Dict[str, Any]]:
  """Split -> the last metrics.jsonl line with eval metrics for it.

  Lines written by the training loop carry no 'split' (they are the
  config's eval split, keyed ''); `evaluate` lines name theirs.
  """
  path = os.path.join(workdir, train_lib.METRICS_FILE)
  records = {}
  if not os.path.exists(path):
    return records
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      record = json.loads(line)
      if any(k.startswith('eval_') for k in record):
        records[record.get('split', '')] = record
  return records


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
  for config_path in sorted(glob.glob(os.path.join(root, '**',
                                                   checkpointing.CONFIG_FILE),
                                      recursive=True)):
    workdir = os.path.dirname(config_path)
    config = checkpointing.read_json(config_path)
    task = config.get('glue_task') or ''
    if not task:
      continue
    records = last_eval_records(workdir)
    default_split = config.get('data', {}).get('eval_split', '')
    if '' in records:  # Training-loop evals are on the config's split.
      records.setdefault(default_split, records.pop(''))
    for split, record in sorted(records.items()):
      if 'eval_score' not in record:
        continue
      row = {'task': task, 'split': split, 'workdir': workdir,
             'step': record['step'],
             'score': 100.0 * float(record['eval_score'])}
      for name in tasks.GLUE_METRICS.get(task, ()):
        if f'eval_{name}' in record:
          row[name] = 100.0 * float(record[f'eval_{name}'])
      rows.append(row)
  best = best_rows(rows)
  by_task = {}
  for row in best:  # MNLI: mean of the matched and mismatched rows.
    by_task.setdefault(row['task'], []).append(row['score'])
  scores = {t: float(np.mean(v)) for t, v in by_task.items()}
  counted = [scores[t] for t in GLUE_AVERAGE_TASKS if t in scores]
  return {'rows': best, 'all_rows': rows, 'scores': scores,
          'average': float(np.mean(counted)) if counted else None,
          'missing': [t for t in GLUE_AVERAGE_TASKS if t not in scores]}
