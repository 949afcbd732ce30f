"""Attention, blocks and encoder against a direct NumPy implementation.

Why: everything else (checkpoint parity, training) rests on these numerics:
the 1/sqrt(qk head width) scale with separate q/k and v widths, masked logits,
the official zero output of a fully masked query row, pre-LayerNorm blocks
with eps 1e-5 and the optional query residual, tanh GELU, and the encoder's
weight sharing across blocks. The reference below is written from the
official description (reference sections 1.1-1.5), in float64.
"""

import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import attention as attn
from perceiver_io.encoder import PerceiverEncoder

RNG = np.random.default_rng(0)
# Skipping LLVM's backend optimisations roughly halves XLA:CPU compile time,
# which dominates these small tests; it changes no semantics.
_JIT_OPTIONS = {'xla_backend_optimization_level': 0}


def _rand(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


def _random_params(module, *args, seed=0):
  """Random parameters of `module` for inputs `args`, from shapes only.

  Kernels ~ N(0, 1/fan_in); LayerNorm scales 1 + N(0, 0.1^2); biases and
  everything else N(0, 0.1^2), so that zero biases and unit LayerNorm scales
  cannot hide a mistake.
  """
  shapes = jax.eval_shape(
      lambda *a: module.init(jax.random.PRNGKey(0), *a), *args)['params']
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    x = rng.standard_normal(leaf.shape).astype(np.float32)
    if name == 'kernel':
      return x / np.sqrt(leaf.shape[0])
    if name == 'scale':
      return 1.0 + 0.1 * x
    return 0.1 * x

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _apply(module, variables, *args, **kwargs):
  """Jitted `module.apply` (one compilation instead of one per op)."""
  return np.asarray(jax.jit(lambda v, *a: module.apply(v, *a, **kwargs),
                            compiler_options=_JIT_OPTIONS)(variables, *args))


def _np(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


# ---------------------------------------------------------- NumPy reference --
def ref_dense(p, x):
  return x @ p['kernel'] + p['bias']


def ref_layer_norm(p, x, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def ref_gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def ref_attention(p, xq, xkv, heads, mask=None):
  """Multi-head attention, one batch element and one head at a time."""
  q, k, v = ref_dense(p['query'], xq), ref_dense(p['key'], xkv), ref_dense(
      p['value'], xkv)
  b, t, s = q.shape[0], q.shape[1], k.shape[1]
  dq, dv = q.shape[-1] // heads, v.shape[-1] // heads
  out = np.zeros((b, t, v.shape[-1]))
  for n in range(b):
    for h in range(heads):
      qh = q[n, :, h * dq:(h + 1) * dq]
      kh = k[n, :, h * dq:(h + 1) * dq]
      vh = v[n, :, h * dv:(h + 1) * dv]
      logits = qh @ kh.T / np.sqrt(dq)
      for i in range(t):
        valid = np.ones(s, bool) if mask is None else mask[n, i]
        if not valid.any():
          continue  # Official: a fully masked query row outputs zeros.
        row = np.where(valid, logits[i], -np.inf)
        w = np.exp(row - row.max())
        out[n, i, h * dv:(h + 1) * dv] = (w / w.sum()) @ vh
  return ref_dense(p['output'], out)


def ref_mlp(p, x):
  return ref_dense(p['dense2'], ref_gelu_tanh(ref_dense(p['dense1'], x)))


def ref_cross_block(p, xq, xkv, heads, residual, mask=None):
  a = ref_attention(p['attention'], ref_layer_norm(p['query_norm'], xq),
                    ref_layer_norm(p['kv_norm'], xkv), heads, mask)
  x = xq + a if residual else a
  return x + ref_mlp(p['mlp'], ref_layer_norm(p['mlp_norm'], x))


def ref_self_block(p, x, heads):
  y = ref_layer_norm(p['attention_norm'], x)
  x = x + ref_attention(p['attention'], y, y, heads)
  return x + ref_mlp(p['mlp'], ref_layer_norm(p['mlp_norm'], x))


# -------------------------------------------------------- MultiHeadAttention --
def _mha(impl='einsum', qk=24, v=12, heads=3, out=10, dropout=0.0):
  return attn.MultiHeadAttention(num_heads=heads, qk_channels=qk, v_channels=v,
                                 output_channels=out, attention_impl=impl,
                                 dropout_rate=dropout)


def _random_mask(b, t, s, full_rows=()):
  mask = RNG.random((b, t, s)) > 0.4
  mask[..., 0] = True  # Every row keeps at least one key...
  for n, i in full_rows:  # ...except these, which are fully masked.
    mask[n, i] = False
  return mask


@pytest.mark.parametrize('use_mask', [False, True])
def test_einsum_attention_matches_numpy(use_mask):
  xq, xkv = _rand(2, 5, 7), _rand(2, 6, 9)
  module = _mha()
  params = _random_params(module, xq, xkv)
  mask = _random_mask(2, 5, 6, full_rows=[(1, 2)]) if use_mask else None
  got = _apply(module, {'params': params}, xq, xkv, mask)
  expected = ref_attention(_np(params), xq, xkv, 3, mask)
  assert got.shape == (2, 5, 10)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_scale_uses_qk_head_width():
  # One head, one query, two keys, identity projections: logits are q.k / 2
  # for a qk width of 4 -> softmax([4, 0] / 2) = [e^2, 1] / (e^2 + 1).
  module = attn.MultiHeadAttention(num_heads=1, qk_channels=4, v_channels=1,
                                   output_channels=1, attention_impl='einsum')
  eye = {'kernel': np.eye(4, dtype=np.float32), 'bias': np.zeros(4, np.float32)}
  params = {'query': eye, 'key': eye,
            'value': {'kernel': np.array([[1.], [0.], [0.], [0.]], np.float32),
                      'bias': np.zeros(1, np.float32)},
            'output': {'kernel': np.ones((1, 1), np.float32),
                       'bias': np.zeros(1, np.float32)}}
  xq = np.array([[[2., 0., 0., 0.]]], np.float32)
  xkv = np.array([[[2., 0., 0., 0.], [0., 0., 0., 0.]]], np.float32)
  got = _apply(module, {'params': params}, xq, xkv)
  w = np.exp(2.0) / (np.exp(2.0) + 1.0)
  np.testing.assert_allclose(got[0, 0, 0], w * 2.0, rtol=1e-6)


@pytest.mark.parametrize('impl', ['einsum', 'auto'])
def test_fully_masked_row_gives_output_bias(impl):
  xq, xkv = _rand(1, 3, 8), _rand(1, 4, 8)
  module = _mha(impl=impl, qk=8, v=8, heads=2, out=5)
  params = _random_params(module, xq, xkv)
  mask = np.ones((1, 3, 4), bool)
  mask[0, 1] = False
  got = _apply(module, {'params': params}, xq, xkv, mask)
  np.testing.assert_array_equal(got[0, 1], np.asarray(params['output']['bias']))
  assert not np.allclose(got[0, 0], np.asarray(params['output']['bias']))


@pytest.mark.parametrize('use_mask', [False, True])
def test_fused_equals_einsum(use_mask):
  xq, xkv = _rand(2, 5, 16), _rand(2, 7, 12)
  mask = _random_mask(2, 5, 7, full_rows=[(0, 4)]) if use_mask else None
  params = _random_params(_mha('einsum', qk=16, v=16, heads=4), xq, xkv)
  outs = {impl: _apply(_mha(impl, qk=16, v=16, heads=4), {'params': params},
                       xq, xkv, mask)
          for impl in ('einsum', 'fused', 'auto')}
  np.testing.assert_allclose(outs['fused'], outs['einsum'], atol=1e-5)
  np.testing.assert_allclose(outs['auto'], outs['einsum'], atol=1e-5)
  expected = ref_attention(_np(params), xq, xkv, 4, mask)
  np.testing.assert_allclose(outs['fused'], expected, atol=1e-5)


# ------------------------------------------------- CPU gradient (custom VJP) --
def _grads_of(fn, args, seed=3):
  """Output and d/d(args) of a fixed random projection of fn(*args)."""
  out_shape = jax.eval_shape(fn, *args).shape
  proj = np.random.default_rng(seed).standard_normal(out_shape).astype(
      np.float32)
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * proj)
  run = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))),
                compiler_options=_JIT_OPTIONS)
  return run(*args)


def _einsum_core(mask):
  return lambda q, k, v: attn._einsum_attention(q, k, v, mask, 0.0, True, None,
                                                q.dtype)


@pytest.mark.parametrize('use_mask', [False, True])
@pytest.mark.parametrize('v_width', [8, 20])  # equal / unequal head widths
def test_cpu_attention_gradients_match_autodiff(use_mask, v_width):
  # The CPU path's hand-written backward (row-major dV = P^T dO, dK = dS^T Q,
  # softmax backward via rowsum(dO * O), masked logits) against JAX's autodiff
  # of the reference einsum path, including a fully masked query row.
  q, k = _rand(2, 5, 3, 8), _rand(2, 7, 3, 8)
  v = _rand(2, 7, 3, v_width)
  mask = _random_mask(2, 5, 7, full_rows=[(1, 3)]) if use_mask else None
  got_val, got = _grads_of(lambda *a: attn._cpu_attention(*a, mask), (q, k, v))
  ref_val, ref = _grads_of(_einsum_core(mask), (q, k, v))
  np.testing.assert_allclose(got_val, ref_val, rtol=1e-5)
  for g, r in zip(got, ref):
    assert np.max(np.abs(r)) > 0.1  # not a vacuous comparison
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('blocked', [False, True])
def test_cpu_attention_bfloat16_stays_bfloat16(blocked):
  # Both CPU cores (full matrix; blocked, here in blocks of 3 query rows).
  q, k, v = (jnp.asarray(_rand(2, 6, 2, 8), jnp.bfloat16) for _ in range(3))
  core = attn._blocked_attention if blocked else attn._cpu_attention
  with attn.blocked_attention_threshold(0, 3 * 6 * 4):
    val, grads = _grads_of(core, (q, k, v, None))
  ref_val, ref = _grads_of(_einsum_core(None), (q, k, v))
  assert all(g.dtype == jnp.bfloat16 for g in grads[:3])
  np.testing.assert_allclose(val, ref_val, rtol=2e-2)
  for g, r in zip(grads[:3], ref):
    g, r = np.asarray(g, np.float32), np.asarray(r, np.float32)
    assert np.linalg.norm(g - r) <= 2e-2 * np.linalg.norm(r)


# Row blocks of 2 query rows for a 7-key input (fp32 logits: 4 bytes each):
# query length 5 takes two loops (full blocks, then the remainder), 6 one.
_TWO_ROWS_OF_7 = 2 * 7 * 4


@pytest.mark.parametrize('use_mask', [False, True])
@pytest.mark.parametrize('q_len,v_width', [(5, 8), (6, 20), (1, 8)])
def test_blocked_attention_matches_cpu_attention(use_mask, q_len, v_width):
  # `_blocked_attention` (one batch element, head and row block at a time,
  # weights recomputed in the backward from saved row statistics) gives the
  # values and gradients of the full-matrix path, including a fully masked
  # query row (whose statistics a log-sum-exp alone would lose).
  q, k = _rand(2, q_len, 3, 8), _rand(2, 7, 3, 8)
  v = _rand(2, 7, 3, v_width)
  mask = (_random_mask(2, q_len, 7, full_rows=[(1, q_len - 1)])
          if use_mask else None)
  ref_val, ref = _grads_of(lambda *a: attn._cpu_attention(*a, mask), (q, k, v))
  with attn.blocked_attention_threshold(0, _TWO_ROWS_OF_7):
    got_val, got = _grads_of(lambda *a: attn._blocked_attention(*a, mask),
                             (q, k, v))
    out = jax.jit(lambda *a: attn._blocked_attention(*a, mask))(q, k, v)
  np.testing.assert_allclose(got_val, ref_val, rtol=1e-5)
  np.testing.assert_allclose(out, attn._cpu_attention(q, k, v, mask),
                             atol=1e-6)
  for g, r in zip(got, ref):
    assert np.max(np.abs(r)) > 0.1  # not a vacuous comparison
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


def test_attention_runs_blocked_from_the_size_threshold():
  # The module takes the blocked path when a call's fp32 logits reach the
  # threshold (256 MiB by default: long inputs' cross-attention), with the
  # same outputs and gradients, and the official zero row for a fully masked
  # query.
  xq, xkv = _rand(2, 5, 16), _rand(2, 7, 12)
  mask = _random_mask(2, 5, 7, full_rows=[(0, 2)])
  module = _mha('auto', qk=16, v=8, heads=4)
  params = _random_params(module, xq, xkv)
  logits_bytes = 4 * 2 * 4 * 5 * 7  # [B, H, T, S] in fp32

  def run(threshold):
    loss = lambda p, x: jnp.sum(jnp.sin(module.apply({'params': p}, x, xkv,
                                                     mask)))
    with attn.blocked_attention_threshold(threshold, _TWO_ROWS_OF_7):
      jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, xq))
      loops = len(re.findall(r'\b(?:scan|while)\[', jaxpr))
      return loops, jax.grad(loss, argnums=(0, 1))(params, xq)

  loops, grads = run(logits_bytes)
  loops_full, grads_full = run(logits_bytes + 1)
  assert loops >= 2 and loops_full == 0  # forward + backward loops
  assert attn._BLOCKED_ATTENTION_MIN_BYTES == 256 * 2**20  # restored
  for g, r in zip(jax.tree_util.tree_leaves(grads),
                  jax.tree_util.tree_leaves(grads_full)):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)
  with attn.blocked_attention_threshold(0, _TWO_ROWS_OF_7):
    got = module.apply({'params': params}, xq, xkv, mask)
  np.testing.assert_array_equal(got[0, 2], np.asarray(params['output']['bias']))
  np.testing.assert_allclose(got, module.apply({'params': params}, xq, xkv,
                                               mask), atol=1e-6)


@pytest.mark.parametrize('q_shape,kv_len,blocked', [
    ((1, 256, 8, 32), 65536, True),    # 64k bytes: 512 MiB of logits
    ((1, 256, 8, 32), 4096, True),     # 4k bytes: 4 MiB per head, narrow
    ((1, 256, 8, 32), 2048, False),    # 2k bytes: 2 MiB per head
    ((4, 256, 8, 32), 2048, False),    # IMDB batch 4: 2 MiB per head
    ((2, 512, 1, 261), 50176, False),  # ImageNet Fourier: one wide head
    ((1, 2048, 1, 512), 182528, True),  # optical flow: 1.4 GiB
    ((8, 512, 8, 128), 512, False),    # ImageNet latents: 1 MiB per head
])
def test_which_calls_run_blocked(q_shape, kv_len, blocked):
  # The default rule: 256 MiB of logits, or at least 4 MiB per (batch
  # element, head) with q/k heads at most 64 wide (attention.py, measured).
  q = jax.ShapeDtypeStruct(q_shape, jnp.float32)
  k = jax.ShapeDtypeStruct((q_shape[0], kv_len) + q_shape[2:], jnp.float32)
  assert attn._use_blocked_attention(q, k) == blocked
  # An explicit threshold (A/B runs) decides alone.
  with attn.blocked_attention_threshold(2**40):
    assert not attn._use_blocked_attention(q, k)


def test_language_model_same_with_every_attention_blocked():
  # The whole language classifier (masked cross-attention from padded bytes,
  # latent self-attention, a one-query decoder; blockwise block gradients
  # around it all) with every CPU attention call blocked: same logits and
  # same parameter gradients as the full-matrix default.
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top
  from perceiver_io.model import build_model  # pylint: disable=g-import-not-at-top
  model = build_model(presets.get_config('tiny_text_classification'))
  ids = np.random.default_rng(0).integers(6, 262, (2, 48)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 30:] = 0
  ids[mask == 0] = 0
  params = model.init(jax.random.PRNGKey(0), ids[:1])['params']

  def loss(p):
    logits = model.apply({'params': p}, ids, attention_mask=mask)
    return jnp.sum(logits * jnp.array([1.0, -2.0])), logits

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  (_, logits), grads = grad_fn(params)
  with attn.blocked_attention_threshold(0, 4 * 48 * 5):  # 5 rows a block
    (_, blocked_logits), blocked_grads = grad_fn(params)
  np.testing.assert_allclose(blocked_logits, logits, atol=1e-5)
  for got, want in zip(jax.tree_util.tree_leaves(blocked_grads),
                       jax.tree_util.tree_leaves(grads)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_layer_norm_sums_its_gradients_over_2d():
  # `_layer_norm` normalises like nn.LayerNorm (same values, same
  # parameters) but sees its input as 2-D, so the scale/bias gradients are
  # sums over the rows of a 2-D array: XLA:CPU turned the sum over a batch-1
  # [1, N, C] input into a 60x slower middle-axis reduction (docstring).
  x = _rand(1, 64, 8)
  w = _rand(1, 64, 8)

  class Norm(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      return attn._layer_norm('norm', None, jnp.float32)(x)

  plain = flax.linen.LayerNorm(epsilon=attn.LAYER_NORM_EPS)
  params = _random_params(Norm(), x)
  assert jax.tree_util.tree_map(np.shape, params) == {
      'norm': {'scale': (8,), 'bias': (8,)}}
  loss = lambda module, p: jnp.sum(w * module.apply({'params': p}, x))
  np.testing.assert_allclose(Norm().apply({'params': params}, x),
                             plain.apply({'params': params['norm']}, x),
                             atol=1e-6)
  got = jax.grad(lambda p: loss(Norm(), p))(params)['norm']
  want = jax.grad(lambda p: loss(plain, p))(params['norm'])
  for k in ('scale', 'bias'):
    np.testing.assert_allclose(got[k], want[k], atol=1e-5)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(Norm(), p)))(params)
  param_sums = [e for e in jaxpr.jaxpr.eqns if e.primitive.name ==
                'reduce_sum' and e.outvars[0].aval.shape == (8,)]
  assert len(param_sums) == 2, param_sums  # scale and bias
  assert all(e.invars[0].aval.shape == (64, 8) for e in param_sums), param_sums


def test_blocked_attention_plans_fewer_temporaries():
  # The point of the blocked path: no array of the whole logits' size. A
  # 64 x 16k single-batch, 2-head call (8 MiB of logits) with its gradient,
  # in 1 MiB blocks, must plan well under the full-matrix path's
  # temporaries (which hold the weights and the backward's logits-sized
  # products).
  q, k, v = _rand(1, 64, 2, 8), _rand(1, 16384, 2, 8), _rand(1, 16384, 2, 8)

  def temporaries(core):
    loss = lambda *a: jnp.sum(core(*a, None))
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    compiled = step.lower(q, k, v).compile(_JIT_OPTIONS)
    return compiled.memory_analysis().temp_size_in_bytes

  with attn.blocked_attention_threshold(0, 2**20):
    blocked = temporaries(attn._blocked_attention)
  full = temporaries(attn._cpu_attention)
  assert full > 2 * 8 * 2**20, full  # >= two logits-sized arrays
  assert blocked < 0.5 * full, (blocked, full)


@pytest.mark.parametrize('features', [4, 40])  # narrower, wider than x
def test_dense_dot_general_gradients_match_autodiff(features):
  x, kernel = _rand(2, 9, 16), _rand(16, features)
  plain = lambda x, w: jax.lax.dot_general(x, w, (((2,), (0,)), ((), ())))
  fused = lambda x, w: attn.dense_dot_general(x, w, (((2,), (0,)), ((), ())))
  got_val, got = _grads_of(fused, (x, kernel))
  ref_val, ref = _grads_of(plain, (x, kernel))
  np.testing.assert_allclose(got_val, ref_val, rtol=1e-5)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('features', [16, 48])
def test_dense_weight_gradient_compiles_to_row_major_products(features):
  # The point of dense_dot_general: XLA's CPU GEMM on a transposed left
  # operand (contracting dimension 0) is the slow form autodiff produces for
  # dW = x^T dy. No compiled dot of the gradient may take that form, whether
  # the kernel widens or narrows (a dy^T variant let XLA fold it back).
  x, kernel = jnp.ones((64, 32)), jnp.ones((32, features))
  dims = (((1,), (0,)), ((), ()))
  def lhs_contractions(dot_general):
    grad = jax.grad(lambda x, k: jnp.sum(dot_general(x, k, dims) ** 2),
                    argnums=(0, 1))
    hlo = jax.jit(grad).lower(x, kernel).compile().as_text()
    return re.findall(r' dot\(.*?lhs_contracting_dims=\{(\d)\}', hlo)
  assert '0' in lhs_contractions(jax.lax.dot_general)  # What autodiff makes.
  found = lhs_contractions(attn.dense_dot_general)
  assert len(found) == 3 and set(found) == {'1'}, found


def test_cpu_paths_taken_per_attention_impl():
  # On the CPU backend 'auto' (and 'cudnn', which falls back to 'auto', and
  # 'cpu', its old name) runs the custom-VJP attention core and the
  # custom-VJP matmul of the four projections; 'einsum' and 'fused' keep
  # autodiff's form.
  xq, xkv = _rand(2, 5, 16), _rand(2, 7, 12)
  def custom_calls(impl, qk=16, v=8):
    module = _mha(impl, qk=qk, v=v, heads=4)
    params = _random_params(module, xq, xkv)
    jaxpr = jax.make_jaxpr(lambda p: module.apply({'params': p}, xq, xkv))(
        params)
    return str(jaxpr).count('custom_vjp_call')
  assert jax.default_backend() == 'cpu'
  assert custom_calls('auto') == 5  # 4 projections + attention core
  assert custom_calls('cpu') == 5
  assert custom_calls('cudnn') == 5
  assert custom_calls('einsum') == 0
  assert custom_calls('fused', v=16) == 0


def test_forward_mode_needs_einsum_on_cpu():
  # The CPU attention core is a custom VJP, which has no forward-mode rule:
  # JAX refuses jvp through 'auto'; 'einsum' supports it (documented).
  xq, xkv = _rand(1, 3, 8), _rand(1, 4, 8)
  def jvp(impl):
    module = _mha(impl, qk=8, v=8, heads=2)
    params = _random_params(module, xq, xkv)
    f = lambda q: module.apply({'params': params}, q, xkv)
    return f, jax.jvp(f, (xq,), (jnp.ones_like(xq),))[1]
  with pytest.raises(TypeError, match='custom_vjp'):
    jvp('auto')
  f, tangent = jvp('einsum')
  eps = 1e-3
  central = (f(xq + eps) - f(xq - eps)) / (2 * eps)
  np.testing.assert_allclose(tangent, central, atol=2e-3, rtol=2e-2)


def test_fused_with_unequal_widths_raises():
  xq = _rand(1, 3, 8)
  with pytest.raises(ValueError, match='qk_channels == v_channels'):
    _random_params(_mha('fused', qk=8, v=4, heads=2), xq, xq)


def test_bad_attention_settings_raise():
  xq = _rand(1, 3, 8)
  with pytest.raises(ValueError, match='auto, fused, einsum, cudnn or cpu'):
    _random_params(_mha('flash', qk=8, v=4, heads=2), xq, xq)
  with pytest.raises(ValueError, match='divisible by num_heads'):
    _random_params(_mha('einsum', qk=8, v=6, heads=4), xq, xq)


def test_attention_dropout():
  xq, xkv = _rand(1, 4, 8), _rand(1, 6, 8)
  module = _mha('auto', qk=8, v=8, heads=2, out=8, dropout=0.5)
  v = {'params': _random_params(module, xq, xkv)}
  plain = _apply(_mha('einsum', qk=8, v=8, heads=2, out=8), v, xq, xkv)
  # Deterministic: no dropout and no rng needed.
  np.testing.assert_allclose(_apply(module, v, xq, xkv, deterministic=True),
                             plain, atol=1e-5)
  # Training: needs a 'dropout' rng.
  with pytest.raises(flax.errors.InvalidRngError, match='dropout'):
    module.apply(v, xq, xkv, deterministic=False)

  train = jax.jit(lambda v, q, kv, k: module.apply(
      v, q, kv, deterministic=False, rngs={'dropout': k}),
                  compiler_options=_JIT_OPTIONS)

  # Each batch element draws its own mask, so 2000 copies of the input give
  # 2000 independent samples (one compilation: random bits compile slowly).
  many_q, many_kv = np.repeat(xq, 2000, 0), np.repeat(xkv, 2000, 0)
  outs = np.asarray(train(v, many_q, many_kv, jax.random.PRNGKey(1)))
  assert not np.allclose(outs[0], plain[0], atol=1e-3)
  assert not np.allclose(outs[0], outs[1], atol=1e-3)
  np.testing.assert_array_equal(
      outs, train(v, many_q, many_kv, jax.random.PRNGKey(1)))  # Same key.
  assert not np.allclose(
      outs, train(v, many_q, many_kv, jax.random.PRNGKey(2)), atol=1e-3)
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
  xq, xkv = _rand(2, 4, 12), _rand(2, 6, 20)
  block = attn.CrossAttentionBlock(num_heads=2, qk_channels=8, v_channels=6,
                                   widening_factor=2,
                                   use_query_residual=residual,
                                   attention_impl='einsum')
  params = _random_params(block, xq, xkv)
  mask = _random_mask(2, 4, 6, full_rows=[(0, 1)])
  got = _apply(block, {'params': params}, xq, xkv, mask)
  expected = ref_cross_block(_np(params), xq, xkv, 2, residual, mask)
  assert got.shape == (2, 4, 12)  # Output in the query width.
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


def _shapes(tree):
  return jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)


def test_cross_attention_width_defaults():
  xq, xkv = jnp.zeros((1, 3, 12)), jnp.zeros((1, 5, 20))

  def shapes(**kw):
    block = attn.CrossAttentionBlock(num_heads=2, **kw)
    return _shapes(_random_params(block, xq, xkv))

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
  x = _rand(2, 5, 16)
  block = attn.SelfAttentionBlock(num_heads=4, qk_channels=8, widening_factor=3,
                                  v_channels=16, attention_impl='einsum')
  params = _random_params(block, x)
  assert params['mlp']['dense1']['kernel'].shape == (16, 48)
  got = _apply(block, {'params': params}, x)
  np.testing.assert_allclose(got, ref_self_block(_np(params), x, 4),
                             atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------ encoder --
def _encoder(num_blocks, per_block):
  return PerceiverEncoder(num_latents=4, latent_channels=16,
                          num_blocks=num_blocks,
                          num_self_attends_per_block=per_block,
                          num_cross_attend_heads=1, num_self_attend_heads=2,
                          qk_channels=8, v_channels=16,
                          attention_impl='einsum')


def test_encoder_shares_weights_across_blocks():
  x = _rand(2, 6, 5)
  input_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  one, three = _encoder(1, 2), _encoder(3, 2)
  p1 = _random_params(one, x, input_mask)
  p3 = _random_params(three, x, input_mask)
  count = lambda v: sum(a.size for a in jax.tree_util.tree_leaves(v))
  assert count(p1) == count(p3)
  assert _shapes(p1) == _shapes(p3)
  params = p1
  z1 = _apply(one, {'params': params}, x, input_mask)
  z3 = _apply(three, {'params': params}, x, input_mask)
  assert not np.allclose(z1, z3, atol=1e-3)

  # NumPy: one cross-attend, then the same two layers three times.
  p = _np(params)
  lat = np.broadcast_to(p['latents'], (2, 4, 16))
  mask = np.broadcast_to(input_mask[:, None, :], (2, 4, 6))
  z = ref_cross_block(p['cross_attend'], lat, x, 1, True, mask)
  for _ in range(3):
    for i in range(2):
      z = ref_self_block(p[f'self_attend_{i}'], z, 2)
  np.testing.assert_allclose(z3, z, atol=5e-5, rtol=1e-4)


def test_encoder_masked_inputs_are_ignored():
  x = _rand(1, 6, 5)
  mask = np.array([[1, 1, 1, 0, 0, 0]], bool)
  enc = _encoder(1, 1)
  variables = {'params': _random_params(enc, x, mask)}
  other = x.copy()
  other[:, 3:] = _rand(1, 3, 5)  # Change only the masked elements.
  run = jax.jit(enc.apply, compiler_options=_JIT_OPTIONS)
  np.testing.assert_allclose(run(variables, x, mask), run(variables, other,
                                                          mask), atol=1e-6)
  assert not np.allclose(run(variables, x, None), run(variables, other, None),
                         atol=1e-4)


def test_encoder_heads_must_divide_latent_width():
  enc = PerceiverEncoder(num_latents=2, latent_channels=10,
                         num_self_attend_heads=4, num_blocks=1,
                         num_self_attends_per_block=1)
  with pytest.raises(ValueError, match='divisible'):
    _random_params(enc, jnp.zeros((1, 3, 4)))


# ---------------------------------------------- block-by-block CPU gradients --
def _block_grads(block, params, args, kwargs, rngs=None):
  """Gradients of a fixed random projection of a block's output."""
  def loss(params, args):
    out = block.apply({'params': params}, *args, rngs=rngs, **kwargs)
    w = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    return jnp.sum(out * w)
  return jax.jit(jax.grad(loss, argnums=(0, 1)),
                 compiler_options=_JIT_OPTIONS)(params, args)


@pytest.mark.parametrize('kind', ['self', 'cross'])
def test_blockwise_gradients_change_no_value(kind):
  # `_call_block` only reorders the CPU backward: parameter and input
  # gradients are those of plain autodiff through the same layers, with a
  # mask (cross) and with active dropout (the rng reaches the layers inside
  # the custom VJP: same key, same masks).
  if kind == 'self':
    block = attn.SelfAttentionBlock(num_heads=2, qk_channels=8, v_channels=16,
                                    widening_factor=2, dropout_rate=0.3,
                                    attention_dropout_rate=0.2)
    args, kwargs = (_rand(2, 5, 16),), {}
  else:
    block = attn.CrossAttentionBlock(num_heads=2, qk_channels=8, v_channels=8,
                                     dropout_rate=0.3)
    args = (_rand(2, 4, 12), _rand(2, 7, 6))
    kwargs = {'mask': _random_mask(2, 4, 7, full_rows=[(1, 2)])}
  params = _random_params(block, *args, *kwargs.values())
  for deterministic in (True, False):
    kw = dict(kwargs, deterministic=deterministic)
    rngs = None if deterministic else {'dropout': jax.random.PRNGKey(7)}
    jaxpr = str(jax.make_jaxpr(lambda p, a: block.apply(
        {'params': p}, *a, rngs=rngs, **kw))(params, args))
    assert 'custom_vjp_call' in jaxpr  # The block-level VJP is in place.
    tied = _block_grads(block, params, args, kw, rngs)
    with attn.blockwise_cpu_gradients(False):
      plain = _block_grads(block, params, args, kw, rngs)
    for got, want in zip(jax.tree_util.tree_leaves(tied),
                         jax.tree_util.tree_leaves(plain)):
      np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
    assert float(jnp.abs(tied[1][0]).max()) > 1e-3  # Not a vacuous check.


_TEMPORARIES_SCRIPT = """
import os
import jax, jax.numpy as jnp, numpy as np, optax
from experiments import process_tuning
from perceiver_io import attention, presets
from perceiver_io.model import build_model
assert process_tuning.LOW_MEMORY_CPU_FLAG in os.environ['XLA_FLAGS']
ids = np.random.default_rng(0).integers(0, 256, (2, 512)).astype(np.int32)
tx = optax.adamw(1e-4)
for impl in ('auto', 'einsum'):
  for blockwise in (True, False):
    model = build_model(presets.get_config(
        'text_classification', num_classes=2, d_model=128, max_seq_len=512,
        num_latents=64, latent_channels=256, depth=8, heads=8, qk=64),
                        attention_impl=impl)
    params = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), ids[:1]))['params']

    def step(params, opt_state):
      def loss(p):
        logits = model.apply({'params': p}, ids,
                             attention_mask=np.ones_like(ids))
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, jnp.zeros(2, jnp.int32)).mean()
      updates, opt_state = tx.update(jax.grad(loss)(params), opt_state,
                                     params)
      return optax.apply_updates(params, updates), opt_state

    with attention.blockwise_cpu_gradients(blockwise):
      lowered = jax.jit(step, donate_argnums=(0, 1)).lower(
          params, jax.eval_shape(tx.init, params))
    compiled = lowered.compile({'xla_backend_optimization_level': 0})
    print(impl, blockwise, compiled.memory_analysis().temp_size_in_bytes)
"""


def test_blockwise_gradients_free_each_layers_buffers(subprocess_env):
  # The point of `_call_block`: XLA's low-memory CPU schedule (the one the
  # launchers select; XLA_FLAGS only, so in a subprocess) otherwise computes
  # every weight gradient after the whole backward pass, next to the
  # optimizer update, keeping all layers' activations and output gradients
  # alive. A small language classifier's AdamW step must plan clearly fewer
  # temporaries with it (measured: 23.1 vs 29.8 MiB); 'einsum' (plain
  # autodiff) never takes it.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from experiments import process_tuning  # pylint: disable=g-import-not-at-top
  env = dict(subprocess_env, XLA_FLAGS=f'{process_tuning.LOW_MEMORY_CPU_FLAG}=false')
  run = subprocess.run([sys.executable, '-c', _TEMPORARIES_SCRIPT], env=env,
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  temps = {tuple(line.split()[:2]): int(line.split()[2])
           for line in run.stdout.splitlines()}
  with_it, without = temps[('auto', 'True')], temps[('auto', 'False')]
  assert with_it < 0.85 * without, temps
  assert temps[('einsum', 'True')] == temps[('einsum', 'False')], temps
