"""Matmul and convolution FLOPs of a model, counted from shapes.

Why a module of its own: the launchers size a training step before anything
creates a JAX backend (their host-memory choice depends on it), benchmarks
report model FLOPs utilisation, and tests hold the counts against the
paper's. Everything here traces abstractly; no backend is created.
"""

import jax
import numpy as np

from perceiver_io import attention


def count_jaxpr_flops(jaxpr) -> float:
  """Matmul and convolution FLOPs of a (closed) jaxpr, from shapes only.

  Elementwise work is left out (small next to the GEMMs of a Perceiver);
  scans count their body `length` times, conds their largest branch, loops
  of unknown trip count their body once. Equations without outputs count
  nothing: Flax's lifted `nn.scan` (chunked decoding) leaves such dead calls
  in the jaxpr, and XLA removes them.
  """
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    if not eqn.outvars:
      continue
    name = eqn.primitive.name
    out = eqn.outvars[0].aval
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval
      total += 2.0 * np.prod(out.shape) * np.prod(
          [lhs.shape[d] for d in contract])
    elif name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval
      _, in_dim, *spatial = eqn.params['dimension_numbers'].rhs_spec
      total += 2.0 * np.prod(out.shape) * kernel.shape[in_dim] * np.prod(
          [kernel.shape[d] for d in spatial])
    subs = [sub for value in eqn.params.values()
            for sub in (value if isinstance(value, (tuple, list))
                        else (value,))
            if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None),
                                                'eqns')]
    if not subs:
      continue
    counts = [count_jaxpr_flops(sub) for sub in subs]
    if name == 'cond':
      total += max(counts)
    else:
      total += eqn.params.get('length', 1) * sum(counts)
  return float(total)



def forward_flops(model, inputs, **kwargs) -> float:
  """Matmul and convolution FLOPs of one forward pass, counted from shapes.

  `inputs` and `kwargs` are the model call's arrays (or
  `jax.ShapeDtypeStruct`s) for the whole batch. Everything is traced
  abstractly and attention as on CPU (every attention path computes the same
  products), so no JAX backend is created: the launchers and benchmarks size
  a step with this before choosing process settings
  (`experiments.process_tuning`). A train step is about 3x this.
  """
  spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype)
  inputs, kwargs = jax.tree_util.tree_map(spec, (inputs, kwargs))
  with attention.assume_platform('cpu'):
    variables = jax.eval_shape(
        lambda x, kw: model.init(jax.random.PRNGKey(0), x, **kw),
        inputs, kwargs)
    jaxpr = jax.make_jaxpr(lambda v, x, kw: model.apply(v, x, **kw))(
        variables, inputs, kwargs)
  return count_jaxpr_flops(jaxpr)
