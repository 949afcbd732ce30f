"""Which axis of each train-state array is split over the mesh's 'fsdp' axis.

Why a rule per parameter (as big_vision's `sharding_rules`, MaxText's logical
axes and Flax's `logical_axis_rules` do) instead of one rule by size: the
axis to split is a property of what the array is. A Dense kernel is split
on its input features, the same axis for every layer, so the all-gather
before each matmul is the same shape everywhere; a LayerNorm's scale is a
few hundred numbers read by every token, not worth a collective. The table
is ordered: the first pattern that matches the array's path names its
candidate specs, tried in order until one whose axes divide the fsdp size.

Paths are '/'-joined pytree keys (`params/encoder/self_attend_0/mlp/dense1/
kernel`). Optimizer moments live under paths that end with their
parameter's path (`opt_state/1/0/mu/encoder/.../kernel`), so the same
`re.search` gives them their parameter's layout. Specs are written for an
array's trailing axes: a stack of scanned layers (one more leading axis)
keeps its layer axis whole and splits each layer as the unstacked one.
"""

import re
from typing import Any, List, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

FSDP_AXIS = 'fsdp'
_F = FSDP_AXIS

# (pattern on the path, candidate specs for the trailing axes). An empty
# tuple means replicated by choice.
RULES: Tuple[Tuple[str, Tuple[P, ...]], ...] = (
  # Norm scales/biases and BatchNorm statistics: small, read by every row.
  (r'norm[^/]*/[^/]+$', ()),
  # Biases: one number per output feature.
  (r'/bias$', ()),
  # Conv kernels [h, w, in, out]: output channels, else input channels.
  (r'conv[^/]*/kernel$', (P(None, None, None, _F), P(None, None, _F, None))),
  # Dense kernels [in, out]: input features (the model width, a multiple
  # of 8 in every preset), else the output features.
  (r'/kernel$', (P(_F, None), P(None, _F))),
  # Token embeddings [vocab, channels] and position embeddings / trainable
  # queries [positions, channels]: the vocab or position axis, else the
  # channels (262 byte ids split only in two).
  (r'(embedding|embeddings|position_embeddings)$', (P(_F, None), P(None, _F))),
  # The latent array [latents, channels]: the channel axis.
  (r'latents$', (P(None, _F), P(_F, None))),
  # Learned padding and mask tokens [1 or n, channels]: channels.
  (r'(padding|mask_token)$', (P(None, _F),)),
)


def path_name(path) -> str:
  """'a/b/c' of a pytree key path (dict keys, attributes, indices)."""
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def _fits(shape: Sequence[int], spec: P, fsdp: int) -> Optional[P]:
  """`spec` right-aligned to `shape` if every split axis divides, else None."""
  if len(spec) > len(shape):
    return None
  full = (None,) * (len(shape) - len(spec)) + tuple(spec)
  for dim, axis in zip(shape, full):
    if axis is not None and dim % fsdp:
      return None
  return P(*full)


def _largest_dividing_axis(shape: Sequence[int], fsdp: int) -> Optional[P]:
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = _F
      return P(*spec)
  return None


def leaf_spec(
  name: str, shape: Sequence[int], fsdp: int, min_size: int = 0
) -> Tuple[P, bool]:
  """(spec, split as wanted) of the array at path `name`.

  Replicated when fsdp is 1, when the array has fewer than `min_size`
  elements or is a scalar, or when its rule says so. An array the table
  does not name is split on its largest axis that fsdp divides. The flag is
  False where a split was wanted but no candidate axis divides fsdp (the
  array stays replicated; the runner reports these).
  """
  size = int(np.prod(shape, dtype=np.int64))
  if fsdp == 1 or not shape or size < max(min_size, 1):
    return P(), True
  for pattern, candidates in RULES:
    if re.search(pattern, name):
      if not candidates:
        return P(), True
      for spec in candidates:
        fitted = _fits(shape, spec, fsdp)
        if fitted is not None:
          return fitted, True
      return P(), False
  fallback = _largest_dividing_axis(shape, fsdp)
  return (fallback, True) if fallback is not None else (P(), False)


def state_specs(
  abstract_state: Any, fsdp: int, min_size: int = 0
) -> Tuple[Any, List[str]]:
  """(a PartitionSpec per leaf, the paths that could not be split)."""
  unsplit = []

  def one(path, x):
    name = path_name(path)
    spec, ok = leaf_spec(name, x.shape, fsdp, min_size)
    if not ok:
      unsplit.append(f'{name} {tuple(x.shape)}')
    return spec

  specs = jax.tree_util.tree_map_with_path(one, abstract_state)
  return specs, unsplit


def shard_shape(
  shape: Sequence[int], spec: P, axis_sizes: dict
) -> Tuple[int, ...]:
  """The per-device block of an array of `shape` laid out as `spec`."""
  out = list(shape)
  for i, axes in enumerate(tuple(spec)):
    if axes is None:
      continue
    for axis in (axes,) if isinstance(axes, str) else axes:
      out[i] //= axis_sizes[axis]
  return tuple(out)


def bytes_per_device(abstract_state: Any, specs: Any, axis_sizes: dict) -> int:
  """Bytes of the state on each device (every device holds the same: the
  rules split only axes that divide evenly), from shapes alone."""
  leaves = jax.tree_util.tree_leaves(abstract_state)
  spec_leaves = jax.tree_util.tree_leaves(
    specs, is_leaf=lambda s: isinstance(s, P)
  )
  total = 0
  for x, spec in zip(leaves, spec_leaves, strict=True):
    block = shard_shape(x.shape, spec, axis_sizes)
    total += int(np.prod(block, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total
