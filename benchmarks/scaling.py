"""How cost grows with the input size and with the number of output queries.

Why: Perceiver IO's promise is cost linear in input and output size (the
latent array is fixed), and the reason to pick it is inputs and outputs too
large for a Transformer. This script measures it for ours and for
HuggingFace's PyTorch Perceiver, each point in its own process under a
resident-memory cap (`--mem_cap_gb`, default 14 GiB of this 24 GiB machine;
a point over it is killed and recorded as "over cap", and larger points of
that series are then skipped):

* input sweep: the language classifier (full width, `--depth` latent layers,
  default 6 so the input-dependent part is not hidden by a fixed latent cost)
  on 2k .. 64k input bytes, batch 1: train step (AdamW) and inference;
* query sweep: a small image encoder (64x64 pixels + Fourier positions, 256 x
  512 latents) decoding 2k .. 1M Fourier-feature output queries, inference;
  ours unchunked, ours with `query_chunk_size` (chunked decoding, bounded
  memory) and the reference (which has no chunking).

Linearity is reported as time per element at the largest size over that at
the smallest (<= 1.3 means no worse than linear) and as the marginal time per
added element between consecutive sizes, with a least-squares line fit.

Usage:
  python -m benchmarks.scaling                       # both sweeps
  python -m benchmarks.scaling --sweeps inputs --keep_from DIR  # re-run one
  python -m benchmarks.scaling --sweeps queries --queries 2048,1048576
  python -m benchmarks.scaling --smoke               # tiny, seconds
Writes <out>/scaling.json, scaling.md and scaling.png.
"""

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position

INPUT_SIZES = (2048, 4096, 8192, 16384, 32768, 65536)
QUERY_SIZES = (2048, 8192, 32768, 131072, 524288, 1048576)
SMOKE_INPUT_SIZES = (256, 1024, 4096)  # --smoke: tiny model, seconds.
SMOKE_QUERY_SIZES = (64, 256, 1024)  # --smoke: within its 32x32 grid.


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--sweeps', default='inputs,queries')
  p.add_argument(
    '--inputs',
    default=None,
    help='input lengths (bytes) for the input sweep; default '
    f'{",".join(map(str, INPUT_SIZES))} '
    f'(--smoke: {",".join(map(str, SMOKE_INPUT_SIZES))}).',
  )
  p.add_argument(
    '--queries',
    default=None,
    help='output query counts for the query sweep; default '
    f'{",".join(map(str, QUERY_SIZES))} '
    f'(--smoke: {",".join(map(str, SMOKE_QUERY_SIZES))}).',
  )
  p.add_argument('--input_modes', default='train,infer')
  p.add_argument(
    '--depth',
    type=int,
    default=6,
    help='latent self-attention layers in the input sweep.',
  )
  p.add_argument(
    '--query_chunk_size',
    type=int,
    default=16384,
    help='chunk size for ours-chunked in the query sweep.',
  )
  p.add_argument(
    '--series',
    default='ours,ours_chunked,hf',
    help='query-sweep series (input sweep: ours,hf).',
  )
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument(
    '--max_seconds',
    type=float,
    default=60.0,
    help='stop timing one point after this long (>= 1 call).',
  )
  p.add_argument('--threads', type=int, default=None)
  p.add_argument('--mem_cap_gb', type=float, default=14.0)
  p.add_argument('--timeout_s', type=float, default=1800.0)
  p.add_argument('--smoke', action='store_true', help='tiny sizes.')
  p.add_argument(
    '--no_plot',
    action='store_true',
    help='write the table only (no matplotlib needed).',
  )
  p.add_argument(
    '--keep_from',
    default=None,
    help='a folder with an earlier scaling.json: the sweeps not '
    'run now are taken from it, so one sweep can be re-run '
    'without the other (both dates are recorded).',
  )
  runner.add_out_flag(p, 'cpu')
  return p


def _ints(text):
  return [int(x) for x in text.split(',') if x]


def check_args(args):
  """Raises ValueError naming the first bad flag (before any sweep runs)."""
  sweeps = [s for s in args.sweeps.split(',') if s]
  if not sweeps or set(sweeps) - {'inputs', 'queries'}:
    raise ValueError(
      f'--sweeps takes inputs and/or queries, got {args.sweeps!r}.'
    )
  series = [s for s in args.series.split(',') if s]
  if not series or set(series) - {'ours', 'ours_chunked', 'hf'}:
    raise ValueError(
      f'--series takes ours, ours_chunked and/or hf, got {args.series!r}.'
    )
  modes = [m for m in args.input_modes.split(',') if m]
  if 'inputs' in sweeps and (not modes or set(modes) - {'train', 'infer'}):
    raise ValueError(
      f'--input_modes takes train and/or infer, got {args.input_modes!r}.'
    )
  for flag in ('inputs', 'queries'):
    text = getattr(args, flag)
    if text is None:
      continue
    try:
      sizes = _ints(text)
    except ValueError:
      sizes = []
    if not sizes or min(sizes) < 1:
      raise ValueError(
        f'--{flag} takes comma-separated whole numbers >= 1, got {text!r}.'
      )
  for flag in ('depth', 'query_chunk_size', 'repeats', 'threads'):
    value = getattr(args, flag)
    if value is not None and value < 1:
      raise ValueError(f'--{flag} must be >= 1, got {value}.')


def _point(spec, args, series, size):
  load_before = os.getloadavg()[0]
  print(
    f'[{spec["workload"]["name"]} {spec["mode"]} {series}] load '
    f'{load_before:.1f} ...',
    flush=True,
  )
  r = runner.run_worker(spec, int(args.mem_cap_gb * runner.GIB), args.timeout_s)
  r.update(series=series, size=size, load_avg_before=load_before)
  print(
    f'  -> {r["status"]} median {runner.fmt_seconds(r.get("median_s"))} '
    f'peak RSS {runner.fmt_bytes(r.get("peak_rss") or r.get("watchdog_peak_rss"))}',
    flush=True,
  )
  return r


def _sweep(args, sizes, make_workload, series_specs, modes):
  """Runs sizes x series x modes; once a series fails at a size, larger sizes
  of that series are recorded as skipped (they would need more memory)."""
  results = []
  for mode in modes:
    for series, extra in series_specs:
      failed_at = None
      for size in sizes:
        w = make_workload(size)
        if failed_at is not None:
          results.append(
            {
              'series': series,
              'size': size,
              'mode': mode,
              'workload': w.name,
              'status': 'skipped',
              'reason': f'failed ({failed_at[1]}) at {failed_at[0]}',
            }
          )
          continue
        spec = {
          'mode': mode,
          'workload': dataclasses.asdict(w),
          'repeats': args.repeats,
          'warmup': 1,
          'max_seconds': args.max_seconds,
          'threads': args.threads,
          'device': 'cpu',
          'count_flops': False,
          **extra,
        }
        r = _point(spec, args, series, size)
        r['mode'] = mode
        results.append(r)
        if r['status'] != 'ok':
          failed_at = (size, r['status'])
  return results


def linearity(points):
  """Per-element costs of one ok series: [(size, seconds)] sorted by size."""
  if len(points) < 2:
    return None
  sizes = np.array([p[0] for p in points], float)
  times = np.array([p[1] for p in points], float)
  per = times / sizes
  marginal = np.diff(times) / np.diff(sizes)
  slope, intercept = np.polyfit(sizes, times, 1)
  fit = slope * sizes + intercept
  ss_res = float(np.sum((times - fit) ** 2))
  ss_tot = float(np.sum((times - times.mean()) ** 2)) or 1.0
  return {
    'per_element_ratio_last_first': float(per[-1] / per[0]),
    'marginal_ratio_last_first': float(marginal[-1] / marginal[0]),
    'seconds_per_element': per.tolist(),
    'marginal_seconds_per_element': marginal.tolist(),
    'fit_slope_s_per_element': float(slope),
    'fit_intercept_s': float(intercept),
    'fit_r2': 1 - ss_res / ss_tot,
    'sizes': sizes.tolist(),
  }


def _ok_points(results, sweep, series, mode, key='median_s'):
  pts = [
    (r['size'], r[key])
    for r in results
    if r.get('sweep') == sweep
    and r['series'] == series
    and r['mode'] == mode
    and r.get('status') == 'ok'
  ]
  return sorted(pts)


def analyse(doc):
  out = {}
  for r in doc['results']:
    key = (r['sweep'], r['series'], r['mode'])
    if key in out:
      continue
    out[key] = linearity(_ok_points(doc['results'], *key))
  return [
    {'sweep': k[0], 'series': k[1], 'mode': k[2], **(v or {})}
    for k, v in out.items()
  ]


def to_markdown(doc):
  m = doc['machine']
  lines = [
    f'Measured {m["date"]} on {m.get("cpu", "?")} ({m["cpu_count"]} '
    f'cores, {m["memory_gib"]} GiB); memory cap per point '
    f'{doc["settings"]["mem_cap_gb"]} GiB; settings '
    f'{doc["settings"]}.',
    '',
  ]
  if doc.get('kept_from'):
    k = doc['kept_from']
    lines[0] += (
      f' The {", ".join(k["sweeps"])} sweep(s) are from an earlier '
      f'run, {k["date"]} ({k["path"]}).'
    )
  header = [
    'sweep',
    'mode',
    'size',
    'series',
    'median time',
    'time/element',
    'peak RSS',
    'status',
  ]
  rows = []
  for r in sorted(
    doc['results'],
    key=lambda r: (r['sweep'], r['mode'], r['series'], r['size']),
  ):
    t = r.get('median_s') if r.get('status') == 'ok' else None
    status = r.get('status')
    if status == 'over_memory_cap':
      status = f'over {doc["settings"]["mem_cap_gb"]:g} GiB cap'
    rows.append(
      [
        r['sweep'],
        r['mode'],
        r['size'],
        r['series'],
        runner.fmt_seconds(t),
        '-' if t is None else f'{t / r["size"] * 1e6:.1f} us',
        runner.fmt_bytes(r.get('peak_rss')),
        status,
      ]
    )
  text = '\n'.join(lines) + '\n' + runner.markdown_table(header, rows)
  lin_rows = []
  for a in doc['linearity']:
    if 'per_element_ratio_last_first' not in a:
      continue
    lin_rows.append(
      [
        a['sweep'],
        a['mode'],
        a['series'],
        f'{int(a["sizes"][0])}..{int(a["sizes"][-1])}',
        f'{a["per_element_ratio_last_first"]:.2f}',
        f'{a["marginal_ratio_last_first"]:.2f}',
        f'{a["fit_slope_s_per_element"] * 1e6:.2f} us',
        f'{a["fit_r2"]:.4f}',
      ]
    )
  text += (
    '\nLinearity: time/element at the largest size over the smallest '
    '(<= 1.3 target), marginal time per added element (last interval '
    'over first), and a least-squares line t = a*n + b.\n\n'
  )
  text += runner.markdown_table(
    [
      'sweep',
      'mode',
      'series',
      'sizes',
      't/n last/first',
      'marginal last/first',
      'slope a',
      'R^2',
    ],
    lin_rows,
  )
  return text


def plot(doc, path):
  """2x2 log-log plot: time and peak RSS for each sweep; x marks failures."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  sweeps = sorted({(r['sweep'], r['mode']) for r in doc['results']})
  fig, axes = plt.subplots(
    2, max(len(sweeps), 1), figsize=(5 * max(len(sweeps), 1), 8), squeeze=False
  )
  for col, (sweep, mode) in enumerate(sweeps):
    for row, (key, label) in enumerate(
      (('median_s', 'median time (s)'), ('peak_rss', 'peak RSS (GiB)'))
    ):
      ax = axes[row][col]
      series = sorted(
        {
          r['series']
          for r in doc['results']
          if (r['sweep'], r['mode']) == (sweep, mode)
        }
      )
      for s in series:
        pts = _ok_points(doc['results'], sweep, s, mode, key)
        if not pts:
          continue
        xs = [p[0] for p in pts]
        ys = [p[1] / (runner.GIB if key == 'peak_rss' else 1) for p in pts]
        (line,) = ax.plot(xs, ys, 'o-', label=s)
        failed = [
          r
          for r in doc['results']
          if (r['sweep'], r['series'], r['mode']) == (sweep, s, mode)
          and r.get('status') == 'over_memory_cap'
        ]
        for r in failed:
          y = doc['settings']['mem_cap_gb'] if key == 'peak_rss' else ys[-1]
          ax.plot([r['size']], [y], 'x', ms=12, mew=3, color=line.get_color())
          ax.annotate(
            'over cap',
            (r['size'], y),
            textcoords='offset points',
            xytext=(5, 5),
            fontsize=8,
          )
        if key == 'median_s' and len(pts) > 1:  # Linear guide through the last.
          guide = [ys[-1] * x / xs[-1] for x in xs]
          ax.plot(xs, guide, ':', color=line.get_color(), alpha=0.5)
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_xlabel('input elements' if sweep == 'inputs' else 'output queries')
      ax.set_ylabel(label)
      ax.set_title(f'{sweep} sweep, {mode}')
      ax.grid(True, which='both', alpha=0.3)
      ax.legend(fontsize=8)
  m = doc['machine']
  fig.suptitle(
    f'Perceiver IO scaling, ours vs HF transformers;\n'
    f'{m.get("cpu", "?")}, {m["cpu_count"]} cores, {m["date"][:10]}'
    ' (dotted: linear through the largest point)',
    fontsize=9,
  )
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=110)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def keep_earlier_sweeps(doc, folder, sweeps_run):
  """Adds to `doc` the sweeps not in `sweeps_run` from folder/scaling.json."""
  path = os.path.join(folder, 'scaling.json')
  try:
    with open(path) as f:
      earlier = json.load(f)
    results = earlier['results']
    date = earlier['machine']['date']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(
      f'--keep_from {folder!r}: cannot read an earlier '
      f'scaling.json there ({e}); give the folder a previous '
      f'run wrote.'
    ) from e
  kept = [r for r in results if r.get('sweep') not in sweeps_run]
  if not kept:
    return
  doc['results'] += kept
  doc['kept_from'] = {
    'path': path,
    'date': date,
    'sweeps': sorted({r.get('sweep') for r in kept}),
  }


def main(argv=None):
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    check_args(args)
  except ValueError as e:
    parser.error(str(e))
  args.out = runner.results_dir(args.out, args.smoke, 'cpu')
  if not args.no_plot:  # Fail now, not after the sweeps' half hour.
    try:
      import matplotlib  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise SystemExit(
        f'benchmarks.scaling plots with matplotlib, which is '
        f'not installed ({e}): pip install -e ".[bench]", or '
        f'pass --no_plot for the table only.'
      ) from e
  sweeps = [s for s in args.sweeps.split(',') if s]
  series = [s for s in args.series.split(',') if s]
  doc = {
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'settings': {
      'repeats': args.repeats,
      'threads': args.threads,
      'mem_cap_gb': args.mem_cap_gb,
      'depth': args.depth,
      'query_chunk_size': args.query_chunk_size,
      'smoke': args.smoke,
    },
    'results': [],
  }
  if 'inputs' in sweeps:
    sizes = _ints(
      args.inputs
      or ','.join(map(str, (SMOKE_INPUT_SIZES if args.smoke else INPUT_SIZES)))
    )
    specs = [(s, {'impl': s}) for s in ('ours', 'hf') if s in series]
    res = _sweep(
      args,
      sizes,
      lambda n: W.text_workload(n, 1, args.depth, tiny=args.smoke),
      specs,
      [m for m in args.input_modes.split(',') if m],
    )
    for r in res:
      r['sweep'] = 'inputs'
    doc['results'] += res
  if 'queries' in sweeps:
    sizes = _ints(
      args.queries
      or ','.join(map(str, (SMOKE_QUERY_SIZES if args.smoke else QUERY_SIZES)))
    )
    specs = []
    if 'ours' in series:
      specs.append(('ours', {'impl': 'ours'}))
    if 'ours_chunked' in series:
      chunk = (
        min(args.query_chunk_size, 32)
        if args.smoke
        else (args.query_chunk_size)
      )  # Smoke: small enough to really chunk.
      specs.append(
        ('ours_chunked', {'impl': 'ours', 'query_chunk_size': chunk})
      )
    if 'hf' in series:
      specs.append(('hf', {'impl': 'hf'}))
    grid = (32, 32) if args.smoke else (1024, 1024)
    res = _sweep(
      args,
      sizes,
      lambda n: W.query_workload(n, grid=grid, tiny=args.smoke),
      specs,
      ['infer'],
    )
    for r in res:
      r['sweep'] = 'queries'
    doc['results'] += res
  if args.keep_from:
    keep_earlier_sweeps(doc, args.keep_from, sweeps)
  doc['linearity'] = analyse(doc)
  md = to_markdown(doc)
  runner.write_results(os.path.join(args.out, 'scaling'), doc, md)
  if not args.no_plot:
    plot(doc, os.path.join(args.out, 'scaling.png'))
  print(md)
  return 0


if __name__ == '__main__':
  sys.exit(main())
