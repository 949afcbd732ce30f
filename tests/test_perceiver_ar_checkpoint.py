"""Import of the official Perceiver AR parameter names (reference 7.2) from a
pickle this test writes: our params -> official names -> import -> the same
outputs; names that do not map and wrong shapes are one clear error."""

import pickle

import numpy as np
import pytest

from perceiver_io.checkpoints import CheckpointError
from perceiver_io.checkpoints import perceiver_ar as ckpt
from tests import ar_helpers

# Paths as the reference prints them from the official module's init.
OFFICIAL_PATHS = {
  'perceiver_ar/~/embed': ('embeddings',),
  'perceiver_ar/~/linear': ('w', 'b'),
  'perceiver_ar/~/cross_attention/layer_norm': ('scale', 'offset'),
  'perceiver_ar/~/cross_attention/layer_norm_1': ('scale', 'offset'),
  'perceiver_ar/~/cross_attention/layer_norm_2': ('scale', 'offset'),
  'perceiver_ar/~/cross_attention/attention/linear_3': ('w', 'b'),
  'perceiver_ar/~/cross_attention/dense/linear_1': ('w', 'b'),
  'perceiver_ar/~/self_attention/layer_norm_1': ('scale', 'offset'),
  'perceiver_ar/~/self_attention_1/attention/linear': ('w', 'b'),
  'perceiver_ar/~/self_attention_1/dense/linear_1': ('w', 'b'),
  'perceiver_ar/layer_norm': ('scale', 'offset'),
  'perceiver_ar/~/logits': ('w', 'b'),
}


def _write(tmp_path, params, name='checkpoint.pickle'):
  path = tmp_path / name
  with open(path, 'wb') as f:
    pickle.dump({'global_step': 7, 'params': params, 'state': {}}, f)
  return str(path)


@pytest.mark.parametrize('position', ['absolute', 'rotary'])
def test_round_trip_through_official_names(tmp_path, position):
  config = ar_helpers.tiny_config(position=position, input_channels=8)
  model, params = ar_helpers.random_params(config, seed=11)
  official = ckpt.to_haiku_params(params, config)
  for module, leaves in OFFICIAL_PATHS.items():
    assert sorted(official[module]) == sorted(leaves), module
  assert official['perceiver_ar/~/cross_attention/attention/linear_1'][
    'w'
  ].shape == (8, 8)  # k: [D_in, C], C = D_in
  assert ('perceiver_ar/~/embed_1' in official) == (position != 'rotary')
  path = _write(tmp_path, official)
  loaded_model, variables, loaded_config = ckpt.from_haiku(path, config)
  tokens = ar_helpers.random_tokens(16, 16, 32, seed=12)
  tokens[3, :6] = 0
  want = np.asarray(model.apply({'params': params}, tokens))
  got = np.asarray(loaded_model.apply(variables, tokens))
  np.testing.assert_array_equal(got, want)
  assert loaded_config == config


def test_unmapped_names_and_wrong_shapes_are_one_error(tmp_path):
  config = ar_helpers.tiny_config(position='absolute')
  _, params = ar_helpers.random_params(config)
  official = ckpt.to_haiku_params(params, config)
  extra = dict(official)
  extra['perceiver_ar/~/z_pos_enc'] = {'pos_embs': np.zeros((1, 16))}
  with pytest.raises(CheckpointError, match="'perceiver_ar/~/z_pos_enc'"):
    ckpt.from_haiku(_write(tmp_path, extra, 'extra.pickle'), config)
  leaf = {k: dict(v) for k, v in official.items()}
  leaf['perceiver_ar/~/linear']['bias'] = np.zeros(16)
  with pytest.raises(CheckpointError, match='perceiver_ar/~/linear/bias'):
    ckpt.from_haiku(_write(tmp_path, leaf, 'leaf.pickle'), config)
  with pytest.raises(CheckpointError, match='shape mismatch'):
    ckpt.from_haiku(
      _write(tmp_path, official, 'ok.pickle'),
      {**config, 'num_latents': 6, 'vocab_size': 40},
    )
  with pytest.raises(CheckpointError, match='missing'):
    ckpt.from_haiku(
      _write(tmp_path, official, 'ok.pickle'),
      {**config, 'num_self_attend_layers': 3},
    )
