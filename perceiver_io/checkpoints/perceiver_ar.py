"""Import (and export) of the official Perceiver AR parameter format.

The official code (google-research/perceiver-ar) is Haiku; its released
checkpoint is a pickle of {'params': {module: {name: array}}, ...}
(reference section 7). Names map one to one onto PerceiverAR's tree by
construction order, and Haiku's Linear `w` is [in, out] like Flax's
kernel, so nothing is transposed:

  perceiver_ar/~/embed                      token_embed/embedding
  perceiver_ar/~/embed_1                    pos_embed (absolute tables)
  perceiver_ar/~/linear                     z_linear
  perceiver_ar/~/cross_attention/...        cross_attn/...
  perceiver_ar/~/self_attention{,_1,...}    self_attn_{0,1,...}
  perceiver_ar/layer_norm                   final_norm
  perceiver_ar/~/logits                     logits

Inside a block: layer_norm/_1/_2 = q_norm, kv_norm, mlp_norm (cross) or
attn_norm, mlp_norm (self); attention/linear/_1/_2/_3 = query, key, value,
out; dense/linear/_1 = mlp fc1, fc2. Leaves: w/b -> kernel/bias,
scale/offset -> scale/bias, embeddings -> embedding.

An imported model keeps the official token ids (PAD 0, EOS 1, SOS 2, bytes
at +3) and vocabulary; positions follow the official data positions (the
first token is position 1, table row 1).
"""

from typing import Any, Dict, Tuple, Union

import flax
import jax
import numpy as np

from perceiver_io import presets
from perceiver_io.ar import model as ar_model
from perceiver_io.ar import model_config
from perceiver_io.checkpoints.common import CheckpointError
from perceiver_io.checkpoints.common import check_and_unflatten
from perceiver_io.checkpoints.haiku import read_haiku_pickle

_ROOT = 'perceiver_ar/~/'
_NORMS = {
  'cross_attn': ('q_norm', 'kv_norm', 'mlp_norm'),
  'self_attn': ('attn_norm', 'mlp_norm'),
}
_ATTN = ('query', 'key', 'value', 'out')
_MLP = ('fc1', 'fc2')
_LEAVES = {
  'w': 'kernel',
  'b': 'bias',
  'scale': 'scale',
  'offset': 'bias',
  'embeddings': 'embedding',
}


def _suffix(i: int) -> str:
  return '' if i == 0 else f'_{i}'


def _block_modules(hk_block: str, ours: str, kind: str):
  for i, name in enumerate(_NORMS[kind]):
    yield f'{hk_block}/layer_norm{_suffix(i)}', (ours, name)
  for i, name in enumerate(_ATTN):
    yield f'{hk_block}/attention/linear{_suffix(i)}', (ours, 'attn', name)
  for i, name in enumerate(_MLP):
    yield f'{hk_block}/dense/linear{_suffix(i)}', (ours, 'mlp', name)


def module_names(config: Dict[str, Any]) -> Dict[str, Tuple[str, ...]]:
  """{official Haiku module: our module path} for a model config."""
  names = {
    _ROOT + 'embed': ('token_embed',),
    _ROOT + 'linear': ('z_linear',),
    'perceiver_ar/layer_norm': ('final_norm',),
    _ROOT + 'logits': ('logits',),
  }
  if config['position'] != 'rotary':
    names[_ROOT + 'embed_1'] = ('pos_embed',)
  names.update(
    _block_modules(_ROOT + 'cross_attention', 'cross_attn', 'cross_attn')
  )
  for layer in range(config['num_self_attend_layers']):
    names.update(
      _block_modules(
        f'{_ROOT}self_attention{_suffix(layer)}',
        f'self_attn_{layer}',
        'self_attn',
      )
    )
  return names


def from_haiku_params(params: Dict[str, Dict[str, Any]], config):
  """Official {module: {name: array}} -> flat {('params', *path): array}.

  A module or leaf with no counterpart is one error naming it.
  """
  names = module_names(config)
  unknown = sorted(set(params) - set(names))
  if unknown:
    raise CheckpointError(
      f'Haiku module {unknown[0]!r} has no counterpart in this Perceiver AR '
      f'config ({len(unknown)} unmapped; options such as mlp/learned '
      f'queries or extra cross-attends are not supported; the mapped '
      f'modules look like {_ROOT}self_attention_1/attention/linear).'
    )
  flat = {}
  for module, leaves in params.items():
    path = names[module]
    for name, value in leaves.items():
      if path == ('pos_embed',) and name == 'embeddings':
        flat[('params', 'pos_embed')] = np.asarray(value)
        continue
      if name not in _LEAVES:
        raise CheckpointError(
          f'Haiku parameter {module}/{name} has no counterpart (expected '
          f'one of {", ".join(sorted(_LEAVES))}).'
        )
      flat[('params',) + path + (_LEAVES[name],)] = np.asarray(value)
  return flat


def to_haiku_params(params, config) -> Dict[str, Dict[str, np.ndarray]]:
  """Our parameters in the official names (the inverse of the import)."""
  inverse = {v: k for k, v in module_names(config).items()}
  leaf_names = {'kernel': 'w', 'bias': 'b', 'scale': 'scale'}
  out: Dict[str, Dict[str, np.ndarray]] = {}
  for path, value in flax.traverse_util.flatten_dict(dict(params)).items():
    if path == ('pos_embed',):
      out.setdefault(inverse[path], {})['embeddings'] = np.asarray(value)
      continue
    module, leaf = inverse[path[:-1]], path[-1]
    if leaf == 'embedding':
      name = 'embeddings'
    elif leaf == 'bias' and path[-2].endswith('norm'):
      name = 'offset'
    else:
      name = leaf_names[leaf]
    out.setdefault(module, {})[name] = np.asarray(value)
  return out


def from_haiku(path: str, config: Union[str, Dict[str, Any]], **overrides):
  """`(model, variables, config)` from an official Perceiver AR pickle.

  Args:
    path: the pickle ({'params': ...} or the parameter mapping itself),
      read with the restricted unpickler (arrays and mappings only).
    config: a preset name or a Perceiver AR config dict (sizes the shapes
      cannot tell: heads, latents; a mismatch is one error per kind).
    **overrides: config keys to set (e.g. dtype, attention_impl).
  """
  cfg = presets.get_config(config) if isinstance(config, str) else config
  cfg = model_config.config(**{**dict(cfg), **overrides})
  model = ar_model.PerceiverAR(cfg)
  tokens = jax.ShapeDtypeStruct((1, cfg['max_context']), np.int32)
  abstract = jax.eval_shape(
    lambda t: model.init(jax.random.PRNGKey(0), t), tokens
  )
  params, _ = read_haiku_pickle(path)
  try:
    flat = from_haiku_params(params, cfg)
  except CheckpointError as e:
    raise CheckpointError(f'{path}: {e}') from None
  variables = check_and_unflatten(model, flat, path, abstract=abstract)
  return model, variables, cfg
