"""Shared pieces of the property tests (tests/test_properties_*.py).

Why: every reader of user files has the same contract, checked the same
way: it returns a correct result or raises the project's own error, one
line that names the file. The strategies here start from a valid file and
damage it (truncate, flip, insert or replace bytes, empty it); `outcome`
checks the contract and counts what it saw, so that the number of generated
cases and the error classes can be reported (set PROPERTY_STATS=<file.json>
and the counts are written there when the test process exits).
"""

import atexit
import collections
import contextlib
import json
import os
import shutil
import struct
import tempfile
import zlib

from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import pytest

# Examples per property: the fast tier stays at a few seconds per file, the
# slow-marked twins explore further.
FAST = 30
SLOW = 300

# Library exceptions that must never reach the user, even as ValueError
# subclasses: they carry no file name and often several lines.
RAW_ERRORS = (UnicodeError, json.JSONDecodeError)

STATS = collections.defaultdict(collections.Counter)


def _write_stats():
  target = os.environ.get('PROPERTY_STATS')
  if not target or not STATS:
    return
  merged = {}
  if os.path.exists(target):
    with open(target, encoding='utf-8') as f:
      merged = json.load(f)
  for reader, counts in STATS.items():
    into = merged.setdefault(reader, {})
    for key, n in counts.items():
      into[key] = into.get(key, 0) + n
  with open(target, 'w', encoding='utf-8') as f:
    json.dump(merged, f, indent=1, sort_keys=True)


atexit.register(_write_stats)


def twin_tests(body, strategy, fast=FAST, slow=SLOW):
  """(fast test, slow-marked test) of one property over `strategy`."""
  from hypothesis import given  # pylint: disable=g-import-not-at-top

  common = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
  )
  fast = settings(max_examples=fast, **common)(given(strategy)(body))
  slow = settings(max_examples=slow, **common)(given(strategy)(body))
  return fast, pytest.mark.slow(slow)


@contextlib.contextmanager
def scratch_dir():
  """A fresh folder per example (pytest's tmp_path is per test, not per
  Hypothesis example)."""
  path = tempfile.mkdtemp(prefix='prop-')
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def make_session_dir():
  """A folder for templates shared by the examples of a test run, removed
  when the process exits."""
  path = tempfile.mkdtemp(prefix='prop-session-')
  atexit.register(shutil.rmtree, path, True)
  return path


def write_bytes(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return path


# ------------------------------------------------------------------ mutations
@st.composite
def mutated(draw, valid: bytes, extra=None):
  """(kind, bytes): `valid` unchanged or damaged in one of several ways.

  `extra` adds reader-specific damage: name -> strategy of whole files.
  """
  extra = extra or {}
  kinds = [
    'valid',
    'truncate',
    'flip',
    'insert',
    'random',
    'empty',
    'latin1',
  ] + sorted(extra)
  kind = draw(st.sampled_from(kinds))
  if kind == 'flip' and not valid:
    kind = 'insert'
  if kind == 'valid':
    return kind, valid
  if kind == 'truncate':
    cut = draw(st.integers(0, max(0, len(valid) - 1)))
    return kind, valid[:cut]
  if kind == 'flip':
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
      i = draw(st.integers(0, len(data) - 1))
      data[i] = draw(st.integers(0, 255))
    return kind, bytes(data)
  if kind == 'insert':
    i = draw(st.integers(0, len(valid)))
    return kind, valid[:i] + draw(st.binary(min_size=1, max_size=16)) + (
      valid[i:]
    )
  if kind == 'random':
    return kind, draw(st.binary(max_size=256))
  if kind == 'empty':
    return kind, b''
  if kind == 'latin1':  # Non-UTF-8 text: a byte >= 0x80 on its own.
    i = draw(st.integers(0, len(valid)))
    return kind, valid[:i] + bytes([draw(st.integers(0x80, 0xFF))]) + (
      valid[i:]
    )
  return kind, draw(extra[kind])


# ------------------------------------------------------------------- contract
def error_class(error: BaseException) -> str:
  return type(error).__name__


def check_error(error: BaseException, names, allowed=(ValueError,)):
  """Asserts `error` is the project's one-line error naming the file.

  `names` are the strings any of which identifies the file (its path, its
  base name); `allowed` the project's error types for this reader.
  """
  assert isinstance(error, allowed + (FileNotFoundError,)), (
    f'raw {type(error).__module__}.{type(error).__name__}: {error}'
  )
  assert not isinstance(error, RAW_ERRORS), (
    f'raw {type(error).__name__}: {error}'
  )
  message = str(error)
  assert message and '\n' not in message, f'not one line: {message!r}'
  assert any(n in message for n in names), (
    f'the message names none of {names}: {message}'
  )


def outcome(reader: str, kind: str, read, names, allowed=(ValueError,)):
  """Runs `read()`; returns its result or None after checking the error.

  Counts (reader, mutation kind -> 'ok' or the error class).
  """
  try:
    result = read()
  except Exception as e:  # pylint: disable=broad-except
    STATS[reader]['cases'] += 1
    STATS[reader][f'error:{error_class(e)}'] += 1
    STATS[reader][f'{kind}:{error_class(e)}'] += 1
    check_error(e, names, allowed)
    return None
  STATS[reader]['cases'] += 1
  STATS[reader]['ok'] += 1
  STATS[reader][f'{kind}:ok'] += 1
  return result


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  crc = zlib.crc32(kind + data) & 0xFFFFFFFF
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', crc)


@st.composite
def png_claiming(draw, depth=16, colour=2):
  """A PNG whose header (with a valid CRC) claims any size up to 2^32 - 1
  pixels a side, over a few bytes of image data. Sides whose image would
  fit in memory but take gigabytes are left out: a reader may allocate
  them before finding the data short."""
  side = st.sampled_from([0, 1, 3, 65536, 2**31 - 1, 2**32 - 1])
  ihdr = struct.pack('>IIBBBBB', draw(side), draw(side), depth, colour, 0, 0, 0)
  return (
    b'\x89PNG\r\n\x1a\n'
    + _png_chunk(b'IHDR', ihdr)
    + _png_chunk(b'IDAT', zlib.compress(draw(st.binary(max_size=64))))
    + _png_chunk(b'IEND', b'')
  )
