"""Ours vs HuggingFace's PyTorch Perceiver, same work, same machine, same run.

Why: people choose a framework by how fast it trains and how much memory it
needs, and the people we want use `transformers`' Perceiver today. This script
runs both on identical model sizes (parameter counts are checked equal),
identical inputs and the same optimizer, back to back, each measurement in its
own process (`benchmarks.worker`) so peak resident memory is per
implementation. Warm-up (compilation for ours, first-call allocation for
torch) is excluded and reported apart; times are medians over `--repeats`.

Workloads (see workloads.py): `imdb` (text classification, 206M params, batch
4 x 2048 bytes, padded mask), `imagenet_fourier`, `imagenet_conv` (224x224,
batch 2), `optical_flow` (inference, one 368x496 pair).

Threads: torch gets `set_num_threads(n)` and XLA's pool follows the process
affinity mask; by default n = all cores for both (`--threads` pins both to the
first n cores).

Usage:
  python -m benchmarks.compare_reference                     # everything
  python -m benchmarks.compare_reference --workloads imdb --modes train \
      --repeats 3 --batch imdb=2
  python -m benchmarks.compare_reference --smoke             # tiny, seconds
Writes <out>/compare.json and <out>/compare.md.
"""

import argparse
import dataclasses
import os
import statistics
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads_ours  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_key_values(items, what):
  """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'} (ints/bools/None parsed)."""
  out = {}
  for item in items or ():
    for part in item.split(','):
      if not part:
        continue
      if '=' not in part:
        raise ValueError(f'{what} entries look like key=value, got {part!r}.')
      key, value = part.split('=', 1)
      lowered = value.lower()
      if lowered in ('true', 'false'):
        out[key] = lowered == 'true'
      elif lowered == 'none':
        out[key] = None
      else:
        try:
          out[key] = int(value)
        except ValueError:
          out[key] = value
  return out


def check_batches(batch, known):
  """`--batch` must name known workloads, with whole numbers >= 1."""
  unknown = sorted(set(batch) - set(known))
  if unknown:
    raise ValueError(
      f'--batch names unknown workload(s) {unknown}; choose '
      f'from {sorted(known)}.'
    )
  for key, value in batch.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(
        f'--batch {key}={value}: a batch is a whole number >= 1.'
      )


def check_ours(perf, workloads):
  """`--ours` keys and values, checked on each requested workload's config
  (as the worker would build it) before any measurement starts."""
  unknown = sorted(set(perf) - set(workloads_ours.PERF_KEYS))
  if unknown:
    raise ValueError(
      f'--ours keys must be among {workloads_ours.PERF_KEYS}, got {unknown}.'
    )
  if not perf:
    return
  from perceiver_io import kernels  # pylint: disable=g-import-not-at-top
  from perceiver_io import model as model_lib  # pylint: disable=g-import-not-at-top

  impl = perf.get('attention_impl', 'auto')
  if impl not in kernels.ATTENTION_IMPLS:
    raise ValueError(
      f'--ours attention_impl={impl}: one of '
      f'{", ".join(kernels.ATTENTION_IMPLS)}.'
    )
  for w in workloads:
    try:
      model_lib.validate_config(workloads_ours.ours_config(w, **perf))
    except ValueError as e:
      raise ValueError(
        f'--ours {",".join(f"{k}={v}" for k, v in perf.items())}: {e}'
      ) from None


def check_counts(args):
  for flag in ('repeats', 'rounds', 'threads'):
    value = getattr(args, flag, None)
    if value is not None and value < 1:
      raise ValueError(f'--{flag} must be >= 1, got {value}.')
  if getattr(args, 'warmup', 0) < 0:
    raise ValueError(f'--warmup must be >= 0, got {args.warmup}.')


def plan(args):
  """Checks every argument; returns (workloads in order, modes, impls,
  ours perf options). Raises ValueError naming the bad flag."""
  check_counts(args)
  batch = parse_key_values(args.batch, '--batch')
  everything = W.standard_workloads(args.smoke)
  check_batches(batch, everything)
  everything = W.standard_workloads(args.smoke, batch)
  names = [n for n in args.workloads.split(',') if n]
  bad = [n for n in names if n not in everything]
  if bad or not names:
    raise ValueError(
      f'unknown workloads {bad} (--workloads); choose from '
      f'{sorted(everything)}.'
    )
  modes = [m for m in args.modes.split(',') if m]
  impls = [i for i in args.impls.split(',') if i]
  if (
    set(modes) - {'train', 'infer'}
    or set(impls) - {'ours', 'hf'}
    or not modes
    or not impls
  ):
    raise ValueError('--modes takes train/infer and --impls ours/hf.')
  ours_perf = parse_key_values(args.ours, '--ours')
  check_ours(ours_perf, [everything[n] for n in names])
  return [everything[n] for n in names], modes, impls, ours_perf


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--workloads',
    default='imdb,imagenet_fourier,imagenet_conv,optical_flow',
    help='comma-separated workload names.',
  )
  p.add_argument(
    '--modes',
    default='train,infer',
    help='train and/or infer (flow is inference only).',
  )
  p.add_argument('--impls', default='ours,hf', help='ours and/or hf.')
  p.add_argument('--repeats', type=int, default=3, help='timed calls.')
  p.add_argument(
    '--warmup',
    type=int,
    default=1,
    help='untimed calls first (the first compiles).',
  )
  p.add_argument(
    '--max_seconds',
    type=float,
    default=None,
    help='stop timing a measurement after this many seconds '
    '(at least one timed call).',
  )
  p.add_argument(
    '--batch',
    action='append',
    default=[],
    help='per-workload batch, e.g. imdb=2,imagenet_conv=1.',
  )
  p.add_argument(
    '--threads',
    type=int,
    default=None,
    help='pin both implementations to this many cores.',
  )
  p.add_argument(
    '--rounds',
    type=int,
    default=1,
    help='repeat the ours/hf pair this many times, alternating; '
    'medians over all rounds (evens out a noisy machine).',
  )
  p.add_argument(
    '--ours',
    action='append',
    default=[],
    help=f'our perf options, e.g. remat=true; keys {workloads_ours.PERF_KEYS}.',
  )
  p.add_argument(
    '--hf_fused_adam',
    action='store_true',
    help='torch.optim.AdamW(fused=True) for the reference.',
  )
  p.add_argument(
    '--hf_compile',
    action='store_true',
    help='torch.compile the reference model (its compile is '
    'in the first call, kept out of the median like ours).',
  )
  p.add_argument('--smoke', action='store_true', help='tiny sizes.')
  p.add_argument(
    '--mem_cap_gb',
    type=float,
    default=16.0,
    help='kill a measurement above this resident memory.',
  )
  p.add_argument(
    '--timeout_s',
    type=float,
    default=3600.0,
    help='kill a measurement after this long.',
  )
  runner.add_out_flag(p, 'cpu')
  return p


def _merge_rounds(results):
  """Combine the per-round results of one (workload, mode, impl)."""
  ok = [r for r in results if r.get('status') == 'ok']
  if not ok:
    return results[0]
  merged = dict(ok[0])
  times = [t for r in ok for t in r['times_s']]
  merged['times_s'] = times
  merged['median_s'] = float(statistics.median(times))
  merged['peak_rss'] = max(r['peak_rss'] for r in ok)
  merged['rounds'] = len(ok)
  return merged


def run_all(args):
  """Runs every requested measurement; returns the results document."""
  chosen, modes, impls, ours_perf = plan(args)
  doc = {
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'settings': {
      'repeats': args.repeats,
      'warmup': args.warmup,
      'rounds': args.rounds,
      'threads': args.threads,
      'ours_perf': ours_perf,
      'hf_fused_adam': args.hf_fused_adam,
      'hf_compile': args.hf_compile,
      'smoke': args.smoke,
      'mem_cap_gb': args.mem_cap_gb,
    },
    'results': [],
  }
  for w in chosen:
    name = w.name
    for mode in modes:
      if mode not in w.modes:
        continue
      per_impl = {i: [] for i in impls}
      for round_index in range(args.rounds):
        order = impls if round_index % 2 == 0 else impls[::-1]
        for impl in order:
          spec = {
            'impl': impl,
            'mode': mode,
            'workload': dataclasses.asdict(w),
            'repeats': args.repeats,
            'warmup': args.warmup,
            'max_seconds': args.max_seconds,
            'threads': args.threads,
            'device': 'cpu',
          }
          if impl == 'ours':
            spec.update(ours_perf)
          else:
            spec['fused_adam'] = args.hf_fused_adam
            spec['torch_compile'] = 'inductor' if args.hf_compile else ''
          load = os.getloadavg()[0]
          print(
            f'[{name} {mode} {impl} round {round_index + 1}] '
            f'load {load:.1f} ...',
            flush=True,
          )
          r = runner.run_worker(
            spec, int(args.mem_cap_gb * runner.GIB), args.timeout_s
          )
          r['load_avg_before'] = load
          per_impl[impl].append(r)
          print(
            f'  -> {r["status"]} median {runner.fmt_seconds(r.get("median_s"))}'
            f' first {runner.fmt_seconds(r.get("first_s"))} peak RSS '
            f'{runner.fmt_bytes(r.get("peak_rss"))}',
            flush=True,
          )
      for impl in impls:
        doc['results'].append(_merge_rounds(per_impl[impl]))
  return doc


def _find(results, workload, mode, impl):
  for r in results:
    if (r['workload'], r['mode'], r['impl']) == (workload, mode, impl):
      return r
  return None


def summary_rows(doc):
  """One row per (workload, mode): ours, reference and ratios."""
  rows, seen = [], []
  for r in doc['results']:
    key = (r['workload'], r['mode'])
    if key in seen:
      continue
    seen.append(key)
    ours = _find(doc['results'], *key, 'ours') or {}
    ref = _find(doc['results'], *key, 'hf') or {}
    ok = lambda x: x.get('status') == 'ok'
    t_ours = ours.get('median_s') if ok(ours) else None
    t_ref = ref.get('median_s') if ok(ref) else None
    m_ours = ours.get('peak_rss') if ok(ours) else None
    m_ref = ref.get('peak_rss') if ok(ref) else None
    params_match = (
      ours.get('params') == ref.get('params') if ok(ours) and ok(ref) else None
    )
    rows.append(
      {
        'workload': key[0],
        'mode': key[1],
        'batch': r['batch'],
        'ours_s': t_ours,
        'ref_s': t_ref,
        'time_ratio': t_ours / t_ref if t_ours and t_ref else None,
        'ours_peak_rss': m_ours,
        'ref_peak_rss': m_ref,
        'rss_ratio': m_ours / m_ref if m_ours and m_ref else None,
        'ours_first_s': ours.get('first_s'),
        'ours_compile_s': ours.get('compile_s'),
        'ref_first_s': ref.get('first_s'),
        'ours_status': ours.get('status'),
        'ref_status': ref.get('status'),
        'params': ours.get('params') or ref.get('params'),
        'params_match': params_match,
      }
    )
  return rows


def to_markdown(doc):
  rows = summary_rows(doc)
  m = doc['machine']
  lines = [
    f'Measured {m["date"]} on {m.get("cpu", "?")} '
    f'({m["cpu_count"]} cores, {m["memory_gib"]} GiB), '
    f'load average at start {m.get("load_avg_at_start")}; '
    f'versions {doc["versions"]}; settings {doc["settings"]}.',
    '',
    'Times are medians (warm-up excluded); ratio = ours / reference '
    '(< 1: ours is faster / smaller).',
    '',
  ]
  header = [
    'workload',
    'mode',
    'batch',
    'ours',
    'reference',
    'time ratio',
    'ours peak RSS',
    'ref peak RSS',
    'RSS ratio',
    'ours compile',
    'params equal',
  ]
  table = []
  for r in rows:
    status = lambda s: '' if s in (None, 'ok') else f' ({s})'
    table.append(
      [
        r['workload'],
        r['mode'],
        r['batch'],
        runner.fmt_seconds(r['ours_s']) + status(r['ours_status']),
        runner.fmt_seconds(r['ref_s']) + status(r['ref_status']),
        '-' if r['time_ratio'] is None else f'{r["time_ratio"]:.2f}',
        runner.fmt_bytes(r['ours_peak_rss']),
        runner.fmt_bytes(r['ref_peak_rss']),
        '-' if r['rss_ratio'] is None else f'{r["rss_ratio"]:.2f}',
        runner.fmt_seconds(r['ours_compile_s']),
        {True: 'yes', False: 'NO', None: '-'}[r['params_match']],
      ]
    )
  return '\n'.join(lines) + '\n' + runner.markdown_table(header, table)


def main(argv=None):
  parser = build_parser()
  args = parser.parse_args(argv)
  try:  # Every argument, before any worker starts.
    plan(args)
  except ValueError as e:
    parser.error(str(e))
  args.out = runner.results_dir(args.out, args.smoke, 'cpu')
  doc = run_all(args)
  doc['summary'] = summary_rows(doc)
  md = to_markdown(doc)
  runner.write_results(os.path.join(args.out, 'compare'), doc, md)
  print(md)
  mismatched = [
    r['workload'] for r in doc['summary'] if r['params_match'] is False
  ]
  if mismatched:
    print(
      f'ERROR: parameter counts differ for {mismatched}; the comparison '
      'is not like for like.',
      file=sys.stderr,
    )
    return 1
  failed = [
    f'{r["workload"]} {r["mode"]} {r["impl"]}: {r.get("status")}'
    for r in doc['results']
    if r.get('status') != 'ok'
  ]
  if failed:
    print(
      f'ERROR: {len(failed)} measurement(s) did not complete '
      f'({"; ".join(failed)}); see stderr_tail in '
      f'{os.path.join(args.out, "compare.json")}.',
      file=sys.stderr,
    )
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
