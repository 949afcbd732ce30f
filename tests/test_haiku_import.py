"""Import of DeepMind Haiku checkpoints.

A pickle laid out with the official Haiku module/parameter names (derived here
from the naming rules in transformers' conversion script, written
independently of our importer) must give the same logits through
`from_haiku` as the same weights through `from_hf`.
"""

import pickle
import re

import flax
import jax
import numpy as np
import pytest

from perceiver_io import checkpoints
from perceiver_io.checkpoints import CheckpointError
from tests import hf_fixtures

_CROSS = {
  'attention.self.layernorm1': 'layer_norm',
  'attention.self.layernorm2': 'layer_norm_1',
  'layernorm': 'layer_norm_2',
}
_SELF = {'attention.self.layernorm1': 'layer_norm', 'layernorm': 'layer_norm_1'}
_ATTN = {
  'attention.self.query': 'attention/linear',
  'attention.self.key': 'attention/linear_1',
  'attention.self.value': 'attention/linear_2',
  'attention.output.dense': 'attention/linear_3',
  'mlp.dense1': 'mlp/linear',
  'mlp.dense2': 'mlp/linear_1',
}


def _block(prefix, rest, table):
  module, leaf = rest.rsplit('.', 1)
  inner = {**table, **_ATTN}[module]
  return f'{prefix}/{inner}', None, leaf


def _haiku_name(key, family):
  """HF state-dict key -> (haiku module, torch leaf name)."""
  k = key[len('perceiver.') :] if key.startswith('perceiver.') else key
  enc = 'encoder' if family == 'multimodal' else 'perceiver_encoder'
  dec = {
    'mlm': 'basic_decoder',
    'optical_flow': 'flow_decoder/~/basic_decoder',
    'multimodal': 'multimodal_decoder/~/basic_decoder',
  }.get(family, 'classification_decoder/~/basic_decoder')
  rules = [
    (r'embeddings\.latents$', f'{enc}/~/trainable_position_encoding', 'pos'),
    (r'input_preprocessor\.embeddings\.weight$', 'embed', 'emb'),
    (
      r'input_preprocessor\.position_embeddings\.weight$',
      'trainable_position_encoding',
      'pos',
    ),
    (
      r'input_preprocessor\.convnet_1x1\.(\w+)$',
      'image_preprocessor/~/conv2_d',
      None,
    ),
    (
      r'input_preprocessor\.position_embeddings\.position_embeddings$',
      'image_preprocessor/~_build_network_inputs/trainable_position_encoding',
      'pos',
    ),
    (
      r'input_preprocessor\.positions_projection\.(\w+)$',
      'image_preprocessor/~_build_network_inputs/position_encoding_projector/'
      'linear',
      None,
    ),
    (
      r'input_preprocessor\.convnet\.conv\.(\w+)$',
      'image_preprocessor/~/conv2_d_downsample/~/conv',
      None,
    ),
    (
      r'input_preprocessor\.convnet\.batchnorm\.(weight|bias)$',
      'image_preprocessor/~/conv2_d_downsample/~/batchnorm',
      'bn',
    ),
    (
      r'input_preprocessor\.convnet\.batchnorm\.running_(mean|var)$',
      'image_preprocessor/~/conv2_d_downsample/~/batchnorm/~/{}_ema',
      'ema',
    ),
    (
      r'input_preprocessor\.conv_after_patches\.(\w+)$',
      'image_preprocessor/patches_linear',
      None,
    ),
    (
      r'input_preprocessor\.padding\.(\w+)$',
      'multimodal_preprocessor/{}_padding',
      'pos',
    ),
    (
      r'input_preprocessor\.mask\.(\w+)$',
      'multimodal_preprocessor/{}_mask_token',
      'pos',
    ),
    (
      r'decoder\.(?:decoder\.)?output_position_encodings\.position_embeddings$',
      f'{dec}/~/trainable_position_encoding',
      'pos',
    ),
    (
      r'decoder\.modalities\.label\.decoder\.output_position_encodings\.'
      r'position_embeddings$',
      'classification_decoder/~/basic_decoder/~/trainable_position_encoding',
      'pos',
    ),
    (
      r'decoder\.padding\.(\w+)$',
      'multimodal_decoder/~decoder_query/{}_padding',
      'pos',
    ),
    (r'decoder\.decoder\.final_layer\.(\w+)$', f'{dec}/output', None),
    (r'embedding_decoder\.bias$', 'embedding_decoder', 'bias'),
    (
      r'output_postprocessor\.modalities\.image\.classifier\.(\w+)$',
      'projection_postprocessor/linear',
      None,
    ),
    (
      r'output_postprocessor\.modalities\.label\.classifier\.(\w+)$',
      'classification_postprocessor/linear',
      None,
    ),
    (
      r'output_postprocessor\.modalities\.audio\.classifier\.(\w+)$',
      'audio_postprocessor/linear',
      None,
    ),
  ]
  for pat, module, kind in rules:
    m = re.match(pat, k)
    if m:
      groups = m.groups()
      if '{}' in module:
        module = module.format(groups[0])
      return module, kind, (groups[-1] if groups else None)
  m = re.match(r'encoder\.cross_attention\.(.*)$', k)
  if m:
    return _block(f'{enc}/~/cross_attention', m.group(1), _CROSS)
  m = re.match(r'encoder\.self_attends\.(\d+)\.(.*)$', k)
  if m:
    i = int(m.group(1))
    name = 'self_attention' + (f'_{i}' if i else '')
    return _block(f'{enc}/~/{name}', m.group(2), _SELF)
  m = re.match(r'decoder\.(?:decoder\.)?decoding_cross_attention\.(.*)$', k)
  if m:
    return _block(f'{dec}/cross_attention', m.group(1), _CROSS)
  raise KeyError(key)


def haiku_checkpoint(state_dict, family):
  """Official-layout {'params':..., 'state':...} from an HF state dict."""
  params, state = {}, {}
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked'):
      continue
    v = value.detach().numpy()
    module, kind, leaf = _haiku_name(key, family)
    if kind == 'pos':
      params.setdefault(module, {})['pos_embs'] = v.reshape(
        (1, -1) if v.ndim == 1 else v.shape
      )
    elif kind == 'emb':
      params.setdefault(module, {})['embeddings'] = v
    elif kind == 'bias':
      params.setdefault(module, {})['bias'] = v
    elif kind == 'bn':
      name = {'weight': 'scale', 'bias': 'offset'}[leaf]
      params.setdefault(module, {})[name] = v.reshape(1, 1, 1, -1)
    elif kind == 'ema':
      state.setdefault(module, {})['average'] = v.reshape(1, 1, 1, -1)
      state[module]['counter'] = np.array(3, np.int32)
    else:  # Linear / LayerNorm / conv leaf named weight or bias.
      if leaf is None:
        leaf = key.rsplit('.', 1)[1]
      is_norm = 'layer_norm' in module.rsplit('/', 1)[-1]
      if leaf == 'weight':
        name = 'scale' if is_norm else 'w'
        if v.ndim == 4:
          v = v.transpose(2, 3, 1, 0)
        elif v.ndim == 2:
          v = v.T
      else:
        name = 'offset' if is_norm else 'b'
      params.setdefault(module, {})[name] = v
  return {'params': params, 'state': state}


FAMILIES = (
  'mlm',
  'image_learned',
  'image_fourier',
  'image_conv',
  'optical_flow',
  'multimodal',
)


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_haiku_pickle_matches_hf(family, tmp_path):
  hf_model, _, inputs, kwargs = hf_fixtures.build(family)
  hf_model.save_pretrained(tmp_path / 'hf')
  model_hf, vars_hf, config = checkpoints.from_hf(str(tmp_path / 'hf'))

  ckpt = haiku_checkpoint(hf_model.state_dict(), family)
  if family in ('mlm', 'optical_flow', 'multimodal'):
    ckpt = ckpt['params']  # These files hold params only.
  path = tmp_path / 'model.pystate'
  with open(path, 'wb') as f:
    pickle.dump(ckpt, f)
  model_hk, vars_hk, _ = checkpoints.from_haiku(str(path), config)

  # Same config and identical variables (names, shapes, values)...
  assert model_hk.config == model_hf.config
  flat = lambda v: {
    '/'.join(k): np.asarray(a)
    for k, a in flax.traverse_util.flatten_dict(v).items()
  }
  got_vars, want_vars = flat(vars_hk), flat(vars_hf)
  assert sorted(got_vars) == sorted(want_vars)
  for name, value in want_vars.items():
    np.testing.assert_array_equal(got_vars[name], value, err_msg=name)
  if family in ('mlm', 'image_conv', 'multimodal'):
    # ...and, run end to end on three families, identical logits.
    run = lambda m, v: jax.jit(lambda v, x: m.apply(v, x, **kwargs))(v, inputs)
    got, want = run(model_hk, vars_hk), run(model_hf, vars_hf)
    for a, b in zip(
      jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    ):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_haiku_errors_name_parameters(tmp_path):
  hf_model, _, _, _ = hf_fixtures.build('image_fourier')
  hf_model.save_pretrained(tmp_path / 'hf')
  _, _, config = checkpoints.from_hf(str(tmp_path / 'hf'))
  ckpt = haiku_checkpoint(hf_model.state_dict(), 'image_fourier')
  # A missing parameter is named.
  del ckpt['params']['perceiver_encoder/~/cross_attention/layer_norm_2']
  path = tmp_path / 'missing.pystate'
  path.write_bytes(pickle.dumps(ckpt))
  with pytest.raises(CheckpointError, match='cross_attend/mlp_norm'):
    checkpoints.from_haiku(str(path), config)
  # A truncated file fails clearly.
  good = pickle.dumps(haiku_checkpoint(hf_model.state_dict(), 'image_fourier'))
  bad = tmp_path / 'truncated.pystate'
  bad.write_bytes(good[: len(good) // 2])
  with pytest.raises(CheckpointError, match='corrupt or truncated'):
    checkpoints.from_haiku(str(bad), config)
  # An unknown module is named.
  ckpt = haiku_checkpoint(hf_model.state_dict(), 'image_fourier')
  ckpt['params']['mystery_module'] = {'w': np.zeros(3)}
  path.write_bytes(pickle.dumps(ckpt))
  with pytest.raises(CheckpointError, match='mystery_module'):
    checkpoints.from_haiku(str(path), config)
