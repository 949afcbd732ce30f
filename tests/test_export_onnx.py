"""ONNX artifacts (jax2onnx, run with onnxruntime) compute what the model
computes, for every family jax2onnx converts; the others, and a missing
converter, are refused with one line."""

import importlib.util
import os

import numpy as np
import pytest

from experiments import export_lib
from experiments import export_onnx
from experiments import exported_loader
from tests import test_export_stablehlo as stablehlo_tests


CONVERTIBLE = tuple(f for f in stablehlo_tests.FAMILIES if 'conv' not in f)


@pytest.mark.slow
@pytest.mark.parametrize('preset', CONVERTIBLE)
def test_onnx_equals_model(preset, tmp_path):
  model, variables, cfg = stablehlo_tests._model(preset)  # pylint: disable=protected-access
  exportable = export_lib.Exportable(
    model=model,
    variables=variables,
    model_config=cfg,
    config=None,
    info={},
    source=preset,
  )
  out, sizes = export_onnx.export(exportable, str(tmp_path / 'onnx'))
  assert export_onnx.MODEL_FILE in sizes
  signature = export_lib.workdir_lib.read_json(
    os.path.join(out, export_lib.SIGNATURE_FILE)
  )
  assert signature['format'] == 'onnx'
  layout = {
    name: (spec['shape'], spec['dtype'])
    for name, spec in signature['inputs'].items()
  }
  rng = np.random.default_rng(4)
  length = cfg['preprocessor'].get('max_seq_len', 0)
  for batch in (1, 3):
    inputs = stablehlo_tests._random_inputs(layout, batch, length, rng)  # pylint: disable=protected-access
    got = export_onnx.run(out, inputs)
    want = export_lib.reference_outputs(model, variables, cfg, inputs)
    want = {export_onnx.onnx_output_name(k, inputs): v for k, v in want.items()}
    assert sorted(got) == sorted(want) == sorted(signature['outputs'])
    for name in want:
      assert got[name].shape == want[name].shape
      np.testing.assert_allclose(
        got[name], np.asarray(want[name]), atol=1e-5, rtol=1e-5
      )
  with pytest.raises(ValueError, match='onnxruntime'):
    exported_loader.load(out)


def test_conv_model_is_refused_in_one_line():
  model, variables, cfg = stablehlo_tests._model('tiny_imagenet_conv')  # pylint: disable=protected-access
  message = export_onnx.unsupported(cfg)
  assert message and '\n' not in message and 'stablehlo' in message
  assert (
    export_onnx.unsupported(
      stablehlo_tests._model('tiny_imagenet_fourier')[2]  # pylint: disable=protected-access
    )
    is None
  )
  del model, variables


def test_missing_converter_is_named(monkeypatch):
  assert export_onnx.missing() is None
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    'find_spec',
    lambda name, *a: None if name == 'jax2onnx' else real(name, *a),
  )
  message = export_onnx.missing()
  assert message.startswith(
    '--format=onnx needs jax2onnx (pip install --no-deps -r requirements-onnx'
  )
  assert 'onnxruntime' not in message.split('(')[0]
