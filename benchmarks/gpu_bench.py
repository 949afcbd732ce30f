"""GPU benchmark: ours (fp32, bf16) vs HF (fp32, TF32, bf16 autocast) + MFU.

Why: the GPU targets are throughput against the reference's best setting on
the same card and our model FLOPs utilisation; both need the same workloads
as the CPU comparison, on a machine that has JAX with CUDA, torch and
transformers but no TensorFlow and no ml_collections (nothing here or in
`perceiver_io` imports either; each result records whether they got
imported).

Two worker processes run one after the other (ours, then the reference),
each measuring a list of (workload, mode, precision) items in priority order
under a shared time budget (the reference always gets `--ref_min_s`); items
left when the budget is spent are reported as skipped. Ours compiles each
function ahead of time (compile time is reported apart); FLOPs are XLA's count
of the unoptimised step with the einsum attention path (same arithmetic as the
cuDNN path, which XLA cannot count), taken from `--flops_json`
(`count_flops.py`, CPU lowering) where the GPU backend gives no count, so
MFU = FLOPs / median step time / the card's peak.

Peak dense FLOP/s (no sparsity) by card, from NVIDIA's datasheets:
  H100 SXM5 (80GB HBM3): BF16 989.4 T, TF32 494.7 T, FP32 66.9 T
    (https://www.nvidia.com/en-us/data-center/h100/, "H100 SXM" column; the
    datasheet's tensor figures are "with sparsity", halved here);
  H100 PCIe: BF16 756.5 T, TF32 378 T, FP32 51.2 T (same datasheet);
  H100 NVL: BF16 835.5 T, TF32 417.5 T, FP32 60 T (same datasheet);
  H200 (SXM/NVL): BF16 989.4 T, TF32 494.7 T, FP32 66.9 T
    (https://www.nvidia.com/en-us/data-center/h200/; same GH100 die and
    clocks as H100 SXM).
JAX runs float32 matmuls on GPU at its default precision, which on Hopper
uses TF32 tensor cores, so our fp32 MFU is against the TF32 peak; torch's
fp32 default does not (`allow_tf32=False`), hence the extra 'tf32' reference
setting.

Usage: benchmarks/gpu.sh [results_dir]  (or python -m benchmarks.gpu_bench)
       python -m benchmarks.gpu_bench --smoke   # tiny sizes on CPU, seconds
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import gpu_bench_items  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import gpu_bench_report  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position


def gpu_name():
  """The card's name from nvidia-smi, or None without a GPU."""
  try:
    out = subprocess.run(
      ['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'],
      capture_output=True,
      text=True,
      timeout=30,
      check=True,
    )
    return out.stdout.strip().splitlines()[0]
  except (OSError, subprocess.SubprocessError, IndexError):
    return None


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--workloads', default='imdb,imagenet_fourier,imagenet_conv,optical_flow'
  )
  p.add_argument('--modes', default='train,infer')
  p.add_argument(
    '--batch',
    action='append',
    default=[],
    help='per-workload batch overrides, e.g. imdb=32.',
  )
  p.add_argument(
    '--mfu_batch',
    action='append',
    default=[],
    help='per-workload MFU batch overrides, e.g. imdb=32 (0 drops that item).',
  )
  p.add_argument('--repeats', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument(
    '--budget_s',
    type=float,
    default=420.0,
    help='total seconds for both implementations (the '
    'script must finish in 8 minutes).',
  )
  p.add_argument(
    '--ours_share',
    type=float,
    default=0.65,
    help='fraction of the budget for ours (it compiles).',
  )
  p.add_argument(
    '--ref_min_s',
    type=float,
    default=60.0,
    help='seconds the reference gets at least, even when ours '
    'ran past its share.',
  )
  p.add_argument(
    '--max_seconds',
    type=float,
    default=4.0,
    help='timed-phase budget per item.',
  )
  p.add_argument(
    '--only',
    default='',
    help='comma-separated fnmatch patterns over '
    'IMPL/WORKLOAD/MODE/PRECISION (e.g. "ours/*/infer/bf16,'
    'hf/imdb@64/train/*"); only matching items run.',
  )
  p.add_argument(
    '--hf_compile',
    action='store_true',
    help='also time the reference in bf16 autocast under '
    'torch.compile (precision bf16_autocast_compiled; its '
    'compile is in the warm-up, minutes per item).',
  )
  p.add_argument(
    '--flops_json',
    default=None,
    help='FLOP counts from benchmarks/count_flops.py, used where '
    'the GPU worker got none from XLA.',
  )
  p.add_argument(
    '--merge',
    nargs='+',
    default=None,
    help='instead of measuring: merge these gpu.json files (a '
    "later file's item replaces an earlier one's) into --out.",
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help='tiny sizes on whatever device there is (CPU here).',
  )
  runner.add_out_flag(p, 'gpu')
  return p


def _run_worker(cmd, env, hard_timeout):
  """One worker process: (its RESULT dicts, how it ended, its stderr tail)."""
  results = []
  with tempfile.TemporaryFile() as err:
    proc = subprocess.Popen(
      cmd, cwd=_ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env
    )
    ended = 'ok'
    try:
      for line in proc.stdout:
        if line.startswith('RESULT '):
          r = json.loads(line[len('RESULT ') :])
          results.append(r)
          print(
            f'  {r["impl"]} {r["workload"]} {r["mode"]} '
            f'{r.get("precision")}: {r["status"]} '
            f'{runner.fmt_seconds(r.get("median_s"))}',
            flush=True,
          )
      proc.wait(timeout=max(hard_timeout - time.time(), 1))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      ended = 'killed'
    err.seek(0)
    tail = err.read().decode(errors='replace')[-3000:]
  if ended == 'ok' and proc.returncode != 0:
    ended = f'exit status {proc.returncode}'
  return results, ended, tail


def run_impl(args, impl, device, deadline, hard_timeout, worker_cmd=None):
  """Runs one implementation's items in one process; returns its results.

  A worker that dies mid-item (a crash in a kernel library ends the whole
  process, not just the item) costs that item only: it is recorded as
  'crashed' with the process's last stderr, and the items after it start
  again in a fresh process while the deadline allows. `worker_cmd` replaces
  `python -m benchmarks.worker` (tests).
  """
  items = gpu_bench_items.items_for(args, impl)
  if not items:
    return []
  spec = {
    'device': device,
    'repeats': args.repeats,
    'warmup': args.warmup,
    'max_seconds': args.max_seconds,
    'deadline': deadline,
    'items_cache': True,
    'count_flops': impl == 'ours',
    # The XLA CPU scheduler flag is for CPU runs; a GPU run sets none.
    'low_memory_cpu': device == 'cpu',
  }
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  if device == 'cpu':
    env['JAX_PLATFORMS'] = 'cpu'
  key_of = lambda i: (i['workload']['name'], i['mode'], i.get('precision'))
  results, todo = [], list(items)
  while todo:
    cmd = (worker_cmd or [sys.executable, '-m', 'benchmarks.worker']) + [
      '--spec',
      json.dumps(dict(spec, items=todo)),
    ]
    got, ended, tail = _run_worker(cmd, env, hard_timeout)
    results += got
    done = {(r['workload'], r['mode'], r.get('precision')) for r in got}
    todo = [i for i in todo if key_of(i) not in done]
    if ended == 'ok' or not todo:
      break
    print(
      f'  {impl}: worker ended ({ended}) during '
      f'{"/".join(str(k) for k in key_of(todo[0]))}',
      flush=True,
    )
    if tail:
      print(tail, file=sys.stderr)
    if ended == 'killed':
      break
    crashed = todo.pop(0)
    results.append(
      {
        'impl': impl,
        'workload': key_of(crashed)[0],
        'mode': crashed['mode'],
        'precision': crashed.get('precision'),
        'batch': crashed['workload']['batch'],
        'status': 'crashed',
        'reason': f'worker {ended}',
        'stderr_tail': tail[-1000:],
      }
    )
    if time.time() >= deadline:
      break
  for item in todo:
    name, mode, precision = key_of(item)
    results.append(
      {
        'impl': impl,
        'workload': name,
        'mode': mode,
        'precision': precision,
        'batch': item['workload']['batch'],
        'status': 'skipped',
        'reason': 'process ended first',
      }
    )
  return results


def write_doc(doc, args):
  if args.flops_json:
    with open(args.flops_json) as f:
      gpu_bench_report.fill_flops(doc['results'], json.load(f))
  doc['summary'] = gpu_bench_report.summarise(doc)
  md = gpu_bench_report.to_markdown(doc)
  runner.write_results(os.path.join(args.out, 'gpu'), doc, md)
  print(md)


def main(argv=None):
  args = build_parser().parse_args(argv)
  args.out = runner.results_dir(args.out, args.smoke, 'gpu')
  if args.merge:
    docs = []
    for path in args.merge:
      with open(path) as f:
        docs.append(json.load(f))
    write_doc(gpu_bench_report.merge_docs(docs), args)
    return 0
  t_start = time.time()
  name = gpu_name()
  if name is None and not args.smoke:
    raise SystemExit(
      'No NVIDIA GPU found (nvidia-smi failed). Run with '
      '--smoke to test the script on CPU.'
    )
  device = 'gpu' if name else 'cpu'
  doc = {
    'device_name': name or 'cpu (smoke)',
    'date': runner.machine_info()['date'],
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'settings': {k: v for k, v in vars(args).items() if k != 'out'},
    'results': [],
  }
  ours_deadline = t_start + args.budget_s * args.ours_share
  print(
    f'device: {doc["device_name"]}; ours until +{args.budget_s * args.ours_share:.0f} s',
    flush=True,
  )
  # Hard limit for a single process: its share plus a compile's worth.
  doc['results'] += run_impl(
    args, 'ours', device, ours_deadline, ours_deadline + 60
  )
  # The reference always gets `--ref_min_s`, even when ours ran over (its
  # last item may finish after ours' deadline).
  ref_deadline = max(t_start + args.budget_s, time.time() + args.ref_min_s)
  doc['results'] += run_impl(
    args, 'hf', device, ref_deadline, ref_deadline + 30
  )
  doc['elapsed_s'] = time.time() - t_start
  write_doc(doc, args)
  return 0


if __name__ == '__main__':
  sys.exit(main())
