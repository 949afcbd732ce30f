"""The card's two measured ceilings: bf16 matmul rate and copy bandwidth.

Why: model FLOPs utilisation is quoted against the datasheet peak (989.4
TFLOP/s dense bf16 on an H100/H200), which no library reaches (this
workplace's machine notes record 769-798 TFLOP/s for an 8192^3 bf16 product
through PyTorch on these cards; not measured by us). Dividing our step's
FLOPs by this measured rate says how far the step is from what XLA's own
matmuls achieve, and the copy bandwidth bounds the memory-bound fusions.
Both are measured through JAX, the path our model runs on, in the same
device call as the benchmark.

Usage: python -m benchmarks.gpu_ceilings --out DIR [--smoke]
Writes DIR/ceilings.json: {'bf16_matmul_tflops', 'copy_gbytes_per_s', ...},
each the median of timed repeats after a warm-up, on random data.
"""

import argparse
import json
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position


def median_seconds(fn, *args, repeats=10, calls=5):
  """Median wall time of one `fn(*args)` after a warm-up.

  Each sample times `calls` back-to-back calls and waits for the last one,
  so that the host's dispatch overlaps the device's work (as in a training
  loop) instead of adding to every call.
  """
  import jax  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / calls)
  return statistics.median(times)


def measure(matmul_n=8192, copy_mib=4096, repeats=10):
  """{'bf16_matmul_tflops', 'copy_gbytes_per_s', sizes, device}."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  ka, kb, kc = jax.random.split(jax.random.key(0), 3)
  a = jax.random.normal(ka, (matmul_n, matmul_n), jnp.bfloat16)
  b = jax.random.normal(kb, (matmul_n, matmul_n), jnp.bfloat16)
  matmul_s = median_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats)
  del a, b
  # Negation reads and writes every element once and cannot be elided.
  n = copy_mib * 2**20 // 4
  x = jax.random.normal(kc, (n,), jnp.float32)
  copy_s = median_seconds(jax.jit(jnp.negative), x, repeats=repeats)
  return {
    'device': str(jax.devices()[0].device_kind),
    'bf16_matmul_tflops': 2 * matmul_n**3 / matmul_s / 1e12,
    'matmul_n': matmul_n,
    'matmul_median_s': matmul_s,
    'copy_gbytes_per_s': 2 * n * 4 / copy_s / 1e9,
    'copy_mib': copy_mib,
    'copy_median_s': copy_s,
    'repeats': repeats,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--smoke', action='store_true', help='tiny sizes (any backend; seconds).'
  )
  runner.add_out_flag(p, 'gpu')
  args = p.parse_args(argv)
  out = runner.results_dir(args.out, args.smoke, 'gpu')
  doc = measure(256, 4, repeats=3) if args.smoke else measure()
  doc['machine'] = runner.machine_info()
  os.makedirs(out, exist_ok=True)
  runner.write_atomic(
    os.path.join(out, 'ceilings.json'), json.dumps(doc, indent=1)
  )
  print(
    f'{doc["device"]}: bf16 matmul {doc["bf16_matmul_tflops"]:.1f} '
    f'TFLOP/s ({doc["matmul_n"]}^3), copy '
    f'{doc["copy_gbytes_per_s"]:.1f} GB/s read+write '
    f'({doc["copy_mib"]} MiB)'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
