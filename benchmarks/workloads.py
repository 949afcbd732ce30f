"""The same Perceiver IO workloads built twice: ours (JAX/Flax) and HF's (torch).

Why this module exists: a side-by-side benchmark is only honest when both
sides do the same arithmetic. Each workload here is defined once by its sizes;
`ours_*` turns the sizes into our preset config and `hf_*` into the
`transformers.PerceiverConfig` + class that has the same parameters (the
workers report both parameter counts and the drivers refuse to compare when
they differ). Inputs are generated from the same NumPy seed for both sides;
ours take channels-last images and raw frame pairs, HF channels-first images
and 27-channel flow patches (extracted inside HF's timed function, since our
model extracts them inside its forward).

Imports of jax and torch are lazy, so a worker process that runs one side never
loads the other framework (its peak RSS stays its own).

Like-for-like choices (both sides):
* attention dropout 0 (HF's config defaults to 0.1; our presets have none);
* exact erf GELU (HF's `hidden_act='gelu'`; ours `gelu_approximate=False`);
* the conv preprocessor in HF's variant (`conv_hf_compat=True`: 55x55
  elements, as HF computes);
* AdamW, lr 1e-4, weight decay 0.01, betas (0.9, 0.999), eps 1e-8.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
NUM_BANDS = 64  # HF hard-codes 64 Fourier bands in its image classes.


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmark workload, described by sizes both sides understand.

  Attributes:
    name: workload id used on the command line and in results.
    kind: 'text', 'image_fourier', 'image_conv', 'flow' or 'queries'.
    batch: batch size.
    sizes: the architecture sizes (see the builders below).
    modes: which of 'train' / 'infer' make sense for it.
    description: one line for the tables.
  """

  name: str
  kind: str
  batch: int
  sizes: Dict[str, Any]
  modes: Tuple[str, ...] = ('train', 'infer')
  description: str = ''


# Full-size architectures (the paper's; same as our presets' defaults).
TEXT_FULL = dict(
  num_classes=2,
  d_model=768,
  max_seq_len=2048,
  num_latents=256,
  latent_channels=1280,
  depth=26,
  heads=8,
  qk=256,
  seq_len=2048,
)
IMAGE_FULL = dict(
  num_classes=1000,
  image_size=224,
  num_latents=512,
  latent_channels=1024,
  blocks=8,
  per_block=6,
  self_heads=8,
)
FLOW_FULL = dict(
  train_size=(368, 496),
  num_latents=2048,
  latent_channels=512,
  depth=24,
  self_heads=16,
  channels=64,
)
# Tiny sizes for `--smoke` runs: seconds on a laptop CPU, same code paths.
TEXT_TINY = dict(
  num_classes=2,
  d_model=32,
  max_seq_len=64,
  num_latents=8,
  latent_channels=48,
  depth=2,
  heads=4,
  qk=16,
  seq_len=64,
)
IMAGE_TINY = dict(
  num_classes=10,
  image_size=32,
  num_latents=16,
  latent_channels=32,
  blocks=2,
  per_block=2,
  self_heads=4,
)
FLOW_TINY = dict(
  train_size=(16, 24),
  num_latents=16,
  latent_channels=32,
  depth=2,
  self_heads=4,
  channels=64,
)  # HF fixes 64.


def standard_workloads(
  smoke: bool = False, batch: Optional[Dict[str, int]] = None
) -> Dict[str, Workload]:
  """The issue's workloads: IMDB step, ImageNet Fourier/conv, flow inference.

  Args:
    smoke: tiny sizes (for testing the scripts end to end).
    batch: optional per-workload batch overrides.

  Returns:
    name -> Workload, in run order.
  """
  batch = batch or {}
  text, image, flow = (
    (TEXT_TINY, IMAGE_TINY, FLOW_TINY)
    if smoke
    else (TEXT_FULL, IMAGE_FULL, FLOW_FULL)
  )
  items = [
    Workload(
      'imdb',
      'text',
      batch.get('imdb', 4),
      dict(text),
      description='IMDB fine-tune: text classification, '
      f'{text["seq_len"]} bytes',
    ),
    Workload(
      'imagenet_fourier',
      'image_fourier',
      batch.get('imagenet_fourier', 2),
      dict(image),
      description=f'ImageNet Fourier {image["image_size"]}px',
    ),
    Workload(
      'imagenet_conv',
      'image_conv',
      batch.get('imagenet_conv', 2),
      dict(image),
      description=f'ImageNet conv {image["image_size"]}px',
    ),
    Workload(
      'optical_flow',
      'flow',
      batch.get('optical_flow', 1),
      dict(flow),
      modes=('infer',),
      description='optical flow, one {}x{} pair'.format(*flow['train_size']),
    ),
  ]
  return {w.name: w for w in items}


def query_workload(
  num_queries: int, grid=(1024, 1024), image_size=64, batch=1, tiny=False
) -> Workload:
  """Decode `num_queries` Fourier-feature output points (first of `grid`).

  A small image encoder (pixels + 2D Fourier positions) followed by a basic
  decoder whose queries are 2D Fourier features of output pixels, as in the
  paper's dense decoders; both sides decode the same subsampled points.
  """
  if num_queries > int(np.prod(grid)):
    raise ValueError(
      f'num_queries={num_queries} exceeds the output grid '
      f'{grid} ({int(np.prod(grid))} points).'
    )
  sizes = dict(
    image_size=image_size,
    num_latents=256,
    latent_channels=512,
    blocks=1,
    per_block=2,
    self_heads=8,
    grid=tuple(grid),
    num_queries=num_queries,
    output_channels=3,
  )
  if tiny:
    sizes.update(
      image_size=8, num_latents=8, latent_channels=32, per_block=1, self_heads=4
    )
  return Workload(
    f'queries_{num_queries}',
    'queries',
    batch,
    sizes,
    modes=('infer',),
    description=f'decode {num_queries} Fourier queries',
  )


def text_workload(seq_len: int, batch=1, depth=26, tiny=False) -> Workload:
  """The language classifier on `seq_len` input bytes (positions = seq_len)."""
  sizes = dict(TEXT_TINY if tiny else TEXT_FULL)
  sizes.update(seq_len=seq_len, max_seq_len=seq_len)
  if not tiny:
    sizes['depth'] = depth
  return Workload(
    f'text_{seq_len}',
    'text',
    batch,
    sizes,
    description=f'text classification, {seq_len} bytes',
  )


# ----------------------------------------------------------------------------
# Inputs (NumPy, shared by both sides).
# ----------------------------------------------------------------------------


def make_inputs(w: Workload, seed: int = 0) -> Dict[str, np.ndarray]:
  """Channels-last NumPy inputs and integer labels for a workload."""
  rng = np.random.default_rng(seed)
  s, b = w.sizes, w.batch
  if w.kind == 'text':
    n = s['seq_len']
    ids = rng.integers(6, 262, size=(b, n), dtype=np.int32)
    mask = np.ones((b, n), np.int32)
    # IMDB reviews are padded to the length: mask the tail of every other one.
    mask[1::2, (3 * n) // 4 :] = 0
    ids[mask == 0] = 0
    return {
      'inputs': ids,
      'mask': mask,
      'labels': rng.integers(0, s['num_classes'], size=(b,)),
    }
  if w.kind in ('image_fourier', 'image_conv'):
    size = s['image_size']
    x = rng.standard_normal((b, size, size, 3), dtype=np.float32)
    return {'inputs': x, 'labels': rng.integers(0, s['num_classes'], size=(b,))}
  if w.kind == 'flow':
    h, wd = s['train_size']
    x = rng.uniform(-1, 1, size=(b, 2, h, wd, 3)).astype(np.float32)
    return {'inputs': x}
  if w.kind == 'queries':
    size = s['image_size']
    x = rng.standard_normal((b, size, size, 3), dtype=np.float32)
    return {'inputs': x, 'points': np.arange(s['num_queries'], dtype=np.int32)}
  raise ValueError(f'unknown workload kind {w.kind!r}.')


# ----------------------------------------------------------------------------
# Ours.
# ----------------------------------------------------------------------------


# Our performance options a benchmark may set (`build_model` overrides; the
# GELU form is fixed to HF's by `ours_config`). `attention_impl` defaults to
# 'auto', the experiment runner's choice (the fastest kernels of the
# backend); `kernel_options` is the rest of `perceiver_io.kernels.
# KernelOptions` as a dict (A/B switches, tracing for another platform).
PERF_KEYS = (
  'dtype',
  'attention_impl',
  'remat',
  'query_chunk_size',
  'kernel_options',
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


# ----------------------------------------------------------------------------
# HuggingFace (PyTorch).
# ----------------------------------------------------------------------------


def hf_config_kwargs(w: Workload) -> Dict[str, Any]:
  """`transformers.PerceiverConfig` kwargs with our sizes (see /tmp/counts)."""
  s = w.sizes
  common = dict(attention_probs_dropout_prob=0.0, hidden_act='gelu')
  if w.kind == 'text':
    return dict(
      common,
      qk_channels=s['qk'],
      v_channels=s['latent_channels'],
      d_latents=s['latent_channels'],
      num_latents=s['num_latents'],
      d_model=s['d_model'],
      num_self_attends_per_block=s['depth'],
      num_blocks=1,
      num_self_attention_heads=s['heads'],
      num_cross_attention_heads=s['heads'],
      max_position_embeddings=s['max_seq_len'],
      num_labels=s['num_classes'],
    )
  fourier_width = 2 * (2 * NUM_BANDS + 1)
  if w.kind in ('image_fourier', 'image_conv', 'queries'):
    in_width = {'image_fourier': 3, 'image_conv': 64, 'queries': 3}[w.kind]
    return dict(
      common,
      num_latents=s['num_latents'],
      d_latents=s['latent_channels'],
      num_blocks=s['blocks'],
      num_self_attends_per_block=s['per_block'],
      num_self_attention_heads=s['self_heads'],
      num_cross_attention_heads=1,
      num_labels=s.get('num_classes', 1),
      image_size=s['image_size'],
      d_model=in_width + fourier_width,
    )
  if w.kind == 'flow':
    return dict(
      common,
      num_latents=s['num_latents'],
      d_latents=s['latent_channels'],
      num_blocks=1,
      num_self_attends_per_block=s['depth'],
      num_self_attention_heads=s['self_heads'],
      num_cross_attention_heads=1,
      d_model=s['channels'] + fourier_width,
      train_size=list(s['train_size']),
    )
  raise ValueError(f'unknown workload kind {w.kind!r}.')


def hf_build(w: Workload, seed=0):
  """The HF model for a workload (float32, train mode)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers as tr  # pylint: disable=g-import-not-at-top
  from transformers.models.perceiver import modeling_perceiver as mp  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  cfg = tr.PerceiverConfig(**hf_config_kwargs(w))
  if w.kind == 'text':
    return tr.PerceiverForSequenceClassification(cfg)
  if w.kind == 'image_fourier':
    return tr.PerceiverForImageClassificationFourier(cfg)
  if w.kind == 'image_conv':
    return tr.PerceiverForImageClassificationConvProcessing(cfg)
  if w.kind == 'flow':
    return tr.PerceiverForOpticalFlow(cfg)
  if w.kind == 'queries':
    s = w.sizes
    fourier = lambda res: dict(
      num_bands=NUM_BANDS,
      max_resolution=tuple(res),
      concat_pos=True,
      sine_only=False,
    )
    pre = mp.PerceiverImagePreprocessor(
      cfg,
      prep_type='pixels',
      spatial_downsample=1,
      fourier_position_encoding_kwargs=fourier(
        (s['image_size'], s['image_size'])
      ),
    )
    dec = mp.PerceiverBasicDecoder(
      cfg,
      output_num_channels=s['output_channels'],
      position_encoding_type='fourier',
      output_index_dims=tuple(s['grid']),
      num_channels=2 * (2 * NUM_BANDS + 1),
      num_heads=1,
      use_query_residual=False,
      final_project=True,
      fourier_position_encoding_kwargs=fourier(s['grid']),
    )
    return _hf_query_decoding(
      mp.PerceiverModel(cfg, input_preprocessor=pre, decoder=dec)
    )
  raise ValueError(f'unknown workload kind {w.kind!r}.')


def _hf_query_decoding(perceiver):
  """Wraps an HF `PerceiverModel` to decode a 1-D set of subsampled points.

  `PerceiverModel.forward` only accepts subsampled points as the multimodal
  dict (it indexes ['audio'] and ['image']), so this runs the same four steps
  it runs (preprocessor, latents, encoder, decoder_query + decoder) with the
  points passed straight to the basic decoder's `decoder_query`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers as tr  # pylint: disable=g-import-not-at-top

  class QueryDecoding(torch.nn.Module):
    """forward(inputs, subsampled_output_points) -> object with .logits."""

    def __init__(self, model):
      super().__init__()
      self.perceiver = model

    def forward(self, inputs, subsampled_output_points):
      m = self.perceiver
      x, sizes, without_pos = m.input_preprocessor(inputs)
      latents = m.embeddings(batch_size=x.shape[0])
      z = m.encoder(latents, attention_mask=None, inputs=x, inputs_mask=None)[0]
      query = m.decoder.decoder_query(
        x, sizes, without_pos, subsampled_points=subsampled_output_points
      )
      logits = m.decoder(query, z=z).logits
      return tr.modeling_outputs.ModelOutput(logits=logits)

  return QueryDecoding(perceiver)


def torch_flow_patches(frames):
  """[B, 2, H, W, 3] frames -> HF's [B, 2, 27, H, W] 3x3 patches (torch ops).

  Same work as our in-model `extract_flow_patches` (zero pad, 9 shifts);
  channel order (ph, pw, c), the order HF's `PerceiverForOpticalFlow` (and
  the official model) expects (checked in tests/test_benchmarks.py against
  tests/hf_fixtures.flow_patches_numpy).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  b, t, h, w, c = frames.shape
  x = frames.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
  x = F.pad(x, (1, 1, 1, 1))
  shifts = [x[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)]
  patches = torch.stack(shifts, dim=1)  # [BT, 9, C, H, W]: (ph, pw), c.
  return patches.reshape(b, t, 9 * c, h, w)


def hf_model_inputs(w: Workload, data: Dict[str, np.ndarray], device='cpu'):
  """(forward kwargs builder, labels) for HF. The builder runs per call so
  that input-layout work (flow patches) is timed like ours."""
  import torch  # pylint: disable=g-import-not-at-top

  x = torch.from_numpy(np.ascontiguousarray(data['inputs'])).to(device)
  labels = (
    torch.from_numpy(data['labels']).long().to(device)
    if 'labels' in data
    else None
  )
  if w.kind == 'text':
    mask = torch.from_numpy(data['mask']).to(device)
    return (lambda: dict(inputs=x.long(), attention_mask=mask)), labels
  if w.kind in ('image_fourier', 'image_conv'):
    return (lambda: dict(inputs=x.permute(0, 3, 1, 2))), labels
  if w.kind == 'flow':
    return (lambda: dict(inputs=torch_flow_patches(x))), labels
  if w.kind == 'queries':
    pts = torch.from_numpy(data['points']).long().to(device)
    return (
      lambda: dict(inputs=x.permute(0, 3, 1, 2), subsampled_output_points=pts)
    ), labels
  raise ValueError(f'unknown workload kind {w.kind!r}.')


def hf_optimizer(model, fused: bool = False):
  import torch  # pylint: disable=g-import-not-at-top

  return torch.optim.AdamW(
    model.parameters(),
    lr=LEARNING_RATE,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=WEIGHT_DECAY,
    **({'fused': True} if fused else {}),
  )


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------


def time_calls(
  fn: Callable[[], Any],
  repeats: int,
  warmup: int = 1,
  max_seconds: Optional[float] = None,
) -> Dict[str, Any]:
  """Runs `fn` warmup + repeats times; the first (compile) time is kept apart.

  `fn` must block until its work is done. Stops early (with at least one timed
  repeat) once `max_seconds` of timed calls have passed.

  Returns:
    dict with first_s (first call, includes compilation), times_s (the timed
    repeats) and median_s; and, per timed call, the process's CPU seconds in
    user space and in the kernel and its minor page faults (medians:
    cpu_user_s, cpu_sys_s, minor_faults), which tell compute from memory
    management when two implementations' times differ.
  """
  import resource  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    fn()
  times, user, system, faults = [], [], [], []
  start = time.perf_counter()
  for _ in range(repeats):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user.append(r1.ru_utime - r0.ru_utime)
    system.append(r1.ru_stime - r0.ru_stime)
    faults.append(r1.ru_minflt - r0.ru_minflt)
    if max_seconds is not None and time.perf_counter() - start > max_seconds:
      break
  return {
    'first_s': first,
    'times_s': times,
    'median_s': float(np.median(times)),
    'cpu_user_s': float(np.median(user)),
    'cpu_sys_s': float(np.median(system)),
    'minor_faults': int(np.median(faults)),
  }


def peak_rss_bytes() -> int:
  """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
  import resource  # pylint: disable=g-import-not-at-top

  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
  import psutil  # pylint: disable=g-import-not-at-top

  return psutil.Process().memory_info().rss
