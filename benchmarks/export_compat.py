r"""Reads exported artifacts across real JAX versions, both directions.

  python -m benchmarks.export_compat [--old_jax=0.4.30]
      [--venv=/tmp/jax-0.4.30] [--out=results/cpu/export_compat.md]

Why: jax.export promises a window (artifacts run on jaxlib up to 6 months
newer and 3 weeks older than the exporter), and the loader must answer an
artifact outside it with one line naming both versions. A unit test can
only fake an unreadable file; this script builds a virtual environment
with an older JAX (from the package registry), then

* newer -> older: exports the tiny text classifier with this JAX
  (`experiments.export`, random weights) and loads it with
  `experiments/exported_loader.py` under the older JAX;
* older -> newer: exports a small function with the older JAX (its own
  `jax.export` or, before 0.4.30, `jax.experimental.export`), then
  deserializes and calls it here, compared with NumPy.

Each outcome is one line of the report: what loaded, what ran, or the
error line the user sees.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

_OLD_EXPORT = textwrap.dedent(
  """
  import sys
  import jax, jax.numpy as jnp, numpy as np
  try:
    from jax import export
    serialize = lambda e: e.serialize()
  except ImportError:
    from jax.experimental import export
    serialize = export.serialize
  def f(params, inputs):
    return {'y': jnp.tanh(inputs['x'] @ params['w']).sum(-1)}
  b = export.symbolic_shape('b')[0]
  spec = ({'w': jax.ShapeDtypeStruct((4, 3), jnp.float32)},
          {'x': jax.ShapeDtypeStruct((b, 4), jnp.float32)})
  exported = export.export(jax.jit(f))(*spec)
  with open(sys.argv[1], 'wb') as fh:
    fh.write(serialize(exported))
  print(jax.__version__)
  """
)

_OLD_LOAD = textwrap.dedent(
  """
  import sys
  sys.path.insert(0, sys.argv[1])
  import exported_loader
  try:
    exported_loader.load(sys.argv[2])
    print('loaded')
  except Exception as e:
    print(f'{type(e).__name__}: {e}')
  """
)


def make_venv(venv: str, version: str) -> str:
  """The older JAX's python (installs it into `venv` once)."""
  python = os.path.join(venv, 'bin', 'python')
  if not os.path.exists(python):
    print(f'creating {venv} with jax=={version} ...', flush=True)
    subprocess.run([sys.executable, '-m', 'venv', venv], check=True)
    pip = [python, '-m', 'pip', 'install', '-q']
    packages = [
      f'jax=={version}',
      f'jaxlib=={version}',
      'numpy<2',
      'absl-py',
      'flatbuffers',
    ]
    if subprocess.run(pip + packages).returncode:
      raise SystemExit(
        f'error: could not install jax=={version} into {venv} (it needs '
        'the package registry); pass --venv=DIR of an existing one.'
      )
  return python


def tiny_artifact(root: str) -> str:
  """The tiny text classifier exported with this JAX (random weights)."""
  import jax  # pylint: disable=g-import-not-at-top

  from perceiver_io import checkpoints  # pylint: disable=g-import-not-at-top
  from perceiver_io import model as model_lib  # pylint: disable=g-import-not-at-top
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top

  cfg = presets.get_config('tiny_text_classification')
  model = model_lib.PerceiverIO(cfg)
  x, kwargs = model_lib.example_inputs(cfg, 1)
  variables = model.init(jax.random.PRNGKey(0), x, **kwargs)
  checkpoints.save(os.path.join(root, 'ckpt'), variables, cfg)
  out = os.path.join(root, 'artifact')
  subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.export',
      '--config=configs/imdb_bytes.py:tiny',
      f'--config.init_from=dir:{root}/ckpt',
      f'--output={out}',
    ],
    check=True,
    cwd=REPO,
    capture_output=True,
  )
  return out


def newer_to_older(old_python: str, root: str) -> str:
  artifact = tiny_artifact(root)
  result = subprocess.run(
    [
      old_python,
      '-c',
      _OLD_LOAD,
      os.path.join(REPO, 'experiments'),
      artifact,
    ],
    capture_output=True,
    text=True,
  )
  lines = result.stdout.strip().splitlines()
  return lines[-1] if lines else result.stderr.strip().splitlines()[-1]


def older_to_newer(old_python: str, root: str) -> str:
  from jax import export  # pylint: disable=g-import-not-at-top

  path = os.path.join(root, 'old.bin')
  try:
    made = subprocess.run(
      [old_python, '-c', _OLD_EXPORT, path], capture_output=True, text=True
    )
  except OSError as e:
    return f'the older JAX could not run: {e}'
  if made.returncode:
    return 'the older JAX could not export: ' + made.stderr.strip()[-300:]
  try:
    exported = export.deserialize(bytearray(open(path, 'rb').read()))
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {str(e).splitlines()[0]}'
  w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  x = np.linspace(-2, 2, 20, dtype=np.float32).reshape(5, 4)
  got = np.asarray(exported.call({'w': w}, {'x': x})['y'])
  want = np.tanh(x @ w).sum(-1)
  error = float(np.max(np.abs(got - want)))
  return (
    f'loaded (calling convention {exported.calling_convention_version}) '
    f'and ran at batch 5; max |error| vs NumPy {error:.1e}'
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--old_jax', default='0.4.30')
  parser.add_argument('--venv', default='')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top

  venv = args.venv or os.path.join(tempfile.gettempdir(), f'jax-{args.old_jax}')
  old_python = make_venv(venv, args.old_jax)
  with tempfile.TemporaryDirectory() as root:
    rows = [
      (
        f'JAX {jax.__version__} artifact -> JAX {args.old_jax} loader',
        newer_to_older(old_python, root),
      ),
      (
        f'JAX {args.old_jax} artifact -> JAX {jax.__version__}',
        older_to_newer(old_python, root),
      ),
    ]
  text = '| direction | outcome |\n|---|---|\n' + ''.join(
    f'| {d} | {o.replace("|", "/")} |\n' for d, o in rows
  )
  print(text)
  if args.out:
    with open(args.out, 'a', encoding='utf-8') as f:
      f.write(text + '\n')
  return rows


if __name__ == '__main__':
  main()
