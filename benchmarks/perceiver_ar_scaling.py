"""Perceiver AR train-step time and peak memory vs context length, fixed M.

Why: the point of Perceiver AR is that a longer input costs only through
the cross-attention (K/V projections of N inputs and an M x N attention),
while the latent stack stays M x M; so at fixed M the step time should grow
about linearly in N, not quadratically. Each point runs in its own process
(peak resident memory is that process's maximum RSS) under a wall-clock
limit; after a point fails or times out, longer ones are skipped.

Usage:
  python -m benchmarks.perceiver_ar_scaling                 # 1k .. 64k
  python -m benchmarks.perceiver_ar_scaling --contexts=1024,2048 --smoke
Writes <out>/perceiver_ar_scaling.json and .md (default
benchmarks/results/cpu/run-<UTC time>/).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from benchmarks import runner

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--contexts', default=','.join(map(str, CONTEXTS)))
  p.add_argument('--num_latents', type=int, default=256)
  p.add_argument('--channels', type=int, default=256)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--timeout_s', type=int, default=600)
  p.add_argument('--smoke', action='store_true', help='tiny model, seconds')
  p.add_argument('--out', default='')
  p.add_argument('--worker', type=int, default=0, help=argparse.SUPPRESS)
  return p


def model_kwargs(args, n):
  return dict(
    max_context=n,
    num_latents=min(args.num_latents, n),
    num_channels=args.channels,
    num_heads=args.heads,
    num_self_attend_layers=args.layers,
  )


def worker(args) -> dict:
  """One point, in this process: compile, then time `repeats` steps."""
  from experiments import process_tuning  # pylint: disable=g-import-not-at-top

  process_tuning.configure_process()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from perceiver_io import ar  # pylint: disable=g-import-not-at-top

  n = args.worker
  cfg = ar.config(**model_kwargs(args, n))
  model = ar.PerceiverAR(cfg)
  m = cfg['num_latents']
  rng = np.random.default_rng(0)
  tokens = rng.integers(6, 262, (args.batch, n + 1)).astype(np.int32)
  inputs, targets = tokens[:, :-1], tokens[:, -m:]
  weights = np.ones(targets.shape, np.float32)
  params = model.init(jax.random.PRNGKey(0), inputs)['params']
  tx = optax.adam(1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, inputs, targets, weights):
    def loss_fn(p):
      logits = model.apply({'params': p}, inputs)
      total, count = ar.loss(logits, targets, weights)
      return total.sum() / count.sum()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  start = time.perf_counter()
  params, opt, loss = step(params, opt, inputs, targets, weights)
  loss.block_until_ready()
  first = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    params, opt, loss = step(params, opt, inputs, targets, weights)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  return {
    'context': n,
    'num_latents': m,
    'compile_and_first_s': round(first, 3),
    'median_s': round(float(np.median(times)), 4),
    'times_s': [round(t, 4) for t in times],
    'peak_rss_gib': round(
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
    ),
    'loss': float(loss),
  }


def run_point(args, n) -> dict:
  cmd = [sys.executable, '-m', 'benchmarks.perceiver_ar_scaling']
  cmd += [f'--worker={n}', f'--num_latents={args.num_latents}']
  cmd += [f'--channels={args.channels}', f'--heads={args.heads}']
  cmd += [f'--layers={args.layers}', f'--batch={args.batch}']
  cmd += [f'--repeats={args.repeats}']
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  env['PYTHONPATH'] = os.pathsep.join([_ROOT, env.get('PYTHONPATH', '')])
  try:
    proc = subprocess.run(
      cmd,
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=args.timeout_s,
    )
  except subprocess.TimeoutExpired:
    return {'context': n, 'error': f'over the {args.timeout_s} s limit'}
  if proc.returncode != 0:
    tail = (proc.stderr.strip().splitlines() or ['?'])[-1]
    return {'context': n, 'error': f'exit {proc.returncode}: {tail[:200]}'}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def to_markdown(doc) -> str:
  a = doc['args']
  lines = [
    '# Perceiver AR: train step vs context length (fixed M)',
    '',
    f'{doc["machine"]}; {doc["date"]}; JAX {doc["jax"]}. Model: '
    f'{a["layers"]} latent layers of {a["channels"]} channels, '
    f'{a["heads"]} heads, M={a["num_latents"]}, batch {a["batch"]}, Adam; '
    f'median of {a["repeats"]} steps after the compiled first one; peak RSS '
    "of the point's own process.",
    '',
    '| N (inputs) | step | step / N vs 1k | peak RSS | compile + 1st |',
    '| ---: | ---: | ---: | ---: | ---: |',
  ]
  base = None
  for p in doc['points']:
    if 'error' in p:
      lines.append(f'| {p["context"]:,} | {p["error"]} | | | |')
      continue
    per = p['median_s'] / p['context']
    base = base or per
    lines.append(
      f'| {p["context"]:,} | {p["median_s"]:.3f} s | {per / base:.2f} | '
      f'{p["peak_rss_gib"]:.2f} GiB | {p["compile_and_first_s"]:.1f} s |'
    )
  return '\n'.join(lines) + '\n'


def main(argv=None):
  args = build_parser().parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)))
    return
  if args.smoke:
    args.channels, args.heads, args.layers = 32, 2, 1
    args.num_latents, args.repeats = min(args.num_latents, 64), 1
  import jax  # pylint: disable=g-import-not-at-top

  out = runner.results_dir(args.out, False, 'cpu')
  os.makedirs(out, exist_ok=True)
  doc = {
    'args': {k: v for k, v in vars(args).items() if k != 'worker'},
    'machine': f'{platform.processor() or platform.machine()}, '
    f'{os.cpu_count()} CPUs',
    'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    'jax': jax.__version__,
    'points': [],
  }
  for n in [int(x) for x in args.contexts.split(',') if x]:
    point = run_point(args, n)
    doc['points'].append(point)
    print(json.dumps(point), flush=True)
    with open(os.path.join(out, 'perceiver_ar_scaling.json'), 'w') as f:
      json.dump(doc, f, indent=1)
    with open(os.path.join(out, 'perceiver_ar_scaling.md'), 'w') as f:
      f.write(to_markdown(doc))
    if 'error' in point:
      print(f'stopping after N={n}: {point["error"]}', flush=True)
      break
  print(f'wrote {out}/perceiver_ar_scaling.md')


if __name__ == '__main__':
  main()
