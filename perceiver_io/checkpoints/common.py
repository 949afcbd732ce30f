"""Shared helpers for checkpoint import: checking a converted tree."""

from typing import Dict, Tuple

import flax
import jax
import numpy as np

from perceiver_io.model import abstract_variables

Path = Tuple[str, ...]


class CheckpointError(ValueError):
  """A checkpoint does not match the model it is loaded into."""


def check_and_unflatten(model, flat: Dict[Path, np.ndarray], source: str):
  """Checks `flat` against the model's variable shapes; returns variables.

  Every error lists the offending parameter names: missing ones, extra ones
  (present in the file but unused by the model) and shape mismatches.
  """
  expected = flax.traverse_util.flatten_dict(abstract_variables(model))
  missing = sorted('/'.join(k) for k in expected if k not in flat)
  extra = sorted('/'.join(k) for k in flat if k not in expected)
  wrong = sorted(f'{"/".join(k)}: file {tuple(np.shape(v))} vs model '
                 f'{tuple(expected[k].shape)}'
                 for k, v in flat.items()
                 if k in expected and tuple(np.shape(v)) != expected[k].shape)
  problems = []
  if missing:
    problems.append(f'missing from {source}: {missing}')
  if extra:
    problems.append(f'not used by the model: {extra}')
  if wrong:
    problems.append(f'shape mismatch: {wrong}')
  if problems:
    raise CheckpointError('checkpoint does not match the model config; ' +
                          '; '.join(problems))
  variables = {k: np.asarray(v, dtype=expected[k].dtype)
               for k, v in flat.items()}
  return jax.tree_util.tree_map(
      np.asarray, flax.core.unfreeze(flax.traverse_util.unflatten_dict(
          variables)))
