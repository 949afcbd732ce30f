"""Our side of the benchmark workloads: config, build, train step, forward.

Why: every script that measures, profiles or compiles our model must build
the same model for a workload and run the same step, or their numbers do not
add up. Each workload's sizes become our preset config with the reference's
like-for-like choices (exact GELU, HF's conv variant, `workloads` says
which); the train step is the jitted AdamW step with donated state that a
training loop runs. JAX, Flax and Optax are imported inside the functions,
so a process that measures the reference never loads them.
"""

from typing import Any, Dict

import numpy as np

from benchmarks.workloads import LEARNING_RATE
from benchmarks.workloads import NUM_BANDS
from benchmarks.workloads import WEIGHT_DECAY
from benchmarks.workloads import Workload


# Our performance options a benchmark may set (`build_model` overrides; the
# GELU form is fixed to HF's by `ours_config`). `attention_impl` defaults to
# 'auto', the experiment runner's choice (the fastest kernels of the
# backend); `kernel_options` is the rest of `perceiver_io.kernels.
# KernelOptions` as a dict (A/B switches, tracing for another platform).
PERF_KEYS = (
  'dtype',
  'attention_impl',
  'remat',
  'remat_policy',
  'query_chunk_size',
  'kernel_options',
  'scan_layers',
)


def ours_config(w: Workload, **perf) -> Dict[str, Any]:
  """Our model config for a workload; `perf` are build_model overrides."""
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top

  s = w.sizes
  if w.kind == 'text':
    cfg = presets.get_config(
      'text_classification',
      num_classes=s['num_classes'],
      d_model=s['d_model'],
      max_seq_len=s['max_seq_len'],
      num_latents=s['num_latents'],
      latent_channels=s['latent_channels'],
      depth=s['depth'],
      heads=s['heads'],
      qk=s['qk'],
    )
  elif w.kind == 'image_fourier':
    cfg = presets.get_config(
      'imagenet_fourier',
      num_classes=s['num_classes'],
      image_size=s['image_size'],
      num_bands=NUM_BANDS,
      num_latents=s['num_latents'],
      latent_channels=s['latent_channels'],
      blocks=s['blocks'],
      per_block=s['per_block'],
      self_heads=s['self_heads'],
    )
  elif w.kind == 'image_conv':
    cfg = presets.get_config(
      'imagenet_conv',
      num_classes=s['num_classes'],
      image_size=s['image_size'],
      num_bands=NUM_BANDS,
      num_latents=s['num_latents'],
      latent_channels=s['latent_channels'],
      blocks=s['blocks'],
      per_block=s['per_block'],
      self_heads=s['self_heads'],
      conv_hf_compat=True,
    )
  elif w.kind == 'flow':
    cfg = presets.get_config(
      'optical_flow',
      train_size=tuple(s['train_size']),
      num_bands=NUM_BANDS,
      num_latents=s['num_latents'],
      latent_channels=s['latent_channels'],
      depth=s['depth'],
      self_heads=s['self_heads'],
      channels=s['channels'],
    )
  elif w.kind == 'queries':
    cfg = presets.get_config(
      'imagenet_fourier',
      num_classes=1,
      image_size=s['image_size'],
      num_bands=NUM_BANDS,
      num_latents=s['num_latents'],
      latent_channels=s['latent_channels'],
      blocks=s['blocks'],
      per_block=s['per_block'],
      self_heads=s['self_heads'],
    )
    cfg['decoder'] = {
      'type': 'basic',
      'query': {
        'type': 'fourier',
        'num_bands': NUM_BANDS,
        'max_resolution': list(s['grid']),
        'concat_pos': True,
        'sine_only': False,
      },
      'output_index_dims': list(s['grid']),
      'num_heads': 1,
      'output_channels': s['output_channels'],
      'use_query_residual': False,
    }
  else:
    raise ValueError(f'unknown workload kind {w.kind!r}.')
  cfg['gelu_approximate'] = False  # HF's 'gelu' is the exact erf GELU.
  cfg['attention_impl'] = 'auto'  # As the experiment runner.
  cfg.update(perf)
  return cfg


def ours_model_arrays(data: Dict[str, np.ndarray]):
  """(positional inputs, apply kwargs) for our model, as NumPy arrays."""
  kwargs = {}
  if 'mask' in data:
    kwargs['attention_mask'] = data['mask']
  if 'points' in data:
    kwargs['subsampled_output_points'] = data['points']
  return data['inputs'], kwargs


def ours_model_inputs(data: Dict[str, np.ndarray], dtype=None):
  """(positional inputs, apply kwargs) for our model, as jnp arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  x, kwargs = jax.tree_util.tree_map(jnp.asarray, ours_model_arrays(data))
  if dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(dtype)
  return x, kwargs


def ours_build(w: Workload, data, seed=0, abstract=False, **perf):
  """Build and initialise our model. Returns (model, variables, x, kwargs).

  With `abstract=True`, variables, x and kwargs are ShapeDtypeStructs: nothing
  is allocated (for counting FLOPs from the lowered step).

  Initialised with Flax's `lazy_init` on an abstract one-example input: the
  parameters are created without running the forward pass
  (`model.init(key, x)` runs the whole forward eagerly: optical flow 113 s
  and 4.7 GiB peak vs 10 s and 0.8 GiB). On the CPU every model is
  initialised under one `jax.jit`. Eagerly, each initialiser op compiles and
  keeps its own executable (host memory that an inference run restoring a
  checkpoint never holds), and the build's peak was the peak of small
  inference runs (fresh processes, low-memory scheduler: 206M language
  model peak 1.35 GiB jitted vs 1.46 eager, depth-6 sweep model 0.61 vs
  0.83; ImageNet conv 562 vs 783 MB). Elsewhere (GPU) the
  language model is initialised eagerly: on an H200 that took 25 s, jitting
  68 s (compiling the initialisers). Either way the init's executables are
  then dropped (`jax.clear_caches()`), before anything measured compiles.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from perceiver_io.model import build_model  # pylint: disable=g-import-not-at-top

  model = build_model(ours_config(w, **perf))
  x, kwargs = ours_model_inputs(data)
  init_kwargs = dict(kwargs)
  init_kwargs.pop('attention_mask', None)
  one = jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)
  init = lambda: model.lazy_init(jax.random.PRNGKey(seed), one, **init_kwargs)
  if abstract:
    spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)
    x, kwargs = jax.tree_util.tree_map(spec, (x, kwargs))
    return model, jax.eval_shape(init), x, kwargs
  if w.kind == 'text' and jax.default_backend() != 'cpu':
    variables = init()
  else:
    variables = jax.jit(init)()
  jax.block_until_ready(variables)
  jax.clear_caches()
  return model, variables, x, kwargs


def ours_step_flops(w: Workload, data, mode: str, **perf) -> float:
  """Matmul FLOPs of our train step (3x forward) or inference, from shapes.

  Creates no JAX backend (`perceiver_io.flops`, as the launchers), so the
  worker can make the launchers' host-memory choice
  (`process_tuning.reuse_host_memory_for_step`) before it runs.
  """
  from perceiver_io import flops  # pylint: disable=g-import-not-at-top
  from perceiver_io import model as model_lib  # pylint: disable=g-import-not-at-top

  model = model_lib.build_model(ours_config(w, **perf))
  x, kwargs = ours_model_arrays(data)
  forward = flops.forward_flops(model, x, **kwargs)
  return 3.0 * forward if mode == 'train' else forward


def decide_host_memory_reuse(
  settings, w: Workload, data, mode: str, **perf
) -> None:
  """In 'auto' mode, `settings['host_memory_reuse']` := the launchers' choice.

  Must run before JAX's backend exists (`process_tuning.reuse_host_memory_for_step`).
  """
  if settings.get('host_memory_reuse') != 'auto':
    return
  from experiments import process_tuning  # pylint: disable=g-import-not-at-top

  settings['host_memory_reuse'] = process_tuning.reuse_host_memory_for_step(
    ours_step_flops(w, data, mode, **perf)
  )


def count_params(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top

  return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(tree)))


def ours_train_step(model, tx, has_batch_stats: bool):
  """A jitted AdamW train step: (params, state, opt, x, labels, kw) -> ...

  Parameters, batch statistics and optimizer state are donated, as in a real
  training loop; the loss is softmax cross-entropy on the classifier logits.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  def loss_fn(params, state, x, labels, kwargs):
    variables = {'params': params, **state}
    if has_batch_stats:
      logits, new_state = model.apply(
        variables, x, deterministic=False, mutable=['batch_stats'], **kwargs
      )
    else:
      logits, new_state = (
        model.apply(variables, x, deterministic=False, **kwargs),
        state,
      )
    loss = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype('float32'), labels
    ).mean()
    return loss, dict(new_state)

  def step(params, state, opt_state, x, labels, kwargs):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, state, x, labels, kwargs
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, state, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


def ours_abstract_call(model, variables, x, kwargs, data, mode, put=None):
  """(jitted train step or forward, its abstract arguments), to lower from
  shapes alone: `variables`, `x`, `kwargs` as `ours_build(abstract=True)`
  gives them; `put` re-creates each argument's ShapeDtypeStruct (e.g. with
  a device's sharding)."""
  import jax  # pylint: disable=g-import-not-at-top

  if mode == 'infer':
    fn, args = ours_infer_fn(model), (variables, x, kwargs)
  else:
    tx = ours_optimizer()
    params = variables['params']
    state = {k: v for k, v in variables.items() if k != 'params'}
    labels = jax.ShapeDtypeStruct(data['labels'].shape, data['labels'].dtype)
    fn = ours_train_step(model, tx, 'batch_stats' in state)
    args = (params, state, jax.eval_shape(tx.init, params), x, labels, kwargs)
  if put is not None:
    args = jax.tree_util.tree_map(put, args)
  return fn, args


def ours_infer_fn(model):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.jit(
    lambda variables, x, kwargs: model.apply(variables, x, **kwargs)
  )


def ours_optimizer():
  import optax  # pylint: disable=g-import-not-at-top

  return optax.adamw(
    LEARNING_RATE, b1=0.9, b2=0.999, eps=1e-8, weight_decay=WEIGHT_DECAY
  )
