"""Every model size is a config field; a workdir's config takes overrides.

`--config.model.kwargs.max_seq_len=128` said 'Valid fields of model.kwargs:
none' (configs listed only the sizes they changed), and `evaluate
--workdir=DIR --config.data.eval_source=...` failed with absl's 'Unknown
command line flag' unless the config file was given again.
"""

import json
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from configs import common
from configs import imdb_bytes
from experiments import cli
from experiments import models
from experiments import train_lib
from experiments import workdir as workdir_lib
from perceiver_io import presets
from tests.helpers import override_config
from tests.test_runner_inputs import VARIANTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMDB_TINY = os.path.join(REPO, 'configs', 'imdb_bytes.py') + ':tiny'


def _config_files():
  for module, args in VARIANTS.items():
    path = module.__file__
    for arg in args:
      yield f'{path}:{arg}' if arg else path


# ---------------------------------------------------------------------------
# Preset sizes in model.kwargs.
# ---------------------------------------------------------------------------


def test_every_preset_lists_its_arguments_with_defaults():
  for name in presets.names():
    sizes = presets.size_kwargs(name)
    assert presets.get_config(name) == presets.get_config(name, **sizes)
  tiny = presets.size_kwargs('tiny_text_classification')
  assert tiny['max_seq_len'] == 64 and tiny['d_model'] == 32
  assert presets.size_kwargs('text_classification')['max_seq_len'] == 2048


def test_an_argument_a_preset_does_not_take_is_one_error():
  with pytest.raises(
    ValueError, match=r'takes no argument d_latents; its arguments: d_model'
  ):
    presets.get_config('tiny_text_classification', d_latents=8)


@pytest.mark.parametrize('value', list(_config_files()))
def test_filled_sizes_build_the_same_model(value):
  plain = cli.load_config_file(value)
  filled = cli.load_launcher_config(value, [])
  preset = plain.model.preset
  expected = {
    k: v
    for k, v in presets.size_kwargs(preset).items()
    if k not in cli.NOT_MODEL_KWARGS
  }
  assert set(filled.model.kwargs) == set(expected), value
  for key, default in expected.items():  # The file's values win.
    assert filled.model.kwargs[key] == plain.model.kwargs.get(key, default)
  assert models.model_config(filled, 3) == models.model_config(plain, 3)


def test_the_preset_overridden_on_the_command_line_gives_the_sizes():
  argv = ['train', '--config.model.preset=text_classification']
  config = cli.load_launcher_config(IMDB_TINY, argv)
  assert config.model.kwargs.max_seq_len == 2048
  assert config.model.kwargs.latent_channels == 1280


def _parse_config_flag(argv, monkeypatch):
  """The launchers' --config flag, parsed from argv on fresh FlagValues."""
  monkeypatch.setattr(sys, 'argv', argv)
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
    'config', None, 'config', flag_values=values, lock_config=True
  )
  values['config'].parser = cli.ConfigFileParser('config')
  flags.DEFINE_string('workdir', None, 'workdir', flag_values=values)
  values(argv)
  return holder.value


def test_a_size_is_overridden_and_the_config_stays_locked(monkeypatch):
  config = _parse_config_flag(
    ['train', f'--config={IMDB_TINY}', '--config.model.kwargs.max_seq_len=128'],
    monkeypatch,
  )
  assert config.model.kwargs.max_seq_len == 128
  assert config.model.kwargs.num_latents == 8  # The preset's default.
  with pytest.raises(AttributeError):
    config.model.kwargs.new_field = 1
  assert models.model_config(config)['preprocessor']['max_seq_len'] == 128


def test_size_overrides_pass_the_launchers_check(capsys):
  cli.check_overrides_or_exit(
    ['train', f'--config={IMDB_TINY}', '--config.model.kwargs.max_seq_len=128']
  )
  with pytest.raises(SystemExit):
    cli.check_overrides_or_exit(
      ['train', f'--config={IMDB_TINY}', '--config.model.kwargs.d_latents=8']
    )
  err = capsys.readouterr().err
  assert err.count('\n') == 1
  assert 'Valid fields of model.kwargs: d_model, depth, heads' in err


# ---------------------------------------------------------------------------
# Overrides on a workdir's saved config.
# ---------------------------------------------------------------------------


@pytest.fixture
def saved_workdir(tmp_path):
  """A folder with a config.json as experiments.train saves it."""
  config = common.base_config()
  config.model.kwargs.max_seq_len = 64
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
  return str(workdir)


def test_overrides_with_a_workdir_use_its_config(saved_workdir):
  argv = ['evaluate', f'--workdir={saved_workdir}', '--config.seed=3']
  got = cli.with_workdir_config(argv)
  assert got == [
    'evaluate',
    f'--config={saved_workdir}/config.json',
    f'--workdir={saved_workdir}',
    '--config.seed=3',
  ]
  # Nothing to add: no overrides, or a config already given.
  assert cli.with_workdir_config(argv[:2]) == argv[:2]
  given = argv + [f'--config={IMDB_TINY}']
  assert cli.with_workdir_config(given) == given
  cli.check_overrides_or_exit(got, model_from_workdir=True)


def test_help_on_a_workdir_lists_the_fields_of_its_saved_config(
  saved_workdir,
):
  argv = cli.with_workdir_config(
    ['evaluate', f'--workdir={saved_workdir}', '--helpfull']
  )
  assert argv[1] == f'--config={saved_workdir}/config.json'
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'The config.', flag_values)
  cli.list_config_fields_in_help(argv, flag_values)
  text = flag_values['config'].help
  assert '--config.model.kwargs.max_seq_len (default: 64)' in text
  # Comments come from configs/common.py (config.json has none).
  assert '--config.batch_size (default: 32): global' in text


def test_a_saved_config_is_parsed_with_typed_overrides(
  saved_workdir, monkeypatch
):
  argv = cli.with_workdir_config(
    [
      'evaluate',
      '--workdir',
      saved_workdir,
      '--config.data.eval_split=test[:10]',
      '--config.eval_batch_size=8',
    ]
  )
  config = _parse_config_flag(argv, monkeypatch)
  assert config.data.eval_split == 'test[:10]'
  assert config.eval_batch_size == 8
  assert config.model.kwargs.max_seq_len == 64  # As saved, not filled.
  assert 'num_latents' not in config.model.kwargs


@pytest.mark.parametrize(
  'override',
  [
    '--config.model.kwargs.max_seq_len=128',
    '--config.model.preset=text_classification',
    '--config.model.head=tanh_mlp',
    '--config.task=regression',
  ],
)
def test_overrides_that_change_the_workdirs_model_are_refused(
  saved_workdir, override, capsys
):
  argv = cli.with_workdir_config(
    ['predict', f'--workdir={saved_workdir}', override, 'text']
  )
  with pytest.raises(SystemExit) as exit_info:
    cli.check_overrides_or_exit(argv, model_from_workdir=True)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1
  assert f'{override.split("=")[0]} would change the model' in err
  assert 'model.dtype' in err


def test_compute_options_may_change_on_a_workdir(saved_workdir):
  assert set(cli.WORKDIR_MODEL_OVERRIDES) == {
    f'model.{k}' for k in workdir_lib.COMPUTE_OPTIONS
  }
  argv = cli.with_workdir_config(
    ['evaluate', f'--workdir={saved_workdir}', '--config.model.dtype=bfloat16']
  )
  cli.check_overrides_or_exit(argv, model_from_workdir=True)


def test_a_bad_field_or_a_missing_config_is_one_line(tmp_path, capsys):
  missing = str(tmp_path / 'nothing')
  for argv in (
    ['evaluate', f'--workdir={missing}', '--config.seed=1'],
    ['evaluate', '--config.seed=1'],
  ):
    with pytest.raises(SystemExit):
      cli.check_overrides_or_exit(
        cli.with_workdir_config(argv), model_from_workdir=True
      )
  lines = capsys.readouterr().err.splitlines()
  assert lines[0] == (
    f'error: {missing}/config.json not found: {missing!r} is not a workdir '
    'written by experiments.train (expected config.json and checkpoints/ '
    'in it).'
  )
  assert lines[1] == (
    'error: --config.seed needs a config to override: add '
    '--config=configs/<family>.py[:<variant>] (or --workdir=DIR: its '
    'config.json).'
  )
  not_a_run = tmp_path / 'ckpt'
  not_a_run.mkdir()
  (not_a_run / 'config.json').write_text('{"encoder": {}, "decoder": {}}')
  with pytest.raises(ValueError, match='not an experiment config'):
    cli.load_saved_config(str(not_a_run / 'config.json'))


# ---------------------------------------------------------------------------
# End to end: a run with a longer input, and evaluate with an override.
# ---------------------------------------------------------------------------


def _csv_source(tmp_path):
  rows = ['text,label'] + [
    f'{"great fun" if i % 2 else "dull and bad"} film {i},{i % 2}'
    for i in range(16)
  ]
  for split in ('train', 'test'):
    (tmp_path / f'{split}.csv').write_text('\n'.join(rows) + '\n')
  return f'csv:{tmp_path}/{{split}}.csv'


@pytest.mark.slow
def test_a_longer_input_is_recorded_and_evaluate_takes_overrides(
  tmp_path, subprocess_env
):
  config = cli.load_launcher_config(IMDB_TINY, [])
  config = override_config(
    config,
    data__source=_csv_source(tmp_path),
    data__eval_split='test',
    data__max_length=128,
    model__kwargs__max_seq_len=128,
    num_train_steps=1,
    predict_examples=0,
  )
  workdir = str(tmp_path / 'run')
  train_lib.train_and_evaluate(config, workdir)
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['model']['kwargs']['max_seq_len'] == 128
  model = json.load(open(os.path.join(workdir, 'model.json')))
  assert model['perceiver']['preprocessor']['max_seq_len'] == 128
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.evaluate',
      f'--workdir={workdir}',
      '--config.data.eval_split=test[:6]',
      '--config.max_eval_examples=-1',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'split test[:6]' in proc.stdout
  assert '| num_examples | 6 |' in proc.stdout


@pytest.mark.slow
def test_a_workdir_saved_with_empty_kwargs_still_loads(tmp_path):
  config = override_config(
    imdb_bytes.get_config('tiny'),
    data__source=_csv_source(tmp_path),
    data__eval_split='test',
    num_train_steps=1,
    predict_examples=0,
  )
  assert not config.model.kwargs
  workdir = str(tmp_path / 'old')
  train_lib.train_and_evaluate(config, workdir)
  saved = cli.load_saved_config(os.path.join(workdir, 'config.json'))
  assert not saved.model.kwargs
  run = workdir_lib.load_workdir(workdir, config=saved)
  assert run.model_config['preprocessor']['max_seq_len'] == 64
