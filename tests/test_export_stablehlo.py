"""The StableHLO artifact computes what the model computes.

For every family (tiny presets, random weights with non-trivial biases and
scales) the function is exported for CPU and CUDA, serialized, read back
and run at two batch sizes (and, for text, two lengths under the symbolic
length); its outputs must equal the flax model's within 1e-5 (float32).
A bfloat16 model is exported in bfloat16 and matches its own bf16 outputs.
"""

import jax
from jax import export as jax_export
import numpy as np
import pytest

from experiments import export_lib
from perceiver_io import model as model_lib
from perceiver_io import presets
from tests import model_helpers

FAMILIES = (
  'tiny_text_classification',
  'tiny_language_mlm',
  'tiny_imagenet_fourier',
  'tiny_imagenet_learned',
  'tiny_imagenet_conv',
  'tiny_optical_flow',
  'tiny_multimodal_autoencoding',
)


def _model(preset, **overrides):
  cfg = dict(presets.get_config(preset), **overrides)
  model = model_lib.PerceiverIO(cfg)
  x, _ = model_lib.example_inputs(cfg, 1)
  variables = dict(model.init(jax.random.PRNGKey(0), x))  # batch_stats.
  params = model_helpers.random_params(model, x)
  variables['params'] = jax.tree_util.tree_map(np.float32, params)
  return model, variables, cfg


def _random_inputs(layout, batch, length, rng):
  inputs = {}
  for name, (dims, dtype) in layout.items():
    shape = tuple(
      batch if d == 'b' else length if d == 'l' else d for d in dims
    )
    if name == 'input_ids':
      inputs[name] = rng.integers(0, 262, shape).astype(dtype)
    elif name == 'attention_mask':
      mask = np.ones(shape, dtype)
      mask[0, length // 2 :] = 0  # A padded row.
      inputs[name] = mask
    else:
      inputs[name] = rng.standard_normal(shape).astype(dtype)
  return inputs


def _round_trip(exported):
  return jax_export.deserialize(exported.serialize())


@pytest.mark.slow
@pytest.mark.parametrize('preset', FAMILIES)
def test_artifact_equals_model(preset):
  model, variables, cfg = _model(preset)
  exported, stored, signature = export_lib.export_stablehlo(
    model, variables, cfg
  )
  assert tuple(exported.platforms) == ('cpu', 'cuda')
  loaded = _round_trip(exported)
  layout = export_lib.input_layout(cfg)[0]
  rng = np.random.default_rng(1)
  text = cfg['preprocessor']['type'] == 'text'
  max_len = cfg['preprocessor'].get('max_seq_len', 0)
  cases = [(1, max_len), (3, max_len // 2)] if text else [(1, 0), (3, 0)]
  for batch, length in cases:
    inputs = _random_inputs(layout, batch, length, rng)
    got = loaded.call(stored, inputs)
    want = export_lib.reference_outputs(model, variables, cfg, inputs)
    assert sorted(got) == sorted(want) == sorted(signature['outputs'])
    for name in want:
      assert got[name].shape == want[name].shape
      assert got[name].shape[0] == batch
      np.testing.assert_allclose(
        np.asarray(got[name]), np.asarray(want[name]), atol=1e-5, rtol=1e-5
      )
      assert float(np.std(np.asarray(want[name]))) > 1e-3  # Not constant.


@pytest.mark.slow
def test_signature_names_symbolic_dims_and_preprocessing():
  model, variables, cfg = _model('tiny_text_classification')
  _, stored, signature = export_lib.export_stablehlo(
    model, variables, cfg, platforms=('cpu',)
  )
  assert signature['inputs'] == {
    'input_ids': {'shape': ['b', 'l'], 'dtype': 'int32'},
    'attention_mask': {'shape': ['b', 'l'], 'dtype': 'int32'},
  }
  assert signature['outputs']['logits']['shape'] == ['b', 2]
  max_len = cfg['preprocessor']['max_seq_len']
  assert f'l <= {max_len}' in signature['symbolic_dims']['l']
  assert 'byte + 6' in signature['preprocessing']
  leaves = jax.tree_util.tree_leaves(variables)
  assert signature['params']['count'] == sum(x.size for x in leaves)
  assert len(stored) == len(leaves)


@pytest.mark.slow
def test_bfloat16_model_exports_in_bfloat16():
  model, variables, cfg = _model('tiny_text_classification', dtype='bfloat16')
  exported, stored, _ = export_lib.export_stablehlo(
    model, variables, cfg, platforms=('cpu',)
  )
  layout = export_lib.input_layout(cfg)[0]
  inputs = _random_inputs(layout, 2, 16, np.random.default_rng(2))
  got = _round_trip(exported).call(stored, inputs)['logits']
  want = export_lib.reference_outputs(model, variables, cfg, inputs)['logits']
  assert got.dtype == want.dtype == jax.numpy.bfloat16
  np.testing.assert_allclose(
    np.asarray(got, np.float32), np.asarray(want, np.float32), atol=1e-2
  )
  # The float32 model differs by more than that: bf16 really is used.
  model32, _, cfg32 = _model('tiny_text_classification')
  want32 = export_lib.reference_outputs(model32, variables, cfg32, inputs)
  assert np.max(np.abs(np.asarray(want32['logits']) - np.asarray(got))) > 0


@pytest.mark.slow
def test_symbolic_length_is_bounded_by_max_seq_len():
  model, variables, cfg = _model('tiny_text_classification')
  exported, stored, _ = export_lib.export_stablehlo(
    model, variables, cfg, platforms=('cpu',)
  )
  layout = export_lib.input_layout(cfg)[0]
  too_long = cfg['preprocessor']['max_seq_len'] + 1
  inputs = _random_inputs(layout, 1, too_long, np.random.default_rng(3))
  with pytest.raises(ValueError, match='l <= '):
    exported.call(stored, inputs)
