"""Paired A/B of our performance options on one workload, in one process.

Why: a 5-10 % change (an attention path, remat) is below this shared
machine's drift between two separate runs (10-25 % within an hour), so
decisions about defaults were made from variants alternated round by round in
the same process, each round building, compiling and timing every variant
again. Reports the median step time per variant, its ratio to the first
variant, and XLA's planned temporaries (`memory_analysis`). Peak RSS is
not reported: the variants share one process (use `compare_reference` with
`--ours` for memory).

Usage:
  python -m benchmarks.paired_options --workload imdb --mode train \
      --variant attention_impl=einsum --variant attention_impl=auto --rounds 2
  python -m benchmarks.paired_options --smoke --variant attention_impl=einsum \
      --variant default                                  # tiny, seconds
  python -m benchmarks.paired_options --workload imdb --mode train \
      --variant default --variant blockwise_cpu_gradients=false
  python -m benchmarks.paired_options --workload text_65536 --mode infer \
      --variant default --variant blocked_attention_min_mib=1000000
Besides the model's perf options (`workloads_ours.PERF_KEYS`), a variant may set
two A/B switches of the CPU kernels (fields of the model's
`perceiver_io.kernels.KernelOptions`): `blockwise_cpu_gradients=false`, the
CPU backward without the block-by-block ordering (`blockwise_gradients`),
and `blocked_attention_min_mib=N`, the logits size from which attention
runs block by block (`blocked_attention_min_bytes`; default: the measured
rule of kernels/blocked.py; 0 for every call, a huge value for none).
`--workload text_N` is the scaling sweep's language classifier on N input
bytes (batch 1, `benchmarks.scaling`'s default depth 6).
Writes <out>/paired_<workload>_<mode>.json and .md.
"""

import argparse
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from experiments import process_tuning  # pylint: disable=g-import-not-at-top,wrong-import-position

# Before NumPy/JAX start threads; not when imported (tests).
PROCESS_SETTINGS = (
  process_tuning.configure_process() if __name__ == '__main__' else {}
)

from benchmarks import compare_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads_ours  # pylint: disable=g-import-not-at-top,wrong-import-position


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--workload',
    default='imdb',
    help='imdb, imagenet_fourier, imagenet_conv, optical_flow or '
    'text_N (N input bytes, as the scaling sweep).',
  )
  p.add_argument('--mode', default='train', choices=('train', 'infer'))
  p.add_argument(
    '--variant',
    action='append',
    required=True,
    help='perf options as key=value[,key=value]; repeat the flag '
    'for each variant ("default" for none). The first is '
    'the baseline of the ratios.',
  )
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument(
    '--repeats',
    type=int,
    default=2,
    help='timed calls per variant and round (after one warm-up).',
  )
  p.add_argument('--smoke', action='store_true', help='tiny sizes.')
  p.add_argument(
    '--out',
    default=None,
    help='output folder (default a new benchmarks/results/paired/run-<UTC time>/).',
  )
  return p


# Variant keys that are not model options (see the module docstring).
SWITCHES = ('blockwise_cpu_gradients', 'blocked_attention_min_mib')
# `--workload text_N`: as `benchmarks.scaling`'s input sweep.
TEXT_DEPTH = 6


def parse_variants(items):
  """['default', 'attention_impl=cpu'] -> [(label, perf dict)]; checks keys."""
  variants = []
  for item in items:
    perf = (
      {}
      if item == 'default'
      else compare_reference.parse_key_values([item], '--variant')
    )
    unknown = sorted(set(perf) - set(workloads_ours.PERF_KEYS) - set(SWITCHES))
    if unknown:
      raise ValueError(
        f'unknown perf option(s) {unknown} in --variant '
        f'{item!r}; known: {workloads_ours.PERF_KEYS + SWITCHES}.'
      )
    if not isinstance(perf.get('blockwise_cpu_gradients', True), bool):
      raise ValueError(
        f'blockwise_cpu_gradients takes true or false, got '
        f'{perf["blockwise_cpu_gradients"]!r}.'
      )
    min_mib = perf.get('blocked_attention_min_mib', 0)
    if isinstance(min_mib, bool) or not isinstance(min_mib, int) or min_mib < 0:
      raise ValueError(
        f'blocked_attention_min_mib takes a whole number of '
        f'MiB >= 0, got {min_mib!r}.'
      )
    variants.append((item, perf))
  return variants


def compile_variant(w, data, mode, perf):
  """(call, temp_bytes): one timed unit of work for this variant.

  The switches become fields of the model's `kernel_options`
  (`perceiver_io.kernels.KernelOptions`).
  """
  perf = dict(perf)
  options = dict(perf.pop('kernel_options', None) or {})
  if 'blockwise_cpu_gradients' in perf:
    options['blockwise_gradients'] = perf.pop('blockwise_cpu_gradients')
  if 'blocked_attention_min_mib' in perf:
    options['blocked_attention_min_bytes'] = (
      perf.pop('blocked_attention_min_mib') * 2**20
    )
  if options:
    perf['kernel_options'] = options
  return _compile_variant(w, data, mode, perf)


def _compile_variant(w, data, mode, perf):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  model, variables, x, kwargs = workloads_ours.ours_build(w, data, **perf)
  if mode == 'infer':
    fn = (
      workloads_ours.ours_infer_fn(model).lower(variables, x, kwargs).compile()
    )

    def call():
      jax.block_until_ready(fn(variables, x, kwargs))
      process_tuning.settle_host_memory()  # As the launchers' loops do.
  else:
    tx = workloads_ours.ours_optimizer()
    params = variables.pop('params')
    box = [params, variables, tx.init(params)]
    labels = jnp.asarray(data['labels'])
    fn = (
      workloads_ours.ours_train_step(model, tx, 'batch_stats' in variables)
      .lower(*box, x, labels, kwargs)
      .compile()
    )

    def call():
      box[0], box[1], box[2], loss = fn(*box, x, labels, kwargs)
      loss = float(loss)
      process_tuning.settle_host_memory()
      return loss

  return call, fn.memory_analysis().temp_size_in_bytes


def workload(name, smoke=False):
  """A standard workload by name, or `text_N` (module docstring)."""
  standard = W.standard_workloads(smoke=smoke)
  if name in standard:
    return standard[name]
  length = name[len('text_') :]
  if name.startswith('text_') and length.isdigit() and int(length) > 0:
    return W.text_workload(int(length), depth=TEXT_DEPTH, tiny=smoke)
  raise ValueError(
    f'unknown --workload {name!r}: one of {sorted(standard)} '
    f'or text_N with N input bytes (e.g. text_65536).'
  )


def run(args):
  """Alternates the variants for `rounds`; returns the result document."""
  variants = parse_variants(args.variant)
  w = workload(args.workload, args.smoke)
  if args.mode not in w.modes:
    raise ValueError(
      f'{args.workload} supports modes {w.modes}, not {args.mode!r}.'
    )
  data = W.make_inputs(w)
  workloads_ours.decide_host_memory_reuse(
    PROCESS_SETTINGS,
    w,
    data,
    args.mode,
    **{k: v for k, v in variants[0][1].items() if k not in SWITCHES},
  )
  times = {label: [] for label, _ in variants}
  temps = {}
  total = args.rounds * len(variants)
  started = time.perf_counter()
  for r in range(args.rounds):
    for i, (label, perf) in enumerate(variants):
      call, temps[label] = compile_variant(w, data, args.mode, perf)
      call()  # Warm-up: first-call allocation.
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        call()
        times[label].append(time.perf_counter() - t0)
      del call
      process_tuning.release_host_memory()
      done = r * len(variants) + i + 1
      elapsed = time.perf_counter() - started
      print(
        f'[{done}/{total}] round {r + 1} {label}: '
        f'{", ".join(f"{t:.2f}" for t in times[label][-args.repeats :])} s'
        f'  (elapsed {elapsed:.0f} s, ETA '
        f'{elapsed / done * (total - done):.0f} s)',
        flush=True,
      )
  base = statistics.median(times[variants[0][0]])
  rows = [
    {
      'variant': label,
      'median_s': statistics.median(times[label]),
      'ratio': statistics.median(times[label]) / base,
      'times_s': times[label],
      'temp_bytes': temps[label],
    }
    for label, _ in variants
  ]
  return {
    'workload': w.name,
    'mode': args.mode,
    'batch': w.batch,
    'rounds': args.rounds,
    'repeats': args.repeats,
    'smoke': args.smoke,
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'process_settings': PROCESS_SETTINGS,
    'rows': rows,
  }


def to_markdown(doc):
  m = doc['machine']
  lines = [
    f'{doc["workload"]} {doc["mode"]} (batch {doc["batch"]}), '
    f'{doc["rounds"]} rounds x {doc["repeats"]} timed calls, '
    f'variants alternated in one process; {m.get("cpu", "?")} '
    f'({m["cpu_count"]} cores), {m["date"]}.',
    '',
    '| variant | median | ratio to first | XLA temporaries |',
    '| --- | --- | --- | --- |',
  ]
  for row in doc['rows']:
    lines.append(
      f'| {row["variant"]} | {row["median_s"]:.2f} s | '
      f'{row["ratio"]:.2f} | {row["temp_bytes"] / 2**30:.2f} GiB |'
    )
  return '\n'.join(lines) + '\n'


def check_args(args):
  """Raises ValueError naming the bad flag (before anything compiles)."""
  parse_variants(args.variant)
  w = workload(args.workload, args.smoke)
  if args.mode not in w.modes:
    raise ValueError(
      f'{args.workload} supports modes {w.modes}, not {args.mode!r}.'
    )
  for flag in ('rounds', 'repeats'):
    if getattr(args, flag) < 1:
      raise ValueError(f'--{flag} must be >= 1, got {getattr(args, flag)}.')
  for _, perf in parse_variants(args.variant):
    compare_reference.check_ours(
      {k: v for k, v in perf.items() if k in workloads_ours.PERF_KEYS}, [w]
    )


def main(argv=None):
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    check_args(args)
  except ValueError as e:
    parser.error(str(e))
  doc = run(args)
  args.out = args.out or runner.new_run_dir('paired')
  stem = os.path.join(args.out, f'paired_{doc["workload"]}_{doc["mode"]}')
  runner.write_results(stem, doc, to_markdown(doc))
  print(to_markdown(doc))


if __name__ == '__main__':
  main()
