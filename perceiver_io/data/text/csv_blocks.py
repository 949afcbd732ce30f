"""Where byte blocks of a CSV file start their first record.

Why: a quoted CSV field may hold line breaks, so a line break after a
block's first byte need not end a record, and whether it does depends on
everything before it. In plain RFC 4180 CSV (every quote opens or closes a
quoted field or is one half of a doubled quote) a position is inside a
quoted field exactly when an odd number of quotes precede it. So each
process counts the quotes of its byte block only, the counts' parities are
gathered, and every block knows its starting state without reading what
comes before it: block b holds the records that start in its bytes, from
the first record start at or after its first byte (`next_record`).

That parity rule is the csv module's reading only for plain RFC 4180 text.
A quote inside an unquoted field (``a"b``) or text after a closing quote
(``"a"b``) are read by the csv module as literal characters, and would
flip the parity. So every process checks its records (`conforms`) and the
answers are gathered: if any block breaks the rule, the caller reads the
file whole (its cuts are None). Given that every block conforms, each
block's state at its first byte is the true one (by induction from byte 0),
so the cuts are exactly the csv module's record starts.

Line breaks are ``\\r\\n``, ``\\r`` and ``\\n``, as the csv module reads them
(``newline=''``); quotes, commas and breaks are ASCII, so bytes are scanned
without decoding (no UTF-8 sequence holds them).
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from typing import Callable

_SPECIAL = re.compile(rb'["\r\n]')
_BOM = b'\xef\xbb\xbf'
_CHUNK = 1 << 16
_FIRST_CHUNK = 1 << 10  # A record's end is usually near: read little first.
# What may follow a closing quote or precede an opening one.
_FIELD_EDGE = (b',', b'\r', b'\n')


def quote_parity(path: str, start: int, stop: int) -> int:
  """The parity of the number of quotes in bytes [start, stop)."""
  count = 0
  with open(path, 'rb') as f:
    f.seek(start)
    left = stop - start
    while left > 0:
      chunk = f.read(min(_CHUNK, left))
      if not chunk:
        break
      count += chunk.count(b'"')
      left -= len(chunk)
  return count % 2


def next_record(path: str, size: int, pos: int, inside: bool) -> int:
  """The first record start at or after byte `pos` (or `size`), given
  whether `pos` is inside a quoted field (quote parity of bytes [0, pos))."""
  if pos <= 0:
    return 0
  if pos >= size:
    return size
  with open(path, 'rb') as f:
    offset = pos - 1  # A break ending at `pos` starts a record there.
    f.seek(offset)
    step = _FIRST_CHUNK
    data = f.read(step)
    inside ^= data[:1] == b'"'  # The state before byte pos - 1.
    while data:
      for found in _SPECIAL.finditer(data):
        char, j = found.group(), found.start()
        if char == b'"':
          inside = not inside
        elif not inside and char == b'\n':
          return offset + j + 1
        elif not inside:  # '\r': alone, or the first half of '\r\n'.
          after = data[j + 1 : j + 2] or f.read(1)
          return offset + j + 1 + (after == b'\n')
      offset += len(data)
      step = min(2 * step, _CHUNK)
      data = f.read(step)
  return size


def conforms(data: bytes) -> bool:
  """Whether records (starting outside quotes) are plain RFC 4180: each
  quote opens a field, closes one, or is half of a doubled quote inside
  one; and they end outside quotes."""
  parts = data.split(b'"')
  if len(parts) % 2 == 0:
    return False  # A quoted field left open.
  for k in range(0, len(parts), 2):  # The text outside quotes.
    text = parts[k]
    if not text:
      continue  # A doubled quote, or a quote at the start of a record.
    if k > 0 and text[:1] not in _FIELD_EDGE:
      return False
    if k < len(parts) - 1 and text[-1:] not in _FIELD_EDGE:
      return False
  return True


def read(path: str, start: int, stop: int) -> bytes:
  """Bytes [start, stop), without the byte order mark at the file's start."""
  with open(path, 'rb') as f:
    f.seek(start)
    data = f.read(max(0, stop - start))
  return data[len(_BOM) :] if start == 0 and data.startswith(_BOM) else data


def head(path: str, size: int) -> tuple[int, int] | None:
  """Byte span of the file's first record that is not blank (the csv
  module's reading: no fields, or one blank field), or None. Every block
  a process reads needs it: found once per file version."""
  return _head(path, size, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _head(path: str, size: int, mtime_ns: int) -> tuple[int, int] | None:
  del mtime_ns  # Part of the cache key only.
  with open(path, 'rb') as f:
    start = len(_BOM) if f.read(len(_BOM)) == _BOM else 0
  while start < size:
    stop = next_record(path, size, start + 1, _starts_quote(path, start))
    text = _decode(read(path, start, stop))
    try:
      fields = next(csv.reader(io.StringIO(text, newline='')), [])
    except csv.Error:  # A long field: not blank (the reader says more).
      return start, stop
    if fields and not (len(fields) == 1 and not fields[0].strip()):
      return start, stop
    start = stop
  return None


def _starts_quote(path: str, pos: int) -> bool:
  with open(path, 'rb') as f:
    f.seek(pos)
    return f.read(1) == b'"'


def _decode(data: bytes) -> str:
  return data.decode('utf-8', errors='surrogateescape')


def cuts(
  path: str,
  blocks: int,
  owned: range,
  gather: Callable[[Callable[[range], list], list], list],
) -> list[int] | None:
  """Record starts of `blocks` byte blocks (blocks + 1 offsets, the last
  the file's size), or None where a block breaks plain RFC 4180.

  `owned`: this process's blocks (contiguous); `gather(fn, local)`: every
  process's `fn(owned)` in process order, flattened, from this process's
  `local` (see `line_tables`). Reads this process's blocks and, past the
  last, on to the end of its last record.
  """
  size = os.stat(path).st_size
  edges = [size * j // blocks for j in range(blocks + 1)]

  def parities(mine: range) -> list[int]:
    return [quote_parity(path, edges[j], edges[j + 1]) for j in mine]

  flips = gather(parities, parities(owned))
  inside = [False]
  for flip in flips:
    inside.append(inside[-1] ^ bool(flip))

  def starts(mine: range) -> list[int]:
    """Record starts of `mine`, the end of its last record, and whether
    its records conform (1 or 0)."""
    found = [
      next_record(path, size, edges[j], inside[j])
      for j in range(mine.start, mine.stop + 1)
    ]
    return found + [int(conforms(read(path, found[0], found[-1])))]

  per = len(owned) + 2
  every = gather(starts, starts(owned))
  rows = [every[k : k + per] for k in range(0, len(every), per)]
  if not all(row[-1] for row in rows):
    return None
  return [start for row in rows for start in row[:-2]] + [size]
