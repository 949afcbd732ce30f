r"""Latency of one prediction: in-process jit vs the exported artifacts vs HF.

  python -m benchmarks.export_latency [--sizes=reduced|full|smoke]
      [--batches=1,32] [--workloads=text,image_fourier] [--repeats=10]
      [--out=results/export_latency.json]

For the text classifier and ImageNet Fourier, at each batch size, back to
back in one process: our model under jax.jit; the StableHLO artifact
(experiments.export: deserialized, jitted `exported.call` with the
parameters as an argument); the ONNX artifact in onnxruntime (CPU; if
jax2onnx and onnxruntime are installed); HF's PyTorch model eager and
under torch.compile (torch.no_grad). Medians of `--repeats` calls after a
warm-up call (its time, compilation included, is reported apart). Weights
are random on each side (latency does not depend on their values).

Why reduced sizes by default: at full size one batch-32 call of the
language model (2048 bytes, 26 layers) takes minutes on a shared 2-core
machine; `--sizes=reduced` keeps the widths of the full models with fewer
layers and shorter inputs, `--sizes=full` runs the paper's sizes.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

from benchmarks import measure
from benchmarks import workloads
from benchmarks import workloads_hf
from benchmarks import workloads_ours

WORKLOADS = ('text', 'image_fourier')
REDUCED = {
  'text': dict(workloads.TEXT_FULL, seq_len=256, max_seq_len=256, depth=4),
  'image_fourier': dict(
    workloads.IMAGE_FULL,
    image_size=64,
    num_latents=128,
    latent_channels=256,
    blocks=1,
    per_block=4,
  ),
}
SIZES = {
  'full': {
    'text': workloads.TEXT_FULL,
    'image_fourier': workloads.IMAGE_FULL,
  },
  'reduced': REDUCED,
  'smoke': {
    'text': workloads.TEXT_TINY,
    'image_fourier': workloads.IMAGE_TINY,
  },
}


def _workload(kind: str, sizes: str, batch: int) -> workloads.Workload:
  name = {'text': 'text_classifier', 'image_fourier': 'imagenet_fourier'}
  return workloads.Workload(
    name[kind], kind, batch, dict(SIZES[sizes][kind]), modes=('infer',)
  )


def _model_config(model) -> dict:
  return dict(model.config)


def ours_sides(w, data, repeats):
  """jit in process, the StableHLO artifact, and onnxruntime if present."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import export_lib  # pylint: disable=g-import-not-at-top
  from experiments import export_onnx  # pylint: disable=g-import-not-at-top

  model, variables, x, kwargs = workloads_ours.ours_build(w, data)
  results = {}
  infer = workloads_ours.ours_infer_fn(model)
  results['jax_jit'] = measure.time_calls(
    lambda: jax.block_until_ready(infer(variables, x, kwargs)), repeats
  )
  cfg = _model_config(model)
  exported, stored, _ = export_lib.export_stablehlo(model, variables, cfg)
  loaded = jax.export.deserialize(exported.serialize())
  layout = export_lib.input_layout(cfg)[0]
  inputs = _named_inputs(layout, data)
  call = jax.jit(loaded.call)
  params = jax.device_put(stored)
  results['stablehlo_artifact'] = measure.time_calls(
    lambda: jax.block_until_ready(call(params, inputs)), repeats
  )
  if export_onnx.missing() is None and not export_onnx.unsupported(cfg):
    import onnxruntime  # pylint: disable=g-import-not-at-top

    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'model.onnx')
      start = time.perf_counter()
      export_onnx.convert(model, variables, cfg, path)
      convert_s = time.perf_counter() - start
      session = onnxruntime.InferenceSession(
        path,
        export_onnx.quiet_session_options(onnxruntime),
        providers=['CPUExecutionProvider'],
      )
      results['onnxruntime'] = measure.time_calls(
        lambda: session.run(None, inputs), repeats
      )
      results['onnxruntime']['convert_s'] = convert_s
  return results


def _named_inputs(layout, data):
  if 'input_ids' in layout:
    return {
      'input_ids': data['inputs'].astype(np.int32),
      'attention_mask': data['mask'].astype(np.int32),
    }
  return {next(iter(layout)): data['inputs'].astype(np.float32)}


def hf_sides(w, data, repeats, compile_model=True):
  """HF's PyTorch model, eager and under torch.compile."""
  import torch  # pylint: disable=g-import-not-at-top

  model = workloads_hf.hf_build(w).eval()
  make_kwargs, _ = workloads_hf.hf_model_inputs(w, data)
  results = {}

  def run(m):
    with torch.no_grad():
      return m(**make_kwargs()).logits

  results['hf_torch_eager'] = measure.time_calls(lambda: run(model), repeats)
  if compile_model:
    compiled = torch.compile(model)
    results['hf_torch_compile'] = measure.time_calls(
      lambda: run(compiled), repeats
    )
  return results


def run_all(args):
  rows = []
  for kind in args.workloads:
    for batch in args.batches:
      w = _workload(kind, args.sizes, batch)
      data = workloads.make_inputs(w)
      sides = ours_sides(w, data, args.repeats)
      sides.update(hf_sides(w, data, args.repeats, not args.no_compile))
      for side, timing in sides.items():
        rows.append(
          dict(
            workload=w.name,
            batch=batch,
            side=side,
            median_ms=1e3 * timing['median_s'],
            first_s=timing['first_s'],
            repeats=len(timing['times_s']),
          )
        )
        print(
          f'{w.name:18s} b={batch:<3d} {side:20s} '
          f'{1e3 * timing["median_s"]:9.2f} ms (first {timing["first_s"]:.2f} s)',
          flush=True,
        )
  return rows


def build_parser():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', choices=sorted(SIZES), default='reduced')
  parser.add_argument(
    '--batches',
    type=lambda s: [int(b) for b in s.split(',')],
    default=[1, 32],
  )
  parser.add_argument(
    '--workloads',
    type=lambda s: s.split(','),
    default=list(WORKLOADS),
    help='Comma-separated subset of ' + ','.join(WORKLOADS) + '.',
  )
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument(
    '--no_compile', action='store_true', help='Skip torch.compile.'
  )
  parser.add_argument('--out', default='')
  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  if any(b < 1 for b in args.batches) or args.repeats < 1:
    raise SystemExit('error: --batches and --repeats must be positive.')
  unknown = sorted(set(args.workloads) - set(WORKLOADS))
  if unknown:
    raise SystemExit(
      f'error: --workloads: unknown {",".join(unknown)}; choose from '
      f'{",".join(WORKLOADS)}.'
    )
  rows = run_all(args)
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump({'sizes': args.sizes, 'rows': rows}, f, indent=2)
  return rows


if __name__ == '__main__':
  main()
