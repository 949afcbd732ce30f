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


def test_importing_runtime_starts_no_numpy_or_jax():
  # The glibc settings only take effect before NumPy/JAX start their threads,
  # so the launchers import `perceiver_io.runtime` first; it must stay light.
  code = ('import sys; from perceiver_io import runtime; '
          'print(sorted({"numpy", "jax", "flax"} & set(sys.modules)))')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=120, check=True)
  assert proc.stdout.strip() == '[]'


def test_reuse_freed_host_memory_keeps_the_users_malloc_settings():
  for name in ('MALLOC_ARENA_MAX', 'GLIBC_TUNABLES'):
    assert not runtime.reuse_freed_host_memory({name: '1'})
  # Opt-in: configure_process leaves malloc alone unless asked.
  assert not runtime.configure_process({})['reuse_freed_host_memory']


_FAULTS_CODE = '''
import os, resource
from perceiver_io import runtime
print(runtime.configure_process())
import jax, jax.numpy as jnp
x = jnp.ones((2048, 4096))  # 32 MB; the step's temporary is 64 MB.
f = jax.jit(lambda x: jnp.sum(jnp.cumsum(x, axis=0) @ x.T))
for _ in range(20):  # glibc's heap reaches its steady state in a few calls.
  f(x).block_until_ready()
faults = []  # Fewest over several calls: one call may still grow the heap.
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
'''


def _minor_faults_of_a_repeated_step(extra_env):
  env = {'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin', **extra_env}
  proc = subprocess.run([sys.executable, '-c', _FAULTS_CODE],
                        capture_output=True, text=True, timeout=300,
                        check=False, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  settings, faults = proc.stdout.strip().splitlines()[-2:]
  return settings, int(faults)


def test_repeated_steps_reuse_host_memory_instead_of_faulting_it_in():
  # Without the settings glibc mmaps the step's 64 MB temporary afresh each
  # call (16,384 pages faulted in); with them, once the heap has grown to the
  # step's working set, freed blocks are reused.
  settings, faults = _minor_faults_of_a_repeated_step(
      {runtime.REUSE_HOST_MEMORY_ENV: '1'})
  assert "'reuse_freed_host_memory': True" in settings
  settings, faults_default = _minor_faults_of_a_repeated_step({})
  assert "'reuse_freed_host_memory': False" in settings
  print(f'minor faults per call: {faults} with, {faults_default} without')
  assert faults_default > 8000
  assert faults < 4096  # a quarter of the 64 MB block
