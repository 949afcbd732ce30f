"""Scratch: the eighth session's CPU default vs this session's, paired in one process.

Old default = attention core custom VJP, autodiff Dense gradients, no block order
(emulated by forcing dense(row_major_grads=False) and blockwise off).
"""
import sys, time, statistics
sys.path.insert(0, '.')  # Run from the repository root.
from perceiver_io import runtime
SETTINGS = runtime.configure_process()
from benchmarks import paired_options as P, workloads as W
from perceiver_io import attention
import jax.numpy as jnp
orig_dense = attention.dense
def old_dense(features, name, dtype=None, param_dtype=jnp.float32, row_major_grads=False):
  return orig_dense(features, name, dtype, param_dtype, False)
name = sys.argv[1]; rounds = int(sys.argv[2])
w = W.standard_workloads()[name]
data = W.make_inputs(w)
W.decide_host_memory_reuse(SETTINGS, w, data, 'train')
variants = ['old', 'new']
times = {v: [] for v in variants}; temps = {}
for r in range(rounds):
  for v in variants:
    attention.dense = old_dense if v == 'old' else orig_dense
    with attention.blockwise_cpu_gradients(v == 'new'):
      call, temps[v] = P._compile_variant(w, data, 'train', {})
    attention.dense = orig_dense
    call()
    for _ in range(2):
      t0 = time.perf_counter(); call(); times[v].append(time.perf_counter() - t0)
    del call; runtime.release_host_memory()
    print(r, v, ['%.2f' % t for t in times[v][-2:]], flush=True)
base = statistics.median(times['old'])
for v in variants:
  m = statistics.median(times[v])
  print(name, v, 'median %.2f s ratio %.3f temps %.2f GiB times %s' % (m, m / base, temps[v] / 2**30, ['%.2f' % t for t in times[v]]), flush=True)
