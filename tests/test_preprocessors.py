"""Preprocessors against NumPy loops and explicit-padding convolutions.

Why: the channel order of `space_to_depth` (dt, dh, dw, c) and of the flow
patches (ph, pw, c), and the TF-'SAME' padding of the conv stem, decide
whether official checkpoints load with the right numbers. Every expected value
here is rebuilt element by element (NumPy loops) or from `lax` with the
padding written out, never from the code under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import preprocessors as pp
from tests.test_position_encoding import reference_fourier
from tests.test_position_encoding import reference_grid
from tests.test_performance_options import random_variables

RNG = np.random.default_rng(0)


def _rand(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------- space_to_depth --
def test_space_to_depth_4d_matches_loops():
  b, h, w, c, s = 2, 6, 4, 3, 2
  x = _rand(b, h, w, c)
  expected = np.zeros((b, h // s, w // s, s * s * c), np.float32)
  for i in range(h // s):
    for j in range(w // s):
      for dh in range(s):
        for dw in range(s):
          for ch in range(c):
            expected[:, i, j, (dh * s + dw) * c + ch] = x[
              :, i * s + dh, j * s + dw, ch
            ]
  np.testing.assert_array_equal(
    pp.space_to_depth(jnp.asarray(x), 1, s), expected
  )


def test_space_to_depth_5d_matches_loops():
  b, n, h, w, c, t, s = 1, 4, 4, 6, 2, 2, 2
  x = _rand(b, n, h, w, c)
  expected = np.zeros((b, n // t, h // s, w // s, t * s * s * c), np.float32)
  for k in range(n // t):
    for i in range(h // s):
      for j in range(w // s):
        for dt in range(t):
          for dh in range(s):
            for dw in range(s):
              for ch in range(c):
                channel = ((dt * s + dh) * s + dw) * c + ch
                expected[:, k, i, j, channel] = x[
                  :, k * t + dt, i * s + dh, j * s + dw, ch
                ]
  np.testing.assert_array_equal(
    pp.space_to_depth(jnp.asarray(x), t, s), expected
  )


def test_space_to_depth_rejects_bad_shapes():
  with pytest.raises(ValueError, match='divisible'):
    pp.space_to_depth(jnp.zeros((1, 5, 4, 3)), 1, 2)
  with pytest.raises(ValueError, match='divisible'):
    pp.space_to_depth(jnp.zeros((1, 3, 4, 4, 3)), 2, 2)
  with pytest.raises(ValueError, match='rank 4 or 5'):
    pp.space_to_depth(jnp.zeros((4, 4, 3)), 1, 2)


# ------------------------------------------------------------- flow patches --
def reference_flow_patches(frame, size=3):
  """[H, W, C] -> [H, W, size*size*C], zero padded, order (ph, pw, c)."""
  h, w, c = frame.shape
  r = size // 2
  out = np.zeros((h, w, size * size * c), np.float32)
  for y in range(h):
    for x in range(w):
      for py in range(size):
        for px in range(size):
          yy, xx = y + py - r, x + px - r
          if 0 <= yy < h and 0 <= xx < w:
            start = (py * size + px) * c
            out[y, x, start : start + c] = frame[yy, xx]
  return out


def test_extract_flow_patches_matches_loops():
  frames = _rand(2, 2, 5, 4, 3)
  got = np.asarray(pp.extract_flow_patches(jnp.asarray(frames)))
  assert got.shape == (2, 2, 5, 4, 27)
  for b in range(2):
    for t in range(2):
      np.testing.assert_array_equal(
        got[b, t], reference_flow_patches(frames[b, t])
      )
  # Hand check: the centre channel block (ph=1, pw=1) is the pixel itself and
  # the corner (0, 0) patch of the top-left pixel is zero padding.
  np.testing.assert_array_equal(got[..., 12:15], frames)
  np.testing.assert_array_equal(got[:, :, 0, 0, 0:3], 0.0)


# ---------------------------------------------------------- conv downsample --
def reference_max_pool(x, pad_lo, pad_hi, window=3, stride=2):
  """NumPy max pool over H, W of [B, H, W, C] with -inf padding."""
  x = np.pad(
    x,
    ((0, 0), (pad_lo, pad_hi), (pad_lo, pad_hi), (0, 0)),
    constant_values=-np.inf,
  )
  b, h, w, c = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  out = np.empty((b, oh, ow, c), x.dtype)
  for i in range(oh):
    for j in range(ow):
      win = x[
        :, i * stride : i * stride + window, j * stride : j * stride + window
      ]
      out[:, i, j] = win.max(axis=(1, 2))
  return out


def _conv(x, kernel, pad):
  return np.asarray(
    jax.lax.conv_general_dilated(
      jnp.asarray(x),
      jnp.asarray(kernel),
      (2, 2),
      (pad, pad),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=jax.lax.Precision.HIGHEST,
    )
  )


@pytest.mark.parametrize(
  'hf_compat,size,expected',
  [
    (False, 32, 8),
    (True, 32, 7),
    (False, 224, 56),
    (True, 224, 55),
    (False, 30, 8),
  ],
)
def test_conv_downsample_output_size(hf_compat, size, expected):
  module = pp.Conv2DDownsample(num_channels=4, hf_compat=hf_compat)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), x)
  out = jax.eval_shape(lambda v, x: module.apply(v, x), variables, x)
  assert out.shape == (1, expected, expected, 4)


@pytest.mark.parametrize('hf_compat', [False, True])
def test_conv_downsample_padding_matches_explicit(hf_compat):
  # Even input 16: TF 'SAME' for a 7x7/2 conv pads (2, 3) and for the 3x3/2
  # pool pads (0, 1); HF pads the conv (3, 3) and does not pad the pool.
  x = _rand(2, 16, 16, 3)
  module = pp.Conv2DDownsample(
    num_channels=5, use_batchnorm=False, hf_compat=hf_compat
  )
  variables = random_variables(module, x, {})
  kernel = np.asarray(variables['params']['conv']['kernel'])
  got = np.asarray(module.apply(variables, x))
  if hf_compat:
    y = np.maximum(_conv(x, kernel, (3, 3)), 0)
    expected = reference_max_pool(y, 0, 0)
  else:
    y = np.maximum(_conv(x, kernel, (2, 3)), 0)
    expected = reference_max_pool(y, 0, 1)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-4)
  # The two paddings really differ on this input.
  if not hf_compat:
    assert not np.allclose(
      _conv(x, kernel, (2, 3)), _conv(x, kernel, (3, 3))[:, :8, :8], atol=1e-3
    )


def test_conv_downsample_batchnorm_eval_and_train():
  x = _rand(2, 8, 8, 3)
  module = pp.Conv2DDownsample(num_channels=4)
  variables = random_variables(module, x, {})
  kernel = np.asarray(variables['params']['conv']['kernel'])
  mean, var = _rand(4), np.abs(_rand(4)) + 0.5
  scale, bias = _rand(4), _rand(4)
  variables = {
    'params': {
      'conv': {'kernel': kernel},
      'batchnorm': {'scale': scale, 'bias': bias},
    },
    'batch_stats': {'batchnorm': {'mean': mean, 'var': var}},
  }
  conv = _conv(x, kernel, (2, 3))
  norm = (conv - mean) / np.sqrt(var + 1e-5) * scale + bias
  expected = reference_max_pool(np.maximum(norm, 0), 0, 1)
  got = module.apply(variables, x, deterministic=True)
  np.testing.assert_allclose(got, expected, atol=1e-4)

  # Training: batch statistics, and running stats decay 0.9 (official).
  _, updates = module.apply(
    variables, x, deterministic=False, mutable=['batch_stats']
  )
  batch_mean = conv.mean(axis=(0, 1, 2))
  batch_var = conv.var(axis=(0, 1, 2))
  new = updates['batch_stats']['batchnorm']
  np.testing.assert_allclose(
    new['mean'], 0.9 * mean + 0.1 * batch_mean, atol=1e-4
  )
  np.testing.assert_allclose(
    new['var'], 0.9 * var + 0.1 * batch_var, rtol=1e-3, atol=1e-4
  )


# ----------------------------------------------------------- image / video --
def _fourier_cfg(bands, res=None):
  cfg = {'type': 'fourier', 'num_bands': bands}
  if res is not None:
    cfg['max_resolution'] = list(res)
  return cfg


def test_image_pixels_concat_fourier():
  x = _rand(2, 8, 6, 3)
  module = pp.ImagePreprocessor(
    prep_type='pixels',
    spatial_downsample=2,
    position_encoding=_fourier_cfg(3, (8, 6)),
  )
  out = module.apply({}, jnp.asarray(x))
  sub = x[:, ::2, ::2].reshape(2, 12, 3)
  feats = reference_fourier(reference_grid((4, 3)), 3, (8, 6))
  assert out.index_dims == (4, 3)
  np.testing.assert_array_equal(out.inputs_without_pos, sub)
  np.testing.assert_allclose(out.inputs[..., :3], sub)
  for b in range(2):
    np.testing.assert_allclose(out.inputs[b, :, 3:], feats, atol=1e-5)


def test_image_conv1x1_is_strided_linear():
  x = _rand(1, 6, 6, 3)
  module = pp.ImagePreprocessor(
    prep_type='conv1x1',
    spatial_downsample=2,
    num_channels=5,
    position_encoding=_fourier_cfg(2),
  )
  variables = random_variables(module, x, {})
  conv = variables['params']['conv1x1']
  out = module.apply(variables, x)
  expected = (
    x[:, ::2, ::2].reshape(1, 9, 3) @ np.asarray(conv['kernel'])[0, 0]
    + conv['bias']
  )
  np.testing.assert_allclose(out.inputs_without_pos, expected, atol=1e-5)
  assert out.inputs.shape == (1, 9, 5 + 10)


def test_image_patches_add_trainable_positions():
  x = _rand(2, 4, 4, 2)
  module = pp.ImagePreprocessor(
    prep_type='patches',
    spatial_downsample=2,
    concat_or_add_pos='add',
    position_encoding={
      'type': 'trainable',
      'num_channels': 8,
      'index_dims': [4],
    },
  )
  variables = random_variables(module, x, {})
  table = variables['params']['position_encoding']['trainable']['embeddings']
  out = module.apply(variables, x)
  flat = np.asarray(pp.space_to_depth(jnp.asarray(x), 1, 2)).reshape(2, 4, 8)
  np.testing.assert_allclose(
    out.inputs, flat + np.asarray(table)[None], atol=1e-6
  )


def test_video_patches_3d_fourier():
  x = _rand(1, 4, 4, 4, 3)
  module = pp.ImagePreprocessor(
    prep_type='patches',
    spatial_downsample=2,
    temporal_downsample=2,
    temporal=True,
    position_encoding=_fourier_cfg(2, (2, 2, 2)),
  )
  out = module.apply({}, x)
  assert out.index_dims == (2, 2, 2)
  flat = np.asarray(pp.space_to_depth(jnp.asarray(x), 2, 2)).reshape(1, 8, 24)
  feats = reference_fourier(reference_grid((2, 2, 2)), 2, (2, 2, 2))
  np.testing.assert_allclose(
    out.inputs[0], np.concatenate([flat[0], feats], -1), atol=1e-5
  )


def test_flow_preprocessor_matches_reference():
  b, h, w = 1, 4, 5
  frames = _rand(b, 2, h, w, 3)
  module = pp.ImagePreprocessor(
    prep_type='patches',
    flow_patches=True,
    spatial_downsample=1,
    temporal_downsample=2,
    conv_after_patching=True,
    num_channels=6,
    position_encoding=_fourier_cfg(2, (h, w)),
  )
  variables = random_variables(module, frames, {})
  lin = variables['params']['patches_linear']
  out = module.apply(variables, frames)
  # Per pixel: [27 channels of frame 0, 27 of frame 1] -> Linear -> + FF.
  patches = np.concatenate(
    [
      reference_flow_patches(frames[0, 0]),
      reference_flow_patches(frames[0, 1]),
    ],
    -1,
  )
  feats = patches.reshape(h * w, 54) @ np.asarray(lin['kernel']) + lin['bias']
  pos = reference_fourier(reference_grid((h, w)), 2, (h, w))
  assert out.index_dims == (h, w)
  np.testing.assert_allclose(
    out.inputs[0], np.concatenate([feats, pos], -1), atol=1e-4
  )


def test_add_with_mismatched_width_raises():
  module = pp.ImagePreprocessor(
    prep_type='pixels',
    spatial_downsample=1,
    concat_or_add_pos='add',
    position_encoding=_fourier_cfg(2),
  )
  with pytest.raises(ValueError, match='add'):
    module.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))


# ---------------------------------------------------- text / audio / one-hot --
def test_text_preprocessor_embedding_plus_positions():
  module = pp.TextPreprocessor(vocab_size=11, d_model=4, max_seq_len=6)
  ids = np.array([[1, 5, 10, 0], [3, 3, 2, 7]], np.int32)
  variables = random_variables(module, ids, {})
  emb = np.asarray(variables['params']['embed']['embedding'])
  pos = np.asarray(variables['params']['position_embeddings'])
  out = module.apply(variables, ids)
  np.testing.assert_allclose(out.inputs, emb[ids] + pos[None, :4], atol=1e-6)
  np.testing.assert_allclose(out.inputs_without_pos, emb[ids], atol=1e-6)


def test_audio_preprocessor_patches_and_positions():
  x = _rand(2, 12)
  module = pp.AudioPreprocessor(
    samples_per_patch=3, position_encoding=_fourier_cfg(2, (12,))
  )
  out = module.apply({}, x)
  feats = reference_fourier(reference_grid((4,)), 2, (12,))
  for b in range(2):
    np.testing.assert_allclose(
      out.inputs[b], np.concatenate([x[b].reshape(4, 3), feats], -1), atol=1e-5
    )
  # [B, T, 1] is accepted with the same result.
  out3 = module.apply({}, x[..., None])
  np.testing.assert_array_equal(out3.inputs, out.inputs)


def test_onehot_preprocessor():
  x = np.eye(4, dtype=np.float32)[[2, 0]]
  out = pp.OneHotPreprocessor(num_classes=4).apply({}, x)
  np.testing.assert_array_equal(out.inputs, x[:, None, :])


# --------------------------------------------------------------- multimodal --
def _multimodal(mask_probs):
  return pp.MultimodalPreprocessor(
    modalities={
      'label': {'type': 'onehot', 'num_classes': 3},
      'audio': {
        'type': 'audio',
        'samples_per_patch': 2,
        'position_encoding': _fourier_cfg(1, (8,)),
      },
    },
    mask_probs=mask_probs,
    min_padding_size=2,
  )


def test_multimodal_padding_order_and_masking():
  inputs = {'audio': _rand(2, 8), 'label': np.eye(3, dtype=np.float32)[[0, 2]]}
  module = _multimodal({'label': 1.0, 'audio': 0.0})
  variables = random_variables(module, inputs, {})
  params = variables['params']
  out = module.apply(variables, inputs)
  # Widths: audio 2 + 1 * (2 + 1) = 5, label 3; common = 5 + 2 = 7.
  assert out.inputs.shape == (2, 4 + 1, 7)
  assert out.modality_sizes == {'audio': 4, 'label': 1}
  # Sorted order: audio first, padded with its learned vector.
  audio = np.concatenate(
    [
      inputs['audio'].reshape(2, 4, 2),
      np.broadcast_to(
        reference_fourier(reference_grid((4,)), 1, (8,)), (2, 4, 3)
      ),
    ],
    -1,
  )
  pad = np.broadcast_to(params['audio_padding'], (2, 4, 2))
  np.testing.assert_allclose(
    out.inputs[:, :4], np.concatenate([audio, pad], -1), atol=1e-5
  )
  # Label: mask probability 1 -> every element is the mask token.
  np.testing.assert_allclose(
    out.inputs[:, 4], np.broadcast_to(params['label_mask_token'], (2, 7))
  )


def test_multimodal_random_masking_needs_mask_rng():
  inputs = {'audio': _rand(8, 8), 'label': np.eye(3, dtype=np.float32)[[1] * 8]}
  plain = _multimodal({'audio': 0.0})
  variables = random_variables(plain, inputs, {})
  module = _multimodal({'audio': 0.5})
  with pytest.raises(Exception, match='mask'):
    module.apply(variables, inputs)
  unmasked = np.asarray(plain.apply(variables, inputs).inputs[:, :4])
  out = module.apply(variables, inputs, rngs={'mask': jax.random.PRNGKey(3)})
  again = module.apply(variables, inputs, rngs={'mask': jax.random.PRNGKey(3)})
  np.testing.assert_array_equal(out.inputs, again.inputs)  # Same key.
  got = np.asarray(out.inputs[:, :4]).reshape(32, 7)
  token = np.asarray(variables['params']['audio_mask_token'])[0]
  is_token = np.all(got == token, axis=-1)
  is_kept = np.all(got == unmasked.reshape(32, 7), axis=-1)
  assert np.all(is_token | is_kept)  # Each element is one or the other.
  assert 4 <= is_token.sum() <= 28  # p = 0.5 over 32 draws.
  np.testing.assert_array_equal(
    out.inputs[:, 4:], plain.apply(variables, inputs).inputs[:, 4:]
  )  # The label is untouched.


def test_multimodal_rejects_wrong_keys():
  module = _multimodal(None)
  with pytest.raises(ValueError, match=r"\['audio', 'label'\]"):
    module.init(jax.random.PRNGKey(0), {'audio': _rand(1, 8)})
