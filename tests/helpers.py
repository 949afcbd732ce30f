"""Small helpers shared by the tests (experiment configs, GLUE workdirs, images)."""

import hashlib
import json
import os

import numpy as np
from PIL import Image


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
    {'glue_task': task, 'data': {'eval_split': eval_split}},
  )
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def random_image(height, width, seed=0):
  """Uniform noise, uint8 [height, width, 3]: the worst case for resampling."""
  return np.random.default_rng(seed).integers(
    0, 256, (height, width, 3), dtype=np.uint8
  )


def smooth_image(height, width, seed=0):
  """A smooth uint8 [height, width, 3] image (upscaled noise), as photos are."""
  small = random_image(max(height // 16, 2), max(width // 16, 2), seed)
  return np.asarray(
    Image.fromarray(small).resize((width, height), Image.BILINEAR)
  )


def file_fingerprints(root):
  """path (relative to `root`) -> md5 of every file under `root`: tells
  whether a folder was left exactly as it was."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.md5(f.read()).hexdigest()
  return out
