"""One training run per workdir, and no trace of a refused start.

What a user must be able to count on: a second run on a workdir in use is
refused at once, naming the holder; a lock left by a killed run is taken
over with a warning; another host's lock is refused with the file to
remove; and a start refused for any reason (bad data, a missing pretrained
checkpoint, a busy workdir) leaves the file system as it was.
"""

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from configs import imdb_bytes
from configs import quickstart
from experiments import train_lib
from experiments.workdir import lock
from tests.helpers import override_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The holder subprocesses load lock.py alone (stdlib only): no JAX import.
_HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location('lock', sys.argv[1])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
lock.WorkdirLock(sys.argv[2]).acquire()
print('locked', flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
  """A separate process holding the lock on tmp_path/'run' (killable)."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  proc = subprocess.Popen(
    [sys.executable, '-c', _HOLD, lock.__file__, str(workdir)],
    stdout=subprocess.PIPE,
    text=True,
  )
  assert proc.stdout.readline().strip() == 'locked'
  yield str(workdir), proc
  if proc.poll() is None:
    proc.kill()
  proc.wait()


def _tree(root):
  """Every path under `root` with its file contents (None: a directory)."""
  out = {}
  for dirpath, dirs, files in os.walk(root):
    for name in dirs:
      out[os.path.relpath(os.path.join(dirpath, name), root)] = None
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_a_second_run_is_refused_at_once_naming_the_holder(holder):
  workdir, proc = holder
  started = time.monotonic()
  with pytest.raises(lock.WorkdirBusyError) as error:
    lock.WorkdirLock(workdir).acquire()
  assert time.monotonic() - started < 1.0
  message = str(error.value)
  assert f'in use by PID {proc.pid} on host {socket.gethostname()}' in message
  assert '\n' not in message and 'another --workdir' in message


def test_a_killed_holders_lock_is_taken_over_with_a_warning(holder, caplog):
  workdir, proc = holder
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  path = os.path.join(workdir, lock.LOCK_FILE)
  assert json.load(open(path))['pid'] == proc.pid  # Left behind.
  with caplog.at_level(logging.WARNING):
    mine = lock.WorkdirLock(workdir).acquire()
  assert json.load(open(path))['pid'] == os.getpid()
  taken = [r.getMessage() for r in caplog.records if 'taking over' in r.msg]
  assert len(taken) == 1 and f'PID {proc.pid} ' in taken[0], taken
  mine.release()
  assert not os.path.exists(path)  # A finished run leaves no lock file.


def _write_holder(workdir, **fields):
  holder = dict(host=socket.gethostname(), pid=1, time=0, command='x')
  holder.update(fields)
  with open(os.path.join(workdir, lock.LOCK_FILE), 'w') as f:
    json.dump(holder, f)


def test_another_hosts_lock_is_refused_with_the_file_to_remove(tmp_path):
  """flock may be local to each client of a network file system: the
  file's contents are then the only sign of a run elsewhere."""
  _write_holder(str(tmp_path), host='other-host', pid=4242)
  with pytest.raises(lock.WorkdirBusyError) as error:
    lock.WorkdirLock(str(tmp_path)).acquire()
  message = str(error.value)
  assert 'PID 4242 on host other-host' in message
  assert f'remove {tmp_path / lock.LOCK_FILE}' in message
  assert (tmp_path / lock.LOCK_FILE).exists()  # Not ours to remove.


def test_a_live_holder_that_flock_missed_is_refused(tmp_path):
  """Same host, the recorded process runs (same start time): refused even
  though flock succeeded (a file system without working flock)."""
  parent = os.getppid()
  _write_holder(str(tmp_path), pid=parent, pid_start=lock.process_start(parent))
  with pytest.raises(lock.WorkdirBusyError, match=f'in use by PID {parent} '):
    lock.WorkdirLock(str(tmp_path)).acquire()


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path):
  """The recorded PID runs, but started at another time: another process
  now has that number, the holder is gone."""
  _write_holder(str(tmp_path), pid=os.getppid(), pid_start='1')
  lock.WorkdirLock(str(tmp_path)).acquire().release()


def test_claim_removes_only_what_a_refused_start_created(tmp_path):
  workdir = tmp_path / 'a' / 'b' / 'run'
  with pytest.raises(RuntimeError, match='refused'):
    with lock.claim(str(workdir), ['checkpoints']):
      os.makedirs(workdir / 'checkpoints')  # As Orbax does.
      raise RuntimeError('refused')
  assert not (tmp_path / 'a').exists()
  # An existing workdir with a run in it: left exactly as it was.
  (tmp_path / 'kept' / 'checkpoints' / '2').mkdir(parents=True)
  (tmp_path / 'kept' / 'config.json').write_text('{}')
  before = _tree(tmp_path / 'kept')
  with pytest.raises(RuntimeError):
    with lock.claim(str(tmp_path / 'kept'), ['checkpoints']):
      raise RuntimeError('refused')
  assert _tree(tmp_path / 'kept') == before
  # Once started, nothing is removed.
  with pytest.raises(RuntimeError):
    with lock.claim(str(workdir), ['checkpoints']) as started:
      started()
      raise RuntimeError('crashed')
  assert workdir.is_dir() and not (workdir / lock.LOCK_FILE).exists()


def test_training_on_a_busy_workdir_is_refused_and_changes_nothing(holder):
  workdir, proc = holder
  before = _tree(workdir)
  config = quickstart.get_config('tiny')
  with pytest.raises(lock.WorkdirBusyError, match=f'PID {proc.pid} '):
    train_lib.train_and_evaluate(config, workdir)
  assert _tree(workdir) == before


def _imdb(tmp_path, csv_text, **fields):
  for split in ('train', 'test'):
    (tmp_path / f'{split}.csv').write_text(csv_text)
  return override_config(
    imdb_bytes.get_config('tiny'),
    data__source=f'csv:{tmp_path}/{{split}}.csv',
    **fields,
  )


@pytest.mark.parametrize(
  'make_config, error',
  [
    pytest.param(
      lambda tmp: _imdb(tmp, ''),
      r'train.csv is empty',
      marks=pytest.mark.slow,  # Imports TensorFlow.
    ),
    pytest.param(
      lambda tmp: _imdb(tmp, 'text,stars\nfine,1\nbad,0\n'),
      r"label column 'label' is not in the header",
      marks=pytest.mark.slow,
    ),
    (
      lambda tmp: override_config(
        quickstart.get_config('tiny'), init_from=f'hf:{tmp}/nope'
      ),
      'nope.*does not exist',
    ),
    (
      lambda tmp: override_config(
        quickstart.get_config('tiny'), model__dtype='float16'
      ),
      'float16',
    ),
  ],
  ids=['empty_csv', 'no_label_column', 'missing_init_from', 'float16_cpu'],
)
def test_a_refused_start_leaves_no_workdir(make_config, error, tmp_path):
  config = make_config(tmp_path)
  workdir = tmp_path / 'runs' / 'run'
  with pytest.raises(Exception, match=error):
    train_lib.train_and_evaluate(config, str(workdir))
  assert not (tmp_path / 'runs').exists()


@pytest.mark.slow
def test_a_model_that_does_not_fit_init_from_leaves_no_workdir(tmp_path):
  """Refused after the checkpoint manager made checkpoints/: removed too."""
  small = str(tmp_path / 'small')
  config = quickstart.get_config('tiny')
  train_lib.train_and_evaluate(
    override_config(config, num_train_steps=1, predict_examples=0), small
  )
  wider = override_config(
    quickstart.get_config('tiny'),
    init_from=f'workdir:{small}',
    model__kwargs__latent_channels=24,
  )
  workdir = tmp_path / 'runs' / 'run'
  with pytest.raises(ValueError, match='encoder'):
    train_lib.train_and_evaluate(wider, str(workdir))
  assert not (tmp_path / 'runs').exists()


def test_the_lock_module_needs_nothing_but_the_standard_library():
  """The holder subprocesses above load it alone; so can any tool."""
  spec = importlib.util.spec_from_file_location('lock_alone', lock.__file__)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.LOCK_FILE == lock.LOCK_FILE


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_a_busy_workdir_stops_every_process_of_a_job(holder, subprocess_env):
  """Process 0 is refused; process 1 hears it and stops too, at once,
  instead of waiting for process 0 in JAX's backend."""
  workdir, proc = holder
  port = _free_port()
  runs = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'experiments.train',
        '--config=configs/quickstart.py:tiny',
        f'--workdir={workdir}',
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=REPO,
      env=subprocess_env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  try:
    errors = [run.communicate(timeout=120)[1] for run in runs]
  finally:
    for run in runs:
      if run.poll() is None:
        run.kill()
  for run, err in zip(runs, errors):
    assert run.returncode == 1, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and f'in use by PID {proc.pid} ' in lines[0], err
  assert 'process 0 did not start' in errors[1]
