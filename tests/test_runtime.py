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


def test_host_memory_reuse_is_opt_in():
  env_var = runtime.REUSE_HOST_MEMORY_ENV
  assert not runtime.wants_host_memory_reuse({})
  assert not runtime.wants_host_memory_reuse({env_var: '0'})
  assert not runtime.wants_host_memory_reuse({env_var: ''})
  assert runtime.wants_host_memory_reuse({env_var: '1'})


_STEP_CODE = '''
import os, resource
from perceiver_io import runtime
print(runtime.configure_process())
import jax, jax.numpy as jnp
print(jax.config.read('jax_cpu_enable_async_dispatch'))
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
# A train-like loop: donated state, a 1 GB temporary, outputs read each step.
def step(w):
  h = jnp.tanh(w[:, None, :] * jnp.linspace(0.5, 1.5, 64)[None, :, None])
  return w * 0.999 + h.mean(axis=1) * 1e-3, jnp.sum(h)
train = jax.jit(step, donate_argnums=0)
w = jnp.ones((1024, 4096))  # 16 MB state; h is 1 GB.
for _ in range(8):
  w, loss = train(w)
  jax.block_until_ready((w, loss))
  float(loss)
  runtime.settle_host_memory()  # As the launchers' loops do.
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
'''


def _run_steps(extra_env):
  env = {'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin', **extra_env}
  proc = subprocess.run([sys.executable, '-c', _STEP_CODE],
                        capture_output=True, text=True, timeout=300,
                        check=False, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  settings, async_dispatch, faults, peak = (
      proc.stdout.strip().splitlines()[-4:])
  return settings, async_dispatch == 'True', int(faults), int(peak)


def test_repeated_steps_reuse_host_memory_instead_of_faulting_it_in():
  # Without the settings glibc mmaps the step's 64 MB temporary afresh each
  # call (16,384 pages faulted in); with them (opt-in), once the heap
  # has grown to the step's working set, freed blocks are reused, and a loop
  # with a 1 GB temporary holds no more at its peak than without reuse (with
  # asynchronous dispatch the heap could hold two steps' temporaries).
  settings, async_dispatch, faults, peak = _run_steps(
      {runtime.REUSE_HOST_MEMORY_ENV: '1'})
  assert "'reuse_freed_host_memory': True" in settings, settings
  assert "'synchronous_cpu_dispatch': True" in settings, settings
  assert not async_dispatch
  settings, async_dispatch, faults_off, peak_off = _run_steps({})
  assert "'reuse_freed_host_memory': False" in settings
  assert async_dispatch  # JAX's default, untouched.
  print(f'minor faults per call: {faults} with, {faults_off} without; '
        f'peak RSS {peak / 2**30:.2f} vs {peak_off / 2**30:.2f} GiB')
  assert faults_off > 8000
  assert faults < 4096  # a quarter of the 64 MB block
  assert peak < peak_off + 2**28  # within 256 MB; a second temporary is 1 GB
