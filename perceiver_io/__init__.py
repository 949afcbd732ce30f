"""perceiver_io: Perceiver IO in JAX/Flax, faithful to the official model.

Import is light (no TensorFlow, no torch, and no JAX until a model is used)
and changes no process setting. Typical use:

  from perceiver_io import presets
  model = presets.build('imagenet_fourier')
  variables = model.init(jax.random.PRNGKey(0), images)
  logits = model.apply(variables, images)

or import a published checkpoint with `perceiver_io.checkpoints.from_hf(...)`.
"""

import importlib

__version__ = '0.1.0'

__all__ = ['PerceiverIO', 'build_model', 'presets', '__version__']

_LAZY = {
  'PerceiverIO': 'perceiver_io.model',
  'build_model': 'perceiver_io.model',
  'presets': None,
}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  if _LAZY[name] is None:
    return importlib.import_module(f'{__name__}.{name}')
  return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
