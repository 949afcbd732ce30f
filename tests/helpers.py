"""Small helpers shared by the experiment tests."""

import json
import os


def override_config(config, **fields):
  """Sets `a__b__c=value` fields on a locked ml_collections config; returns it.

  Double underscores stand for dots (`data__plain_fraction` ->
  `config.data.plain_fraction`), so overrides read like keyword arguments.
  """
  config.unlock()
  for dotted, value in fields.items():
    node = config
    *parents, leaf = dotted.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config


def fake_glue_run(root, task, records, eval_split='validation', name=None):
  """A GLUE workdir as `eval_lib.glue_summary` reads it: config.json with the
  task and eval split, and metrics.jsonl with `records` (dir: name or task)."""
  from experiments import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(root, name or task)
  os.makedirs(workdir)
  workdir_lib.write_json_atomic(
      os.path.join(workdir, 'config.json'),
      {'glue_task': task, 'data': {'eval_split': eval_split}})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')
