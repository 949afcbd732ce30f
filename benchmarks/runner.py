"""Launch worker processes under a memory cap and a time limit; write results.

Why: the drivers compare implementations whose memory differs by gigabytes on
a shared 24 GiB machine. Each measurement runs in a child process
(`benchmarks.worker`) whose resident memory (with its children) is polled
every 20 ms; a child over the cap is killed and recorded as
`{'status': 'over_memory_cap'}` rather than taking the machine down.
(RLIMIT_AS is not used: XLA and torch reserve far more address space than they
touch, so an address-space limit fails healthy runs.) A 20 ms poll can miss a
very short spike above the cap; the caps used leave room for that.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3


def _tree_rss(proc: psutil.Process) -> int:
  total = 0
  for p in [proc] + proc.children(recursive=True):
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total


def run_worker(
  spec: Dict[str, Any],
  mem_cap_bytes: Optional[int] = None,
  timeout_s: Optional[float] = None,
  env: Optional[Dict[str, str]] = None,
  verbose: bool = True,
) -> Dict[str, Any]:
  """Runs one `benchmarks.worker` measurement in a child process.

  Args:
    spec: the worker spec (see worker.py).
    mem_cap_bytes: kill the child when its resident memory exceeds this.
    timeout_s: kill the child after this many seconds.
    env: extra environment variables for the child.
    verbose: echo the child's stderr tail on failure.

  Returns:
    The worker's result dict with 'status': 'ok', or a dict with status
    'over_memory_cap' | 'timeout' | 'error', the spec's impl/mode/workload and
    the peak memory the watchdog saw.
  """
  cmd = [sys.executable, '-m', 'benchmarks.worker', '--spec', json.dumps(spec)]
  child_env = dict(os.environ, **(env or {}))
  child_env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
      cmd, cwd=ROOT, stdout=out_f, stderr=err_f, env=child_env
    )
    ps = psutil.Process(proc.pid)
    seen = {'peak': 0, 'why': None}

    def watch():
      while proc.poll() is None:
        try:
          rss = _tree_rss(ps)
        except psutil.Error:
          break
        seen['peak'] = max(seen['peak'], rss)
        if mem_cap_bytes and rss > mem_cap_bytes:
          seen['why'] = 'over_memory_cap'
          proc.kill()
          break
        if timeout_s and time.perf_counter() - t0 > timeout_s:
          seen['why'] = 'timeout'
          proc.kill()
          break
        time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc.wait()
    watcher.join()
    out_f.seek(0)
    err_f.seek(0)
    stdout = out_f.read().decode(errors='replace')
    stderr = err_f.read().decode(errors='replace')
  base = {
    'impl': spec['impl'],
    'mode': spec['mode'],
    'workload': spec['workload']['name'],
    'batch': spec['workload']['batch'],
    'watchdog_peak_rss': seen['peak'],
    'elapsed_s': time.perf_counter() - t0,
  }
  if seen['why']:
    base['status'] = seen['why']
    if seen['why'] == 'over_memory_cap':
      base['mem_cap_bytes'] = mem_cap_bytes
    return base
  for line in stdout.splitlines():
    if line.startswith('RESULT '):
      result = json.loads(line[len('RESULT ') :])
      result.update(status='ok', watchdog_peak_rss=seen['peak'])
      return result
  base['status'] = 'error'
  base['stderr_tail'] = stderr[-3000:]
  base['returncode'] = proc.returncode
  if verbose:
    print(
      f'  worker failed ({proc.returncode}):\n{stderr[-3000:]}', file=sys.stderr
    )
  return base


def describe_cpu(cpuinfo: str) -> Dict[str, Any]:
  """The first processor of /proc/cpuinfo: name, family/model, vector ISA.

  Why more than the name: the shared dev machine reports 'AMD EPYC' on
  different hardware at different times (an AVX-512 family-26 CPU ran our
  train steps 2x faster than an earlier CPU of the same name), so results
  must say which one they came from.
  """
  fields = {}
  for line in cpuinfo.splitlines():
    if not line.strip():
      break  # End of the first processor.
    key, _, value = line.partition(':')
    fields[key.strip()] = value.strip()
  flags = set(fields.get('flags', '').split())
  isa = next(
    (
      name
      for name, flag in (
        ('amx', 'amx_tile'),
        ('avx512', 'avx512f'),
        ('avx2', 'avx2'),
      )
      if flag in flags
    ),
    'no avx2',
  )
  out = {
    'cpu_family': fields.get('cpu family'),
    'cpu_model': fields.get('model'),
    'cpu_isa': isa,
  }
  if 'model name' in fields:
    out['cpu'] = (
      f'{fields["model name"]} (family {out["cpu_family"]}, '
      f'model {out["cpu_model"]}, {isa})'
    )
  return out


def machine_info() -> Dict[str, Any]:
  """Where the numbers came from."""
  info = {
    'date': datetime.datetime.now().isoformat(timespec='seconds'),
    'platform': platform.platform(),
    'python': platform.python_version(),
    'cpu_count': os.cpu_count(),
    'memory_gib': round(psutil.virtual_memory().total / GIB, 1),
  }
  try:
    with open('/proc/cpuinfo') as f:
      info.update(describe_cpu(f.read()))
  except OSError:
    pass
  try:
    info['load_avg_at_start'] = os.getloadavg()
  except OSError:
    pass
  return info


def library_versions() -> Dict[str, str]:
  """Versions of the frameworks, read without importing them."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  out = {}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'torch', 'transformers'):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def write_atomic(path: str, text: str) -> None:
  """Write via a temp file + rename, so a failed run never truncates `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp_')
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.chmod(tmp, 0o644)  # mkstemp makes 0600 files.
  os.replace(tmp, path)


def write_results(stem: str, doc, markdown: str) -> None:
  """`stem`.json (the full document) and `stem`.md (its table), atomically."""
  write_atomic(stem + '.json', json.dumps(doc, indent=1))
  write_atomic(stem + '.md', markdown)


def fmt_seconds(x: Optional[float]) -> str:
  if x is None:
    return '-'
  return f'{x * 1000:.1f} ms' if x < 1 else f'{x:.2f} s'


def fmt_bytes(x: Optional[float]) -> str:
  return '-' if x is None else f'{x / GIB:.2f} GiB'


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
  return '-' if not a or not b else f'{a / b:.2f}'


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
  lines = [
    '| ' + ' | '.join(header) + ' |',
    '| ' + ' | '.join('---' for _ in header) + ' |',
  ]
  lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
  return '\n'.join(lines) + '\n'


def add_out_flag(parser, kind: str) -> None:
  """`--out`, which `results_dir(args.out, args.smoke, kind)` resolves."""
  parser.add_argument(
    '--out',
    default=None,
    help=f'output folder (default a new benchmarks/results/{kind}/'
    'run-<UTC time>/, so a run never replaces the committed results; with '
    '--smoke benchmarks/results/smoke).',
  )


def new_run_dir(kind: str) -> str:
  """benchmarks/results/<kind>/run-<UTC date-time>/: a folder of its own.

  Why: the files directly in results/<kind>/ are the committed current
  results that the READMEs cite; a default run must not replace them.
  """
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')
  return os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'results', kind, f'run-{stamp}'
  )


def results_dir(out, smoke, kind):
  """`--out` if given, else a new benchmarks/results/<kind>/run-<time>/
  (benchmarks/results/smoke for smoke runs), so that a default run never
  replaces committed results."""
  if out:
    return out
  if smoke:
    return os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'results', 'smoke'
    )
  return new_run_dir(kind)
