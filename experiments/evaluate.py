r"""Launcher: evaluate a trained workdir, or summarise GLUE over workdirs.

  python -m experiments.evaluate --workdir=/tmp/glue/cola [--checkpoint=best]
      [--split=validation_mismatched]
  python -m experiments.evaluate --glue_summary=/tmp/glue
  python -m experiments.evaluate --config=configs/imagenet.py:fourier \
      --config.init_from=hf:deepmind/vision-perceiver-fourier  # no workdir

Prints the metrics as a table and appends them to the workdir's
metrics.jsonl. The model and data settings come from the workdir's
config.json, unless --config is given (e.g. to evaluate on other data:
`--config=configs/imdb_bytes.py:tiny --config.data.source=csv:...`); the
model itself always comes from the workdir. `--config.*` overrides without
--config apply to the workdir's config.json (e.g.
`--workdir=DIR --config.data.eval_split=test`); those that would change the
model are refused.
"""

import sys

from absl import app
from absl import flags

from ml_collections import config_flags

from experiments import cli
from experiments import process_tuning

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  "Optional config (default: the workdir's config.json).",
  lock_config=True,
)
flags.FLAGS['config'].parser = cli.ConfigFileParser('config')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir to evaluate.')
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint',
  'latest',
  "'latest' (the newest step that reads; a corrupt newer one is named "
  "and skipped), 'best' or a step number (read as asked).",
)
_SPLIT = flags.DEFINE_string('split', '', "Eval split ('' = the config's).")
_GLUE_SUMMARY = flags.DEFINE_string(
  'glue_summary', '', 'Directory of GLUE workdirs to summarise.'
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  process_tuning.configure_process()  # Before NumPy/JAX are imported (process_tuning.py).
  from experiments import eval_lib  # pylint: disable=g-import-not-at-top

  with cli.one_line_errors():
    if _GLUE_SUMMARY.value:
      summary = eval_lib.glue_summary(_GLUE_SUMMARY.value)
      if not summary['rows']:
        raise FileNotFoundError(
          f'no evaluated GLUE workdirs under {_GLUE_SUMMARY.value} (looked '
          'for config.json with glue_task and eval lines in metrics.jsonl).'
        )
      # One row per task and split: the best of its runs (`runs` of them).
      columns = [
        'task',
        'split',
        'score',
        'accuracy',
        'f1',
        'matthews_corr',
        'pearson',
        'spearman',
        'step',
        'runs',
        'workdir',
      ]
      print(eval_lib.format_table(summary['rows'], columns))
      average = summary['average']
      print(
        f'\nGLUE average over {len(summary["scores"])} task(s) (WNLI '
        f'excluded): {average:.2f}'
        if average is not None
        else ''
      )
      if summary['missing']:
        print(f'missing tasks: {", ".join(summary["missing"])}')
      return
    if not _WORKDIR.value:
      config = _CONFIG.value
      if config is None or not config.init_from:
        raise app.UsageError(
          'pass --workdir=DIR, --glue_summary=DIR, or '
          '--config=... with --config.init_from=... '
          '(evaluate an imported checkpoint).'
        )
      result = eval_lib.evaluate_pretrained(config)
      print(f'{config.init_from}: {result["data"]}')
      print(eval_lib.metrics_table(result))
      return
    result = eval_lib.evaluate_workdir(
      _WORKDIR.value, _CHECKPOINT.value, _SPLIT.value, _CONFIG.value
    )
  print(f'{_WORKDIR.value}: checkpoint step {result["step"]}, {result["data"]}')
  print(eval_lib.metrics_table(result))


if __name__ == '__main__':
  sys.argv = cli.with_workdir_config(sys.argv)
  cli.check_overrides_or_exit(sys.argv, model_from_workdir=True)
  cli.list_config_fields_in_help(sys.argv, flags.FLAGS)
  app.run(main)
