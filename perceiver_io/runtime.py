"""Process-level settings that cut host memory on CPU, used by the launchers.

Why: on CPU, XLA's default "concurrency optimized" scheduler orders a
training step for parallelism and keeps more buffers alive at once. Measured
on the full-size language classifier (206M parameters, batch 4 x 2048 bytes,
AdamW, jax 0.10.2): XLA's planned temporaries fall from 2.94 GB to 2.08 GB
and the step's peak RSS from 6.57 to 5.73 GiB with the memory-first order,
for the same step time within noise (BUILD_NOTES.md). Compiling a large step
also leaves freed heap that glibc keeps; returning it to the OS before the
first step lowers the peak further (5.15 GiB in the same run).

Host memory reuse (`reuse_freed_host_memory`, opt-in with
`PERCEIVER_IO_REUSE_HOST_MEMORY=1`): XLA:CPU frees a step's
temporaries (4.3 GB for the ImageNet Fourier train step) after every call and
allocates them again for the next; glibc serves allocations that large, and
every one above 64 MB made on a worker thread, with a fresh `mmap`, so each
step page-faults its whole working set back in (1.14M minor faults and 4-6 s
of kernel time per ImageNet Fourier step on the 2-core dev machine). Keeping
freed memory in one glibc heap removes that: 8-142 faults and 0.1 s kernel
time per step. Steps get faster (ImageNet Fourier train 25.9 -> 22.2 s in
two runs of the same hour; optical flow inference 19.8 s vs HF's 34.5 s in
one run, ours 32.0 s without it in an earlier one) but glibc's single heap
fragments, and peak RSS grew on the large-temporary workloads (ImageNet
Fourier train 5.4 -> 9.3 GiB, flow 4.7 -> 6.2 GiB; BUILD_NOTES.md, "Fourth
session"), so it is off unless asked for.

Both are read once: the XLA flag when JAX creates its CPU backend, the glibc
arena limit when a second thread first allocates. So `configure_process` must
run before NumPy or JAX is imported (both start threads at import): the
launchers call it first thing in `main`, and `import perceiver_io.runtime`
does not import them. The flag only touches `xla_cpu_*` behaviour; the glibc
settings apply to the whole process on any backend.
"""

import ctypes
import gc
import os

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
_MALLOC_ENV = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_',
               'MALLOC_MMAP_THRESHOLD_', 'GLIBC_TUNABLES')
REUSE_HOST_MEMORY_ENV = 'PERCEIVER_IO_REUSE_HOST_MEMORY'


def _glibc():
  """The C library if it is glibc (has `malloc_trim`/`mallopt`), else None."""
  try:
    libc = ctypes.CDLL('libc.so.6')
    return libc if hasattr(libc, 'mallopt') else None
  except OSError:
    return None


def reuse_freed_host_memory(environ=None) -> bool:
  """Keeps freed memory mapped for reuse instead of unmapping it (glibc).

  One heap for all threads (`M_ARENA_MAX=1`: other threads' heaps cannot grow
  past 64 MB, so their large blocks would be mmapped), no mmap for large
  blocks (`M_MMAP_MAX=0`) and no automatic trimming (`M_TRIM_THRESHOLD=-1`).
  Trades memory for time: no page faults per step, but the one heap
  fragments and can hold more at the peak (module docstring).
  `release_host_memory` still returns memory explicitly.

  Must run before NumPy or JAX is imported: glibc fixes its arena limit
  once a few threads have allocated, after which the setting is inert.
  Skipped (returns False) where the C library is not glibc, or the
  environment tunes malloc itself (`MALLOC_*`, `GLIBC_TUNABLES`).
  `configure_process` calls it only with `PERCEIVER_IO_REUSE_HOST_MEMORY=1`.
  """
  env = os.environ if environ is None else environ
  libc = _glibc()
  if libc is None or any(name in env for name in _MALLOC_ENV):
    return False
  return all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def configure_process(environ=None) -> dict:
  """The settings above; call before NumPy or JAX is imported.

  The scheduler flag always (unless XLA_FLAGS sets it); host memory reuse
  with `PERCEIVER_IO_REUSE_HOST_MEMORY=1`. Returns which were applied.
  """
  env = os.environ if environ is None else environ
  reuse = env.get(REUSE_HOST_MEMORY_ENV, '0') not in ('', '0')
  return {'low_memory_cpu_scheduler': prefer_low_memory_cpu(env),
          'reuse_freed_host_memory': reuse and reuse_freed_host_memory(env)}


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
