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
import dataclasses
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top,wrong-import-position

TERA = 1e12
# name fragment -> peak dense FLOP/s (bf16, tf32, fp32); see module docstring.
PEAK_FLOPS = (
  ('H100 PCIe', (756.5 * TERA, 378.0 * TERA, 51.2 * TERA)),
  ('H100 NVL', (835.5 * TERA, 417.5 * TERA, 60.0 * TERA)),
  ('H100', (989.4 * TERA, 494.7 * TERA, 66.9 * TERA)),
  ('H200', (989.4 * TERA, 494.7 * TERA, 66.9 * TERA)),
)
# GPU batch sizes: the IMDB job's 4 x 2048 as in the issue, and a larger batch
# for the image presets (a GPU at batch 2 measures launch latency).
GPU_BATCH = {
  'imdb': 4,
  'imagenet_fourier': 32,
  'imagenet_conv': 32,
  'optical_flow': 1,
}
# Larger training batches at which model FLOPs utilisation is measured (bf16;
# the reference in bf16 autocast and TF32 at the same batch).
MFU_BATCH = {'imdb': 64, 'imagenet_fourier': 128}
REF_PRECISIONS = ('bf16_autocast', 'tf32', 'fp32')
# Suffix of a reference precision run under torch.compile (--hf_compile).
COMPILED = '_compiled'


def peak_flops(device_name):
  """(bf16, tf32, fp32) peak dense FLOP/s for a card name, or None."""
  for fragment, peaks in PEAK_FLOPS:
    if fragment.lower() in (device_name or '').lower():
      return peaks
  return None


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


def _item(impl, mode, w, prec):
  item = {
    'impl': impl,
    'mode': mode,
    'workload': dataclasses.asdict(w),
    'precision': prec,
  }
  if impl == 'hf' and prec.endswith(COMPILED):
    item['torch_compile'] = 'inductor'
  if impl == 'ours':
    item.update(
      dtype='float32' if prec == 'fp32' else 'bfloat16',
      attention_impl='cudnn' if prec == 'bf16_cudnn' else 'auto',
    )
  return item


def items_for(args, impl):
  """The worker items of one implementation, most important first.

  Order (each side's budget may end the list early; what is left is reported
  as skipped): training in bf16 with cuDNN flash attention (our fastest GPU
  setting on the H200, padded so that it covers the language model too) at the issue's batches, then at the MFU batches (a
  batch-4 step on this card measures kernel-launch latency, not the model);
  the same with XLA's attention ('auto'); fp32 training; inference with
  cuDNN, XLA's attention, then fp32. One run measures about five of our
  training items (each compiles for 35-50 s), so pick with `--only`.
  """
  from benchmarks.compare_reference import parse_key_values  # pylint: disable=g-import-not-at-top

  batch = dict(GPU_BATCH)
  mfu_batch = dict(MFU_BATCH)
  if args.smoke:
    batch = {k: min(v, 2) for k, v in batch.items()}
    mfu_batch = {k: min(v, 3) for k, v in mfu_batch.items()}
  batch.update(parse_key_values(args.batch, '--batch'))
  mfu_batch.update(parse_key_values(args.mfu_batch, '--mfu_batch'))
  workloads = W.standard_workloads(args.smoke, batch)
  names = [n for n in args.workloads.split(',') if n]
  bad = [n for n in names if n not in workloads]
  if bad:
    raise ValueError(
      f'unknown workloads {bad}; choose from {sorted(workloads)}.'
    )
  modes = [m for m in args.modes.split(',') if m]
  ws = [workloads[n] for n in names]
  train = [w for w in ws if 'train' in w.modes] if 'train' in modes else []
  infer = [w for w in ws if 'infer' in w.modes] if 'infer' in modes else []
  big = [
    dataclasses.replace(
      w, name=f'{w.name}@{mfu_batch[w.name]}', batch=mfu_batch[w.name]
    )
    for w in train
    if mfu_batch.get(w.name, 0) > 0
  ]
  if impl == 'ours':
    plan = (
      [('train', w, 'bf16_cudnn') for w in train + big]
      + [('train', w, 'bf16') for w in train + big]
      + [('train', w, 'fp32') for w in train]
      + [('infer', w, p) for p in ('bf16_cudnn', 'bf16', 'fp32') for w in infer]
    )
  else:
    precs = REF_PRECISIONS
    if args.hf_compile:  # Right after plain autocast, HF's fastest so far.
      precs = (precs[0], precs[0] + COMPILED) + precs[1:]
    plan = (
      [('train', w, p) for w in train for p in precs]
      + [('train', w, p) for w in big for p in precs[:-1]]
      + [('infer', w, p) for w in infer for p in precs]
    )
  items = [_item(impl, mode, w, prec) for mode, w, prec in plan]
  patterns = [p for p in args.only.split(',') if p]
  if patterns:
    items = [
      i
      for i in items
      if any(fnmatch.fnmatchcase(item_key(i), p) for p in patterns)
    ]
  return items


def item_key(item):
  """'impl/workload/mode/precision', the name `--only` patterns match."""
  return '/'.join(
    [item['impl'], item['workload']['name'], item['mode'], item['precision']]
  )


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
  items = items_for(args, impl)
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


def fill_flops(results, flops_table):
  """Our results without an XLA count take the CPU count (count_flops.py)."""
  from benchmarks.count_flops import flops_key  # pylint: disable=g-import-not-at-top

  for r in results:
    if r['impl'] != 'ours' or r.get('status') != 'ok' or r.get('flops'):
      continue
    key = flops_key(r['workload'].split('@')[0], r['batch'], r['mode'])
    if key in flops_table:
      r['flops'] = flops_table[key]
      r['flops_source'] = 'count_flops.py (CPU lowering)'


def summarise(doc):
  """Per (workload, mode): ours per precision, the reference's best, MFU."""
  peaks = peak_flops(doc['device_name'])
  rows = []
  keys = []
  for r in doc['results']:
    if (r['workload'], r['mode']) not in keys:
      keys.append((r['workload'], r['mode']))
  for workload, mode in keys:
    sel = [
      r
      for r in doc['results']
      if (r['workload'], r['mode']) == (workload, mode)
      and r.get('status') == 'ok'
    ]
    ours = {r['precision']: r for r in sel if r['impl'] == 'ours'}
    ref = {r['precision']: r for r in sel if r['impl'] == 'hf'}
    batch = sel[0]['batch'] if sel else None
    row = {'workload': workload, 'mode': mode, 'batch': batch}
    if any('run' in r for r in sel):  # A merged document: which run gave what.
      row['runs'] = {
        impl: sorted({r['run'] + 1 for r in sel if r['impl'] == impl})
        for impl in ('ours', 'hf')
      }
    for prec, r in ours.items():
      row[f'ours_{prec}_s'] = r['median_s']
      flops = r.get('flops')
      if flops and peaks:
        peak = peaks[0] if prec.startswith('bf16') else peaks[1]
        row[f'ours_{prec}_mfu'] = flops / r['median_s'] / peak
      if flops:
        row[f'ours_{prec}_tflops_per_s'] = flops / r['median_s'] / TERA
    for prec, r in ref.items():
      row[f'ref_{prec}_s'] = r['median_s']
    if ref:
      best_prec = min(ref, key=lambda p: ref[p]['median_s'])
      row['ref_best'] = best_prec
      row['ref_best_s'] = ref[best_prec]['median_s']
    if ours:
      best = min(ours, key=lambda p: ours[p]['median_s'])
      row['ours_best'] = best
      row['ours_best_s'] = ours[best]['median_s']
      row['ours_best_mfu'] = row.get(f'ours_{best}_mfu')
    if ours and ref:
      row['throughput_ratio_best'] = row['ref_best_s'] / row['ours_best_s']
      ours_bf16 = [p for p in ours if p.startswith('bf16')]
      if ours_bf16 and 'bf16_autocast' in ref:
        fastest = min(ours[p]['median_s'] for p in ours_bf16)
        row['throughput_ratio_bf16'] = (
          ref['bf16_autocast']['median_s'] / fastest
        )
      if 'fp32' in ours and 'fp32' in ref:
        row['throughput_ratio_fp32'] = (
          ref['fp32']['median_s'] / ours['fp32']['median_s']
        )
    rows.append(row)
  return rows


def to_markdown(doc):
  def pct(x):
    return '-' if x is None else f'{100 * x:.1f}%'

  def ratio(x):
    return '-' if x is None else f'{x:.2f}x'

  lines = [
    f'{doc["device_name"]} ({doc["date"]}); versions '
    f'{doc["versions"]}; budget {doc["settings"]["budget_s"]} s, total '
    f'{doc["elapsed_s"]:.0f} s.',
    '',
    'Throughput ratio = reference time / our time (> 1: ours faster); '
    '"best" compares each side\'s fastest setting. MFU = XLA-counted '
    'model FLOPs / step time / peak (bf16 dense; TF32 for fp32).',
    '',
  ]
  compiled = any(f'ref_bf16_autocast{COMPILED}_s' in r for r in doc['summary'])
  header = (
    [
      'workload',
      'mode',
      'batch',
      'ours bf16',
      'ours bf16 cuDNN',
      'ours fp32',
      'ref bf16 autocast',
    ]
    + (['ref bf16 autocast + torch.compile'] if compiled else [])
    + ['ref tf32', 'ref fp32', 'ratio best', 'ratio bf16', 'ours best MFU']
  )
  rows = []
  for r in doc['summary']:
    rows.append(
      [
        r['workload'],
        r['mode'],
        r['batch'],
        runner.fmt_seconds(r.get('ours_bf16_s')),
        runner.fmt_seconds(r.get('ours_bf16_cudnn_s')),
        runner.fmt_seconds(r.get('ours_fp32_s')),
        runner.fmt_seconds(r.get('ref_bf16_autocast_s')),
      ]
      + (
        [runner.fmt_seconds(r.get(f'ref_bf16_autocast{COMPILED}_s'))]
        if compiled
        else []
      )
      + [
        runner.fmt_seconds(r.get('ref_tf32_s')),
        runner.fmt_seconds(r.get('ref_fp32_s')),
        ratio(r.get('throughput_ratio_best')),
        ratio(r.get('throughput_ratio_bf16')),
        pct(r.get('ours_best_mfu')),
      ]
    )
  if doc.get('runs'):  # Merged: say which run measured each side.
    header.append('runs (ours / ref)')
    for row, r in zip(rows, doc['summary']):
      runs = r.get('runs', {})
      row.append(
        ' / '.join(
          ','.join(map(str, runs.get(i) or ['-'])) for i in ('ours', 'hf')
        )
      )
    lines.insert(
      1,
      'Merged from runs: '
      + '; '.join(
        f'{i + 1}: {run["date"]}, {run["elapsed_s"]:.0f} s'
        for i, run in enumerate(doc['runs'])
      )
      + ' (each a fresh machine of '
      'the same kind; a row whose two sides come from different runs '
      'compares across machines).',
    )
  text = '\n'.join(lines) + '\n' + runner.markdown_table(header, rows)
  bad = [r for r in doc['results'] if r.get('status') != 'ok']
  if bad:
    text += '\nNot measured:\n' + ''.join(
      f'- {r["impl"]} {r["workload"]} {r["mode"]} {r.get("precision")}: '
      f'{r["status"]} {r.get("reason") or r.get("error") or ""}\n'
      for r in bad
    )
  imported = sorted(
    {
      m
      for r in doc['results']
      for m in ('tensorflow', 'ml_collections')
      if r.get(f'imported_{m}')
    }
  )
  text += (
    '\nImported TensorFlow / ml_collections: '
    f'{", ".join(imported) if imported else "neither"}.\n'
  )
  return text


def merge_docs(docs):
  """One document from several runs; a later run's measured item replaces an
  earlier one's (a skipped or failed one does not), so each row's
  ours/reference pair comes from one run wherever the later run re-measured
  the reference too."""
  names = sorted({d['device_name'] for d in docs})
  if len(names) != 1:
    raise ValueError(f'runs on different cards cannot be merged: {names}.')
  by_key = {}
  for i, d in enumerate(docs):
    for r in d['results']:
      key = (r['impl'], r['workload'], r['mode'], r.get('precision'))
      if key not in by_key or r.get('status') == 'ok':  # Not by a skip.
        by_key[key] = {**r, 'run': i}
  return {
    'device_name': names[0],
    'date': ' + '.join(d['date'] for d in docs),
    'machine': docs[-1]['machine'],
    'versions': docs[-1]['versions'],
    'settings': {
      'budget_s': ' + '.join(str(d['settings']['budget_s']) for d in docs)
    },
    'runs': [
      {k: d.get(k) for k in ('date', 'elapsed_s', 'settings')} for d in docs
    ],
    'elapsed_s': sum(d['elapsed_s'] for d in docs),
    'results': list(by_key.values()),
  }


def write_doc(doc, args):
  if args.flops_json:
    with open(args.flops_json) as f:
      fill_flops(doc['results'], json.load(f))
  doc['summary'] = summarise(doc)
  md = to_markdown(doc)
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
    write_doc(merge_docs(docs), args)
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
