"""The launchers' process settings (experiments/process_tuning.py)."""

import subprocess
import sys

import pytest

from experiments import process_tuning
from perceiver_io import flops


def test_prefer_low_memory_cpu_appends_flag_once():
  env = {'XLA_FLAGS': '--xla_dump_to=/tmp/x'}
  assert process_tuning.prefer_low_memory_cpu(env)
  assert env['XLA_FLAGS'] == (
    f'--xla_dump_to=/tmp/x {process_tuning.LOW_MEMORY_CPU_FLAG}=false'
  )
  assert not process_tuning.prefer_low_memory_cpu(
    env
  )  # Already there: unchanged.
  assert env['XLA_FLAGS'].count(process_tuning.LOW_MEMORY_CPU_FLAG) == 1


def test_prefer_low_memory_cpu_keeps_the_users_choice():
  env = {'XLA_FLAGS': f'{process_tuning.LOW_MEMORY_CPU_FLAG}=true'}
  assert not process_tuning.prefer_low_memory_cpu(env)
  assert env['XLA_FLAGS'] == f'{process_tuning.LOW_MEMORY_CPU_FLAG}=true'
  empty = {}
  assert process_tuning.prefer_low_memory_cpu(empty)
  assert empty['XLA_FLAGS'] == f'{process_tuning.LOW_MEMORY_CPU_FLAG}=false'


def _python_stdout(code, env):
  """Runs `code` in a fresh interpreter (process settings start clean)."""
  proc = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
    env={'PATH': '/usr/bin:/bin', **env},
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip()


@pytest.mark.slow
def test_flag_is_accepted_by_xla():
  """A flag XLA does not know aborts the process: check it runs."""
  code = (
    'from experiments import process_tuning; process_tuning.prefer_low_memory_cpu(); '
    'import jax, jax.numpy as jnp; '
    'print(float(jax.jit(lambda x: (x * 2).sum())(jnp.ones(3))))'
  )
  assert _python_stdout(code, {'JAX_PLATFORMS': 'cpu'}).endswith('6.0')


def test_importing_runtime_starts_no_numpy_or_jax():
  # The glibc settings only take effect before NumPy/JAX start their threads,
  # so the launchers import `experiments.process_tuning` first; it must stay light.
  code = (
    'import sys; from experiments import process_tuning; '
    'print(sorted({"numpy", "jax", "flax"} & set(sys.modules)))'
  )
  proc = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  )
  assert proc.stdout.strip() == '[]'


def test_reuse_freed_host_memory_keeps_the_users_malloc_settings():
  for name in ('MALLOC_ARENA_MAX', 'GLIBC_TUNABLES'):
    assert not process_tuning.reuse_freed_host_memory({name: '1'})


def test_host_memory_reuse_modes():
  env_var = process_tuning.REUSE_HOST_MEMORY_ENV
  assert process_tuning.host_memory_reuse_mode({}) == 'auto'
  assert process_tuning.host_memory_reuse_mode({env_var: ''}) == 'auto'
  assert process_tuning.host_memory_reuse_mode({env_var: 'auto'}) == 'auto'
  assert process_tuning.host_memory_reuse_mode({env_var: '0'}) == 'off'
  assert process_tuning.host_memory_reuse_mode({env_var: '1'}) == 'on'
  # Forced either way, the step size is not consulted.
  assert process_tuning.reuse_host_memory_for_step(1e15, {env_var: '0'}) == (
    f'off ({env_var})'
  )


def _flops_of(fn, *shapes):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  return flops.count_jaxpr_flops(jax.make_jaxpr(fn)(*args))


def test_count_jaxpr_flops_counts_matmuls_and_convolutions():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  # [4, 8] x [8, 16]: 2 * 4 * 16 * 8; elementwise ops are not counted.
  assert _flops_of(lambda a, b: jnp.tanh(a @ b), (4, 8), (8, 16)) == 1024
  # Batched: 2 * (3 * 5 * 7) * 11.
  assert (
    _flops_of(
      lambda a, b: jnp.einsum('bik,bkj->bij', a, b), (3, 5, 11), (3, 11, 7)
    )
    == 2 * 3 * 5 * 7 * 11
  )
  # NHWC 3x3 conv, 2 -> 6 channels, 'SAME' on 10x10, batch 2.
  conv = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  assert _flops_of(conv, (2, 10, 10, 2), (3, 3, 2, 6)) == (
    2 * (2 * 10 * 10 * 6) * 3 * 3 * 2
  )

  # Inside jit, a scan (body x length) and a gradient (two more matmuls).
  def scanned(a, b):
    return jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=5)[0]

  assert _flops_of(jax.jit(scanned), (4, 8), (8, 8)) == 5 * 2 * 4 * 8 * 8
  grad = jax.grad(lambda a, b: jnp.sum(a @ b), argnums=(0, 1))
  assert _flops_of(grad, (4, 8), (8, 16)) == 3 * 1024


def test_forward_flops_of_chunked_decoding():
  # Chunked decoding (Flax's nn.scan over query chunks, which leaves dead
  # output-less calls in the jaxpr) computes the same products as decoding
  # all queries at once; counting it once crashed the benchmark worker.
  # The scan's trace for its broadcast parameters keeps a few small products
  # outside the loop (0.2 % here), hence the tolerance.
  from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads_ours  # pylint: disable=g-import-not-at-top
  from perceiver_io import model as model_lib  # pylint: disable=g-import-not-at-top

  w = W.query_workload(100, grid=(32, 32), tiny=True)
  x, kwargs = workloads_ours.ours_model_arrays(W.make_inputs(w))
  counts = {
    chunk: flops.forward_flops(
      model_lib.build_model(
        workloads_ours.ours_config(w, query_chunk_size=chunk)
      ),
      x,
      **kwargs,
    )
    for chunk in (None, 32)
  }
  assert counts[32] == pytest.approx(counts[None], rel=1e-2)
  assert counts[None] > 0


@pytest.mark.slow
def test_train_step_flops_match_the_papers_imagenet_counts():
  # Perceiver IO paper, Table 7: config A is 407B FLOPs per image with 2-D
  # Fourier features and 369B with the conv preprocessor. Counted from
  # shapes (a third of the train step), without creating JAX's backend.
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  from experiments import models  # pylint: disable=g-import-not-at-top
  from experiments import tasks  # pylint: disable=g-import-not-at-top
  from experiments import train_lib  # pylint: disable=g-import-not-at-top

  for variant, paper in (('fourier', 407e9), ('conv', 369e9)):
    config = imagenet.get_config(f'{variant},batch=1')
    task = tasks.get(config)
    model, _ = models.build(config, task.num_outputs())
    forward = train_lib.train_step_flops(model, task, 1) / 3
    assert abs(forward / paper - 1) < 0.01, (variant, forward)


_STEP_CODE = """
import os, resource
from experiments import process_tuning
settings = process_tuning.configure_process()
if 'STEP_FLOPS' in os.environ:  # As the launchers in 'auto' mode.
  settings['small'] = process_tuning.reuse_host_memory_for_step(1e6)
  settings['large'] = process_tuning.reuse_host_memory_for_step(
      float(os.environ['STEP_FLOPS']))
print(settings)
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
  process_tuning.settle_host_memory()  # As the launchers' loops do.
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _run_steps(extra_env):
  env = {'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin', **extra_env}
  proc = subprocess.run(
    [sys.executable, '-c', _STEP_CODE],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  settings, async_dispatch, faults, peak = proc.stdout.strip().splitlines()[-4:]
  return settings, async_dispatch == 'True', int(faults), int(peak)


@pytest.mark.slow
def test_repeated_steps_reuse_host_memory_instead_of_faulting_it_in():
  # Without the settings glibc mmaps the step's 64 MB temporary afresh each
  # call (16,384 pages faulted in); with them (forced with '1'), once the
  # heap has grown to the step's working set, freed blocks are reused, and a
  # loop with a 1 GB temporary holds no more at its peak than without reuse
  # (with asynchronous dispatch the heap could hold two steps' temporaries).
  settings, async_dispatch, faults, peak = _run_steps(
    {process_tuning.REUSE_HOST_MEMORY_ENV: '1'}
  )
  assert "'host_memory_reuse': 'on'" in settings, settings
  assert not async_dispatch
  settings, async_dispatch, faults_off, peak_off = _run_steps(
    {process_tuning.REUSE_HOST_MEMORY_ENV: '0'}
  )
  assert "'host_memory_reuse': 'off'" in settings
  assert async_dispatch  # JAX's default, untouched.
  print(
    f'minor faults per call: {faults} with, {faults_off} without; '
    f'peak RSS {peak / 2**30:.2f} vs {peak_off / 2**30:.2f} GiB'
  )
  assert faults_off > 8000
  assert faults < 4096  # a quarter of the 64 MB block
  assert peak < peak_off + 2**28  # within 256 MB; a second temporary is 1 GB


@pytest.mark.slow
def test_auto_host_memory_reuse_goes_by_step_size():
  # Unset = 'auto': nothing at start; the launchers then report the step's
  # FLOPs before JAX makes its backend. A small step keeps the defaults; a
  # large one gets reuse and synchronous dispatch (the same effect as '1').
  settings, async_dispatch, faults, _ = _run_steps({'STEP_FLOPS': '1e15'})
  assert "'host_memory_reuse': 'auto'" in settings, settings
  assert "'small': 'off (step 0.0 GFLOP < " in settings, settings
  assert "'large': 'on (step 1000000 GFLOP >= " in settings, settings
  assert not async_dispatch
  assert faults < 4096


def test_auto_host_memory_reuse_is_decided_before_the_backend_only():
  code = (
    'from experiments import process_tuning; process_tuning.configure_process(); '
    'import jax; jax.devices(); '
    'print(process_tuning.reuse_host_memory_for_step(1e15)); '
    'print(jax.config.read("jax_cpu_enable_async_dispatch"))'
  )
  decision, async_dispatch = _python_stdout(
    code, {'JAX_PLATFORMS': 'cpu'}
  ).splitlines()[-2:]
  assert decision.startswith('off (JAX backend already made')
  assert async_dispatch == 'True'


def test_auto_host_memory_reuse_leaves_accelerator_runs_alone():
  code = (
    'import jax; jax.config.update("jax_platforms", "cuda"); '
    'from experiments import process_tuning; '
    'print(process_tuning.reuse_host_memory_for_step(1e15))'
  )
  assert _python_stdout(code, {}).startswith('off (runs on cuda')
