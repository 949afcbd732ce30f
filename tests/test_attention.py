"""Attention, blocks and encoder against a direct NumPy implementation.

Why: everything else (checkpoint parity, training) rests on these numerics:
the 1/sqrt(qk head width) scale with separate q/k and v widths, masked logits,
the official zero output of a fully masked query row, pre-LayerNorm blocks
with eps 1e-5 and the optional query residual, tanh GELU, and the encoder's
weight sharing across blocks. The reference (tests/model_helpers.py) is
written from the official description (reference sections 1.1-1.5), in
float64. The last section checks that on the default kernel options every
JAX transformation goes through the model.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import attention as attn
from perceiver_io import kernels
from perceiver_io.encoder import PerceiverEncoder
from tests.model_helpers import apply
from tests.model_helpers import as_float64
from tests.model_helpers import JIT_OPTIONS
from tests.model_helpers import mha
from tests.model_helpers import rand
from tests.model_helpers import random_mask
from tests.model_helpers import random_params
from tests.model_helpers import ref_attention
from tests.model_helpers import ref_cross_block
from tests.model_helpers import ref_self_block

EINSUM = kernels.KernelOptions(attention='einsum')


# -------------------------------------------------------- MultiHeadAttention --
@pytest.mark.parametrize('use_mask', [False, True])
def test_einsum_attention_matches_numpy(use_mask):
  xq, xkv = rand(2, 5, 7), rand(2, 6, 9)
  module = mha()
  params = random_params(module, xq, xkv)
  mask = random_mask(2, 5, 6, full_rows=[(1, 2)]) if use_mask else None
  got = apply(module, {'params': params}, xq, xkv, mask)
  expected = ref_attention(as_float64(params), xq, xkv, 3, mask)
  assert got.shape == (2, 5, 10)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_scale_uses_qk_head_width():
  # One head, one query, two keys, identity projections: logits are q.k / 2
  # for a qk width of 4 -> softmax([4, 0] / 2) = [e^2, 1] / (e^2 + 1).
  module = attn.MultiHeadAttention(
    num_heads=1,
    qk_channels=4,
    v_channels=1,
    output_channels=1,
    kernel_options=EINSUM,
  )
  eye = {'kernel': np.eye(4, dtype=np.float32), 'bias': np.zeros(4, np.float32)}
  params = {
    'query': eye,
    'key': eye,
    'value': {
      'kernel': np.array([[1.0], [0.0], [0.0], [0.0]], np.float32),
      'bias': np.zeros(1, np.float32),
    },
    'output': {
      'kernel': np.ones((1, 1), np.float32),
      'bias': np.zeros(1, np.float32),
    },
  }
  xq = np.array([[[2.0, 0.0, 0.0, 0.0]]], np.float32)
  xkv = np.array([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
  got = apply(module, {'params': params}, xq, xkv)
  w = np.exp(2.0) / (np.exp(2.0) + 1.0)
  np.testing.assert_allclose(got[0, 0, 0], w * 2.0, rtol=1e-6)


@pytest.mark.parametrize('impl', ['einsum', 'xla', 'auto'])
def test_fully_masked_row_gives_output_bias(impl):
  xq, xkv = rand(1, 3, 8), rand(1, 4, 8)
  module = mha(impl=impl, qk=8, v=8, heads=2, out=5)
  params = random_params(module, xq, xkv)
  mask = np.ones((1, 3, 4), bool)
  mask[0, 1] = False
  got = apply(module, {'params': params}, xq, xkv, mask)
  np.testing.assert_array_equal(got[0, 1], np.asarray(params['output']['bias']))
  assert not np.allclose(got[0, 0], np.asarray(params['output']['bias']))


@pytest.mark.parametrize('use_mask', [False, True])
def test_fused_equals_einsum(use_mask):
  xq, xkv = rand(2, 5, 16), rand(2, 7, 12)
  mask = random_mask(2, 5, 7, full_rows=[(0, 4)]) if use_mask else None
  params = random_params(mha('einsum', qk=16, v=16, heads=4), xq, xkv)
  outs = {
    impl: apply(
      mha(impl, qk=16, v=16, heads=4), {'params': params}, xq, xkv, mask
    )
    for impl in ('einsum', 'fused', 'xla', 'auto')
  }
  for impl in ('fused', 'xla', 'auto'):
    np.testing.assert_allclose(outs[impl], outs['einsum'], atol=1e-5)
  expected = ref_attention(as_float64(params), xq, xkv, 4, mask)
  np.testing.assert_allclose(outs['fused'], expected, atol=1e-5)


def test_fused_with_unequal_widths_raises():
  xq = rand(1, 3, 8)
  with pytest.raises(ValueError, match='qk_channels == v_channels'):
    random_params(mha('fused', qk=8, v=4, heads=2), xq, xq)


def test_bad_attention_settings_raise():
  xq = rand(1, 3, 8)
  with pytest.raises(ValueError, match='xla, auto, cpu, cudnn, fused, einsum'):
    random_params(mha('flash', qk=8, v=4, heads=2), xq, xq)
  with pytest.raises(ValueError, match='divisible by num_heads'):
    random_params(mha('einsum', qk=8, v=6, heads=4), xq, xq)


def test_attention_dropout():
  xq, xkv = rand(1, 4, 8), rand(1, 6, 8)
  module = mha('xla', qk=8, v=8, heads=2, out=8, dropout=0.5)
  v = {'params': random_params(module, xq, xkv)}
  plain = apply(mha('einsum', qk=8, v=8, heads=2, out=8), v, xq, xkv)
  # Deterministic: no dropout and no rng needed.
  np.testing.assert_allclose(
    apply(module, v, xq, xkv, deterministic=True), plain, atol=1e-5
  )
  # Training: needs a 'dropout' rng.
  with pytest.raises(flax.errors.InvalidRngError, match='dropout'):
    module.apply(v, xq, xkv, deterministic=False)

  train = jax.jit(
    lambda v, q, kv, k: module.apply(
      v, q, kv, deterministic=False, rngs={'dropout': k}
    ),
    compiler_options=JIT_OPTIONS,
  )

  # Each batch element draws its own mask, so 2000 copies of the input give
  # 2000 independent samples (one compilation: random bits compile slowly).
  many_q, many_kv = np.repeat(xq, 2000, 0), np.repeat(xkv, 2000, 0)
  outs = np.asarray(train(v, many_q, many_kv, jax.random.PRNGKey(1)))
  assert not np.allclose(outs[0], plain[0], atol=1e-3)
  assert not np.allclose(outs[0], outs[1], atol=1e-3)
  np.testing.assert_array_equal(
    outs, train(v, many_q, many_kv, jax.random.PRNGKey(1))
  )  # Same key.
  assert not np.allclose(
    outs, train(v, many_q, many_kv, jax.random.PRNGKey(2)), atol=1e-3
  )
  # Inverted dropout (weights / keep prob) is unbiased: the mean over the
  # samples approaches the deterministic output (within 5 standard errors).
  stderr = outs.std(axis=0) / np.sqrt(len(outs))
  assert np.all(np.abs(outs.mean(axis=0) - plain[0]) < 5 * stderr + 1e-4)


def test_make_cross_attention_mask():
  q = np.array([[1, 0, 1]])
  kv = np.array([[1, 1, 0, 1]])
  expected = np.outer(q[0], kv[0]).astype(bool)[None]
  np.testing.assert_array_equal(attn.make_cross_attention_mask(q, kv), expected)


# ------------------------------------------------------------------- blocks --
@pytest.mark.parametrize('residual', [True, False])
def test_cross_attention_block_matches_numpy(residual):
  xq, xkv = rand(2, 4, 12), rand(2, 6, 20)
  block = attn.CrossAttentionBlock(
    num_heads=2,
    qk_channels=8,
    v_channels=6,
    widening_factor=2,
    use_query_residual=residual,
    kernel_options=EINSUM,
  )
  params = random_params(block, xq, xkv)
  mask = random_mask(2, 4, 6, full_rows=[(0, 1)])
  got = apply(block, {'params': params}, xq, xkv, mask)
  expected = ref_cross_block(as_float64(params), xq, xkv, 2, residual, mask)
  assert got.shape == (2, 4, 12)  # Output in the query width.
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


def _shapes(tree):
  return jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)


def test_cross_attention_width_defaults():
  xq, xkv = jnp.zeros((1, 3, 12)), jnp.zeros((1, 5, 20))

  def shapes(**kw):
    block = attn.CrossAttentionBlock(num_heads=2, **kw)
    return _shapes(random_params(block, xq, xkv))

  kv = shapes(shape_for_attn='kv')['attention']
  assert kv['query']['kernel'] == (12, 20)
  assert kv['key']['kernel'] == (20, 20)
  assert kv['value']['kernel'] == (20, 20)  # v defaults to the qk width.
  assert kv['output']['kernel'] == (20, 12)  # Back to the query width.
  q = shapes(shape_for_attn='q')['attention']
  assert q['query']['kernel'] == (12, 12)
  assert q['key']['kernel'] == (20, 12)
  assert q['value']['kernel'] == (20, 12)
  assert q['output']['kernel'] == (12, 12)
  explicit = shapes(shape_for_attn='q', qk_channels=8, v_channels=4)
  assert explicit['attention']['key']['kernel'] == (20, 8)
  assert explicit['attention']['value']['kernel'] == (20, 4)
  assert explicit['attention']['output']['kernel'] == (4, 12)
  assert explicit['mlp']['dense1']['kernel'] == (12, 12)  # widening 1.
  with pytest.raises(ValueError, match="'kv' or 'q'"):
    shapes(shape_for_attn='x')


def test_self_attention_block_matches_numpy():
  x = rand(2, 5, 16)
  block = attn.SelfAttentionBlock(
    num_heads=4,
    qk_channels=8,
    widening_factor=3,
    v_channels=16,
    kernel_options=EINSUM,
  )
  params = random_params(block, x)
  assert params['mlp']['dense1']['kernel'].shape == (16, 48)
  got = apply(block, {'params': params}, x)
  np.testing.assert_allclose(
    got, ref_self_block(as_float64(params), x, 4), atol=2e-5, rtol=1e-5
  )


# ------------------------------------------------------------------ encoder --
def _encoder(num_blocks, per_block):
  return PerceiverEncoder(
    num_latents=4,
    latent_channels=16,
    num_blocks=num_blocks,
    num_self_attends_per_block=per_block,
    num_cross_attend_heads=1,
    num_self_attend_heads=2,
    qk_channels=8,
    v_channels=16,
    kernel_options=EINSUM,
  )


def test_encoder_shares_weights_across_blocks():
  x = rand(2, 6, 5)
  input_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  one, three = _encoder(1, 2), _encoder(3, 2)
  p1 = random_params(one, x, input_mask)
  p3 = random_params(three, x, input_mask)
  count = lambda v: sum(a.size for a in jax.tree_util.tree_leaves(v))
  assert count(p1) == count(p3)
  assert _shapes(p1) == _shapes(p3)
  params = p1
  z1 = apply(one, {'params': params}, x, input_mask)
  z3 = apply(three, {'params': params}, x, input_mask)
  assert not np.allclose(z1, z3, atol=1e-3)

  # NumPy: one cross-attend, then the same two layers three times.
  p = as_float64(params)
  lat = np.broadcast_to(p['latents'], (2, 4, 16))
  mask = np.broadcast_to(input_mask[:, None, :], (2, 4, 6))
  z = ref_cross_block(p['cross_attend'], lat, x, 1, True, mask)
  for _ in range(3):
    for i in range(2):
      z = ref_self_block(p[f'self_attend_{i}'], z, 2)
  np.testing.assert_allclose(z3, z, atol=5e-5, rtol=1e-4)


def test_encoder_masked_inputs_are_ignored():
  x = rand(1, 6, 5)
  mask = np.array([[1, 1, 1, 0, 0, 0]], bool)
  enc = _encoder(1, 1)
  variables = {'params': random_params(enc, x, mask)}
  other = x.copy()
  other[:, 3:] = rand(1, 3, 5)  # Change only the masked elements.
  run = jax.jit(enc.apply, compiler_options=JIT_OPTIONS)
  np.testing.assert_allclose(
    run(variables, x, mask), run(variables, other, mask), atol=1e-6
  )
  assert not np.allclose(
    run(variables, x, None), run(variables, other, None), atol=1e-4
  )


def test_encoder_heads_must_divide_latent_width():
  enc = PerceiverEncoder(
    num_latents=2,
    latent_channels=10,
    num_self_attend_heads=4,
    num_blocks=1,
    num_self_attends_per_block=1,
  )
  with pytest.raises(ValueError, match='divisible'):
    random_params(enc, jnp.zeros((1, 3, 4)))


# ------------------------------------------ transformations, default kernels --
def _tiny_model_and_inputs(name):
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top
  from perceiver_io.model import build_model  # pylint: disable=g-import-not-at-top
  from perceiver_io.model import example_inputs  # pylint: disable=g-import-not-at-top

  # One latent layer: the transformations see every kind of block.
  depth = (
    {'depth': 1}
    if name.startswith('tiny_text')
    else {'blocks': 1, 'per_block': 1}
  )
  config = presets.get_config(name, **depth)
  model = build_model(config)  # The library's defaults.
  shape = example_inputs(config, 2)[0].shape
  if name.startswith('tiny_text'):
    return model, np.random.default_rng(0).integers(6, 262, shape).astype(
      np.int32
    )
  return model, rand(*shape)


@pytest.mark.slow
@pytest.mark.parametrize(
  'name', ['tiny_text_classification', 'tiny_imagenet_fourier']
)
def test_every_transformation_on_the_default_options(name):
  # The library's default kernels are plain Flax/JAX, so grad, jvp, jacfwd,
  # vmap and grad-of-grad all go through the whole model on this backend
  # (the CPU kernels are opt-in custom VJPs: test_kernels_cpu.py). Each
  # transformation is jitted (one compile each) along a one-dimensional
  # direction, which is what the check needs.
  model, x = _tiny_model_and_inputs(name)
  assert model.config.get('attention_impl', 'xla') == 'xla'
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])['params']
  kwargs = (
    {'attention_mask': np.ones(x.shape, np.int32)}
    if x.dtype == np.int32
    else {}
  )
  direction = jax.tree_util.tree_map(
    lambda a: jnp.asarray(
      0.01 * np.random.default_rng(1).standard_normal(a.shape), a.dtype
    ),
    params,
  )

  def along(t):  # The summed outputs at params + t * direction.
    moved = jax.tree_util.tree_map(lambda p, d: p + t * d, params, direction)
    return jnp.sum(jnp.sin(model.apply({'params': moved}, x, **kwargs)))

  eps = 0.05

  @functools.partial(jax.jit, compiler_options=JIT_OPTIONS)
  def transformed(t):  # One compilation for all of them.
    _, tangent = jax.jvp(along, (t,), (1.0,))
    around = jax.vmap(jax.grad(along))(jnp.array([-eps, eps]) + t)
    return (
      jax.grad(along)(t),
      tangent,
      jax.jacfwd(along)(t),
      jax.grad(jax.grad(along))(t),
      around,
    )

  grad, tangent, forward, second, around = transformed(0.0)
  np.testing.assert_allclose(tangent, grad, rtol=1e-4)
  np.testing.assert_allclose(forward, grad, rtol=1e-4)
  central = (around[1] - around[0]) / (2 * eps)
  np.testing.assert_allclose(second, central, rtol=5e-2, atol=1e-3)
  single = jax.jit(
    jax.vmap(
      lambda one: model.apply(
        {'params': params}, one[None], **{k: v[:1] for k, v in kwargs.items()}
      )[0]
    )
  )
  batched = jax.jit(lambda x: model.apply({'params': params}, x, **kwargs))
  np.testing.assert_allclose(single(x), batched(x), atol=1e-5)
