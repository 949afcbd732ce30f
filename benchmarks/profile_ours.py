"""Where our step spends its time: a per-op profile of one jitted call.

Why: "slower than the reference" is only actionable with the ops that cost
the time. This traces one call of our train step (or inference) with
`jax.profiler`, reads the trace back with `jax.profiler.ProfileData` (no
TensorBoard needed), maps each executed HLO op to the model code that emitted
it (the `op_name` metadata in the compiled HLO), and prints the top entries,
grouped by model location, split into forward and backward.

On a GPU (`--device gpu`) it reads the kernels instead: time per HLO op and
per category (matmul, cuDNN attention, convolution, copies, other fusions),
the top kernels, and how long the GPU sat idle between kernels, which is
what says whether a step with low model FLOPs utilisation is launch-bound,
memory-bound (fusions) or matmul-bound; and, from the compiled HLO's
shapes, the bytes and matmul FLOPs of each op over its kernel time (GB/s,
TFLOP/s), against the card's measured ceilings with `--ceilings`.

Usage:
  python -m benchmarks.profile_ours --workload imdb --mode train --batch 4
  python -m benchmarks.profile_ours --workload imagenet_fourier --top 30
  python -m benchmarks.profile_ours --device gpu --workload imagenet_conv \
      --batch 32 --ours dtype=bfloat16 --ours attention_impl=cudnn
  python -m benchmarks.profile_ours --smoke        # tiny sizes, seconds
Writes <out>/profile_<workload>_b<batch>_<mode>[_<option>-<value>...].json
and .md (default <out>: benchmarks/results/<device>).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import hlo_analysis  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads_ours  # pylint: disable=g-import-not-at-top,wrong-import-position

# Trace events that wrap or wait for others rather than doing the work.
_WRAPPERS = ('ThunkExecutor', 'SlinkyThreadPool', 'Await', 'PjRt', '$')


# A GPU plane's kernel lines: the CUDA tracer names one per stream,
# 'Stream #13' or 'Stream #13(Kernel,MemcpyH2D)'.
_KERNEL_LINE_PREFIX = 'Stream #'
# Lines of a GPU plane that the profiler derives from the kernel lines
# (counting them too would count each kernel twice), its own overhead, and
# counters; only consulted when a plane has no 'Stream #' lines.
_NOT_KERNEL_LINES = (
  'XLA Modules',
  'XLA Ops',
  'Async XLA Ops',
  'Steps',
  'Framework',
  'TensorFlow',
  'Source code',
  'XLA TraceMe',
  'Launch Stats',
  'Host Offload Ops',
  'Sparse Core',
  'CUPTI overhead',
  '_counters_',
)


def summarise_trace(data):
  """Per-op device time of a `jax.profiler.ProfileData`.

  Returns {'ops': {HLO op: ns}, 'kernels': {kernel: ns}, 'categories':
  {category: ns}, 'op_categories': {HLO op: category} (GPU), 'busy_ns',
  'span_ns', 'device'}. With GPU planes
  ('/device:GPU:*') only their kernel lines count ('Stream #N...', events
  named by kernel, with an 'hlo_op' stat naming the HLO instruction that
  launched it; lines the profiler derives from them, such as 'XLA Ops',
  would count each kernel twice);
  `busy_ns` is the union of kernel intervals and `span_ns` first start to
  last end, so 1 - busy/span is the time the GPU sat idle between kernels
  (launch latency, host work). Without GPU planes (the CPU backend): every
  host thread's events except the Python line and wrappers, by op name.
  """
  gpu = [p for p in data.planes if p.name.startswith('/device:GPU')]
  ops, kernels, categories = (collections.Counter() for _ in range(3))
  op_categories = {}
  intervals = []
  if gpu:
    for plane in gpu:
      lines = [
        ln for ln in plane.lines if ln.name.startswith(_KERNEL_LINE_PREFIX)
      ] or [
        ln for ln in plane.lines if not ln.name.startswith(_NOT_KERNEL_LINES)
      ]
      for line in lines:
        for ev in line.events:
          stats = dict(ev.stats or {})
          op = str(stats.get('hlo_op') or ev.name)
          ops[op] += ev.duration_ns
          kernels[ev.name] += ev.duration_ns
          category = hlo_analysis.op_category(ev.name, op)
          categories[category] += ev.duration_ns
          op_categories.setdefault(op, category)
          intervals.append((ev.start_ns, ev.start_ns + ev.duration_ns))
  else:
    for plane in data.planes:
      for line in plane.lines:
        if line.name == 'python':
          continue
        for ev in line.events:
          if not ev.name.startswith(_WRAPPERS):
            ops[ev.name] += ev.duration_ns
  busy, span = 0.0, 0.0
  if intervals:
    intervals.sort()
    span = max(end for _, end in intervals) - intervals[0][0]
    start, end = intervals[0]
    for s, e in intervals[1:]:
      if s > end:
        busy += end - start
        start, end = s, e
      else:
        end = max(end, e)
    busy += end - start
  return {
    'ops': ops,
    'kernels': kernels,
    'categories': categories,
    'op_categories': op_categories,
    'busy_ns': busy,
    'span_ns': span,
    'device': 'gpu' if gpu else 'cpu',
  }


def trace_call(fn, workdir, keep_as=None):
  """Runs `fn` once under the profiler; returns `summarise_trace`'s dict.

  keep_as: a path to save the raw trace to, gzipped (readable later with
  `jax.profiler.ProfileData.from_serialized_xspace(gzip.open(p).read())` or
  TensorBoard after gunzip), so that a GPU lease's trace can be read again
  here when the summary misses something.
  """
  import jax  # pylint: disable=g-import-not-at-top

  with jax.profiler.trace(workdir):
    fn()
  files = glob.glob(os.path.join(workdir, '**', '*.xplane.pb'), recursive=True)
  if not files:
    raise FileNotFoundError(f'no .xplane.pb trace written under {workdir}.')
  if keep_as:
    with open(files[0], 'rb') as src, gzip.open(keep_as, 'wb') as dst:
      shutil.copyfileobj(src, dst)
  return summarise_trace(jax.profiler.ProfileData.from_file(files[0]))


def profile(
  w, mode, perf, repeats=2, device='cpu', keep_trace_as=None, ceilings=None
):
  """Profiles our jitted train step or inference on workload `w`
  (`ceilings`: gpu_ceilings.py's rates, for the GPU kernels' bounds)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  if device == 'cpu':
    jax.config.update('jax_platforms', 'cpu')
  elif jax.default_backend() != device:
    raise SystemExit(
      f'--device {device}: JAX found no {device} (its backend '
      f'is {jax.default_backend()!r}); use --device cpu here.'
    )
  data = W.make_inputs(w)
  model, variables, x, kwargs = workloads_ours.ours_build(w, data, **perf)
  if mode == 'train':
    tx = workloads_ours.ours_optimizer()
    params = variables['params']
    state = {k: v for k, v in variables.items() if k != 'params'}
    box = {'p': params, 's': state, 'o': tx.init(params)}
    labels = jnp.asarray(data['labels'])
    compiled = (
      workloads_ours.ours_train_step(model, tx, bool(state))
      .lower(box['p'], box['s'], box['o'], x, labels, kwargs)
      .compile()
    )

    def call():
      box['p'], box['s'], box['o'], loss = compiled(
        box['p'], box['s'], box['o'], x, labels, kwargs
      )
      loss.block_until_ready()
  else:
    compiled = (
      workloads_ours.ours_infer_fn(model).lower(variables, x, kwargs).compile()
    )

    def call():
      jax.block_until_ready(compiled(variables, x, kwargs))

  call()  # Warm-up.
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    trace = trace_call(call, tmp, keep_trace_as)
    traced_s = time.perf_counter() - t0
  hlo_text = compiled.as_text()
  names = hlo_analysis.op_names_from_hlo(hlo_text)
  op_bytes = hlo_analysis.op_bytes_from_hlo(hlo_text)
  op_flops = {
    **hlo_analysis.op_flops_from_hlo(hlo_text),
    **hlo_analysis.attention_flops_from_hlo(hlo_text),
  }
  by_loc = collections.defaultdict(lambda: {'ns': 0, 'ops': set()})
  for op, ns in trace['ops'].items():
    phase, loc = hlo_analysis.model_location(names.get(op, op))
    entry = by_loc[(phase, loc)]
    entry['ns'] += ns
    entry['ops'].add(re.sub(r'\.\d+$', '', op))
  op_total = sum(trace['ops'].values())
  rows = sorted(
    (
      {
        'phase': k[0],
        'location': k[1],
        'ms': v['ns'] / 1e6,
        'share_of_op_time': v['ns'] / op_total if op_total else 0.0,
        'op_kinds': sorted(v['ops']),
      }
      for k, v in by_loc.items()
    ),
    key=lambda r: -r['ms'],
  )
  doc = {
    'workload': w.name,
    'mode': mode,
    'batch': w.batch,
    'perf': perf,
    'device': trace['device'],
    'step_times_s': times,
    'traced_call_s': traced_s,
    'op_time_ms_all_threads': op_total / 1e6,
    'phase_ms': {
      p: sum(r['ms'] for r in rows if r['phase'] == p)
      for p in ('forward', 'backward')
    },
    'rows': rows,
  }
  if trace['device'] == 'gpu':
    doc['gpu'] = {
      'kernel_busy_ms': trace['busy_ns'] / 1e6,
      'kernel_span_ms': trace['span_ns'] / 1e6,
      'idle_share': (
        1 - trace['busy_ns'] / trace['span_ns'] if trace['span_ns'] else None
      ),
      'category_ms': {k: v / 1e6 for k, v in trace['categories'].most_common()},
      'top_kernels_ms': {
        k[:160]: v / 1e6 for k, v in trace['kernels'].most_common(40)
      },
      **gpu_rates_summary(trace, op_bytes, op_flops, names, ceilings=ceilings),
    }
  return doc


def kernel_bound_ns(nbytes, flops, ceilings):
  """The least time a kernel moving `nbytes` and doing `flops` of matmul
  can take at the measured ceilings (gpu_ceilings.py), in ns; None without
  ceilings or without bytes."""
  if not ceilings or not nbytes:
    return None
  return max(
    nbytes / ceilings['copy_gbytes_per_s'],
    (flops or 0) / ceilings['bf16_matmul_tflops'] / 1e3,
  )


def gpu_rates_summary(trace, op_bytes, op_flops, names, top=40, ceilings=None):
  """Bytes and matmul FLOPs each category and top op did, and at what rate.

  Why: a step far below the matmul ceiling either runs its GEMMs at a poor
  rate (TFLOP/s well under the measured matmul rate: small or oddly shaped
  products) or spends its time in memory-bound kernels; bytes over time
  says which of those run near the card's copy bandwidth (only fewer bytes
  would help: fuse, keep bf16) and which far below it (a poor kernel: a
  layout, a transpose, a reduction). With the measured `ceilings`, each
  op's bound (`kernel_bound_ns`: the roofline `gpu_roofline.py` computes
  from the datasheet without a GPU) is summed per category next to its
  kernel time: the difference is the time the kernels lose.
  """
  cat_bytes, cat_flops = collections.Counter(), collections.Counter()
  cat_bound = collections.Counter()
  for op, category in trace['op_categories'].items():
    cat_bytes[category] += op_bytes.get(op, 0)
    cat_flops[category] += op_flops.get(op, 0)
    cat_bound[category] += (
      kernel_bound_ns(op_bytes.get(op), op_flops.get(op), ceilings) or 0
    )
  top_ops = []
  for op, ns in trace['ops'].most_common(top):
    phase, loc = hlo_analysis.model_location(names.get(op, op))
    nbytes, flops = op_bytes.get(op), op_flops.get(op)
    bound = kernel_bound_ns(nbytes, flops, ceilings)
    top_ops.append(
      {
        'op': op,
        'phase': phase,
        'location': loc,
        'category': trace['op_categories'].get(op),
        'ms': ns / 1e6,
        'bound_ms': bound / 1e6 if bound else None,
        'mbytes': nbytes / 2**20 if nbytes else None,
        'gbytes_per_s': nbytes / ns if nbytes and ns else None,
        'tflops_per_s': flops / ns / 1e3 if flops and ns else None,
      }
    )
  times = trace['categories']
  return {
    'category_bound_ms': {k: v / 1e6 for k, v in cat_bound.items() if v},
    'category_gbytes': {k: v / 1e9 for k, v in cat_bytes.items()},
    'category_gbytes_per_s': {
      k: cat_bytes[k] / ns for k, ns in times.items() if ns and cat_bytes[k]
    },
    'category_matmul_tflop': {k: v / 1e12 for k, v in cat_flops.items() if v},
    'category_tflops_per_s': {
      k: cat_flops[k] / ns / 1e3
      for k, ns in times.items()
      if ns and cat_flops[k]
    },
    'top_ops': top_ops,
  }


def to_markdown(doc, top):
  lines = [
    f'Profile of our {doc["mode"]} step, {doc["workload"]} batch '
    f'{doc["batch"]} ({doc["perf"] or "default options"}); untraced '
    f'step {min(doc["step_times_s"]):.2f} s; op time summed over '
    f'threads {doc["op_time_ms_all_threads"] / 1e3:.2f} s '
    f'(forward {doc["phase_ms"]["forward"] / 1e3:.2f} s, backward and '
    f'update {doc["phase_ms"]["backward"] / 1e3:.2f} s).',
    '',
  ]
  if doc.get('gpu'):
    g = doc['gpu']
    lines += [
      f'GPU kernels busy {g["kernel_busy_ms"]:.1f} ms of a '
      f'{g["kernel_span_ms"]:.1f} ms span (idle '
      f'{100 * (g["idle_share"] or 0):.1f} %). By category: '
      + ', '.join(f'{k} {v:.1f} ms' for k, v in g['category_ms'].items())
      + '.',
      '',
    ]
    copy_bw = (g.get('ceilings') or {}).get('copy_gbytes_per_s')
    matmul_rate = (g.get('ceilings') or {}).get('bf16_matmul_tflops')
    if g.get('category_tflops_per_s'):
      lines += [
        'Matmul FLOPs (dots in the compiled HLO) per kernel time: '
        + ', '.join(
          f'{k} {g["category_matmul_tflop"][k]:.2f} TFLOP at {v:.0f} TFLOP/s'
          for k, v in g['category_tflops_per_s'].items()
        )
        + (
          f' (measured bf16 matmul rate {matmul_rate:.0f} TFLOP/s).'
          if matmul_rate
          else '.'
        ),
        '',
      ]
    rates = g.get('category_gbytes_per_s', {})
    if rates:
      lines += [
        'Bytes read and written (HLO shapes) per kernel time: '
        + ', '.join(
          f'{k} {g["category_gbytes"][k]:.1f} GB at {v:.0f} GB/s'
          for k, v in rates.items()
        )
        + (
          f' (measured copy bandwidth {copy_bw:.0f} GB/s).' if copy_bw else '.'
        ),
        '',
      ]
    bounds = g.get('category_bound_ms')
    if bounds:
      lines += [
        'Kernel time against its bound at the measured ceilings '
        '(bytes / copy bandwidth or matmul FLOPs / matmul rate, per '
        'kernel): '
        + ', '.join(
          f'{k} {g["category_ms"].get(k, 0.0):.1f} ms for a bound of {v:.1f} ms'
          for k, v in bounds.items()
        )
        + '.',
        '',
      ]
    if g.get('top_ops'):

      def pct(o):
        return (
          f'{100 * o["gbytes_per_s"] / copy_bw:.0f}%'
          if copy_bw and o['gbytes_per_s']
          else '-'
        )

      lines += [
        'Top HLO ops by kernel time:',
        '',
        runner.markdown_table(
          [
            'HLO op',
            'phase',
            'model location',
            'category',
            'ms',
            'x bound',
            'MiB',
            'GB/s',
            'of copy bw',
            'TFLOP/s',
          ],
          [
            [
              o['op'],
              o['phase'],
              o['location'][-60:],
              o['category'],
              f'{o["ms"]:.2f}',
              f'{o["ms"] / o["bound_ms"]:.1f}' if o.get('bound_ms') else '-',
              f'{o["mbytes"]:.0f}' if o['mbytes'] else '-',
              f'{o["gbytes_per_s"]:.0f}' if o['gbytes_per_s'] else '-',
              pct(o),
              f'{o["tflops_per_s"]:.0f}' if o.get('tflops_per_s') else '-',
            ]
            for o in g['top_ops'][:top]
          ],
        ),
        '',
      ]
  rows = [
    [
      r['phase'],
      r['location'][-90:],
      f'{r["ms"]:.1f}',
      f'{100 * r["share_of_op_time"]:.1f}%',
      ', '.join(r['op_kinds'][:3]),
    ]
    for r in doc['rows'][:top]
  ]
  return (
    '\n'.join(lines)
    + '\n'
    + runner.markdown_table(
      ['phase', 'model location (op_name)', 'ms', 'share', 'HLO ops'], rows
    )
  )


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workload', default='imdb')
  p.add_argument('--mode', default='train', choices=('train', 'infer'))
  p.add_argument('--batch', type=int, default=None)
  p.add_argument('--top', type=int, default=25)
  p.add_argument(
    '--ours',
    action='append',
    default=[],
    help='perf options, e.g. attention_impl=einsum.',
  )
  p.add_argument(
    '--device',
    default='cpu',
    choices=('cpu', 'gpu'),
    help='gpu: profile on the GPU (kernel time by HLO op and '
    'category, and the idle time between kernels).',
  )
  p.add_argument(
    '--ceilings',
    default=None,
    help="gpu_ceilings.py's ceilings.json: show the GPU "
    "ops' rates against the measured copy bandwidth and "
    'matmul rate.',
  )
  p.add_argument(
    '--keep_trace',
    action='store_true',
    help='also save the raw trace as <stem>.xplane.pb.gz.',
  )
  p.add_argument('--smoke', action='store_true')
  runner.add_out_flag(p, '<device>')
  args = p.parse_args(argv)
  args.out = runner.results_dir(args.out, args.smoke, args.device)
  ceilings = None
  if args.ceilings:  # Read first: a wrong path fails before the long part.
    try:
      with open(args.ceilings) as f:
        ceilings = json.load(f)
    except (OSError, ValueError) as e:
      raise SystemExit(
        f'--ceilings {args.ceilings}: cannot read it ({e}); '
        'pass the ceilings.json that benchmarks.gpu_ceilings '
        'wrote, or leave the flag out.'
      ) from e
  from benchmarks.compare_reference import parse_key_values  # pylint: disable=g-import-not-at-top

  batch = {args.workload: args.batch} if args.batch is not None else None
  workloads = W.standard_workloads(args.smoke, batch)
  if args.workload not in workloads:
    p.error(
      f'unknown --workload {args.workload!r}; choose from {sorted(workloads)}.'
    )
  if args.batch is not None and args.batch < 1:
    p.error(f'--batch must be >= 1, got {args.batch}.')
  w = workloads[args.workload]
  from benchmarks.compare_reference import check_ours  # pylint: disable=g-import-not-at-top

  try:
    perf = parse_key_values(args.ours, '--ours')
    check_ours(perf, [w])
  except ValueError as e:
    p.error(str(e))
  # Letters, digits, '.', '_' and '-' only (what a device run brings back).
  tag = ''.join(f'_{k}-{v}' for k, v in sorted(perf.items()))
  stem = os.path.join(
    args.out,
    re.sub(
      r'[^\w.-]', '-', f'profile_{args.workload}_b{w.batch}_{args.mode}{tag}'
    ),
  )
  os.makedirs(args.out, exist_ok=True)
  doc = profile(
    w,
    args.mode,
    perf,
    device=args.device,
    keep_trace_as=stem + '.xplane.pb.gz' if args.keep_trace else None,
    ceilings=ceilings,
  )
  doc['machine'] = runner.machine_info()
  if ceilings and doc.get('gpu'):
    doc['gpu']['ceilings'] = ceilings
  md = to_markdown(doc, args.top)
  runner.write_results(stem, doc, md)
  print(md)
  return 0


if __name__ == '__main__':
  sys.exit(main())
