"""`ClipSource`: what every clip source returns (sources.py, tfds_source.py)."""

import dataclasses
from typing import Callable, Dict, List

import numpy as np


@dataclasses.dataclass
class ClipSource:
  """The clips of one split (this process's share), readable by index.

  `keys` name each clip (a file path, `synthetic:<index>`, or a TFDS
  example), `labels` are their labels; `summary` is one log line.
  """

  keys: List[str]
  labels: List[int]
  label_names: List[str]
  num_classes: int
  summary: str
  read: Callable[[int], Dict[str, np.ndarray]]

  def __len__(self) -> int:
    return len(self.keys)

  def __getitem__(self, i: int) -> Dict[str, object]:
    if not -len(self) <= i < len(self):
      raise IndexError(f'clip {i} of a source of {len(self)} clips.')
    i %= len(self)
    return dict(self.read(i), label=self.labels[i])
