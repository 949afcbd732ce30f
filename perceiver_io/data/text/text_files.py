"""Plain-text documents (``text:GLOB``, one non-empty line each), per process.

Why: an MLM corpus is many or large files; if every process read all of
them, adding hosts would add no input capacity. The sorted files are one
byte stream of N bytes (sizes from ``os.stat``, nothing read). Process i of
P owns the bytes [iN/P, (i+1)N/P) and every line whose first byte lies
there: it reads one byte before its range (does a line start at its first
byte?), its range, and past the range's end only the rest of its last line
(``readline``: a file with lone ``\\r`` line ends reads on to the next
``\\n``). Lines are those of ``bytes.splitlines`` (``\\n``, ``\\r\\n``,
``\\r``) and a file's end ends a line, so one process reads each file whole
and gets exactly the documents, in order, of reading every file whole;
with P processes each document goes to exactly one, in file order.

A process knows only its own document count; what needs the others'
(split slices, evaluation batch counts) gathers them: see
`perceiver_io.data.text.mlm`.
"""

from __future__ import annotations

import glob
import os
import re

_BREAK = re.compile(rb'\r\n|\r|\n')


def text_files(pattern: str) -> list[tuple[str, int]]:
  """(path, size in bytes) of the sorted files matching `pattern`."""
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise FileNotFoundError(f'no text files match {pattern!r}.')
  return [(p, os.stat(p).st_size) for p in paths]


def byte_range(total: int, process_index: int, process_count: int):
  """Process `process_index`'s bytes [start, stop) of a `total`-byte stream."""
  return (
    total * process_index // process_count,
    total * (process_index + 1) // process_count,
  )


def read_documents(
  pattern: str, process_index: int = 0, process_count: int = 1
) -> list[bytes]:
  """The non-empty lines whose first byte is in this process's range."""
  files = text_files(pattern)
  start, stop = byte_range(
    sum(size for _, size in files), process_index, process_count
  )
  docs, offset = [], 0
  for path, size in files:
    first, last = max(start - offset, 0), min(stop - offset, size)
    if first < last:
      docs += [line for line in _lines(path, size, first, last) if line.strip()]
    offset += size
  return docs


def _lines(path: str, size: int, start: int, stop: int) -> list[bytes]:
  """The lines of one file that start in its bytes [start, stop)."""
  with open(path, 'rb') as f:
    if start == 0 and stop >= size:
      return f.read().splitlines()
    begin = max(start - 1, 0)
    f.seek(begin)
    data = f.read(stop - begin)
    first = 0
    if start > 0:  # The first line start after byte start - 1.
      found = _BREAK.search(data)
      if found is None or found.end() >= len(data):
        return []  # Every byte of the range is inside one earlier line.
      first = found.end()
    if data[-1:] not in (b'\n', b'\r'):  # Finish the last line.
      rest = f.readline()
      found = _BREAK.search(rest)
      data += rest if found is None else rest[: found.start()]
    return data[first:].splitlines()
