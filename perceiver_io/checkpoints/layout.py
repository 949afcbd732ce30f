"""The latent stack's two parameter layouts, and exact conversion between.

Unrolled (the default, and what HuggingFace and Haiku checkpoints map to):
one subtree per layer, `encoder/self_attend_0/...`, `encoder/self_attend_1/
...`. Scanned (`scan_layers=True`, perceiver_io/encoder.py): one subtree
`encoder/self_attend/...` whose arrays carry a leading layer axis. The
conversion only stacks or slices arrays, so a round trip is bit-exact; it
applies to any tree that nests the model's variables (a `{'params': ...}`
dict, a tanh head's `perceiver/...`, an optimizer state that mirrors them).
"""

import re
from typing import Any, Dict, Optional, Tuple

import flax
import numpy as np

ENCODER = 'encoder'
SCANNED = 'self_attend'
_UNROLLED = re.compile(r'self_attend_(\d+)$')


def _plain(tree):
  return (
    flax.core.unfreeze(tree) if isinstance(tree, flax.core.FrozenDict) else tree
  )


def _map_encoders(tree, fn):
  """`tree` with `fn` applied to every dict found under an 'encoder' key."""
  if not isinstance(tree, dict):
    return tree
  return {
    k: fn(v) if k == ENCODER and isinstance(v, dict) else _map_encoders(v, fn)
    for k, v in tree.items()
  }


def _layer_indices(encoder: Dict[str, Any]):
  return sorted(
    int(m.group(1)) for m in map(_UNROLLED.match, encoder) if m is not None
  )


def _stack_encoder(encoder: Dict[str, Any]) -> Dict[str, Any]:
  indices = _layer_indices(encoder)
  if not indices:
    return encoder
  if indices != list(range(len(indices))):
    raise ValueError(
      f'the encoder has layers {indices}; stacking needs self_attend_0 to '
      f'self_attend_{len(indices) - 1} with none missing.'
    )
  if SCANNED in encoder:
    raise ValueError(
      'the encoder has both self_attend (scanned) and self_attend_<i> '
      '(unrolled) parameters; a tree holds one layout.'
    )
  layers = [encoder[f'self_attend_{i}'] for i in indices]
  out = {k: v for k, v in encoder.items() if not _UNROLLED.match(k)}
  out[SCANNED] = flax.traverse_util.unflatten_dict(
    {
      path: np.stack(
        [np.asarray(flax.traverse_util.flatten_dict(l)[path]) for l in layers]
      )
      for path in flax.traverse_util.flatten_dict(layers[0])
    }
  )
  return out


def _unstack_encoder(encoder: Dict[str, Any]) -> Dict[str, Any]:
  if SCANNED not in encoder:
    return encoder
  flat = flax.traverse_util.flatten_dict(encoder[SCANNED])
  sizes = {np.shape(v)[0] if np.ndim(v) else None for v in flat.values()}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
      'the scanned self_attend parameters must share one leading layer '
      f'axis; their leading sizes are {sorted(map(str, sizes))}.'
    )
  out = {k: v for k, v in encoder.items() if k != SCANNED}
  for i in range(sizes.pop()):
    out[f'self_attend_{i}'] = flax.traverse_util.unflatten_dict(
      {path: np.asarray(v)[i] for path, v in flat.items()}
    )
  return out


def stack_layers(variables):
  """Unrolled-layout variables -> scanned layout (exact; others unchanged)."""
  return _map_encoders(_plain(variables), _stack_encoder)


def unstack_layers(variables):
  """Scanned-layout variables -> unrolled layout (exact; others unchanged)."""
  return _map_encoders(_plain(variables), _unstack_encoder)


def layout_of(variables) -> Optional[str]:
  """'scanned', 'unrolled', or None where the tree holds no latent stack."""
  found = []

  def look(encoder):
    if SCANNED in encoder:
      found.append('scanned')
    elif _layer_indices(encoder):
      found.append('unrolled')
    return encoder

  _map_encoders(_plain(variables), look)
  return found[0] if found else None


def match_layout(variables, like):
  """`variables` in the layout of `like` (a tree, arrays or shapes)."""
  want, have = layout_of(like), layout_of(variables)
  if want is None or have is None or want == have:
    return variables
  return (
    stack_layers(variables) if want == 'scanned' else unstack_layers(variables)
  )


def match_layout_flat(
  flat: Dict[Tuple[str, ...], Any], like
) -> Dict[Tuple[str, ...], Any]:
  """`match_layout` for a dict keyed by path tuples."""
  tree = flax.traverse_util.unflatten_dict(flat)
  want, have = layout_of(like), layout_of(tree)
  if want is None or have is None or want == have:
    return flat
  return flax.traverse_util.flatten_dict(match_layout(tree, like))
