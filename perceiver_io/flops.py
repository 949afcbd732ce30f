"""Matmul and convolution FLOPs of a model, counted from shapes.

Why a module of its own: the launchers size a training step before anything
creates a JAX backend (their host-memory choice depends on it), benchmarks
report model FLOPs utilisation, and tests hold the counts against the
paper's. Everything here traces abstractly; no backend is created.
"""

from typing import Any, Dict

import jax
import numpy as np

from perceiver_io import model as model_lib
from perceiver_io.ar import model as ar_model


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
      total += (
        2.0 * np.prod(out.shape) * np.prod([lhs.shape[d] for d in contract])
      )
    elif name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval
      _, in_dim, *spatial = eqn.params['dimension_numbers'].rhs_spec
      total += (
        2.0
        * np.prod(out.shape)
        * kernel.shape[in_dim]
        * np.prod([kernel.shape[d] for d in spatial])
      )
    subs = [
      sub
      for value in eqn.params.values()
      for sub in (value if isinstance(value, (tuple, list)) else (value,))
      if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns')
    ]
    if not subs:
      continue
    counts = [count_jaxpr_flops(sub) for sub in subs]
    if name == 'cond':
      total += max(counts)
    else:
      total += eqn.params.get('length', 1) * sum(counts)
  return float(total)


def counting_config(config: Dict[str, Any]) -> Dict[str, Any]:
  """`config` with its kernels chosen for the CPU backend, whatever exists.

  Every kernel computes the same products, and choosing them for a named
  platform asks JAX for no backend, so a model built from this config can be
  counted before any backend exists.
  """
  options = dict(config.get('kernel_options') or {}, platform='cpu')
  return dict(config, kernel_options=options)


def forward_flops(model, inputs, **kwargs) -> float:
  """Matmul and convolution FLOPs of one forward pass, counted from shapes.

  `inputs` and `kwargs` are the model call's arrays (or
  `jax.ShapeDtypeStruct`s) for the whole batch. Everything is traced
  abstractly; a `PerceiverIO` or `PerceiverAR` is traced with
  `counting_config`, so no JAX backend is created (build other modules from
  a `counting_config` for the same). The launchers size a step with this before choosing process
  settings. A train step is about 3x this.
  """
  if isinstance(model, (model_lib.PerceiverIO, ar_model.PerceiverAR)):
    model = model.clone(config=counting_config(model.config))
  spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype)
  inputs, kwargs = jax.tree_util.tree_map(spec, (inputs, kwargs))
  variables = jax.eval_shape(
    lambda x, kw: model.init(jax.random.PRNGKey(0), x, **kw), inputs, kwargs
  )
  jaxpr = jax.make_jaxpr(lambda v, x, kw: model.apply(v, x, **kw))(
    variables, inputs, kwargs
  )
  return count_jaxpr_flops(jaxpr)
