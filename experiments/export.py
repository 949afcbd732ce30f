r"""Launcher: export a trained or imported model for serving.

  python -m experiments.export --workdir=/tmp/imdb [--output=/tmp/imdb_export]
  python -m experiments.export --config=configs/imagenet.py:fourier \
      --config.init_from=hf:deepmind/vision-perceiver-fourier \
      --output=/tmp/fourier_export

Writes a directory (--format=stablehlo, the default): model.stablehlo (the function, serialized by
jax.export with a symbolic batch and, for text, a symbolic length, for CPU
and CUDA), params.npz (its parameters, an argument of the function),
signature.json (input/output names, shapes, dtypes, preprocessing) and the
run's config.json. experiments/exported_loader.py runs it with only jax and
numpy; `python -m experiments.predict --exported=DIR ...` predicts from it.
--format=onnx writes model.onnx (weights inside; jax2onnx, run with
onnxruntime) with its signature.json instead. An existing --output is refused unless --overwrite (and --overwrite only
replaces an exported artifact).
"""

import os
import sys

from absl import app
from absl import flags

from ml_collections import config_flags

from experiments import cli
from experiments import process_tuning

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Optional config: with --workdir, replaces its config.json; without, '
  'exports the checkpoint of --config.init_from.',
  lock_config=True,
)
flags.FLAGS['config'].parser = cli.ConfigFileParser('config')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained workdir.')
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', 'latest', "'latest', 'best' or a step number."
)
_FORMAT = flags.DEFINE_string('format', 'stablehlo', 'stablehlo or onnx.')
_OUTPUT = flags.DEFINE_string(
  'output', '', 'Artifact directory (default: <workdir>/export).'
)
_OVERWRITE = flags.DEFINE_boolean(
  'overwrite', False, 'Replace an existing artifact at --output.'
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  process_tuning.configure_process()  # Before NumPy/JAX are imported (process_tuning.py).
  from experiments import export_lib  # pylint: disable=g-import-not-at-top
  from experiments import export_onnx  # pylint: disable=g-import-not-at-top

  with cli.one_line_errors():
    export_lib.check_format(_FORMAT.value)
    onnx = _FORMAT.value == 'onnx'
    if onnx and export_onnx.missing():
      raise ValueError(export_onnx.missing())
    output = _OUTPUT.value
    if not _WORKDIR.value:
      config = _CONFIG.value
      if config is None or not config.init_from:
        raise app.UsageError(
          'pass --workdir=DIR, or --config=... with '
          '--config.init_from=... (an imported checkpoint).'
        )
      if not output:
        raise ValueError(
          'give --output=DIR for an imported checkpoint (a workdir '
          'defaults to <workdir>/export).'
        )
      export_lib.check_output(output, _OVERWRITE.value)
      exportable = export_lib.from_init_from(config)
    else:
      output = output or os.path.join(_WORKDIR.value, 'export')
      export_lib.check_output(output, _OVERWRITE.value)
      exportable = export_lib.from_workdir(
        _WORKDIR.value, _CHECKPOINT.value, _CONFIG.value
      )
    if onnx:
      path, sizes = export_onnx.export(exportable, output, _OVERWRITE.value)
    else:
      path, sizes = export_lib.export(exportable, output, _OVERWRITE.value)
  print(f'exported {exportable["source"]} to {path}:')
  for name, size in sizes.items():
    print(f'  {name}: {size / 1e6:.3f} MB')


if __name__ == '__main__':
  sys.argv = cli.with_workdir_config(sys.argv)
  cli.check_overrides_or_exit(sys.argv, model_from_workdir=True)
  cli.list_config_fields_in_help(sys.argv, flags.FLAGS)
  app.run(main)
