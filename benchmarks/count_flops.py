"""XLA's FLOP count of our train step / forward, on the CPU, from shapes only.

Why: model FLOPs utilisation needs the model's arithmetic per step. The GPU
worker asks XLA for it, but JAX 0.11 with CUDA gave no count (the worker
records why, as `flops_error`); the same program lowered for the CPU has the
same count (unoptimised HLO, einsum attention path), costs seconds and needs
no device, so `gpu_bench.py --flops_json` can take these counts instead.

Usage:
  python -m benchmarks.count_flops --out benchmarks/results/gpu/flops_cpu.json \
      imdb:4:train imagenet_fourier:32:train imdb:4:infer ...
Each item is WORKLOAD:BATCH:MODE with a workload of
`workloads.standard_workloads()`; the output maps "WORKLOAD@BATCH/MODE" to
FLOPs (per step, whole batch).
"""

import argparse
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position


def flops_key(workload, batch, mode):
  return f'{workload}@{batch}/{mode}'


def parse_item(text):
  parts = text.split(':')
  if len(parts) != 3 or parts[2] not in ('train', 'infer'):
    raise ValueError(
      f'item {text!r} must be WORKLOAD:BATCH:MODE with MODE '
      'train or infer, e.g. imdb:4:train.'
    )
  return parts[0], int(parts[1]), parts[2]


def count(items, smoke=False, quiet=False):
  """{key: flops} for (workload, batch, mode) items, counted on the CPU."""
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  from benchmarks import worker  # pylint: disable=g-import-not-at-top

  result = {}
  for name, batch, mode in items:
    workloads = W.standard_workloads(smoke, {name: batch})
    if name not in workloads:
      raise ValueError(
        f'unknown workload {name!r}; choose from {sorted(workloads)}.'
      )
    w = workloads[name]
    flops, error = worker.count_model_flops(w, mode, W.make_inputs(w))
    if flops is None:
      raise RuntimeError(
        f'XLA gave no FLOP count for {name}:{batch}:{mode}: {error}'
      )
    result[flops_key(name, batch, mode)] = flops
    if not quiet:
      print(
        f'{flops_key(name, batch, mode)}: {flops / 1e12:.3f} TFLOP', flush=True
      )
  return result


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('items', nargs='+', help='WORKLOAD:BATCH:MODE')
  p.add_argument('--out', required=True, help='JSON file to write.')
  p.add_argument('--smoke', action='store_true', help='tiny model sizes.')
  args = p.parse_args(argv)
  flops = count([parse_item(t) for t in args.items], args.smoke)
  runner.write_atomic(args.out, json.dumps(flops, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
