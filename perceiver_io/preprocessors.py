"""Preprocessors: turn a modality into an array of elements [B, M, C].

Each preprocessor returns a `Preprocessed` tuple: the network inputs with
positions, the per-modality sizes (multimodal only), the inputs without
positions (official `inputs_without_pos`) and the index dims the elements were
flattened from (used by the flow decoder to reshape its output).

All inputs are channels-last: text ids `[B, M]`, images `[B, H, W, C]`, video
`[B, T, H, W, C]`, flow frame pairs `[B, 2, H, W, C]`, audio `[B, T]` or
`[B, T, 1]`, one-hot labels `[B, K]`.
"""

import math
from typing import Any, Dict, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_io.config_checks import check_keys
from perceiver_io.position_encoding import PositionEncoding


class Preprocessed(NamedTuple):
  inputs: jax.Array  # [B, M, C]
  modality_sizes: Optional[Dict[str, int]]
  inputs_without_pos: Any
  index_dims: Tuple[int, ...]


def _check_rank(x, ranks, layout, what):
  if getattr(x, 'ndim', None) not in ranks:
    shape = getattr(x, 'shape', None)
    raise ValueError(f'{what} expects {layout}; got an array of shape {shape}.')


def _check_float(x, what, layout):
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
      f'{what} expects floating-point {layout} (e.g. float32 '
      f'images normalised as in training), got dtype {x.dtype}.'
    )


def space_to_depth(x, temporal_block_size=1, spatial_block_size=1):
  """[B,H,W,C] or [B,T,H,W,C] -> blocks folded into channels, order (t,h,w,c)."""
  s, t = spatial_block_size, temporal_block_size
  if x.ndim == 4:
    b, h, w, c = x.shape
    if h % s or w % s:
      raise ValueError(f'height/width {(h, w)} must be divisible by {s}.')
    x = x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // s, w // s, s * s * c)
  if x.ndim == 5:
    b, n, h, w, c = x.shape
    if n % t or h % s or w % s:
      raise ValueError(
        f'(time, height, width) {(n, h, w)} must be divisible '
        f'by ({t}, {s}, {s}).'
      )
    x = x.reshape(b, n // t, t, h // s, s, w // s, s, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, n // t, h // s, w // s, t * s * s * c)
  raise ValueError(f'space_to_depth expects rank 4 or 5, got {x.shape}.')


def extract_flow_patches(frames, size=3):
  """[..., H, W, C] -> [..., H, W, size*size*C] zero-padded patches.

  Channel order (ph, pw, c), as the official `patches_for_flow` (a port of
  `tf.image.extract_patches` with stride 1 and VALID padding after padding by
  size // 2).
  """
  r = size // 2
  pad = [(0, 0)] * (frames.ndim - 3) + [(r, r), (r, r), (0, 0)]
  padded = jnp.pad(frames, pad)
  h, w = frames.shape[-3], frames.shape[-2]
  shifts = [
    padded[..., i : i + h, j : j + w, :]
    for i in range(size)
    for j in range(size)
  ]
  return jnp.concatenate(shifts, axis=-1)


def _same_pool(x, window, stride, hf_compat):
  if hf_compat:  # torch MaxPool2d(3, 2) without padding.
    return nn.max_pool(x, (window, window), (stride, stride), padding='VALID')
  return nn.max_pool(x, (window, window), (stride, stride), padding='SAME')


class Conv2DDownsample(nn.Module):
  """`num_layers` x [Conv 7x7/2 (no bias), BatchNorm, ReLU, MaxPool 3x3/2].

  `hf_compat=True` reproduces HuggingFace's variant (symmetric padding of 3
  for the conv and an unpadded max pool: 224 -> 55 instead of the official
  TF-'SAME' 224 -> 56); it exists so HF checkpoints give HF's numbers.
  """

  num_layers: int = 1
  num_channels: int = 64
  use_batchnorm: bool = True
  hf_compat: bool = False
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    for i in range(self.num_layers):
      suffix = '' if i == 0 else f'_{i}'
      padding = ((3, 3), (3, 3)) if self.hf_compat else 'SAME'
      x = nn.Conv(
        self.num_channels,
        (7, 7),
        strides=(2, 2),
        padding=padding,
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.initializers.lecun_normal(),
        name=f'conv{suffix}',
      )(x)
      if self.use_batchnorm:
        x = nn.BatchNorm(
          use_running_average=deterministic,
          momentum=0.9,
          epsilon=1e-5,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name=f'batchnorm{suffix}',
        )(x)
      x = nn.relu(x)
      x = _same_pool(x, 3, 2, self.hf_compat)
    return x


def network_inputs(
  module, x, position_encoding, project_pos_dim, concat_or_add_pos, dtype
):
  """Flatten index dims, add/concat the position encoding (official order).

  `x` is [B, *index_dims, C] features; `position_encoding` a
  position-encoding config (position_encoding.py). Call it inside a
  preprocessor's compact `__call__` (it creates the encoding's parameters
  there, as `position_encoding`).
  """
  batch, index_dims = x.shape[0], tuple(x.shape[1:-1])
  flat = x.reshape(batch, int(np.prod(index_dims)), x.shape[-1])
  pos = PositionEncoding(
    position_encoding, project_pos_dim, dtype=dtype, name='position_encoding'
  )(batch, index_dims)
  pos = pos.astype(flat.dtype)
  if concat_or_add_pos == 'concat':
    out = jnp.concatenate([flat, pos], axis=-1)
  elif concat_or_add_pos == 'add':
    if pos.shape[-1] != flat.shape[-1]:
      raise ValueError(
        f'concat_or_add_pos="add" needs position width '
        f'{pos.shape[-1]} == input width {flat.shape[-1]}.'
      )
    out = flat + pos
  else:
    raise ValueError(
      f"concat_or_add_pos must be 'concat' or 'add', got {concat_or_add_pos!r}."
    )
  return Preprocessed(out, None, flat, index_dims)


class TextPreprocessor(nn.Module):
  """Token embedding + added learned absolute positions (first M of them)."""

  vocab_size: int = 262
  d_model: int = 768
  max_seq_len: int = 2048
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  def setup(self):
    self.embed = nn.Embed(
      self.vocab_size,
      self.d_model,
      embedding_init=nn.initializers.normal(0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    self.position_embeddings = self.param(
      'position_embeddings',
      nn.initializers.normal(0.02),
      (self.max_seq_len, self.d_model),
      self.param_dtype,
    )

  def __call__(self, input_ids, deterministic=True):
    _check_rank(
      input_ids, (2,), 'token ids [batch, seq_len] (int32)', 'TextPreprocessor'
    )
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(
        f'TextPreprocessor expects integer token ids [batch, '
        f'seq_len], got dtype {input_ids.dtype}.'
      )
    seq_len = input_ids.shape[1]
    if seq_len > self.max_seq_len:
      raise ValueError(
        f'sequence length {seq_len} exceeds max_seq_len '
        f'{self.max_seq_len}; truncate the input.'
      )
    emb = self.embed(input_ids)
    pos = self.position_embeddings[:seq_len].astype(emb.dtype)
    return Preprocessed(emb + pos, None, emb, (seq_len,))

  def embedding_matrix(self):
    return self.embed.embedding


class ImagePreprocessor(nn.Module):
  """Images/video -> elements, with Fourier or trainable positions.

  Attributes:
    prep_type: 'conv' (Conv2DDownsample, log4(spatial_downsample) layers),
      'conv1x1' (strided 1x1 conv), 'patches' (space-to-depth, optionally
      followed by a Linear `patches_linear`), 'pixels' (strided subsampling).
    flow_patches: input is a frame pair [B, 2, H, W, C]; 3x3 patches are
      extracted per frame first (the official optical-flow input).
  """

  prep_type: str = 'conv'
  spatial_downsample: int = 4
  temporal_downsample: int = 1
  num_channels: int = 64
  position_encoding: Optional[Dict[str, Any]] = None
  concat_or_add_pos: str = 'concat'
  project_pos_dim: int = -1
  conv_after_patching: bool = False
  conv2d_use_batchnorm: bool = True
  conv_hf_compat: bool = False
  flow_patches: bool = False
  temporal: bool = False  # Video [B, T, H, W, C] instead of images.
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    if self.flow_patches:
      _check_rank(
        x,
        (5,),
        'a frame pair [batch, 2, height, width, channels]',
        'the optical-flow preprocessor',
      )
      if x.shape[1] != 2:
        raise ValueError(
          f'the optical-flow preprocessor expects 2 frames on '
          f'axis 1 ([batch, 2, H, W, C]); got shape {x.shape}.'
        )
      _check_float(x, 'the optical-flow preprocessor', 'frames in [-1, 1]')
      x = extract_flow_patches(x)
    elif self.temporal:
      _check_rank(
        x,
        (5,),
        'video [batch, time, height, width, channels]',
        'ImagePreprocessor (temporal)',
      )
      _check_float(x, 'ImagePreprocessor', 'video')
    else:
      _check_rank(
        x, (4,), 'images [batch, height, width, channels]', 'ImagePreprocessor'
      )
      _check_float(x, 'ImagePreprocessor', 'images')
    if self.dtype is not None:
      x = x.astype(self.dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.prep_type == 'conv':
      layers = math.log(self.spatial_downsample, 4)
      if layers != round(layers) or self.temporal_downsample != 1:
        raise ValueError(
          'prep_type="conv" needs spatial_downsample a power '
          'of 4 and temporal_downsample 1.'
        )
      conv = Conv2DDownsample(
        max(int(round(layers)), 1),
        self.num_channels,
        self.conv2d_use_batchnorm,
        self.conv_hf_compat,
        name='conv_downsample',
        **kw,
      )
      if x.ndim == 5:  # Apply per frame.
        b, t = x.shape[:2]
        y = conv(x.reshape((b * t,) + x.shape[2:]), deterministic)
        x = y.reshape((b, t) + y.shape[1:])
      else:
        x = conv(x, deterministic)
    elif self.prep_type == 'conv1x1':
      if self.temporal_downsample != 1:
        raise ValueError('prep_type="conv1x1" does not downsample in time.')
      s = self.spatial_downsample
      x = nn.Conv(
        self.num_channels,
        (1, 1),
        strides=(s, s),
        kernel_init=nn.initializers.lecun_normal(),
        name='conv1x1',
        **kw,
      )(x)
    elif self.prep_type == 'patches':
      x = space_to_depth(x, self.temporal_downsample, self.spatial_downsample)
      if x.ndim == 5 and x.shape[1] == 1:  # e.g. the flow frame pair.
        x = x[:, 0]
      if self.conv_after_patching:
        x = nn.Dense(
          self.num_channels,
          kernel_init=nn.initializers.lecun_normal(),
          name='patches_linear',
          **kw,
        )(x)
    elif self.prep_type == 'pixels':
      s = self.spatial_downsample
      x = (
        x[:, ::s, ::s]
        if x.ndim == 4
        else x[:, :: self.temporal_downsample, ::s, ::s]
      )
    else:
      raise ValueError(
        f"prep_type must be one of 'conv', 'conv1x1', "
        f"'patches', 'pixels'; got {self.prep_type!r}."
      )
    return network_inputs(
      self,
      x,
      self.position_encoding,
      self.project_pos_dim,
      self.concat_or_add_pos,
      self.dtype,
    )


class AudioPreprocessor(nn.Module):
  """Raw samples [B, T] -> patches [B, T / samples_per_patch, spp] + positions."""

  samples_per_patch: int = 96
  position_encoding: Optional[Dict[str, Any]] = None
  concat_or_add_pos: str = 'concat'
  project_pos_dim: int = -1
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    _check_rank(
      x,
      (2, 3),
      'audio [batch, samples] or [batch, samples, 1]',
      'AudioPreprocessor',
    )
    _check_float(x, 'AudioPreprocessor', 'audio samples')
    n = int(np.prod(x.shape[1:]))
    if n % self.samples_per_patch:
      raise ValueError(
        f'{n} audio samples are not divisible by '
        f'samples_per_patch={self.samples_per_patch}.'
      )
    x = x.reshape(
      x.shape[0], n // self.samples_per_patch, self.samples_per_patch
    )
    if self.dtype is not None:
      x = x.astype(self.dtype)
    return network_inputs(
      self,
      x,
      self.position_encoding,
      self.project_pos_dim,
      self.concat_or_add_pos,
      self.dtype,
    )


class OneHotPreprocessor(nn.Module):
  """[B, K] -> [B, 1, K], no positions."""

  num_classes: Optional[int] = None
  dtype: Optional[Any] = None

  def __call__(self, x, deterministic=True):
    _check_rank(
      x, (2,), 'one-hot labels [batch, num_classes]', 'OneHotPreprocessor'
    )
    if self.num_classes is not None and x.shape[-1] != self.num_classes:
      raise ValueError(
        f'OneHotPreprocessor expects {self.num_classes} '
        f'classes, got shape {x.shape}.'
      )
    x = x[:, None, :].astype(self.dtype or jnp.float32)
    return Preprocessed(x, None, x, (1,))


def preprocessor_output_width(cfg: Dict[str, Any]) -> int:
  """Channel width a preprocessor config produces (needed for padding)."""
  kind = cfg['type']
  if kind == 'text':
    return cfg['d_model']
  if kind == 'onehot':
    return cfg['num_classes']
  pe = cfg['position_encoding']
  if kind == 'audio':
    num_dims, inp = 1, cfg['samples_per_patch']
  elif kind == 'image':
    num_dims = 3 if cfg.get('temporal', False) else 2
    prep = cfg.get('prep_type', 'conv')
    if cfg.get('conv_after_patching') or prep in ('conv', 'conv1x1'):
      inp = cfg.get('num_channels', 64)
    elif prep == 'patches':
      inp = (
        cfg['in_channels']
        * cfg.get('spatial_downsample', 4) ** 2
        * cfg.get('temporal_downsample', 1)
      )
    else:
      inp = cfg['in_channels']
  else:
    raise ValueError(f'unknown preprocessor type {kind!r}.')
  pos = PositionEncoding(pe, cfg.get('project_pos_dim', -1)).output_size(
    num_dims
  )
  return pos if cfg.get('concat_or_add_pos', 'concat') == 'add' else inp + pos


class MultimodalPreprocessor(nn.Module):
  """Runs each modality, pads to a common width, optionally masks, concatenates.

  Padding: `max(width) + min_padding_size` with a learned per-modality vector
  `{name}_padding`. Masking: each element of modality m is replaced by the
  learned `{name}_mask_token` with probability `mask_probs[m]` (probabilities
  of exactly 0 or 1 need no rng; others draw from the 'mask' rng stream).
  `masks` (name -> bool [B] or [B, n]) gives the draw instead, for the
  modalities it names. Modalities are concatenated in sorted name order.
  """

  modalities: Dict[str, Dict[str, Any]]
  mask_probs: Optional[Dict[str, float]] = None
  min_padding_size: int = 2
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, deterministic=True, masks=None):
    masks = masks or {}
    unknown = sorted(set(masks) - set(self.modalities))
    if unknown:
      raise ValueError(
        f'masks name {unknown}, not modalities of this model '
        f'({sorted(self.modalities)}).'
      )
    if not isinstance(inputs, dict) or set(inputs) != set(self.modalities):
      got = sorted(inputs) if isinstance(inputs, dict) else type(inputs)
      raise ValueError(
        f'multimodal inputs must be a dict with keys '
        f'{sorted(self.modalities)}; got {got}.'
      )
    width = (
      max(preprocessor_output_width(c) for c in self.modalities.values())
      + self.min_padding_size
    )
    mask_probs = self.mask_probs or {}
    batches = {k: np.shape(v)[0] for k, v in inputs.items()}
    if len(set(batches.values())) != 1:
      raise ValueError(
        f'multimodal inputs must share the batch size; got {batches}.'
      )
    padded, sizes, without_pos = [], {}, {}
    for name in sorted(self.modalities):
      out = build_preprocessor(
        self.modalities[name], dtype=self.dtype, name=f'{name}_preprocessor'
      )(inputs[name], deterministic)
      x = out.inputs
      b, n, c = x.shape
      pad = self.param(
        f'{name}_padding',
        nn.initializers.truncated_normal(0.02),
        (1, width - c),
        self.param_dtype,
      )
      x = jnp.concatenate(
        [x, jnp.broadcast_to(pad.astype(x.dtype), (b, n, width - c))], -1
      )
      if name in mask_probs or name in masks:
        token = self.param(
          f'{name}_mask_token',
          nn.initializers.truncated_normal(0.02),
          (1, width),
          self.param_dtype,
        ).astype(x.dtype)
        p = float(mask_probs.get(name, 0.0))
        if name in masks:
          m = jnp.asarray(masks[name]).astype(bool).reshape(b, -1)[..., None]
          x = jnp.where(m, token, x)
        elif p >= 1.0:
          x = jnp.broadcast_to(token, x.shape)
        elif p > 0.0:
          m = jax.random.bernoulli(self.make_rng('mask'), p, (b, n, 1))
          x = jnp.where(m, token, x)
      padded.append(x)
      sizes[name] = n
      without_pos[name] = out.inputs_without_pos
    return Preprocessed(
      jnp.concatenate(padded, axis=1),
      sizes,
      without_pos,
      (sum(sizes.values()),),
    )


# Preprocessor types by the name a model config gives (`{'type': name}`).
PREPROCESSORS = {
  'text': TextPreprocessor,
  'image': ImagePreprocessor,
  'audio': AudioPreprocessor,
  'onehot': OneHotPreprocessor,
  'multimodal': MultimodalPreprocessor,
}


def register(name: str):
  """Class decorator: makes a preprocessor usable as `{'type': name, ...}`.

  A new modality is a Flax module whose `__call__(x, deterministic)` returns
  `Preprocessed(inputs [B, M, C], None, inputs_without_pos, index_dims)`;
  its dataclass fields are the config keys it accepts, and a classmethod
  `example_input(config, batch_size)` gives a zero NumPy input of the shape
  it takes (`model.example_inputs`: restoring checkpoints, counting FLOPs).
  See README, "Add a modality". A name is registered once.
  """

  def add(cls):
    if name in PREPROCESSORS:
      raise ValueError(
        f'preprocessor type {name!r} is already registered '
        f'({PREPROCESSORS[name].__name__}).'
      )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
      raise TypeError(
        f'register({name!r}) takes a flax.linen.Module class, got {cls!r}.'
      )
    PREPROCESSORS[name] = cls
    return cls

  return add


def build_preprocessor(cfg: Dict[str, Any], dtype=None, name=None):
  """Preprocessor module from a config dict with a `type` key."""
  cfg = dict(cfg)
  kind = cfg.pop('type', None)
  if kind not in PREPROCESSORS:
    raise ValueError(
      f'unknown preprocessor type {kind!r}; expected one of '
      f'{sorted(PREPROCESSORS)} (or register one: '
      'perceiver_io.preprocessors.register).'
    )
  cls = PREPROCESSORS[kind]
  if kind == 'image':
    cfg.pop('in_channels', None)  # Informational (used for widths only).
  check_keys('preprocessor', cfg, cls)
  return cls(dtype=dtype, name=name, **cfg)
