"""Where our step spends its time: a per-op profile of one jitted call.

Why: "slower than the reference" is only actionable with the ops that cost
the time. This traces one call of our train step (or inference) with
`jax.profiler`, reads the trace back with `jax.profiler.ProfileData` (no
TensorBoard needed), maps each executed HLO op to the model code that emitted
it (the `op_name` metadata in the compiled HLO), and prints the top entries,
grouped by model location, split into forward and backward.

Usage:
  python -m benchmarks.profile_ours --workload imdb --mode train --batch 4
  python -m benchmarks.profile_ours --workload imagenet_fourier --top 30
  python -m benchmarks.profile_ours --smoke        # tiny sizes, seconds
Writes <out>/profile_<workload>_<mode>.json and .md.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position

# Trace events that wrap or wait for others rather than doing the work.
_WRAPPERS = ('ThunkExecutor', 'SlinkyThreadPool', 'Await', 'PjRt', '$')
_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')


def op_names_from_hlo(hlo_text):
  """HLO instruction name -> op_name metadata, from compiled HLO text."""
  names = {}
  for line in hlo_text.splitlines():
    m = _OP_NAME.match(line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


def model_location(op_name):
  """'jit(step)/transpose(jvp(PerceiverIO))/encoder/.../dot_general' ->
  ('backward', 'encoder/.../dot_general')."""
  phase = 'backward' if 'transpose(' in op_name else 'forward'
  parts = [p for p in op_name.split('/')
           if not re.match(r'^(jit|jvp|transpose|vmap|remat|checkpoint)\(', p)]
  # Shared latent layers: fold the layer index so all 26 layers add up.
  loc = '/'.join(parts)
  loc = re.sub(r'self_attend_\d+', 'self_attend_*', loc)
  return phase, loc or op_name


def trace_call(fn, workdir):
  """Runs `fn` once under the profiler; returns {op name: total ns}."""
  import jax  # pylint: disable=g-import-not-at-top
  with jax.profiler.trace(workdir):
    fn()
  files = glob.glob(os.path.join(workdir, '**', '*.xplane.pb'), recursive=True)
  if not files:
    raise FileNotFoundError(f'no .xplane.pb trace written under {workdir}.')
  data = jax.profiler.ProfileData.from_file(files[0])
  totals = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if line.name == 'python':
        continue
      for ev in line.events:
        if not ev.name.startswith(_WRAPPERS):
          totals[ev.name] += ev.duration_ns
  return totals


def profile(w, mode, perf, repeats=2):
  """Profiles our jitted train step or inference on workload `w`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')
  data = W.make_inputs(w)
  model, variables, x, kwargs = W.ours_build(w, data, **perf)
  if mode == 'train':
    tx = W.ours_optimizer()
    params = variables['params']
    state = {k: v for k, v in variables.items() if k != 'params'}
    box = {'p': params, 's': state, 'o': tx.init(params)}
    labels = jnp.asarray(data['labels'])
    compiled = W.ours_train_step(model, tx, bool(state)).lower(
        box['p'], box['s'], box['o'], x, labels, kwargs).compile()

    def call():
      box['p'], box['s'], box['o'], loss = compiled(
          box['p'], box['s'], box['o'], x, labels, kwargs)
      loss.block_until_ready()
  else:
    compiled = W.ours_infer_fn(model).lower(variables, x, kwargs).compile()

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
    totals = trace_call(call, tmp)
    traced_s = time.perf_counter() - t0
  names = op_names_from_hlo(compiled.as_text())
  by_loc = collections.defaultdict(lambda: {'ns': 0, 'ops': set()})
  for op, ns in totals.items():
    phase, loc = model_location(names.get(op, op))
    entry = by_loc[(phase, loc)]
    entry['ns'] += ns
    entry['ops'].add(re.sub(r'\.\d+$', '', op))
  busy = sum(totals.values())
  rows = sorted(({'phase': k[0], 'location': k[1], 'ms': v['ns'] / 1e6,
                  'share_of_op_time': v['ns'] / busy if busy else 0.0,
                  'op_kinds': sorted(v['ops'])}
                 for k, v in by_loc.items()), key=lambda r: -r['ms'])
  return {'workload': w.name, 'mode': mode, 'batch': w.batch, 'perf': perf,
          'step_times_s': times, 'traced_call_s': traced_s,
          'op_time_ms_all_threads': busy / 1e6,
          'phase_ms': {p: sum(r['ms'] for r in rows if r['phase'] == p)
                       for p in ('forward', 'backward')},
          'rows': rows}


def to_markdown(doc, top):
  lines = [f'Profile of our {doc["mode"]} step, {doc["workload"]} batch '
           f'{doc["batch"]} ({doc["perf"] or "default options"}); untraced '
           f'step {min(doc["step_times_s"]):.2f} s; op time summed over '
           f'threads {doc["op_time_ms_all_threads"] / 1e3:.2f} s '
           f'(forward {doc["phase_ms"]["forward"] / 1e3:.2f} s, backward and '
           f'update {doc["phase_ms"]["backward"] / 1e3:.2f} s).', '']
  rows = [[r['phase'], r['location'][:90], f'{r["ms"]:.0f}',
           f'{100 * r["share_of_op_time"]:.1f}%', ', '.join(r['op_kinds'][:3])]
          for r in doc['rows'][:top]]
  return '\n'.join(lines) + '\n' + runner.markdown_table(
      ['phase', 'model location (op_name)', 'ms', 'share', 'HLO ops'], rows)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workload', default='imdb')
  p.add_argument('--mode', default='train', choices=('train', 'infer'))
  p.add_argument('--batch', type=int, default=None)
  p.add_argument('--top', type=int, default=25)
  p.add_argument('--ours', action='append', default=[],
                 help='perf options, e.g. attention_impl=einsum.')
  p.add_argument('--smoke', action='store_true')
  p.add_argument('--out', default=None,
                 help='output folder (default benchmarks/results/cpu; with '
                 '--smoke benchmarks/results/smoke, so a smoke run never '
                 'replaces real results).')
  args = p.parse_args(argv)
  args.out = runner.results_dir(args.out, args.smoke, 'cpu')
  from benchmarks.compare_reference import parse_key_values  # pylint: disable=g-import-not-at-top
  batch = {args.workload: args.batch} if args.batch else None
  workloads = W.standard_workloads(args.smoke, batch)
  if args.workload not in workloads:
    raise ValueError(f'unknown workload {args.workload!r}; choose from '
                     f'{sorted(workloads)}.')
  doc = profile(workloads[args.workload], args.mode,
                parse_key_values(args.ours, '--ours'))
  doc['machine'] = runner.machine_info()
  stem = os.path.join(args.out, f'profile_{args.workload}_{args.mode}')
  md = to_markdown(doc, args.top)
  runner.write_results(stem, doc, md)
  print(md)
  return 0


if __name__ == '__main__':
  sys.exit(main())
