"""Shared pytest fixtures. Deliberately minimal: nothing here changes JAX's
global state for the whole suite (no forced device counts); tests that need
8 CPU devices or 2 processes start subprocesses with `subprocess_env`. The one
autouse fixture only *restores* `jax_disable_most_optimizations`, which the
tiny experiment configs turn on for fast compiles.
"""

import importlib.util
import os
import sys

# TensorFlow and Triton (which PyPI's CUDA builds of torch install, and
# which transformers' Perceiver imports) both carry their own LLVM: with
# TensorFlow loaded first (the data tests import it at collection), importing
# Triton segfaults (seen with TensorFlow 2.21, torch 2.13.0+cu130 and its
# Triton on Python 3.12). Loaded first, Triton is fine. The CPU wheel of
# torch the project machines use has no Triton; then this does nothing.
if importlib.util.find_spec('triton') is not None:
  import triton  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import

import jax
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _restore_jax_options():
  previous = jax.config.read('jax_disable_most_optimizations')
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='session')
def subprocess_env(tmp_path_factory):
  """Environment for launcher subprocesses: CPU only, repo on the path, and a
  per-session persistent compilation cache (restarts reuse compiled steps)."""
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(
    [REPO_ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  )
  env['JAX_COMPILATION_CACHE_DIR'] = str(
    tmp_path_factory.mktemp('jax_compilation_cache')
  )
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env.pop('XLA_FLAGS', None)
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  return env


@pytest.fixture(scope='session')
def python_executable():
  return sys.executable
