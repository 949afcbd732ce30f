"""A thin wrapper over Orbax's CheckpointManager for the training loop.

Why: a workdir must resume by itself after a crash or preemption, keep the
latest few checkpoints plus the best one by an eval metric, and never mix or
destroy checkpoints of a different model. Orbax does the atomic, async
saving; this module adds the workdir rules:

* `workdir/checkpoints/<step>/`: Orbax steps (latest N + best by metric);
* `workdir/model.json`: what model the checkpoints belong to; a run with a
  different model is refused unless `overwrite=True`, which *moves* the old
  checkpoints aside (`checkpoints.replaced-<time>/`), never deletes them;
* `PreemptionFlag`: SIGTERM sets a flag; the loop saves and exits cleanly.
"""

import json
import logging
import os
import signal
import time
from typing import Any, Dict, Optional

import jax
import orbax.checkpoint as ocp

PyTree = Any
CHECKPOINT_DIR = 'checkpoints'
MODEL_FILE = 'model.json'
CONFIG_FILE = 'config.json'
DATA_INFO_FILE = 'data_info.json'


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temp file and renames it (no half-written files)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _diff(a: Any, b: Any, prefix: str = '') -> list:
  """Paths where two JSON-like trees differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in sorted(set(a) | set(b)):
      out += _diff(a.get(key), b.get(key), f'{prefix}.{key}' if prefix
                   else str(key))
    return out
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    a, b = list(a), list(b)
  return [] if a == b else [f'{prefix}: {a!r} -> {b!r}']


# How the model computes, not what it is: same parameters, same function up
# to rounding. A run may resume with other values (bfloat16 after float32,
# remat to fit a smaller card, cuDNN attention on a GPU). The model's other
# top-level option, `gelu_approximate`, changes the function: not here.
COMPUTE_OPTIONS = ('dtype', 'remat', 'query_chunk_size', 'attention_impl')


def _split_compute_options(description: Dict[str, Any]):
  """(description without the perceiver's compute options, those options)."""
  description = json.loads(json.dumps(description))
  perceiver = description.get('perceiver')
  options = {}
  if isinstance(perceiver, dict):
    options = {k: perceiver.pop(k) for k in COMPUTE_OPTIONS if k in perceiver}
  return description, options


def has_checkpoints(workdir: str) -> bool:
  ckpt = os.path.join(workdir, CHECKPOINT_DIR)
  return os.path.isdir(ckpt) and any(
      name.isdigit() for name in os.listdir(ckpt))


def check_workdir(workdir: str, description: Dict[str, Any],
                  overwrite: bool) -> None:
  """Refuses a workdir whose checkpoints belong to another model.

  Compute options (`COMPUTE_OPTIONS`) may differ from the stored run's:
  they are logged, not refused.

  Args:
    workdir: the run directory.
    description: JSON model description of this run (models.build).
    overwrite: move the other model's checkpoints aside instead of failing.

  Raises:
    ValueError: the workdir holds checkpoints of a different model.
  """
  model_file = os.path.join(workdir, MODEL_FILE)
  if has_checkpoints(workdir) and os.path.exists(model_file):
    old, old_options = _split_compute_options(read_json(model_file))
    new, new_options = _split_compute_options(description)
    for change in _diff(old_options, new_options):
      logging.info('Resuming with another compute option (%s).', change)
    differences = _diff(old, new)
    if differences:
      if not overwrite:
        raise ValueError(
            f'workdir {workdir} holds checkpoints of a different model '
            f'({len(differences)} difference(s): '
            f'{"; ".join(differences[:5])}). Use another --workdir, or pass '
            '--config.overwrite=True to move the old checkpoints aside to '
            f'{CHECKPOINT_DIR}.replaced-<time>/ (nothing is deleted).')
      aside = os.path.join(workdir, f'{CHECKPOINT_DIR}.replaced-'
                           f'{time.strftime("%Y%m%d-%H%M%S")}')
      if jax.process_index() == 0:
        os.rename(os.path.join(workdir, CHECKPOINT_DIR), aside)
        os.replace(model_file, os.path.join(aside, MODEL_FILE))
      logging.warning('overwrite=True: moved the previous checkpoints to %s.',
                      aside)
  elif has_checkpoints(workdir) and not os.path.exists(model_file):
    raise ValueError(f'workdir {workdir} has checkpoints but no {MODEL_FILE}; '
                     'it was not written by experiments.train. Use another '
                     '--workdir.')


class Checkpointer:
  """Latest-N + best-by-metric Orbax checkpoints in `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 2, best_metric: str = '',
               best_mode: str = 'max', async_save: bool = True):
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
    worst = float('-inf') if best_mode == 'max' else float('inf')
    best_fn = ((lambda m: float(m.get(best_metric, worst))) if best_metric
               else None)
    policies = [ocp.checkpoint_managers.LatestN(n=max(int(keep), 1))]
    if best_fn is not None:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=best_mode == 'min', n=1,
          keep_checkpoints_without_metrics=False))
    # best_fn/best_mode are passed too: with them Orbax writes each step's
    # metrics to disk, so `best_step` still works after a restart.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            policies),
        best_fn=best_fn, best_mode=best_mode,
        enable_async_checkpointing=async_save, create=True)
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def best_step(self) -> Optional[int]:
    """Step with the best saved metric (None if none carries metrics)."""
    if not self.best_metric:
      return None
    steps = [s for s in self.manager.all_steps()
             if self.manager.metrics(s) is not None]
    return self.manager.best_step() if steps else None

  def save(self, step: int, state: PyTree,
           metrics: Optional[Dict[str, float]] = None) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state),
                      metrics=metrics, force=True)

  def restore(self, step: int, abstract_state: PyTree) -> PyTree:
    return self.manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class PreemptionFlag:
  """Set by SIGTERM; the loop polls `.requested` and saves before exiting."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def install(self) -> 'PreemptionFlag':
    def handler(signum, frame):  # pylint: disable=unused-argument
      logging.warning('SIGTERM received: saving a checkpoint, then exiting.')
      self.requested = True
    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # Not the main thread (e.g. some test runners).
      self._previous = None
    return self

  def uninstall(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
