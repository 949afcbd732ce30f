"""Perceiver AR generation speed: the strided cache vs full recompute.

Why: full recompute runs the whole model (N inputs, M latents) for every
new token; the cached decoder runs one query through the cached keys and
values and refills the latent window only every M/2 tokens (the official
"strided" reset). This measures tokens/s of both on the same model,
prompt and greedy decoding, after a warm-up call (compilation excluded),
and checks that they generate the same tokens.

Usage:
  python -m benchmarks.perceiver_ar_generation
  python -m benchmarks.perceiver_ar_generation --context=256 --new_tokens=64
Writes <out>/perceiver_ar_generation.json and .md.
"""

import argparse
import json
import os
import platform
import sys
import time
from benchmarks import runner

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--context', type=int, default=1024)
  p.add_argument('--num_latents', type=int, default=256)
  p.add_argument('--channels', type=int, default=256)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--prompt', type=int, default=512, help='prompt tokens')
  p.add_argument('--new_tokens', type=int, default=512)
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--out', default='')
  return p


def measure(args) -> dict:
  from experiments import process_tuning  # pylint: disable=g-import-not-at-top

  process_tuning.configure_process()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from perceiver_io import ar  # pylint: disable=g-import-not-at-top

  cfg = ar.config(
    max_context=args.context,
    num_latents=args.num_latents,
    num_channels=args.channels,
    num_heads=args.heads,
    num_self_attend_layers=args.layers,
  )
  model = ar.PerceiverAR(cfg)
  rng = np.random.default_rng(0)
  # Random weights would give zero logits (the head starts at zero):
  # perturb every parameter so greedy decoding is not trivially constant.
  params = model.init(
    jax.random.PRNGKey(0), np.zeros((1, args.context), np.int32)
  )['params']
  params = jax.tree_util.tree_map(
    lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype), params
  )
  prompts = [
    [int(t) for t in rng.integers(6, 262, args.prompt)]
    for _ in range(args.batch)
  ]
  result = {}
  outputs = {}
  for name, cached in (('cached', True), ('full recompute', False)):
    call = lambda: ar.generate(  # noqa: E731
      model,
      params,
      prompts,
      max_new_tokens=args.new_tokens,
      rng=jax.random.PRNGKey(0),
      temperature=0.0,
      top_k=0,
      top_p=1.0,
      eos_id=None,
      use_cache=cached,
    )
    start = time.perf_counter()
    call()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    outputs[name] = call()
    seconds = time.perf_counter() - start
    tokens = sum(len(o) for o in outputs[name])
    result[name] = {
      'seconds': round(seconds, 3),
      'tokens_per_s': round(tokens / seconds, 2),
      'first_call_s': round(warm, 2),
    }
  result['same_tokens'] = outputs['cached'] == outputs['full recompute']
  result['speedup'] = round(
    result['cached']['tokens_per_s'] / result['full recompute']['tokens_per_s'],
    2,
  )
  return result


def to_markdown(doc) -> str:
  a, r = doc['args'], doc['result']
  lines = [
    '# Perceiver AR generation: cached vs full recompute',
    '',
    f'{doc["machine"]}; {doc["date"]}; JAX {doc["jax"]}. Model: '
    f'N={a["context"]}, M={a["num_latents"]}, {a["layers"]} layers of '
    f'{a["channels"]} channels; batch {a["batch"]}, prompt {a["prompt"]} '
    f'tokens, {a["new_tokens"]} new tokens, greedy; second call timed '
    '(the first compiles).',
    '',
    '| decoder | tokens/s | seconds | first call (compile) |',
    '| --- | ---: | ---: | ---: |',
  ]
  for name in ('cached', 'full recompute'):
    x = r[name]
    lines.append(
      f'| {name} | {x["tokens_per_s"]:.1f} | {x["seconds"]:.2f} | '
      f'{x["first_call_s"]:.1f} s |'
    )
  lines += [
    '',
    f'Speed-up {r["speedup"]}x; same tokens: {r["same_tokens"]}.',
  ]
  return '\n'.join(lines) + '\n'


def main(argv=None):
  args = build_parser().parse_args(argv)
  result = measure(args)  # Sets the process up before JAX starts.
  import jax  # pylint: disable=g-import-not-at-top

  doc = {
    'args': vars(args),
    'machine': f'{platform.processor() or platform.machine()}, '
    f'{os.cpu_count()} CPUs',
    'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    'jax': jax.__version__,
    'result': result,
  }
  out = runner.results_dir(args.out, False, 'cpu')
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'perceiver_ar_generation.json'), 'w') as f:
    json.dump(doc, f, indent=1)
  with open(os.path.join(out, 'perceiver_ar_generation.md'), 'w') as f:
    f.write(to_markdown(doc))
  print(to_markdown(doc))


if __name__ == '__main__':
  main()
