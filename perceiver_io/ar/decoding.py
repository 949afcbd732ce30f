"""Generation: full recompute, and the reset-and-refill ("strided") cache.

Which function is sampled. The number of latents changes Perceiver AR's
function (reference 6.1.8): the newest latent's output depends on how many
latents before it take part in the self-attention. A cache can only extend
a run by one latent per step, so both modes follow one schedule of the
latent count z: the prompt is read with all M latents, each step adds one
(z + 1), and when z would pass M it restarts at M/2 + 1. `use_cache` only
changes the cost, never the tokens.

Why not a plain rolling cache. Once M tokens are generated a rolling latent
cache must drop its oldest latent, but the latents it keeps were computed
while they could still see the dropped ones (and those their
predecessors): the cached keys/values then belong to no forward pass of
the model, and the error grows with every step. The official decoder
instead resets: a full forward over the window with fewer latents
refills the caches, which then grow again. Here a reset is that full
forward with M/2 + 1 latents (its last latent already gives the next
logits), so between resets M/2 - 1 steps run on the cache: per token the
cost is one cached step plus 2/M of a full forward.

Past the context. While every row fits in the context (N tokens), the
cross-attend cache (keys/values of the inputs, which depend on their own
token only) and the latent caches are exact. Once a row outgrows it, the
window slides and the cached latents have seen inputs that left the
window: no cache reproduces a forward over the current window. From then
on every step is a full forward with all M latents, in both modes.
Rotary keys are cached unrotated with their positions and rotated at each
step (angles in float32).

Sampling: PAD is never sampled; temperature 0 is greedy (argmax); else
logits / temperature, then top-k, then top-p (nucleus), then a draw.
"""

import functools
import json
import warnings
from typing import Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_io.ar import model as model_lib
from perceiver_io.ar import model_config as config_lib


def compiled(config):
  """(forward, forward with cache, cached step), jitted for a model config:
  the functions `generate` runs (public for tests and benchmarks)."""
  cfg = config_lib.config(**dict(config))
  return _compiled(json.dumps(cfg, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _compiled(config_json: str):
  """Jitted forward, forward-with-cache and cached step for one config
  (compiled once per batch shape, reused across `generate` calls)."""
  model = model_lib.PerceiverAR(json.loads(config_json))

  def full(params, tokens, lengths, positions, z):
    logits = model.apply(
      {'params': params},
      tokens,
      input_lengths=lengths,
      positions=positions,
      num_latents=z,
    )
    return logits[:, -1]

  def full_cache(params, tokens, lengths, positions, z):
    logits, cache = model.apply(
      {'params': params},
      tokens,
      input_lengths=lengths,
      positions=positions,
      num_latents=z,
      return_cache=True,
    )
    return logits[:, -1], cache

  def step(params, token, position, cache, num_cached):
    return model.apply(
      {'params': params},
      token,
      position,
      cache,
      num_cached,
      method=model_lib.PerceiverAR.decode_step,
    )

  return jax.jit(full), jax.jit(full_cache), jax.jit(step)


@functools.partial(jax.jit, static_argnames=('greedy', 'top_k'))
def sample(logits, key, temperature, top_p, *, greedy, top_k):
  """Next tokens [B] from logits [B, V] (see the module doc for the order)."""
  logits = logits.at[:, config_lib.PAD_ID].set(-jnp.inf)
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  ordered = jnp.sort(logits, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(ordered, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass above each token
  kept = jnp.where(before < top_p, ordered, jnp.inf)
  threshold = jnp.min(kept, axis=-1, keepdims=True)
  logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.random.categorical(key, logits).astype(jnp.int32)


def _check_options(max_new_tokens, temperature, top_k, top_p, vocab):
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
    raise ValueError(
      f'max_new_tokens must be an integer >= 0; got {max_new_tokens!r}.'
    )
  if not temperature >= 0:
    raise ValueError(
      f'temperature must be >= 0 (0: greedy); got {temperature!r}.'
    )
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p must be in (0, 1]; got {top_p!r}.')
  if not isinstance(top_k, (int, np.integer)) or not 0 <= top_k:
    raise ValueError(f'top_k must be an integer >= 0 (0: off); got {top_k!r}.')
  return min(int(top_k), vocab)


def _prompt_rows(prompts, context: int, vocab: int) -> List[List[int]]:
  if isinstance(prompts, (str, bytes)) or not len(prompts):
    raise ValueError(
      'prompts must be a non-empty list of token sequences (one per row).'
    )
  rows, truncated = [], 0
  for i, prompt in enumerate(prompts):
    row = [int(t) for t in np.asarray(prompt).reshape(-1)]
    if not row:
      raise ValueError(
        f'prompt {i} is empty; give at least one token (e.g. BOS_ID='
        f'{config_lib.BOS_ID}).'
      )
    bad = [t for t in row if not 0 <= t < vocab]
    if bad:
      raise ValueError(
        f'prompt {i} holds token {bad[0]} outside the vocabulary [0, {vocab}).'
      )
    if len(row) > context:
      truncated += 1
      row = row[-context:]
    rows.append(row)
  if truncated:
    warnings.warn(
      f'{truncated} prompt(s) longer than the context ({context} tokens) '
      f'were truncated from the left to their last {context} tokens.',
      stacklevel=3,
    )
  return rows


def generate(
  model,
  params,
  prompts: Sequence[Sequence[int]],
  *,
  max_new_tokens: int,
  rng,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: Optional[int] = None,
  use_cache: bool = True,
  on_token: Optional[Callable[[int, np.ndarray], None]] = None,
) -> List[List[int]]:
  """Continues each prompt; returns the new tokens of each row.

  Args:
    model: a `PerceiverAR` (its config is what counts).
    params: its parameters (`variables['params']`).
    prompts: token sequences of any lengths (one row each); longer than
      max_context: truncated from the left, with one warning.
    max_new_tokens: tokens to generate per row at most.
    rng: a JAX key (unused when greedy).
    temperature: 0 = greedy; top_k: 0 = off; top_p in (0, 1].
    eos_id: a row stops after sampling it (it is not returned).
    use_cache: the strided cache (same tokens, less compute).
    on_token: called as on_token(step, tokens) with tokens int [B]: the
      token each row generated at this step, -1 for rows already stopped.
  """
  cfg = config_lib.config(**dict(model.config))
  if set(params) == {'params'}:  # given the whole variables dict
    params = params['params']
  n, m, vocab = cfg['max_context'], cfg['num_latents'], cfg['vocab_size']
  top_k = _check_options(max_new_tokens, temperature, top_k, top_p, vocab)
  rows = _prompt_rows(prompts, n, vocab)
  batch = len(rows)
  full, full_cache, step = compiled(cfg)

  tokens = np.full((batch, n), config_lib.PAD_ID, np.int32)
  for b, row in enumerate(rows):
    tokens[b, n - len(row) :] = row
  lengths = np.array([len(r) for r in rows], np.int64)  # whole sequence

  def forward(z, with_cache):
    args = (params, tokens, np.minimum(lengths, n).astype(np.int32))
    if with_cache:
      return full_cache(*args, None, jnp.int32(z))
    return full(*args, None, jnp.int32(z)), None

  outputs = [[] for _ in range(batch)]
  done = np.zeros(batch, bool)
  if max_new_tokens == 0:
    return outputs
  z = m
  logits, cache = forward(z, use_cache)
  greedy = temperature == 0
  for t in range(max_new_tokens):
    key = jax.random.fold_in(rng, t)
    new = np.asarray(
      sample(
        logits,
        key,
        jnp.float32(max(temperature, 1e-6)),
        jnp.float32(top_p),
        greedy=greedy,
        top_k=top_k,
      )
    )
    report = np.where(done, -1, new)
    for b in np.flatnonzero(~done):
      if eos_id is not None and new[b] == eos_id:
        done[b] = True
      else:
        outputs[b].append(int(new[b]))
    if on_token is not None:
      on_token(t, report)
    if done.all() or t == max_new_tokens - 1:
      break
    tokens = np.concatenate([tokens[:, 1:], new[:, None]], axis=1)
    lengths = lengths + 1
    fits = lengths.max() <= n
    z_next = (z + 1 if z < m else m // 2 + 1) if fits else m
    if use_cache and fits and z_next in (z + 1, 1):
      logits, cache = step(
        params,
        jnp.asarray(new),
        jnp.asarray(lengths - 1, jnp.int32),
        cache,
        jnp.int32(z_next - 1),
      )
    else:
      logits, cache = forward(z_next, use_cache and fits)
    z = z_next
  return outputs
