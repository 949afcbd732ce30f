"""Performance options change speed or memory, never the numbers.

Each option is compared with the plain float32 / no-remat / unchunked /
einsum model on the same random weights: `remat`, `query_chunk_size` and
`attention_impl` must agree to float32 round-off (forward and gradients);
`dtype='bfloat16'` must keep float32 parameters and agree to bf16 accuracy.

Weights are drawn with NumPy from the parameter shapes (so no random-bit
compilation is needed, and zero-initialised layers such as the flow output
are non-zero and cannot make a comparison trivially pass).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perceiver_io
from perceiver_io import model as model_lib
from perceiver_io import decoders
from perceiver_io import presets
from perceiver_io.encoder import PerceiverEncoder

FP32_TOL = 1e-5
# Both sides of every comparison are compiled alike; skipping LLVM's backend
# optimisations halves XLA:CPU compile time (which dominates these tests) and
# changes no semantics, only instruction selection.
_JIT_OPTIONS = {'xla_backend_optimization_level': 0}


def random_variables(model, inputs, kwargs, seed=0):
  """Random float32 variables of `model` from shapes only.

  Kernels/embeddings ~ N(0, 1/fan_in); LayerNorm/BatchNorm scales and
  running variances 1 + |N(0, 0.1^2)|; everything else N(0, 0.1^2).
  """
  shapes = jax.eval_shape(
    lambda x, kw: model.init(jax.random.PRNGKey(0), x, **kw), inputs, kwargs
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    x = rng.standard_normal(leaf.shape).astype(np.float32)
    if name in ('kernel', 'embedding'):
      fan_in = leaf.shape[-2] if name == 'kernel' else leaf.shape[-1]
      if len(leaf.shape) == 4:  # Conv HWIO.
        fan_in = int(np.prod(leaf.shape[:3]))
      return jnp.asarray(x / np.sqrt(fan_in), leaf.dtype)
    if name in ('scale', 'var'):
      return jnp.asarray(1.0 + 0.1 * np.abs(x), leaf.dtype)
    return jnp.asarray(0.1 * x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def random_inputs(cfg, batch_size=2, seed=1):
  """Example inputs of the right shapes, filled with random values."""
  inputs, kwargs = model_lib.example_inputs(cfg, batch_size)
  rng = np.random.default_rng(seed)

  def fill(x):
    if jnp.issubdtype(x.dtype, jnp.integer):
      return jnp.asarray(rng.integers(0, 262, x.shape), x.dtype)
    return jnp.asarray(rng.uniform(-1, 1, x.shape), x.dtype)

  return jax.tree_util.tree_map(fill, inputs), kwargs


_COMPILED = {}


def _forward(cfg, **overrides):
  """Jitted forward of `build_model(cfg, **overrides)`, compiled once."""
  key = json.dumps([cfg, overrides], sort_keys=True)
  if key not in _COMPILED:
    model = perceiver_io.build_model(cfg, **overrides)
    _COMPILED[key] = jax.jit(
      lambda v, x, kw: model.apply(v, x, **kw), compiler_options=_JIT_OPTIONS
    )
  return _COMPILED[key]


def _outputs_and_grads(cfg, jit=True, **overrides):
  """Jitted (params, others, x, kw) -> (outputs, loss, d loss / d params).

  The loss is a fixed random projection of every output element, so each
  output and every parameter that influences one contributes to it. One
  compilation gives both the forward outputs and the gradients.
  """
  model = perceiver_io.build_model(cfg, **overrides)

  def loss(params, others, x, kw):
    out = model.apply({'params': params, **others}, x, **kw)
    total = 0.0
    for i, leaf in enumerate(jax.tree_util.tree_leaves(out)):
      w = np.random.default_rng(i).standard_normal(leaf.shape)
      total += jnp.sum(leaf.astype(jnp.float32) * w.astype(np.float32))
    return total, out

  def run(params, others, x, kw):
    (value, out), grads = jax.value_and_grad(loss, has_aux=True)(
      params, others, x, kw
    )
    return out, value, grads

  return jax.jit(run, compiler_options=_JIT_OPTIONS) if jit else run


def _split(variables):
  others = {k: v for k, v in variables.items() if k != 'params'}
  return variables['params'], others


def _max_diff(a, b):
  diffs = jax.tree_util.tree_map(
    lambda x, y: float(
      np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))
    ),
    a,
    b,
  )
  return max(jax.tree_util.tree_leaves(diffs))


def assert_grads_close(got, ref, rtol=FP32_TOL):
  """Per parameter: max |got - ref| <= rtol * max(max |ref|, 1% of global).

  Gradients of different parameters differ by orders of magnitude; a single
  absolute tolerance would either ignore the small ones or fail on float32
  round-off in the large ones. The 1%-of-global floor covers gradients that
  are zero in exact arithmetic (e.g. key biases), which are pure round-off.
  """
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref)
  ref_leaves = [
    np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(ref)
  ]
  got_leaves = [
    np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(got)
  ]
  top = max(float(np.max(np.abs(r))) for r in ref_leaves)
  assert top > 0.0
  worst = 0.0
  for g, r in zip(got_leaves, ref_leaves):
    scale = max(float(np.max(np.abs(r))), 1e-2 * top)
    worst = max(worst, float(np.max(np.abs(g - r))) / scale)
  print(f'worst relative gradient difference {worst:.1e}')
  assert worst <= rtol


def _setup(name, batch_size=2, **cfg_overrides):
  cfg = presets.get_config(name, **cfg_overrides)
  inputs, kwargs = random_inputs(cfg, batch_size)
  variables = random_variables(perceiver_io.build_model(cfg), inputs, kwargs)
  return cfg, inputs, kwargs, variables


# ------------------------------------------------------------------ bfloat16 --
# The tiny presets cut to one latent layer where depth does not matter to the
# option under test: XLA:CPU compile time dominates these tests.
_SMALL = {
  'tiny_language_mlm': dict(depth=1),
  'tiny_imagenet_conv': dict(blocks=1, per_block=1),
  'tiny_imagenet_fourier': dict(blocks=1, per_block=1),
  'tiny_optical_flow': dict(depth=1),
  'tiny_multimodal_autoencoding': dict(depth=1),
}


def _setup_small(name):
  return _setup(name, **_SMALL[name])


def _rel_err(got, ref):
  got = np.concatenate(
    [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(got)]
  )
  ref = np.concatenate(
    [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(ref)]
  )
  return np.linalg.norm(got - ref) / np.linalg.norm(ref)


def _text_kwargs(batch_size=2, seq_len=64, seed=5):
  """A padding mask (different lengths) and a random query mask."""
  attention_mask = np.ones((batch_size, seq_len), np.int32)
  attention_mask[0, 10:] = 0
  query_mask = np.random.default_rng(seed).random((batch_size, seq_len)) > 0.3
  return {'attention_mask': attention_mask, 'query_mask': query_mask}


@pytest.mark.slow
@pytest.mark.parametrize(
  'name', ['tiny_language_mlm', 'tiny_imagenet_conv', 'tiny_optical_flow']
)
def test_bfloat16_compute_float32_params(name):
  """bf16 keeps 8 significant bits (unit round-off 2^-8 ~ 4e-3 per op).

  Through a handful of LayerNorm-ed residual layers the relative error of the
  whole output (Frobenius norm) stays at the 1e-3..1e-2 level (measured
  5e-3 to 1.1e-2 here); 2e-2 leaves margin while a real bug (a softmax or
  mask value overflowing in bf16, a parameter cast wrongly, positions rounded
  before the Fourier features) is far above it.
  """
  cfg, inputs, kwargs, variables = _setup_small(name)
  if name == 'tiny_language_mlm':  # Masked inputs and masked queries.
    kwargs = _text_kwargs()
  bf16 = perceiver_io.build_model(cfg, dtype='bfloat16')
  shapes = jax.eval_shape(
    lambda x, kw: bf16.init(jax.random.PRNGKey(0), x, **kw), inputs, kwargs
  )
  dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)}
  assert dtypes == {jnp.dtype(jnp.float32)}  # Parameters stay float32.

  ref = _forward(cfg)(variables, inputs, kwargs)
  got = _forward(cfg, dtype='bfloat16')(variables, inputs, kwargs)
  for leaf in jax.tree_util.tree_leaves(got):  # Compute really is bf16.
    assert leaf.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
  err = _rel_err(got, ref)
  print(f'{name}: bf16 relative error {err:.2e}')
  assert 0.0 < err < 2e-2


# --------------------------------------------------------------------- remat --
def _jaxpr(cfg, variables, inputs, kwargs, **overrides):
  model = perceiver_io.build_model(cfg, **overrides)
  return str(
    jax.make_jaxpr(lambda v, x: model.apply(v, x, **kwargs))(variables, inputs)
  )


def _unit_outputs_and_grads(module, variables, args, **kwargs):
  """Outputs, and gradients w.r.t. parameters and `args`, of a module.

  The loss is a fixed random projection of the output (see
  `_outputs_and_grads`); `kwargs` (masks) are not differentiated. One
  compilation per module.
  """

  def loss(params, args, kwargs):
    out = module.apply({'params': params}, *args, **kwargs)
    w = np.random.default_rng(0).standard_normal(out.shape)
    return jnp.sum(out * w.astype(np.float32)), out

  run = jax.jit(
    jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
    compiler_options=_JIT_OPTIONS,
  )
  (_, out), grads = run(variables['params'], args, kwargs)
  return out, grads


def test_remat_option_reaches_the_encoder():
  # The model-level flag wraps the latent layers in jax.checkpoint (remat);
  # tracing only, nothing is compiled.
  cfg, inputs, kwargs, variables = _setup(
    'tiny_imagenet_fourier', blocks=2, per_block=1
  )
  remat = perceiver_io.build_model(cfg, remat=True)
  remat_shapes = jax.eval_shape(
    lambda x, kw: remat.init(jax.random.PRNGKey(0), x, **kw), inputs, kwargs
  )
  assert jax.tree_util.tree_structure(
    remat_shapes
  ) == jax.tree_util.tree_structure(variables)  # Same parameter names.
  # The primitive prints as 'remat2' or 'checkpoint' depending on the jax
  # version.
  with_remat = _jaxpr(cfg, variables, inputs, kwargs, remat=True)
  without = _jaxpr(cfg, variables, inputs, kwargs)
  assert 'remat' in with_remat or 'checkpoint' in with_remat
  assert 'remat' not in without and 'checkpoint' not in without


@pytest.mark.slow
def test_remat_same_outputs_and_gradients():
  # Three blocks sharing one layer's weights, a padded input: remat must
  # change neither the outputs nor the gradients (parameters and inputs).
  def encoder(remat):
    return PerceiverEncoder(
      num_latents=8,
      latent_channels=32,
      num_blocks=3,
      num_self_attends_per_block=1,
      num_cross_attend_heads=2,
      num_self_attend_heads=4,
      qk_channels=16,
      v_channels=32,
      remat=remat,
    )

  x = np.random.default_rng(0).standard_normal((2, 12, 6)).astype(np.float32)
  mask = np.ones((2, 12), bool)
  mask[1, 7:] = False
  variables = random_variables(encoder(False), x, {'input_mask': mask})
  out_p, grad_p = _unit_outputs_and_grads(
    encoder(False), variables, (x,), input_mask=mask
  )
  out_r, grad_r = _unit_outputs_and_grads(
    encoder(True), variables, (x,), input_mask=mask
  )
  np.testing.assert_allclose(out_r, out_p, atol=FP32_TOL, rtol=FP32_TOL)
  assert_grads_close(grad_r, grad_p)
  # The gradients reach the shared latent layers (not a vacuous comparison).
  layer = grad_p[0]['self_attend_0']['mlp']['dense1']['kernel']
  assert float(jnp.max(jnp.abs(layer))) > 1e-3


# ----------------------------------------------------------- chunked decoding --
def _has_scan(cfg, variables, inputs, kwargs, **overrides):
  model = perceiver_io.build_model(cfg, **overrides)
  f = lambda v, x: model.apply(v, x, **kwargs)
  return 'scan' in str(jax.make_jaxpr(f)(variables, inputs))


@pytest.mark.slow
def test_chunked_mlm_decoding_with_query_mask():
  cfg, inputs, _, variables = _setup_small('tiny_language_mlm')
  kwargs = _text_kwargs()
  assert _has_scan(cfg, variables, inputs, kwargs, query_chunk_size=24)
  assert not _has_scan(cfg, variables, inputs, kwargs)
  ref = np.asarray(_forward(cfg)(variables, inputs, kwargs))
  assert ref.shape == (2, 64, 262)
  for chunk in (24, 16):  # 24: the last chunk is padded; 16 divides 64.
    got = _forward(cfg, query_chunk_size=chunk)(variables, inputs, kwargs)
    np.testing.assert_allclose(got, ref, atol=FP32_TOL, rtol=FP32_TOL)
  # The query mask matters: masked rows differ from unmasked decoding.
  unmasked = dict(kwargs, query_mask=np.ones((2, 64), bool))
  free = np.asarray(_forward(cfg)(variables, inputs, unmasked))
  off = ~kwargs['query_mask']
  assert not np.allclose(free[off], ref[off], atol=1e-3)


@pytest.mark.slow
def test_chunked_decoding_gradients():
  # Gradients w.r.t. the decoder parameters, the queries and the latents
  # (broadcast into every chunk) equal those of unchunked decoding.
  def decoder(chunk):
    return decoders.DecoderCrossAttention(
      num_heads=2,
      qk_channels=8,
      v_channels=12,
      output_channels=5,
      query_chunk_size=chunk,
    )

  rng = np.random.default_rng(0)
  queries = rng.standard_normal((2, 23, 12)).astype(np.float32)
  latents = rng.standard_normal((2, 8, 16)).astype(np.float32)
  query_mask = rng.random((2, 23)) > 0.3
  variables = random_variables(
    decoder(None), queries, {'z': latents, 'query_mask': query_mask}
  )
  out_p, grad_p = _unit_outputs_and_grads(
    decoder(None), variables, (queries, latents), query_mask=query_mask
  )
  out_c, grad_c = _unit_outputs_and_grads(
    decoder(5), variables, (queries, latents), query_mask=query_mask
  )
  np.testing.assert_allclose(out_c, out_p, atol=FP32_TOL, rtol=FP32_TOL)
  assert_grads_close(grad_c, grad_p)
  assert float(jnp.max(jnp.abs(grad_p[1][1]))) > 1e-3  # d/d latents.


@pytest.mark.slow
def test_chunked_init_matches_unchunked_init_and_decodes_by_chunk():
  """Init with chunking creates the same parameters from one chunk (the
  parameters do not depend on the number of queries), so initialising a
  model for 1M queries never holds all queries' activations; its output is
  the full, chunked decode."""
  rng = np.random.default_rng(1)
  queries = rng.standard_normal((2, 23, 12)).astype(np.float32)
  latents = rng.standard_normal((2, 8, 16)).astype(np.float32)
  make = lambda chunk: decoders.DecoderCrossAttention(
    num_heads=2,
    qk_channels=8,
    v_channels=12,
    output_channels=5,
    query_chunk_size=chunk,
  )
  key = jax.random.PRNGKey(3)
  out_p, vars_p = make(None).init_with_output(key, queries, latents)
  out_c, vars_c = make(5).init_with_output(key, queries, latents)
  assert jax.tree_util.tree_structure(vars_c) == jax.tree_util.tree_structure(
    vars_p
  )
  for a, b in zip(
    jax.tree_util.tree_leaves(vars_c), jax.tree_util.tree_leaves(vars_p)
  ):
    np.testing.assert_array_equal(a, b)
  assert out_c.shape == (2, 23, 5)
  np.testing.assert_allclose(out_c, out_p, atol=FP32_TOL, rtol=FP32_TOL)
  jaxpr = str(jax.make_jaxpr(lambda q: make(5).init(key, q, latents))(queries))
  assert 'scan' in jaxpr  # The init, too, decodes chunk by chunk.


@pytest.mark.slow
def test_chunked_flow_decoding():
  cfg, inputs, kwargs, variables = _setup_small('tiny_optical_flow')
  ref = _forward(cfg)(variables, inputs, kwargs)
  assert ref.shape == (2, 16, 24, 2)  # 384 queries.
  assert float(jnp.max(jnp.abs(ref))) > 1e-3
  for chunk in (100, 383):  # Neither divides 384.
    got = _forward(cfg, query_chunk_size=chunk)(variables, inputs, kwargs)
    np.testing.assert_allclose(got, ref, atol=FP32_TOL, rtol=FP32_TOL)


@pytest.mark.slow
def test_chunked_multimodal_decoding():
  cfg, inputs, kwargs, variables = _setup_small('tiny_multimodal_autoencoding')
  assert _has_scan(cfg, variables, inputs, kwargs, query_chunk_size=5)
  ref = _forward(cfg)(variables, inputs, kwargs)
  got = _forward(cfg, query_chunk_size=5)(variables, inputs, kwargs)
  assert sorted(got) == ['audio', 'image', 'label']
  assert _max_diff(got, ref) < FP32_TOL


# ----------------------------------------------------------- attention impl --
@pytest.mark.slow
def test_attention_impl_einsum_vs_xla_vs_auto_vs_fused():
  # Equal q/k and v widths everywhere: 'xla' and 'fused' take
  # jax.nn.dot_product_attention, 'einsum' the reference path, 'auto' the
  # CPU kernels here.
  cfg, inputs, kwargs, variables = _setup_small('tiny_imagenet_fourier')
  ref = _forward(cfg, attention_impl='einsum')(variables, inputs, kwargs)
  for impl in ('xla', 'auto', 'fused', 'cudnn'):  # 'cudnn' on CPU: as 'auto'.
    got = _forward(cfg, attention_impl=impl)(variables, inputs, kwargs)
    np.testing.assert_allclose(got, ref, atol=FP32_TOL, rtol=FP32_TOL)


def test_fused_refused_for_unequal_widths():
  # The language encoder has qk 16 != v 48: 'fused' refuses with a clear error
  # ('xla' falls back to einsum, covered by the MLM tests above).
  cfg, inputs, kwargs, _ = _setup_small('tiny_language_mlm')
  model = perceiver_io.build_model(cfg, attention_impl='fused')
  with pytest.raises(ValueError, match='qk_channels == v_channels'):
    jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), inputs
    )


@pytest.mark.slow
@pytest.mark.parametrize('impl', ['auto', 'cpu'])
@pytest.mark.parametrize('name', ['tiny_imagenet_fourier', 'tiny_language_mlm'])
def test_attention_impl_cpu_same_outputs_and_gradients(name, impl):
  # On CPU 'auto' (and 'cpu') swaps autodiff's attention and Dense weight
  # gradients for hand-written row-major ones and computes them block by
  # block: forward and every gradient must agree with the einsum reference
  # (plain autodiff), with masks (language) and without (ImageNet).
  cfg, inputs, kwargs, variables = _setup_small(name)
  if name == 'tiny_language_mlm':
    kwargs = {k: jnp.asarray(v) for k, v in _text_kwargs().items()}
  params, others = _split(variables)
  out_r, _, grad_r = _outputs_and_grads(cfg, attention_impl='einsum')(
    params, others, inputs, kwargs
  )
  out_c, _, grad_c = _outputs_and_grads(cfg, attention_impl=impl)(
    params, others, inputs, kwargs
  )
  assert _max_diff(out_c, out_r) < FP32_TOL * 10
  assert_grads_close(grad_c, grad_r)
