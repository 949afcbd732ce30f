"""Shared helpers for checkpoint import: checking a converted tree."""

from typing import Dict, Sequence, Tuple

import flax
import jax
import numpy as np

from perceiver_io.model import abstract_variables

Path = Tuple[str, ...]


class CheckpointError(ValueError):
  """A checkpoint does not match the model it is loaded into."""


# Parameters named per kind of mismatch; the rest are counted. A checkpoint
# of another model size mismatches every array (hundreds of names).
MAX_NAMED = 5


def _shape(value) -> Tuple[int, ...]:
  shape = value.shape if hasattr(value, 'shape') else np.shape(value)
  return tuple(int(d) for d in shape)


def summarise(what: str, entries: Sequence[str], limit: int = MAX_NAMED) -> str:
  """'<n> <what>: first `limit` entries, and <m> more' (one line, bounded).

  Why: the whole list of a mismatched checkpoint ran to 26 KB on one line;
  the count and the first few names say what is wrong.
  """
  shown = ', '.join(entries[:limit])
  more = f', and {len(entries) - limit} more' if len(entries) > limit else ''
  return f'{len(entries)} {what}: {shown}{more}'


def check_and_unflatten(model, flat: Dict[Path, np.ndarray], source: str):
  """Checks `flat` against the model's variable shapes; returns variables.

  Every error names the offending parameters with their shapes, the first
  few of each kind and a count of all: missing ones, extra ones (present
  in the file but unused by the model) and shape mismatches.
  """
  expected = flax.traverse_util.flatten_dict(abstract_variables(model))
  missing = sorted(
    f'{"/".join(k)} {_shape(v)}' for k, v in expected.items() if k not in flat
  )
  extra = sorted(
    f'{"/".join(k)} {_shape(v)}' for k, v in flat.items() if k not in expected
  )
  wrong = sorted(
    f'{"/".join(k)}: file {_shape(v)} vs model {_shape(expected[k])}'
    for k, v in flat.items()
    if k in expected and _shape(v) != _shape(expected[k])
  )
  problems = []
  if missing:
    problems.append(summarise(f'missing from {source}', missing))
  if extra:
    problems.append(summarise('not used by the model', extra))
  if wrong:
    problems.append(summarise('shape mismatches', wrong))
  if problems:
    hint = (
      ' Is the checkpoint of another model size? Load it with its '
      'own preset or config.'
      if len(wrong) > MAX_NAMED
      else ''
    )
    raise CheckpointError(
      'checkpoint does not match the model config; '
      + '; '.join(problems)
      + '.'
      + hint
    )
  variables = {
    k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()
  }
  return jax.tree_util.tree_map(
    np.asarray, flax.core.unfreeze(flax.traverse_util.unflatten_dict(variables))
  )
