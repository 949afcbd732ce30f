"""The launchers' process settings (perceiver_io/runtime.py)."""

import subprocess
import sys

from perceiver_io import runtime


def test_prefer_low_memory_cpu_appends_flag_once():
  env = {'XLA_FLAGS': '--xla_dump_to=/tmp/x'}
  assert runtime.prefer_low_memory_cpu(env)
  assert env['XLA_FLAGS'] == ('--xla_dump_to=/tmp/x '
                              f'{runtime.LOW_MEMORY_CPU_FLAG}=false')
  assert not runtime.prefer_low_memory_cpu(env)  # Already there: unchanged.
  assert env['XLA_FLAGS'].count(runtime.LOW_MEMORY_CPU_FLAG) == 1


def test_prefer_low_memory_cpu_keeps_the_users_choice():
  env = {'XLA_FLAGS': f'{runtime.LOW_MEMORY_CPU_FLAG}=true'}
  assert not runtime.prefer_low_memory_cpu(env)
  assert env['XLA_FLAGS'] == f'{runtime.LOW_MEMORY_CPU_FLAG}=true'
  empty = {}
  assert runtime.prefer_low_memory_cpu(empty)
  assert empty['XLA_FLAGS'] == f'{runtime.LOW_MEMORY_CPU_FLAG}=false'


def test_flag_is_accepted_by_xla():
  """A flag XLA does not know aborts the process: check it runs."""
  code = ('from perceiver_io import runtime; runtime.prefer_low_memory_cpu(); '
          'import jax, jax.numpy as jnp; '
          'print(float(jax.jit(lambda x: (x * 2).sum())(jnp.ones(3))))')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=120, check=False,
                        env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().endswith('6.0')
