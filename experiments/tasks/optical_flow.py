"""Optical flow (task 'optical_flow'): data, loss, EPE, tiling, predict.

Why its own task: flow training reads no files (pairs are rendered on the
fly by `perceiver_io.flow.synthetic`, an AutoFlow-style generator, and
augmented consistently with their ground truth), the loss is the end-point
error on valid pixels only, and the benchmark evaluation runs full frames
(Sintel 436x1024, KITTI ~375x1242) through overlapping model-sized tiles
with distance-weighted blending.

Units (one convention everywhere): the model's output is the official
network output, i.e. the same quantity as HuggingFace's
`PerceiverForOpticalFlow` logits, which the official colab multiplies by
FLOW_SCALE_FACTOR = 20 to get pixels (the AutoFlow/RAFT training code
divided its targets by 20; deepmind-research issue #266). So
`flow_pixels = output * config.model.flow_scale` (20), and the loss and all
metrics are in pixels; an imported official checkpoint therefore predicts
pixels with no further factor.

Frames are fed as [B, 2, H, W, 3] in [-1, 1] (x / 127.5 - 1, as the colab).

Curriculum (`config.data.plain_fraction`): the first fraction of the steps
uses un-augmented pairs in both orders (forward pair, then the same scene
reversed with its exact backward flow), the rest uses photometric + spatial
augmentation. The reference names a no-augmentation phase with forward and
backward pairs but not its length or place; we put it first (easy examples
first) and make its length a config field.

Evaluation sources (`config.data.eval_source`):
  'generated'             pairs rendered at the model size from indices
                          never used for training (no tiling needed);
  'sintel:<root>'         MPI-Sintel training, clean and final reported
                          separately ('sintel_clean:'/'sintel_final:' one);
  'kitti:<root>'          KITTI 2012/2015 training (flow_occ), EPE + Fl-all;
  'middlebury:<root>', 'chairs:<root>'.
Directory sources, and the frames given to predict, go through tiled
inference at the model's size: `flow_full_frame.FullFrameFlow`, which this
task inherits, with the metrics' conventions.
"""

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import steps
from experiments.tasks import base
from experiments.tasks import flow_full_frame
from perceiver_io import model as model_lib
from perceiver_io.flow import augment
from perceiver_io.flow import formats as flow_formats
from perceiver_io.flow import metrics as flow_metrics
from perceiver_io.flow import synthetic
from perceiver_io.flow import tiling
from perceiver_io.flow import viz

_DIR_KINDS = (
  'sintel',
  'sintel_clean',
  'sintel_final',
  'kitti',
  'middlebury',
  'chairs',
)


@dataclasses.dataclass(frozen=True)
class GeneratorSettings:
  """Everything a (possibly separate) worker process needs to make samples."""

  seed: int
  num_examples: int
  train_size: Tuple[int, int]
  render_size: Tuple[int, int]
  synthetic_config: synthetic.SyntheticFlowConfig
  photometric: Optional[augment.PhotometricConfig]
  spatial: Optional[augment.SpatialConfig]


def _centre_crop(sample, size):
  height, width = sample['frame1'].shape[:2]
  top, left = (height - size[0]) // 2, (width - size[1]) // 2
  return augment.crop_sample(sample, top, left, size)


def make_train_sample(
  settings: GeneratorSettings, position: int, plain: bool
) -> Dict[str, np.ndarray]:
  """Training example at stream `position` (a pure function of its inputs).

  Plain (curriculum) positions alternate forward and backward orders of the
  same scene and are centre-cropped; others are augmented with an rng of
  (seed, position), so every epoch sees new augmentations.
  """
  if plain:
    index, backward = (position // 2) % settings.num_examples, position % 2 == 1
  else:
    index, backward = position % settings.num_examples, False
  sample = synthetic.sample_at(
    settings.seed,
    index,
    *settings.render_size,
    config=settings.synthetic_config,
    backward=backward,
  )
  if plain or (settings.photometric is None and settings.spatial is None):
    sample = _centre_crop(sample, settings.train_size)
  else:
    rng = np.random.default_rng([settings.seed, 7, position])
    sample = augment.augment_sample(
      rng, sample, settings.photometric, settings.spatial
    )
    if settings.spatial is None:
      sample = _centre_crop(sample, settings.train_size)
  return {
    'image': flow_full_frame.normalize_frames(
      sample['frame1'], sample['frame2']
    ),
    'flow': sample['flow'].astype(np.float32),
    'valid': sample['valid'].astype(np.float32),
  }


def _make_train_sample_star(args):
  return make_train_sample(*args)


def stack_samples(
  samples: Sequence[Dict[str, np.ndarray]],
) -> Dict[str, np.ndarray]:
  out = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
  out['weight'] = np.ones(len(samples), np.float32)
  return out


class _TrainStream:
  """This process's rows of global batch `step` (any order of steps)."""

  def __init__(self, task: 'Task', start_step: int):
    del start_step  # Batches are a pure function of the step.
    self.task = task
    self.settings = task.generator_settings()
    workers = int(task.config.data.num_workers)
    self._pool = None
    if workers > 0:  # 'spawn': forking a process that runs JAX can hang.
      self._pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn')
      )

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    global_batch = int(self.task.config.batch_size)
    count = jax.process_count()
    local = global_batch // count
    first = step * global_batch + jax.process_index() * local
    plain = step < self.task.plain_steps()
    args = [(self.settings, first + i, plain) for i in range(local)]
    if self._pool is None:
      samples = [make_train_sample(*a) for a in args]
    else:
      samples = list(self._pool.map(_make_train_sample_star, args))
    return stack_samples(samples)


class Task(flow_full_frame.FullFrameFlow, base.Task):
  """Flow of frame pairs, in pixels: generated training pairs, EPE."""

  eval_unit = 'pair'
  predict_args = 'FRAME1.png FRAME2.png --output=flow.flo'

  def __init__(self, config):
    super().__init__(config)
    self.flow_scale = float(config.model.flow_scale)

  def use_model(self, model_config: Dict[str, Any]) -> None:
    """Takes the tile size (the model's frame size) from the model."""
    super().use_model(model_config)
    if model_config['decoder'].get('type') != 'flow':
      raise ValueError(
        f"task 'optical_flow' needs a model with a flow decoder; this one "
        f'has {model_config["decoder"].get("type")!r} (model '
        f'{model_config.get("name")!r}).'
      )
    shape = model_lib.example_inputs(model_config)[0].shape
    self.train_size = (int(shape[2]), int(shape[3]))

  # ------------------------------------------------------------------ data --

  def _render_size(self) -> Tuple[int, int]:
    d = self.config.data
    height = int(d.render_height) or self.train_size[0]
    width = int(d.render_width) or self.train_size[1]
    if height < self.train_size[0] or width < self.train_size[1]:
      raise ValueError(
        f'data.render_height/width {height}x{width} must be at '
        f'least the model size {self.train_size[0]}x'
        f'{self.train_size[1]}.'
      )
    return height, width

  def synthetic_config(self) -> synthetic.SyntheticFlowConfig:
    scale = float(self.config.data.motion_scale)
    base = synthetic.SyntheticFlowConfig()
    return dataclasses.replace(
      base,
      max_translation=base.max_translation * scale,
      background_max_translation=base.background_max_translation * scale,
    )

  def generator_settings(self) -> GeneratorSettings:
    d = self.config.data
    if d.source != 'generated':
      raise ValueError(
        f"optical flow trains on data.source='generated' (the "
        f'procedural generator); got {d.source!r}.'
      )
    photometric = spatial = None
    if bool(d.augment):
      photometric = augment.PhotometricConfig()
      spatial = augment.SpatialConfig(crop_size=self.train_size)
    return GeneratorSettings(
      seed=int(self.config.seed),
      num_examples=int(d.num_train_examples),
      train_size=self.train_size,
      render_size=self._render_size(),
      synthetic_config=self.synthetic_config(),
      photometric=photometric,
      spatial=spatial,
    )

  def plain_steps(self) -> int:
    """Training steps of the curriculum's un-augmented phase."""
    fraction = float(self.config.data.plain_fraction)
    if not 0.0 <= fraction <= 1.0:
      raise ValueError(
        f'data.plain_fraction must be in [0, 1], got {fraction}.'
      )
    num_steps = steps.total_steps(
      self.config, int(self.config.data.num_train_examples)
    )
    return int(round(fraction * num_steps))

  def data_info(self):
    settings = self.generator_settings()  # Validates the data fields.
    if settings.num_examples < 1:
      raise ValueError('data.num_train_examples must be >= 1.')
    if int(self.config.batch_size) % jax.process_count():
      raise ValueError(
        f'batch_size {self.config.batch_size} must be divisible '
        f'by the number of processes {jax.process_count()}.'
      )
    self._eval_spec()  # Validates the eval source before anything is written.
    flow_full_frame.check_tile_overlap(
      self.config.eval_tile_overlap, self.train_size
    )
    return (
      {
        'num_examples': settings.num_examples,
        'label_names': [],
        'summary': self.data_summary(settings),
      },
      {'num_examples': -1, 'label_names': []},
    )

  def data_summary(self, settings: GeneratorSettings) -> str:
    """The log line's data: what is trained on and what the eval set is."""
    (height, width), (crop_h, crop_w) = settings.render_size, self.train_size
    train = (
      f'{settings.num_examples} generated pairs per epoch ({height}x{width}, '
      f'cropped to {crop_h}x{crop_w})'
    )
    kind, where = self._eval_spec()
    if kind != 'generated':
      return f'{train}; eval: every frame pair of {kind} folder {where}'
    count = int(where or self.config.data.num_eval_examples)
    limit = int(self.config.max_eval_examples)
    count = min(count, limit) if limit > 0 else count
    return f'{train}; eval: {count} other generated pairs (not trained on)'

  def example_batch(self) -> Dict[str, np.ndarray]:
    return {'image': np.zeros((1, 2) + self.train_size + (3,), np.float32)}

  def train_stream(self, start_step: int):
    return _TrainStream(self, start_step)

  # ----------------------------------------------------- traced functions --

  def _errors(self, outputs, batch):
    pred = outputs.astype(jnp.float32) * self.flow_scale
    diff = pred - batch['flow']
    # The epsilon keeps the gradient finite where the prediction is exact.
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-12)

  def loss_fn(self, outputs, batch):
    """(sum of EPE over valid pixels, number of valid pixels) per example."""
    valid = batch['valid'] * batch['weight'][:, None, None]
    epe = self._errors(outputs, batch)
    return jnp.sum(epe * valid, axis=(1, 2)), jnp.sum(valid, axis=(1, 2))

  def eval_outputs(self, outputs, batch):
    valid = batch['valid'] * batch['weight'][:, None, None]
    epe = self._errors(outputs, batch)
    magnitude = jnp.sqrt(jnp.sum(batch['flow'] ** 2, axis=-1))
    outlier = (epe > 3.0) & (epe > 0.05 * magnitude)
    return {
      'epe': jnp.sum(epe * valid, axis=(1, 2)),
      'fl_all': jnp.sum(outlier * valid, axis=(1, 2)),
      'epe_zero_flow': jnp.sum(magnitude * valid, axis=(1, 2)),
      'count': jnp.sum(valid, axis=(1, 2)),
      'weight': batch['weight'],
    }

  # ------------------------------------------------------------ evaluation --

  def _eval_spec(self) -> Tuple[str, str]:
    source = str(self.config.data.eval_source)
    if source.startswith('generated'):
      _, _, count = source.partition(':')
      if count and not count.isdigit():
        raise ValueError(
          f"data.eval_source 'generated[:<count>]' needs an "
          f'integer count; got {source!r}.'
        )
      return 'generated', count
    kind, _, root = source.partition(':')
    if kind not in _DIR_KINDS or not root:
      raise ValueError(
        f"unknown data.eval_source {source!r}; use 'generated' "
        f'or <kind>:<folder> with kind in {_DIR_KINDS}.'
      )
    if not os.path.isdir(root):
      raise FileNotFoundError(f'data.eval_source folder not found: {root}')
    return kind, root

  def eval_data_description(self) -> str:
    """A benchmark folder's listing involves no split: 'source <kind:dir>'."""
    source = str(self.config.data.get('eval_source', '') or '')
    if source and not source.startswith('generated'):
      return f'source {source}'
    return super().eval_data_description()

  def evaluate(self, eval_step, state, mesh, model=None) -> Dict[str, float]:
    """Generated pairs through `eval_step`; a benchmark folder tiled."""
    kind, where = self._eval_spec()
    if kind == 'generated':
      return super().evaluate(eval_step, state, mesh, model)
    if model is None:
      raise ValueError('directory evaluation needs the model.')
    variables = jax.device_get(
      {'params': state['params'], **state['model_state']}
    )
    return self.evaluate_directory(model, variables, kind, where)

  def generated_eval_samples(self, count: int):
    """Un-augmented pairs at the model size, indices after the training set."""
    return [self.generated_eval_sample(i) for i in range(count)]

  def generated_eval_sample(self, i: int):
    """Eval pair `i` (a pure function of the index, so each process makes
    only its own)."""
    settings = self.generator_settings()
    s = synthetic.sample_at(
      settings.seed,
      settings.num_examples + i,
      *self.train_size,
      config=settings.synthetic_config,
    )
    return {
      'image': flow_full_frame.normalize_frames(s['frame1'], s['frame2']),
      'flow': s['flow'],
      'valid': s['valid'],
    }

  def eval_data(self):
    """Generated pairs: `data.num_eval_examples` or the count in
    'generated:<count>', at most `max_eval_examples`."""
    _, count_text = self._eval_spec()
    count = int(count_text or self.config.data.num_eval_examples)
    limit = int(self.config.max_eval_examples)
    if limit > 0:
      count = min(count, limit)
    batch_size = int(self.config.eval_batch_size)
    processes, index = jax.process_count(), jax.process_index()
    local = batch_size // processes

    def batches():
      for start in range(0, count, batch_size):
        first = start + index * local
        rows = [min(first + i, count - 1) for i in range(local)]
        made = {r: self.generated_eval_sample(r) for r in set(rows)}
        batch = stack_samples([made[r] for r in rows])
        batch['weight'] = np.array(
          [float(first + i < count) for i in range(local)], np.float32
        )
        yield batch

    return batches(), count

  def summarize(self, gathered):
    """EPE and zero-flow EPE (px) pooled over valid pixels, Fl-all (%)."""
    sums = {k: float(np.sum(v, dtype=np.float64)) for k, v in gathered.items()}
    pixels = max(sums['count'], 1.0)
    return {
      'epe': sums['epe'] / pixels,
      'fl_all': 100.0 * sums['fl_all'] / pixels,
      'epe_zero_flow': sums['epe_zero_flow'] / pixels,
      'num_examples': int(sums['weight']),
    }

  # ------------------------------------------------------------ prediction --

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    output: str = '',
    ground_truth: str = '',
    pad_small: bool = False,
    pairs: Optional[Sequence[Optional[str]]] = None,
    **unused,
  ) -> List[str]:
    """Two frames -> `.flo` + colour-wheel `.png` (+ EPE with ground truth).

    Every input is checked before the model runs, and nothing is written
    unless the prediction succeeded; files are written atomically.

    Args:
      model: the flow model.
      variables: its variables.
      inputs: [frame1, frame2] image paths (RGB, same size).
      name: the workdir or checkpoint (for messages).
      output: the `.flo` path ('' = <frame1 name>_flow.flo in the current
        directory); the PNG goes next to it with the `.png` extension.
      ground_truth: optional `.flo` or KITTI `.png` ground truth.
      pad_small: pad frames smaller than a tile instead of refusing them.
      pairs: refused (sentence pairs are for text models).
    """
    base.refuse_pairs(pairs, name)
    if len(inputs) != 2:
      raise ValueError(
        f'optical flow needs exactly two image files (frame 1 '
        f'and frame 2); got {len(inputs)}.'
      )
    frame1, frame2 = (self.read_frame(p) for p in inputs)
    if frame1.shape != frame2.shape:
      raise ValueError(
        f'the frames have different sizes: {inputs[0]} is '
        f'{frame1.shape[1]}x{frame1.shape[0]}, {inputs[1]} is '
        f'{frame2.shape[1]}x{frame2.shape[0]}; both must be the same size.'
      )
    self._check_tile_fits(frame1.shape, inputs[0], pad_small, '--pad_small')
    gt = valid = None
    if ground_truth:
      gt, valid = self.read_ground_truth(ground_truth)
      if gt.shape[:2] != frame1.shape[:2]:
        raise ValueError(
          f'--ground_truth {ground_truth} is {gt.shape[1]}x'
          f'{gt.shape[0]} but the frames are {frame1.shape[1]}x'
          f'{frame1.shape[0]}.'
        )
    flo_path = output or (
      os.path.splitext(os.path.basename(inputs[0]))[0] + '_flow.flo'
    )
    if not flo_path.lower().endswith('.flo'):
      raise ValueError(f'--output must name a .flo file; got {flo_path!r}.')
    folder = os.path.dirname(os.path.abspath(flo_path))
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'output folder {folder} does not exist.')
    png_path = os.path.splitext(flo_path)[0] + '.png'
    flow = self.full_frame_flow(
      self.make_predict_fn(model, variables), frame1, frame2, pad_small
    )
    flow_formats.write_flo(flo_path, flow)
    viz.save_flow_png(png_path, flow)
    height, width = flow.shape[:2]
    tiles = len(
      tiling.tile_origins(
        (max(height, self.train_size[0]), max(width, self.train_size[1])),
        self.train_size,
        int(self.config.eval_tile_overlap),
      )
    )
    magnitude = np.sqrt(np.sum(flow**2, axis=-1))
    lines = [
      f'{inputs[0]} -> {inputs[1]}: {width}x{height}, {tiles} tile(s) '
      f'of {self.train_size[1]}x{self.train_size[0]}; flow magnitude '
      f'mean {magnitude.mean():.3f} px, max {magnitude.max():.3f} px',
      f'wrote {flo_path}',
      f'wrote {png_path}',
    ]
    if gt is not None:
      m = flow_metrics.flow_metrics(flow, gt, valid)
      zero = flow_metrics.flow_metrics(np.zeros_like(gt), gt, valid)
      lines.append(
        f'EPE {m["epe"]:.4f} px over {int(m["count"])} valid '
        f'pixels (zero-flow EPE {zero["epe"]:.4f} px), Fl-all '
        f'{m["fl_all"]:.2f} %'
      )
    logging.info('predicted flow for %s', inputs[0])
    return lines
