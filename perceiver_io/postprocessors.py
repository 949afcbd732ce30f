"""Postprocessors: decoder outputs -> task outputs.

* `EmbeddingDecoder`: MLM logits with the input embedding matrix tied:
  `x @ E^T + bias` (bias zero-initialised);
* `ClassificationPostprocessor`: Linear then the first position;
* `ProjectionPostprocessor`: Linear;
* `AudioPostprocessor`: Linear to samples_per_patch, flattened to [B, T];
* `MultimodalPostprocessor`: splits [B, N, C] by modality (sorted names) and
  applies each modality's postprocessor.
"""

from typing import Any, Dict, Optional

import flax.linen as nn
import jax.numpy as jnp

from perceiver_io.attention import default_kernel_init
from perceiver_io.config_checks import check_keys


class EmbeddingDecoder(nn.Module):
  vocab_size: int = 262
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, embedding_matrix, **unused):
    bias = self.param(
      'bias', nn.initializers.zeros, (self.vocab_size,), self.param_dtype
    )
    e = embedding_matrix.astype(x.dtype)
    return jnp.einsum('bnd,vd->bnv', x, e) + bias.astype(x.dtype)


def _dense(features, dtype, param_dtype, name='linear'):
  return nn.Dense(
    features,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=default_kernel_init,
    name=name,
  )


class ClassificationPostprocessor(nn.Module):
  num_classes: int
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, **unused):
    return _dense(self.num_classes, self.dtype, self.param_dtype)(x)[:, 0, :]


class ProjectionPostprocessor(nn.Module):
  num_outputs: int
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, **unused):
    return _dense(self.num_outputs, self.dtype, self.param_dtype)(x)


class AudioPostprocessor(nn.Module):
  samples_per_patch: int = 96
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, **unused):
    y = _dense(self.samples_per_patch, self.dtype, self.param_dtype)(x)
    return y.reshape(y.shape[0], -1)


class MultimodalPostprocessor(nn.Module):
  modalities: Dict[str, Dict[str, Any]]
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, modality_sizes, **unused):
    outputs, start = {}, 0
    for name in sorted(modality_sizes):
      size = modality_sizes[name]
      part = x[:, start : start + size]
      start += size
      outputs[name] = build_postprocessor(
        self.modalities[name], dtype=self.dtype, name=f'{name}_postprocessor'
      )(part)
    return outputs


# Postprocessor types by the name a model config gives (`{'type': name}`).
POSTPROCESSORS = {
  'embedding_decoder': EmbeddingDecoder,
  'classification': ClassificationPostprocessor,
  'projection': ProjectionPostprocessor,
  'audio': AudioPostprocessor,
  'multimodal': MultimodalPostprocessor,
}


def register(name: str):
  """Class decorator: makes a postprocessor usable as `{'type': name, ...}`
  (its `__call__(x, **unused)` maps decoder outputs to task outputs)."""

  def add(cls):
    if name in POSTPROCESSORS:
      raise ValueError(
        f'postprocessor type {name!r} is already registered '
        f'({POSTPROCESSORS[name].__name__}).'
      )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
      raise TypeError(
        f'register({name!r}) takes a flax.linen.Module class, got {cls!r}.'
      )
    POSTPROCESSORS[name] = cls
    return cls

  return add


def build_postprocessor(cfg: Optional[Dict[str, Any]], dtype=None, name=None):
  if cfg is None:
    return None
  cfg = dict(cfg)
  kind = cfg.pop('type', None)
  if kind not in POSTPROCESSORS:
    raise ValueError(
      f'unknown postprocessor type {kind!r}; expected one of '
      f'{sorted(POSTPROCESSORS)} (or register one: '
      'perceiver_io.postprocessors.register).'
    )
  check_keys('postprocessor', cfg, POSTPROCESSORS[kind])
  return POSTPROCESSORS[kind](dtype=dtype, name=name, **cfg)
