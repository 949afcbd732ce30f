import os, sys, time, statistics
sys.path.insert(0, '/work/main')
os.environ["PERCEIVER_IO_REUSE_HOST_MEMORY"] = "1"
from perceiver_io import runtime
runtime.configure_process()
from benchmarks import workloads as W
from perceiver_io import attention
import flax.linen as nn
import jax, jax.numpy as jnp
new_ln = attention._layer_norm
def old_ln(name, dtype, param_dtype):
  return nn.LayerNorm(epsilon=attention.LAYER_NORM_EPS, dtype=dtype, param_dtype=param_dtype, name=name)
name = sys.argv[1]
w = W.text_workload(65536, 1, 6) if name == 'text_65536' else W.standard_workloads()[name]
data = W.make_inputs(w)
def build(ln):
  attention._layer_norm = ln
  model, variables, x, kwargs = W.ours_build(w, data)
  tx = W.ours_optimizer(); params = variables.pop('params')
  box = [params, variables, tx.init(params)]; labels = jnp.asarray(data['labels'])
  fn = W.ours_train_step(model, tx, 'batch_stats' in variables).lower(*box, x, labels, kwargs).compile()
  attention._layer_norm = new_ln
  def call():
    box[0], box[1], box[2], loss = fn(*box, x, labels, kwargs); float(loss); runtime.settle_host_memory()
  return call, fn.memory_analysis().temp_size_in_bytes / 2**30
ts = {'2d': [], 'old': []}
for r in range(2):
  for k, ln in (('2d', new_ln), ('old', old_ln)):
    call, temp = build(ln); call()
    for _ in range(2):
      t = time.perf_counter(); call(); ts[k].append(time.perf_counter() - t)
    del call; runtime.release_host_memory()
    print(name, r, k, f'temps {temp:.2f} GiB', ['%.2f' % v for v in ts[k][-2:]], flush=True)
m = {k: statistics.median(v) for k, v in ts.items()}
print(name, 'median 2d %.3f old %.3f ratio %.3f' % (m['2d'], m['old'], m['2d'] / m['old']), flush=True)
