"""Helpers shared by the launchers (no flags here: only train/evaluate/predict
define flags).

Why: `ml_collections` already refuses unknown fields of a locked config, but
it does so with a traceback from inside flag parsing. Users should see one
line naming the bad field and the closest valid ones, so the launchers check
`--config.*` overrides before absl parses them.

The `--config` flag also loads what a config file alone cannot give
(`ConfigFileParser`): the model preset's sizes in `model.kwargs`
(`fill_model_kwargs`), and a workdir's saved config.json, which evaluate
and predict use for `--config.*` overrides given with `--workdir` but
without `--config` (`with_workdir_config`).
"""

import contextlib
import difflib
import importlib.util
import io
import json
import logging
import os
import re
import sys
import tokenize
from typing import Dict, List, Optional

from absl import flags as absl_flags
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


# Preset arguments that are not sizes of the config's model: the head's
# class count is data.num_classes (the task sizes the head from it).
NOT_MODEL_KWARGS = ('num_classes',)


def fill_model_kwargs(
  config: ml_collections.ConfigDict, preset: Optional[str] = None
) -> ml_collections.ConfigDict:
  """Adds the preset's size arguments missing from config.model.kwargs.

  Why: config files list only the sizes they change, so the others could
  not be overridden (`--config.model.kwargs.max_seq_len=128` was an
  unknown field) and were not recorded in the run's config.json. Filled in
  with the preset's defaults they build the same model. `preset`: the one
  the run will use (a `--config.model.preset=` override), default
  config.model.preset.
  """
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top

  model = config.get('model')
  if not isinstance(model, ml_collections.ConfigDict):
    return config
  try:
    sizes = presets.size_kwargs(preset or model.get('preset', ''))
  except ValueError:  # An unknown preset: reported when the model is built.
    return config
  with config.unlocked():
    if not isinstance(model.get('kwargs'), ml_collections.ConfigDict):
      model.kwargs = ml_collections.ConfigDict()
    for name, value in sizes.items():
      if name not in NOT_MODEL_KWARGS and name not in model.kwargs:
        model.kwargs[name] = value
  return config


def flag_value(argv: List[str], name: str) -> Optional[str]:
  """The last value of `--name=V` / `--name V` in argv, else None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


SAVED_CONFIG = 'config.json'


def load_saved_config(path: str) -> ml_collections.ConfigDict:
  """A run's saved config.json (experiments.train writes it) as a config."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'{path} not found: {os.path.dirname(path) or "."!r} is not a workdir '
      'written by experiments.train (expected config.json and checkpoints/ '
      'in it).'
    )
  try:
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON ({e}).') from None
  if not (
    isinstance(saved, dict)
    and 'task' in saved
    and all(isinstance(saved.get(k), dict) for k in ('model', 'data'))
  ):
    raise ValueError(
      f'{path} is not an experiment config (no task/model/data fields); '
      'give --config=configs/<family>.py[:<variant>].'
    )
  return ml_collections.ConfigDict(saved)


def load_launcher_config(value: str, argv: List[str]):
  """What `--config=value` means to the launchers: a config file
  (`path[:arg]`) with the preset's sizes filled in, or a run's saved
  config.json as it was saved."""
  if value.endswith('.json'):
    return load_saved_config(value)
  preset = flag_value(argv, 'config.model.preset')
  return fill_model_kwargs(load_config_file(value), preset)


class ConfigFileParser(absl_flags.ArgumentParser):
  """`--config` values as `load_launcher_config` reads them.

  Install with `flags.FLAGS[name].parser = ConfigFileParser(name)` after
  `config_flags.DEFINE_config_file(name, ...)`: the flag keeps
  ml_collections' override parsing and typing; only loading differs.
  """

  def __init__(self, name: str, lock_config: bool = True):
    self.name = name
    self._lock_config = lock_config

  def parse(self, argument):
    config = load_launcher_config(argument, sys.argv)
    if self._lock_config:
      config.lock()
    return config

  def flag_type(self):
    return 'config object'


# Model fields evaluate and predict may override on a trained workdir: how
# the model computes, not what it is (workdir.COMPUTE_OPTIONS).
WORKDIR_MODEL_OVERRIDES = tuple(
  f'model.{k}'
  for k in (
    'dtype',
    'remat',
    'remat_policy',
    'query_chunk_size',
    'attention_impl',
  )
)


def with_workdir_config(argv: List[str], flag: str = 'config') -> List[str]:
  """argv, with `--config=<workdir>/config.json` first if it has
  `--config.*` overrides (or asks for help) and `--workdir` but no
  `--config`.

  Why: the overrides need a config to apply to; the run's own is the one
  evaluate and predict would use without them.
  """
  workdir = flag_value(argv, 'workdir')
  if not workdir or flag_value(argv, flag) is not None:
    return list(argv)
  wants_fields = any(arg in _HELP_FLAGS for arg in argv)
  if not override_names(argv, flag) and not wants_fields:
    return list(argv)
  return (
    argv[:1] + [f'--{flag}={os.path.join(workdir, SAVED_CONFIG)}'] + argv[1:]
  )


def config_or_exit(value: str, argv: List[str]):
  """The launcher's config of `--config=value`, or exit 2 with one line
  (flags are checked before absl parses them)."""
  try:
    return load_launcher_config(value, argv)
  except (FileNotFoundError, ValueError) as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)


def model_override_error(names: List[str]) -> Optional[str]:
  """Why an override of a workdir's model is refused, or None."""
  for name in names:
    if name in WORKDIR_MODEL_OVERRIDES:
      continue
    if name == 'task' or name == 'model' or name.startswith('model.'):
      return (
        f'--config.{name} would change the model, but evaluate and predict '
        "use the workdir's trained model (its model.json); train another "
        f'run to change it. On a workdir, the model fields that may change '
        f'are how it computes: {", ".join(WORKDIR_MODEL_OVERRIDES)}.'
      )
  return None


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
      suggestions = fields_named(config, part) or suggestions
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


def check_overrides_or_exit(
  argv: List[str], flag: str = 'config', model_from_workdir: bool = False
) -> None:
  """Exits with status 2 and one clear line for a bad config override.

  `model_from_workdir` (evaluate, predict): with --workdir, the model is
  the workdir's, so overrides that would change it are refused.
  """
  value = flag_value(argv, flag)
  names = override_names(argv, flag)
  if value is None:
    if names:
      sys.stderr.write(
        f'error: --{flag}.{names[0]} needs a config to override: add '
        f'--{flag}=configs/<family>.py[:<variant>]'
        + (' (or --workdir=DIR: its config.json)' if model_from_workdir else '')
        + '.\n'
      )
      sys.exit(2)
    return
  config = config_or_exit(value, argv)
  message = None
  if model_from_workdir and flag_value(argv, 'workdir'):
    message = model_override_error(names)
  for name in names:
    message = message or field_error(config, name)
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
  """Joins the multi-host job the flags or the cluster describe
  (`experiments.multihost`); a bad combination exits with one line."""
  from experiments import multihost  # pylint: disable=g-import-not-at-top

  with one_line_errors():
    joined = multihost.plan(coordinator_address, num_processes, process_id)
  multihost.initialize(joined)


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
  value = flag_value(argv, 'config')
  if not value:
    return
  config = config_or_exit(value, argv)
  from configs import common  # pylint: disable=g-import-not-at-top

  comments = {}
  for path in (common.__file__, config_path_and_arg(value)[0]):
    if not path.endswith('.py'):  # A workdir's config.json: no comments.
      continue
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
