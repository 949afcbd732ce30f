"""Local tables read by byte blocks: each process reads its rows only.

Why: a table read whole by every process costs each host the whole file,
so adding hosts adds no input capacity. A TSV (quoting off) or JSONL file
holds one row a line, so cutting the file at byte offsets cuts it between
rows: block b of B is the rows whose line starts in bytes [bN/B, (b+1)N/B)
(`text_files` reads exactly those lines, plus the end of the last one).
Every block also reads the file's first non-blank line: the TSV header (the
column names), or the first JSONL object (the field names are guessed from
it, as when the file is read whole). Lines are cut at ``\\r\\n``, ``\\r`` and
``\\n`` and blank lines are skipped as the whole-file reader does, so the
blocks in order are the rows of reading the file whole. A CSV is cut at
the first record start after each block's first byte, found from the
gathered quote parities (`csv_blocks`; a file whose quotes break RFC 4180
is read whole, as the csv module would read those quotes differently).

An unsliced one-file split gives process i block i of P. Any other split
(``train[:90%]``, ``a+b``; MLM ``text:`` files too) gives process i the
split's rows [iR/P, (i+1)R/P), as a whole-file read would cut them: every
process counts its block of each file, and reads the blocks that hold its
share (`_rows_by_position`).

A block knows only its own row count. What needs every block's
(`num_examples_per_process`, padding evaluation to the same batch count,
class counts guessed from integer labels) gathers one row of numbers per
process (`shards.gather_counts`); training shards count their rows the same
way (`shard_counts`, experiments/host_data.py).
"""

from __future__ import annotations

import os

import numpy as np

from perceiver_io.data import shards as shards_lib
from perceiver_io.data.text import csv_blocks
from perceiver_io.data.text import text_files
from perceiver_io.data.text.fields import _as_tuple
from perceiver_io.data.text.fields import UNLABELED
from perceiver_io.data.text.local import _count_invalid
from perceiver_io.data.text.local import _load_local
from perceiver_io.data.text.local import _read_table_rows
from perceiver_io.data.text.local import _read_text_docs
from perceiver_io.data.text.local import _Rows
from perceiver_io.data.text.local import _table_records
from perceiver_io.data.text.local import parse_split

LINE_KINDS = ('tsv', 'jsonl')
BLOCK_KINDS = LINE_KINDS + ('csv',)  # CSV: when plain RFC 4180 (`csv_blocks`).
_BOM = b'\xef\xbb\xbf'


def splittable(kind: str, split: str) -> bool:
  """Whether a source and split are read by byte blocks."""
  parts = parse_split(split)
  return (
    kind in BLOCK_KINDS
    and len(parts) == 1
    and parts[0].start is None
    and parts[0].stop is None
  )


def target(path: str, split: str) -> str:
  """The file a splittable split reads."""
  return path.replace('{split}', parse_split(split)[0].name)


def _size(path: str) -> int:
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'data file {path!r} does not exist (from the source path).'
    )
  return os.stat(path).st_size


def _blank(kind: str, line: str) -> bool:
  """A line the whole-file reader skips (a TSV line with a tab is a row)."""
  return not line.strip() and (kind == 'jsonl' or '\t' not in line)


def _decode(line: bytes) -> str:
  return line.decode('utf-8', errors='surrogateescape')


def _first_line(path: str, kind: str) -> tuple[int, str | None]:
  """(byte offset, text) of the file's first non-blank line, or (-1, None)."""
  with open(path, 'rb') as f:
    offset = 0
    for chunk in iter(f.readline, b''):
      bom = len(_BOM) if offset == 0 and chunk.startswith(_BOM) else 0
      begin = bom
      for found in text_files._BREAK.finditer(chunk + b'\n', begin):  # pylint: disable=protected-access
        text = _decode(chunk[begin : found.start()])
        if not _blank(kind, text):
          return offset + (0 if begin == bom else begin), text
        begin = found.end()
        if begin >= len(chunk):
          break
      offset += len(chunk)
  return -1, None


def block_lines(
  path: str, kind: str, has_header: bool, block: int, blocks: int, head=None
) -> tuple[list[str], str | None, bool]:
  """(the block's rows' lines, the file's first non-blank line, whether the
  block holds it) for block `block` of `blocks` of `path`. The first line
  (a TSV header or the first JSONL object) is left out of the lines: the
  caller adds it back; a header-less TSV has none. `head`: that line's
  (offset, text) when the caller has read it already."""
  size = _size(path)
  start, stop = text_files.byte_range(size, block, blocks)
  raw = text_files._lines(path, size, start, stop) if start < stop else []  # pylint: disable=protected-access
  if start == 0 and raw and raw[0].startswith(_BOM):
    raw[0] = raw[0][len(_BOM) :]
  lines = [t for t in map(_decode, raw) if not _blank(kind, t)]
  if kind == 'tsv' and not has_header:
    return lines, None, False
  first_offset, first = head or _first_line(path, kind)
  holds_first = start <= first_offset < stop
  return (lines[1:] if holds_first else lines), first, holds_first


def read_block(
  kind,
  path,
  split,
  block,
  blocks,
  *,
  text_fields,
  label_field,
  task,
  class_map,
  has_header,
  cuts=None,
):
  """(rows, text fields, label field) of block `block` of `blocks`; a CSV
  needs its `cuts` (`csv_cuts`)."""
  return _file_block(
    kind,
    target(path, split),
    block,
    blocks,
    dict(
      text_fields=text_fields,
      label_field=label_field,
      task=task,
      class_map=class_map,
      has_header=has_header,
    ),
    cuts,
  )


def csv_cuts(name, blocks, process_index, process_count):
  """A CSV file's record starts for `blocks` byte blocks, of which the
  process owns its share, or None if it must be read whole (not plain RFC
  4180). Every process must call it (it gathers)."""
  _size(name)

  def gather(fn, local):
    everyone = shards_lib.gather_counts(
      lambda p: fn(shards_lib.owned(blocks, p, process_count)), process_count
    )
    return (
      np.asarray(everyone(np.asarray(local, np.int64))).reshape(-1).tolist()
    )

  owned = shards_lib.owned(blocks, process_index, process_count)
  return csv_blocks.cuts(name, blocks, owned, gather)


def _csv_text(name, block, cuts, has_header):
  """Block `block` of a CSV file cut at `cuts`, with the header prepended
  when another block holds it."""
  lo, hi = cuts[block], cuts[block + 1]
  data = csv_blocks.read(name, lo, hi) if lo < hi else b''
  if has_header:
    span = csv_blocks.head(name, cuts[-1])
    if span is None:
      raise ValueError(f'{name} is empty: expected a header line and rows.')
    if not lo <= span[0] < hi:
      first = csv_blocks.read(name, *span)
      data = first + (b'' if first.endswith((b'\n', b'\r')) else b'\n') + data
  return _decode(data)


def _csv_block(name, block, cuts, read):
  return _read_table_rows(
    name,
    'csv',
    _as_tuple(read['text_fields']),
    read['label_field'],
    read['task'],
    read['class_map'],
    read['has_header'],
    text=_csv_text(name, block, cuts, read['has_header']),
  )


def _file_block(kind, name, block, blocks, read, cuts=None):
  """`read_block` of the file `name`; `read`: `_load_local`'s keywords."""
  if kind == 'text':  # MLM documents: `name` is a file pattern.
    return _read_text_docs(name, block, blocks), ('text',), False
  if kind == 'csv':
    return _csv_block(name, block, cuts, read)
  has_header = read['has_header']
  lines, first, holds_first = block_lines(name, kind, has_header, block, blocks)
  with_first = kind == 'jsonl' or has_header
  if with_first and first is None:
    what = (
      'a header line and rows' if kind == 'tsv' else 'one JSON object a line'
    )
    raise ValueError(f'{name} is empty: expected {what}.')
  return _read_table_rows(
    name,
    kind,
    _as_tuple(read['text_fields']),
    read['label_field'],
    read['task'],
    read['class_map'],
    has_header,
    text='\n'.join([first] + lines if with_first else lines),
    drop_first=kind == 'jsonl' and not holds_first,
  )


def shard_counts(
  kind: str,
  path: str,
  split: str,
  has_header: bool,
  shards,
  count: int,
  cuts=None,
) -> list[int]:
  """Rows of each of the given byte shards (of `count`), counted from their
  lines without parsing them (a CSV's, cut at `cuts`, parsed): as many as
  `read_block` gives."""
  name = target(path, split)
  if kind == 'csv':
    return [
      len(
        _table_records(
          name, kind, has_header, _csv_text(name, j, cuts, has_header)
        )[1]
      )
      for j in shards
    ]
  head = _first_line(name, kind) if kind == 'jsonl' or has_header else None
  out = []
  for j in shards:
    lines, _, holds_first = block_lines(name, kind, has_header, j, count, head)
    out.append(len(lines) + (kind == 'jsonl' and holds_first))
  return out


def _count_row(rows: _Rows, task: str) -> np.ndarray:
  """[row count, largest class id + 1 (0: none)] of some rows."""
  labelled = rows.labels[rows.labels != UNLABELED]
  top = 0
  if task != 'regression' and labelled.size:
    top = int(labelled.max()) + 1
  return np.asarray([len(rows.text_a), top], np.int64)


def process_rows(kind, path, split, process_index, process_count, **read):
  """A local source's rows for one process, and where they sit.

  Returns (rows, text fields, label field, every process's row count, the
  split position of rows[0], largest class id + 1 in the split or 0).
  With several processes a TSV, JSONL or plain RFC 4180 CSV split is read
  by byte blocks: an unsliced one-file split gives each process its block's
  rows (one read); any other (a slice, several parts, or a block that would
  hold no row) gives process i the split's rows [iR/P, (i+1)R/P) of R, read
  from the blocks that hold them (`_rows_by_position`). Anything else (and
  a CSV whose quotes break the rule) is read whole and cut the same way.
  `read`: `_load_local`'s keywords.
  """
  cuts = None
  if process_count > 1 and kind == 'csv' and splittable(kind, split):
    name = target(path, split)
    cuts = csv_cuts(name, process_count, process_index, process_count)
  if (
    process_count > 1
    and splittable(kind, split)
    and (kind != 'csv' or cuts is not None)
  ):
    rows, fields, label = read_block(
      kind, path, split, process_index, process_count, **read, cuts=cuts
    )
    gather = shards_lib.gather_counts(
      lambda p: _count_row(
        read_block(kind, path, split, p, process_count, **read, cuts=cuts)[0],
        read['task'],
      ),
      process_count,
    )
    counts = np.asarray(gather(_count_row(rows, read['task']))).reshape(-1, 2)
    sizes = [int(n) for n in counts[:, 0]]
    if min(sizes) > 0:  # Else a line is longer than a block.
      offset = sum(sizes[:process_index])
      return rows, fields, label, sizes, offset, int(counts[:, 1].max())
  if process_count > 1 and kind in BLOCK_KINDS + ('text',):
    found = _rows_by_position(
      kind, path, split, process_index, process_count, read
    )
    if found is not None:
      return found
  rows, fields, label = _load_local(kind, path, split, **read)
  total = len(rows.text_a)
  sizes = np.diff(shards_lib.bounds(total, process_count)).tolist()
  return rows, fields, label, sizes, 0, int(_count_row(rows, read['task'])[1])


def _rows_by_position(kind, path, split, index, count, read):
  """`process_rows` for any split of line tables, by row position.

  Every process counts the rows of its byte block of each file the split
  names (it reads and keeps them); the gathered counts place every block's
  rows in its file, so the split's rows (slices applied, parts joined, as
  `_load_local` selects them) have known blocks. Process i then reads the
  blocks holding its share [iR/P, (i+1)R/P) (its own and, as a slice moves
  the share, a neighbour's), so no process reads a whole file that its
  share does not span. None: a CSV file must be read whole.
  """
  parts = parse_split(split)
  names = list(dict.fromkeys(path.replace('{split}', p.name) for p in parts))
  cuts = {}
  for name in names if kind == 'csv' else ():
    cuts[name] = csv_cuts(name, count, index, count)
    if cuts[name] is None:
      return None
  cache = {}

  def block(name, b):
    if (name, b) not in cache:
      cache[name, b] = _file_block(kind, name, b, count, read, cuts.get(name))
    return cache[name, b]

  gather = shards_lib.gather_counts(
    lambda p: [
      len(_file_block(kind, n, p, count, read, cuts.get(n))[0].text_a)
      for n in names
    ],
    count,
  )
  own = [len(block(name, index)[0].text_a) for name in names]
  counts = np.asarray(gather(np.asarray(own, np.int64)))
  counts = counts.reshape(count, len(names))
  starts = {  # Each file's row position of each block's first row.
    name: np.concatenate([[0], np.cumsum(counts[:, k])]).tolist()
    for k, name in enumerate(names)
  }
  segments = []
  for part in parts:
    name = path.replace('{split}', part.name)
    segments.append((name, part.indices(starts[name][-1])))
  edges = shards_lib.bounds(sum(len(r) for _, r in segments), count)

  def rows_of(p):
    pieces, pos = [], 0
    for name, rows in segments:
      lo, hi = max(edges[p], pos), min(edges[p + 1], pos + len(rows))
      if lo < hi:  # File rows [first, last) of this part.
        first, last = rows[lo - pos], rows[hi - pos - 1] + 1
        for b in range(count):
          b_lo, b_hi = starts[name][b], starts[name][b + 1]
          if b_lo < last and first < b_hi:
            keep = range(max(first, b_lo) - b_lo, min(last, b_hi) - b_lo)
            pieces.append((block(name, b)[0], keep))
      pos += len(rows)
    return _join(pieces, read['task'])

  rows = rows_of(index)
  gather = shards_lib.gather_counts(
    lambda p: _count_row(rows_of(p), read['task']), count
  )
  top = np.asarray(gather(_count_row(rows, read['task']))).reshape(-1, 2)
  _, fields, label = block(names[0], index)
  sizes = np.diff(edges).tolist()
  return rows, fields, label, sizes, edges[index], int(top[:, 1].max())


def _join(pieces, task) -> _Rows:
  """The rows `keep` of each (rows, keep), in order, as one `_Rows`."""
  pair = bool(pieces) and pieces[0][0].text_b is not None
  text_a = [r.text_a[i] for r, keep in pieces for i in keep]
  text_b = [r.text_b[i] for r, keep in pieces for i in keep] if pair else None
  dtype = np.float32 if task == 'regression' else np.int64
  labels = [r.labels[keep.start : keep.stop] for r, keep in pieces]
  invalid = sum(_count_invalid(r, keep) for r, keep in pieces)
  return _Rows(
    text_a,
    text_b,
    np.concatenate(labels).astype(dtype) if labels else np.zeros(0, dtype),
    invalid,
  )
