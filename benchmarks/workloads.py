"""The benchmark workloads: sizes both implementations understand, and inputs.

Why this module exists: a side-by-side benchmark is only honest when both
sides do the same arithmetic. Each workload here is defined once by its sizes;
`workloads_ours` turns the sizes into our preset config and `workloads_hf`
into the `transformers.PerceiverConfig` + class that has the same parameters
(the workers report both parameter counts and the drivers refuse to compare
when they differ). Inputs are generated from the same NumPy seed for both
sides; ours take channels-last images and raw frame pairs, HF channels-first
images and 27-channel flow patches (extracted inside HF's timed function,
since our model extracts them inside its forward).

Nothing here imports jax or torch, so a worker process that runs one side
never loads the other framework (its peak RSS stays its own).

Like-for-like choices (both sides):
* attention dropout 0 (HF's config defaults to 0.1; our presets have none);
* exact erf GELU (HF's `hidden_act='gelu'`; ours `gelu_approximate=False`);
* the conv preprocessor in HF's variant (`conv_hf_compat=True`: 55x55
  elements, as HF computes);
* AdamW, lr 1e-4, weight decay 0.01, betas (0.9, 0.999), eps 1e-8.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

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
