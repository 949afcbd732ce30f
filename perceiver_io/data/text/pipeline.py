"""Text input pipelines: classification, regression (GLUE, IMDB) and byte MLM.

Why this module exists: Perceiver IO reads raw UTF-8 bytes, so every text task
needs the same steps (read examples from TFDS or local files, byte-tokenize to a
fixed length, batch, shard per host) and the paper's byte-level masked language
modelling. The runner only sees dicts of NumPy arrays with fixed shapes.

Sources (the `source` string):

* ``tfds:<name>``, e.g. ``tfds:imdb_reviews``, ``tfds:glue/mrpc``. The dataset
  must already be prepared in `data_dir` unless ``download=True``; the check
  is cheap (`builder.is_prepared()`), and a missing dataset fails at once with
  an error that names a local-file alternative.
* ``tsv:PATH`` (GLUE style: tab separated, quoting off, UTF-8 with or without
  BOM), ``csv:PATH`` (standard quoted CSV), ``jsonl:PATH`` (one JSON object a
  line). The text field(s) and the label field are named by `text_fields` /
  `label_field` (column names, or integer column indices for files without a
  header); common GLUE / IMDB column names are detected when they are None.
* ``aclimdb:ROOT``: the extracted ``aclImdb`` folder, read as
  ``ROOT/<split>/{neg,pos}/*.txt`` (labels neg=0, pos=1 as in TFDS).
* ``text:GLOB`` (MLM only): plain text files; every non-empty line is one
  document.

A local PATH or GLOB may contain ``{split}``, which is replaced by the split
name, e.g. ``csv:/data/imdb/{split}.csv`` with ``split='test'``. Without it,
the split name is free (it only carries the slice).

Split strings follow TFDS: ``name``, ``name[a:b]`` with ints (negative counts
from the end) or percents (``train[:10%]``, rounded to the closest example),
joined with ``+`` (``train[:100]+train[-100:]``). TFDS sources pass the string
to TFDS; local sources apply the same syntax to the list of rows, in file order
(see `parse_split`).

Pipelines (`make_text_dataset`, `make_mlm_dataset`) return a
``tf.data.Dataset`` of dicts of fixed-shape tensors (iterate with
``ds.as_numpy_iterator()`` for NumPy) and an info object with counts:

* Each process reads only its own contiguous shard of the split
  (`process_index` of `process_count`; TFDS via ``tfds.even_splits``). TFDS
  files are read in their stored order (already shuffled when TFDS prepared
  them); the shuffle buffer does the rest.
* Training (``repeat=True``) shuffles with a buffer, re-seeded every epoch
  with ``(seed, epoch)``, repeats forever, drops no example inside an epoch
  (batches run across epoch boundaries) and has full batches.
* Resuming: ``start_step=k`` yields exactly the batches k, k+1, ... that an
  uninterrupted run yields. The element offset ``k * batch_size`` is split
  into (epoch, position); the stream starts at that epoch (same per-epoch
  seed) and skips `position` raw examples before any tokenization, so a
  resume costs at most one epoch of reading, never of tokenizing.
* Evaluation (``repeat=False``) is one pass in order; the last batch is padded
  and every batch has a ``mask`` (1.0 real, 0.0 padding). Every process yields
  the same number of batches (extra all-padding batches where its shard is
  shorter), so a multi-host eval step never hangs and no example is dropped or
  counted twice.
* Batches: ``input_ids`` int32 [B, L], ``attention_mask`` int32 [B, L],
  ``label`` int32 (float32 for regression) [B], ``mask`` float32 [B],
  ``num_truncated`` int32 [B] (bytes cut from the example) and ``index`` int32
  [B] (position in the selected split, -1 for padding; for a TFDS split made
  of several ``+`` parts read by several processes it is the shard offset plus
  the position in the shard). MLM batches have
  ``mlm_labels`` (original id where masked, -100 elsewhere) and
  ``mlm_weights`` (1.0 where masked) instead of ``label``.

Bad data never passes silently: a missing file, a missing column, a short row
or a label outside the class list is one error naming the file and row. Empty
texts and invalid UTF-8 are kept (as bytes) and counted, and truncation is
counted, in `TextStats`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from perceiver_io import tokenizer as tokenizer_lib

IGNORE_LABEL = -100  # mlm_labels value at positions that are not predicted.
UNLABELED = -1  # GLUE test splits (TFDS) and files read with label_field=False.
_LOCAL_KINDS = ('tsv', 'csv', 'jsonl', 'aclimdb', 'text')
_TASKS = ('classification', 'regression')
_WHITESPACE_IDS = np.array([c + tokenizer_lib.NUM_SPECIAL_TOKENS for c in b' \t\n\r\x0b\x0c'])


# ----------------------------------------------------------------- GLUE table
@dataclasses.dataclass(frozen=True)
class GlueTask:
  """How to read and score one GLUE task.

  Attributes:
    tfds_name: TFDS name (``glue/<config>``).
    text_fields: TFDS feature names of the text(s), one or a pair.
    num_classes: number of classes, or None for regression (STS-B).
    classes: class names in TFDS label order (None for regression); pass them
      as `classes` when reading the original GLUE TSVs with string labels.
    train_split: the training split, or None (AX is test only).
    eval_splits: labelled splits to report (dev sets).
    test_splits: unlabelled splits (labels are -1).
    metrics: the official metric names, the first one being the headline.
  """
  tfds_name: str
  text_fields: tuple[str, ...]
  num_classes: int | None
  classes: tuple[str, ...] | None
  train_split: str | None
  eval_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  metrics: tuple[str, ...]

  @property
  def is_regression(self) -> bool:
    return self.num_classes is None


def _glue(config, fields, classes, metrics, eval_splits=('validation',),
          test_splits=('test',), train_split='train'):
  return GlueTask(f'glue/{config}', fields, None if classes is None else len(classes),
                  classes, train_split, eval_splits, test_splits, metrics)


GLUE_TASKS: dict[str, GlueTask] = {
    'cola': _glue('cola', ('sentence',), ('unacceptable', 'acceptable'),
                  ('matthews_corrcoef',)),
    'sst2': _glue('sst2', ('sentence',), ('negative', 'positive'), ('accuracy',)),
    'mrpc': _glue('mrpc', ('sentence1', 'sentence2'), ('not_equivalent', 'equivalent'),
                  ('f1', 'accuracy')),
    'qqp': _glue('qqp', ('question1', 'question2'), ('not_duplicate', 'duplicate'),
                 ('f1', 'accuracy')),
    'stsb': _glue('stsb', ('sentence1', 'sentence2'), None, ('pearson', 'spearman')),
    'mnli': _glue('mnli', ('premise', 'hypothesis'),
                  ('entailment', 'neutral', 'contradiction'), ('accuracy',),
                  eval_splits=('validation_matched', 'validation_mismatched'),
                  test_splits=('test_matched', 'test_mismatched')),
    'qnli': _glue('qnli', ('question', 'sentence'), ('entailment', 'not_entailment'),
                  ('accuracy',)),
    'rte': _glue('rte', ('sentence1', 'sentence2'), ('entailment', 'not_entailment'),
                 ('accuracy',)),
    'wnli': _glue('wnli', ('sentence1', 'sentence2'), ('not_entailment', 'entailment'),
                  ('accuracy',)),
    # The diagnostic set: test only, scored with Matthews correlation (R3).
    'ax': _glue('ax', ('premise', 'hypothesis'), ('entailment', 'neutral', 'contradiction'),
                ('matthews_corrcoef',), eval_splits=(), train_split=None),
}

_TFDS_DEFAULT_FIELDS = {'imdb_reviews': (('text',), 'label')}
_TFDS_DEFAULT_FIELDS.update({t.tfds_name: (t.text_fields, 'label') for t in GLUE_TASKS.values()})

# Column names tried, in order, when `text_fields` / `label_field` are None for
# a local file (GLUE TSVs in original and HF layout, IMDB CSVs).
_KNOWN_TEXT_COLUMNS = (
    ('sentence1', 'sentence2'), ('#1 String', '#2 String'), ('question1', 'question2'),
    ('question', 'sentence'), ('premise', 'hypothesis'), ('sentence',), ('text',),
    ('review',))
_KNOWN_LABEL_COLUMNS = ('label', 'Quality', 'is_duplicate', 'score', 'gold_label',
                        'sentiment')


# ------------------------------------------------------------------ results
@dataclasses.dataclass
class TextStats:
  """Counts over the examples of a split, for the runner to log.

  Attributes:
    num_examples: examples in the split (all processes).
    num_empty: examples with an empty text (any text of a pair).
    num_invalid_utf8: examples whose bytes are not valid UTF-8 (kept as bytes).
    num_truncated: examples longer than max_length, cut.
    num_truncated_tokens: total bytes (tokens) cut.
    num_unlabeled: examples with label -1 (unlabelled test data).
    label_counts: class id -> count (classification only).
  """
  num_examples: int = 0
  num_empty: int = 0
  num_invalid_utf8: int = 0
  num_truncated: int = 0
  num_truncated_tokens: int = 0
  num_unlabeled: int = 0
  label_counts: dict[int, int] = dataclasses.field(default_factory=dict)

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class TextDatasetInfo:
  """What a pipeline yields, for the runner.

  Attributes:
    source: the source string.
    split: the split string.
    task: 'classification', 'regression' or 'mlm'.
    text_fields: the text field(s) read.
    label_field: the label field read (False if unlabelled / MLM).
    classes: class names in label-id order, or None.
    num_classes: number of classes (None for regression / MLM).
    num_examples: examples (documents for MLM) in the split, all processes.
    num_examples_per_process: the shard sizes, by process index.
    batch_size: per-process batch size.
    max_length: sequence length L.
    num_batches: batches per pass for this process (repeat=False), else None.
    steps_per_epoch: full batches in one pass over this process's shard.
    metrics: official metric names (GLUE), or ().
    stats: `TextStats`, or None when not computed (large TFDS training splits;
      each batch still carries `num_truncated`).
  """
  source: str
  split: str
  task: str
  text_fields: tuple[Any, ...]
  label_field: Any  # False when unlabelled.
  classes: tuple[str, ...] | None
  num_classes: int | None
  num_examples: int
  num_examples_per_process: tuple[int, ...]
  batch_size: int
  max_length: int
  num_batches: int | None
  steps_per_epoch: int
  metrics: tuple[str, ...] = ()
  stats: TextStats | None = None


# -------------------------------------------------------------- split syntax
_PART_RE = re.compile(
    r'^\s*(?P<name>[^\[\]+:]+?)\s*(?:\[\s*(?P<start>-?\d+%?)?\s*:\s*(?P<stop>-?\d+%?)?\s*\])?\s*$')


@dataclasses.dataclass(frozen=True)
class SplitPart:
  """One ``name[start:stop]`` term of a split string; bounds are raw strings."""
  name: str
  start: str | None
  stop: str | None

  def indices(self, num_rows: int) -> range:
    """The row indices this term selects from `num_rows` rows."""
    return range(num_rows)[slice(_bound(self.start, num_rows), _bound(self.stop, num_rows))]


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
    raise ValueError(f'split must be a non-empty string like "train" or "train[:100]", '
                     f'got {split!r}.')
  parts = []
  for text in split.split('+'):
    match = _PART_RE.match(text)
    if not match:
      raise ValueError(
          f'cannot parse split term {text!r} of {split!r}; expected name, name[a:b], '
          'name[:10%] or several joined with "+" (e.g. "train[:100]+train[-100:]").')
    parts.append(SplitPart(match['name'], match['start'], match['stop']))
  return parts


# --------------------------------------------------------------- arguments
def parse_source(source: str) -> tuple[str, str]:
  """Splits ``'kind:rest'``; kind is tfds or one of the local kinds."""
  if not isinstance(source, str) or ':' not in source:
    raise ValueError(
        f'source {source!r} must look like "tfds:imdb_reviews", "tfds:glue/mrpc", '
        '"tsv:/path/dev.tsv", "csv:/path/train.csv", "jsonl:/path/x.jsonl", '
        '"aclimdb:/path/aclImdb" or "text:/path/*.txt".')
  kind, rest = source.split(':', 1)
  kind = kind.strip().lower()
  if kind not in ('tfds',) + _LOCAL_KINDS or not rest:
    raise ValueError(f'unknown source kind {kind!r} in {source!r}; use one of '
                     f'{("tfds",) + _LOCAL_KINDS} followed by ":" and a name or path.')
  return kind, rest


def _as_tuple(fields: Any) -> tuple[Any, ...] | None:
  if fields is None:
    return None
  if isinstance(fields, (str, int)):
    return (fields,)
  fields = tuple(fields)
  if len(fields) not in (1, 2):
    raise ValueError(f'text_fields must name one text or a pair, got {fields!r}.')
  return fields


def _check_int(name: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}.')
  return int(value)


def _check_processes(process_index: int, process_count: int) -> None:
  _check_int('process_count', process_count, 1)
  _check_int('process_index', process_index, 0)
  if process_index >= process_count:
    raise ValueError(f'process_index={process_index} must be < process_count={process_count}.')


def _class_map(classes: Any) -> tuple[dict[str, int] | None, tuple[str, ...] | None, int | None]:
  """Returns (label string -> id, class names, num_classes) for `classes`."""
  if classes is None:
    return None, None, None
  if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
    names = tuple(str(i) for i in range(int(classes)))
  elif isinstance(classes, Mapping):
    ids = sorted(set(int(v) for v in classes.values()))
    if ids != list(range(len(ids))):
      raise ValueError(f'classes mapping must use ids 0..n-1, got {sorted(classes.values())}.')
    mapping = {str(k).strip(): int(v) for k, v in classes.items()}
    names = tuple(next(k for k, v in mapping.items() if v == i) for i in ids)
    return mapping, names, len(ids)
  elif isinstance(classes, Sequence) and not isinstance(classes, str):
    names = tuple(str(c).strip() for c in classes)
  else:
    raise ValueError(f'classes must be None, an int, a list of names or a dict, got {classes!r}.')
  if len(set(names)) != len(names) or not names:
    raise ValueError(f'classes must be non-empty and unique, got {names!r}.')
  return {n: i for i, n in enumerate(names)}, names, len(names)


# ------------------------------------------------------------- local reading
@dataclasses.dataclass
class _Rows:
  """Examples read into memory: texts as raw bytes, labels as an array."""
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
    raise ValueError(f'{where}: text field {field!r} is {type(value).__name__} '
                     f'({value!r:.60}), expected a string.')
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
    raise FileNotFoundError(f'data file {path!r} does not exist (from the source path).')
  with open(path, 'rb') as f:
    data = f.read()
  return data.decode('utf-8-sig', errors='surrogateescape')


@contextlib.contextmanager
def _big_csv_fields():
  """Allows long CSV fields (long reviews) without leaking the global limit."""
  old = csv.field_size_limit()
  csv.field_size_limit(2**31 - 1)
  try:
    yield
  finally:
    csv.field_size_limit(old)


def _table_records(path: str, kind: str, has_header: bool):
  """Reads a TSV/CSV/JSONL file: (columns or None, [(row, line, record)])."""
  text = _read_text(path)
  if kind == 'jsonl':
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}, line {line_no}: not valid JSON ({e.msg}).') from None
      if not isinstance(obj, dict):
        raise ValueError(f'{path}, line {line_no}: expected a JSON object, got '
                         f'{type(obj).__name__}.')
      records.append((len(records) + 1, line_no, obj))
    return None, records
  if kind == 'tsv':
    reader = csv.reader(io.StringIO(text, newline=''), delimiter='\t',
                        quoting=csv.QUOTE_NONE)
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
      raise ValueError(f'{path}, line {reader.line_num}: malformed {kind.upper()} ({e}).') from None
  if has_header and columns is None:
    raise ValueError(f'{path} is empty: expected a header line and rows.')
  return columns, records


def _guess_fields(columns, text_fields, label_field, path):
  """Resolves None text/label fields from known GLUE / IMDB column names."""
  if text_fields is None:
    if columns is None:
      raise ValueError(f'{path} has no header line; pass text_fields (column indices, '
                       'e.g. (3,) for CoLA) and label_field.')
    text_fields = next((c for c in _KNOWN_TEXT_COLUMNS if all(x in columns for x in c)), None)
    if text_fields is None:
      raise ValueError(f'{path}: cannot guess the text column(s) from {columns}; pass '
                       'text_fields=("name",) or ("first", "second").')
  if label_field is None and columns is not None:
    label_field = next((c for c in _KNOWN_LABEL_COLUMNS if c in columns), None)
    if label_field is None:
      raise ValueError(f'{path}: cannot guess the label column from {columns}; pass '
                       'label_field="name" (or label_field=False for unlabelled data).')
  return text_fields, label_field


def _make_getter(columns, field, path, what):
  """Returns record -> value for a column name or index, checking it exists."""
  if columns is None:  # JSONL (dict records) or header-less tables (indices).
    return lambda record: record[field]
  if isinstance(field, (int, np.integer)) and not isinstance(field, bool):
    return lambda record: record[int(field)]
  if field not in columns:
    raise ValueError(f'{path}: {what} column {field!r} is not in the header (line 1) '
                     f'{columns}; pass {"label_field" if what == "label" else "text_fields"} '
                     'with one of them.')
  index = columns.index(field)
  return lambda record: record[index]


def _convert_label(raw, task, class_map, where):
  """A label value -> int class id or float; raises naming the row."""
  if task == 'regression':
    try:
      value = float(raw)
    except (TypeError, ValueError):
      raise ValueError(f'{where}: label {raw!r} is not a number (task="regression").') from None
    if not math.isfinite(value):
      raise ValueError(f'{where}: label {raw!r} is not finite.')
    return value
  if isinstance(raw, float) and raw.is_integer():
    raw = int(raw)
  key = str(raw).strip()
  if class_map is not None:
    if key not in class_map:
      raise ValueError(f'{where}: label {raw!r} is not one of the classes {list(class_map)}.')
    return class_map[key]
  if not re.fullmatch(r'\d+', key):
    raise ValueError(f'{where}: label {raw!r} is not a class id >= 0; pass classes=[...] '
                     'with the label names (or task="regression" for numbers).')
  return int(key)


def _read_table_rows(path, kind, text_fields, label_field, task, class_map, has_header):
  """Every row of one TSV/CSV/JSONL file as (text_a, text_b, label) lists."""
  columns, records = _table_records(path, kind, has_header)
  known = columns
  if kind == 'jsonl' and records:
    known = list(records[0][2].keys())  # Guess names from the first object.
  text_fields, label_field = _guess_fields(known, text_fields, label_field, path)
  if label_field is None:
    raise ValueError(f'{path} has no header line; pass label_field (a column index) or '
                     'label_field=False for unlabelled data.')
  getters = [_make_getter(columns, f, path, 'text') for f in text_fields]
  label_getter = (None if label_field is False
                  else _make_getter(columns, label_field, path, 'label'))
  text_a, text_b, labels, invalid = [], [] if len(text_fields) == 2 else None, [], 0
  for row, line, record in records:
    where = f'{path}, row {row} (line {line})'
    if columns is not None and len(record) != len(columns):
      why = ('with quoting off, a tab inside a text breaks the row' if kind == 'tsv' else
             'a comma inside an unquoted text, or a quote (") left open, breaks the row')
      raise ValueError(f'{where}: has {len(record)} fields but the header has '
                       f'{len(columns)} ({columns}); {why}.')
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
      raise ValueError(f'{where}: missing label field {label_field!r}.') from None
    labels.append(_convert_label(raw, task, class_map, where))
  return _Rows(text_a, text_b, np.asarray(labels, np.float32 if task == 'regression'
                                          else np.int64), invalid), text_fields, label_field


def _read_aclimdb_rows(root: str, name: str) -> _Rows:
  """``root/<name>/{neg,pos}/<id>_<rating>.txt`` in (id, label) order."""
  folder = os.path.join(root, name)
  dirs = [os.path.join(folder, 'neg'), os.path.join(folder, 'pos')]
  if not any(os.path.isdir(d) for d in dirs):
    raise FileNotFoundError(
        f'aclImdb layout not found: expected folders {dirs[0]} and/or {dirs[1]} with '
        '*.txt reviews (the extracted aclImdb_v1.tar.gz; split names are train/test).')
  entries = []
  for label, d in enumerate(dirs):
    for file_name in (os.listdir(d) if os.path.isdir(d) else ()):
      if file_name.endswith('.txt'):
        stem = file_name[:-4].split('_')[0]
        key = int(stem) if stem.isdigit() else -1
        entries.append((key, label, file_name, os.path.join(d, file_name)))
  if not entries:
    raise FileNotFoundError(f'no *.txt reviews under {dirs[0]} or {dirs[1]}.')
  entries.sort()
  texts, labels, invalid = [], [], 0
  for _, label, _, path in entries:
    with open(path, 'rb') as f:
      data = f.read()
    text, bad = _field_bytes(data, path, 'text')
    invalid += bad
    texts.append(text)
    labels.append(label)
  return _Rows(texts, None, np.asarray(labels, np.int64), invalid)


def _read_text_docs(pattern: str) -> _Rows:
  """Every non-empty line of the files matching `pattern` is a document."""
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise FileNotFoundError(f'no text files match {pattern!r}.')
  docs, invalid = [], 0
  for path in paths:
    with open(path, 'rb') as f:
      for line in f.read().splitlines():
        if line.strip():
          text, bad = _field_bytes(line, path, 'line')
          invalid += bad
          docs.append(text)
  return _Rows(docs, None, np.full(len(docs), UNLABELED, np.int64), invalid)


def _load_local(kind, path, split, *, text_fields, label_field, task, class_map,
                has_header):
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
            target, kind, text_fields, label_field, task, class_map, has_header)
    rows = cache[target][0]
    chosen.append((rows, part.indices(len(rows.text_a))))
  _, text_fields, label_field = next(iter(cache.values()))
  pair = len(text_fields) == 2
  text_a = [rows.text_a[i] for rows, idx in chosen for i in idx]
  text_b = [rows.text_b[i] for rows, idx in chosen for i in idx] if pair else None
  labels = np.concatenate([rows.labels[np.asarray(idx, np.int64)] for rows, idx in chosen])
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


# ------------------------------------------------------------------- stats
class _StatsCounter:
  """Accumulates `TextStats` over chunks of examples."""

  def __init__(self, tokenizer, max_length, task):
    self.stats = TextStats()
    self._tokenizer, self._max_length, self._task = tokenizer, max_length, task

  def add(self, text_a, text_b, labels) -> None:
    s = self.stats
    for i, a in enumerate(text_a):
      b = None if text_b is None else text_b[i]
      texts = [a] if b is None else [a, b]
      s.num_examples += 1
      s.num_empty += any(len(t) == 0 for t in texts)
      s.num_invalid_utf8 += any(not _is_utf8(t) for t in texts)
      cut = self._tokenizer.num_tokens(a, b) - self._max_length
      if cut > 0:
        s.num_truncated += 1
        s.num_truncated_tokens += cut
    labels = np.asarray(labels)
    s.num_unlabeled += int(np.sum(labels == UNLABELED))
    if self._task == 'classification':
      for value, count in zip(*np.unique(labels[labels != UNLABELED], return_counts=True)):
        s.label_counts[int(value)] = s.label_counts.get(int(value), 0) + int(count)


# -------------------------------------------------------------------- TFDS
def _local_alternative(name: str, task: str = 'classification') -> str:
  """The local-file source to suggest when TFDS `name` cannot be used.

  MLM reads unlabelled documents, so it gets the plain-text source rather
  than a labelled table.
  """
  if task == 'mlm':
    return ("source='text:/data/*.txt' (plain text files, one document a line), "
            "or a 'csv:', 'tsv:' or 'jsonl:' file with text_field=... (no labels)")
  if name == 'imdb_reviews':
    return ("source='aclimdb:/path/to/aclImdb' (the extracted aclImdb_v1.tar.gz) or "
            "source='csv:/path/{split}.csv' with text_fields=('text',), label_field='label'")
  if name.startswith('glue/'):
    task = GLUE_TASKS.get(name.split('/', 1)[1])
    fields = task.text_fields if task else ('sentence',)
    return (f"source='tsv:/path/to/glue_data/<TASK>/{{split}}.tsv' (GLUE TSV; e.g. split="
            f"'dev') with text_fields={fields!r}, label_field='label' (columns are "
            'guessed for the usual GLUE headers)')
  return ("source='csv:/path/{split}.csv', 'tsv:...' or 'jsonl:...' with text_fields=... "
          'and label_field=...')


def _tfds_builder(name: str, data_dir: str | None, download: bool,
                  task: str = 'classification'):
  """A prepared TFDS builder, or one clear error; downloads only if asked.

  `task` ('mlm' or a table task) picks the local alternative the error names.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError, unknown config, ...
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f'unknown TFDS dataset {name!r} ({first_line}); check the name, or '
                     f'pass a local file: {_local_alternative(name, task)}.') from None
  if not builder.is_prepared():
    if download:
      builder.download_and_prepare()
    else:
      raise FileNotFoundError(
          f'TFDS dataset {name!r} is not prepared in the TFDS data dir '
          f'{str(builder.data_dir_root)!r} and download=False '
          '(offline). Either prepare it there (download=True, or `tfds build` on a '
          f'machine with network, then copy the folder), or pass a local file: '
          f'{_local_alternative(name, task)}.')
  return builder


def _tfds_count(builder, split) -> int:
  """Examples in a TFDS split (from its metadata, else by counting)."""
  try:
    return int(builder.info.splits[split].num_examples)
  except Exception:  # pylint: disable=broad-except  (e.g. mocked metadata)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def _tfds_fields(builder, name, text_fields, label_field, task):
  features = builder.info.features
  default = _TFDS_DEFAULT_FIELDS.get(name)
  if text_fields is None:
    if default is None:
      raise ValueError(f'pass text_fields for TFDS dataset {name!r}; its features are '
                       f'{list(features.keys())}.')
    text_fields = default[0]
  if label_field is None:
    label_field = False if task == 'mlm' else (default[1] if default else 'label')
  for field in tuple(text_fields) + ((label_field,) if label_field is not False else ()):
    if field not in features:
      raise ValueError(f'TFDS dataset {name!r} has no feature {field!r}; it has '
                       f'{list(features.keys())}.')
  return _as_tuple(text_fields), label_field


def _tfds_classes(builder, label_field, classes):
  feature = builder.info.features[label_field]
  names = tuple(getattr(feature, 'names', None) or ())
  if classes is not None:
    _, given, _ = _class_map(classes)
    if names and len(given) != len(names):
      raise ValueError(f'classes has {len(given)} names but the TFDS label has '
                       f'{len(names)}: {names}.')
    names = given
  return (names or None), (len(names) if names else None)


# --------------------------------------------------------------- tf.data parts
def _process_shards(total: int, process_count: int) -> list[tuple[int, int]]:
  """Contiguous [start, stop) blocks, sizes differing by at most one."""
  return [(total * p // process_count, total * (p + 1) // process_count)
          for p in range(process_count)]


def _epoch_stream(tf, base, *, num_examples, batch_size, start_step, shuffle, seed,
                  shuffle_buffer, repeat, examples_per_step=None):
  """Raw-example stream that starts at batch `start_step` (see module doc)."""
  per_step = examples_per_step or batch_size
  offset = start_step * per_step
  first_epoch, skip = (divmod(offset, num_examples) if repeat else (0, offset))
  buffer = max(1, min(shuffle_buffer, num_examples))

  def one_epoch(epoch):
    if not shuffle:
      return base
    epoch_seed = tf.constant(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)
    return base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  last_epoch = np.iinfo(np.int64).max if repeat else 1
  ds = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch)
  return ds.skip(skip) if skip else ds


def _deterministic(tf, ds):
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def _tokenize_batch(text_a, text_b, label, index, *, tokenizer, max_length, batch_size,
                    pair, regression):
  """NumPy: one raw batch -> fixed-shape arrays; pads a short batch (mask 0)."""
  num_real = len(text_a)
  num_pad = batch_size - num_real
  a = list(text_a) + [b''] * num_pad
  b = (list(text_b) + [b''] * num_pad) if pair else None
  enc = tokenizer.batch_encode(a, b, max_length=max_length, padding='max_length',
                               truncation=True)
  label_dtype = np.float32 if regression else np.int32
  labels = np.zeros(batch_size, label_dtype)
  labels[:num_real] = label
  indices = np.full(batch_size, -1, np.int32)
  indices[:num_real] = index
  mask = np.zeros(batch_size, np.float32)
  mask[:num_real] = 1.0
  return (enc['input_ids'], enc['attention_mask'], labels, mask, enc['num_truncated'], indices)


_CLS_KEYS = ('input_ids', 'attention_mask', 'label', 'mask', 'num_truncated', 'index')


def _classification_batches(tf, raw, *, tokenizer, max_length, batch_size, pair,
                            regression, drop_remainder):
  """Batches raw dict examples and tokenizes each batch in one NumPy call."""
  fn = lambda a, b, y, i: _tokenize_batch(  # noqa: E731
      a, b, y, i, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size,
      pair=pair, regression=regression)
  label_dtype = tf.float32 if regression else tf.int32
  shapes = ([batch_size, max_length], [batch_size, max_length]) + ([batch_size],) * 4

  def tokenize(batch):
    outs = tf.numpy_function(
        fn, [batch['text_a'], batch['text_b'], batch['label'], batch['index']],
        [tf.int32, tf.int32, label_dtype, tf.float32, tf.int32, tf.int32], stateful=False)
    for out, shape in zip(outs, shapes):
      out.set_shape(shape)
    return dict(zip(_CLS_KEYS, outs))

  ds = raw.batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), fn


def _pad_to_num_batches(tf, ds, fn, *, have, want, regression):
  """Appends all-padding batches (mask 0) so every process has `want` batches."""
  if want <= have:
    return ds
  empty = np.array([], object)
  pad = fn(empty, empty, np.zeros(0, np.float32 if regression else np.int64),
           np.zeros(0, np.int64))
  return ds.concatenate(tf.data.Dataset.from_tensors(dict(zip(_CLS_KEYS, pad)))
                        .repeat(want - have))


# ------------------------------------------------------------- public: tasks
def make_text_dataset(
    source: str,
    split: str,
    *,
    max_length: int,
    batch_size: int,
    repeat: bool,
    tokenizer: tokenizer_lib.ByteTokenizer | None = None,
    task: str = 'classification',
    text_fields: Any = None,
    label_field: Any = None,
    classes: Any = None,
    shuffle: bool | None = None,
    seed: int = 0,
    shuffle_buffer: int = 16_384,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    data_dir: str | None = None,
    download: bool = False,
    has_header: bool = True,
    compute_stats: bool | None = None,
):
  """Builds a text classification / regression pipeline.

  Args:
    source: ``tfds:<name>`` or ``tsv:|csv:|jsonl:<path>`` or
      ``aclimdb:<root>`` (see the module docstring).
    split: TFDS-style split string, e.g. ``'train'``, ``'validation[:50%]'``.
    max_length: tokens per example L (with [CLS]/[SEP]); longer texts are cut
      (HF 'longest_first' for pairs) and counted.
    batch_size: examples per batch for this process.
    repeat: True for training (shuffled, endless, full batches); False for one
      in-order pass with the last batch padded (``mask`` 0) and the same batch
      count on every process.
    tokenizer: a `ByteTokenizer` (default: HF-compatible ``ByteTokenizer()``).
    task: 'classification' (int32 labels) or 'regression' (float32 labels).
    text_fields: one field or a pair; None guesses GLUE/IMDB names.
    label_field: the label field (name, or column index for header-less
      files); None guesses it (local files) or uses 'label' (TFDS); False
      reads the data as unlabelled (labels -1, e.g. GLUE test files).
    classes: None (TFDS ClassLabel names, or integer labels in files), an int
      n (labels 0..n-1), a list of label names (id = position) or a dict
      name -> id. Labels outside it are an error naming the file and row.
    shuffle: defaults to `repeat`.
    seed: shuffle seed; the stream is a pure function of (seed, start_step).
    shuffle_buffer: shuffle buffer size (capped at the shard size).
    start_step: first batch to yield (resume); see the module docstring.
    process_index: this process; it reads only its shard.
    process_count: number of processes.
    data_dir: TFDS data dir.
    download: allow TFDS to download and prepare a missing dataset.
    has_header: TSV/CSV files have a header line (else use column indices).
    compute_stats: count empty / invalid UTF-8 / truncated examples up front.
      Default: always for local files, for TFDS only when ``repeat=False``.

  Returns:
    (dataset, info): a ``tf.data.Dataset`` of dicts (see module docstring)
    and a `TextDatasetInfo`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if task not in _TASKS:
    raise ValueError(f'task must be one of {_TASKS}, got {task!r}.')
  max_length = _check_int('max_length', max_length, 2)
  batch_size = _check_int('batch_size', batch_size, 1)
  start_step = _check_int('start_step', start_step, 0)
  _check_processes(process_index, process_count)
  tokenizer = tokenizer or tokenizer_lib.ByteTokenizer()
  shuffle = repeat if shuffle is None else shuffle
  kind, path = parse_source(source)
  regression = task == 'regression'
  if kind == 'text':
    raise ValueError('text: sources are plain documents for MLM (make_mlm_dataset); '
                     'use tsv:, csv:, jsonl:, aclimdb: or tfds: for classification.')

  stats = None
  glue = next((t for t in GLUE_TASKS.values() if kind == 'tfds' and t.tfds_name == path), None)
  if kind == 'tfds':
    builder = _tfds_builder(path, data_dir, download)
    text_fields, label_field = _tfds_fields(builder, path, text_fields, label_field, task)
    if regression or label_field is False:
      class_names, num_classes = None, None
    else:
      class_names, num_classes = _tfds_classes(builder, label_field, classes)
    shard_splits = _tfds_even_splits(split, process_count)
    sizes = [_tfds_count(builder, s) for s in shard_splits]
    pair = len(text_fields) == 2
    base = _tfds_raw(tf, builder, shard_splits[process_index], text_fields, label_field,
                     pair, regression, index_offset=sum(sizes[:process_index]))
    if compute_stats if compute_stats is not None else not repeat:
      counter = _StatsCounter(tokenizer, max_length, task)
      for chunk in _tfds_raw(tf, builder, split, text_fields, label_field, pair, regression,
                             0).batch(1024).as_numpy_iterator():
        counter.add(chunk['text_a'], chunk['text_b'] if pair else None, chunk['label'])
      stats = counter.stats
  else:
    class_map, class_names, num_classes = (None, None, None) if regression else _class_map(classes)
    rows, text_fields, label_field = _load_local(
        kind, path, split, text_fields=text_fields, label_field=label_field, task=task,
        class_map=class_map, has_header=has_header)
    if kind == 'aclimdb' and not regression and num_classes is None:
      class_names, num_classes = ('neg', 'pos'), 2  # As TFDS imdb_reviews.
    if not regression and num_classes is None:
      labelled = rows.labels[rows.labels != UNLABELED]
      num_classes = int(labelled.max()) + 1 if labelled.size else None
    pair = rows.text_b is not None
    sizes = [stop - start for start, stop in _process_shards(len(rows.text_a), process_count)]
    start, stop = _process_shards(len(rows.text_a), process_count)[process_index]
    base = _local_raw(tf, rows, start, stop, regression)
    if compute_stats is None or compute_stats:
      counter = _StatsCounter(tokenizer, max_length, task)
      counter.add(rows.text_a, rows.text_b, rows.labels)
      stats = counter.stats

  if len(tuple(text_fields)) == 2 and max_length < 3:
    raise ValueError('max_length must be >= 3 for text pairs ([CLS] a [SEP] b [SEP]).')
  num_local = sizes[process_index]
  if num_local == 0:
    raise ValueError(f'process {process_index} of {process_count} has no examples: the split '
                     f'{split!r} of {source!r} has {sum(sizes)} in all.')
  raw = _epoch_stream(tf, base, num_examples=num_local, batch_size=batch_size,
                      start_step=start_step, shuffle=shuffle, seed=seed,
                      shuffle_buffer=shuffle_buffer, repeat=repeat)
  ds, fn = _classification_batches(tf, raw, tokenizer=tokenizer, max_length=max_length,
                                   batch_size=batch_size, pair=pair, regression=regression,
                                   drop_remainder=repeat)
  num_batches = None
  if not repeat:
    num_batches = max(math.ceil(n / batch_size) for n in sizes)
    have = max(0, math.ceil(num_local / batch_size) - start_step)
    ds = _pad_to_num_batches(tf, ds, fn, have=have, want=max(0, num_batches - start_step),
                             regression=regression)
  ds = _deterministic(tf, ds.prefetch(tf.data.AUTOTUNE))
  info = TextDatasetInfo(
      source=source, split=split, task=task, text_fields=tuple(text_fields),
      label_field=label_field, classes=class_names, num_classes=num_classes,
      num_examples=sum(sizes), num_examples_per_process=tuple(sizes), batch_size=batch_size,
      max_length=max_length, num_batches=num_batches, steps_per_epoch=num_local // batch_size,
      metrics=glue.metrics if glue else (), stats=stats)
  return ds, info


def _tfds_even_splits(split: str, process_count: int) -> list[Any]:
  if process_count == 1:
    return [split]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return list(tfds.even_splits(split, n=process_count))


def _tfds_raw(tf, builder, split, text_fields, label_field, pair, regression, index_offset):
  """A TFDS split as dicts text_a / text_b / label / index, in file order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(interleave_cycle_length=1))
  label_dtype = tf.float32 if regression else tf.int64

  def convert(index, ex):
    label = (tf.cast(ex[label_field], label_dtype) if label_field is not False
             else tf.constant(UNLABELED, label_dtype))
    return {'text_a': ex[text_fields[0]],
            'text_b': ex[text_fields[1]] if pair else tf.constant(b''),
            'label': label, 'index': index + index_offset}

  return ds.enumerate().map(convert)


def _local_raw(tf, rows: _Rows, start: int, stop: int, regression: bool):
  """This process's rows [start, stop) as dicts text_a / text_b / label / index."""
  n = stop - start
  text_b = rows.text_b[start:stop] if rows.text_b is not None else [b''] * n
  return tf.data.Dataset.from_tensor_slices({
      'text_a': _string_tensor(tf, rows.text_a[start:stop]),
      'text_b': _string_tensor(tf, text_b),
      'label': rows.labels[start:stop].astype(np.float32 if regression else np.int64),
      'index': np.arange(start, stop, dtype=np.int64)})


def _string_tensor(tf, texts: list[bytes]):
  """A 1-D tf.string tensor from a list of bytes (any content, any count)."""
  return tf.constant(np.array(texts, dtype=object), tf.string, shape=[len(texts)])


# --------------------------------------------------------------------- MLM
def mask_bytes_for_mlm(input_ids: np.ndarray, attention_mask: np.ndarray,
                       rng: np.random.Generator | int, mask_prob: float = 0.15,
                       ) -> dict[str, np.ndarray]:
  """The paper's whole-word byte masking (BERT's 80/10/10), vectorised.

  A word is a maximal run of non-whitespace byte ids (>= 6) with attention 1;
  whitespace, [CLS]/[SEP]/[PAD] and any other special id are never chosen. Per
  example, words are taken in random order while the running count stays
  about `mask_prob` of its real (non-special) tokens: a word is taken if the
  count before it plus half its length is within the target, so the expected
  count matches the target with no bias. Of the chosen positions, 80% become
  [MASK] (id 3), 10% a uniform random byte id in [6, 262), 10% stay as they
  are (each position drawn independently, as in BERT).

  Args:
    input_ids: int [B, L] token ids.
    attention_mask: int [B, L], 1 for real tokens.
    rng: a NumPy Generator (or an int seed).
    mask_prob: fraction of real tokens to predict.

  Returns:
    dict(input_ids int32 [B, L] (corrupted), mlm_labels int32 [B, L]
    (original id where chosen, -100 elsewhere), mlm_weights float32 [B, L]
    (1.0 where chosen)).
  """
  if not isinstance(rng, np.random.Generator):
    rng = np.random.default_rng(rng)
  ids = np.asarray(input_ids)
  if ids.ndim != 2 or np.shape(attention_mask) != ids.shape:
    raise ValueError(f'input_ids and attention_mask must both be [B, L], got {ids.shape} '
                     f'and {np.shape(attention_mask)}.')
  if not 0.0 <= mask_prob <= 1.0:
    raise ValueError(f'mask_prob must be in [0, 1], got {mask_prob}.')
  real = (np.asarray(attention_mask) == 1) & (ids >= tokenizer_lib.NUM_SPECIAL_TOKENS)
  in_word = real & ~np.isin(ids, _WHITESPACE_IDS)
  previous = np.zeros_like(in_word)
  previous[:, 1:] = in_word[:, :-1]
  starts = in_word & ~previous
  word_of = (np.cumsum(starts.ravel()) - 1).reshape(ids.shape)  # Row-major word ids.
  num_words = int(starts.sum())
  chosen = np.zeros(ids.shape, bool)
  if num_words:
    word_len = np.bincount(word_of[in_word], minlength=num_words)
    word_row = np.nonzero(starts)[0]
    order = np.lexsort((rng.random(num_words), word_row))  # By row, random within.
    sorted_len, sorted_row = word_len[order], word_row[order]
    row_total = np.bincount(word_row, weights=word_len, minlength=ids.shape[0])
    row_offset = np.concatenate([[0.0], np.cumsum(row_total)[:-1]])
    before = np.cumsum(sorted_len) - sorted_len - row_offset[sorted_row]
    target = mask_prob * real.sum(axis=1)
    take_sorted = before + sorted_len / 2.0 <= target[sorted_row]
    take = np.zeros(num_words, bool)
    take[order] = take_sorted
    chosen = in_word & take[np.where(in_word, word_of, 0)]
  draw = rng.random(ids.shape)
  random_ids = rng.integers(tokenizer_lib.NUM_SPECIAL_TOKENS, tokenizer_lib.VOCAB_SIZE,
                            ids.shape)
  corrupted = np.where(chosen & (draw < 0.8), tokenizer_lib.MASK_ID,
                       np.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, ids))
  return {'input_ids': corrupted.astype(np.int32),
          'mlm_labels': np.where(chosen, ids, IGNORE_LABEL).astype(np.int32),
          'mlm_weights': chosen.astype(np.float32)}


_MLM_KEYS = ('input_ids', 'attention_mask', 'mlm_labels', 'mlm_weights', 'mask',
             'num_truncated', 'index')


def _mlm_batch(step, texts, *, tokenizer, max_length, batch_size, seed, process_index,
               mask_prob):
  """NumPy: joined documents -> random crop -> ids -> masked batch."""
  rng = np.random.default_rng([seed, process_index, int(step)])
  budget = max_length - 2
  crops, cut = [], np.zeros(batch_size, np.int32)
  for i, text in enumerate(texts):
    text = bytes(text)
    if len(text) > budget:
      start = int(rng.integers(0, len(text) - budget + 1))
      cut[i] = len(text) - budget
      text = text[start:start + budget]
    crops.append(text)
  num_real = len(crops)
  crops += [b''] * (batch_size - num_real)
  enc = tokenizer.batch_encode(crops, max_length=max_length, padding='max_length',
                               truncation=True)
  masked = mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], rng, mask_prob)
  mask = np.zeros(batch_size, np.float32)
  mask[:num_real] = 1.0
  masked['mlm_weights'] *= mask[:, None]
  masked['mlm_labels'] = np.where(mask[:, None] > 0, masked['mlm_labels'],
                                  IGNORE_LABEL).astype(np.int32)
  index = np.full(batch_size, -1, np.int32)
  index[:num_real] = int(step) * batch_size + np.arange(num_real)
  return (masked['input_ids'], enc['attention_mask'], masked['mlm_labels'],
          masked['mlm_weights'], mask, cut + enc['num_truncated'], index)


def make_mlm_dataset(
    source: str,
    split: str,
    *,
    max_length: int,
    batch_size: int,
    repeat: bool,
    tokenizer: tokenizer_lib.ByteTokenizer | None = None,
    text_field: Any = None,
    docs_per_example: int = 10,
    doc_separator: str | bytes = '\n',
    mask_prob: float = 0.15,
    shuffle: bool | None = None,
    seed: int = 0,
    shuffle_buffer: int = 16_384,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    data_dir: str | None = None,
    download: bool = False,
    has_header: bool = True,
):
  """Byte MLM pipeline: concatenate documents, crop, mask (paper recipe).

  `docs_per_example` consecutive documents of the (shuffled) stream are joined
  with `doc_separator`, a random window of ``max_length - 2`` bytes is cropped
  and wrapped in [CLS] ... [SEP], and `mask_bytes_for_mlm` picks the targets.
  The crop and the masks come from a NumPy generator seeded with
  ``(seed, process_index, step)``, so a resumed run (``start_step``) gets the
  same batches as an uninterrupted one.

  Args:
    source: ``tfds:<name>`` (a text feature), ``text:<glob>`` (one document a
      line) or a ``tsv:|csv:|jsonl:`` file with `text_field`.
    split: split string (see `parse_split`).
    max_length: tokens per example, [CLS] and [SEP] included.
    batch_size: examples per batch for this process.
    repeat: True for training (endless, shuffled); False for one padded pass.
    tokenizer: a `ByteTokenizer` (default ``ByteTokenizer()``).
    text_field: the document field (TFDS / table sources; default 'text').
    docs_per_example: documents concatenated before cropping (paper: 10).
    doc_separator: bytes put between joined documents.
    mask_prob: fraction of real tokens to predict.
    shuffle: defaults to `repeat` (documents are shuffled before grouping).
    seed: seed of the shuffle, crops and masks.
    shuffle_buffer: document shuffle buffer.
    start_step: first batch to yield (resume).
    process_index: this process; it reads only its shard.
    process_count: number of processes.
    data_dir: TFDS data dir.
    download: allow TFDS to download a missing dataset.
    has_header: TSV/CSV files have a header line.

  Returns:
    (dataset, info): dicts with input_ids, attention_mask, mlm_labels,
    mlm_weights, mask, num_truncated (bytes not used by the crop), index.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  max_length = _check_int('max_length', max_length, 2)
  batch_size = _check_int('batch_size', batch_size, 1)
  start_step = _check_int('start_step', start_step, 0)
  docs_per_example = _check_int('docs_per_example', docs_per_example, 1)
  _check_processes(process_index, process_count)
  tokenizer = tokenizer or tokenizer_lib.ByteTokenizer()
  shuffle = repeat if shuffle is None else shuffle
  kind, path = parse_source(source)
  if kind == 'tfds':
    builder = _tfds_builder(path, data_dir, download, task='mlm')
    text_fields, _ = _tfds_fields(builder, path, _as_tuple(text_field or 'text'), None, 'mlm')
    shard_splits = _tfds_even_splits(split, process_count)
    sizes = [_tfds_count(builder, s) for s in shard_splits]
    base = _tfds_raw(tf, builder, shard_splits[process_index], text_fields, False, False,
                     False, index_offset=0)
    base = base.map(lambda ex: ex['text_a'])
  else:
    rows, text_fields, _ = _load_local(
        kind, path, split, text_fields=_as_tuple(text_field) if text_field is not None
        else (None if kind in ('tsv', 'csv', 'jsonl') else ('text',)),
        label_field=False, task='classification', class_map=None, has_header=has_header)
    shards = _process_shards(len(rows.text_a), process_count)
    sizes = [stop - start for start, stop in shards]
    start, stop = shards[process_index]
    base = tf.data.Dataset.from_tensor_slices(_string_tensor(tf, rows.text_a[start:stop]))
  num_local = sizes[process_index]
  if num_local == 0:
    raise ValueError(f'process {process_index} of {process_count} has no documents in '
                     f'{source!r} split {split!r}.')
  docs = _epoch_stream(tf, base, num_examples=num_local, batch_size=batch_size,
                       start_step=start_step, shuffle=shuffle, seed=seed,
                       shuffle_buffer=shuffle_buffer, repeat=repeat,
                       examples_per_step=batch_size * docs_per_example)
  joined = docs.batch(docs_per_example, drop_remainder=repeat).map(
      lambda group: tf.strings.reduce_join(group, separator=doc_separator))
  fn = lambda step, texts: _mlm_batch(  # noqa: E731
      step, texts, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size,
      seed=seed, process_index=process_index, mask_prob=mask_prob)
  shapes = ([batch_size, max_length],) * 4 + ([batch_size],) * 3

  def crop_and_mask(step, texts):
    outs = tf.numpy_function(fn, [step, texts], [tf.int32, tf.int32, tf.int32, tf.float32,
                                                 tf.float32, tf.int32, tf.int32],
                             stateful=False)
    for out, shape in zip(outs, shapes):
      out.set_shape(shape)
    return dict(zip(_MLM_KEYS, outs))

  ds = joined.batch(batch_size, drop_remainder=repeat).enumerate(start=start_step)
  ds = ds.map(crop_and_mask, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  num_batches = None
  if not repeat:
    groups = [math.ceil(n / docs_per_example) for n in sizes]
    num_batches = max(math.ceil(g / batch_size) for g in groups)
    have = max(0, math.ceil(groups[process_index] / batch_size) - start_step)
    want = max(0, num_batches - start_step)
    if want > have:
      pad = dict(zip(_MLM_KEYS, fn(np.int64(0), np.array([], object))))
      ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(want - have))
  ds = _deterministic(tf, ds.prefetch(tf.data.AUTOTUNE))
  info = TextDatasetInfo(
      source=source, split=split, task='mlm', text_fields=tuple(text_fields),
      label_field=False, classes=None, num_classes=None, num_examples=sum(sizes),
      num_examples_per_process=tuple(sizes), batch_size=batch_size, max_length=max_length,
      num_batches=num_batches,
      steps_per_epoch=num_local // (batch_size * docs_per_example))
  return ds, info
