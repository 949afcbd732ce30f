"""Bad model inputs and bad configs fail with one clear ValueError.

Why: a model called with the wrong rank, dtype or shape should say which
layout it expects instead of failing deep inside a matmul or a broadcast; a
config with an unknown key or type should list the valid ones. Everything is
checked through `jax.eval_shape(model.init ...)`, so nothing is compiled and
the whole file runs in seconds.
"""

import jax
import jax.numpy as jnp
import pytest

import perceiver_io
from perceiver_io import model as model_lib
from perceiver_io import presets


def shape_init(cfg, inputs, **kwargs):
  """Traces init (and so the forward pass) without computing anything."""
  model = perceiver_io.build_model(cfg)
  return jax.eval_shape(
    lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), inputs
  )


def _with(cfg, section, **changes):
  cfg = presets.get_config(cfg) if isinstance(cfg, str) else dict(cfg)
  cfg[section] = dict(cfg[section], **changes)
  return cfg


IDS = jnp.zeros((2, 64), jnp.int32)
IMAGES = jnp.zeros((2, 16, 16, 3), jnp.float32)
FRAMES = jnp.zeros((1, 2, 16, 24, 3), jnp.float32)


def test_good_inputs_trace():
  # The baseline: the same calls with correct inputs work.
  shape_init(
    presets.get_config('tiny_language_mlm'),
    IDS,
    attention_mask=jnp.ones((2, 64), jnp.int32),
  )
  shape_init(presets.get_config('tiny_imagenet_learned'), IMAGES)
  shape_init(presets.get_config('tiny_optical_flow'), FRAMES)


# --------------------------------------------------------------------- rank --
@pytest.mark.parametrize(
  'name,inputs,layout',
  [
    (
      'tiny_imagenet_fourier',
      jnp.zeros((16, 16, 3)),
      '[batch, height, width, channels]',
    ),
    (
      'tiny_imagenet_conv',
      jnp.zeros((32, 32)),
      '[batch, height, width, channels]',
    ),
    ('tiny_language_mlm', jnp.zeros((2, 64, 1), jnp.int32), '[batch, seq_len]'),
    ('tiny_language_mlm', jnp.zeros((64,), jnp.int32), '[batch, seq_len]'),
    (
      'tiny_optical_flow',
      jnp.zeros((1, 16, 24, 3)),
      '[batch, 2, height, width, channels]',
    ),
  ],
)
def test_wrong_rank_names_layout(name, inputs, layout):
  with pytest.raises(ValueError) as info:
    shape_init(presets.get_config(name), inputs)
  assert layout in str(info.value)
  assert str(tuple(inputs.shape)) in str(info.value)  # And what it got.


def test_multimodal_wrong_rank_audio_names_layout():
  cfg = presets.get_config('tiny_multimodal_autoencoding')
  inputs, kwargs = model_lib.example_inputs(cfg)
  inputs = dict(inputs, audio=jnp.zeros((1, 64, 1, 1)))
  with pytest.raises(ValueError, match=r'\[batch, samples\]'):
    shape_init(cfg, inputs, **kwargs)


# -------------------------------------------------------------------- dtype --
def test_float_token_ids_rejected():
  with pytest.raises(ValueError, match='integer token ids') as info:
    shape_init(
      presets.get_config('tiny_language_mlm'), jnp.zeros((2, 64), jnp.float32)
    )
  assert 'float32' in str(info.value)


@pytest.mark.parametrize(
  'name,inputs',
  [
    ('tiny_imagenet_fourier', jnp.zeros((1, 16, 16, 3), jnp.uint8)),
    ('tiny_imagenet_learned', jnp.zeros((1, 16, 16, 3), jnp.int32)),
    ('tiny_optical_flow', jnp.zeros((1, 2, 16, 24, 3), jnp.uint8)),
  ],
)
def test_integer_images_rejected(name, inputs):
  with pytest.raises(ValueError, match='floating-point') as info:
    shape_init(presets.get_config(name), inputs)
  assert str(inputs.dtype) in str(info.value)


# -------------------------------------------------------------------- shape --
@pytest.mark.parametrize('mask_shape', [(2, 63), (1, 64), (64,), (2, 64, 1)])
def test_attention_mask_shape_mismatch(mask_shape):
  with pytest.raises(
    ValueError,
    match=r'attention_mask must have shape '
    r'\[batch, elements\] = \(2, 64\)',
  ):
    shape_init(
      presets.get_config('tiny_language_mlm'),
      IDS,
      attention_mask=jnp.ones(mask_shape, jnp.int32),
    )


def test_text_longer_than_max_seq_len():
  with pytest.raises(ValueError, match='65 exceeds max_seq_len 64'):
    shape_init(
      presets.get_config('tiny_language_mlm'), jnp.zeros((1, 65), jnp.int32)
    )


def test_trainable_position_encoding_size_mismatch():
  # Built for 16 x 16 = 256 positions; 20 x 20 images give 400.
  with pytest.raises(ValueError, match='trainable position encoding') as info:
    shape_init(
      presets.get_config('tiny_imagenet_learned'), jnp.zeros((1, 20, 20, 3))
    )
  assert '(20, 20)' in str(info.value) and '256' in str(info.value)


def test_flow_needs_exactly_two_frames():
  with pytest.raises(ValueError, match='2 frames') as info:
    shape_init(
      presets.get_config('tiny_optical_flow'), jnp.zeros((1, 3, 16, 24, 3))
    )
  assert '[batch, 2, H, W, C]' in str(info.value)


def test_flow_rejects_subsampled_points():
  with pytest.raises(ValueError, match='subsampled'):
    shape_init(
      presets.get_config('tiny_optical_flow'),
      FRAMES,
      subsampled_output_points=jnp.arange(4),
    )


def test_trainable_queries_cannot_be_subsampled():
  with pytest.raises(ValueError, match='Only Fourier queries'):
    shape_init(
      presets.get_config('tiny_language_mlm'),
      IDS,
      subsampled_output_points=jnp.arange(4),
    )


def test_multimodal_inputs():
  cfg = presets.get_config('tiny_multimodal_autoencoding')
  inputs, kwargs = model_lib.example_inputs(cfg)
  missing = {k: v for k, v in inputs.items() if k != 'label'}
  with pytest.raises(ValueError, match=r"\['audio', 'image', 'label'\]"):
    shape_init(cfg, missing, **kwargs)
  with pytest.raises(ValueError, match=r'\[batch, num_classes\]|5 classes'):
    shape_init(cfg, dict(inputs, label=jnp.zeros((1, 6))), **kwargs)
  with pytest.raises(ValueError, match='samples_per_patch=16'):
    shape_init(cfg, dict(inputs, audio=jnp.zeros((1, 60))), **kwargs)


# ------------------------------------------------------------------- config --
def test_unknown_top_level_key_lists_valid_keys():
  cfg = dict(presets.get_config('tiny_language_mlm'), dropout=0.1)
  with pytest.raises(
    ValueError,
    match=r'unknown model config keys '
    r"\['dropout'\]",
  ) as info:
    perceiver_io.build_model(cfg)
  for key in ('preprocessor', 'encoder', 'decoder', 'remat', 'dtype'):
    assert f"'{key}'" in str(info.value)


def test_missing_section():
  cfg = presets.get_config('tiny_language_mlm')
  del cfg['encoder']
  with pytest.raises(ValueError, match="missing 'encoder'"):
    perceiver_io.build_model(cfg)


def test_unknown_decoder_type_lists_valid():
  cfg = _with('tiny_language_mlm', 'decoder', type='video')
  with pytest.raises(ValueError, match="got 'video'") as info:
    perceiver_io.build_model(cfg)
  for kind in ('basic', 'classification', 'flow', 'multimodal', 'projection'):
    assert f"'{kind}'" in str(info.value)


def test_unknown_preprocessor_type_lists_valid():
  cfg = _with('tiny_language_mlm', 'preprocessor', type='txt')
  with pytest.raises(ValueError, match="'txt'") as info:
    shape_init(cfg, IDS)
  for kind in ('text', 'image', 'audio', 'onehot', 'multimodal'):
    assert f"'{kind}'" in str(info.value)


def test_unknown_postprocessor_type_lists_valid():
  cfg = dict(
    presets.get_config('tiny_language_mlm'), postprocessor={'type': 'softmax'}
  )
  with pytest.raises(ValueError, match="'softmax'") as info:
    shape_init(cfg, IDS)
  assert "'embedding_decoder'" in str(info.value)


def test_unknown_prep_type_lists_valid():
  cfg = _with('tiny_imagenet_learned', 'preprocessor', prep_type='patch')
  with pytest.raises(ValueError, match="got 'patch'") as info:
    shape_init(cfg, IMAGES)
  for kind in ('conv', 'conv1x1', 'patches', 'pixels'):
    assert f"'{kind}'" in str(info.value)


def test_unknown_position_encoding_type_lists_valid():
  cfg = _with(
    'tiny_imagenet_learned',
    'preprocessor',
    position_encoding={'type': 'sinusoid'},
  )
  with pytest.raises(
    ValueError, match="'fourier' or 'trainable', got 'sinusoid'"
  ):
    shape_init(cfg, IMAGES)


def test_unknown_concat_or_add_pos():
  cfg = _with('tiny_imagenet_fourier', 'preprocessor', concat_or_add_pos='sum')
  with pytest.raises(ValueError, match="'concat' or 'add', got 'sum'"):
    shape_init(cfg, IMAGES)


def test_bad_performance_options():
  cfg = presets.get_config('tiny_language_mlm')
  with pytest.raises(
    ValueError,
    match=r"dtype must be one of \['bfloat16', "
    r"'float16', 'float32'\], got 'fp8'",
  ):
    shape_init(dict(cfg, dtype='fp8'), IDS)
  with pytest.raises(ValueError, match='xla, auto, cpu, cudnn, fused, einsum'):
    shape_init(dict(cfg, attention_impl='flash'), IDS)
