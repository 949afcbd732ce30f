"""A new user's first hour: what the launchers print, `--helpfull`, and the
tiny variants running offline on a fresh clone.

Progress bars are drawn for a terminal only, with log lines written above
them; pipes and CI logs get plain lines (no carriage returns or cursor
codes). Compilation is announced and kept out of the rate and ETA. A run
starts by saying where its files go and ends with the commands to look at
them. Every tiny variant trains on data shipped in configs/fixtures/.
"""

import io
import logging
import os
import re
import shlex
import subprocess
import sys

import ml_collections
import pytest

from configs import common
from configs import glue_bytes
from configs import imagenet
from configs import imdb_bytes
from configs import mlm_bytes
from configs import optical_flow
from configs import quickstart
from experiments import cli
from experiments import process_tuning
from experiments import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CONFIGS = {
  'quickstart.py:tiny': quickstart.get_config('tiny'),
  'imdb_bytes.py:tiny': imdb_bytes.get_config('tiny'),
  'mlm_bytes.py:tiny': mlm_bytes.get_config('tiny'),
  'imagenet.py:tiny': imagenet.get_config('tiny'),
  'imagenet.py:conv,tiny': imagenet.get_config('conv,tiny'),
  'optical_flow.py:tiny': optical_flow.get_config('tiny'),
  **{
    f'glue_bytes.py:{task},tiny': glue_bytes.get_config(f'{task},tiny')
    for task in glue_bytes.TASKS
  },
}
# Sources that need no file: generated or bundled with a dependency.
BUILT_IN_SOURCES = ('digits', 'generated')


class FakeTerminal(io.StringIO):
  def isatty(self):
    return True


# ------------------------------------------------------------ progress bars --


def _bar_config():
  return ml_collections.ConfigDict({'progress_bar': True})


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
  stream = io.StringIO()
  monkeypatch.setattr(sys, 'stderr', stream)
  train = progress.TrainProgress(_bar_config(), 0, 10)
  train.update(1)
  with progress.EvalProgress(_bar_config(), 4) as evaluation:
    evaluation.update(4)
  train.close()
  assert train.bar is None and evaluation.bar is None
  assert '\r' not in stream.getvalue() and '\x1b[' not in stream.getvalue()


def test_log_lines_go_above_the_bar(monkeypatch):
  terminal = FakeTerminal()
  monkeypatch.setattr(sys, 'stderr', terminal)
  handler = logging.StreamHandler(terminal)
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    train = progress.TrainProgress(_bar_config(), 0, 10)
    with train.compiling():
      pass
    assert train.bar is None  # Compiling: no rate yet.
    train.update(1)  # The first step (with its compilation) is done.
    assert train.bar is not None and train.bar.initial == 1
    logging.warning('a line from the loop')
    print('a line on stderr', file=sys.stderr)
    train.update(2)
    train.close()
  finally:
    root.removeHandler(handler)
  text = terminal.getvalue()
  assert '/10 [' in text  # The bar was drawn.
  # Each line starts at column 0 (the bar was cleared first) and is whole.
  assert '\ra line from the loop\n' in text, repr(text)
  assert '\ra line on stderr\n' in text, repr(text)
  assert handler.stream is terminal and sys.stderr is terminal  # Restored.


def test_compiling_is_announced_and_timed(caplog):
  train = progress.TrainProgress(ml_collections.ConfigDict(), 0, 10)
  with caplog.at_level(logging.INFO):
    with train.compiling():
      pass
  messages = [r.getMessage() for r in caplog.records]
  assert messages[0].startswith('compiling the train step')
  assert re.fullmatch(r'compiled in \d+\.\d s\.', messages[1])


def test_small_step_memory_decision_is_not_logged(caplog):
  with caplog.at_level(logging.INFO):
    process_tuning.log_host_memory_reuse(
      'off (step 1.1 GFLOP < 50 GFLOP for 2 cores)'
    )
    process_tuning.log_process_settings(
      {'low_memory_cpu_scheduler': True, 'host_memory_reuse': 'auto'}
    )
  assert caplog.records == []


# ---------------------------------------------------------------- --helpfull --


def test_field_comments_from_source():
  source = (
    'c.a = 1  # the a\n'
    '# about b,\n'
    '# on two lines\n'
    "c.b.c = '#not a comment'\n"
    'c.d = 2\n'
    'c.a = 3  # a second comment is not used\n'
  )
  assert cli.field_comments(source) == {
    'a': 'the a',
    'b.c': 'about b, on two lines',
  }


def test_helpfull_lists_config_fields(subprocess_env):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/quickstart.py:tiny',
      '--helpfull',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  text = re.sub(r'\s+', ' ', proc.stdout)
  assert '--config.batch_size (default: 8): global, over all devices' in text
  assert "--config.optimizer.name (default: 'adamw'): 'adamw' | 'lamb'" in text
  assert '--config.model.kwargs.num_latents (default: 8)' in text


# ------------------------------------------------------- tiny variants' data --


def _local_paths(source: str, splits):
  kind, _, path = source.partition(':')
  paths = []
  for split in splits:
    name = re.sub(r'\[.*', '', split)  # 'train[:90%]' -> 'train'
    paths.append(path.replace('{split}', name))
  return kind, paths


@pytest.mark.parametrize('name', sorted(TINY_CONFIGS))
def test_tiny_variant_data_is_shipped(name):
  data = TINY_CONFIGS[name].data
  if data.source in BUILT_IN_SOURCES or data.source.startswith('synthetic:'):
    return
  kind, paths = _local_paths(data.source, [data.train_split, data.eval_split])
  assert kind != 'tfds', f'{name} needs a TFDS download: {data.source}'
  for path in paths:
    assert path.startswith(common.FIXTURES), path
    assert os.path.isfile(path), f'{name}: {path} is missing'
    assert os.path.getsize(path) < 8192, f'{path}: keep fixtures to a few KB'


def _run(args, env, timeout=600):
  return subprocess.run(
    [sys.executable, '-m'] + args,
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _offline_env(subprocess_env, tmp_path):
  env = dict(subprocess_env)
  env['TFDS_DATA_DIR'] = str(tmp_path / 'no_tfds_data')
  env['HF_HUB_OFFLINE'] = '1'
  return env


@pytest.mark.slow
def test_first_run_output_in_a_log_file(tmp_path, subprocess_env):
  """The quickstart with bars on but stderr a pipe: plain lines only; the
  paths at the start and runnable commands at the end."""
  env = _offline_env(subprocess_env, tmp_path)
  # A user's first run: no compilation cache yet (the session's shared one
  # may hold this very step), so it compiles and keeps the step.
  env.pop('JAX_COMPILATION_CACHE_DIR')
  workdir = str(tmp_path / 'run')
  proc = _run(
    [
      'experiments.train',
      '--config=configs/quickstart.py:tiny',
      f'--workdir={workdir}',
      '--config.progress_bar=True',
    ],
    env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  err = proc.stderr
  assert '\r' not in err and '\x1b[' not in err, repr(err[-2000:])
  assert f'writing to {workdir}: checkpoints/' in err
  assert 'tb/ (TensorBoard events), metrics.jsonl' in err
  assert 'compiling the train step' in err and 'compiled in ' in err
  assert f'(kept in {workdir}/compilation_cache for a restart)' in err
  step_one = next(l for l in err.splitlines() if 'step 1/3 ' in l)
  assert 'examples/s' not in step_one and 'ETA' not in step_one
  assert 'GFLOP' not in err and 'process settings' not in err
  commands = [
    shlex.split(line.strip())
    for line in proc.stdout.splitlines()
    if line.strip().startswith('python -m experiments.')
  ]
  assert [c[2] for c in commands] == [
    'experiments.evaluate',
    'experiments.predict',
  ]
  assert f'tensorboard --logdir {workdir}/tb' in proc.stdout
  for command in commands:
    done = _run(command[2:], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize(
  'name',
  [
    'imdb_bytes.py:tiny',
    'glue_bytes.py:mrpc,tiny',
    'mlm_bytes.py:tiny',
    'imagenet.py:tiny',
    'optical_flow.py:tiny',
  ],
)
def test_tiny_variant_trains_and_evaluates_offline(
  name, tmp_path, subprocess_env
):
  env = _offline_env(subprocess_env, tmp_path)
  workdir = str(tmp_path / 'run')
  proc = _run(
    ['experiments.train', f'--config=configs/{name}', f'--workdir={workdir}'],
    env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'final step' in proc.stdout
  assert ' -1 eval' not in proc.stderr  # Each says what it evaluates on.
  if name.startswith('optical_flow'):
    assert 'eval: 4 other generated pairs' in proc.stderr
  evaluated = _run(['experiments.evaluate', f'--workdir={workdir}'], env)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  predict = next(
    shlex.split(line.strip())
    for line in proc.stdout.splitlines()
    if line.strip().startswith('python -m experiments.predict')
  )
  if any(arg.startswith(('IMAGE', 'FRAME')) for arg in predict):
    return  # A placeholder file name (image, flow frames).
  predicted = _run(predict[2:], env)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert predicted.stdout.strip()
