"""Checkpoint import (HuggingFace, DeepMind Haiku) and our own save/load.

from_hf(path_or_hub_id) -> (model, variables, config)
from_haiku(pickle_path, preset_or_config) -> (model, variables, config)
perceiver_ar.from_haiku(pickle_path, preset_or_config): the same for the
  official Perceiver AR parameters
save(directory, variables, config); load(directory) -> (model, variables, config)
stack_layers(variables) / unstack_layers(variables): the latent stack's
  unrolled <-> scanned (`scan_layers`) parameter layout; every loader above
  converts to the model's layout itself.
load_any('hf:...' | 'haiku:FILE[:preset]' | DIR) -> (model, variables, config)
"""

from perceiver_io.checkpoints.common import CheckpointError
from perceiver_io.checkpoints.haiku import from_haiku
from perceiver_io.checkpoints.hf import from_hf
from perceiver_io.checkpoints.layout import layout_of
from perceiver_io.checkpoints.layout import match_layout
from perceiver_io.checkpoints.layout import stack_layers
from perceiver_io.checkpoints.layout import unstack_layers
from perceiver_io.checkpoints.native import is_checkpoint
from perceiver_io.checkpoints.native import load
from perceiver_io.checkpoints.native import save


def load_any(spec: str, preset=None, **overrides):
  """Loads `hf:<dir|hub id>`, `haiku:<file>` (needs preset) or our own dir."""
  if spec.startswith('hf:'):
    return from_hf(spec, **overrides)
  if spec.startswith('haiku:'):
    path = spec[len('haiku:') :]
    if preset is None:
      raise CheckpointError(
        'a Haiku checkpoint needs a preset (e.g. '
        'imagenet_fourier) to know the architecture.'
      )
    return from_haiku(path, preset, **overrides)
  if spec.startswith('workdir:'):
    spec = spec[len('workdir:') :]
  return load(spec, **overrides)


__all__ = [
  'CheckpointError',
  'from_haiku',
  'from_hf',
  'is_checkpoint',
  'layout_of',
  'load',
  'load_any',
  'match_layout',
  'save',
  'stack_layers',
  'unstack_layers',
]
