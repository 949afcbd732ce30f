"""A thin wrapper over Orbax's CheckpointManager for the training loop.

Why: a run must resume by itself after a crash or preemption, keep the
latest few checkpoints plus the best one by an eval metric, and say in one
line which steps are intact when a read or a write fails. Orbax does the
atomic, async saving; this module adds those rules and `PreemptionFlag`
(SIGTERM sets a flag; the loop saves and exits cleanly). Where the
checkpoints live inside a workdir, and which runs they belong to, is
`experiments.workdir`'s business.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
from typing import Any, Callable, Dict, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

PyTree = Any


class CorruptCheckpointError(ValueError):
  """A checkpoint step's files cannot be read (truncated, overwritten)."""

  def __init__(self, message: str, step: int = -1, cause: str = ''):
    super().__init__(message)
    self.step = step
    self.cause = cause


# What TensorStore (under Orbax) says when a step's files are truncated,
# overwritten or gone, as opposed to a state that does not fit the files.
_READ_ERROR = re.compile(
  r'OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|Error reading|'
  r'corrupt|truncated|unexpected end',
  re.IGNORECASE,
)


def _is_read_error(e: Exception) -> bool:
  if isinstance(e, json.JSONDecodeError):  # A truncated metadata file.
    return True
  if not isinstance(e, (ValueError, KeyError, TypeError)):
    return True
  return bool(_READ_ERROR.search(str(e)[:4000]))


def short_cause(e: BaseException) -> str:
  """One line of what went wrong, out of Orbax's and TensorStore's pages
  (which end in a multi-line repr of the array's spec)."""
  full = str(e)
  text = re.split(
    r'\s*(?:See full TensorStore details|\[tensorstore_spec)', full, 1
  )[0]
  text = ' '.join(text.split())
  array = re.search(r"'path': '([^'/]+)/'", full)  # The array's OCDBT key.
  if 'while reading array' in text and array:
    text = f'error reading array {array.group(1)}'
  elif len(text) > 160:
    text = text.rsplit(': ', 1)[-1]
  return f'{type(e).__name__}: {text[:160]}'


_WRITE_ERROR = re.compile(
  r'RESOURCE_EXHAUSTED|No space left|Error writing|'
  r'Permission denied|Read-only file system|'
  r'Disk quota exceeded'
)


class CheckpointWriteError(ValueError):
  """A checkpoint could not be written (disk full, permissions)."""


def _silence_orphaned_reads() -> None:
  """After a failed read, TensorStore still completes the step's other
  reads and hands each result to Orbax's event loop, which the failure
  closed: Python prints "RuntimeError: Event loop is closed" per array
  after our one-line error, and asyncio logs each failed read that nobody
  awaited. Those reports (and only those) are dropped. Installed once per
  process, however many reads fail."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_orphaned_reads', False):
    return

  def hook(report):
    if isinstance(
      report.exc_value, RuntimeError
    ) and 'Event loop is closed' in str(report.exc_value):
      return
    previous(report)

  hook.drops_orphaned_reads = True
  sys.unraisablehook = hook
  # The same reads, failed too, reported by asyncio with a page each.
  logging.getLogger('asyncio').addFilter(
    lambda record: (
      not (
        'exception was never retrieved' in str(record.msg)
        and re.search(r'/orbax/|tensorstore', record.getMessage())
      )
    )
  )


class Checkpointer:
  """Latest-N + best-by-metric Orbax checkpoints in `directory`."""

  def __init__(
    self,
    directory: str,
    keep: int = 2,
    best_metric: str = '',
    best_mode: str = 'max',
    async_save: bool = True,
  ):
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}.")
    worst = float('-inf') if best_mode == 'max' else float('inf')
    best_fn = (
      (lambda m: float(m.get(best_metric, worst))) if best_metric else None
    )
    policies = [ocp.checkpoint_managers.LatestN(n=max(int(keep), 1))]
    if best_fn is not None:
      policies.append(
        ocp.checkpoint_managers.BestN(
          get_metric_fn=best_fn,
          reverse=best_mode == 'min',
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    # best_fn/best_mode are passed too: with them Orbax writes each step's
    # metrics to disk, so `best_step` still works after a restart.
    options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
        policies
      ),
      best_fn=best_fn,
      best_mode=best_mode,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._write_error = None

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def best_step(self) -> Optional[int]:
    """Step with the best saved metric (None if none carries metrics, or
    if a step's metrics file cannot be read: then 'best' is unknown)."""
    if not self.best_metric:
      return None
    try:
      steps = [
        s
        for s in self.manager.all_steps()
        if self.manager.metrics(s) is not None
      ]
      return self.manager.best_step() if steps else None
    except ValueError as e:  # json.JSONDecodeError: a truncated file.
      logging.warning(
        'the saved metrics in %s cannot be read (%s); no step counts as best.',
        self.directory,
        short_cause(e),
      )
      return None

  def save(
    self, step: int, state: PyTree, metrics: Optional[Dict[str, float]] = None
  ) -> None:
    with self._writing():
      self.manager.save(
        step, args=ocp.args.StandardSave(state), metrics=metrics, force=True
      )

  def restore(self, step: int, abstract_state: PyTree) -> PyTree:
    """The whole training state of `step` (for resuming)."""
    return self._restore(step, ocp.args.StandardRestore(abstract_state))

  def restore_variables(self, step: int, abstract_variables: PyTree) -> PyTree:
    """Only `params` and `model_state` of `step` (for predicting and
    evaluating): the optimizer state is neither read nor needed, so a
    workdir stays usable whatever its optimizer settings say."""
    restore_args = jax.tree_util.tree_map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_variables
    )
    return self._restore(
      step,
      ocp.args.PyTreeRestore(
        item=abstract_variables, restore_args=restore_args, partial_restore=True
      ),
    )

  def _restore(self, step: int, args) -> PyTree:
    _silence_orphaned_reads()  # Now: the first reports come before we hear.
    try:
      return self.manager.restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_read_error(e):
        raise  # The state does not fit: the caller says what differs.
      cause = short_cause(e)
      others = sorted(s for s in self.all_steps() if s != step)
      raise CorruptCheckpointError(
        f'checkpoint step {step} in {self.directory} cannot be read; it is '
        f'corrupt or truncated ({cause}). Other steps: {others or "none"}. '
        + (
          f'--checkpoint=latest uses the newest intact step, '
          f'--checkpoint={others[-1]} picks one; a resumed run moves this '
          'step aside by itself.'
          if others
          else 'Train again in a new --workdir.'
        ),
        step,
        cause,
      ) from e

  def move_aside(self, step: int, destination: str) -> str:
    """Moves step `step` to `destination`/<step> (never deleted; Orbax
    does not look there) and forgets it; returns the new path."""
    target = os.path.join(destination, str(step))
    n = 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(destination, f'{step}-{n}')
    if jax.process_index() == 0:
      os.makedirs(destination, exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'moved checkpoint {step} aside')
    self.manager.reload()
    return target

  def restore_newest_intact(
    self, read: Callable[[int], PyTree], on_corrupt: Callable[..., None]
  ) -> Tuple[Optional[int], Optional[PyTree]]:
    """(step, read(step)) of the newest step that reads, else (None,
    None). `on_corrupt(error)` hears of each step that does not read; it
    may move the step aside (`move_aside`)."""
    tried = set()
    while True:
      steps = [s for s in self.all_steps() if s not in tried]
      if not steps:
        return None, None
      step = max(steps)
      tried.add(step)
      try:
        return step, read(step)
      except CorruptCheckpointError as e:
        on_corrupt(e)

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
      partial = [
        name
        for name in os.listdir(self.directory)
        if '.orbax-checkpoint-tmp' in name
      ]
      for name in partial:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      cause = re.search(
        r'[^:"]*(No space left on device|Permission denied|'
        r'Read-only file system|Disk quota exceeded)',
        str(e),
      )
      steps = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
      self._write_error = CheckpointWriteError(
        f'saving a checkpoint in {self.directory} failed: '
        f'{cause.group(1) if cause else str(e)[:200]}. Removed the partial '
        f'step ({", ".join(partial) or "none"}); intact steps: '
        f'{steps or "none"}. Free space (or use a --workdir on another '
        'disk) and run the same command to resume from '
        f'{"step " + str(steps[-1]) if steps else "the start"}.'
      )
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
