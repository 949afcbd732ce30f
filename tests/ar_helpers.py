"""Tiny Perceiver AR models with random (non-zero) parameters for tests.

Parameters come from `jax.eval_shape` and a NumPy generator instead of
`init`: the output head is zero-initialised (every logit would be equal),
and skipping init saves seconds per config on 2 cores.
"""

import flax
import jax
import numpy as np

from perceiver_io import ar

TINY = dict(
  vocab_size=32,
  max_context=16,
  num_latents=6,
  num_channels=16,
  num_heads=2,
  num_self_attend_layers=2,
  rotary_fraction=0.5,
)


def tiny_config(**overrides):
  return ar.config(**{**TINY, **overrides})


def random_params(config, seed=0):
  model = ar.PerceiverAR(config)
  tokens = jax.ShapeDtypeStruct((1, config['max_context']), np.int32)
  shapes = jax.eval_shape(
    lambda t: model.init(jax.random.PRNGKey(0), t), tokens
  )['params']
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in flax.traverse_util.flatten_dict(shapes).items():
    shape = leaf.shape
    if path[-1] == 'scale':
      value = 1.0 + 0.2 * rng.standard_normal(shape)
    elif path[-1] == 'kernel':
      value = rng.standard_normal(shape) / np.sqrt(shape[0])
    elif path[-1] == 'bias':
      value = 0.1 * rng.standard_normal(shape)
    else:  # embeddings and position tables
      value = rng.standard_normal(shape)
    flat[path] = value.astype(np.float32)
  return model, flax.traverse_util.unflatten_dict(flat)


def random_tokens(batch, length, vocab, seed=0):
  """Data tokens (never PAD) [batch, length]."""
  rng = np.random.default_rng(seed)
  return rng.integers(ar.BOS_ID, vocab, (batch, length)).astype(np.int32)
