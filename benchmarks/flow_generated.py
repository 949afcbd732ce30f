r"""Benchmark: train the small flow Perceiver on generated pairs on a CPU and
compare its validation EPE with the zero-flow baseline.

Why: a unit test can only show that one optimizer step runs. This script
shows that the whole optical-flow path learns something in minutes on a
laptop: pairs rendered by `perceiver_io.flow.synthetic` (with the
curriculum and augmentation of configs/optical_flow.py), the EPE loss on
valid pixels, and evaluation on held-out generated pairs. The zero-flow
baseline (predicting no motion, EPE = mean |gt|) is what an untrained model
scores (its output layer starts at zero), so "EPE below zero-flow" means the
model has learned to estimate motion. Optionally it also runs the tiled
full-frame evaluation on real benchmark folders (e.g. the Sintel/Middlebury
samples in shared/data), reporting the zero-flow EPE there too.

  python benchmarks/flow_generated.py --steps=240 \
      [--sintel=../shared/data/sintel_flow] \
      [--middlebury=../shared/data/middlebury_flow] [--output=result.json]

It is not a unit test (minutes of CPU). The measured figure is recorded in
BUILD_NOTES.md.
"""

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from configs import optical_flow
from experiments import predict_lib
from experiments import task_registry
from experiments import train_lib
from perceiver_io.flow import io as flow_io
from perceiver_io.flow import metrics as flow_metrics


def make_config(args):
  """configs/optical_flow.py:cpu with the benchmark's size and length."""
  c = optical_flow.get_config('cpu')
  c.unlock()
  height, width = args.size
  c.model.kwargs.train_size = (height, width)
  c.data.render_height = height + height // 4
  c.data.render_width = width + width // 4
  c.data.motion_scale = args.motion_scale
  c.batch_size = args.batch
  c.eval_batch_size = 16
  c.data.num_eval_examples = args.eval_pairs
  c.num_train_steps = args.steps
  c.optimizer.learning_rate = args.learning_rate
  c.optimizer.name = args.optimizer
  c.model.flow_scale = args.flow_scale
  c.log_every_steps = max(args.steps // 8, 1)
  c.eval_every_steps = max(args.steps // 4, 1)
  c.checkpoint_every_steps = args.steps
  c.progress_bar = False
  c.seed = args.seed
  c.lock()
  return c


def real_data_metrics(task, model, variables, kind, root, limit):
  """Tiled EPE of the model and of zero flow on a benchmark folder."""
  metrics = task.evaluate_directory(model, variables, kind, root)
  zero_sums = {}
  for _, listing in task.listings(kind, root):
    for files in listing[:limit] if limit > 0 else listing:
      sample = flow_io.load_pair(files)
      zero_sums = flow_metrics.add_sums(zero_sums, flow_metrics.flow_metric_sums(
          np.zeros_like(sample['flow']), sample['flow'], sample['valid']))
  metrics['zero_flow_epe_pooled'] = flow_metrics.metrics_from_sums(
      zero_sums)['epe']
  return metrics


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=240)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--size', type=int, nargs=2, default=(48, 64),
                      metavar=('H', 'W'))
  parser.add_argument('--motion_scale', type=float, default=0.15)
  parser.add_argument('--learning_rate', type=float, default=2e-3)
  parser.add_argument('--optimizer', default='adamw', choices=('adamw', 'lamb'))
  parser.add_argument('--flow_scale', type=float, default=20.0)
  parser.add_argument('--eval_pairs', type=int, default=64)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', default='')
  parser.add_argument('--sintel', default='')
  parser.add_argument('--middlebury', default='')
  parser.add_argument('--output', default='')
  args = parser.parse_args()

  config = make_config(args)
  workdir = args.workdir or tempfile.mkdtemp(prefix='flow_generated_')
  start = time.time()
  result = train_lib.train_and_evaluate(config, workdir)
  train_seconds = time.time() - start
  history = []
  with open(os.path.join(workdir, train_lib.METRICS_FILE)) as f:
    for line in f:
      record = json.loads(line)
      if 'eval_epe' in record:
        history.append((record['step'], record['eval_epe'],
                        record['eval_epe_zero_flow'], record['eval_fl_all']))
  final = result['eval']
  summary = {
      'config': 'configs/optical_flow.py:cpu + benchmark overrides',
      'size': list(args.size), 'batch': args.batch, 'steps': args.steps,
      'motion_scale': args.motion_scale, 'learning_rate': args.learning_rate,
      'optimizer': args.optimizer, 'flow_scale': args.flow_scale,
      'train_seconds_incl_compile_and_evals': round(train_seconds, 1),
      'device': str(jax.devices()[0]), 'cpu_count': os.cpu_count(),
      'val_pairs': final['num_examples'], 'val_epe': final['epe'],
      'val_epe_zero_flow': final['epe_zero_flow'],
      'val_fl_all': final['fl_all'], 'history': history,
  }
  print(f'\n{args.steps} steps x batch {args.batch} at {args.size[0]}x'
        f'{args.size[1]} in {train_seconds:.0f} s (compile and evals '
        f'included) on {os.cpu_count()} CPU core(s)')
  print('step   val EPE   zero-flow EPE   Fl-all %')
  for step, epe, zero, fl in history:
    print(f'{step:5d}   {epe:7.4f}   {zero:13.4f}   {fl:8.2f}')
  gain = 100 * (1 - final['epe'] / final['epe_zero_flow'])
  print(f'final validation EPE {final["epe"]:.4f} px vs zero-flow '
        f'{final["epe_zero_flow"]:.4f} px ({gain:.1f} % lower) on '
        f'{final["num_examples"]} generated pairs')

  real = {}
  if args.sintel or args.middlebury:
    model, variables, _, _ = predict_lib.load_workdir(workdir)
    task = task_registry.get(config)
    for kind, root in (('sintel', args.sintel), ('middlebury', args.middlebury)):
      if root:
        real[kind] = real_data_metrics(task, model, variables, kind, root, -1)
        print(f'{kind} ({root}): ' + ', '.join(
            f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
            for k, v in real[kind].items()))
  summary['real_data'] = real
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(summary, f, indent=2)
  print(f'workdir: {workdir}')


if __name__ == '__main__':
  main()
