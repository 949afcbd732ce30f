"""One measurement in its own process: one implementation, one workload, one mode.

Why a separate process per measurement: peak resident memory (`ru_maxrss`)
is a per-process high-water mark, so ours and the reference can only be
compared if each runs alone; it also keeps JAX and torch from sharing thread
pools, and lets the driver kill a run that exceeds its memory cap without
losing the others.

Usage (drivers call it; it can be run by hand for debugging):

  python -m benchmarks.worker --spec '{"impl": "ours", "mode": "train",
      "workload": {...}, "repeats": 3}'

It prints one line `RESULT <json>` on stdout. Spec keys:
  impl: 'ours' | 'hf'; mode: 'train' | 'infer'; workload: a Workload as a
  dict; repeats, warmup, max_seconds (timed-phase budget); threads (CPU
  threads; None = all); device: 'cpu' | 'gpu'; for ours: dtype, attention_impl,
  remat, query_chunk_size, scan_layers, count_flops, low_memory_cpu (default True: the
  launchers' process settings, process_tuning.configure_process); for hf: precision
  ('fp32' | 'tf32' | 'bf16_autocast'), fused_adam, torch_compile (a
  torch.compile backend name, 'inductor' for real runs; '' or absent: eager).
"""

import argparse
import gc
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# experiments.process_tuning imports neither NumPy nor JAX (see _launcher_settings).
from experiments import process_tuning  # pylint: disable=g-import-not-at-top,wrong-import-position


def _launcher_settings(argv):
  """For our model: the launchers' process settings (perceiver_io/process_tuning.py).

  Applied here, before NumPy and JAX are imported, because glibc's malloc
  settings only take effect before other threads allocate. Off for the
  reference (torch runs with its defaults) and where the spec sets
  low_memory_cpu=False (the GPU benchmark).
  """
  try:
    spec = json.loads(argv[argv.index('--spec') + 1])
  except (ValueError, IndexError):
    return {}
  base = {k: v for k, v in spec.items() if k != 'items'}
  specs = [{**base, **item} for item in spec.get('items', [{}])]
  if not all(
    s.get('impl') == 'ours' and s.get('low_memory_cpu', True) for s in specs
  ):
    return {}
  return process_tuning.configure_process()


PROCESS_SETTINGS = (
  _launcher_settings(sys.argv) if __name__ == '__main__' else {}
)

from benchmarks import measure  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads_hf  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads_ours  # pylint: disable=g-import-not-at-top,wrong-import-position

MARKER = 'RESULT '


def _set_cpu_threads(threads):
  """Pin this process to the first `threads` CPUs (XLA sizes its pool from
  the affinity mask; torch gets set_num_threads as well)."""
  if threads:
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
  return len(os.sched_getaffinity(0))


_VARIABLES_CACHE = {}  # (kind, sizes) -> initialised variables (multi-item).


def _memory_analysis(compiled):
  """Bytes XLA plans for one executable (arguments, outputs, temporaries)."""
  try:
    m = compiled.memory_analysis()
    return {
      'argument_bytes': m.argument_size_in_bytes,
      'output_bytes': m.output_size_in_bytes,
      'temp_bytes': m.temp_size_in_bytes,
      'alias_bytes': m.alias_size_in_bytes,
    }
  except Exception:  # pylint: disable=broad-except
    return None


def lowered_flops(fn, *args):
  """(XLA's FLOP count of the unoptimised lowered computation, error text).

  The count is None, with the reason, where the backend gives none (JAX 0.11
  with CUDA on an H200: `cost_analysis()` returned None);
  `benchmarks/count_flops.py` counts the same program lowered for the CPU.
  """
  try:
    cost = fn.lower(*args).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    if not cost or 'flops' not in cost:
      return None, f'cost_analysis() gave {cost!r}'
    return float(cost['flops']), None
  except Exception as e:  # pylint: disable=broad-except
    return None, f'{type(e).__name__}: {e}'[:300]


def count_model_flops(w, mode, data, **perf):
  """XLA's FLOP count of our train step / forward for workload `w`.

  Counted on the einsum attention path (a fused-attention custom call has no
  count), from shapes only: nothing is initialised or compiled.
  """
  model, variables, x, kwargs = workloads_ours.ours_build(
    w, data, abstract=True, **{**perf, 'attention_impl': 'einsum'}
  )
  fn, args = workloads_ours.ours_abstract_call(
    model, variables, x, kwargs, data, mode
  )
  return lowered_flops(fn, *args)


def run_ours(spec, w, data):
  """Times our model; returns a result dict.

  The jitted function is compiled ahead of time (`lower().compile()`), so
  compile time is reported apart from the first execution. FLOPs are XLA's
  count for the same computation with the einsum attention path (a cuDNN
  custom call has no FLOP count), i.e. the model's arithmetic, not what a
  kernel happens to execute.
  """
  if spec.get('low_memory_cpu', True) and not PROCESS_SETTINGS:
    # Worker imported, not run (tests): the XLA flag may still apply; the
    # host-memory choice is made only in a fresh worker process.
    process_tuning.prefer_low_memory_cpu()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from perceiver_io.model import build_model  # pylint: disable=g-import-not-at-top

  if spec.get('device', 'cpu') == 'cpu':
    jax.config.update('jax_platforms', 'cpu')
  perf = {
    k: spec[k] for k in workloads_ours.PERF_KEYS if spec.get(k) is not None
  }
  workloads_ours.decide_host_memory_reuse(
    PROCESS_SETTINGS, w, data, spec['mode'], **perf
  )
  t0 = time.perf_counter()
  cache_key = json.dumps([w.kind, w.sizes], sort_keys=True)  # Not the batch.
  if cache_key in _VARIABLES_CACHE:
    model = build_model(workloads_ours.ours_config(w, **perf))
    variables = _VARIABLES_CACHE[cache_key]
    x, kwargs = workloads_ours.ours_model_inputs(data)
  else:
    model, variables, x, kwargs = workloads_ours.ours_build(w, data, **perf)
    jax.block_until_ready(variables)
    process_tuning.release_host_memory()
    if spec.get('items_cache'):
      _VARIABLES_CACHE[cache_key] = variables
  build_s = time.perf_counter() - t0
  out = {
    'params': workloads_ours.count_params(variables['params']),
    'build_s': build_s,
    'rss_after_build': measure.current_rss_bytes(),
    'peak_rss_after_build': measure.peak_rss_bytes(),
    'device_kind': jax.devices()[0].device_kind,
    'perf': perf,
    'process_settings': PROCESS_SETTINGS,
  }
  if spec['mode'] == 'train':
    tx = workloads_ours.ours_optimizer()
    params = variables['params']
    state = {k: v for k, v in variables.items() if k != 'params'}
    if cache_key in _VARIABLES_CACHE:  # The step donates its inputs: copy.
      params, state = jax.tree_util.tree_map(jnp.copy, (params, state))
    del variables
    opt_state = tx.init(params)
    labels = jnp.asarray(data['labels'])
    has_bs = 'batch_stats' in state
    args = (params, state, opt_state, x, labels, kwargs)
    t0 = time.perf_counter()
    step = (
      workloads_ours.ours_train_step(model, tx, has_bs).lower(*args).compile()
    )
    out['compile_s'] = time.perf_counter() - t0
    process_tuning.release_host_memory()  # As train_lib does after compiling.
    out['peak_rss_after_compile'] = measure.peak_rss_bytes()
    out['memory_analysis'] = _memory_analysis(step)
    box = {'p': params, 's': state, 'o': opt_state}

    def call():
      box['p'], box['s'], box['o'], loss = step(
        box['p'], box['s'], box['o'], x, labels, kwargs
      )
      loss.block_until_ready()
      box['loss'] = float(loss)
      process_tuning.settle_host_memory()  # As the launchers' loops do.
  else:
    t0 = time.perf_counter()
    infer = (
      workloads_ours.ours_infer_fn(model).lower(variables, x, kwargs).compile()
    )
    out['compile_s'] = time.perf_counter() - t0
    process_tuning.release_host_memory()
    out['peak_rss_after_compile'] = measure.peak_rss_bytes()
    out['memory_analysis'] = _memory_analysis(infer)

    def call():
      jax.block_until_ready(infer(variables, x, kwargs))
      process_tuning.settle_host_memory()

  out.update(
    measure.time_calls(
      call,
      spec.get('repeats', 3),
      spec.get('warmup', 1),
      spec.get('max_seconds'),
    )
  )
  if spec['mode'] == 'train':
    out['loss'] = box['loss']
  if spec.get('device', 'cpu') != 'cpu':
    stats = jax.devices()[0].memory_stats() or {}
    out['device_peak_bytes_process'] = stats.get('peak_bytes_in_use')
  # Counted last (tracing a second model costs memory), after the peak.
  out['peak_rss'] = measure.peak_rss_bytes()
  if spec.get('count_flops', True):
    out['flops'], out['flops_error'] = count_model_flops(
      w, spec['mode'], data, **perf
    )
  return out


def run_hf(spec, w, data):
  """Times the HuggingFace model; returns a result dict."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  gpu = spec.get('device', 'cpu') != 'cpu'
  device = 'cuda' if gpu else 'cpu'
  if not gpu:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  precision = spec.get('precision', 'fp32')
  # torch defaults: TF32 off for matmuls, on for cuDNN convolutions.
  torch.backends.cuda.matmul.allow_tf32 = precision == 'tf32'
  if gpu:  # Free the previous item's model; peak counts this item only.
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  with torch.device(device):  # Initialised where it runs (GPU: no host init).
    model = workloads_hf.hf_build(w)
  process_tuning.release_host_memory()  # Set-up garbage is not the step's peak.
  build_s = time.perf_counter() - t0
  make_inputs, labels = workloads_hf.hf_model_inputs(w, data, device)
  n_params = sum(p.numel() for p in model.parameters())
  backend = spec.get('torch_compile') or ''
  if backend:
    # Compiles on the first call, which time_calls keeps apart from the
    # timed repeats (as our XLA compile).
    model = torch.compile(model, backend=backend)
  out = {
    'params': n_params,
    'torch_compile': backend,
    'build_s': build_s,
    'rss_after_build': measure.current_rss_bytes(),
    'peak_rss_after_build': measure.peak_rss_bytes(),
    'torch_threads': torch.get_num_threads(),
    'precision': precision,
    'device_kind': torch.cuda.get_device_name() if gpu else 'cpu',
  }
  # 'bf16_autocast_compiled' (gpu_bench --hf_compile) is bf16 autocast with
  # the spec's torch_compile backend.
  autocast = (
    torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision.startswith('bf16_autocast')
    else None
  )
  sync = torch.cuda.synchronize if gpu else (lambda: None)

  def logits_of(result):
    return result.logits

  if spec['mode'] == 'train':
    model.train()
    opt = workloads_hf.hf_optimizer(model, fused=spec.get('fused_adam', False))
    box = {}

    def call():
      if autocast is not None:
        with autocast:
          loss = F.cross_entropy(
            logits_of(model(**make_inputs())).float(), labels
          )
      else:
        loss = F.cross_entropy(logits_of(model(**make_inputs())), labels)
      loss.backward()
      opt.step()
      opt.zero_grad(set_to_none=True)
      sync()
      box['loss'] = float(loss.detach())
  else:
    model.eval()

    def call():
      with torch.inference_mode():
        if autocast is not None:
          with autocast:
            logits_of(model(**make_inputs()))
        else:
          logits_of(model(**make_inputs()))
      sync()

  out.update(
    measure.time_calls(
      call,
      spec.get('repeats', 3),
      spec.get('warmup', 1),
      spec.get('max_seconds'),
    )
  )
  if spec['mode'] == 'train':
    out['loss'] = box['loss']
  if gpu:
    out['device_peak_bytes'] = torch.cuda.max_memory_allocated()
  return out


def _workload(spec):
  return W.Workload(
    **{**spec['workload'], 'modes': tuple(spec['workload'].get('modes', ()))}
  )


def run(spec):
  """Runs one measurement described by `spec`; returns the result dict."""
  w = _workload(spec)
  if spec['mode'] not in w.modes:
    raise ValueError(
      f'workload {w.name} has modes {w.modes}, not {spec["mode"]!r}.'
    )
  threads = _set_cpu_threads(spec.get('threads'))
  rss_at_start = measure.current_rss_bytes()
  data = W.make_inputs(w)
  t0 = time.perf_counter()
  if spec['impl'] == 'ours':
    out = run_ours(spec, w, data)
  elif spec['impl'] == 'hf':
    out = run_hf(spec, w, data)
  else:
    raise ValueError(f"impl must be 'ours' or 'hf', got {spec['impl']!r}.")
  out.setdefault('peak_rss', measure.peak_rss_bytes())
  out.update(
    impl=spec['impl'],
    mode=spec['mode'],
    workload=w.name,
    batch=w.batch,
    cpu_threads=threads,
    rss_at_start=rss_at_start,
    wall_s=time.perf_counter() - t0,
    imported_tensorflow=sys.modules.get('tensorflow') is not None,
    imported_ml_collections=(sys.modules.get('ml_collections') is not None),
  )
  return out


def run_items(spec):
  """Several measurements in one process (GPU runs: start-up is paid once).

  `spec['items']` is a list of specs; each is merged over the top-level spec.
  One RESULT line is printed per item as it finishes; an item that raises is
  reported with status 'error'; items left when `spec['deadline']` (epoch
  seconds) has passed are reported as 'skipped'.
  """
  base = {k: v for k, v in spec.items() if k != 'items'}
  for item in spec['items']:
    sub = {**base, **item}
    tag = {k: sub.get(k) for k in ('impl', 'mode', 'dtype', 'precision')}
    tag['workload'] = sub['workload']['name']
    tag['batch'] = sub['workload']['batch']
    if spec.get('deadline') and time.time() > spec['deadline']:
      print(
        MARKER
        + json.dumps(
          {**tag, 'status': 'skipped', 'reason': 'time budget spent'}
        ),
        flush=True,
      )
      continue
    try:
      result = {**tag, **run(sub), 'status': 'ok'}
    except Exception as e:  # pylint: disable=broad-except
      result = {**tag, 'status': 'error', 'error': f'{type(e).__name__}: {e}'}
      print(f'item {tag} failed: {result["error"]}', file=sys.stderr)
    print(MARKER + json.dumps(result), flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--spec', required=True, help='JSON measurement spec.')
  args = parser.parse_args(argv)
  spec = json.loads(args.spec)
  if 'items' in spec:
    run_items(spec)
  else:
    print(MARKER + json.dumps(run(spec)), flush=True)


if __name__ == '__main__':
  main()
