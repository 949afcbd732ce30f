r"""Compile time and step time of train steps, unrolled vs scanned layers.

  python -m benchmarks.scan_compile --batch=1 --repeats=2 \
      --out=benchmarks/results/cpu

Why: `scan_layers` (perceiver_io/encoder.py) exists to cut compile time,
which grows with depth when XLA sees every layer of the latent stack; it is
only worth turning on if the step it compiles runs as fast. For the 26-layer
language model (IMDB workload) and ImageNet Fourier (8 repeats x 6 shared
layers) this times the jitted AdamW train step of `benchmarks.worker` (the
launchers' process settings and kernels) in each layout: compile time
(`lower().compile()`, tracing included) and the median step time, each
measurement in a fresh process so that no compile cache is shared. Writes
scan_compile.json and .md (`runner.write_results`); `--smoke` runs tiny sizes.
"""

import argparse
import os
import sys
from typing import Any, Dict, List

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position

WORKLOADS = ('imdb', 'imagenet_fourier')
LAYOUTS = {'unrolled': False, 'scanned': True}
# The goal: compile at least this many times faster...
COMPILE_GOAL = 3.0
# ...with a step time within this fraction of the unrolled one.
STEP_GOAL = 0.05


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workloads', default=','.join(WORKLOADS))
  p.add_argument('--batch', type=int, default=1, help='examples per step.')
  p.add_argument('--repeats', type=int, default=3, help='timed steps.')
  p.add_argument('--smoke', action='store_true', help='tiny sizes.')
  p.add_argument('--timeout_s', type=float, default=1800.0)
  runner.add_out_flag(p, 'cpu')
  args = p.parse_args(argv)
  names = [n for n in args.workloads.split(',') if n]
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown or not names:
    p.error(f'--workloads: choose from {",".join(WORKLOADS)}; got {unknown}.')
  if args.batch < 1 or args.repeats < 1:
    p.error('--batch and --repeats must be at least 1.')
  args.names = names
  return args


def measure(args) -> List[Dict[str, Any]]:
  """One worker run per workload and layout (unrolled first)."""
  workloads = W.standard_workloads(
    smoke=args.smoke, batch={n: args.batch for n in args.names}
  )
  results = []
  for name in args.names:
    w = workloads[name]
    for layout, scan in LAYOUTS.items():
      spec = {
        'impl': 'ours',
        'mode': 'train',
        'workload': {**w.__dict__, 'modes': list(w.modes)},
        'repeats': args.repeats,
        'scan_layers': scan,
        'count_flops': False,
      }
      print(f'{name} {layout} ...', file=sys.stderr, flush=True)
      result = runner.run_worker(spec, timeout_s=args.timeout_s)
      result['layout'] = layout
      results.append(result)
  return results


def summarise(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
  """Per workload: compile speed-up and step-time ratio, scanned/unrolled."""
  by = {(r['workload'], r['layout']): r for r in results}
  out = {}
  for name in dict.fromkeys(r['workload'] for r in results):
    a, b = by.get((name, 'unrolled')), by.get((name, 'scanned'))
    if not (a and b and a['status'] == b['status'] == 'ok'):
      out[name] = {'status': 'incomplete'}
      continue
    speedup = a['compile_s'] / b['compile_s']
    step_ratio = b['median_s'] / a['median_s']
    out[name] = {
      'status': 'ok',
      'compile_speedup': speedup,
      'step_time_ratio': step_ratio,
      'meets_goal': speedup >= COMPILE_GOAL and step_ratio <= 1 + STEP_GOAL,
    }
  return out


def markdown(results, summary, args) -> str:
  rows = []
  for r in results:
    ok = r['status'] == 'ok'
    s = summary.get(r['workload'], {})
    scanned = r['layout'] == 'scanned' and s.get('status') == 'ok'
    rows.append(
      [
        r['workload'],
        r['layout'],
        r.get('batch', args.batch),
        runner.fmt_seconds(r.get('compile_s')) if ok else r['status'],
        runner.fmt_seconds(r.get('median_s')) if ok else '-',
        f'{s["compile_speedup"]:.2f}x' if scanned else '',
        f'{s["step_time_ratio"]:.3f}' if scanned else '',
        runner.fmt_bytes(r.get('peak_rss')),
      ]
    )
  header = [
    'workload',
    'layout',
    'batch',
    'compile',
    'step (median)',
    'compile speed-up',
    'step ratio',
    'peak RSS',
  ]
  return (
    f'Train step, unrolled vs scanned latent layers ({args.repeats} timed '
    f'steps, median). Goal: compile >= {COMPILE_GOAL:g}x faster, step '
    f'within {STEP_GOAL:.0%}.\n\n' + runner.markdown_table(header, rows)
  )


def main(argv=None):
  args = parse_args(argv)
  results = measure(args)
  summary = summarise(results)
  doc = {
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'args': {k: v for k, v in vars(args).items() if k != 'names'},
    'results': results,
    'summary': summary,
  }
  out = runner.results_dir(args.out, args.smoke, 'cpu')
  text = markdown(results, summary, args)
  runner.write_results(os.path.join(out, 'scan_compile'), doc, text)
  print(text)


if __name__ == '__main__':
  main()
