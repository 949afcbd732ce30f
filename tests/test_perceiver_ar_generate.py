"""Perceiver AR generation: the strided cache gives the full recompute's
logits and tokens past M generated tokens and past the context; a plain
rolling cache does not; sampling options, stops and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import ar
from perceiver_io.ar import decoding
from tests import ar_helpers

N, M = 12, 4


@pytest.fixture(autouse=True)
def _fast_compiles():
  jax.config.update('jax_disable_most_optimizations', True)


def _model(position='rotary'):
  return ar_helpers.random_params(
    ar_helpers.tiny_config(max_context=N, num_latents=M, position=position)
  )


def _compiled(model):
  return decoding.compiled(model.config)


B = 3  # every call has this batch size: one compile per function


def _window(seq):
  """Right-aligned [B, N] window of a sequence (in every row), its length."""
  tokens = np.zeros((B, N), np.int32)
  tail = seq[-N:]
  tokens[:, N - len(tail) :] = tail
  return tokens, np.full(B, len(tail), np.int32)


def _step(step, params, seq, cache, num_cached):
  return step(
    params,
    jnp.full(B, seq[-1], jnp.int32),
    jnp.full(B, len(seq) - 1, jnp.int32),
    cache,
    jnp.int32(num_cached),
  )


@pytest.mark.slow  # compiles the forward, the cached step and the sampler
@pytest.mark.parametrize('position', ['rotary', 'absolute'])
def test_cache_equals_full_recompute(position):
  model, params = _model(position)
  prompts = [[5, 6, 7], list(range(3, 3 + N)), [9]]
  kwargs = dict(max_new_tokens=2 * N, rng=jax.random.key(0))
  for options in (dict(temperature=0.0), dict(top_k=5, top_p=0.9)):
    cached = ar.generate(
      model, params, prompts, use_cache=True, **kwargs, **options
    )
    full = ar.generate(
      model, params, prompts, use_cache=False, **kwargs, **options
    )
    assert cached == full
    assert all(len(row) == 2 * N for row in cached)
  # The logits themselves: each cached step equals a full forward with the
  # same latent count, through resets (every M/2 - 1 steps); past the
  # context every step is a full forward with M latents.
  full_fn, full_cache, step = _compiled(model)
  seq = list(prompts[0])
  logits, cache = full_cache(params, *_window(seq), None, jnp.int32(M))
  z, steps_on_cache = M, 0
  for _ in range(N - len(seq)):
    seq.append(int(np.argmax(logits[0])))
    z_next = z + 1 if z < M else M // 2 + 1
    expected = full_fn(params, *_window(seq), None, jnp.int32(z_next))
    if z_next == z + 1:
      logits, cache = _step(step, params, seq, cache, z)
      np.testing.assert_allclose(logits, expected, atol=1e-5)
      steps_on_cache += 1
    else:
      logits, cache = full_cache(params, *_window(seq), None, jnp.int32(z_next))
    z = z_next
  assert steps_on_cache >= (N - 3) // 2


def test_plain_rolling_cache_drifts_after_m_steps():
  """Reference 6.2.5(d): growing the latent cache one step at a time equals
  the full forward up to M latents; rolling it on (dropping the oldest
  latent, no reset) no longer does."""
  model, params = _model('rotary')
  full_fn, full_cache, step = _compiled(model)
  seq = [4, 9, 11]
  _, cache = full_cache(params, *_window(seq), None, jnp.int32(1))
  errors = []
  for t in range(1, 2 * M + 1):
    seq.append(3 + (7 * t) % 20)
    cached = min(t, M - 1)
    logits, cache = _step(step, params, seq, cache, cached)
    expected = full_fn(params, *_window(seq), None, jnp.int32(cached + 1))
    errors.append(float(np.abs(logits - expected).max()))
  assert max(errors[: M - 1]) < 1e-5
  assert max(errors[M:]) > 1e-3


def _draws(logits, count=512, **options):
  tiled = jnp.tile(jnp.asarray(logits, jnp.float32)[None], (count, 1))
  return np.asarray(
    decoding.sample(
      tiled,
      jax.random.key(1),
      jnp.float32(options.get('temperature', 1.0)),
      jnp.float32(options.get('top_p', 1.0)),
      greedy=options.get('greedy', False),
      top_k=options.get('top_k', 0),
    )
  )


def test_sampling_options():
  logits = np.log(np.array([0.9, 0.03, 0.35, 0.3, 0.2, 0.15]))  # PAD first
  assert set(_draws(logits, greedy=True)) == {2}  # PAD is never chosen
  assert set(_draws(logits, top_k=1)) == {2}
  assert set(_draws(logits, top_k=2)) == {2, 3}
  # top_p: the smallest set of most likely tokens holding >= p of the mass
  # (PAD excluded; probabilities 0.35, 0.3, 0.2 ... renormalised).
  assert set(_draws(logits, top_p=0.4)) == {2, 3}
  assert set(_draws(logits, top_p=1e-6)) == {2}
  hot = _draws(logits, temperature=100.0)
  cold = _draws(logits, temperature=0.05)
  assert len(set(hot)) == 5 and ar.PAD_ID not in set(hot)
  assert (cold == 2).mean() > 0.95


def test_stops_streaming_and_bad_input():
  model, params = _model('rotary')
  eos = 7
  biased = jax.tree_util.tree_map(np.array, params)
  biased['logits']['bias'][eos] = 100.0
  seen = []
  out = ar.generate(
    model,
    biased,
    [[5, 6], [8], [9, 3, 4]],
    max_new_tokens=5,
    rng=jax.random.key(0),
    temperature=0.0,
    eos_id=eos,
    on_token=lambda t, tok: seen.append(tok),
  )
  assert out == [[], [], []]
  assert len(seen) == 1 and seen[0].tolist() == [eos] * 3
  free = ar.generate(
    model,
    params,
    [[5, 6], [8], [9, 3, 4]],
    max_new_tokens=5,
    rng=jax.random.key(0),
    temperature=0.0,
    on_token=lambda t, tok: seen.append(tok),
  )
  assert [len(r) for r in free] == [5, 5, 5] and len(seen) == 6
  long_prompt = list(range(3, 3 + N + 3))
  with pytest.warns(UserWarning, match='truncated from the left'):
    cut = ar.generate(
      model,
      params,
      [long_prompt, [5], [6]],
      max_new_tokens=3,
      rng=jax.random.key(0),
      temperature=0.0,
    )
  assert cut == ar.generate(
    model,
    params,
    [long_prompt[-N:], [5], [6]],
    max_new_tokens=3,
    rng=jax.random.key(0),
    temperature=0.0,
  )
  for kwargs, message in (
    (dict(prompts=[[5], []]), 'prompt 1 is empty'),
    (dict(prompts=[]), 'non-empty list'),
    (dict(prompts=[[5, 99]]), 'outside the vocabulary'),
    (dict(top_p=0.0), r'top_p must be in \(0, 1\]'),
    (dict(top_p=1.5), r'top_p must be in \(0, 1\]'),
    (dict(temperature=-1.0), 'temperature must be >= 0'),
    (dict(top_k=-2), 'top_k must be'),
    (dict(max_new_tokens=-1), 'max_new_tokens must be'),
  ):
    call = dict(prompts=[[5]], max_new_tokens=2, rng=jax.random.key(0))
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
      ar.generate(model, params, call.pop('prompts'), **call)
