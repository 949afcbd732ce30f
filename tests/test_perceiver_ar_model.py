"""Perceiver AR forward pass: the official mask cases, causality in every
position/dropout mode with and without padding, the official dropout's leak,
and one forward pass against a NumPy re-derivation of the reference."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from perceiver_io import ar
from perceiver_io import presets
from perceiver_io.ar import model as ar_model
from tests import ar_helpers


# Reference 2.3: the official test's N=10, M=6 cases (T -> last_steps).
OFFICIAL_LAST_STEPS = {
  10: [4, 5, 6, 7, 8, 9],
  7: [1, 2, 3, 4, 5, 6],
  4: [-1, -1, 0, 1, 2, 3],
  1: [-1, -1, -1, -1, -1, 0],
}


@pytest.mark.parametrize('length', sorted(OFFICIAL_LAST_STEPS))
def test_official_mask_cases(length):
  n, m = 10, 6
  tokens = np.zeros((1, n), np.int32)
  tokens[0, n - length :] = 7  # right-aligned
  valid, positions = ar_model.token_layout(jnp.asarray(tokens))
  last = np.asarray(ar_model.latent_positions(valid, positions, m))[0]
  assert last.tolist() == OFFICIAL_LAST_STEPS[length]
  # The official masks, written in positions (left-aligned), from the
  # reference's definitions: encoder[m, j] = last[m] >= j and j < T;
  # processor[a, b] = last[a] >= last[b] >= 0, diagonal forced to 1.
  j = np.arange(n)
  encoder = (last[:, None] >= j[None, :]) & (j[None, :] < length)
  processor = (last[:, None] >= last[None, :]) & (last[None, :] >= 0)
  processor |= np.eye(m, dtype=bool)
  # Ours in slots: slot s holds position s - (N - T).
  ours = np.asarray(ar_model.cross_attend_mask(valid, m))[0]
  shifted = np.zeros_like(encoder)
  for s in range(n - length, n):
    shifted[:, s - (n - length)] = ours[:, s]
  assert not ours[:, : n - length].any()  # padding is never a key
  np.testing.assert_array_equal(shifted, encoder)
  np.testing.assert_array_equal(
    np.asarray(ar_model.self_attend_mask(valid, m))[0], processor
  )


def _perturbed_batch(base, vocab):
  """Row t of the result is `base` with token t changed (one row each)."""
  n = base.shape[0]
  rows = np.repeat(base[None], n, axis=0)
  for t in range(n):
    rows[t, t] = ar.BOS_ID + (rows[t, t] - ar.BOS_ID + 1) % (vocab - ar.BOS_ID)
  return rows


def _check_causal(model, params, base, lengths, train, seed=0):
  """Changing the token at slot t changes no logit of a latent before t,
  and some latent at or after t (t valid)."""
  n, m = base.shape[0], model.config['num_latents']
  variants = _perturbed_batch(base, model.config['vocab_size'])
  same = np.repeat(base[None], n, axis=0)
  kwargs = dict(input_lengths=np.full(n, lengths, np.int32))
  if train:
    kwargs.update(deterministic=False, rngs={'dropout': jax.random.key(seed)})
  # The same batch shape and rng: row t of both calls shares its dropout.
  ref = np.asarray(model.apply({'params': params}, same, **kwargs))
  out = np.asarray(model.apply({'params': params}, variants, **kwargs))
  start = n - lengths
  for t in range(start, n):
    latent_slot = n - m + np.arange(m)
    before = latent_slot < t
    np.testing.assert_array_equal(out[t][before], ref[t][before])
    if t >= n - m:
      assert np.abs(out[t][~before] - ref[t][~before]).max() > 1e-6


@pytest.mark.parametrize('position', ['rotary', 'absolute', 'learned'])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_changing_a_token_changes_no_earlier_logit(position, train):
  config = ar_helpers.tiny_config(
    position=position,
    dropout_rate=0.1,
    cross_attend_dropout_rate=0.5,
    cross_attend_dropout_mode='safe',
  )
  model, params = ar_helpers.random_params(config)
  base = ar_helpers.random_tokens(1, 16, 32, seed=1)[0]
  for lengths in (16, 11, 4):  # full, padded, shorter than M (6)
    padded = base.copy()
    padded[: 16 - lengths] = ar.PAD_ID
    _check_causal(model, params, padded, lengths, train)


def test_official_cross_attend_dropout_leaks_and_safe_never_does():
  """Reference 6.1.3: the official key mask can empty a valid latent's row,
  which then averages over all inputs, future ones included; 'safe' drops
  only the prefix, so each latent keeps its own token."""
  leaks = {}
  for mode in ('official', 'safe'):
    config = ar_helpers.tiny_config(
      cross_attend_dropout_rate=0.9, cross_attend_dropout_mode=mode
    )
    model, params = ar_helpers.random_params(config)
    base = ar_helpers.random_tokens(1, 16, 32, seed=2)[0]
    variants = _perturbed_batch(base, 32)
    same = np.repeat(base[None], 16, axis=0)
    leaked = 0
    for seed in range(3):
      kwargs = dict(deterministic=False, rngs={'dropout': jax.random.key(seed)})
      ref = np.asarray(model.apply({'params': params}, same, **kwargs))
      out = np.asarray(model.apply({'params': params}, variants, **kwargs))
      for t in range(16):
        before = (10 + np.arange(6)) < t
        leaked += int(np.any(out[t][before] != ref[t][before]))
    leaks[mode] = leaked
  assert leaks['official'] > 0
  assert leaks['safe'] == 0


def test_padding_and_batch_do_not_change_valid_logits():
  """A row's valid logits depend on neither its padding nor its batch."""
  config = ar_helpers.tiny_config()
  model, params = ar_helpers.random_params(config)
  row = ar_helpers.random_tokens(1, 9, 32, seed=3)[0]
  batch = ar_helpers.random_tokens(16, 16, 32, seed=4)
  batch[1:8, :3] = ar.PAD_ID  # other rows of other lengths
  batch[0, :7], batch[0, 7:] = ar.PAD_ID, row
  # The same 9 tokens without padding, in the last 9 of 16 latent-free
  # slots' place: a 16-token row whose first 7 tokens are the padding's
  # stand-ins, cut off by input_lengths.
  unpadded = batch.copy()
  unpadded[0, :7] = ar_helpers.random_tokens(1, 7, 32, seed=9)[0]
  lengths = np.full(16, 16, np.int32)
  lengths[0] = 9
  lengths[1:8] = 13
  a = np.asarray(model.apply({'params': params}, batch))[0]
  b = np.asarray(
    model.apply({'params': params}, unpadded, input_lengths=lengths)
  )[0]
  c = np.asarray(model.apply({'params': params}, np.roll(batch, 1, 0)))[1]
  np.testing.assert_allclose(b, a, atol=1e-5)
  np.testing.assert_array_equal(c, a)


def test_rotary_is_shift_invariant():
  config = ar_helpers.tiny_config(rotary_fraction=0.75, max_wavelength=64)
  model, params = ar_helpers.random_params(config)
  tokens = ar_helpers.random_tokens(16, 16, 32, seed=5)
  positions = np.tile(np.arange(16), (16, 1))
  a = model.apply({'params': params}, tokens, positions=positions)
  b = model.apply({'params': params}, tokens, positions=positions + 37)
  np.testing.assert_allclose(a, b, atol=2e-5)
  assert np.abs(np.asarray(a)).max() > 0.1


# --- NumPy re-derivation of one forward pass (reference 1.1-1.6, 2.5) ---


def _ln(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p['scale'] + p['bias']


def _dense(x, p):
  return x @ p['kernel'] + p['bias']


def _rope(x, pos, fraction, wavelength):
  d = x.shape[-1]
  r = int(np.floor(d * fraction / 2) * 2)
  n = r // 2
  inv = wavelength ** (-(np.arange(n) / (n - 1)))
  ang = pos[:, None, None] * inv[None, None, :]  # [T, 1, n]
  out = x.copy()
  x0, x1 = x[..., 0:r:2], x[..., 1:r:2]
  out[..., 0:r:2] = x0 * np.cos(ang) - x1 * np.sin(ang)
  out[..., 1:r:2] = x1 * np.cos(ang) + x0 * np.sin(ang)
  return out


def _attention(p, xq, xkv, qpos, kpos, mask, heads, rope):
  def split(x):
    return x.reshape(x.shape[0], heads, -1)

  q, k, v = (
    split(_dense(x, p[n]))
    for x, n in ((xq, 'query'), (xkv, 'key'), (xkv, 'value'))
  )
  if rope:
    q, k = rope(q, qpos), rope(k, kpos)
  logits = np.einsum('thd,shd->hts', q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask[None], logits, -np.inf)
  top = np.max(logits, -1, keepdims=True)
  w = np.exp(logits - np.where(np.isfinite(top), top, 0))
  w = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
  out = np.einsum('hts,shd->thd', w, v).reshape(xq.shape[0], -1)
  return _dense(out, p['out'])


def _mlp(p, x):
  return _dense(np.maximum(_dense(x, p['fc1']), 0) ** 2, p['fc2'])


def _numpy_forward(params, cfg, row, length):
  n, m = row.shape[0], cfg['num_latents']
  slots = np.arange(n)
  valid = slots >= n - length
  pos = np.where(valid, slots - (n - length), 0)
  emb = params['token_embed']['embedding'][row]
  rope = None
  if cfg['position'] == 'rotary':
    # Official data positions are 1-based: the first token is position 1.
    def rope(x, p):
      return _rope(x, p + 1.0, cfg['rotary_fraction'], cfg['max_wavelength'])
  else:
    emb = emb + params['pos_embed'][np.where(valid, pos + 1, 0)]
  lat = slice(n - m, n)
  z0 = _dense(emb[lat], params['z_linear'])
  c = params['cross_attn']
  mask = (slots[None, :] <= slots[lat][:, None]) & valid[None, :]
  a = _attention(
    c['attn'],
    _ln(z0, c['q_norm']),
    _ln(emb, c['kv_norm']),
    pos[lat],
    pos,
    mask,
    cfg['num_cross_attend_heads'],
    rope,
  )
  x = z0 + a
  x = x + _mlp(c['mlp'], _ln(x, c['mlp_norm']))
  self_mask = (slots[lat][None, :] <= slots[lat][:, None]) & valid[lat][None]
  self_mask |= np.eye(m, dtype=bool)
  for i in range(cfg['num_self_attend_layers']):
    s = params[f'self_attn_{i}']
    y = _ln(x, s['attn_norm'])
    x = x + _attention(
      s['attn'], y, y, pos[lat], pos[lat], self_mask, cfg['num_heads'], rope
    )
    x = x + _mlp(s['mlp'], _ln(x, s['mlp_norm']))
  return _dense(_ln(x, params['final_norm']), params['logits'])


@pytest.mark.parametrize('position', ['rotary', 'absolute'])
def test_forward_matches_numpy_rederivation(position):
  config = ar_helpers.tiny_config(
    position=position, input_channels=8, num_cross_attend_heads=1
  )
  model, params = ar_helpers.random_params(config, seed=6)
  tokens = ar_helpers.random_tokens(16, 16, 32, seed=7)
  tokens[1, :5] = ar.PAD_ID
  out = np.asarray(model.apply({'params': params}, tokens))
  p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  for b, length in enumerate((16, 11)):
    ref = _numpy_forward(p64, config, tokens[b], length)
    valid = np.arange(16 - 6, 16) >= 16 - length
    np.testing.assert_allclose(out[b][valid], ref[valid], atol=2e-4, rtol=1e-4)


def test_loss_is_cross_entropy_plus_z_loss():
  rng = np.random.default_rng(8)
  logits = rng.standard_normal((2, 3, 5)).astype(np.float32)
  targets = rng.integers(0, 5, (2, 3))
  weights = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
  total, weight = ar.loss(logits, targets, weights, z_loss=0.1)
  lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
  nll = lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  expected = ((nll + 0.1 * lse**2) * weights).sum(-1)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  np.testing.assert_array_equal(weight, [2, 2])


def test_presets_and_bad_configs():
  cfg = presets.get_config('tiny_perceiver_ar', max_context=32)
  assert cfg['family'] == ar.FAMILY and cfg['max_context'] == 32
  assert 'num_latents' in presets.size_kwargs('perceiver_ar')
  assert isinstance(presets.build('tiny_perceiver_ar'), ar.PerceiverAR)
  for bad, word in (
    (dict(position='alibi'), 'position must be one of'),
    (dict(num_latents=20), 'must be at most max_context'),
    (dict(cross_attend_dropout_mode='x'), 'cross_attend_dropout_mode'),
    (dict(rotary_fraction=0.0), 'rotary_fraction must be in (0, 1]'),
    (dict(num_lantents=3), 'unknown Perceiver AR config keys'),
  ):
    with pytest.raises(
      ValueError,
      match=word.replace('(', r'\(').replace(')', r'\)').replace('[', r'\['),
    ):
      ar_helpers.tiny_config(**bad)
  model, params = ar_helpers.random_params(ar_helpers.tiny_config())
  with pytest.raises(ValueError, match='num_latents \\(6\\) <= length'):
    model.apply({'params': params}, np.ones((1, 4), np.int32))


def test_forward_flops_follow_the_cost_model():
  """Reference section 5's cost model, written out per matmul: the inputs
  cost only the cross-attend's keys/values and its scores/values."""
  from perceiver_io import flops  # pylint: disable=g-import-not-at-top

  n, m, d, d_in, v, layers = 64, 8, 16, 8, 32, 2
  config = ar_helpers.tiny_config(
    max_context=n, num_latents=m, input_channels=d_in, num_cross_attend_heads=1
  )
  tokens = jax.ShapeDtypeStruct((1, n), jnp.int32)
  counted = flops.forward_flops(ar.PerceiverAR(config), tokens)
  c = d_in  # the cross-attend's q/k/v width follows the inputs ('kv')
  expected = (
    2 * m * d_in * d  # z_linear
    + 2 * m * d * c
    + 4 * n * d_in * c  # q; k and v of every input
    + 4 * m * n * c
    + 2 * m * c * d  # scores, values; output projection
    + 16 * m * d * d  # cross-attend MLP (widening 4)
    + layers * (24 * m * d * d + 4 * m * m * d)  # latent self-attention
    + 2 * m * d * v  # logits
  )
  assert counted == expected
