"""Progress of training and of evaluation loops: bars, rates and ETAs.

Training: `TrainProgress` says when the first step is compiling (minutes
for big models) and starts its bar after that step, so the rate and ETA are
those of the real steps, not of the compiler; `Throughput` times the steps
since the last log line (compilation excluded) and `log_train_metrics`
writes one record and one line per log step.

Evaluation (every task's, and tiled flow folders):

Why: an evaluation can take hours (the official flow model on CPU tiles each
Sintel frame ~6 times at ~7 s a tile) and used to print nothing until the
final table. With a bar (`bars_wanted`) a tqdm bar goes to stderr; without
one a log line with the count, rate and ETA is written at most every
`log_every_s` seconds, so short evaluations and tests stay quiet. Only
process 0 reports.

Bars are drawn only for a person at a terminal (`bars_wanted`): in a log
file or a CI log a bar's carriage returns and cursor-up codes (`ESC[A`, from
an eval bar under the train bar) are garbage, and the log lines already
carry the rate and ETA. While a bar is open, log lines go through
`tqdm.write` (`_LogsAboveBars`), so a line never lands inside a bar's line.
"""

import contextlib
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

import jax
import tqdm

from experiments import compile_cache
from experiments import workdir as workdir_lib


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}:{rest // 60:02d}:{rest % 60:02d}'


def stderr_is_terminal() -> bool:
  try:
    return _real_stderr().isatty()
  except (AttributeError, ValueError):  # No isatty, or a closed stream.
    return False


def bars_wanted(config) -> bool:
  """Bars for a person at a terminal: `config.progress_bar`, process 0 and
  stderr a terminal (module docstring)."""
  return (
    bool(config.get('progress_bar', False))
    and jax.process_index() == 0
    and stderr_is_terminal()
  )


def _real_stderr():
  """sys.stderr, or the stream under it while `_LogsAboveBars` is active
  (bars must draw on the terminal itself, not through `tqdm.write`)."""
  stream = sys.stderr
  return stream.stream if isinstance(stream, _BarSafeStream) else stream


def _open_bar(**kwargs) -> tqdm.tqdm:
  bar = tqdm.tqdm(
    file=_real_stderr(), dynamic_ncols=True, mininterval=1.0, **kwargs
  )
  _LogsAboveBars.enter()
  return bar


def _close_bar(bar: tqdm.tqdm) -> None:
  bar.close()
  _LogsAboveBars.exit()


class _BarSafeStream:
  """A stream that writes whole lines with `tqdm.write`, which clears the
  open bars, writes the line and draws the bars again below it."""

  def __init__(self, stream):
    self.stream, self._pending = stream, ''

  def write(self, text: str) -> int:
    *lines, self._pending = (self._pending + text).split('\n')
    for line in lines:
      tqdm.tqdm.write(line, file=self.stream)
    return len(text)

  def flush(self) -> None:
    if self._pending:
      tqdm.tqdm.write(self._pending, file=self.stream)
      self._pending = ''
    self.stream.flush()

  def __getattr__(self, name):  # isatty, fileno, encoding, ...
    return getattr(self.stream, name)


class _LogsAboveBars:
  """While any bar is open, console log handlers (absl's and plain
  `logging.StreamHandler`s on stderr) and sys.stderr write through
  `_BarSafeStream`; restored when the last bar closes."""

  _depth = 0
  _saved: List[tuple] = []  # (object, attribute, original value)

  @classmethod
  def enter(cls) -> None:
    cls._depth += 1
    if cls._depth > 1:
      return
    real = sys.stderr
    safe = _BarSafeStream(real)
    cls._saved = [(sys, 'stderr', real)]
    for handler in logging.getLogger().handlers:
      # absl's ABSLHandler writes through its `python_handler`.
      for h in (handler, getattr(handler, 'python_handler', None)):
        if isinstance(h, logging.StreamHandler) and h.stream is real:
          cls._saved.append((h, 'stream', h.stream))
          h.stream = safe
    sys.stderr = safe

  @classmethod
  def exit(cls) -> None:
    cls._depth = max(cls._depth - 1, 0)
    if cls._depth:
      return
    for obj, name, value in reversed(cls._saved):
      getattr(obj, name).flush()
      setattr(obj, name, value)
    cls._saved = []


class EvalProgress:
  """Counts evaluated items; use as a context manager and call `update(n)`.

  Args:
    config: the run config (reads `progress_bar`).
    total: expected number of items, or None / <= 0 if unknown.
    unit: what is counted ('image', 'pair', 'example').
    desc: the bar's / log lines' label.
    log_every_s: seconds between log lines when there is no bar.
  """

  def __init__(
    self,
    config,
    total: Optional[int],
    unit: str = 'example',
    desc: str = 'eval',
    log_every_s: float = 30.0,
  ):
    self.enabled = jax.process_index() == 0
    self.total = int(total) if total and total > 0 else None
    self.unit, self.desc, self.log_every_s = unit, desc, log_every_s
    self.count = 0
    self.start = self.last_log = time.monotonic()
    self.bar = None
    if not self.enabled:
      return
    logging.info(
      '%s: %s %ss',
      desc,
      self.total if self.total is not None else 'an unknown number of',
      unit,
    )
    if bars_wanted(config):
      self.bar = _open_bar(total=self.total, unit=unit, desc=desc, leave=False)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def update(self, n: int = 1) -> None:
    if not self.enabled:
      return
    self.count += int(n)
    if self.bar is not None:
      self.bar.update(int(n))
      return
    now = time.monotonic()
    if now - self.last_log >= self.log_every_s:
      self.last_log = now
      logging.info('%s', self.line(now))

  def line(self, now: Optional[float] = None) -> str:
    """'eval: 120/200 images, 3.1 image/s, elapsed 0:00:39, ETA 0:00:26'."""
    elapsed = max((now or time.monotonic()) - self.start, 1e-9)
    rate = self.count / elapsed
    done = (
      f'{self.count}/{self.total}'
      if self.total is not None
      else f'{self.count}'
    )
    text = (
      f'{self.desc}: {done} {self.unit}s, {rate:.3g} {self.unit}/s, '
      f'elapsed {_duration(elapsed)}'
    )
    if self.total is not None and rate > 0:
      text += f', ETA {_duration(max(self.total - self.count, 0) / rate)}'
    return text

  def close(self) -> None:
    if not self.enabled:
      return
    if self.bar is not None:
      _close_bar(self.bar)
      self.bar = None
    if self.count:
      logging.info('%s', self.line().split(', ETA')[0])
    self.enabled = False


class Throughput:
  """Examples per second and time left, from the steps since the last log."""

  def __init__(self, batch_size: int, num_steps: int, step: int):
    self.batch_size, self.num_steps = int(batch_size), int(num_steps)
    self.start, self.step = time.time(), step

  def restart(self, step: int, metrics=None) -> None:
    if metrics is not None:
      jax.block_until_ready(metrics)
    self.start, self.step = time.time(), step

  def rate(self, step: int) -> float:
    elapsed = time.time() - self.start
    return (step - self.step) * self.batch_size / max(elapsed, 1e-9)


def format_eta(seconds: float) -> str:
  return _duration(max(seconds, 0))


def log_train_metrics(
  writer,  # experiments.workdir.metric_writer.MetricWriter
  step: int,
  metrics: Dict[str, Any],
  timer: Throughput,
) -> None:
  """One metrics.jsonl record and one log line for a train step."""
  rate = timer.rate(step)
  record = {
    'train_loss': metrics['loss'],
    'grad_norm': metrics['grad_norm'],
    'learning_rate': metrics['learning_rate'],
  }
  speed = ''
  if rate > 0:  # Not on the first (compiling) step.
    eta = (timer.num_steps - step) * timer.batch_size / rate
    record['examples_per_sec'] = rate
    speed = f'  {rate:.1f} examples/s  ETA {format_eta(eta)}'
  writer.write(step, record)
  logging.info(
    'step %d/%d  loss %.4f  grad_norm %.3f  lr %.3g%s',
    step,
    timer.num_steps,
    metrics['loss'],
    metrics['grad_norm'],
    metrics['learning_rate'],
    speed,
  )
  timer.restart(step)


def format_metrics(metrics: Dict[str, Any]) -> str:
  return '  '.join(
    f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
    for k, v in metrics.items()
  )


class TrainProgress:
  """The training loop's notice of compilation and its bar (`bars_wanted`).

  Why the bar opens after the first step: that step includes compiling
  (seconds to minutes), and a bar opened before it reports the compile as
  the step rate (`1/562 [00:21<3:19:56, 21.38s/step]` for a run of a few
  minutes).
  """

  def __init__(self, config, start: int, total: int):
    self.total = int(total)
    self.enabled = jax.process_index() == 0
    self.use_bar = bars_wanted(config)
    self.bar = None

  @contextlib.contextmanager
  def compiling(self, cache_dir=None):
    """Around the first step's compilation: says so, how long it took, and
    whether the step came from the compilation cache (`compile_cache`)."""
    begin = time.monotonic()
    if self.enabled:
      logging.info(
        'compiling the train step (once per run; not counted in the '
        'rate or ETA)...'
      )
    with compile_cache.watch(cache_dir) as seen:
      yield
    if not self.enabled:
      return
    took = time.monotonic() - begin
    if seen['loaded']:
      logging.info('loaded from the compilation cache in %.1f s.', took)
    elif seen['kept']:
      logging.info(
        'compiled in %.1f s (kept in %s for a restart).', took, cache_dir
      )
    else:
      logging.info('compiled in %.1f s.', took)

  def update(self, done: int) -> None:
    """`done` steps of the run are finished."""
    if not self.use_bar:
      return
    if self.bar is None:
      self.bar = _open_bar(total=self.total, initial=done, unit='step')
    else:
      self.bar.update(done - self.bar.n)

  def close(self) -> None:
    if self.bar is not None:
      _close_bar(self.bar)
      self.bar = None


def where_outputs_go(workdir: str) -> str:
  """The log line at the start of a run: what is written where."""
  return (
    f'writing to {os.path.abspath(workdir)}: '
    f'{workdir_lib.CHECKPOINT_DIR}/ (model and optimizer state, to resume), '
    f'{workdir_lib.TENSORBOARD_DIR}/ (TensorBoard events), '
    f'{workdir_lib.METRICS_FILE} (one JSON line per logged step and '
    'evaluation).'
  )
