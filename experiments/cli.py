"""Helpers shared by the launchers (no flags here: only train/evaluate/predict
define flags).

Why: `ml_collections` already refuses unknown fields of a locked config, but
it does so with a traceback from inside flag parsing. Users should see one
line naming the bad field and the closest valid ones, so the launchers check
`--config.*` overrides before absl parses them.
"""

import contextlib
import difflib
import importlib.util
import io
import logging
import os
import re
import sys
import tokenize
from typing import Dict, List, Optional

import ml_collections


def config_path_and_arg(value: str):
  path, _, arg = value.partition(':')
  return path, arg


def add_repo_root_for(config_path: str) -> None:
  """Lets config files `from configs import common` from any cwd."""
  parent = os.path.dirname(os.path.abspath(config_path))
  if os.path.basename(parent) == 'configs':
    root = os.path.dirname(parent)
    if root not in sys.path:
      sys.path.insert(0, root)


_CONFIG_FILE_CONTRACT = (
  'a config file is a .py module defining get_config(arg: str = "") -> '
  'ml_collections.ConfigDict, e.g. --config=configs/quickstart.py or '
  'configs/glue_bytes.py:cola.'
)


def load_config_file(value: str) -> ml_collections.ConfigDict:
  """Loads `path[:arg]` the way `config_flags.DEFINE_config_file` does."""
  path, arg = config_path_and_arg(value)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'config file {path!r} not found; expected e.g. '
      '--config=configs/quickstart.py or '
      'configs/glue_bytes.py:cola.'
    )
  add_repo_root_for(path)
  spec = importlib.util.spec_from_file_location('_experiment_config', path)
  if spec is None or spec.loader is None:
    raise ValueError(
      f'config file {path!r} is not a Python module; {_CONFIG_FILE_CONTRACT}'
    )
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(
      f'config file {path!r} is not valid Python (line '
      f'{e.lineno}: {e.msg}); {_CONFIG_FILE_CONTRACT}'
    ) from e
  if not callable(getattr(module, 'get_config', None)):
    raise ValueError(
      f'config file {path!r} defines no get_config function; '
      f'{_CONFIG_FILE_CONTRACT}'
    )
  return module.get_config(arg) if arg else module.get_config()


def field_error(config, dotted: str) -> Optional[str]:
  """None if `dotted` names a field of `config`, else an error message."""
  node = config
  parts = dotted.split('.')
  for i, part in enumerate(parts):
    if isinstance(node, ml_collections.ConfigDict) and part in node:
      node = node[part]
      continue
    where = '.'.join(parts[:i])
    if not isinstance(node, ml_collections.ConfigDict):
      return (
        f'config field {where!r} is a {type(node).__name__}, it has no '
        f'sub-field {part!r}.'
      )
    valid = sorted(node.keys())
    close = difflib.get_close_matches(part, valid, n=3, cutoff=0.5)
    prefix = f'{where}.' if where else ''
    suggestions = [prefix + c for c in close]
    if i == len(parts) - 1:  # A leaf set at the wrong level: same name.
      suggestions += [
        p for p in fields_named(config, part) if p not in suggestions
      ]
    hint = f' Did you mean {", ".join(suggestions)}?' if suggestions else ''
    return (
      f'unknown config field {dotted!r}.{hint} Valid fields'
      f'{" of " + where if where else ""}: '
      f'{", ".join(valid) or "none"}.'
    )
  return None


def fields_named(config, name: str, prefix: str = '') -> List[str]:
  """Dotted paths of every field called `name` in `config`, at any depth.

  Why: a field set at the wrong level (`model.kwargs.num_classes` for
  `data.num_classes`) is not a misspelling; its right place is only found
  by its name.
  """
  paths = []
  for key in sorted(config.keys()):
    value = config[key]
    if key == name:
      paths.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      paths += fields_named(value, name, f'{prefix}{key}.')
  return paths


def override_names(argv: List[str], flag: str = 'config') -> List[str]:
  """Dotted field names of `--config.x.y=...` / `--config.x.y ...` args."""
  names = []
  prefix = f'--{flag}.'
  for arg in argv:
    if arg.startswith(prefix):
      names.append(arg[len(prefix) :].split('=', 1)[0])
  return names


def check_overrides_or_exit(argv: List[str], flag: str = 'config') -> None:
  """Exits with status 2 and one clear line for a bad config override."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{flag}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{flag}' and i + 1 < len(argv):
      value = argv[i + 1]
  if value is None:
    return
  try:
    config = load_config_file(value)
  except (FileNotFoundError, ValueError) as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)
  for name in override_names(argv, flag):
    message = field_error(config, name)
    if message:
      sys.stderr.write(f'error: {message}\n')
      sys.exit(2)


@contextlib.contextmanager
def one_line_errors(*expected: type):
  """The launchers' error policy: a bad input (ValueError,
  FileNotFoundError, or `expected`) or running out of memory ends the
  process with one `error: ...` line on stderr and exit code 1; anything
  else is a bug and keeps its traceback."""
  try:
    yield
  except (ValueError, FileNotFoundError) + tuple(expected) as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except
    message = out_of_memory_error(e)
    if message is None:
      raise
    sys.stderr.write(f'error: {message}\n')
    sys.exit(1)


def out_of_memory_error(error: BaseException) -> Optional[str]:
  """One line for an out-of-memory failure (XLA's is a page long), or None
  if `error` is not one."""
  text = str(error)
  if 'RESOURCE_EXHAUSTED' not in text and 'Out of memory' not in text:
    return None
  size = re.search(r'(\d+(?:\.\d+)?\s*(?:[KMGT]i?B|bytes))', text)
  return (
    'out of memory'
    + (f' (an allocation of {size.group(1)})' if size else '')
    + ': lower --config.eval_batch_size (evaluation) or '
    '--config.batch_size (training; --config.optimizer.accumulate_steps'
    '=k keeps the effective batch), or compute in less memory with '
    '--config.model.remat=True / --config.model.dtype=bfloat16.'
  )


def quiet_library_logs() -> None:
  """Orbax logs every checkpoint step at INFO through absl; keep the
  runner's own INFO lines (root logger) and only warnings from absl users."""
  logging.getLogger('absl').setLevel(logging.WARNING)
  for name in ('orbax', 'jax._src.xla_bridge'):
    logging.getLogger(name).setLevel(logging.WARNING)
  logging.getLogger('absl').addFilter(one_line_orbax_errors)


def one_line_orbax_errors(record) -> bool:
  """Orbax logs a failure in each of its background threads with a full
  traceback (a full disk: ~350 lines) before the runner reports the same
  failure in one line; keep Orbax's lines, drop their tracebacks. Also
  drops Orbax's warning at every save between evaluations (those steps
  carry no metric by design: only evaluated steps compete for 'best')."""
  if '/orbax/' not in record.pathname.replace('\\', '/'):
    return True
  if str(record.msg).startswith('Requested `tracked_metric`'):
    return False
  if record.exc_info:
    record.exc_info, record.exc_text = None, None
  return True


def maybe_initialize_distributed(
  coordinator_address: str, num_processes: int, process_id: int
) -> None:
  """`jax.distributed.initialize` for multi-host (or 2-process CPU) runs."""
  if not coordinator_address and num_processes <= 1:
    return
  # Not at the top: the launchers import this module before
  # `process_tuning.configure_process`, which must run before JAX loads.
  import jax  # pylint: disable=g-import-not-at-top

  kwargs = {}
  if coordinator_address:
    kwargs.update(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
    )
  jax.distributed.initialize(**kwargs)


# ----------------------------------------------------------------------------
# --helpfull: the config's fields.
# ----------------------------------------------------------------------------

_HELP_FLAGS = ('--help', '-help', '--helpfull', '-helpfull', '--helpshort')
_FIELD_LINE = re.compile(r'\s*c\.([A-Za-z_][\w.]*)\s*=(?!=)')


def field_comments(source: str) -> Dict[str, str]:
  """Dotted field -> the comment at its first `c.<field> = ...` line in
  the Python `source`: the line's own comment, else the comment lines right
  above it."""
  comments = {}
  by_line = {}
  try:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
      if token.type == tokenize.COMMENT:
        by_line[token.start[0]] = token.string.lstrip('#').strip()
  except (tokenize.TokenError, SyntaxError):
    return comments
  block = []
  for number, line in enumerate(source.splitlines(), 1):
    if line.strip().startswith('#'):
      block.append(by_line.get(number, ''))
      continue
    match = _FIELD_LINE.match(line)
    if match:
      text = by_line.get(number) or ' '.join(block)
      if text:
        comments.setdefault(match.group(1), text)
    block = []
  return comments


def config_field_lines(config, comments: Dict[str, str], prefix='') -> list:
  """'--config.<field> (default: <value>): <comment>' for every leaf."""
  lines = []
  for key in sorted(config.keys()):
    value, name = config[key], prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      lines += config_field_lines(value, comments, name + '.')
      continue
    comment = comments.get(name, '')
    lines.append(
      f'--config.{name} (default: {value!r})'
      + (f': {comment}' if comment else '')
    )
  return lines


def list_config_fields_in_help(argv: List[str], flag_values) -> None:
  """With a help flag and `--config=<file>` in `argv`, appends every field
  of that config (with its default and comment) to the --config flag's help.

  Why: absl registers `--config` as one flag and `--config.<field>` flags
  only for the fields given on the command line, so `--helpfull` listed
  none of the settable fields. The comments are read from the config
  files' source (`configs/common.py`, where every shared field is
  commented, then the given file for the fields it adds): the comment next
  to a field is its documentation, kept in one place, so a description
  table could not drift from it.
  """
  if not any(arg in _HELP_FLAGS for arg in argv):
    return
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
  if not value:
    return
  try:
    config = load_config_file(value)
  except (FileNotFoundError, ValueError) as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)
  from configs import common  # pylint: disable=g-import-not-at-top

  comments = {}
  for path in (common.__file__, config_path_and_arg(value)[0]):
    with open(path, encoding='utf-8') as f:
      for name, text in field_comments(f.read()).items():
        comments.setdefault(name, text)
  flag = flag_values['config']
  flag.help = '\n'.join(
    [
      flag.help,
      f'Fields of {value} (set one with --config.<field>=<value>):',
      *config_field_lines(config, comments),
    ]
  )
