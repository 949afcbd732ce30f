"""Helpers shared by the model and kernel tests: random inputs, random
parameters from shapes, jitted apply and gradient probes, and the NumPy
reference of the official attention (written from the official description,
shared/reference/perceiver-official.md 1.1-1.5, in float64)."""

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_io import attention as attn
from perceiver_io import kernels

RNG = np.random.default_rng(0)
# Skipping LLVM's backend optimisations roughly halves XLA:CPU compile time,
# which dominates these small tests; it changes no semantics.
JIT_OPTIONS = {'xla_backend_optimization_level': 0}


def rand(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


def random_mask(b, t, s, full_rows=()):
  mask = RNG.random((b, t, s)) > 0.4
  mask[..., 0] = True  # Every row keeps at least one key...
  for n, i in full_rows:  # ...except these, which are fully masked.
    mask[n, i] = False
  return mask


def random_params(module, *args, seed=0):
  """Random parameters of `module` for inputs `args`, from shapes only.

  Kernels ~ N(0, 1/fan_in); LayerNorm scales 1 + N(0, 0.1^2); biases and
  everything else N(0, 0.1^2), so that zero biases and unit LayerNorm scales
  cannot hide a mistake.
  """
  shapes = jax.eval_shape(
    lambda *a: module.init(jax.random.PRNGKey(0), *a), *args
  )['params']
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


def apply(module, variables, *args, **kwargs):
  """Jitted `module.apply` (one compilation instead of one per op)."""
  return np.asarray(
    jax.jit(
      lambda v, *a: module.apply(v, *a, **kwargs), compiler_options=JIT_OPTIONS
    )(variables, *args)
  )


def as_float64(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def grads_of(fn, args, seed=3):
  """Output and d/d(args) of a fixed random projection of fn(*args)."""
  out_shape = jax.eval_shape(fn, *args).shape
  proj = (
    np.random.default_rng(seed).standard_normal(out_shape).astype(np.float32)
  )
  loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * proj)
  run = jax.jit(
    jax.value_and_grad(loss, argnums=tuple(range(len(args)))),
    compiler_options=JIT_OPTIONS,
  )
  return run(*args)


def mha(impl='einsum', qk=24, v=12, heads=3, out=10, dropout=0.0, **options):
  """A MultiHeadAttention with `attention_impl=impl` (and other options)."""
  return attn.MultiHeadAttention(
    num_heads=heads,
    qk_channels=qk,
    v_channels=v,
    output_channels=out,
    dropout_rate=dropout,
    kernel_options=kernels.KernelOptions(attention=impl, **options),
  )


# ---------------------------------------------------------- NumPy reference --
def ref_dense(p, x):
  return x @ p['kernel'] + p['bias']


def ref_layer_norm(p, x, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def ref_gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def ref_attention(p, xq, xkv, heads, mask=None):
  """Multi-head attention, one batch element and one head at a time."""
  q, k, v = (
    ref_dense(p['query'], xq),
    ref_dense(p['key'], xkv),
    ref_dense(p['value'], xkv),
  )
  b, t, s = q.shape[0], q.shape[1], k.shape[1]
  dq, dv = q.shape[-1] // heads, v.shape[-1] // heads
  out = np.zeros((b, t, v.shape[-1]))
  for n in range(b):
    for h in range(heads):
      qh = q[n, :, h * dq : (h + 1) * dq]
      kh = k[n, :, h * dq : (h + 1) * dq]
      vh = v[n, :, h * dv : (h + 1) * dv]
      logits = qh @ kh.T / np.sqrt(dq)
      for i in range(t):
        valid = np.ones(s, bool) if mask is None else mask[n, i]
        if not valid.any():
          continue  # Official: a fully masked query row outputs zeros.
        row = np.where(valid, logits[i], -np.inf)
        w = np.exp(row - row.max())
        out[n, i, h * dv : (h + 1) * dv] = (w / w.sum()) @ vh
  return ref_dense(p['output'], out)


def ref_mlp(p, x):
  return ref_dense(p['dense2'], ref_gelu_tanh(ref_dense(p['dense1'], x)))


def ref_cross_block(p, xq, xkv, heads, residual, mask=None):
  a = ref_attention(
    p['attention'],
    ref_layer_norm(p['query_norm'], xq),
    ref_layer_norm(p['kv_norm'], xkv),
    heads,
    mask,
  )
  x = xq + a if residual else a
  return x + ref_mlp(p['mlp'], ref_layer_norm(p['mlp_norm'], x))


def ref_self_block(p, x, heads):
  y = ref_layer_norm(p['attention_norm'], x)
  x = x + ref_attention(p['attention'], y, y, heads)
  return x + ref_mlp(p['mlp'], ref_layer_norm(p['mlp_norm'], x))
