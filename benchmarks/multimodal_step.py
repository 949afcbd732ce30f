r"""Multimodal autoencoding train step at the paper's shapes, on this machine.

  python -m benchmarks.multimodal_step --batch=1 --repeats=3 \
      --out=benchmarks/results/cpu

Why: HuggingFace's multimodal class has no training, so there is nothing
to compare a step with; this reports ours at the paper's shapes (16 frames
of 224x224, 30,720 audio samples, 784 x 512 latents, 512 pixel and 512
audio queries per example, the label masked as the sampled draw says) on
the CPU at a reduced batch: compile time, median step time, peak RSS, and
the FLOPs counted from shapes (`perceiver_io/flops.py`: multiply and add
counted separately, as the paper's App. D): the train step (3x its forward
pass) and its forward pass per example against the paper's 310B (Tab. 17),
and per evaluated clip (every output decoded) against its 6.85T. The step
is the runner's own (`experiments.steps.make_train_step` with the config's
LAMB), so it is the step `experiments.train` runs. Writes multimodal_step.json and .md.
"""

import argparse
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import measure
from benchmarks import runner

PAPER_TRAIN_FLOPS = 310e9  # per example (Tab. 17)
PAPER_EVAL_FLOPS = 6.85e12  # per clip, every output decoded (Tab. 17)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=1, help='examples per step.')
  p.add_argument('--repeats', type=int, default=3, help='timed steps.')
  p.add_argument('--variant', default='default', help='config variant.')
  runner.add_out_flag(p, 'cpu')
  args = p.parse_args(argv)
  if min(args.batch, args.repeats) < 1:
    p.error('--batch and --repeats must be at least 1.')
  return args


def measure_step(args):
  import jax
  import numpy as np

  from configs import multimodal_autoencoding
  from experiments import models
  from experiments import optim
  from experiments import steps
  from experiments import tasks
  from experiments import train_lib
  from perceiver_io import flops
  from perceiver_io.data import video

  config = multimodal_autoencoding.get_config(args.variant)
  config.unlock()
  config.batch_size = args.batch
  config.num_train_steps = 1000
  task = tasks.get(config)
  model, _ = models.build(config, task.num_outputs())
  s = task.shapes
  clips = [
    video.synthetic_clip(
      i,
      num_frames=s['num_frames'],
      size=s['height'],
      audio_samples=s['audio_samples'],
      num_classes=min(s['num_classes'], video.MAX_CLASSES),
    )
    for i in range(args.batch)
  ]
  batch = task.stack(clips)
  draws = [task.train_draws(i) for i in range(args.batch)]
  for key in draws[0]:
    batch[key] = np.stack([d[key] for d in draws])
  train_flops = train_lib.train_step_flops(model, task, args.batch)
  inputs, kwargs = task.model_inputs(task.stack(clips[:1]))
  kwargs['subsampled_output_points'] = {
    'image': np.arange(s['pixels']),
    'audio': np.arange(s['audio_patches']),
    'label': None,
  }
  eval_flops = flops.forward_flops(model, inputs, **kwargs)
  start = time.perf_counter()
  init = jax.jit(
    lambda: steps.init_variables(model, task.model_inputs(batch), 0)
  )
  variables = init()
  params = variables['params']
  tx, schedule = optim.make_optimizer(config, params, 1000)
  state = {
    'step': jax.numpy.zeros((), jax.numpy.int32),
    'params': params,
    'opt_state': tx.init(params),
    'model_state': {k: v for k, v in variables.items() if k != 'params'},
  }
  init_s = time.perf_counter() - start
  step = jax.jit(steps.make_train_step(model, task, tx, schedule, config))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics['loss'])
    times.append(time.perf_counter() - start)
  n_params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params))
  return {
    'variant': args.variant,
    'batch': args.batch,
    'shapes': s,
    'queries': {
      'image': int(batch['image_points'].shape[1]),
      'audio': int(batch['audio_points'].shape[1]),
    },
    'params': n_params,
    'init_s': init_s,
    'compile_s': compile_s,
    'step_s': times,
    'median_s': float(np.median(times)),
    'loss': float(metrics['loss']),
    'peak_rss': measure.peak_rss_bytes(),
    'train_flops_per_step': train_flops,
    'train_flops_per_example': train_flops / args.batch,
    # The paper's FLOPs count forward passes (its eval figure is one too).
    'forward_flops_per_example': train_flops / 3 / args.batch,
    'paper_train_flops_per_example': PAPER_TRAIN_FLOPS,
    'eval_flops_per_clip': eval_flops,
    'paper_eval_flops_per_clip': PAPER_EVAL_FLOPS,
  }


def markdown(r) -> str:
  s = r['shapes']
  return (
    f'Multimodal autoencoding train step ({r["variant"]}: {s["num_frames"]}'
    f'x{s["height"]}x{s["width"]} video, {s["audio_samples"]} audio samples,'
    f' {r["queries"]["image"]} pixel + {r["queries"]["audio"]} audio queries'
    f' per example; {r["params"]:,} parameters), batch {r["batch"]}, on this'
    ' machine:\n\n'
    + runner.markdown_table(
      [
        'compile',
        'step (median)',
        'peak RSS',
        'train step FLOPs / example',
        'its forward',
        'paper',
        'eval FLOPs / clip',
        'paper',
      ],
      [
        [
          runner.fmt_seconds(r['compile_s']),
          runner.fmt_seconds(r['median_s']),
          runner.fmt_bytes(r['peak_rss']),
          f'{r["train_flops_per_example"] / 1e9:.0f}B',
          f'{r["forward_flops_per_example"] / 1e9:.0f}B',
          f'{r["paper_train_flops_per_example"] / 1e9:.0f}B',
          f'{r["eval_flops_per_clip"] / 1e12:.2f}T',
          f'{r["paper_eval_flops_per_clip"] / 1e12:.2f}T',
        ]
      ],
    )
  )


def main(argv=None):
  args = parse_args(argv)
  result = measure_step(args)
  doc = {
    'machine': runner.machine_info(),
    'versions': runner.library_versions(),
    'args': vars(args),
    'result': result,
  }
  out = runner.results_dir(args.out, False, 'cpu')
  text = markdown(result)
  runner.write_results(os.path.join(out, 'multimodal_step'), doc, text)
  print(text)


if __name__ == '__main__':
  main()
