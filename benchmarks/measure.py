"""How a worker measures a call: its times and this process's memory.

Why: ours and the reference are only comparable when one loop times both.
The first call (compilation for ours, first-call allocation for torch) is
kept apart from the timed repeats, times are medians, and each call's CPU
seconds and page faults say whether a difference is compute or memory
management. Peak resident memory is this process's high-water mark, which
is why every measurement runs in a process of its own (`worker.py`).
"""

import time
from typing import Any, Callable, Dict, Optional

import numpy as np


def time_calls(
  fn: Callable[[], Any],
  repeats: int,
  warmup: int = 1,
  max_seconds: Optional[float] = None,
) -> Dict[str, Any]:
  """Runs `fn` warmup + repeats times; the first (compile) time is kept apart.

  `fn` must block until its work is done. Stops early (with at least one timed
  repeat) once `max_seconds` of timed calls have passed.

  Returns:
    dict with first_s (first call, includes compilation), times_s (the timed
    repeats) and median_s; and, per timed call, the process's CPU seconds in
    user space and in the kernel and its minor page faults (medians:
    cpu_user_s, cpu_sys_s, minor_faults), which tell compute from memory
    management when two implementations' times differ.
  """
  import resource  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    fn()
  times, user, system, faults = [], [], [], []
  start = time.perf_counter()
  for _ in range(repeats):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user.append(r1.ru_utime - r0.ru_utime)
    system.append(r1.ru_stime - r0.ru_stime)
    faults.append(r1.ru_minflt - r0.ru_minflt)
    if max_seconds is not None and time.perf_counter() - start > max_seconds:
      break
  return {
    'first_s': first,
    'times_s': times,
    'median_s': float(np.median(times)),
    'cpu_user_s': float(np.median(user)),
    'cpu_sys_s': float(np.median(system)),
    'minor_faults': int(np.median(faults)),
  }


def peak_rss_bytes() -> int:
  """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
  import resource  # pylint: disable=g-import-not-at-top

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
  import psutil  # pylint: disable=g-import-not-at-top

  return psutil.Process().memory_info().rss
