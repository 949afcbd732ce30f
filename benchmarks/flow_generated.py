r"""Benchmark: train the small flow Perceiver on generated pairs on a CPU and
compare its validation EPE with the zero-flow baseline.

Why: a unit test can only show that one optimizer step runs. This script
checks whether the whole optical-flow path learns in minutes on a laptop:
pairs rendered by `perceiver_io.flow.synthetic` (with the
curriculum and augmentation of configs/optical_flow.py), the EPE loss on
valid pixels, and evaluation on held-out generated pairs. The zero-flow
baseline (predicting no motion, EPE = mean |gt|) is what an untrained model
scores (its output layer starts at zero), so "EPE below zero-flow" means the
model has learned to estimate motion. Optionally it also runs the tiled
full-frame evaluation on real benchmark folders (e.g. the Sintel/Middlebury
samples in shared/data), reporting the zero-flow EPE there too.

  python benchmarks/flow_generated.py [--steps=240] [--overfit=16] \
      [--sintel=../shared/data/sintel_flow] \
      [--middlebury=../shared/data/middlebury_flow] [--output=result.json]

It is not a unit test (minutes of CPU).

Measured (2 CPU cores shared with other jobs; configs/optical_flow.py:cpu,
48x64, batch 16, 240 steps, 260 s including compilation and evaluations):
validation EPE 1.2317 px vs 1.2316 px for zero flow on 64 held-out pairs,
and on the real samples (tiled, 48x64 tiles) Sintel clean 16.684 vs 16.690,
Middlebury RubberWhale 1.257 vs 1.256: the small model has not learned to
estimate motion in minutes (nor in 1,500 steps at 32x48: 1.0398 vs 1.0399).
With `--overfit=16` the same run memorises its 16 training pairs (EPE
0.303 px vs 1.249 px zero flow) while its held-out EPE rises to 1.570 px:
the loss, targets and optimiser work; generalising needs the paper's scale
of training (375k steps of batch 512).
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
from perceiver_io.flow import synthetic


def make_config(args):
  """configs/optical_flow.py:cpu, with the flags that were given applied."""
  c = optical_flow.get_config('cpu')
  c.unlock()
  if args.size:
    height, width = args.size
    c.model.kwargs.train_size = (height, width)
    c.data.render_height = height + height // 4
    c.data.render_width = width + width // 4
  for value, section, field in (
      (args.motion_scale, c.data, 'motion_scale'), (args.batch, c, 'batch_size'),
      (args.eval_pairs, c.data, 'num_eval_examples'),
      (args.steps, c, 'num_train_steps'),
      (args.learning_rate, c.optimizer, 'learning_rate'),
      (args.optimizer, c.optimizer, 'name'),
      (args.flow_scale, c.model, 'flow_scale'), (args.seed, c, 'seed')):
    if value is not None:
      section[field] = value
  steps = int(c.num_train_steps)
  c.log_every_steps = max(steps // 8, 1)
  c.eval_every_steps = max(steps // 4, 1)
  c.checkpoint_every_steps = steps
  c.progress_bar = False
  if args.overfit:  # A fixed set of un-augmented pairs at the model size.
    c.data.num_train_examples = args.overfit
    c.data.render_height, c.data.render_width = c.model.kwargs.train_size
    c.data.augment = False
    c.data.plain_fraction = 0.0
  c.lock()
  return c


def training_set_epe(config, workdir, count):
  """(EPE, zero-flow EPE) on the first `count` training pairs (overfit mode)."""
  model, variables, _, _ = predict_lib.load_workdir(workdir)
  task = task_registry.get(config)
  settings = task.generator_settings()
  predict = task.make_predict_fn(model, variables)
  sums, zero = {}, {}
  for index in range(count):
    s = synthetic.sample_at(settings.seed, index, *task.train_size,
                            config=settings.synthetic_config)
    x = (np.stack([s['frame1'], s['frame2']]).astype(np.float32) / 127.5
         - 1.0)[None]
    sums = flow_metrics.add_sums(sums, flow_metrics.flow_metric_sums(
        predict(x)[0], s['flow'], s['valid']))
    zero = flow_metrics.add_sums(zero, flow_metrics.flow_metric_sums(
        np.zeros_like(s['flow']), s['flow'], s['valid']))
  return (flow_metrics.metrics_from_sums(sums)['epe'],
          flow_metrics.metrics_from_sums(zero)['epe'])


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
  # Unset flags keep the values of configs/optical_flow.py:cpu.
  parser.add_argument('--steps', type=int)
  parser.add_argument('--batch', type=int)
  parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'))
  parser.add_argument('--motion_scale', type=float)
  parser.add_argument('--learning_rate', type=float)
  parser.add_argument('--optimizer', choices=('adamw', 'lamb'))
  parser.add_argument('--flow_scale', type=float)
  parser.add_argument('--eval_pairs', type=int)
  parser.add_argument('--seed', type=int)
  parser.add_argument('--overfit', type=int, default=0,
                      help='train on this many fixed pairs (no augmentation) '
                      'and also report the EPE on them: checks that the '
                      'optimisation path works, separately from generalisation')
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
  size = tuple(config.model.kwargs.train_size)
  steps, batch = int(config.num_train_steps), int(config.batch_size)
  summary = {
      'config': 'configs/optical_flow.py:cpu', 'size': list(size),
      'batch': batch, 'steps': steps,
      'motion_scale': config.data.motion_scale,
      'learning_rate': config.optimizer.learning_rate,
      'optimizer': config.optimizer.name,
      'flow_scale': config.model.flow_scale,
      'train_seconds_incl_compile_and_evals': round(train_seconds, 1),
      'device': str(jax.devices()[0]), 'cpu_count': os.cpu_count(),
      'val_pairs': final['num_examples'], 'val_epe': final['epe'],
      'val_epe_zero_flow': final['epe_zero_flow'],
      'val_fl_all': final['fl_all'], 'history': history,
  }
  print(f'\n{steps} steps x batch {batch} at {size[0]}x{size[1]} in '
        f'{train_seconds:.0f} s (compile and evals '
        f'included) on {os.cpu_count()} CPU core(s)')
  print('step   val EPE   zero-flow EPE   Fl-all %')
  for step, epe, zero, fl in history:
    print(f'{step:5d}   {epe:7.4f}   {zero:13.4f}   {fl:8.2f}')
  change = 100 * (final['epe'] / final['epe_zero_flow'] - 1)
  print(f'final validation EPE {final["epe"]:.4f} px vs zero-flow '
        f'{final["epe_zero_flow"]:.4f} px ({abs(change):.2f} % '
        f'{"higher" if change > 0 else "lower"}) on {final["num_examples"]} '
        'held-out generated pairs')

  if args.overfit:
    train_epe, train_zero = training_set_epe(config, workdir, args.overfit)
    summary['overfit_pairs'] = args.overfit
    summary['train_set_epe'] = train_epe
    summary['train_set_epe_zero_flow'] = train_zero
    print(f'training-set EPE {train_epe:.4f} px vs zero-flow {train_zero:.4f} '
          f'px on the {args.overfit} training pairs')

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
