"""Text and label fields: what the local and TFDS sources share.

Why a module of its own: both kinds of source name their text field(s) the
same way (one field or a pair) and map `classes` to label ids the same way, and
neither should import the other to get that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

UNLABELED = -1  # GLUE test splits (TFDS) and files read with label_field=False.


def _as_tuple(fields: Any) -> tuple[Any, ...] | None:
  if fields is None:
    return None
  if isinstance(fields, (str, int)):
    return (fields,)
  fields = tuple(fields)
  if len(fields) not in (1, 2):
    raise ValueError(
      f'text_fields must name one text or a pair, got {fields!r}.'
    )
  return fields


def _class_map(
  classes: Any,
) -> tuple[dict[str, int] | None, tuple[str, ...] | None, int | None]:
  """Returns (label string -> id, class names, num_classes) for `classes`."""
  if classes is None:
    return None, None, None
  if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
    names = tuple(str(i) for i in range(int(classes)))
  elif isinstance(classes, Mapping):
    ids = sorted(set(int(v) for v in classes.values()))
    if ids != list(range(len(ids))):
      raise ValueError(
        f'classes mapping must use ids 0..n-1, got {sorted(classes.values())}.'
      )
    mapping = {str(k).strip(): int(v) for k, v in classes.items()}
    names = tuple(next(k for k, v in mapping.items() if v == i) for i in ids)
    return mapping, names, len(ids)
  elif isinstance(classes, Sequence) and not isinstance(classes, str):
    names = tuple(str(c).strip() for c in classes)
  else:
    raise ValueError(
      f'classes must be None, an int, a list of names or a dict, got {classes!r}.'
    )
  if len(set(names)) != len(names) or not names:
    raise ValueError(f'classes must be non-empty and unique, got {names!r}.')
  return {n: i for i, n in enumerate(names)}, names, len(names)
