"""Progress of training and of evaluation loops: bars, rates and ETAs.

Training: `Throughput` times the steps since the last log line (compilation
excluded) and `log_train_metrics` writes one record and one line per log
step; `progress_bar` is the run's tqdm bar.

Evaluation (every task's, and tiled flow folders):

Why: an evaluation can take hours (the official flow model on CPU tiles each
Sintel frame ~6 times at ~7 s a tile) and used to print nothing until the
final table. With `config.progress_bar` (as for training) a tqdm bar goes to
stderr; without it (the tiny/test presets) a log line with the count, rate
and ETA is written at most every `log_every_s` seconds, so short evaluations
and tests stay quiet. Only process 0 reports.
"""

import logging
import sys
import time
from typing import Any, Dict, Optional

import jax


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}:{rest // 60:02d}:{rest % 60:02d}'


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
    if bool(config.get('progress_bar', False)):
      try:
        import tqdm  # pylint: disable=g-import-not-at-top

        self.bar = tqdm.tqdm(
          total=self.total,
          unit=unit,
          desc=desc,
          file=sys.stderr,
          dynamic_ncols=True,
          mininterval=1.0,
          leave=False,
        )
      except ImportError:
        pass

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
      self.bar.close()
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


def progress_bar(config, start: int, total: int):
  """A tqdm bar on stderr (process 0, config.progress_bar), else None."""
  if not config.progress_bar or jax.process_index() != 0:
    return None
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tqdm.tqdm(
    total=total,
    initial=start,
    unit='step',
    file=sys.stderr,
    dynamic_ncols=True,
    mininterval=1.0,
  )
