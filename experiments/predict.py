r"""Launcher: predict with a trained workdir.

  python -m experiments.predict --workdir=/tmp/imdb "I loved this movie."
  python -m experiments.predict --workdir=/tmp/imdb --input_file=reviews.txt
  python -m experiments.predict --workdir=/tmp/mlm "This is [MASK][MASK][MASK] test."
  python -m experiments.predict --workdir=/tmp/quickstart --digits=0:5
  python -m experiments.predict --workdir=/tmp/quickstart digit.png

Classification prints the label and its probability (top-k with --top_k);
regression prints the score; an MLM workdir fills every [MASK] byte. For
image workdirs, arguments are image files (or --digits=a:b test images).
--input_file holds one input per line (text, or image path).
"""

import sys

from absl import app
from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained workdir.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'latest', "'latest', 'best' or a step number.")
_INPUT_FILE = flags.DEFINE_string('input_file', '',
                                  'File with one input per line.')
_TOP_K = flags.DEFINE_integer('top_k', 1, 'Labels to print per input.')
_DIGITS = flags.DEFINE_string(
    'digits', '', "Quickstart: predict test digits a:b (e.g. '0:5').")
flags.mark_flags_as_required(['workdir'])


def read_inputs(argv, input_file: str):
  inputs = list(argv[1:])
  if input_file:
    try:
      with open(input_file, encoding='utf-8', errors='replace') as f:
        inputs += [line.rstrip('\n') for line in f if line.strip()]
    except FileNotFoundError:
      raise FileNotFoundError(f'--input_file {input_file!r} not found.') from None
  return inputs


def main(argv):
  cli.quiet_library_logs()
  from experiments import predict_lib  # pylint: disable=g-import-not-at-top
  try:
    inputs = read_inputs(argv, _INPUT_FILE.value)
    lines = predict_lib.predict_lines(_WORKDIR.value, inputs,
                                      which=_CHECKPOINT.value,
                                      top_k=_TOP_K.value,
                                      digits=_DIGITS.value)
  except (ValueError, FileNotFoundError) as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(1)
  for line in lines:
    print(line)


if __name__ == '__main__':
  app.run(main)
