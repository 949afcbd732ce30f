"""Our GPU train steps compiled for an H100/H200 on any machine, and their roofline.

Why: a GPU is lent rarely and briefly (15 minutes), too little to
profile every step, yet the GPU targets (2x the reference, 40 % bf16 MFU)
need to know what a step must move and compute. XLA can compile for a CUDA
card that is not there (JAX's deviceless ahead-of-time compilation, given
the card's description: `gpu_compile.py`): the program is the one the card would run (its
fusions, cuBLAS and cuDNN calls, buffer sizes), only not autotuned. From its
HLO this counts, per kernel, the bytes it reads and writes and the matmul
FLOPs it does (`hlo_analysis.op_bytes_from_hlo`, `op_flops_from_hlo`, cuDNN
attention included), and adds up the roofline: each kernel takes at least
max(bytes / memory bandwidth, FLOPs / peak matmul rate). The sum is a lower
bound on the step time; counted FLOPs over (that bound x peak) is the best
MFU the program allows; XLA's buffer sizes predict device memory.

Checked against the H200 measurements of results/gpu/gpu.json (`--measured`): the
predicted device memory was within 3 % of the measured peak for the
three steps measured first in their processes.

Needs JAX's CUDA plugin, not a GPU: `pip install "jax[cuda13]==$(python -c
'import jax; print(jax.__version__)')"` (~3 GB of CUDA wheels; in an
environment of its own; the lease's image runs JAX 0.11.2 on Python 3.12,
the version to compile with for comparisons with its measurements:
benchmarks/README.md). Without a GPU
the tool sets what a deviceless compile needs (before JAX starts): no
visible device, JAX's CUDA version check skipped (it asks the driver), and
GEMMs on cuBLAS (XLA cannot pick Triton GEMM tiles without autotuning, and
failed for some shapes), and it tells JAX's and our cuDNN checks the target's
compute capability (they would ask the missing device). On a machine with a
GPU it compiles for that GPU unchanged.

Usage:
  python -m benchmarks.gpu_roofline --card h200 \
      --measured benchmarks/results/gpu/gpu.json \
      --out benchmarks/results/gpu/roofline  [ITEM ...]
ITEM is WORKLOAD:BATCH:MODE:PRECISION (precision fp32, bf16 or bf16_cudnn,
as in gpu_bench), e.g. imagenet_conv:32:train:bf16_cudnn; the default list
is the GPU targets' rows. Writes roofline.json and roofline.md.
  python -m benchmarks.gpu_roofline --presets    # every preset's bf16 cuDNN
                                                 # gradient compiles? (exit 1 if not)
"""

import argparse
import collections
import functools
import json
import os
import re
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import gpu_compile  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import hlo_analysis  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

# The GPU targets' rows (the ones missed on the H200 and their cuDNN
# counterparts), the Fourier step whose cuDNN time was measured, and
# gpu_targets.sh's Fourier MFU batch.
DEFAULT_ITEMS = (
  'imagenet_conv:32:train:bf16',
  'imagenet_conv:32:train:bf16_cudnn',
  'imdb:64:train:bf16',
  'imdb:64:train:bf16_cudnn',
  'imagenet_fourier:32:train:bf16',
  'imagenet_fourier:32:train:bf16_cudnn',
  'imagenet_fourier:128:train:bf16_cudnn',
)
# HLO instructions that launch no kernel.
_NO_KERNEL = frozenset(
  (
    'parameter',
    'get-tuple-element',
    'bitcast',
    'tuple',
    'constant',
    'after-all',
    'partition-id',
    'replica-id',
    'opt-barrier',
  )
)


def parse_item(text):
  parts = text.split(':')
  if (
    len(parts) != 4
    or parts[2] not in ('train', 'infer')
    or parts[3] not in gpu_compile.PRECISIONS
    or not parts[1].isdigit()
  ):
    raise ValueError(
      f'item {text!r} must be WORKLOAD:BATCH:MODE:PRECISION with MODE train '
      f'or infer and PRECISION one of {sorted(gpu_compile.PRECISIONS)}, e.g. '
      'imagenet_conv:32:train:bf16_cudnn.'
    )
  return parts[0], int(parts[1]), parts[2], parts[3]


def _computations(hlo_text):
  """computation name -> names of its instructions; ENTRY's name."""
  members, entry = collections.defaultdict(list), None
  for computation, name, *_ in hlo_analysis.hlo_instructions(hlo_text):
    members[computation].append(name)
  m = re.search(r'^ENTRY %([\w.\-]+)', hlo_text, re.M)
  if m:
    entry = m.group(1)
  return members, entry


def roofline(hlo_text, peak_flops, bandwidth, top=25):
  """The roofline of compiled GPU HLO: kernels, bytes, FLOPs, lower bounds.

  Kernels are the ENTRY computation's instructions that launch one (a
  fusion, a cuBLAS or cuDNN call, a copy); a fusion's FLOPs are those of
  the GEMMs or attention calls inside it. Each kernel's bound is
  max(bytes / bandwidth, FLOPs / peak_flops); it is memory-bound when the
  first term wins. Kernels are grouped by kind (the fusion's name without
  its number; matmul and attention by their FLOPs) and by model location
  (`hlo_analysis.model_location` of the op_name of the kernel or of its
  first named instruction).
  """
  nbytes = hlo_analysis.op_bytes_from_hlo(hlo_text)
  flops = hlo_analysis.op_flops_from_hlo(hlo_text)
  attention = hlo_analysis.attention_flops_from_hlo(hlo_text)
  names = hlo_analysis.op_names_from_hlo(hlo_text)
  members, entry = _computations(hlo_text)
  kinds, places = {}, {}
  total = collections.Counter()
  for computation, name, _, opcode, _, rest in hlo_analysis.hlo_instructions(
    hlo_text
  ):
    if computation != entry or opcode in _NO_KERNEL:
      continue
    called = re.search(r'calls=%([\w.\-]+)', rest)
    inside = members.get(called.group(1), []) if called else []
    attn = attention.get(name, 0) + sum(attention.get(n, 0) for n in inside)
    fl = attn or flops.get(name, 0)
    b = nbytes.get(name, 0)
    t_mem, t_math = b / bandwidth, fl / peak_flops
    bound = max(t_mem, t_math)
    kind = (
      'attention (cuDNN)'
      if attn
      else 'matmul'
      if fl
      else re.sub(r'[._-]?\d+$', '', name)
    )
    op_name = names.get(name) or next(
      (names[n] for n in inside if names.get(n)), name
    )
    phase, location = hlo_analysis.model_location(op_name)
    if not fl:  # Name the layer, not the last elementwise op in it.
      location = re.sub(r'/[a-z_]+$', '', location)
    for table, key in ((kinds, kind), (places, (phase, location, kind))):
      row = table.setdefault(key, collections.Counter())
      row.update(kernels=1, ms=bound * 1e3, gbytes=b / 1e9, tflop=fl / 1e12)
    total.update(
      kernels=1,
      ms=bound * 1e3,
      gbytes=b / 1e9,
      tflop=fl / 1e12,
      memory_bound_ms=(t_mem * 1e3 if t_mem > t_math else 0.0),
      math_bound_ms=(t_math * 1e3 if t_math >= t_mem else 0.0),
    )
  by_time = lambda table: sorted(table.items(), key=lambda kv: -kv[1]['ms'])
  return {
    **{k: float(v) for k, v in total.items()},
    'kinds': [
      {'kind': k, **{f: float(x) for f, x in v.items()}}
      for k, v in by_time(kinds)
    ],
    'locations': [
      {
        'phase': k[0],
        'location': k[1],
        'kind': k[2],
        **{f: float(x) for f, x in v.items()},
      }
      for k, v in by_time(places)[:top]
    ],
  }


@functools.lru_cache(maxsize=None)
def model_flops(name, batch, mode, smoke=False):
  """The step's model FLOPs as MFU counts them (XLA's count of the einsum
  path lowered for the CPU, `count_flops.py`): padding a head for cuDNN
  adds kernel FLOPs, not model FLOPs. Cached: an item's precisions share
  one count (one CPU lowering each saved)."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import count_flops  # pylint: disable=g-import-not-at-top

  with jax.default_device(jax.devices('cpu')[0]):
    return count_flops.count([(name, batch, mode)], smoke, quiet=True)[
      count_flops.flops_key(name, batch, mode)
    ]


def predicted_device_bytes(memory):
  """Device memory a step holds at its peak: its arguments, XLA's
  temporaries, and outputs not written over donated arguments."""
  return (
    memory.argument_size_in_bytes
    + memory.temp_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
  )


def measured_rows(path):
  """(workload, batch, mode, precision) -> measured gpu_bench result."""
  try:
    with open(path) as f:
      doc = json.load(f)
  except (OSError, ValueError) as e:
    raise SystemExit(
      f'--measured {path}: cannot read it ({e}); pass a '
      'gpu.json that benchmarks.gpu_bench wrote, or leave the '
      'flag out.'
    ) from e
  rows = {}
  for r in doc.get('results', []):
    if r.get('impl') == 'ours' and r.get('median_s'):
      key = (r['workload'].split('@')[0], r['batch'], r['mode'], r['precision'])
      rows[key] = r
  return rows, doc.get('device_name')


def to_markdown(doc):
  rows = []
  for it in doc['items']:
    r, m = it['roofline'], it.get('measured') or {}
    step = m.get('median_s')
    rows.append(
      [
        it['item'],
        f'{r["kernels"]:.0f}',
        f'{r["gbytes"]:.0f}',
        f'{r["tflop"]:.1f}',
        f'{it["model_tflop"]:.1f}',
        f'{r["ms"]:.1f} ms',
        f'{r["memory_bound_ms"]:.1f} ms',
        f'{100 * it["mfu_ceiling"]:.0f} %',
        f'{it["device_gbytes"]:.1f} GB',
        f'{step * 1e3:.1f} ms' if step else '-',
        f'{100 * m["mfu"]:.1f} %' if step else '-',
        f'{step * 1e3 / r["ms"]:.2f}' if step else '-',
      ]
    )
  parts = [
    f'# Roofline of our GPU steps, compiled for {doc["card"]}\n\n'
    f'{doc["how"]}. Bound = sum over kernels of max(bytes / '
    f'{doc["bandwidth"] / 1e12:.2f} TB/s, matmul FLOPs / '
    f'{doc["peak_flops"] / 1e12:.1f} TFLOP/s, fp32 items '
    f'{doc["tf32_flops"] / 1e12:.1f} as TF32); MFU ceiling = counted '
    "model FLOPs / (bound x peak); kernel FLOPs include cuDNN's padded "
    'head widths.\n',
    runner.markdown_table(
      [
        'item',
        'kernels',
        'GB moved',
        'kernel TFLOP',
        'model TFLOP',
        'bound',
        'of which memory-bound',
        'MFU ceiling',
        'device memory',
        'measured step',
        'measured MFU',
        'measured / bound',
      ],
      rows,
    ),
  ]
  for it in doc['items']:
    r = it['roofline']
    parts += [
      f'## {it["item"]}\n',
      runner.markdown_table(
        ['kind', 'kernels', 'bound ms', 'GB', 'TFLOP'],
        [
          [
            k['kind'],
            f'{k["kernels"]:.0f}',
            f'{k["ms"]:.2f}',
            f'{k["gbytes"]:.1f}',
            f'{k["tflop"]:.2f}',
          ]
          for k in r['kinds'][:12]
        ],
      ),
      runner.markdown_table(
        ['phase', 'location', 'kind', 'kernels', 'bound ms', 'GB'],
        [
          [
            p['phase'],
            p['location'],
            p['kind'],
            f'{p["kernels"]:.0f}',
            f'{p["ms"]:.2f}',
            f'{p["gbytes"]:.2f}',
          ]
          for p in r['locations']
        ],
      ),
    ]
  return '\n'.join(parts)


def check_presets(sharding, deviceless):
  """Compiles every preset's gradient (`compile_preset_gradient`); exit
  status 1 if any failed."""
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top

  failed = []
  for name in presets.names():
    if presets.family(name) != 'perceiver_io':
      continue  # compile_preset_gradient builds Perceiver IO inputs
    t0 = time.perf_counter()
    try:
      hlo = gpu_compile.compile_preset_gradient(name, 2, sharding, deviceless)
    except Exception as e:  # pylint: disable=broad-except
      failed.append(name)
      print(f'{name}: FAILED {type(e).__name__}: {str(e)[:300]}', flush=True)
      continue
    print(
      f'{name}: compiled, {hlo.count("__cudnn$fmha")} cuDNN attention '
      f'calls ({time.perf_counter() - t0:.0f} s)',
      flush=True,
    )
  return 1 if failed else 0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    'items',
    nargs='*',
    default=list(DEFAULT_ITEMS),
    help="WORKLOAD:BATCH:MODE:PRECISION (default: the GPU targets' rows).",
  )
  p.add_argument('--card', choices=sorted(gpu_compile.CARDS), default='h200')
  p.add_argument(
    '--measured',
    default=None,
    help='a gpu_bench gpu.json: its step times join the table.',
  )
  p.add_argument(
    '--presets',
    action='store_true',
    help='instead: compile the bf16 gradient of every preset '
    '(batch 2) with cuDNN attention and report its cuDNN calls '
    '(a compile check of the GPU path; no roofline).',
  )
  p.add_argument(
    '--smoke',
    action='store_true',
    help='tiny model sizes (checks the script, says nothing).',
  )
  p.add_argument(
    '--top', type=int, default=25, help='model locations listed per item.'
  )
  p.add_argument(
    '--out',
    default=os.path.join(_ROOT, 'benchmarks', 'results', 'gpu', 'roofline'),
    help='output folder.',
  )
  args = p.parse_args(argv)
  try:
    items = [parse_item(t) for t in args.items]
  except ValueError as e:
    p.error(str(e))
  from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top

  unknown = sorted({i[0] for i in items} - set(W.standard_workloads()))
  if unknown:
    p.error(
      f'unknown workloads {unknown}; choose from '
      f'{sorted(W.standard_workloads())}.'
    )
  measured, measured_on = (
    measured_rows(args.measured) if args.measured else ({}, None)
  )
  gpu_compile.deviceless_environment_if_no_gpu()
  sharding, on_gpu = gpu_compile.gpu_sharding(args.card)
  if args.presets:
    return check_presets(sharding, not on_gpu)
  import jax  # pylint: disable=g-import-not-at-top

  card = gpu_compile.CARDS[args.card]
  doc = {
    'card': jax.devices('cuda')[0].device_kind if on_gpu else card['name'],
    'how': (
      'compiled on the GPU'
      if on_gpu
      else 'compiled without the card (deviceless: GEMMs on cuBLAS, '
      'nothing autotuned)'
    )
    + f', JAX {jax.__version__}',
    'peak_flops': card['peak_flops'],
    'tf32_flops': card['tf32_flops'],
    'bandwidth': card['bandwidth'],
    'measured_on': measured_on,
    'items': [],
  }
  for name, batch, mode, precision in items:
    label = f'{name}:{batch}:{mode}:{precision}'
    t0 = time.perf_counter()
    hlo, memory = gpu_compile.compile_step(
      name, batch, mode, precision, sharding, not on_gpu, args.smoke
    )
    peak = card['tf32_flops' if precision == 'fp32' else 'peak_flops']
    r = roofline(hlo, peak, card['bandwidth'], args.top)
    flops = model_flops(name, batch, mode, args.smoke)
    item = {
      'item': label,
      'compile_s': time.perf_counter() - t0,
      'roofline': r,
      'device_gbytes': predicted_device_bytes(memory) / 1e9,
      'model_tflop': flops / 1e12,
      'peak_flops': peak,
      'mfu_ceiling': flops / (r['ms'] / 1e3) / peak,
    }
    m = measured.get((name, batch, mode, precision))
    if m:
      item['measured'] = {
        'median_s': m['median_s'],
        'mfu': flops / m['median_s'] / peak,
        'device_peak_bytes_process': m.get('device_peak_bytes_process'),
      }
    doc['items'].append(item)
    print(
      f'{label}: {r["kernels"]:.0f} kernels, {r["gbytes"]:.0f} GB, '
      f'{r["tflop"]:.1f} TFLOP, bound {r["ms"]:.1f} ms '
      f'({r["memory_bound_ms"]:.1f} memory-bound), MFU ceiling '
      f'{100 * item["mfu_ceiling"]:.0f} %, device memory '
      f'{item["device_gbytes"]:.1f} GB ({item["compile_s"]:.0f} s)',
      flush=True,
    )
  os.makedirs(args.out, exist_ok=True)
  runner.write_results(
    os.path.join(args.out, 'roofline'), doc, to_markdown(doc)
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
