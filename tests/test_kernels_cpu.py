"""The CPU kernels (perceiver_io/kernels/cpu.py, blocked.py) against autodiff.

Why: these custom VJPs replace JAX's own gradients on the CPU backend, so
each must give the values and gradients of plain autodiff through the
reference attention, Dense and LayerNorm (including masks, fully masked
query rows, bfloat16 and dropout), and each must keep what it was made for
(row-major products, fewer temporaries, layer-by-layer gradients).
"""

import functools
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_io import attention as attn
from perceiver_io import kernels
from perceiver_io.kernels import blocked as blocked_lib
from perceiver_io.kernels import cpu
from perceiver_io.kernels import reference
from tests.model_helpers import grads_of
from tests.model_helpers import JIT_OPTIONS
from tests.model_helpers import mha
from tests.model_helpers import rand
from tests.model_helpers import random_mask
from tests.model_helpers import random_params


# ------------------------------------------------- CPU gradient (custom VJP) --
def _einsum_core(mask):
  return lambda q, k, v: reference.einsum_attention(q, k, v, mask)


@pytest.mark.parametrize('use_mask', [False, True])
@pytest.mark.parametrize('v_width', [8, 20])  # equal / unequal head widths
def test_cpu_attention_gradients_match_autodiff(use_mask, v_width):
  # The CPU path's hand-written backward (row-major dV = P^T dO, dK = dS^T Q,
  # softmax backward via rowsum(dO * O), masked logits) against JAX's autodiff
  # of the reference einsum path, including a fully masked query row.
  q, k = rand(2, 5, 3, 8), rand(2, 7, 3, 8)
  v = rand(2, 7, 3, v_width)
  mask = random_mask(2, 5, 7, full_rows=[(1, 3)]) if use_mask else None
  got_val, got = grads_of(lambda *a: cpu.full_attention(*a, mask), (q, k, v))
  ref_val, ref = grads_of(_einsum_core(mask), (q, k, v))
  np.testing.assert_allclose(got_val, ref_val, rtol=1e-5)
  for g, r in zip(got, ref):
    assert np.max(np.abs(r)) > 0.1  # not a vacuous comparison
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('blocked', [False, True])
def test_cpu_attention_bfloat16_stays_bfloat16(blocked):
  # Both CPU cores (full matrix; blocked, here in blocks of 3 query rows).
  q, k, v = (jnp.asarray(rand(2, 6, 2, 8), jnp.bfloat16) for _ in range(3))
  # Blocks of 3 query rows of 6 keys (fp32 logits: 4 bytes each).
  core = (
    functools.partial(blocked_lib.blocked_attention, block_bytes=3 * 6 * 4)
    if blocked
    else cpu.full_attention
  )
  val, grads = grads_of(core, (q, k, v, None))
  ref_val, ref = grads_of(_einsum_core(None), (q, k, v))
  assert all(g.dtype == jnp.bfloat16 for g in grads[:3])
  np.testing.assert_allclose(val, ref_val, rtol=2e-2)
  for g, r in zip(grads[:3], ref):
    g, r = np.asarray(g, np.float32), np.asarray(r, np.float32)
    assert np.linalg.norm(g - r) <= 2e-2 * np.linalg.norm(r)


# Row blocks of 2 query rows for a 7-key input (fp32 logits: 4 bytes each):
# query length 5 takes two loops (full blocks, then the remainder), 6 one.
_TWO_ROWS_OF_7 = 2 * 7 * 4


@pytest.mark.slow
@pytest.mark.parametrize('use_mask', [False, True])
@pytest.mark.parametrize('q_len,v_width', [(5, 8), (6, 20), (1, 8)])
def test_blocked_attention_matches_cpu_attention(use_mask, q_len, v_width):
  # `_blocked_attention` (one batch element, head and row block at a time,
  # weights recomputed in the backward from saved row statistics) gives the
  # values and gradients of the full-matrix path, including a fully masked
  # query row (whose statistics a log-sum-exp alone would lose).
  q, k = rand(2, q_len, 3, 8), rand(2, 7, 3, 8)
  v = rand(2, 7, 3, v_width)
  mask = (
    random_mask(2, q_len, 7, full_rows=[(1, q_len - 1)]) if use_mask else None
  )
  ref_val, ref = grads_of(lambda *a: cpu.full_attention(*a, mask), (q, k, v))
  core = lambda *a: blocked_lib.blocked_attention(*a, mask, _TWO_ROWS_OF_7)
  got_val, got = grads_of(core, (q, k, v))
  out = jax.jit(core)(q, k, v)
  np.testing.assert_allclose(got_val, ref_val, rtol=1e-5)
  np.testing.assert_allclose(out, cpu.full_attention(q, k, v, mask), atol=1e-6)
  for g, r in zip(got, ref):
    assert np.max(np.abs(r)) > 0.1  # not a vacuous comparison
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_attention_runs_blocked_from_the_size_threshold():
  # The module takes the blocked path when a call's fp32 logits reach the
  # threshold (256 MiB by default: long inputs' cross-attention), with the
  # same outputs and gradients, and the official zero row for a fully masked
  # query.
  xq, xkv = rand(2, 5, 16), rand(2, 7, 12)
  mask = random_mask(2, 5, 7, full_rows=[(0, 2)])

  def module(threshold=None):
    return mha(
      'auto',
      qk=16,
      v=8,
      heads=4,
      blocked_attention_min_bytes=threshold,
      attention_block_bytes=_TWO_ROWS_OF_7,
    )

  params = random_params(module(), xq, xkv)
  logits_bytes = 4 * 2 * 4 * 5 * 7  # [B, H, T, S] in fp32

  def run(threshold):
    loss = lambda p, x: jnp.sum(
      jnp.sin(module(threshold).apply({'params': p}, x, xkv, mask))
    )
    jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, xq))
    loops = len(re.findall(r'\b(?:scan|while)\[', jaxpr))
    return loops, jax.grad(loss, argnums=(0, 1))(params, xq)

  loops, grads = run(logits_bytes)
  loops_full, grads_full = run(logits_bytes + 1)
  assert loops >= 2 and loops_full == 0  # forward + backward loops
  for g, r in zip(
    jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_full)
  ):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)
  got = module(0).apply({'params': params}, xq, xkv, mask)
  np.testing.assert_array_equal(got[0, 2], np.asarray(params['output']['bias']))
  np.testing.assert_allclose(
    got, module().apply({'params': params}, xq, xkv, mask), atol=1e-6
  )


@pytest.mark.parametrize(
  'q_shape,kv_len,blocked',
  [
    ((1, 256, 8, 32), 65536, True),  # 64k bytes: 512 MiB of logits
    ((1, 256, 8, 32), 4096, True),  # 4k bytes: 4 MiB per head, narrow
    ((1, 256, 8, 32), 2048, False),  # 2k bytes: 2 MiB per head
    ((4, 256, 8, 32), 2048, False),  # IMDB batch 4: 2 MiB per head
    ((2, 512, 1, 261), 50176, False),  # ImageNet Fourier: one wide head
    ((1, 2048, 1, 512), 182528, True),  # optical flow: 1.4 GiB
    ((8, 512, 8, 128), 512, False),  # ImageNet latents: 1 MiB per head
  ],
)
def test_which_calls_run_blocked(q_shape, kv_len, blocked):
  # The default rule: 256 MiB of logits, or at least 4 MiB per (batch
  # element, head) with q/k heads at most 64 wide (attention.py, measured).
  q = jax.ShapeDtypeStruct(q_shape, jnp.float32)
  k = jax.ShapeDtypeStruct((q_shape[0], kv_len) + q_shape[2:], jnp.float32)
  assert blocked_lib.use_blocked(q, k, kernels.KernelOptions()) == blocked
  # An explicit threshold (A/B runs) decides alone.
  assert not blocked_lib.use_blocked(
    q, k, kernels.KernelOptions(blocked_attention_min_bytes=2**40)
  )


@pytest.mark.slow
def test_language_model_same_with_every_attention_blocked():
  # The whole language classifier (masked cross-attention from padded bytes,
  # latent self-attention, a one-query decoder; blockwise block gradients
  # around it all) with every CPU attention call blocked: same logits and
  # same parameter gradients as the full-matrix default.
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top
  from perceiver_io.model import build_model  # pylint: disable=g-import-not-at-top

  config = presets.get_config('tiny_text_classification')
  model = build_model(config, attention_impl='auto')
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
  model = build_model(
    config,
    attention_impl='auto',
    kernel_options={
      'blocked_attention_min_bytes': 0,
      'attention_block_bytes': 4 * 48 * 5,
    },
  )  # 5 rows a block
  (_, blocked_logits), blocked_grads = grad_fn(params)
  np.testing.assert_allclose(blocked_logits, logits, atol=1e-5)
  for got, want in zip(
    jax.tree_util.tree_leaves(blocked_grads), jax.tree_util.tree_leaves(grads)
  ):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_layer_norm_sums_its_gradients_over_2d():
  # `_layer_norm` normalises like nn.LayerNorm (same values, same
  # parameters) but sees its input as 2-D, so the scale/bias gradients are
  # sums over the rows of a 2-D array: XLA:CPU turned the sum over a batch-1
  # [1, N, C] input into a 60x slower middle-axis reduction (docstring).
  x = rand(1, 64, 8)
  w = rand(1, 64, 8)

  class Norm(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      return cpu.LayerNorm(epsilon=attn.LAYER_NORM_EPS, name='norm')(x)

  plain = flax.linen.LayerNorm(epsilon=attn.LAYER_NORM_EPS)
  params = random_params(Norm(), x)
  assert jax.tree_util.tree_map(np.shape, params) == {
    'norm': {'scale': (8,), 'bias': (8,)}
  }
  loss = lambda module, p: jnp.sum(w * module.apply({'params': p}, x))
  np.testing.assert_allclose(
    Norm().apply({'params': params}, x),
    plain.apply({'params': params['norm']}, x),
    atol=1e-6,
  )
  got = jax.grad(lambda p: loss(Norm(), p))(params)['norm']
  want = jax.grad(lambda p: loss(plain, p))(params['norm'])
  for k in ('scale', 'bias'):
    np.testing.assert_allclose(got[k], want[k], atol=1e-5)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(Norm(), p)))(params)
  param_sums = [
    e
    for e in jaxpr.jaxpr.eqns
    if e.primitive.name == 'reduce_sum' and e.outvars[0].aval.shape == (8,)
  ]
  assert len(param_sums) == 2, param_sums  # scale and bias
  assert all(e.invars[0].aval.shape == (64, 8) for e in param_sums), param_sums


def test_blocked_attention_plans_fewer_temporaries():
  # The point of the blocked path: no array of the whole logits' size. A
  # 64 x 16k single-batch, 2-head call (8 MiB of logits) with its gradient,
  # in 1 MiB blocks, must plan well under the full-matrix path's
  # temporaries (which hold the weights and the backward's logits-sized
  # products).
  q, k, v = rand(1, 64, 2, 8), rand(1, 16384, 2, 8), rand(1, 16384, 2, 8)

  def temporaries(core):
    loss = lambda *a: jnp.sum(core(*a, None))
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    compiled = step.lower(q, k, v).compile(JIT_OPTIONS)
    return compiled.memory_analysis().temp_size_in_bytes

  in_blocks = temporaries(
    functools.partial(blocked_lib.blocked_attention, block_bytes=2**20)
  )
  full = temporaries(cpu.full_attention)
  assert full > 2 * 8 * 2**20, full  # >= two logits-sized arrays
  assert in_blocks < 0.5 * full, (in_blocks, full)


@pytest.mark.parametrize('features', [4, 40])  # narrower, wider than x
def test_dense_dot_general_gradients_match_autodiff(features):
  x, kernel = rand(2, 9, 16), rand(16, features)
  plain = lambda x, w: jax.lax.dot_general(x, w, (((2,), (0,)), ((), ())))
  fused = lambda x, w: cpu.dense_dot_general(x, w, (((2,), (0,)), ((), ())))
  got_val, got = grads_of(fused, (x, kernel))
  ref_val, ref = grads_of(plain, (x, kernel))
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
    grad = jax.grad(
      lambda x, k: jnp.sum(dot_general(x, k, dims) ** 2), argnums=(0, 1)
    )
    hlo = jax.jit(grad).lower(x, kernel).compile().as_text()
    return re.findall(r' dot\(.*?lhs_contracting_dims=\{(\d)\}', hlo)

  assert '0' in lhs_contractions(jax.lax.dot_general)  # What autodiff makes.
  found = lhs_contractions(cpu.dense_dot_general)
  assert len(found) == 3 and set(found) == {'1'}, found


def test_cpu_paths_taken_per_attention_impl():
  # On the CPU backend 'auto', 'cpu' and 'cudnn' (a GPU config on a laptop)
  # run the custom-VJP attention core and the custom-VJP matmul of the four
  # projections; the default 'xla', 'einsum' and 'fused' keep autodiff's
  # form.
  xq, xkv = rand(2, 5, 16), rand(2, 7, 12)

  def custom_calls(impl, qk=16, v=8):
    module = mha(impl, qk=qk, v=v, heads=4)
    params = random_params(module, xq, xkv)
    jaxpr = jax.make_jaxpr(lambda p: module.apply({'params': p}, xq, xkv))(
      params
    )
    return str(jaxpr).count('custom_vjp_call')

  assert jax.default_backend() == 'cpu'
  assert custom_calls('auto') == 5  # 4 projections + attention core
  assert custom_calls('cpu') == 5
  assert custom_calls('cudnn') == 5
  assert custom_calls('einsum') == 0
  assert custom_calls('xla') == 0
  assert custom_calls('fused', v=16) == 0


@pytest.mark.slow
def test_forward_mode_needs_the_default_kernels():
  # The CPU attention core is a custom VJP, which has no forward-mode rule:
  # JAX refuses jvp through 'auto' on the CPU; the default 'xla' (and
  # 'einsum') support it (documented in kernels/options.py).
  xq, xkv = rand(1, 3, 8), rand(1, 4, 8)

  def jvp(impl):
    module = mha(impl, qk=8, v=8, heads=2)
    params = random_params(module, xq, xkv)
    f = lambda q: module.apply({'params': params}, q, xkv)
    return f, jax.jvp(f, (xq,), (jnp.ones_like(xq),))[1]

  with pytest.raises(TypeError, match='custom_vjp'):
    jvp('auto')
  for impl in ('xla', 'einsum'):
    f, tangent = jvp(impl)
    eps = 1e-3
    central = (f(xq + eps) - f(xq - eps)) / (2 * eps)
    np.testing.assert_allclose(tangent, central, atol=2e-3, rtol=2e-2)


# ---------------------------------------------- block-by-block CPU gradients --
def _block_grads(block, params, args, kwargs, rngs=None):
  """Gradients of a fixed random projection of a block's output."""

  def loss(params, args):
    out = block.apply({'params': params}, *args, rngs=rngs, **kwargs)
    w = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    return jnp.sum(out * w)

  return jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=JIT_OPTIONS)(
    params, args
  )


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['self', 'cross'])
def test_blockwise_gradients_change_no_value(kind):
  # `cpu.ordered_gradients` only reorders the backward: parameter and input
  # gradients are those of plain autodiff through the same layers, with a
  # mask (cross) and with active dropout (the rng reaches the layers inside
  # the custom VJP: same key, same masks).
  def make(blockwise):
    options = kernels.KernelOptions(
      attention='auto', blockwise_gradients=blockwise
    )
    if kind == 'self':
      return kernels.block(attn.SelfAttentionBlock, options)(
        num_heads=2,
        qk_channels=8,
        v_channels=16,
        widening_factor=2,
        dropout_rate=0.3,
        attention_dropout_rate=0.2,
        kernel_options=options,
      )
    return kernels.block(attn.CrossAttentionBlock, options)(
      num_heads=2,
      qk_channels=8,
      v_channels=8,
      dropout_rate=0.3,
      kernel_options=options,
    )

  block = make(blockwise=True)
  if kind == 'self':
    args, kwargs = (rand(2, 5, 16),), {}
  else:
    args = (rand(2, 4, 12), rand(2, 7, 6))
    kwargs = {'mask': random_mask(2, 4, 7, full_rows=[(1, 2)])}
  params = random_params(block, *args, *kwargs.values())
  for deterministic in (True, False):
    kw = dict(kwargs, deterministic=deterministic)
    rngs = None if deterministic else {'dropout': jax.random.PRNGKey(7)}
    jaxpr = str(
      jax.make_jaxpr(
        lambda p, a: block.apply({'params': p}, *a, rngs=rngs, **kw)
      )(params, args)
    )
    assert 'custom_vjp_call' in jaxpr  # The block-level VJP is in place.
    tied = _block_grads(block, params, args, kw, rngs)
    plain = _block_grads(make(blockwise=False), params, args, kw, rngs)
    for got, want in zip(
      jax.tree_util.tree_leaves(tied), jax.tree_util.tree_leaves(plain)
    ):
      np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
    assert float(jnp.abs(tied[1][0]).max()) > 1e-3  # Not a vacuous check.


_TEMPORARIES_SCRIPT = """
import os
import jax, jax.numpy as jnp, numpy as np, optax
from experiments import process_tuning
from perceiver_io import presets
from perceiver_io.model import build_model
assert process_tuning.LOW_MEMORY_CPU_FLAG in os.environ['XLA_FLAGS']
ids = np.random.default_rng(0).integers(0, 256, (2, 512)).astype(np.int32)
tx = optax.adamw(1e-4)
for impl in ('auto', 'einsum'):
  for blockwise in (True, False):
    model = build_model(presets.get_config(
        'text_classification', num_classes=2, d_model=128, max_seq_len=512,
        num_latents=64, latent_channels=256, depth=8, heads=8, qk=64),
                        attention_impl=impl,
                        kernel_options={'blockwise_gradients': blockwise})
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

    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, jax.eval_shape(tx.init, params))
    compiled = lowered.compile({'xla_backend_optimization_level': 0})
    print(impl, blockwise, compiled.memory_analysis().temp_size_in_bytes)
"""


@pytest.mark.slow
def test_blockwise_gradients_free_each_layers_buffers(subprocess_env):
  # The point of `cpu.ordered_gradients`: XLA's low-memory CPU schedule (the
  # one the launchers select; XLA_FLAGS only, so in a subprocess) otherwise computes
  # every weight gradient after the whole backward pass, next to the
  # optimizer update, keeping all layers' activations and output gradients
  # alive. A small language classifier's AdamW step must plan clearly fewer
  # temporaries with it (measured: 23.1 vs 29.8 MiB); 'einsum' (plain
  # autodiff) never takes it.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from experiments import process_tuning  # pylint: disable=g-import-not-at-top

  env = dict(
    subprocess_env, XLA_FLAGS=f'{process_tuning.LOW_MEMORY_CPU_FLAG}=false'
  )
  run = subprocess.run(
    [sys.executable, '-c', _TEMPORARIES_SCRIPT],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  temps = {
    tuple(line.split()[:2]): int(line.split()[2])
    for line in run.stdout.splitlines()
  }
  with_it, without = temps[('auto', 'True')], temps[('auto', 'False')]
  assert with_it < 0.85 * without, temps
  assert temps[('einsum', 'True')] == temps[('einsum', 'False')], temps
