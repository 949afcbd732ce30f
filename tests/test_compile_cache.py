"""A restarted run loads its compiled steps (experiments/compile_cache.py).

Checked through the launcher in fresh processes, as a resume after a
preemption runs: the first run keeps its train step in
WORKDIR/compilation_cache, the resumed one says it loaded the step from
there; `--config.compilation_cache=` keeps nothing; the directory choice
and the restoring of the process's own setting are checked in-process.
"""

import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from experiments import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(choice):
  return ml_collections.ConfigDict({'compilation_cache': choice})


def test_directory_choices(tmp_path):
  workdir = str(tmp_path / 'run')
  previous = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update('jax_compilation_cache_dir', None)
    auto = compile_cache.directory(_config('auto'), workdir)
    assert auto == os.path.join(workdir, 'compilation_cache')
    assert compile_cache.directory(ml_collections.ConfigDict(), workdir) == auto
    for off in ('', 'none', 'off', ' '):
      assert compile_cache.directory(_config(off), workdir) is None
    shared = str(tmp_path / 'shared')
    assert compile_cache.directory(_config(shared), workdir) == shared
    # The environment's JAX_COMPILATION_CACHE_DIR (JAX's setting) wins
    # over the workdir default, not over an explicit path.
    jax.config.update('jax_compilation_cache_dir', shared)
    assert compile_cache.directory(_config('auto'), workdir) == shared
    other = str(tmp_path / 'other')
    assert compile_cache.directory(_config(other), workdir) == other
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)


def test_scope_gives_back_the_previous_setting(tmp_path):
  previous = jax.config.jax_compilation_cache_dir
  with compile_cache.scope() as cache:
    path = cache.enable(_config(str(tmp_path / 'c')), str(tmp_path))
    assert jax.config.jax_compilation_cache_dir == path
  assert jax.config.jax_compilation_cache_dir == previous


def _train(workdir, env, *flags):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/imdb_bytes.py:tiny',
      f'--workdir={workdir}',
      *flags,
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


@pytest.mark.slow
def test_a_resumed_run_loads_its_train_step(tmp_path, subprocess_env):
  env = dict(subprocess_env)
  env.pop('JAX_COMPILATION_CACHE_DIR')  # The default: the workdir's.
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'  # Tiny steps too.
  workdir = str(tmp_path / 'run')
  cache = os.path.join(workdir, 'compilation_cache')
  log = _train(workdir, env)
  assert f'(kept in {cache} for a restart)' in log
  assert 'loaded from the compilation cache' not in log
  assert any(n.startswith('jit_train_step-') for n in os.listdir(cache))
  log = _train(workdir, env, '--config.num_train_steps=5')
  assert 'loaded from the compilation cache in' in log
  assert 'step 5/5' in log

  off = str(tmp_path / 'off')
  log = _train(off, env, '--config.compilation_cache=')
  assert 'compiled in' in log and 'kept in' not in log
  assert not os.path.exists(os.path.join(off, 'compilation_cache'))
