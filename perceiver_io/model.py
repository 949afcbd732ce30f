"""PerceiverIO = preprocessor -> encoder -> decoder -> postprocessor.

A model is fully described by a JSON-serialisable config dict (see
`presets.py`), so checkpoints can store it and be reloaded without knowing the
preset. Top-level performance options apply to every part:

* `dtype`: compute dtype ('float32' or 'bfloat16'); parameters stay float32;
* `remat`: rematerialise latent self-attention layers in the backward pass;
  `remat_policy` says what they keep ('nothing', 'dots', 'dots_no_batch');
* `scan_layers`: run the latent self-attention stack as `nn.scan` over
  stacked parameters (compiles one layer, not all of them; the parameters'
  layout differs: `checkpoints.stack_layers` / `unstack_layers` convert);
* `query_chunk_size`: decode large query sets in chunks (bounded memory);
* `attention_impl`: how attention and dense layers run, one of
  `kernels.ATTENTION_IMPLS` ('xla' by default: plain autodiff, so every JAX
  transformation works on every backend; 'auto' picks the fastest kernels
  of the backend; see perceiver_io/kernels/), with the rarely needed
  `kernel_options` dict for the other `kernels.KernelOptions` fields;
* `gelu_approximate`: tanh GELU (official) or exact erf GELU (HuggingFace).

Only `gelu_approximate` changes the function; the others change how it is
computed (values equal to float round-off); `scan_layers` also changes the
parameters' layout (not their values).
"""

import copy
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_io import decoders as decoders_lib
from perceiver_io import kernels
from perceiver_io.config_checks import check_keys
from perceiver_io.encoder import PerceiverEncoder
from perceiver_io.encoder import REMAT_POLICIES
from perceiver_io.postprocessors import build_postprocessor
from perceiver_io.postprocessors import EmbeddingDecoder
from perceiver_io import preprocessors
from perceiver_io.preprocessors import build_preprocessor

_DTYPES = {
  'float32': jnp.float32,
  'bfloat16': jnp.bfloat16,
  'float16': jnp.float16,
}
_DECODERS = {
  'basic': decoders_lib.BasicDecoder,
  'classification': decoders_lib.ClassificationDecoder,
  'flow': decoders_lib.FlowDecoder,
  'multimodal': decoders_lib.MultimodalDecoder,
  'projection': decoders_lib.ProjectionDecoder,
}
_PERF_KEYS = (
  'dtype',
  'remat',
  'remat_policy',
  'scan_layers',
  'query_chunk_size',
  'attention_impl',
  'kernel_options',
  'gelu_approximate',
)
_KNOWN_KEYS = (
  'preprocessor',
  'encoder',
  'decoder',
  'postprocessor',
  'name',
) + _PERF_KEYS


def compute_dtype(config):
  name = config.get('dtype', 'float32')
  if name not in _DTYPES:
    raise ValueError(f'dtype must be one of {sorted(_DTYPES)}, got {name!r}.')
  return _DTYPES[name]


def validate_config(config: Dict[str, Any]) -> None:
  unknown = sorted(set(config) - set(_KNOWN_KEYS))
  if unknown:
    raise ValueError(
      f'unknown model config keys {unknown}; valid keys are '
      f'{sorted(_KNOWN_KEYS)}.'
    )
  for key in ('preprocessor', 'encoder', 'decoder'):
    if key not in config:
      raise ValueError(f'model config is missing {key!r}.')
  if config['decoder'].get('type') not in _DECODERS:
    raise ValueError(
      f'decoder type must be one of {sorted(_DECODERS)}, got '
      f'{config["decoder"].get("type")!r}.'
    )
  compute_dtype(config)
  kernels.KernelOptions.from_config(config)
  for section in (config, config['decoder']):
    chunk = section.get('query_chunk_size')
    if chunk is not None and (
      isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1
    ):
      raise ValueError(
        f'query_chunk_size must be a positive integer or None, got {chunk!r}.'
      )
  for key in ('remat', 'scan_layers', 'gelu_approximate'):
    if key in config and not isinstance(config[key], bool):
      raise ValueError(f'{key} must be True or False, got {config[key]!r}.')
  policy = config.get('remat_policy', 'nothing')
  if policy not in REMAT_POLICIES:
    raise ValueError(
      f'remat_policy must be one of {sorted(REMAT_POLICIES)}, got {policy!r}.'
    )
  check_keys('encoder', config['encoder'], PerceiverEncoder, exclude=_PERF_KEYS)
  decoder_cls = _DECODERS[config['decoder']['type']]
  check_keys(
    'decoder',
    config['decoder'],
    decoder_cls,
    extra=('type',),
    exclude=_PERF_KEYS,
  )


class PerceiverIO(nn.Module):
  """The whole model, built from `config` (a plain dict; see presets.py).

  Call: `model.apply(variables, inputs, attention_mask=None, query_mask=None,
  subsampled_output_points=None, input_masks=None, deterministic=True)`;
  `method='encode'` / `'decode'` run the two halves. Subsampled points are
  flat indices [n] (shared by the batch) or [B, n] (per example). With
  `deterministic=False` pass `rngs={'dropout': key}` (and `'mask'` for
  multimodal masking with 0 < p < 1) and `mutable=['batch_stats']` for the
  conv preprocessor.
  """

  config: Dict[str, Any]

  def setup(self):
    cfg = self.config
    validate_config(cfg)
    dtype = compute_dtype(cfg)
    perf = dict(
      gelu_approximate=cfg.get('gelu_approximate', True),
      kernel_options=kernels.KernelOptions.from_config(cfg),
    )
    self.preprocessor = build_preprocessor(cfg['preprocessor'], dtype=dtype)
    self.encoder = PerceiverEncoder(
      dtype=dtype,
      remat=cfg.get('remat', False),
      remat_policy=cfg.get('remat_policy', 'nothing'),
      scan_layers=cfg.get('scan_layers', False),
      **perf,
      **cfg['encoder'],
    )
    dec = dict(cfg['decoder'])
    kind = dec.pop('type')
    if kind in ('basic', 'flow', 'multimodal'):
      dec.setdefault('query_chunk_size', cfg.get('query_chunk_size'))
    if kind != 'projection':
      dec.update(perf)
    self.decoder = _DECODERS[kind](dtype=dtype, **dec)
    self.postprocessor = build_postprocessor(
      cfg.get('postprocessor'), dtype=dtype
    )

  def __call__(
    self,
    inputs,
    *,
    attention_mask=None,
    query_mask=None,
    subsampled_output_points=None,
    input_masks=None,
    deterministic=True,
  ):
    z, pre = self.encode(
      inputs,
      attention_mask=attention_mask,
      input_masks=input_masks,
      deterministic=deterministic,
    )
    return self.decode(
      z,
      pre,
      query_mask=query_mask,
      subsampled_output_points=subsampled_output_points,
      deterministic=deterministic,
    )

  def encode(
    self, inputs, *, attention_mask=None, input_masks=None, deterministic=True
  ):
    """Inputs -> (latents z, the preprocessed inputs).

    `input_masks` (multimodal only): name -> bool [B] or [B, n], elements
    replaced by the modality's mask token, instead of drawing them with
    `mask_probs` (a task that chooses which examples to mask).
    """
    if input_masks is None:
      pre = self.preprocessor(inputs, deterministic)
    elif isinstance(self.preprocessor, preprocessors.MultimodalPreprocessor):
      pre = self.preprocessor(inputs, deterministic, masks=input_masks)
    else:
      raise ValueError('input_masks needs a multimodal preprocessor.')
    if (
      attention_mask is not None
      and attention_mask.shape != pre.inputs.shape[:2]
    ):
      raise ValueError(
        f'attention_mask must have shape [batch, elements] = '
        f'{pre.inputs.shape[:2]}, got {attention_mask.shape}.'
      )
    return self.encoder(pre.inputs, attention_mask, deterministic), pre

  def decode(
    self,
    z,
    pre,
    *,
    query_mask=None,
    subsampled_output_points=None,
    deterministic=True,
  ):
    """Latents -> outputs; decoding is separate so that one encoding can be
    decoded in chunks of subsampled points (bounded memory, as the official
    video colab decodes)."""
    out = self.decoder(
      z,
      inputs=pre.inputs,
      modality_sizes=pre.modality_sizes,
      inputs_without_pos=pre.inputs_without_pos,
      index_dims=pre.index_dims,
      subsampled_points=subsampled_output_points,
      query_mask=query_mask,
      deterministic=deterministic,
    )
    if self.postprocessor is None:
      return out
    if isinstance(self.postprocessor, EmbeddingDecoder):
      return self.postprocessor(
        out, embedding_matrix=self.preprocessor.embedding_matrix()
      )
    sizes = None
    if isinstance(self.decoder, decoders_lib.MultimodalDecoder):
      sizes = self.decoder.output_sizes(subsampled_output_points)
    return self.postprocessor(out, modality_sizes=sizes)


def build_model(config: Dict[str, Any], **overrides) -> PerceiverIO:
  """PerceiverIO from a config dict; `overrides` set top-level keys.

  A Perceiver AR config (`'family': 'perceiver_ar'`) builds
  `perceiver_io.ar.PerceiverAR`.
  """
  config = copy.deepcopy(dict(config))
  config.update(overrides)
  if config.get('family') == 'perceiver_ar':
    from perceiver_io.ar import model as ar_model  # pylint: disable=g-import-not-at-top

    return ar_model.PerceiverAR(config)
  validate_config(config)
  return PerceiverIO(config)


_BUILTIN_INPUTS = ('text', 'multimodal', 'onehot', 'audio', 'image')


def example_inputs(config: Dict[str, Any], batch_size: int = 1):
  """Zero NumPy inputs of the shape a config expects, plus the call kwargs.

  Used to initialise parameters (e.g. for shape checks on import) without
  real data; NumPy, so that asking for shapes creates no JAX backend. Image
  sizes are derived from the position encoding (Fourier `max_resolution`
  times the downsampling, or a square trainable grid).
  """
  if config.get('family') == 'perceiver_ar':  # int tokens [B, N]
    return np.zeros((batch_size, config['max_context']), np.int32), {}
  pre = config['preprocessor']
  kwargs = {}
  example = getattr(
    preprocessors.PREPROCESSORS.get(pre['type']), 'example_input', None
  )
  if example is not None:  # A registered modality says its own shape.
    return example(pre, batch_size), kwargs
  if pre['type'] not in _BUILTIN_INPUTS:
    raise ValueError(
      f'preprocessor type {pre["type"]!r} defines no example_input(config, '
      'batch_size) classmethod; it is needed to know the input shape '
      '(restoring a checkpoint, counting FLOPs).'
    )
  if pre['type'] == 'text':
    n = pre['max_seq_len']
    return (
      np.zeros((batch_size, n), np.int32),
      {'attention_mask': np.ones((batch_size, n), np.int32)},
    )
  if pre['type'] == 'multimodal':
    inputs = {}
    for name, sub in pre['modalities'].items():
      x, _ = example_inputs({'preprocessor': sub}, batch_size)
      inputs[name] = x
    points = {}
    for name, spec in config['decoder'].get('modalities', {}).items():
      points[name] = (
        None
        if spec['query']['type'] == 'trainable'
        else np.arange(min(16, int(np.prod(spec['output_index_dims']))))
      )
    kwargs['subsampled_output_points'] = points
    return inputs, kwargs
  if pre['type'] == 'onehot':
    return np.zeros((batch_size, pre['num_classes']), np.float32), kwargs
  pe = pre['position_encoding']
  if pre['type'] == 'audio':
    n = (
      pe['max_resolution'][0]
      if pe['type'] == 'fourier'
      else (int(np.prod(pe['index_dims'])) * pre['samples_per_patch'])
    )
    return np.zeros((batch_size, n), np.float32), kwargs
  if pe['type'] == 'fourier':
    grid = list(pe['max_resolution'])
  else:
    side = int(round(np.sqrt(np.prod(pe['index_dims']))))
    grid = [side, side]
  s = pre.get('spatial_downsample', 1)
  if pre.get('prep_type') == 'conv':
    s = 4 ** max(int(round(np.log(s) / np.log(4))), 1)
  if pre.get('temporal'):
    t, h, w = grid
    shape = (batch_size, t * pre.get('temporal_downsample', 1), h * s, w * s, 3)
  elif pre.get('flow_patches'):
    shape = (batch_size, 2, grid[0] * s, grid[1] * s, 3)
  else:
    shape = (batch_size, grid[0] * s, grid[1] * s, pre.get('in_channels', 3))
  return np.zeros(shape, np.float32), kwargs


def abstract_variables(model: PerceiverIO, batch_size: int = 1):
  """Shapes/dtypes of `model`'s variables, without allocating them."""
  inputs, kwargs = example_inputs(model.config, batch_size)
  return jax.eval_shape(
    lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), inputs
  )
