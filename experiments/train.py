r"""Launcher: train (and evaluate) one experiment config in a workdir.

  python -m experiments.train --config=configs/quickstart.py \
      --workdir=/tmp/quickstart [--config.optimizer.learning_rate=1e-3 ...]

Runs resume automatically from the workdir's latest checkpoint. Multi-host:
run the same command on every host with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I, or inside a SLURM step of several tasks
with no flags (detected), or --num_processes=-1 to let JAX detect any
cluster it knows (experiments/multihost.py; examples/slurm/train.sbatch).
"""

import json
import os
import shlex
import sys
from typing import List

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import process_tuning

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Experiment config file, e.g. configs/quickstart.py or '
  'configs/glue_bytes.py:cola.',
  lock_config=True,
)
flags.FLAGS['config'].parser = cli.ConfigFileParser('config')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', '', 'host:port of process 0 (multi-process).'
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', 1, 'Number of processes; -1 = auto-detect cluster.'
)
_PROCESS_ID = flags.DEFINE_integer('process_id', 0, 'This process id.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  # Before NumPy/JAX (process_tuning.py).
  settings = process_tuning.configure_process()
  process_tuning.log_process_settings(settings)
  cli.maybe_initialize_distributed(
    _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
  )
  from experiments import predict_lib  # pylint: disable=g-import-not-at-top
  from experiments import train_lib  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  with cli.one_line_errors(train_lib.NonFiniteError):
    result = train_lib.train_and_evaluate(config, _WORKDIR.value)
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_index() == 0:
    print(
      f'final step {result["step"]}: eval '
      + '  '.join(
        f'{k}={v:.4f}' if isinstance(v, float) else f'{k}={v}'
        for k, v in result['eval'].items()
      )
    )
  if config.predict_examples > 0:
    predict_lib.print_eval_predictions(result, int(config.predict_examples))
  if jax.process_index() == 0:
    print('\n'.join(next_commands(_WORKDIR.value, config)))


def next_commands(workdir: str, config) -> List[str]:
  """The commands that look at a finished run, for the end of its output.

  Why: a first run ends with a workdir full of files; these say what to do
  with them (the predict example is the task's `predict_example`).
  """
  # Not at the top: imports JAX (after `configure_process`).
  from experiments import tasks  # pylint: disable=g-import-not-at-top
  from experiments import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  quoted = shlex.quote(workdir)
  info = {}
  path = os.path.join(workdir, workdir_lib.DATA_INFO_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      info = json.load(f)
  except (OSError, ValueError):
    pass
  example = tasks.task_class(config.task)(config).predict_example(info)
  return [
    '',
    f'The run is in {workdir}. To look at it:',
    '  tensorboard --logdir '
    + shlex.quote(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))
    + '   # pip install tensorboard',
    '  cat ' + shlex.quote(os.path.join(workdir, workdir_lib.METRICS_FILE)),
    f'  python -m experiments.evaluate --workdir={quoted}',
    f'  python -m experiments.predict --workdir={quoted} {example}',
  ]


if __name__ == '__main__':
  cli.check_overrides_or_exit(sys.argv)
  cli.list_config_fields_in_help(sys.argv, flags.FLAGS)
  app.run(main)
