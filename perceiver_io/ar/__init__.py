"""Perceiver AR: long-context autoregressive modelling (Hawthorne et al. 2022).

  from perceiver_io import ar
  cfg = ar.config(max_context=1024, num_latents=256)
  model = ar.PerceiverAR(cfg)
  logits = model.apply(variables, tokens)       # [B, M, V], last M positions
  total, weight = ar.loss(logits, targets, weights, z_loss=1e-4)
  texts = ar.generate(model, variables['params'], prompts,
                      max_new_tokens=100, rng=jax.random.PRNGKey(0))

Import is light: the config and its constants need no JAX; the model,
loss and generation load on first use.
"""

import importlib

from perceiver_io.ar.model_config import BOS_ID
from perceiver_io.ar.model_config import EOS_ID
from perceiver_io.ar.model_config import FAMILY
from perceiver_io.ar.model_config import PAD_ID
from perceiver_io.ar.model_config import config

__all__ = [
  'BOS_ID',
  'EOS_ID',
  'FAMILY',
  'PAD_ID',
  'PerceiverAR',
  'config',
  'generate',
  'loss',
]

_LAZY = {
  'PerceiverAR': 'perceiver_io.ar.model',
  'loss': 'perceiver_io.ar.model',
  'generate': 'perceiver_io.ar.decoding',
}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
