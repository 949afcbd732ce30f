"""GEMM throughput of XLA:CPU (what our model runs on) and torch, this machine.

Why: the CPU ratios against HF move with the hardware far more than with our
code (the dev machine's 'AMD EPYC' has been different CPUs at different
times), and nearly all of both sides' step time is matrix products. This
measures the products the Perceiver's steps are made of, both libraries in
one process, alternated round by round, so a results table can say which
machine it came from and why the ratio is what it is.

Forms: 'nn' is the row-major product x @ W (forward, dx = dy @ W^T after a
free transpose of W); 'tn' contracts the left operand's rows, x^T @ dy, the
form autodiff gives every weight gradient (perceiver_io/kernels/cpu.py).

Usage:
  python -m benchmarks.gemm                      # 1024^3 and 8192x1024x1024
  python -m benchmarks.gemm --sizes 1024x1024x1024 --rounds 5 --out DIR
Writes <out>/gemm.json and gemm.md.
"""

import argparse
import os
import statistics
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import measure  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_size(text):
  """'MxKxN' -> (M, K, N)."""
  parts = text.lower().split('x')
  if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(
      f'size {text!r} must look like MxKxN, e.g. 1024x1024x1024.'
    )
  return tuple(int(p) for p in parts)


def gemm_callables(m, k, n, form):
  """{'xla': fn, 'torch': fn} computing the same [m,k]x[k,n] product."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  # 'tn' stores the left operand as [k, m] and contracts its rows.
  a = rng.standard_normal((k, m) if form == 'tn' else (m, k), np.float32)
  b = rng.standard_normal((k, n), np.float32)
  dims = (((0,), (0,)), ((), ())) if form == 'tn' else (((1,), (0,)), ((), ()))
  xla = jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims))
  ja, jb = jax.device_put(a), jax.device_put(b)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  torch_fn = (lambda: ta.t() @ tb) if form == 'tn' else (lambda: ta @ tb)
  return {'xla': lambda: xla(ja, jb).block_until_ready(), 'torch': torch_fn}


def run(sizes, rounds, calls):
  import torch  # pylint: disable=g-import-not-at-top

  rows = []
  for m, k, n in sizes:
    for form in ('nn', 'tn'):
      fns = gemm_callables(m, k, n, form)
      times = {name: [] for name in fns}
      for _ in range(rounds):
        for name, fn in fns.items():
          times[name].append(measure.time_calls(fn, calls)['median_s'])
      flops = 2.0 * m * k * n
      row = {'m': m, 'k': k, 'n': n, 'form': form}
      for name in fns:
        row[f'{name}_s'] = statistics.median(times[name])
        row[f'{name}_gflops'] = flops / row[f'{name}_s'] / 1e9
      rows.append(row)
      print(
        f'{m}x{k}x{n} {form}: XLA {row["xla_gflops"]:.0f} GFLOP/s, '
        f'torch {row["torch_gflops"]:.0f} GFLOP/s',
        flush=True,
      )
  return {
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'torch_threads': torch.get_num_threads(),
    'rounds': rounds,
    'calls': calls,
    'rows': rows,
  }


def to_markdown(doc):
  m = doc['machine']
  lines = [
    f'fp32 GEMM on {m.get("cpu", "?")} ({m["cpu_count"]} cores), '
    f'{m["date"]}; torch threads {doc["torch_threads"]}; medians of '
    f'{doc["rounds"]} rounds x {doc["calls"]} calls, both libraries '
    'alternated in one process.',
    '',
    '| M x K x N | form | XLA | torch | XLA / torch |',
    '| --- | --- | --- | --- | --- |',
  ]
  for r in doc['rows']:
    lines.append(
      f'| {r["m"]} x {r["k"]} x {r["n"]} | {r["form"]} | '
      f'{r["xla_gflops"]:.0f} GFLOP/s | {r["torch_gflops"]:.0f} '
      f'GFLOP/s | {r["xla_gflops"] / r["torch_gflops"]:.2f} |'
    )
  return '\n'.join(lines) + '\n'


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--sizes',
    default='1024x1024x1024,8192x1024x1024',
    help='comma-separated MxKxN.',
  )
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--calls', type=int, default=5)
  p.add_argument(
    '--out',
    default=None,
    help='output folder (default a new benchmarks/results/cpu/run-<UTC time>/).',
  )
  args = p.parse_args(argv)
  sizes = [parse_size(s) for s in args.sizes.split(',') if s]
  doc = run(sizes, args.rounds, args.calls)
  args.out = args.out or runner.new_run_dir('cpu')
  runner.write_results(os.path.join(args.out, 'gemm'), doc, to_markdown(doc))
  print(to_markdown(doc))
  return 0


if __name__ == '__main__':
  sys.exit(main())
