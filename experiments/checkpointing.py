"""A thin wrapper over Orbax's CheckpointManager for the training loop.

Why: a workdir must resume by itself after a crash or preemption, keep the
latest few checkpoints plus the best one by an eval metric, and never mix or
destroy checkpoints of a different model. Orbax does the atomic, async
saving; this module adds the workdir rules:

* `workdir/checkpoints/<step>/`: Orbax steps (latest N + best by metric);
* `workdir/model.json` and `config.json`: what model and run the
  checkpoints belong to; a run with a different model, or other settings
  than those a resume may change (`RESUMABLE_FIELDS`), is refused unless
  `overwrite=True`, which *moves* the old run aside
  (`replaced-<time>/`, a complete workdir), never deletes it;
* `PreemptionFlag`: SIGTERM sets a flag; the loop saves and exits cleanly.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from typing import Any, Dict, Optional

import jax
import orbax.checkpoint as ocp

PyTree = Any
CHECKPOINT_DIR = 'checkpoints'
MODEL_FILE = 'model.json'
CONFIG_FILE = 'config.json'
DATA_INFO_FILE = 'data_info.json'


class CorruptCheckpointError(ValueError):
  """A checkpoint step's files cannot be read (truncated, overwritten)."""


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


# Config fields a resumed run may change: how long and how often (extending
# a run is a normal thing to do), what and how it evaluates, where data
# already prepared lives, and how the model computes. Any other difference
# means the workdir belongs to another experiment (another task, data,
# optimizer, seed or starting point).
RESUMABLE_FIELDS = (
    'num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'eval_batch_size',
    'max_eval_examples', 'eval_metrics', 'eval_tile_overlap',
    'eval_tile_batch', 'predict_examples', 'progress_bar', 'overwrite',
    'disable_most_optimizations', 'shard_params_min_size', 'best_metric',
    'best_mode',
    'data.eval_split', 'data.eval_source', 'data.num_eval_examples',
    'data.class_names', 'data.num_workers', 'data.data_dir',
    'data.manual_dir') + tuple(f'model.{k}' for k in COMPUTE_OPTIONS)
# Everything a run writes at the top of its workdir besides checkpoints/;
# `overwrite` moves these aside with the checkpoints.
RUN_FILES = (MODEL_FILE, CONFIG_FILE, DATA_INFO_FILE, 'metrics.jsonl', 'tb')


def _config_differences(workdir: str, config: Dict[str, Any]) -> list:
  """What differs from the workdir's config.json, beyond RESUMABLE_FIELDS."""
  path = os.path.join(workdir, CONFIG_FILE)
  if config is None or not os.path.exists(path):
    return []
  old = read_json(path)
  return [d for d in _diff(old, json.loads(json.dumps(config)))
          if d.split(':', 1)[0] not in RESUMABLE_FIELDS and
          _has_field(old, d.split(':', 1)[0])]


def _has_field(tree: Dict[str, Any], dotted: str) -> bool:
  """Whether the stored config has the field: one added to the configs
  after the run started is not a difference (the run used its default)."""
  for key in dotted.split('.'):
    if not isinstance(tree, dict) or key not in tree:
      return False
    tree = tree[key]
  return True


def check_workdir(workdir: str, description: Dict[str, Any],
                  overwrite: bool,
                  config: Optional[Dict[str, Any]] = None) -> None:
  """Refuses a workdir whose checkpoints belong to another model or run.

  Compute options (`COMPUTE_OPTIONS`) may differ from the stored run's:
  they are logged, not refused. With `config` (the new run's, as a dict),
  it is compared with the workdir's config.json too: fields outside
  `RESUMABLE_FIELDS` must match, so a workdir of another experiment (say
  CoLA's, when this is SST-2 with the same model) is not resumed on the
  wrong data or optimizer.

  Args:
    workdir: the run directory.
    description: JSON model description of this run (models.build).
    overwrite: move the other run aside instead of failing.
    config: the new run's config dict (config.to_dict()).

  Raises:
    ValueError: the workdir holds checkpoints of a different model or run.
  """
  model_file = os.path.join(workdir, MODEL_FILE)
  if has_checkpoints(workdir) and os.path.exists(model_file):
    old, old_options = _split_compute_options(read_json(model_file))
    new, new_options = _split_compute_options(description)
    model_changes = _diff(old, new)
    config_changes = [] if model_changes else _config_differences(workdir,
                                                                  config)
    if not model_changes and not config_changes:
      for change in _diff(old_options, new_options):
        logging.info('Resuming with another compute option (%s).', change)
      return
    what, changes = (('a different model', model_changes) if model_changes
                     else ('another run (other settings)', config_changes))
    if not overwrite:
      raise ValueError(
          f'workdir {workdir} holds checkpoints of {what} '
          f'({len(changes)} difference(s): {"; ".join(changes[:5])}). Use '
          'another --workdir, or pass --config.overwrite=True to move the '
          'old run aside to replaced-<time>/ in it (nothing is deleted).')
    if jax.process_index() == 0:
      aside = move_run_aside(workdir)
      logging.warning('overwrite=True: moved the previous run to %s.', aside)
  elif has_checkpoints(workdir) and not os.path.exists(model_file):
    raise ValueError(f'workdir {workdir} has checkpoints but no {MODEL_FILE}; '
                     'it was not written by experiments.train. Use another '
                     '--workdir.')


def move_run_aside(workdir: str) -> str:
  """Moves checkpoints/ and the run's files into `replaced-<time>/` (itself
  a complete workdir: evaluate and predict still work on it)."""
  stamp = time.strftime('%Y%m%d-%H%M%S')
  aside = os.path.join(workdir, f'replaced-{stamp}')
  n = 1
  while os.path.exists(aside):
    n += 1
    aside = os.path.join(workdir, f'replaced-{stamp}-{n}')
  os.makedirs(aside)
  for name in (CHECKPOINT_DIR,) + RUN_FILES:
    if os.path.exists(os.path.join(workdir, name)):
      os.rename(os.path.join(workdir, name), os.path.join(aside, name))
  return aside


# What TensorStore (under Orbax) says when a step's files are truncated,
# overwritten or gone, as opposed to a state that does not fit the files.
_READ_ERROR = re.compile(r'OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|Error reading|'
                         r'corrupt|truncated|unexpected end', re.IGNORECASE)


def _is_read_error(e: Exception) -> bool:
  if not isinstance(e, (ValueError, KeyError, TypeError)):
    return True
  return bool(_READ_ERROR.search(str(e)[:4000]))


_WRITE_ERROR = re.compile(r'RESOURCE_EXHAUSTED|No space left|Error writing|'
                          r'Permission denied|Read-only file system|'
                          r'Disk quota exceeded')


class CheckpointWriteError(ValueError):
  """A checkpoint could not be written (disk full, permissions)."""


def _silence_orphaned_reads() -> None:
  """After a failed read, TensorStore still completes the step's other
  reads and hands each result to Orbax's event loop, which the failure
  closed: Python prints "RuntimeError: Event loop is closed" per array
  after our one-line error. Those reports (and only those) are dropped.
  Installed once per process, however many reads fail."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_orphaned_reads', False):
    return

  def hook(report):
    if (isinstance(report.exc_value, RuntimeError) and
        'Event loop is closed' in str(report.exc_value)):
      return
    previous(report)

  hook.drops_orphaned_reads = True
  sys.unraisablehook = hook


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
    self._write_error = None

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
    with self._writing():
      self.manager.save(step, args=ocp.args.StandardSave(state),
                        metrics=metrics, force=True)

  def restore(self, step: int, abstract_state: PyTree) -> PyTree:
    """The whole training state of `step` (for resuming)."""
    return self._restore(step, ocp.args.StandardRestore(abstract_state))

  def restore_variables(self, step: int, abstract_variables: PyTree) -> PyTree:
    """Only `params` and `model_state` of `step` (for predicting and
    evaluating): the optimizer state is neither read nor needed, so a
    workdir stays usable whatever its optimizer settings say."""
    restore_args = jax.tree_util.tree_map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding),
        abstract_variables)
    return self._restore(step, ocp.args.PyTreeRestore(
        item=abstract_variables, restore_args=restore_args,
        partial_restore=True))

  def _restore(self, step: int, args) -> PyTree:
    try:
      return self.manager.restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_read_error(e):
        raise  # The state does not fit: the caller says what differs.
      # Orbax/TensorStore say "error while reading array" with a page of
      # spec; the user needs the step, what it means and what to do.
      others = sorted(s for s in self.all_steps() if s != step)
      _silence_orphaned_reads()
      cause = re.sub(r'\s*\[tensorstore_spec.*', '', str(e), flags=re.S)
      cause = cause.rsplit(': ', 1)[-1][:200]
      raise CorruptCheckpointError(
          f'checkpoint step {step} in {self.directory} cannot be read; it is '
          f'corrupt or truncated ({type(e).__name__}: {cause}). Other steps: '
          f'{others or "none"}. ' +
          (f'Use --checkpoint={others[-1]} to predict or evaluate, or move '
           f'{self.directory}/{step} aside to resume from step {others[-1]}.'
           if others else 'Train again in a new --workdir.')) from e

  def wait(self) -> None:
    with self._writing():
      self.manager.wait_until_finished()

  def close(self) -> None:
    try:
      with self._writing():
        self.manager.wait_until_finished()
    finally:
      self.manager.close()

  @contextlib.contextmanager
  def _writing(self):
    """Turns a failed (asynchronous) save into one error that says which
    checkpoints are intact, after removing the half-written step."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if not _WRITE_ERROR.search(str(e)[:4000]):
        raise
      if self._write_error is not None:
        return  # Reported already; closing meets the same failure again.
      partial = [name for name in os.listdir(self.directory)
                 if '.orbax-checkpoint-tmp' in name]
      for name in partial:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      cause = re.search(r'[^:"]*(No space left on device|Permission denied|'
                        r'Read-only file system|Disk quota exceeded)',
                        str(e))
      steps = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
      self._write_error = CheckpointWriteError(
          f'saving a checkpoint in {self.directory} failed: '
          f'{cause.group(1) if cause else str(e)[:200]}. Removed the partial '
          f'step ({", ".join(partial) or "none"}); intact steps: '
          f'{steps or "none"}. Free space (or use a --workdir on another '
          'disk) and run the same command to resume from '
          f'{"step " + str(steps[-1]) if steps else "the start"}.')
      raise self._write_error from e


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
