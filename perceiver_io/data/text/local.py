"""Local text sources: TSV / CSV / JSONL tables, aclImdb folders, plain text.

Why this module exists: users bring GLUE and IMDB data as files far more often
than as prepared TFDS datasets (TFDS needs a network to prepare them), and a
reader that silently drops a short row or a label outside the class list
gives plausible but wrong scores. Every row is read into memory as raw bytes,
and bad data is one error naming the file and row.

Sources (the part of the ``source`` string after the kind):

* ``tsv:PATH`` (GLUE style: tab separated, quoting off, UTF-8 with or without
  BOM), ``csv:PATH`` (standard quoted CSV), ``jsonl:PATH`` (one JSON object a
  line). The text field(s) and the label field are named by `text_fields` /
  `label_field` (column names, or integer column indices for files without a
  header); common GLUE / IMDB column names are detected when they are None.
  With several processes a split is read by byte blocks (`line_tables`;
  a CSV whose quotes break RFC 4180 is read whole by each).
* ``aclimdb:ROOT``: the extracted ``aclImdb`` folder, read as
  ``ROOT/<split>/{neg,pos}/*.txt`` (labels neg=0, pos=1 as in TFDS). The
  folders are listed up front (rows, labels, order); a review file is opened
  only when its row is taken, so each process reads only its block's files,
  and its statistics (invalid UTF-8, truncation) count only those rows.
* ``text:GLOB`` (MLM only): plain text files; every non-empty line is one
  document. Several processes split the files by bytes (`text_files`).

A PATH or GLOB may contain ``{split}``, which is replaced by the split name,
e.g. ``csv:/data/imdb/{split}.csv`` with ``split='test'``. Without it, the
split name is free (it only carries the slice).

Split strings follow TFDS: ``name``, ``name[a:b]`` with ints (negative counts
from the end) or percents (``train[:10%]``, rounded to the closest example),
joined with ``+`` (``train[:100]+train[-100:]``). Local sources apply them to
the list of rows, in file order (see `parse_split`); TFDS sources pass the
string to TFDS.

Empty texts and invalid UTF-8 are kept (as bytes) and counted.
"""

from __future__ import annotations

import collections.abc
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
from typing import Any

import numpy as np

from perceiver_io.data.text.fields import _as_tuple
from perceiver_io.data.text.fields import _class_map
from perceiver_io.data.text.fields import UNLABELED
from perceiver_io.data.text import text_files

# Column names tried, in order, when `text_fields` / `label_field` are None for
# a local file (GLUE TSVs in original and HF layout, IMDB CSVs).
_KNOWN_TEXT_COLUMNS = (
  ('sentence1', 'sentence2'),
  ('#1 String', '#2 String'),
  ('question1', 'question2'),
  ('question', 'sentence'),
  ('premise', 'hypothesis'),
  ('sentence',),
  ('text',),
  ('review',),
)
_KNOWN_LABEL_COLUMNS = (
  'label',
  'Quality',
  'is_duplicate',
  'score',
  'gold_label',
  'sentiment',
)


_LINE_BREAK = re.compile('\r\n|\r|\n')

# -------------------------------------------------------------- split syntax
_PART_RE = re.compile(
  r'^\s*(?P<name>[^\[\]+:]+?)\s*(?:\[\s*(?P<start>-?\d+%?)?\s*:\s*(?P<stop>-?\d+%?)?\s*\])?\s*$'
)


@dataclasses.dataclass(frozen=True)
class SplitPart:
  """One ``name[start:stop]`` term of a split string; bounds are raw strings."""

  name: str
  start: str | None
  stop: str | None

  def indices(self, num_rows: int) -> range:
    """The row indices this term selects from `num_rows` rows."""
    return range(num_rows)[
      slice(_bound(self.start, num_rows), _bound(self.stop, num_rows))
    ]


def _bound(text: str | None, num_rows: int) -> int | None:
  if text is None:
    return None
  if text.endswith('%'):
    percent = int(text[:-1])
    if abs(percent) > 100:
      raise ValueError(f'split percent {text} is outside [-100%, 100%].')
    value = int(round(abs(percent) * num_rows / 100))
    return -value if percent < 0 else value
  return int(text)


def parse_split(split: str) -> list[SplitPart]:
  """Parses a TFDS-style split string for local files.

  Grammar: ``part ('+' part)*``; ``part = name ['[' [bound] ':' [bound] ']']``;
  ``bound = [-]int['%']``. Ints are row positions (negative from the end,
  Python slice rules); percents are rounded to the closest row.

  Args:
    split: e.g. ``'train'``, ``'train[:100]+train[-100:]'``, ``'dev[10%:]'``.

  Returns:
    The parts, in order.
  """
  if not isinstance(split, str) or not split.strip():
    raise ValueError(
      f'split must be a non-empty string like "train" or "train[:100]", '
      f'got {split!r}.'
    )
  parts = []
  for text in split.split('+'):
    match = _PART_RE.match(text)
    if not match:
      raise ValueError(
        f'cannot parse split term {text!r} of {split!r}; expected name, name[a:b], '
        'name[:10%] or several joined with "+" (e.g. "train[:100]+train[-100:]").'
      )
    parts.append(SplitPart(match['name'], match['start'], match['stop']))
  return parts


# ------------------------------------------------------------- local reading
@dataclasses.dataclass
class _Rows:
  """Examples read into memory: texts as raw bytes, labels as an array.

  aclImdb rows from `_load_local` hold `_ReviewFiles` (each file read when
  its row is indexed) and leave `num_invalid_utf8` at 0: only rows that are
  read can be counted (`read_local_rows` reads and counts every row).
  """

  text_a: list[bytes]
  text_b: list[bytes] | None
  labels: np.ndarray
  num_invalid_utf8: int = 0


def _field_bytes(value: Any, where: str, field: Any) -> tuple[bytes, bool]:
  """A text field as raw bytes and whether it was invalid UTF-8."""
  if isinstance(value, bytes):
    try:
      value.decode('utf-8')
      return value, False
    except UnicodeDecodeError:
      return value, True
  if not isinstance(value, str):
    raise ValueError(
      f'{where}: text field {field!r} is {type(value).__name__} '
      f'({value!r:.60}), expected a string.'
    )
  try:
    return value.encode('utf-8'), False
  except UnicodeEncodeError:  # Undecodable bytes kept by surrogateescape.
    try:
      return value.encode('utf-8', 'surrogateescape'), True
    except UnicodeEncodeError:  # A lone surrogate from a JSON \ud800 escape.
      return value.encode('utf-8', 'replace'), True


def _read_text(path: str) -> str:
  """File text; undecodable bytes survive as surrogates, a BOM is dropped."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'data file {path!r} does not exist (from the source path).'
    )
  with open(path, 'rb') as f:
    data = f.read()
  return data.decode('utf-8-sig', errors='surrogateescape')


def _json_line(line: str, where: str) -> Any:
  """One JSON value; any failure is one line naming the file and line.

  Why more than JSONDecodeError: Python refuses integers of over 4300
  digits with a plain ValueError and deep nesting with RecursionError.
  """
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{where}: not valid JSON ({e.msg}).') from None
  except ValueError as e:  # An integer too long to convert.
    raise ValueError(f'{where}: not usable JSON ({e}).') from None
  except RecursionError:
    raise ValueError(f'{where}: JSON nested too deeply.') from None


@contextlib.contextmanager
def _big_csv_fields():
  """Allows long CSV fields (long reviews) without leaking the global limit."""
  old = csv.field_size_limit()
  csv.field_size_limit(2**31 - 1)
  try:
    yield
  finally:
    csv.field_size_limit(old)


def _table_records(path: str, kind: str, has_header: bool, text=None):
  """Reads a TSV/CSV/JSONL file (or `text`, part of one, with `path` naming
  it in messages): (columns or None, [(row, line, record)])."""
  text = _read_text(path) if text is None else text
  if kind == 'jsonl':
    records = []
    # Line breaks as the byte readers (text_files) cut them: not the other
    # characters str.splitlines breaks at, which JSON strings may hold raw.
    for line_no, line in enumerate(_LINE_BREAK.split(text), start=1):
      if not line.strip():
        continue
      obj = _json_line(line, f'{path}, line {line_no}')
      if not isinstance(obj, dict):
        raise ValueError(
          f'{path}, line {line_no}: expected a JSON object, got '
          f'{type(obj).__name__}.'
        )
      records.append((len(records) + 1, line_no, obj))
    if not records:
      raise ValueError(f'{path} is empty: expected one JSON object a line.')
    return None, records
  if kind == 'tsv':
    reader = csv.reader(
      io.StringIO(text, newline=''), delimiter='\t', quoting=csv.QUOTE_NONE
    )
  else:
    reader = csv.reader(io.StringIO(text, newline=''))
  records, columns = [], None
  with _big_csv_fields():
    first_line = 1
    try:
      for fields in reader:
        line_no, first_line = first_line, reader.line_num + 1
        if not fields or (len(fields) == 1 and not fields[0].strip()):
          continue  # Blank line.
        if has_header and columns is None:
          columns = [c.strip() for c in fields]
          continue
        records.append((len(records) + 1, line_no, fields))
    except csv.Error as e:
      raise ValueError(
        f'{path}, line {reader.line_num}: malformed {kind.upper()} ({e}).'
      ) from None
  if has_header and columns is None:
    raise ValueError(f'{path} is empty: expected a header line and rows.')
  return columns, records


def _guess_fields(columns, text_fields, label_field, path):
  """Resolves None text/label fields from known GLUE / IMDB column names."""
  if text_fields is None:
    if columns is None:
      raise ValueError(
        f'{path} has no header line; pass text_fields (column indices, '
        'e.g. (3,) for CoLA) and label_field.'
      )
    text_fields = next(
      (c for c in _KNOWN_TEXT_COLUMNS if all(x in columns for x in c)), None
    )
    if text_fields is None:
      raise ValueError(
        f'{path}: cannot guess the text column(s) from {columns}; pass '
        'text_fields=("name",) or ("first", "second").'
      )
  if label_field is None and columns is not None:
    label_field = next((c for c in _KNOWN_LABEL_COLUMNS if c in columns), None)
    if label_field is None:
      raise ValueError(
        f'{path}: cannot guess the label column from {columns}; pass '
        'label_field="name" (or label_field=False for unlabelled data).'
      )
  return text_fields, label_field


def _make_getter(columns, field, path, what):
  """Returns record -> value for a column name or index, checking it exists."""
  if columns is None:  # JSONL (dict records) or header-less tables (indices).
    return lambda record: record[field]
  if isinstance(field, (int, np.integer)) and not isinstance(field, bool):
    return lambda record: record[int(field)]
  if field not in columns:
    raise ValueError(
      f'{path}: {what} column {field!r} is not in the header (line 1) '
      f'{columns}; pass {"label_field" if what == "label" else "text_fields"} '
      'with one of them.'
    )
  index = columns.index(field)
  return lambda record: record[index]


# Labels become float32 (regression) or int32 class ids in the batches.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_CLASS_ID = 2**31 - 1


def _convert_label(raw, task, class_map, where):
  """A label value -> int class id or float; raises naming the row."""
  if task == 'regression':
    try:
      value = float(raw)
    except (TypeError, ValueError, OverflowError):
      raise ValueError(
        f'{where}: label {raw!r:.60} is not a number (task="regression").'
      ) from None
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
      raise ValueError(
        f'{where}: label {raw!r:.60} is not a finite float32 number.'
      )
    return value
  if isinstance(raw, float) and raw.is_integer():
    raw = int(raw)
  key = str(raw).strip()
  if class_map is not None:
    if key not in class_map:
      raise ValueError(
        f'{where}: label {raw!r} is not one of the classes {list(class_map)}.'
      )
    return class_map[key]
  if not re.fullmatch(r'\d+', key):
    raise ValueError(
      f'{where}: label {raw!r:.60} is not a class id >= 0; pass classes=[...] '
      'with the label names (or task="regression" for numbers).'
    )
  if len(key.lstrip('0')) > 9 or int(key) > _MAX_CLASS_ID:
    raise ValueError(
      f'{where}: label {key:.60} is too large for a class id '
      f'(at most {_MAX_CLASS_ID}).'
    )
  return int(key)


def _read_table_rows(
  path,
  kind,
  text_fields,
  label_field,
  task,
  class_map,
  has_header,
  text=None,
  drop_first=False,
):
  """Every row of one TSV/CSV/JSONL file as (text_a, text_b, label) lists.

  `text`: part of the file instead (`line_tables`); `drop_first`: its first
  JSONL record is the file's first, there only to guess the field names.
  """
  columns, records = _table_records(path, kind, has_header, text)
  known = columns
  if kind == 'jsonl' and records:
    known = list(records[0][2].keys())  # Guess names from the first object.
  text_fields, label_field = _guess_fields(
    known, text_fields, label_field, path
  )
  records = records[1:] if drop_first else records
  if label_field is None:
    raise ValueError(
      f'{path} has no header line; pass label_field (a column index) or '
      'label_field=False for unlabelled data.'
    )
  getters = [_make_getter(columns, f, path, 'text') for f in text_fields]
  label_getter = (
    None
    if label_field is False
    else _make_getter(columns, label_field, path, 'label')
  )
  text_a, text_b, labels, invalid = (
    [],
    [] if len(text_fields) == 2 else None,
    [],
    0,
  )
  for row, line, record in records:
    where = f'{path}, row {row} (line {line})'
    if columns is not None and len(record) != len(columns):
      why = (
        'with quoting off, a tab inside a text breaks the row'
        if kind == 'tsv'
        else 'a comma inside an unquoted text, or a quote (") left open, breaks the row'
      )
      raise ValueError(
        f'{where}: has {len(record)} fields but the header has '
        f'{len(columns)} ({columns}); {why}.'
      )
    values = []
    for field, getter in zip(text_fields, getters):
      try:
        values.append(getter(record))
      except (KeyError, IndexError):
        raise ValueError(f'{where}: missing text field {field!r}.') from None
    encoded = [_field_bytes(v, where, f) for v, f in zip(values, text_fields)]
    invalid += any(bad for _, bad in encoded)
    text_a.append(encoded[0][0])
    if text_b is not None:
      text_b.append(encoded[1][0])
    if label_getter is None:
      labels.append(UNLABELED)
      continue
    try:
      raw = label_getter(record)
    except (KeyError, IndexError):
      raise ValueError(
        f'{where}: missing label field {label_field!r}.'
      ) from None
    labels.append(_convert_label(raw, task, class_map, where))
  return (
    _Rows(
      text_a,
      text_b,
      np.asarray(labels, np.float32 if task == 'regression' else np.int64),
      invalid,
    ),
    text_fields,
    label_field,
  )


class _ReviewFiles(collections.abc.Sequence):
  """Review texts read from their files when first indexed (then kept).

  Why: listing the aclImdb folders gives every row and label; a process
  then opens only the files of the rows it takes (`pipeline` slices its
  block), so hosts do not each read the whole split.
  """

  def __init__(self, paths: list[str]):
    self.paths = paths
    self._texts: dict[int, bytes] = {}

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(len(self))[index]]
    index = range(len(self))[index]
    if index not in self._texts:
      with open(self.paths[index], 'rb') as f:
        self._texts[index] = f.read()
    return self._texts[index]


def _read_aclimdb_rows(root: str, name: str) -> _Rows:
  """``root/<name>/{neg,pos}/<id>_<rating>.txt`` in (id, label) order.

  Only the folders are listed: texts are `_ReviewFiles`, read when indexed.
  """
  folder = os.path.join(root, name)
  dirs = [os.path.join(folder, 'neg'), os.path.join(folder, 'pos')]
  if not any(os.path.isdir(d) for d in dirs):
    raise FileNotFoundError(
      f'aclImdb layout not found: expected folders {dirs[0]} and/or {dirs[1]} with '
      '*.txt reviews (the extracted aclImdb_v1.tar.gz; split names are train/test).'
    )
  entries = []
  for label, d in enumerate(dirs):
    for file_name in os.listdir(d) if os.path.isdir(d) else ():
      if file_name.endswith('.txt'):
        stem = file_name[:-4].split('_')[0]
        key = int(stem) if stem.isdigit() else -1
        entries.append((key, label, file_name, os.path.join(d, file_name)))
  if not entries:
    raise FileNotFoundError(f'no *.txt reviews under {dirs[0]} or {dirs[1]}.')
  entries.sort()
  return _Rows(
    _ReviewFiles([path for *_, path in entries]),
    None,
    np.asarray([label for _, label, _, _ in entries], np.int64),
  )


def _read_text_docs(pattern: str, block: int = 0, blocks: int = 1) -> _Rows:
  """Every non-empty line of the files matching `pattern` is a document
  (those of byte block `block` of `blocks`, `text_files`)."""
  docs = text_files.read_documents(pattern, block, blocks)
  invalid = sum(not _is_utf8(d) for d in docs)
  return _Rows(docs, None, np.full(len(docs), UNLABELED, np.int64), invalid)


def _load_local(
  kind, path, split, *, text_fields, label_field, task, class_map, has_header
):
  """Reads the rows a local source and split select; returns (rows, fields)."""
  text_fields = _as_tuple(text_fields)
  cache: dict[str, tuple[_Rows, Any, Any]] = {}
  chosen: list[tuple[_Rows, range]] = []
  for part in parse_split(split):
    target = path.replace('{split}', part.name)
    if target not in cache:
      if kind == 'aclimdb':
        cache[target] = _read_aclimdb_rows(path, part.name), ('text',), 'label'
      elif kind == 'text':
        cache[target] = _read_text_docs(target), ('text',), False
      else:
        cache[target] = _read_table_rows(
          target, kind, text_fields, label_field, task, class_map, has_header
        )
    rows = cache[target][0]
    chosen.append((rows, part.indices(len(rows.text_a))))
  _, text_fields, label_field = next(iter(cache.values()))
  pair = len(text_fields) == 2
  labels = np.concatenate(
    [rows.labels[np.asarray(idx, np.int64)] for rows, idx in chosen]
  )
  if kind == 'aclimdb':  # Still unread: the caller reads the rows it keeps.
    paths = [rows.text_a.paths[i] for rows, idx in chosen for i in idx]
    return _Rows(_ReviewFiles(paths), None, labels), text_fields, label_field
  text_a = [rows.text_a[i] for rows, idx in chosen for i in idx]
  text_b = (
    [rows.text_b[i] for rows, idx in chosen for i in idx] if pair else None
  )
  invalid = sum(_count_invalid(rows, idx) for rows, idx in chosen)
  return _Rows(text_a, text_b, labels, invalid), text_fields, label_field


def _count_invalid(rows: _Rows, idx: range) -> int:
  count = 0
  for i in idx:
    texts = [rows.text_a[i]] + ([] if rows.text_b is None else [rows.text_b[i]])
    count += any(not _is_utf8(t) for t in texts)
  return count


def _is_utf8(data: bytes) -> bool:
  try:
    data.decode('utf-8')
    return True
  except UnicodeDecodeError:
    return False


def read_local_rows(
  kind: str,
  path: str,
  split: str,
  *,
  text_fields: Any = None,
  label_field: Any = None,
  task: str = 'classification',
  classes: Any = None,
  has_header: bool = True,
) -> _Rows:
  """The rows a local source selects, without TensorFlow.

  Why public: checking a file (a tool, a test of bad input) needs the
  reader's answer, not a tf.data pipeline. Arguments are those of
  `make_text_dataset`, with the source given as its kind and path.
  """
  class_map = None if task == 'regression' else _class_map(classes)[0]
  rows, _, _ = _load_local(
    kind,
    path,
    split,
    text_fields=text_fields,
    label_field=label_field,
    task=task,
    class_map=class_map,
    has_header=has_header,
  )
  if isinstance(rows.text_a, _ReviewFiles):
    texts = list(rows.text_a)
    rows = _Rows(texts, None, rows.labels, sum(not _is_utf8(t) for t in texts))
  return rows
