"""The workdir's JSON files: written atomically, read back in one-line errors.

Why a module of its own: every file of a workdir (config.json, model.json,
data_info.json, metrics.jsonl) goes through these few functions, and a
damaged file must name itself in one line (tests/test_properties_workdir.py)
rather than surface as a UnicodeDecodeError or RecursionError.
"""

import json
import os
from typing import Any, Dict


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to a temp file and renames it (no half-written files)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  """A JSON file's value; a damaged file is one ValueError naming it.

  Why not `json.load` alone: non-UTF-8 bytes, integers of over 4300 digits
  and deep nesting raise other errors (UnicodeDecodeError, a bare
  ValueError, RecursionError) that name no file.
  """
  with open(path, 'rb') as f:
    data = f.read()
  return json_value(data, path)


def json_value(data: bytes, where: str) -> Any:
  try:
    return json.loads(data.decode('utf-8-sig'))
  except UnicodeDecodeError as e:
    raise ValueError(
      f'{where} is not UTF-8 text (byte {e.start}); a workdir file is '
      'JSON written by experiments.train.'
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(
      f'{where} is not valid JSON ({e.msg} at line {e.lineno} column '
      f'{e.colno}).'
    ) from None
  except ValueError as e:  # An integer too long to convert.
    raise ValueError(f'{where} is not usable JSON ({e}).') from None
  except RecursionError:
    raise ValueError(
      f'{where} is not usable JSON (nested too deeply).'
    ) from None


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')
