"""experiments.export end to end: from a workdir and from an imported
checkpoint, the artifact run by the standalone loader in a fresh process
without perceiver_io, predict --exported, and bad input as one line."""

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import imdb_bytes
from experiments import export_lib
from experiments import exported_loader
from experiments import predict_lib
from experiments import train_lib
from perceiver_io import checkpoints
from perceiver_io import model as model_lib
from perceiver_io import presets
from tests.conftest import REPO_ROOT

_TEXTS = ['I loved this movie.', 'Terrible, boring film.']


def _launch(args, env, cwd=REPO_ROOT):
  return subprocess.run(
    [sys.executable, '-m', 'experiments.export', *args],
    capture_output=True,
    text=True,
    env=env,
    cwd=cwd,
    timeout=300,
  )


@pytest.fixture(scope='module')
def imported(tmp_path_factory, subprocess_env):
  """A 'dir:' checkpoint of the tiny text classifier, exported by the
  launcher with --config.init_from."""
  root = tmp_path_factory.mktemp('export')
  cfg = presets.get_config('tiny_text_classification')
  model = model_lib.PerceiverIO(cfg)
  x, kwargs = model_lib.example_inputs(cfg, 1)
  variables = model.init(jax.random.PRNGKey(7), x, **kwargs)
  checkpoints.save(str(root / 'ckpt'), variables, cfg)
  out = str(root / 'artifact')
  result = _launch(
    [
      '--config=configs/imdb_bytes.py:tiny',
      f'--config.init_from=dir:{root / "ckpt"}',
      f'--output={out}',
    ],
    subprocess_env,
  )
  assert result.returncode == 0, result.stderr
  return root, out, model, variables, cfg


_LOADER_SCRIPT = textwrap.dedent(
  """
  import sys
  import numpy as np
  import exported_loader
  model = exported_loader.load(sys.argv[1])
  with np.load(sys.argv[2]) as f:
    inputs = {k: f[k] for k in f.files}
  outputs = model(**inputs)
  leaked = [m for m in ('perceiver_io', 'flax', 'experiments')
            if any(n == m or n.startswith(m + '.') for n in sys.modules)]
  assert not leaked, leaked
  np.savez(sys.argv[3], **outputs)
  """
)


@pytest.mark.slow
def test_fresh_process_runs_the_artifact_without_perceiver_io(
  imported, subprocess_env
):
  root, out, model, variables, cfg = imported
  standalone = root / 'standalone'
  standalone.mkdir()
  shutil.copy(exported_loader.__file__, standalone / 'exported_loader.py')
  (standalone / 'run.py').write_text(_LOADER_SCRIPT)
  env = dict(subprocess_env)
  env.pop('PYTHONPATH')
  for batch, length in ((1, 64), (4, 20)):
    rng = np.random.default_rng(batch)
    inputs = {
      'input_ids': rng.integers(6, 262, (batch, length)).astype(np.int32),
      'attention_mask': np.ones((batch, length), np.int32),
    }
    np.savez(root / 'in.npz', **inputs)
    result = subprocess.run(
      [sys.executable, 'run.py', out, str(root / 'in.npz'), 'out.npz'],
      capture_output=True,
      text=True,
      env=env,
      cwd=standalone,
      timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with np.load(standalone / 'out.npz') as f:
      got = f['logits']
    want = model.apply(
      variables, inputs['input_ids'], attention_mask=inputs['attention_mask']
    )
    assert got.shape == (batch, 2)
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_existing_output_is_refused_and_overwrite_replaces_artifacts_only(
  imported, subprocess_env
):
  root, out, _, _, _ = imported
  args = [
    '--config=configs/imdb_bytes.py:tiny',
    f'--config.init_from=dir:{root / "ckpt"}',
  ]
  before = sorted(os.listdir(out))
  result = _launch(args + [f'--output={out}'], subprocess_env)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    f"error: output '{out}' exists; pass --overwrite to replace it, or "
    'choose another --output.'
  ]
  assert sorted(os.listdir(out)) == before
  precious = root / 'precious'
  precious.mkdir()
  (precious / 'notes.txt').write_text('keep me')
  result = _launch(
    args + [f'--output={precious}', '--overwrite'], subprocess_env
  )
  assert result.returncode == 1
  assert len(result.stderr.strip().splitlines()) == 1
  assert 'not an exported artifact' in result.stderr
  assert (precious / 'notes.txt').read_text() == 'keep me'
  stamp = os.path.getmtime(os.path.join(out, export_lib.FUNCTION_FILE))
  result = _launch(args + [f'--output={out}', '--overwrite'], subprocess_env)
  assert result.returncode == 0, result.stderr
  assert os.path.getmtime(os.path.join(out, export_lib.FUNCTION_FILE)) > stamp
  assert sorted(os.listdir(out)) == before
  assert not [n for n in os.listdir(root) if '.tmp-' in n or '.old-' in n]


@pytest.mark.slow
@pytest.mark.parametrize(
  'flag, message',
  [
    ('--format=tflite', "error: unknown --format='tflite'; choose one of"),
    ('--format=ONNX', "error: unknown --format='ONNX'; choose one of"),
  ],
)
def test_bad_format_is_one_line(flag, message, subprocess_env, tmp_path):
  result = _launch(
    [
      '--config=configs/imdb_bytes.py:tiny',
      '--config.init_from=dir:/nonexistent',
      f'--output={tmp_path / "a"}',
      flag,
    ],
    subprocess_env,
  )
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), result.stderr
  assert not os.path.exists(tmp_path / 'a')


def test_check_format_and_output(tmp_path):
  export_lib.check_format('stablehlo')
  with pytest.raises(ValueError, match='unknown --format'):
    export_lib.check_format('StableHLO')
  export_lib.check_format('onnx')
  export_lib.check_output(str(tmp_path / 'new'), overwrite=False)
  (tmp_path / 'file').write_text('x')
  with pytest.raises(ValueError, match='pass --overwrite'):
    export_lib.check_output(str(tmp_path / 'file'), overwrite=False)
  with pytest.raises(ValueError, match='not an exported artifact'):
    export_lib.check_output(str(tmp_path / 'file'), overwrite=True)


@pytest.mark.slow
def test_unreadable_artifact_is_one_line_naming_versions(imported, tmp_path):
  _, out, _, _, _ = imported
  broken = tmp_path / 'broken'
  shutil.copytree(out, broken)
  path = broken / export_lib.FUNCTION_FILE
  path.write_bytes(b'not a jax.export artifact' + path.read_bytes()[:64])
  with pytest.raises(ValueError) as e:
    exported_loader.load(str(broken))
  text = str(e.value)
  assert '\n' not in text
  assert f'with JAX {jax.__version__}' in text and 're-export' in text


@pytest.mark.slow
def test_workdir_export_predicts_as_the_workdir(tmp_path):
  config = imdb_bytes.get_config('tiny')
  workdir = str(tmp_path / 'run')
  train_lib.train_and_evaluate(config, workdir)
  exportable = export_lib.from_workdir(workdir)
  out, sizes = export_lib.export(exportable, str(tmp_path / 'artifact'))
  assert export_lib.export(exportable, out, overwrite=True)[0] == out
  assert set(sizes) == {
    'config.json',
    'model.stablehlo',
    'params.npz',
    'signature.json',
  }
  from_workdir = predict_lib.predict_lines(workdir, _TEXTS, top_k=2)
  from_artifact = predict_lib.predict_exported(out, _TEXTS, top_k=2)
  assert from_artifact[0] == f'# {out} (exported)'
  assert from_artifact[1:] == from_workdir[1:]
  assert len(from_workdir) > 2
  # The workdir model computes with the runner's CPU kernels, the
  # artifact with XLA's attention: still equal within 1e-5.
  artifact = exported_loader.load(out)
  ids = np.random.default_rng(0).integers(6, 262, (3, 40)).astype(np.int32)
  mask = np.ones_like(ids)
  got = artifact(input_ids=ids, attention_mask=mask)['logits']
  want = exportable['model'].apply(
    exportable['variables'], ids, attention_mask=mask
  )
  np.testing.assert_allclose(got, np.asarray(want), atol=1e-5, rtol=1e-5)
