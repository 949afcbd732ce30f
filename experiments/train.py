r"""Launcher: train (and evaluate) one experiment config in a workdir.

  python -m experiments.train --config=configs/quickstart.py \
      --workdir=/tmp/quickstart [--config.optimizer.learning_rate=1e-3 ...]

Runs resume automatically from the workdir's latest checkpoint. Multi-host:
run the same command on every host; `jax.distributed.initialize()` is called
when --coordinator_address or --num_processes is given (on Cloud TPU / SLURM
pass --num_processes=-1 to let JAX detect the cluster).
"""

import logging
import sys

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
  settings = (
    process_tuning.configure_process()
  )  # Before NumPy/JAX (process_tuning.py).
  logging.info('process settings: %s', settings)
  if _NUM_PROCESSES.value == -1:
    import jax  # pylint: disable=g-import-not-at-top

    jax.distributed.initialize()
  else:
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


if __name__ == '__main__':
  cli.check_overrides_or_exit(sys.argv)
  app.run(main)
