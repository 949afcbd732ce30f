r"""Compile time and step time of train steps, unrolled vs scanned layers.

  python -m benchmarks.scan_compile --batch=1 --repeats=3 --rounds=3 \
      --out=benchmarks/results/cpu

Why: `scan_layers` (perceiver_io/encoder.py) exists to cut compile time,
which grows with depth when XLA sees every layer of the latent stack; it is
only worth turning on if the step it compiles runs as fast. For the 26-layer
language model (IMDB workload) and ImageNet Fourier (8 repeats x 6 shared
layers) this times the jitted AdamW train step of `benchmarks.worker` (the
launchers' process settings and kernels) in each layout: compile time
(`lower().compile()`, tracing included) and the median step time, each
measurement in a fresh process so that no compile cache is shared. On a
shared machine other work only ever adds time, so `--rounds` repeats every
pair (the order alternating, unrolled first then scanned first) and the
summary compares the fastest of each. Writes scan_compile.json and .md
(`runner.write_results`); `--smoke` runs tiny sizes.
"""

import argparse
import os
import sys
import tempfile
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
  p.add_argument(
    '--rounds', type=int, default=1, help='measurements of each pair.'
  )
  p.add_argument('--smoke', action='store_true', help='tiny sizes.')
  p.add_argument(
    '--restart',
    action='store_true',
    help='also time the compile of a restart that finds the step in the '
    'persistent compilation cache.',
  )
  p.add_argument('--timeout_s', type=float, default=1800.0)
  runner.add_out_flag(p, 'cpu')
  args = p.parse_args(argv)
  names = [n for n in args.workloads.split(',') if n]
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown or not names:
    p.error(f'--workloads: choose from {",".join(WORKLOADS)}; got {unknown}.')
  if min(args.batch, args.repeats, args.rounds) < 1:
    p.error('--batch, --repeats and --rounds must be at least 1.')
  args.names = names
  return args


def measure(args) -> List[Dict[str, Any]]:
  """One worker run per workload, layout and round."""
  workloads = W.standard_workloads(
    smoke=args.smoke, batch={n: args.batch for n in args.names}
  )
  results = []
  for round_ in range(args.rounds):
    for name in args.names:
      w = workloads[name]
      layouts = list(LAYOUTS.items())
      for layout, scan in layouts if round_ % 2 == 0 else layouts[::-1]:
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
        result.update(layout=layout, round=round_)
        if args.restart and result['status'] == 'ok':
          result['restart_compile_s'] = _restart_compile(spec, args)
        results.append(result)
  return results


def _restart_compile(spec, args) -> float | None:
  """The compile time of a restart: a process that finds the step in
  JAX's persistent compilation cache (as `experiments/compile_cache.py`
  keeps it for a resumed run), after one that filled it."""
  spec = {**spec, 'repeats': 1}
  with tempfile.TemporaryDirectory() as cache:
    env = {'JAX_COMPILATION_CACHE_DIR': cache}
    for _ in range(2):  # Fill, then load.
      result = runner.run_worker(spec, timeout_s=args.timeout_s, env=env)
      if result['status'] != 'ok':
        return None
  return result['compile_s']


def _fastest(results, name, layout, key):
  values = [
    r[key]
    for r in results
    if (r['workload'], r['layout'], r['status']) == (name, layout, 'ok')
    and r.get(key) is not None
  ]
  return min(values) if values else None


def summarise(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
  """Per workload: the fastest compile and step of each layout, and the
  compile speed-up and step-time ratio, scanned / unrolled."""
  out = {}
  for name in dict.fromkeys(r['workload'] for r in results):
    best = {
      (layout, key): _fastest(results, name, layout, key)
      for layout in LAYOUTS
      for key in ('compile_s', 'median_s')
    }
    if None in best.values():
      out[name] = {'status': 'incomplete'}
      continue
    speedup = best['unrolled', 'compile_s'] / best['scanned', 'compile_s']
    step_ratio = best['scanned', 'median_s'] / best['unrolled', 'median_s']
    out[name] = {
      'status': 'ok',
      **{f'{k}_{layout}': v for (layout, k), v in best.items()},
      **{
        f'restart_compile_s_{layout}': _fastest(
          results, name, layout, 'restart_compile_s'
        )
        for layout in LAYOUTS
      },
      'compile_speedup': speedup,
      'step_time_ratio': step_ratio,
      'meets_goal': speedup >= COMPILE_GOAL and step_ratio <= 1 + STEP_GOAL,
    }
  return out


def _restart(s) -> str:
  got = [s.get(f'restart_compile_s_{layout}') for layout in LAYOUTS]
  if None in got:
    return ''
  return ', a restart from the compilation cache ' + ' -> '.join(
    runner.fmt_seconds(t) for t in got
  )


def markdown(results, summary, args) -> str:
  rows = []
  for r in results:
    ok = r['status'] == 'ok'
    rows.append(
      [
        r['workload'],
        r['layout'],
        r.get('round', 0),
        r.get('batch', args.batch),
        runner.fmt_seconds(r.get('compile_s')) if ok else r['status'],
        runner.fmt_seconds(r.get('restart_compile_s')),
        runner.fmt_seconds(r.get('median_s')) if ok else '-',
        runner.fmt_seconds(r.get('cpu_user_s')) if ok else '-',
        runner.fmt_bytes((r.get('memory_analysis') or {}).get('temp_bytes')),
        runner.fmt_bytes(r.get('peak_rss')),
      ]
    )
  header = [
    'workload',
    'layout',
    'round',
    'batch',
    'compile',
    'restart compile (cached)',
    'step (median)',
    'step CPU (user)',
    'XLA temp',
    'peak RSS',
  ]
  lines = []
  for name, s in summary.items():
    if s['status'] != 'ok':
      lines.append(f'- {name}: incomplete (see the rows).')
      continue
    lines.append(
      f'- {name}: compile {runner.fmt_seconds(s["compile_s_unrolled"])} -> '
      f'{runner.fmt_seconds(s["compile_s_scanned"])} '
      f'({s["compile_speedup"]:.2f}x faster){_restart(s)}; step '
      f'{runner.fmt_seconds(s["median_s_unrolled"])} -> '
      f'{runner.fmt_seconds(s["median_s_scanned"])} (ratio '
      f'{s["step_time_ratio"]:.3f}); goal met: {s["meets_goal"]}.'
    )
  return (
    f'Train step, unrolled vs scanned latent layers: {args.rounds} round(s), '
    f'{args.repeats} timed steps each (median). Goal: compile >= '
    f'{COMPILE_GOAL:g}x faster, step within {STEP_GOAL:.0%}; the fastest '
    'of the rounds compared:\n\n'
    + '\n'.join(lines)
    + '\n\n'
    + runner.markdown_table(header, rows)
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
