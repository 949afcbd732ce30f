r"""Launcher: predict with a trained workdir.

  python -m experiments.predict --workdir=/tmp/imdb "I loved this movie."
  python -m experiments.predict --workdir=/tmp/imdb --input_file=reviews.txt
  python -m experiments.predict --workdir=/tmp/glue/rte \
      "A man is playing a guitar." --pair="A man plays music."
  python -m experiments.predict --workdir=/tmp/mlm "This is [MASK][MASK][MASK] test."
  python -m experiments.predict --workdir=/tmp/quickstart --digits=0:5
  python -m experiments.predict --workdir=/tmp/quickstart digit.png
  python -m experiments.predict --config=configs/imagenet.py:conv \
      --config.init_from=hf:deepmind/vision-perceiver-conv cat.jpg
  python -m experiments.predict --exported=/tmp/imdb/export "Great film."
  python -m experiments.predict --workdir=/tmp/mm_cpu clip.mp4 --output=/tmp/mm
  python -m experiments.predict --workdir=/tmp/ar --prompt="ROMEO:" \
      --max_new_tokens=200 --temperature=0.8 --top_k=40 --top_p=0.95

Classification prints the label and its probability (top-k with --top_k);
regression prints the score; an MLM workdir fills every [MASK] byte; a
Perceiver AR workdir continues each prompt (one prompt streams as it is
generated; --temperature 0 is greedy). For
image workdirs, arguments are image files (or --digits=a:b test images).
--input_file holds one input per line (text, or image path).

Sentence-pair models (GLUE MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI, or any
run with two data.text_fields) take two texts per input: the first as an
argument and the second as the matching --pair (one --pair per text
argument, in order), or both in one argument or --input_file line separated
by a tab (FIRST<TAB>SECOND). They refuse single texts.
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
  'Optional config: with --workdir, replaces its '
  'config.json; without, predicts with --config.init_from.',
  lock_config=True,
)
flags.FLAGS['config'].parser = cli.ConfigFileParser('config')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained workdir.')
_EXPORTED = flags.DEFINE_string(
  'exported', '', 'Artifact of experiments.export to predict with.'
)
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint',
  'latest',
  "'latest' (the newest step that reads; a corrupt newer one is named "
  "and skipped), 'best' or a step number (read as asked).",
)
_INPUT_FILE = flags.DEFINE_string(
  'input_file',
  '',
  'File with one input per line (sentence-pair models: '
  'FIRST<TAB>SECOND per line).',
)
_PAIR = flags.DEFINE_multi_string(
  'pair',
  None,
  'Sentence-pair models: the second text of the N-th text '
  'argument (repeat once per argument, in order).',
)
_TOP_K = flags.DEFINE_integer(
  'top_k',
  0,
  'Labels to print per input (0 = the task default: 5 for '
  'ImageNet-style image classification, 1 otherwise).',
)
_DIGITS = flags.DEFINE_string(
  'digits', '', "Quickstart: predict test digits a:b (e.g. '0:5')."
)
# Options of tasks with their own prediction (image classes, flow files).
_CLASS_NAMES = flags.DEFINE_string(
  'class_names', '', 'Image tasks: class-name list file.'
)
_OUTPUT = flags.DEFINE_string(
  'output', '', 'Flow: output .flo path; multimodal: output folder.'
)
_GROUND_TRUTH = flags.DEFINE_string(
  'ground_truth', '', 'Flow: ground-truth .flo for the EPE.'
)
_PAD_SMALL = flags.DEFINE_boolean(
  'pad_small', False, 'Flow: pad frames smaller than the model.'
)
# Generation (Perceiver AR); --top_k above is its top-k (0 = off).
_PROMPT = flags.DEFINE_multi_string(
  'prompt', None, 'Perceiver AR: text to continue (repeat for a batch).'
)
_MAX_NEW_TOKENS = flags.DEFINE_integer(
  'max_new_tokens', 200, 'Perceiver AR: tokens (bytes) to generate.'
)
_TEMPERATURE = flags.DEFINE_float(
  'temperature', 1.0, 'Perceiver AR: sampling temperature, >= 0 (0: greedy).'
)
_TOP_P = flags.DEFINE_float(
  'top_p', 1.0, 'Perceiver AR: nucleus mass in (0, 1] (1: off).'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Perceiver AR: sampling seed.')


def main(argv):
  cli.quiet_library_logs()
  process_tuning.configure_process()  # Before NumPy/JAX are imported (process_tuning.py).
  from experiments import predict_lib  # pylint: disable=g-import-not-at-top

  with cli.one_line_errors():
    inputs = predict_lib.read_inputs(argv[1:], _INPUT_FILE.value)
    inputs += predict_lib.read_prompts(_PROMPT.value)
    pairs = predict_lib.read_pairs(argv[1:], _PAIR.value)
    if pairs is not None:
      pairs += [None] * (len(inputs) - len(pairs))
    options = dict(
      class_names=_CLASS_NAMES.value,
      output=_OUTPUT.value,
      ground_truth=_GROUND_TRUTH.value,
      pad_small=_PAD_SMALL.value,
      max_new_tokens=_MAX_NEW_TOKENS.value,
      temperature=_TEMPERATURE.value,
      top_p=_TOP_P.value,
      seed=_SEED.value,
    )
    if _EXPORTED.value:
      lines = predict_lib.predict_exported(
        _EXPORTED.value,
        inputs,
        top_k=_TOP_K.value,
        digits=_DIGITS.value,
        pairs=pairs,
        **options,
      )
    elif not _WORKDIR.value:
      config = _CONFIG.value
      if pairs is not None:
        raise app.UsageError(
          '--pair needs --workdir (a model trained on sentence pairs).'
        )
      if config is None or not config.init_from:
        raise app.UsageError(
          'pass --workdir=DIR, or --config=... with '
          '--config.init_from=... (an imported '
          'checkpoint).'
        )
      lines = predict_lib.predict_pretrained(
        config, inputs, top_k=_TOP_K.value, **options
      )
    else:
      lines = predict_lib.predict_lines(
        _WORKDIR.value,
        inputs,
        which=_CHECKPOINT.value,
        top_k=_TOP_K.value,
        digits=_DIGITS.value,
        config=_CONFIG.value,
        pairs=pairs,
        **options,
      )
  for line in lines:
    print(line)


if __name__ == '__main__':
  sys.argv = cli.with_workdir_config(sys.argv)
  cli.check_overrides_or_exit(sys.argv, model_from_workdir=True)
  cli.list_config_fields_in_help(sys.argv, flags.FLAGS)
  app.run(main)
