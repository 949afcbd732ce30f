"""Process-level settings that cut host memory on CPU, used by the launchers.

Why: on CPU, XLA's default "concurrency optimized" scheduler orders a
training step for parallelism and keeps more buffers alive at once. Measured
on the full-size language classifier (206M parameters, batch 4 x 2048 bytes,
AdamW, jax 0.10.2): XLA's planned temporaries fall from 2.94 GB to 2.08 GB
and the step's peak RSS from 6.57 to 5.73 GiB with the memory-first order,
for the same step time within noise (BUILD_NOTES.md). Compiling a large step
also leaves freed heap that glibc keeps; returning it to the OS before the
first step lowers the peak further (5.15 GiB in the same run).

The flags are read when JAX creates its CPU backend, so `prefer_low_memory_cpu`
must run before the first JAX computation (the launchers call it first
thing). They only touch `xla_cpu_*` behaviour; GPU/TPU runs are unaffected.
"""

import ctypes
import gc
import os

LOW_MEMORY_CPU_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler'
# Only dots go to the YNN library; elementwise ops and reductions use XLA's
# own loops. Measured with jaxlib 0.10.2 on the 2-core dev machine, language
# classifier (depth 6) on 65,536 bytes: train step 13.3-13.9 -> 10.6-11.4 s,
# peak RSS 5.26 -> 4.76 GiB; inference 4.19 -> 3.82 s; ImageNet Fourier and
# IMDB batch-4 steps unchanged within noise (BUILD_NOTES.md). The flag is set
# only for the jaxlib minor versions it was measured (and accepted) on: XLA
# aborts on an unknown flag.
YNN_DOTS_ONLY_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_DOTS_ONLY_JAXLIB = ('0.10.',)


def _jaxlib_version():
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version('jaxlib')
  except Exception:  # pylint: disable=broad-except
    return ''


def prefer_low_memory_cpu(environ=None, jaxlib_version=None) -> bool:
  """Adds the CPU settings to XLA_FLAGS, each unless the user set it.

  `LOW_MEMORY_CPU_FLAG=false` (memory-first scheduling) always;
  `YNN_DOTS_ONLY_FLAG=individual_dot` on the jaxlib versions in
  `YNN_DOTS_ONLY_JAXLIB`.

  Args:
    environ: the environment to edit (default `os.environ`).
    jaxlib_version: the installed jaxlib's version (default: looked up).

  Returns:
    True if any flag was added, False if XLA_FLAGS already set them.
  """
  env = os.environ if environ is None else environ
  if jaxlib_version is None:
    jaxlib_version = _jaxlib_version()
  wanted = [(LOW_MEMORY_CPU_FLAG, 'false')]
  if jaxlib_version.startswith(YNN_DOTS_ONLY_JAXLIB):
    wanted.append((YNN_DOTS_ONLY_FLAG, 'individual_dot'))
  flags = env.get('XLA_FLAGS', '')
  added = False
  for flag, value in wanted:
    if flag in flags:
      continue  # The user's explicit choice wins.
    flags = f'{flags} {flag}={value}'.strip()
    added = True
  env['XLA_FLAGS'] = flags
  return added


def release_host_memory() -> None:
  """Returns freed heap pages to the OS (gc + glibc `malloc_trim`).

  Call after set-up (model initialisation, compilation): their temporaries are
  freed but glibc keeps the pages, which then add to the peak of training.
  A no-op where the C library is not glibc.
  """
  gc.collect()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass
