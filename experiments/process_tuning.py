"""Process-level settings for CPU training, applied by the launchers only.

Why here and not in the library: they change the whole process (XLA flags,
JAX's dispatch mode, glibc's allocator), so only a launcher that owns the
process may set them; `import perceiver_io` changes nothing. Measured on a
2-core AMD EPYC with jaxlib 0.10.2 (BUILD_NOTES.md, "Hardware-specific
tricks", has each entry and how to remove it):

* The low-memory XLA:CPU scheduler (`LOW_MEMORY_CPU_FLAG`): XLA's default
  "concurrency optimized" order keeps more buffers alive at once. On the
  206M-parameter language classifier (batch 4 x 2048 bytes, AdamW) planned
  temporaries fall from 2.94 to 2.08 GB, for the same step time within
  noise. `release_host_memory` after compiling returns the compiler's freed
  heap to the OS before the first step.
* Host memory reuse (`reuse_freed_host_memory` + `synchronous_cpu_dispatch`
  + `settle_host_memory`): XLA:CPU frees a step's temporaries (4.3 GB for
  the ImageNet Fourier train step) after every call and allocates them
  again for the next; glibc serves allocations that large with a fresh
  `mmap`, so each step page-faulted its working set back in (1.1M minor
  faults and 5-6 s of kernel time per ImageNet Fourier step; HF: 0.28M and
  2.7 s). Keeping freed memory in the heap removes that (0-150 faults, 0.1-
  0.3 s). With JAX's asynchronous dispatch the next step could allocate a
  second set while the first was held (peak RSS 5.1 -> 9.1-13.1 GiB), so
  reuse comes with synchronous dispatch and a trim of stranded blocks after
  each step; with both, peak RSS is lower than without reuse on every
  benchmark workload.

Synchronous dispatch costs small steps their overlap with the host (the
quickstart: about 20 % fewer examples/s), so by default ('auto',
`host_memory_reuse_mode`) the launchers count the step's matmul FLOPs from
shapes and call `reuse_host_memory_for_step`, which turns reuse on for steps
of `AUTO_REUSE_FLOPS_PER_CORE` x cores or more (every benchmark workload:
0.45-2.4 TFLOP per step; the quickstart: 1.1 GFLOP).
`PERCEIVER_IO_REUSE_HOST_MEMORY=1` or `0` forces it either way.

The XLA flag and the dispatch mode are read once, when JAX creates its CPU
backend: the launchers call `configure_process` first thing in `main` (this
module imports neither NumPy nor JAX at import) and decide the host-memory
setting before anything touches a device. The flag only touches `xla_cpu_*`
behaviour; the glibc settings apply to the whole process, so 'auto' leaves
runs on an accelerator alone.
"""

import ctypes
import functools
import gc
import logging
import os
import sys
from typing import Optional

LOW_MEMORY_CPU_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler'


def prefer_low_memory_cpu(environ=None) -> bool:
  """Adds `LOW_MEMORY_CPU_FLAG=false` to XLA_FLAGS unless the user set it.

  Args:
    environ: the environment to edit (default `os.environ`).

  Returns:
    True if the flag was added, False if XLA_FLAGS already set it either way.
  """
  env = os.environ if environ is None else environ
  flags = env.get('XLA_FLAGS', '')
  if LOW_MEMORY_CPU_FLAG in flags:
    return False  # The user's explicit choice wins.
  env['XLA_FLAGS'] = f'{flags} {LOW_MEMORY_CPU_FLAG}=false'.strip()
  return True


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Any of these in the environment means the user tuned glibc's malloc: leave
# it alone.
_MALLOC_ENV = (
  'MALLOC_ARENA_MAX',
  'MALLOC_MMAP_MAX_',
  'MALLOC_TRIM_THRESHOLD_',
  'MALLOC_MMAP_THRESHOLD_',
  'GLIBC_TUNABLES',
)
REUSE_HOST_MEMORY_ENV = 'PERCEIVER_IO_REUSE_HOST_MEMORY'


class _MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2
  _fields_ = [
    (name, ctypes.c_size_t)
    for name in (
      'arena',
      'ordblks',
      'smblks',
      'hblks',
      'hblkhd',
      'usmblks',
      'fsmblks',
      'uordblks',
      'fordblks',
      'keepcost',
    )
  ]


@functools.lru_cache(maxsize=1)
def _glibc():
  """The C library if it is glibc (has `malloc_trim`/`mallopt`), else None."""
  try:
    libc = ctypes.CDLL('libc.so.6')
  except OSError:
    return None
  if not hasattr(libc, 'mallopt'):
    return None
  if hasattr(libc, 'mallinfo2'):  # glibc >= 2.33
    libc.mallinfo2.restype = _MallInfo2
  return libc


# Set when host memory reuse is applied (`_apply_host_memory_reuse`).
_REUSING_HOST_MEMORY = False
# 'auto' host memory reuse: train/eval steps of at least this many FLOPs per
# core (reuse_host_memory_for_step).
AUTO_REUSE_FLOPS_PER_CORE = 25e9
# Free heap below the top chunk worth handing back after a step (see
# settle_host_memory): well under one large step's temporaries (GBs), well
# above what small allocations strand in passing.
STRANDED_BYTES_LIMIT = 512 << 20


def reuse_freed_host_memory(environ=None) -> bool:
  """Keeps freed memory mapped for reuse instead of unmapping it (glibc).

  One heap for the threads that allocate from now on (`M_ARENA_MAX=1`:
  another thread's heap cannot grow past 64 MB, so its large blocks would be
  mmapped; XLA's thread pools start with its backend, after this), no mmap
  for large blocks (`M_MMAP_MAX=0`) and no automatic trimming
  (`M_TRIM_THRESHOLD=-1`), so a freed block stays for the next step. Use it
  with `synchronous_cpu_dispatch`: with asynchronous dispatch the heap could
  hold two steps' temporaries (module docstring). `release_host_memory`
  still returns memory explicitly.

  Skipped (returns False) where the C library is not glibc, or the
  environment tunes malloc itself (`MALLOC_*`, `GLIBC_TUNABLES`).
  """
  env = os.environ if environ is None else environ
  libc = _glibc()
  if libc is None or any(name in env for name in _MALLOC_ENV):
    return False
  return all(
    libc.mallopt(param, value) == 1
    for param, value in (
      (_M_ARENA_MAX, 1),
      (_M_MMAP_MAX, 0),
      (_M_TRIM_THRESHOLD, -1),
    )
  )


def _cpu_backend_exists() -> bool:
  if 'jax' not in sys.modules:  # Not imported, so no backend (and no import).
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # Private API moved: assume not yet.
    return False


def synchronous_cpu_dispatch() -> bool:
  """Runs CPU computations on the calling thread (`jax_cpu_enable_async_dispatch`).

  With host memory reuse this keeps one step's temporaries in the heap, not
  two (module docstring): executed inline, a call returns after its
  temporaries are freed, so the next call reuses them. Measured on the
  2-core dev machine, with reuse: ImageNet Fourier train peak RSS 5.06 GiB
  (4 steps; 9.1-13.1 GiB with asynchronous dispatch). For steps seconds long
  it costs no time (ImageNet Fourier inference, processes alternated: medians
  7.43-8.24 s synchronous vs 7.77-8.42 s asynchronous); small steps lose
  their overlap with the host (`host_memory_reuse_mode`).
  Imports JAX; call it before JAX creates its CPU backend (afterwards it has
  no effect and returns False).
  """
  import jax  # pylint: disable=g-import-not-at-top

  if _cpu_backend_exists():
    return False  # The CPU client already exists, made with the old value.
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True


def host_memory_reuse_mode(environ=None) -> str:
  """'on', 'off' or 'auto', from `PERCEIVER_IO_REUSE_HOST_MEMORY`.

  '1' forces host memory reuse on, '0' off; unset (or 'auto') lets the
  launchers decide by the size of the step (`reuse_host_memory_for_step`):
  synchronous dispatch, which reuse needs, slows small steps (the
  quickstart: 50-53 s default vs 54-62 s with it, examples/s about 20 %
  lower, 2-core dev machine) and speeds up large ones (module docstring).
  """
  env = os.environ if environ is None else environ
  value = env.get(REUSE_HOST_MEMORY_ENV, '').strip().lower()
  if value in ('', 'auto'):
    return 'auto'
  return 'off' if value in ('0', 'false', 'no', 'off') else 'on'


def _apply_host_memory_reuse(env) -> bool:
  """Reuse and synchronous dispatch together, or neither (module docstring)."""
  libc = _glibc()
  if (
    libc is None
    or any(name in env for name in _MALLOC_ENV)
    or _cpu_backend_exists()
  ):
    return False
  global _REUSING_HOST_MEMORY  # glibc first: before NumPy/JAX threads.
  _REUSING_HOST_MEMORY = (
    reuse_freed_host_memory(env) and synchronous_cpu_dispatch()
  )
  return _REUSING_HOST_MEMORY


def configure_process(environ=None) -> dict:
  """The settings above; call before JAX creates its backend.

  The scheduler flag always (unless XLA_FLAGS sets it); host memory reuse
  and synchronous CPU dispatch with `PERCEIVER_IO_REUSE_HOST_MEMORY=1`
  (in 'auto' mode, the default, the launchers call
  `reuse_host_memory_for_step` once they know the step's size). Returns
  which were applied.
  """
  env = os.environ if environ is None else environ
  mode = host_memory_reuse_mode(env)
  settings = {
    'low_memory_cpu_scheduler': prefer_low_memory_cpu(env),
    'host_memory_reuse': mode,
  }
  if mode == 'on':
    settings['host_memory_reuse'] = (
      'on'
      if _apply_host_memory_reuse(env)
      else 'off (not glibc, MALLOC_* set, or JAX backend already made)'
    )
  return settings


def reuse_host_memory_for_step(
  step_flops: float, environ=None, cores: Optional[int] = None
) -> str:
  """In 'auto' mode: host memory reuse for a step of `step_flops` or more.

  Why by FLOPs: what synchronous dispatch costs is the host work a step can
  no longer overlap (Python dispatch, the next batch: milliseconds), which
  matters for small steps only; what reuse saves is page-faulting the step's
  temporaries back in every call (ImageNet Fourier train: 1.1M faults, 5-6 s
  of kernel time per step). `AUTO_REUSE_FLOPS_PER_CORE` x cores (25 GFLOP
  each, about half a second of work for this CPU) separates the two: the
  quickstart's step is far below it, the benchmark's language and ImageNet
  steps (1.3 TFLOP and more) far above. Must run before JAX creates its
  backend (count FLOPs from shapes, e.g. `count_jaxpr_flops`).

  Returns:
    What was decided, for the log: 'on', 'off', or why nothing changed.
  """
  env = os.environ if environ is None else environ
  mode = host_memory_reuse_mode(env)
  if mode != 'auto':
    return f'{mode} ({REUSE_HOST_MEMORY_ENV})'
  if _cpu_backend_exists():
    return 'off (JAX backend already made: decided per process, at start)'
  platform = expected_platform()
  if platform != 'cpu':
    return f'off (runs on {platform}: host memory reuse is for CPU steps)'
  cores = cores or len(os.sched_getaffinity(0))
  threshold = AUTO_REUSE_FLOPS_PER_CORE * cores
  if step_flops < threshold:
    return (
      f'off (step {step_flops / 1e9:.1f} GFLOP < {threshold / 1e9:.0f} '
      f'GFLOP for {cores} cores)'
    )
  if _apply_host_memory_reuse(env):
    return (
      f'on (step {step_flops / 1e9:.0f} GFLOP >= '
      f'{threshold / 1e9:.0f} GFLOP for {cores} cores)'
    )
  return 'off (not glibc, MALLOC_* set, or JAX backend already made)'


def expected_platform() -> str:
  """The platform JAX will pick, without creating a backend.

  `jax_platforms` if set; otherwise 'accelerator' when a PJRT plugin (CUDA,
  ROCm, TPU) is installed, since JAX then prefers it, else 'cpu'.
  """
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  platforms = (jax.config.jax_platforms or '').split(',')
  if platforms[0].strip():
    return platforms[0].strip()
  if (
    importlib.metadata.entry_points(group='jax_plugins')
    or importlib.util.find_spec('jax_plugins')
    or importlib.util.find_spec('libtpu')
  ):
    return 'accelerator'
  return 'cpu'


def settle_host_memory(limit: int = STRANDED_BYTES_LIMIT) -> bool:
  """After a step, with host memory reuse: frees stranded heap blocks' pages.

  Why: XLA allocates a step's temporaries with an aligned allocation, which
  glibc (before 2.38) can only serve from a free block larger than the exact
  size. If a small allocation lands right after the temporaries during a
  step, their freed block is stranded, exactly too small for the next step,
  and the heap grows by a whole second block (a 1 GB toy step: peak RSS 2.27
  vs 1.33 GiB without reuse; tests/test_runtime.py). `malloc_trim` with a
  pad of the top chunk's size merges freed neighbours first (which alone
  un-strands the block in that toy: peak 1.27 GiB) and returns the pages of
  free blocks below the top to the OS, while the top chunk, where the steady
  state keeps the temporaries, stays mapped. Costs one `mallinfo2` call when
  nothing is stranded, so the launchers call it after every step; a no-op
  unless host memory reuse was applied (`configure_process` or
  `reuse_host_memory_for_step`).

  Returns:
    True if it trimmed.
  """
  if not _REUSING_HOST_MEMORY:
    return False
  libc = _glibc()
  if libc is None or not hasattr(libc, 'mallinfo2'):
    return False
  info = libc.mallinfo2()
  if info.fordblks - info.keepcost < limit:
    return False
  libc.malloc_trim(ctypes.c_size_t(info.keepcost))
  return True


def release_host_memory() -> None:
  """Returns freed heap pages to the OS (gc + glibc `malloc_trim`).

  Call after set-up (model initialisation, compilation): their temporaries are
  freed but glibc keeps the pages, which then add to the peak of training.
  A no-op where the C library is not glibc. Imports neither NumPy nor JAX, so
  the torch benchmark worker uses it too.
  """
  gc.collect()
  libc = _glibc()
  if libc is not None:
    libc.malloc_trim(0)


def log_host_memory_reuse(decision: str) -> None:
  """Logs a `reuse_host_memory_for_step` decision in plain words.

  Why only 'on' at INFO: it changes how the process runs (synchronous
  dispatch, glibc settings) and the user may want to know how to undo it;
  'off' is the default behaviour and its reason (FLOPs per core) means
  nothing to someone training a model, so it goes to DEBUG.
  """
  if decision.startswith('on') and _REUSING_HOST_MEMORY:
    undo = (
      f'set by {REUSE_HOST_MEMORY_ENV}=1'
      if REUSE_HOST_MEMORY_ENV in decision
      else f'a large step; {REUSE_HOST_MEMORY_ENV}=0 turns this off'
    )
    logging.info('CPU memory: kept between steps for reuse (%s).', undo)
  else:
    logging.debug('host memory reuse: %s', decision)


def log_process_settings(settings: dict) -> None:
  """Logs `configure_process`'s result: a warning when a requested
  setting could not be applied, otherwise only at DEBUG (the defaults)."""
  reuse = str(settings.get('host_memory_reuse', ''))
  if reuse.startswith('off ('):
    logging.warning(
      '%s=1 has no effect here: %s.', REUSE_HOST_MEMORY_ENV, reuse[5:-1]
    )
  logging.debug('process settings: %s', settings)
