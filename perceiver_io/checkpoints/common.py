"""Shared helpers for checkpoint import: checking a converted tree."""

import json
from typing import Any, Dict, Sequence, Tuple

import flax
import jax
import numpy as np

from perceiver_io.checkpoints.layout import match_layout_flat
from perceiver_io.model import abstract_variables
from perceiver_io.model import build_model

Path = Tuple[str, ...]


class CheckpointError(ValueError):
  """A checkpoint does not match the model it is loaded into."""


def one_line(error: BaseException, limit: int = 300) -> str:
  """The first line of a library's error, bounded: Orbax, TensorStore and
  JAX errors run to many lines, and the project's errors are one."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= limit else text[: limit - 3] + '...'


def read_json_file(path: str, what: str):
  """A JSON file's value; bad bytes or bad JSON are one CheckpointError
  naming the file (UTF-8, long integers and deep nesting included)."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return json.loads(data.decode('utf-8-sig'))
  except UnicodeDecodeError as e:
    raise CheckpointError(
      f'{path} is corrupt: not UTF-8 text (byte {e.start}); expected {what}.'
    ) from None
  except json.JSONDecodeError as e:
    raise CheckpointError(
      f'{path} is corrupt: not valid JSON ({e.msg} at line {e.lineno} '
      f'column {e.colno}); expected {what}.'
    ) from None
  except (ValueError, RecursionError) as e:  # Too long an int, too deep.
    raise CheckpointError(
      f'{path} is corrupt: {one_line(e) if str(e) else "nested too deeply"}; '
      f'expected {what}.'
    ) from None


# Sizes in a model config (sequence lengths, vocabularies, image sides) are
# below this; `abstract_variables` makes example inputs of those sizes, so a
# damaged file claiming 2^40 must be refused before, not run out of memory.
MAX_CONFIG_NUMBER = 2**24


def _first_huge_number(tree: Any, where: str = 'config'):
  """(dotted field, value) of the first number over MAX_CONFIG_NUMBER."""
  if isinstance(tree, dict):
    items = tree.items()
  elif isinstance(tree, (list, tuple)):
    items = enumerate(tree)
  else:
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
      if abs(tree) > MAX_CONFIG_NUMBER:
        return where, tree
    return None
  for key, value in items:
    found = _first_huge_number(value, f'{where}.{key}')
    if found:
      return found
  return None


def build_from_file(config: Any, path: str):
  """(model, its abstract variables) for a config read from `path`; a
  config that does not describe a model is one CheckpointError naming the
  file."""
  if not isinstance(config, dict):
    raise CheckpointError(
      f'{path} holds a JSON {type(config).__name__}, expected an object '
      '(a model config).'
    )
  too_big = _first_huge_number(config)
  if too_big is not None:
    field, value = too_big
    shown = f'{value:.3g}' if isinstance(value, float) else str(value)
    if len(shown) > 20:
      shown = f'a {len(shown)}-digit number'
    raise CheckpointError(
      f'{path}: {field:.100} = {shown} is far beyond any model size (at '
      f'most {MAX_CONFIG_NUMBER}); the file is corrupt.'
    )
  try:
    model = build_model(config)
    abstract = abstract_variables(model)  # Fails on nonsense sizes.
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
      f'{path} does not describe a model that can be built '
      f'({type(e).__name__}: {one_line(e)}).'
    ) from None
  return model, abstract


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


def check_and_unflatten(
  model, flat: Dict[Path, np.ndarray], source: str, abstract=None
):
  """Checks `flat` against the model's variable shapes; returns variables.

  Every error names the offending parameters with their shapes, the first
  few of each kind and a count of all: missing ones, extra ones (present
  in the file but unused by the model) and shape mismatches. `abstract`:
  the model's abstract variables when the caller has them already. The
  latent stack is converted to the model's layout (`scan_layers`) first, so
  every checkpoint loads into either layout.
  """
  if abstract is None:
    abstract = abstract_variables(model)
  try:
    flat = match_layout_flat(flat, abstract)
  except ValueError as e:
    raise CheckpointError(f'{source}: {e}') from None
  expected = flax.traverse_util.flatten_dict(abstract)
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
  try:
    variables = {
      k: np.asarray(v, dtype=expected[k].dtype) for k, v in flat.items()
    }
  except (TypeError, ValueError, OverflowError) as e:
    raise CheckpointError(
      f'{source} holds a parameter that is not a number array ({one_line(e)}).'
    ) from None
  return jax.tree_util.tree_map(
    np.asarray, flax.core.unfreeze(flax.traverse_util.unflatten_dict(variables))
  )
