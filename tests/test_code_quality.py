"""The tree's shape, checked in CI: layering, formatting, lint, file sizes.

Why tests rather than a separate CI step: `.ci/run` runs the README's test
command and nothing else, so what is not a test is not checked. Each check
runs the tool the project chose (ruff, import-linter; BUILD_NOTES.md,
"Code style") on the whole tree and fails with its report.
"""

import ast
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('perceiver_io', 'experiments', 'configs', 'benchmarks', 'tests')
# No file much over 600 lines: split by concern instead.
MAX_LINES = 650


def _python_files():
  for package in PACKAGES:
    for root, dirs, files in os.walk(os.path.join(REPO, package)):
      dirs[:] = [d for d in dirs if d not in ('__pycache__', 'results')]
      for name in sorted(files):
        if name.endswith('.py'):
          yield os.path.join(root, name)


def _tool(name):
  path = shutil.which(name, path=os.path.dirname(sys.executable))
  path = path or shutil.which(name)
  assert path, (
    f'{name} is not installed; it is part of the test extra '
    '(pip install -e ".[test]").'
  )
  return path


def _run(*command):
  return subprocess.run(
    command, cwd=REPO, capture_output=True, text=True, check=False, timeout=600
  )


def test_layering_and_no_import_cycles():
  # .importlinter: benchmarks -> experiments -> configs | perceiver_io, no
  # cycles inside any package (imports inside functions count), private
  # modules stay inside their package.
  run = _run(_tool('lint-imports'), '--no-logo', '--no-cache')
  assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_one_formatter():
  run = _run(_tool('ruff'), 'format', '--check', '--diff', '.')
  assert run.returncode == 0, (
    'run `ruff format .` (ruff.toml):\n'
    + run.stdout[-4000:]
    + run.stderr[-2000:]
  )


def test_lint():
  run = _run(_tool('ruff'), 'check', '--no-cache', '.')
  assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_no_file_is_much_over_600_lines():
  long = []
  for path in _python_files():
    with open(path, encoding='utf-8') as f:
      count = sum(1 for _ in f)
    if count > MAX_LINES:
      long.append(f'{os.path.relpath(path, REPO)}: {count}')
  assert not long, long


def _module_name(path):
  rel = os.path.relpath(path, REPO)[: -len('.py')]
  parts = rel.split(os.sep)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _is_private(name):
  return name.startswith('_') and not name.startswith('__')


def test_private_names_stay_in_their_package():
  # A name with a leading underscore is used only by modules of the package
  # (folder) that defines it: tests and benchmarks use public names.
  modules = {_module_name(p): p for p in _python_files()}
  package_of = lambda module: os.path.dirname(modules[module])
  problems = []
  for module, path in modules.items():
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    here = os.path.dirname(path)
    aliases = {}  # local name -> project module
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name in modules and alias.asname:
            aliases[alias.asname] = alias.name
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        for alias in node.names:
          full = f'{node.module}.{alias.name}'
          if full in modules:
            aliases[alias.asname or alias.name] = full
          elif (
            node.module in modules
            and _is_private(alias.name)
            and package_of(node.module) != here
          ):
            problems.append(f'{module}: from {node.module} import {alias.name}')
    for node in ast.walk(tree):
      if (
        isinstance(node, ast.Attribute)
        and _is_private(node.attr)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and package_of(aliases[node.value.id]) != here
      ):
        problems.append(
          f'{module}:{node.lineno}: {aliases[node.value.id]}.{node.attr}'
        )
  assert not problems, sorted(set(problems))


@pytest.mark.parametrize(
  'code',
  [
    'import perceiver_io; from perceiver_io import presets, flops; '
    'from perceiver_io.model import build_model'
  ],
)
def test_importing_the_library_changes_no_process_setting(code, subprocess_env):
  # The library is importable library code: no XLA flags, no JAX config,
  # no malloc tuning (that is experiments/process_tuning.py's job, which the
  # library must not import), and building and running a model changes none
  # either.
  script = (
    'import os, sys, json\n'
    'before = dict(os.environ)\n'
    'import jax\n'
    'names = ("jax_cpu_enable_async_dispatch", '
    '"jax_disable_most_optimizations", "jax_enable_x64")\n'
    'config = {n: jax.config.read(n) for n in names}\n'
    f'{code}\n'
    'import numpy as np\n'
    'model = presets.build("tiny_imagenet_fourier")\n'
    'x = np.zeros((1, 16, 16, 3), np.float32)\n'
    'model.apply(model.init(jax.random.PRNGKey(0), x), x)\n'
    'assert dict(os.environ) == before, set(os.environ) ^ set(before)\n'
    'assert {n: jax.config.read(n) for n in names} == config\n'
    'bad = [m for m in sys.modules if m.split(".")[0] in '
    '("experiments", "configs", "benchmarks", "tensorflow", "torch")]\n'
    'assert not bad, bad\n'
    'print("ok")\n'
  )
  run = subprocess.run(
    [sys.executable, '-c', script],
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert run.returncode == 0 and run.stdout.strip() == 'ok', run.stderr[-3000:]
