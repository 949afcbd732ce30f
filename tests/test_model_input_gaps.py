"""Bad-input checks added after review: query masks, chunk sizes, config keys, layouts."""

import jax.numpy as jnp
import pytest
import perceiver_io
from perceiver_io import model as model_lib
from perceiver_io import presets
from tests.test_model_inputs import shape_init, _with, IDS


@pytest.mark.parametrize('qshape', [(2, 10), (2,), (1, 64)])
def test_query_mask_shape_mismatch(qshape):
  with pytest.raises(
    ValueError,
    match=r'query_mask must have shape '
    r'\[batch, num_queries\] = \(2, 64\)',
  ):
    shape_init(
      presets.get_config('tiny_language_mlm'),
      IDS,
      query_mask=jnp.ones(qshape, bool),
    )


@pytest.mark.parametrize('chunk', [0, -3, 2.5, True])
def test_query_chunk_size_must_be_positive_int(chunk):
  cfg = presets.get_config('tiny_language_mlm')
  with pytest.raises(
    ValueError, match='query_chunk_size must be a positive integer'
  ):
    perceiver_io.build_model(cfg, query_chunk_size=chunk)


@pytest.mark.parametrize(
  'section,key',
  [
    ('encoder', 'num_latens'),
    ('decoder', 'nheads'),
    ('preprocessor', 'd_modle'),
  ],
)
def test_unknown_section_key_lists_valid_keys(section, key):
  cfg = _with('tiny_language_mlm', section, **{key: 3})
  with pytest.raises(
    ValueError,
    match=f"unknown {section} config keys \\['{key}'\\]; valid keys are",
  ):
    shape_init(cfg, IDS)


def test_video_to_image_model_names_layout():
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    shape_init(
      presets.get_config('tiny_imagenet_fourier'), jnp.zeros((1, 2, 16, 16, 3))
    )


def test_image_to_video_modality_names_layout():
  cfg = presets.get_config('tiny_multimodal_autoencoding')
  inputs, kwargs = model_lib.example_inputs(cfg)
  with pytest.raises(
    ValueError, match=r'\[batch, time, height, width, channels\]'
  ):
    shape_init(cfg, dict(inputs, image=jnp.zeros((1, 16, 16, 3))), **kwargs)


def test_multimodal_batch_mismatch():
  cfg = presets.get_config('tiny_multimodal_autoencoding')
  inputs, kwargs = model_lib.example_inputs(cfg)
  with pytest.raises(ValueError, match='batch size'):
    shape_init(cfg, dict(inputs, label=jnp.zeros((2, 5))), **kwargs)


def test_bad_dtype_fails_at_build():
  with pytest.raises(ValueError, match='dtype must be one of'):
    perceiver_io.build_model(
      presets.get_config('tiny_language_mlm'), dtype='fp8'
    )
