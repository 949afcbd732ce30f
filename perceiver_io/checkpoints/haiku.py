"""Import of DeepMind's published Haiku checkpoints (pickles).

The files (`language_perceiver_io_bytes.pickle`, `imagenet_*.pystate`,
`optical_flow_checkpoint.pystate`, `video_autoencoding_checkpoint.pystate`)
hold `{module_path: {param_name: array}}`, optionally wrapped as
`{'params': ..., 'state': ...}` (BatchNorm EMAs live in `state`). Module paths
follow Haiku's naming (`parent/~/child` for children built in `__init__`,
`parent/child` in `__call__`, `parent/~method/child` in other methods, `_k`
suffixes for repeats; reference section 7). Haiku is not needed: Haiku
mapping objects are unpickled as plain dicts.
"""

import io
import os
import pickle
import re
from typing import Any, Dict, Union

import numpy as np

from perceiver_io import presets
from perceiver_io.checkpoints.common import check_and_unflatten
from perceiver_io.checkpoints.common import CheckpointError
from perceiver_io.checkpoints.common import one_line
from perceiver_io.model import build_model

# Haiku module prefix (regex) -> our module path (may use groups).
_PREFIXES = (
  (r'(?:perceiver_)?encoder/~/trainable_position_encoding$', 'encoder/latents'),
  (r'(?:perceiver_)?encoder/~/cross_attention/', 'encoder/cross_attend/'),
  (r'(?:perceiver_)?encoder/~/self_attention/', 'encoder/self_attend_0/'),
  (
    r'(?:perceiver_)?encoder/~/self_attention_(\d+)/',
    r'encoder/self_attend_\1/',
  ),
  (
    r'classification_decoder/~/basic_decoder/~/trainable_position_encoding$',
    '{classifier_query}',
  ),
  (
    r'classification_decoder/~/basic_decoder/cross_attention/',
    'decoder/basic/decoder/cross_attend/',
  ),
  (
    r'classification_decoder/~/basic_decoder/output$',
    'decoder/basic/decoder/output',
  ),
  (
    r'basic_decoder/~/trainable_position_encoding$',
    'decoder/query/trainable/embeddings',
  ),
  (
    r'(?:flow_decoder/~/|multimodal_decoder/~/)?basic_decoder/cross_attention/',
    'decoder/decoder/cross_attend/',
  ),
  (
    r'(?:flow_decoder/~/|multimodal_decoder/~/)basic_decoder/output$',
    'decoder/decoder/output',
  ),
  (r'multimodal_decoder/~decoder_query/(\w+)_padding$', r'decoder/\1_padding'),
  (r'embed$', 'preprocessor/embed'),
  (r'trainable_position_encoding$', 'preprocessor/position_embeddings'),
  (r'image_preprocessor/~/conv2_d$', 'preprocessor/conv1x1'),
  (
    r'image_preprocessor/~_build_network_inputs/trainable_position_encoding$',
    'preprocessor/position_encoding/trainable/embeddings',
  ),
  (
    r'image_preprocessor/~_build_network_inputs/position_encoding_projector/'
    r'linear$',
    'preprocessor/position_encoding/projection',
  ),
  (
    r'image_preprocessor/~/conv2_d_downsample/~/conv$',
    'preprocessor/conv_downsample/conv',
  ),
  (
    r'image_preprocessor/~/conv2_d_downsample/~/batchnorm$',
    'preprocessor/conv_downsample/batchnorm',
  ),
  (
    r'image_preprocessor/~/conv2_d_downsample/~/batchnorm/~/(mean|var)_ema$',
    r'@batch_stats/preprocessor/conv_downsample/batchnorm/\1',
  ),
  (r'image_preprocessor/patches_linear$', 'preprocessor/patches_linear'),
  (
    r'multimodal_preprocessor/(\w+)_(padding|mask_token)$',
    r'preprocessor/\1_\2',
  ),
  (r'embedding_decoder$', 'postprocessor'),
  (
    r'projection_postprocessor/linear$',
    'postprocessor/image_postprocessor/linear',
  ),
  (
    r'classification_postprocessor/linear$',
    'postprocessor/label_postprocessor/linear',
  ),
  (r'audio_postprocessor/linear$', 'postprocessor/audio_postprocessor/linear'),
)

# Inside a cross-/self-attention block.
_CROSS = {
  'layer_norm': 'query_norm',
  'layer_norm_1': 'kv_norm',
  'layer_norm_2': 'mlp_norm',
}
_SELF = {'layer_norm': 'attention_norm', 'layer_norm_1': 'mlp_norm'}
_INNER = {
  'attention/linear': 'attention/query',
  'attention/linear_1': 'attention/key',
  'attention/linear_2': 'attention/value',
  'attention/linear_3': 'attention/output',
  'mlp/linear': 'mlp/dense1',
  'mlp/linear_1': 'mlp/dense2',
}
_LEAVES = {
  'w': 'kernel',
  'b': 'bias',
  'offset': 'bias',
  'scale': 'scale',
  'embeddings': 'embedding',
  'average': '',
  'bias': 'bias',
}


def _map_module(module: str, is_multimodal: bool) -> str:
  for pat, repl in _PREFIXES:
    m = re.match(pat, module)
    if not m:
      continue
    ours = m.expand(repl)
    if ours == '{classifier_query}':
      return (
        'decoder/label_query/trainable/embeddings'
        if is_multimodal
        else 'decoder/basic/query/trainable/embeddings'
      )
    rest = module[m.end() :]
    if not rest:
      return ours
    table = _CROSS if 'cross_attend' in ours else _SELF
    if rest in table:
      return ours + table[rest]
    if rest in _INNER:
      return ours + _INNER[rest]
    break
  raise CheckpointError(
    f'unexpected Haiku module {module!r} in the '
    f'checkpoint; it has no counterpart in our model.'
  )


def convert_haiku_params(
  params: Dict[str, Dict[str, Any]],
  state: Dict[str, Dict[str, Any]] = None,
  is_multimodal: bool = False,
):
  """Haiku {module: {name: array}} -> flat {(collection, *path): array}."""
  flat = {}
  for tree in (params, state or {}):
    for module, leaves in tree.items():
      for name, value in leaves.items():
        if name in ('counter', 'hidden'):  # EMA bookkeeping.
          continue
        path = _map_module(module, is_multimodal)
        collection = 'params'
        if path.startswith('@'):
          collection, path = path[1:].split('/', 1)
        value = np.asarray(value)
        if (
          path.endswith('/embeddings')
          or path in ('encoder/latents',)
          or (
            path.endswith('_padding')
            or path.endswith('_mask_token')
            or path == 'preprocessor/position_embeddings'
          )
        ):
          leaf = None  # pos_embs: the path already names the parameter.
        else:
          leaf = _LEAVES.get(name)
          if leaf is None:
            raise CheckpointError(f'unexpected parameter {module}/{name}.')
        if 'batchnorm' in path:
          value = value.reshape(-1)  # Haiku keeps [1, 1, 1, C].
        key = tuple(path.split('/')) + ((leaf,) if leaf else ())
        flat[(collection,) + key] = value
  return flat


class _HaikuMapping(dict):
  """Stand-in for Haiku's FlatMapping when Haiku is not installed."""

  def __init__(self, *args, **kwargs):  # pylint: disable=super-init-not-called
    dict.__init__(self)
    if args and isinstance(args[0], dict):
      self.update(args[0])
    elif args:
      try:
        self.update(dict(args[0]))
      except (TypeError, ValueError):
        pass
    self.update(kwargs)

  def __setstate__(self, state):
    if isinstance(state, dict):
      self.update(state)
    elif isinstance(state, (tuple, list)):
      for item in state:
        if isinstance(item, dict):
          self.update(item)


# What a Haiku checkpoint's pickle may refer to besides Haiku's mappings:
# NumPy / JAX arrays, dtypes and scalars, and plain containers.
_ALLOWED_MODULES = ('numpy', 'jax', 'jaxlib', 'ml_dtypes')
_ALLOWED_GLOBALS = {
  ('collections', 'OrderedDict'),
  ('builtins', 'set'),
  ('builtins', 'frozenset'),
  ('builtins', 'complex'),
  ('builtins', 'slice'),
  ('builtins', 'bytearray'),
}


class _Unpickler(pickle.Unpickler):
  """Loads arrays in (Haiku) mappings and nothing else.

  Why restricted: a pickle can call any importable function while it
  loads (os.system, eval); a checkpoint needs only these modules, so a
  damaged or foreign file is refused instead of running code.
  """

  def find_class(self, module, name):
    if module.startswith('haiku'):
      return _HaikuMapping
    if (module, name) in _ALLOWED_GLOBALS or (
      module.split('.')[0] in _ALLOWED_MODULES
    ):
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
      f'it refers to {module:.60}.{name:.60}, which a Haiku checkpoint '
      'never holds'
    )


def _to_plain(tree):
  if isinstance(tree, dict):
    return {k: _to_plain(v) for k, v in tree.items()}
  return tree


def read_haiku_pickle(path: str):
  """Returns (params, state) as plain nested dicts of NumPy arrays."""
  if not os.path.exists(path):
    raise CheckpointError(f'{path} does not exist.')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    obj = _Unpickler(io.BytesIO(data)).load()
  except Exception as e:  # Truncated or not a pickle.
    raise CheckpointError(
      f'cannot unpickle {path}: {one_line(e)}. The file is corrupt '
      f'or truncated; download it again.'
    ) from e
  obj = _to_plain(obj)
  if not isinstance(obj, dict):
    raise CheckpointError(f'{path} does not hold a Haiku parameter mapping.')
  if set(obj) >= {'params'} and isinstance(obj['params'], dict):
    params, state = obj['params'], obj.get('state') or {}
  else:
    params, state = obj, {}
  for tree in (params, state):
    _check_tree(tree, path)
  return params, state


def _check_tree(tree: Any, path: str) -> None:
  """{module name: {parameter name: number array}}, or one error naming
  the file and the first entry that is not."""
  if not isinstance(tree, dict):
    raise CheckpointError(
      f'{path} does not hold a Haiku parameter mapping '
      f'(found {type(tree).__name__}).'
    )
  for module, leaves in tree.items():
    if not isinstance(module, str) or not isinstance(leaves, dict):
      raise CheckpointError(
        f'{path}: entry {module!r:.60} is not a Haiku module (a name '
        f'mapping to parameters; found {type(leaves).__name__}).'
      )
    for name, value in leaves.items():
      # Objects, strings and dates are no parameters (bfloat16 is kind V).
      kind = np.asarray(value).dtype.kind
      if not isinstance(name, str) or kind in 'OUSMm':
        raise CheckpointError(
          f'{path}: parameter {module}/{name!s:.60} is not a number array '
          f'(found {type(value).__name__}).'
        )


def from_haiku(path: str, preset: Union[str, Dict[str, Any]], **overrides):
  """`(model, variables, config)` from an official Haiku checkpoint.

  Args:
    path: the `.pickle` / `.pystate` file.
    preset: a preset name (`language_mlm`, `imagenet_fourier`,
      `imagenet_learned`, `imagenet_conv`, `optical_flow`,
      `multimodal_autoencoding`) or a model config dict.
    **overrides: top-level model options (dtype, remat, ...).
  """
  config = (
    presets.get_config(preset) if isinstance(preset, str) else dict(preset)
  )
  config.update(overrides)
  model = build_model(config)
  params, state = read_haiku_pickle(path)
  is_mm = config['decoder'].get('type') == 'multimodal'
  try:
    flat = convert_haiku_params(params, state, is_multimodal=is_mm)
  except CheckpointError as e:
    raise CheckpointError(f'{path}: {e}') from None
  variables = check_and_unflatten(model, flat, path)
  return model, variables, model.config
