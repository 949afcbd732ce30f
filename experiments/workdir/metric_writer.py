"""A training run's metric log: metrics.jsonl lines and TensorBoard events.

Why apart from `workdir`: the writer is the training loop's (it holds a
TensorBoard writer open for the run and cleans up after a crash), while
`workdir` owns the layout it writes into (`METRICS_FILE`, `TENSORBOARD_DIR`)
and reads the records back for evaluate and the GLUE summary.
"""

import json
import logging
import os
from typing import Any, Dict

import jax
import numpy as np

from experiments import workdir as workdir_lib


def drop_records_after(path: str, step: int) -> None:
  """Rewrites metrics.jsonl without the records of steps > `step`."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = []
  for line in lines:
    try:
      if int(json.loads(line).get('step', 0)) <= step:
        keep.append(line)
    except (ValueError, TypeError, AttributeError):
      keep.append(line)  # Not ours to judge: leave it.
  if len(keep) != len(lines):
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
      f.writelines(keep)
    os.replace(tmp, path)
    logging.info(
      'metrics: dropped %d records after step %d (logged before '
      'the last crash, logged again now).',
      len(lines) - len(keep),
      step,
    )


class MetricWriter:
  """metrics.jsonl (one JSON object per line) + TensorBoard events.

  Only process 0 writes. TensorBoard uses tensorboardX (no TensorFlow).
  A run resumed at `start_step` first drops the records written after it
  (a crash after the last checkpoint logged steps the resumed run logs
  again), so each step has one record.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    self.tb = None
    if self.enabled:
      drop_records_after(self.path, start_step)
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top

        # purge_step: TensorBoard hides the events logged after start_step.
        self.tb = tensorboardX.SummaryWriter(
          os.path.join(workdir, workdir_lib.TENSORBOARD_DIR),
          purge_step=int(start_step) if start_step else None,
        )
      except ImportError:
        logging.warning(
          'tensorboardX is not installed; no TensorBoard '
          'events (pip install tensorboardX).'
        )

  def write(self, step: int, metrics: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update(
      {
        k: (
          float(v)
          if isinstance(v, (float, np.floating, np.ndarray, jax.Array))
          else v
        )
        for k, v in metrics.items()
      }
    )
    workdir_lib.append_jsonl(self.path, record)
    if self.tb is not None:
      for k, v in record.items():
        if k != 'step' and isinstance(v, (int, float)):
          self.tb.add_scalar(k, v, int(step))
      self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()
