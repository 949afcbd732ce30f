"""Which clip files make a split, and their labels: class folders or a CSV.

Why a separate step: listing is cheap and decides the label of every clip
before anything is decoded, so a wrong class name or an empty folder stops
the run at once with one line, before minutes of decoding.

* a folder: `<root>/<split>/<class>/<clip>` when `<root>` has split folders
  (train/, validation/ or val/, test/), else `<root>/<class>/<clip>`; the
  classes are the sorted class folder names of every split, so train and
  test agree on the label of a class.
* a CSV: rows `path,label` (an optional header `path,label[,split]`), paths
  relative to the CSV; with a `split` column a split takes its rows. Labels
  are class names (the classes: their sorted set over all rows), or all
  integers (class indices).

`label_names` (a list, or a text file with one name per line) fixes the
classes and their order; then a label outside it is an error.

A folder without split folders, or a CSV without a `split` column, is the
same clips for every split (as image folders are): held-out evaluation
needs split folders, a split column or a second spec.
"""

import csv
import io
import os
from typing import List, Optional, Sequence, Tuple, Union

from perceiver_io.data.image.sources import split_folder
from perceiver_io.data.video.decoding import VIDEO_EXTENSIONS

_SPLIT_NAMES = ('train', 'validation', 'val', 'test', 'eval')
Listing = Tuple[List[str], List[int], List[str]]  # paths, labels, names.


def resolve_label_names(
  label_names: Union[None, str, Sequence[str]],
) -> Optional[List[str]]:
  if label_names is None:
    return None
  if isinstance(label_names, (str, os.PathLike)):
    path = os.fspath(label_names)
    if not os.path.isfile(path):
      raise FileNotFoundError(
        f'label_names file {path} not found; expected a text file with one '
        'class name per line.'
      )
    with open(path, encoding='utf-8-sig') as f:
      names = [line.strip() for line in f if line.strip()]
  else:
    names = [str(name) for name in label_names]
  if not names or len(set(names)) != len(names):
    raise ValueError(
      f'label_names must be a non-empty list of unique names; got {len(names)}'
      f' names, {len(names) - len(set(names))} repeated.'
    )
  return names


def _unknown_label(where: str, label: str, names: Sequence[str]) -> ValueError:
  shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
  return ValueError(
    f'{where}: label {label!r} is not one of the {len(names)} classes '
    f'({shown}); fix the label or pass the full class list as label_names.'
  )


def _videos_in(folder: str) -> List[str]:
  return sorted(
    name
    for name in os.listdir(folder)
    if name.lower().endswith(VIDEO_EXTENSIONS)
    and os.path.isfile(os.path.join(folder, name))
  )


def _class_folders(folder: str) -> List[str]:
  return sorted(
    d
    for d in os.listdir(folder)
    if os.path.isdir(os.path.join(folder, d)) and not d.startswith('.')
  )


def list_folder(
  root: str, split: str, label_names: Optional[List[str]]
) -> Listing:
  """(paths, labels, class names) of a class-folder tree (module docstring)."""
  folder = split_folder(root, split)
  classes = _class_folders(folder)
  if label_names is None:
    splits = [
      os.path.join(root, s)
      for s in _SPLIT_NAMES
      if os.path.isdir(os.path.join(root, s))
    ] or [folder]
    label_names = sorted({c for s in splits for c in _class_folders(s)})
  index = {name: i for i, name in enumerate(label_names)}
  paths, labels = [], []
  for name in classes:
    if name not in index:
      raise _unknown_label(os.path.join(folder, name), name, label_names)
    for clip in _videos_in(os.path.join(folder, name)):
      paths.append(os.path.join(folder, name, clip))
      labels.append(index[name])
  if not paths:
    raise ValueError(
      f'{folder}: no clips found; expected <class>/<clip> files '
      f'({"/".join(VIDEO_EXTENSIONS)}) in class folders'
      f'{" (it has no class folders)" if not classes else ""}.'
    )
  return paths, labels, label_names


def list_csv(
  path: str, split: str, label_names: Optional[List[str]]
) -> Listing:
  """(paths, labels, class names) of a `path,label[,split]` CSV."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise ValueError(
      f'{path} is not UTF-8 text (byte {e.start}); save it as UTF-8.'
    ) from None
  try:
    rows = [
      r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)
    ]
  except csv.Error as e:
    raise ValueError(f'{path}: malformed CSV ({e}).') from None
  header = [c.strip().lower() for c in rows[0]] if rows else []
  has_header = header[:2] == ['path', 'label']
  body = rows[1:] if has_header else rows
  if not body:
    raise ValueError(
      f'{path} lists no clips; expected rows of path,label (paths relative '
      'to the CSV).'
    )
  split_column = header.index('split') if 'split' in header else None
  for n, row in enumerate(body, start=2 if has_header else 1):
    wanted = 2 if split_column is None else split_column + 1
    if len(row) < wanted or not row[0].strip() or not row[1].strip():
      raise ValueError(
        f'{path}, row {n}: expected path,label'
        f'{",split" if split_column is not None else ""}; got {row}.'
      )
  values = [row[1].strip() for row in body]
  integers = all(v.isdigit() for v in values)
  if label_names is None:
    if integers:
      label_names = [str(i) for i in range(max(int(v) for v in values) + 1)]
    else:
      label_names = sorted(set(values))
  index = {name: i for i, name in enumerate(label_names)}
  if split_column is not None:
    present = sorted({row[split_column].strip() for row in body})
    body = [row for row in body if row[split_column].strip() == split]
    if not body:
      raise ValueError(
        f'{path} has no rows of split {split!r}; its splits are {present}.'
      )
  root = os.path.dirname(os.path.abspath(path))
  paths, labels = [], []
  for row in body:
    label = row[1].strip()
    if integers and label.isdigit() and int(label) < len(label_names):
      labels.append(int(label))
    elif label in index:
      labels.append(index[label])
    else:
      raise _unknown_label(f'{path}, {row[0].strip()}', label, label_names)
    paths.append(os.path.join(root, row[0].strip()))
  return paths, labels, label_names
