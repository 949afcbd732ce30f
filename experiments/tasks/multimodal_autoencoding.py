"""Multimodal autoencoding (task 'multimodal_autoencoding'): video + audio +
label in, all three out (paper Sec. 4.3, App. I; Kinetics-700 in Tab. 4).

Why its own task: the outputs are dense (every pixel of 16 frames, every
audio sample), so training decodes a random subset of output points per
example and the loss mixes three modalities, while evaluation must decode
every output without holding them all at once.

Inputs as the official colab feeds them: video [B, T, H, W, 3] in [0, 1]
(uint8 / 255; batches carry uint8 to keep host memory small), audio
[B, S] in [-1, 1] (the preprocessor cuts it into patches of
`samples_per_patch`), the label one-hot, zeroed and replaced by the learned
mask token where it is masked.

Training: `data.image_queries` pixels and `data.audio_queries` audio
patches per example, drawn without replacement on the host (a pure
function of seed and stream position, so resume is exact) and passed as
per-example `subsampled_output_points` [B, n]; the label is masked for a
`data.label_mask_rate` fraction of examples (explicit `input_masks`, the
draw the official preprocessor makes with mask_probs); loss per example =
`loss.video` x L1(pixels) + `loss.audio` x L1(audio) + `loss.label` x CE
(`loss.error='l2'`: squared errors; L1's optimum is the median pixel, the
background, which a young model cannot leave: configs' cpu variant).

Evaluation: the label is always masked (the model is a classifier, as the
colab runs it); the clip is encoded once and decoded in chunks of output
points (`model.query_chunk_size` pixels, default 6,272: the colab's 128
chunks at full size, with the audio patches spread over the same number of
chunks), with the official point positions `-1 + 2 i / n` that training
uses. Metrics per clip, averaged over clips: PSNR = 10 log10(peak^2 / MSE)
of the clipped reconstruction (video in [0, 1], audio in [-1, 1]; peak 1),
top-1/top-5, and the trivial baselines: each clip's own mean frame for every
frame (all that does not move), its mean colour for every pixel, silence for
the audio, chance for the label.
"""

import functools
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import host_data
from experiments import process_tuning
from experiments import progress as eval_progress
from experiments import sharding
from experiments.tasks import base
from experiments.tasks import multimodal_files
from experiments.tasks import multimodal_stream

# Pixels decoded per chunk when model.query_chunk_size is 0: the official
# colab's 128 chunks of a 16 x 224 x 224 clip.
DEFAULT_PIXELS_PER_CHUNK = 6272


def psnr(mse, peak: float = 1.0):
  """10 log10(peak^2 / mse), capped at 100 dB (an exact reconstruction)."""
  mse = np.maximum(np.asarray(mse, np.float64), peak**2 * 1e-10)
  return 10.0 * np.log10(peak**2 / mse)


def model_shapes(model_config: Dict[str, Any]) -> Dict[str, Any]:
  """Clip shape, patching and class count of a multimodal model config."""
  if model_config['decoder'].get('type') != 'multimodal' or set(
    model_config['decoder'].get('modalities', {})
  ) != {'audio', 'image', 'label'}:
    raise ValueError(
      "task 'multimodal_autoencoding' needs a model with a multimodal "
      'decoder over audio, image and label (preset '
      f'multimodal_autoencoding); this one has '
      f'{model_config["decoder"].get("type")!r}.'
    )
  pre = model_config['preprocessor']['modalities']
  dec = model_config['decoder']['modalities']
  frames, height, width = (int(d) for d in dec['image']['output_index_dims'])
  patches = int(dec['audio']['output_index_dims'][0])
  spp = int(pre['audio']['samples_per_patch'])
  return dict(
    num_frames=frames,
    height=height,
    width=width,
    pixels=frames * height * width,
    audio_patches=patches,
    samples_per_patch=spp,
    audio_samples=patches * spp,
    num_classes=int(pre['label']['num_classes']),
  )


_ERRORS = {'l1': jnp.abs, 'l2': jnp.square}


class _TrainStream:
  """This process's rows of global batch `step`: its shards' clips
  (`multimodal_stream.py`) plus each example's query points and label
  mask."""

  def __init__(self, task: 'Task'):
    self.task, self.clips = task, task.train_clips()

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    batch = self.task.stack(self.clips.clips(step))
    extras = [self.task.train_draws(p) for p in self.clips.positions(step)]
    for key in extras[0]:
      batch[key] = np.stack([e[key] for e in extras])
    return batch


class Task(base.Task):
  """Video + audio + label autoencoding: L1/L1/CE, PSNR and top-k."""

  eval_unit = 'clip'
  predict_args = 'CLIP.mp4 --output=reconstruction/'

  def __init__(self, config):
    super().__init__(config)
    self._sources = {}
    self._train_clips = None

  def num_outputs(self) -> Optional[int]:
    # The label modality's size: models.model_config passes it to the preset.
    return int(self.config.data.num_classes)

  def use_model(self, model_config: Dict[str, Any]) -> None:
    super().use_model(model_config)
    self.shapes = model_shapes(model_config)
    if self.shapes['height'] != self.shapes['width']:
      raise ValueError(
        f'multimodal clips are square; the model decodes '
        f'{self.shapes["height"]}x{self.shapes["width"]} frames.'
      )
    classes = int(self.config.data.num_classes)
    if classes != self.shapes['num_classes']:
      raise ValueError(
        f'config.data.num_classes={classes} but the model has '
        f'{self.shapes["num_classes"]} label classes; set '
        f'--config.data.num_classes={self.shapes["num_classes"]} (or '
        'train a new model, which takes data.num_classes).'
      )

  # ------------------------------------------------------------------ data --

  def source(self, split: str, shard: int = 0, shards: int = 1):
    """Shard `shard` of `shards` of the clips of `split` ('train' or
    'eval'), opened once."""
    if (split, shard, shards) not in self._sources:
      from perceiver_io.data import video  # pylint: disable=g-import-not-at-top

      d = self.config.data
      self._sources[split, shard, shards] = video.open_source(
        str(d.eval_source or d.source) if split == 'eval' else str(d.source),
        split=str(d.eval_split if split == 'eval' else d.train_split),
        num_frames=self.shapes['num_frames'],
        size=self.shapes['height'],
        sample_rate=int(d.sample_rate),
        audio_samples=self.shapes['audio_samples'],
        num_classes=self.shapes['num_classes'],
        on_bad=str(d.on_bad),
        short=str(d.short),
        workers=int(d.num_workers),
        seed=int(self.config.seed),
        process_index=shard,
        process_count=shards,
      )
    return self._sources[split, shard, shards]

  def train_clips(self) -> multimodal_stream.ShardedClips:
    """This process's shards of the training split, opened once."""
    if self._train_clips is None:
      self._train_clips = multimodal_stream.ShardedClips(
        lambda j, count: self.source('train', j, count),
        batch_size=int(self.config.batch_size),
        requested_shards=int(self.config.data.get('num_shards', 0) or 0),
        seed=int(self.config.seed),
        num_workers=int(self.config.data.num_workers),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
    return self._train_clips

  def _query_counts(self) -> Tuple[int, int]:
    d = self.config.data
    counts = int(d.image_queries), int(d.audio_queries)
    if min(counts) < 1:
      raise ValueError(
        f'data.image_queries and data.audio_queries must be >= 1; got '
        f'{counts[0]} and {counts[1]}.'
      )
    return (
      min(counts[0], self.shapes['pixels']),
      min(counts[1], self.shapes['audio_patches']),
    )

  def data_info(self):
    rate = float(self.config.data.label_mask_rate)
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f'data.label_mask_rate must be in [0, 1], got {rate}.')
    self._query_counts()
    if int(self.config.batch_size) % jax.process_count():
      raise ValueError(
        f'batch_size {self.config.batch_size} must be divisible by the '
        f'number of processes {jax.process_count()}.'
      )
    train, (evaluation, eval_sizes) = self.train_clips(), self.eval_source()
    total = train.total()
    summary = multimodal_stream.summary(
      str(self.config.data.source), train, total
    )
    return (
      {
        'num_examples': total,
        'label_names': list(train.first.label_names),
        'summary': f'train: {summary}; eval: {evaluation.summary.rstrip(".")}',
      },
      {'num_examples': sum(eval_sizes), 'label_names': []},
    )

  def stack(self, clips: Sequence[Dict[str, Any]]) -> Dict[str, np.ndarray]:
    """Clips -> a batch (video stays uint8 until the model call)."""
    return {
      'video': np.stack([np.asarray(c['video'], np.uint8) for c in clips]),
      'audio': np.stack([np.asarray(c['audio'], np.float32) for c in clips]),
      'label': np.asarray([int(c['label']) for c in clips], np.int32),
      'weight': np.ones(len(clips), np.float32),
    }

  def train_draws(self, position: int) -> Dict[str, np.ndarray]:
    """Query points and the label mask of training stream `position`."""
    rng = np.random.default_rng([int(self.config.seed), 11, position])
    images, audio = self._query_counts()
    rate = float(self.config.data.label_mask_rate)
    return {
      'image_points': rng.choice(
        self.shapes['pixels'], images, replace=False
      ).astype(np.int32),
      'audio_points': rng.choice(
        self.shapes['audio_patches'], audio, replace=False
      ).astype(np.int32),
      'label_mask': np.asarray(rng.random() < rate),
    }

  def example_batch(self) -> Dict[str, np.ndarray]:
    s = self.shapes
    clip = {
      'video': np.zeros((s['num_frames'], s['height'], s['width'], 3)),
      'audio': np.zeros(s['audio_samples']),
      'label': 0,
    }
    batch = self.stack([clip])
    batch.update({k: v[None] for k, v in self.train_draws(0).items()})
    return batch

  def train_stream(self, start_step: int):
    del start_step  # Batches are a pure function of the step.
    return _TrainStream(self)

  # ----------------------------------------------------- traced functions --

  def model_inputs(self, batch):
    """The model call; the label is masked where 'label_mask' says, and
    everywhere when the batch has none (evaluation, prediction)."""
    mask = batch.get('label_mask')
    if mask is None:
      mask = jnp.ones(batch['label'].shape, bool)
    mask = jnp.asarray(mask).astype(bool)
    label = jax.nn.one_hot(batch['label'], self.shapes['num_classes'])
    inputs = {
      'image': jnp.asarray(batch['video']).astype(jnp.float32) / 255.0,
      'audio': jnp.asarray(batch['audio'], jnp.float32),
      'label': jnp.where(mask[:, None], 0.0, label),
    }
    kwargs = {'input_masks': {'label': mask}}
    if 'image_points' in batch:
      kwargs['subsampled_output_points'] = {
        'image': batch['image_points'],
        'audio': batch['audio_points'],
        'label': None,
      }
    return inputs, kwargs

  def targets(self, batch):
    """Video [B, pixels, 3] in [0, 1] and audio [B, patches, spp]."""
    b = batch['video'].shape[0]
    video = batch['video'].reshape(b, -1, 3).astype(jnp.float32) / 255.0
    audio = batch['audio'].reshape(b, -1, self.shapes['samples_per_patch'])
    return video, audio

  def loss_fn(self, outputs, batch):
    """Weighted L1 on the subsampled pixels and audio patches, plus CE."""
    video, audio = self.targets(batch)
    video = jnp.take_along_axis(video, batch['image_points'][..., None], 1)
    audio = jnp.take_along_axis(audio, batch['audio_points'][..., None], 1)
    b = video.shape[0]
    pred_audio = outputs['audio'].astype(jnp.float32).reshape(audio.shape)
    error = _ERRORS[str(self.config.loss.get('error', 'l1'))]
    l1_video = error(outputs['image'].astype(jnp.float32) - video)
    l1_audio = error(pred_audio - audio)
    ce = optax.softmax_cross_entropy_with_integer_labels(
      outputs['label'].astype(jnp.float32), batch['label']
    )
    w = self.config.loss
    loss = (
      float(w.video) * l1_video.reshape(b, -1).mean(-1)
      + float(w.audio) * l1_audio.reshape(b, -1).mean(-1)
      + float(w.label) * ce
    )
    return loss * batch['weight'], batch['weight']

  # ------------------------------------------------------------ evaluation --

  def chunking(self) -> Tuple[int, int, int]:
    """(chunks, pixels per chunk, audio patches per chunk)."""
    s = self.shapes
    pixels = int(self.config.model.get('query_chunk_size', 0) or 0)
    pixels = min(pixels or DEFAULT_PIXELS_PER_CHUNK, s['pixels'])
    chunks = math.ceil(s['pixels'] / pixels)
    return chunks, pixels, math.ceil(s['audio_patches'] / chunks)

  def decode_all(self, model, variables, batch, keep_outputs: bool):
    """Encodes once, decodes every output chunk by chunk (traced).

    Returns per-example sums of squared and absolute errors of the clipped
    reconstruction, the label logits and (keep_outputs) the reconstruction.
    """
    s = self.shapes
    chunks, pixel_chunk, audio_chunk = self.chunking()
    inputs, kwargs = self.model_inputs(batch)
    z, pre = model.apply(variables, inputs, **kwargs, method='encode')
    video, audio = self.targets(batch)

    def one_chunk(carry, i):
      points, valid = {}, {}
      for name, size, total in (
        ('image', pixel_chunk, s['pixels']),
        ('audio', audio_chunk, s['audio_patches']),
      ):
        idx = i * size + jnp.arange(size)
        valid[name] = (idx < total).astype(jnp.float32)
        points[name] = jnp.minimum(idx, total - 1)
      out = model.apply(
        variables,
        z,
        pre,
        subsampled_output_points={**points, 'label': None},
        method='decode',
      )
      pred_v = jnp.clip(out['image'].astype(jnp.float32), 0.0, 1.0)
      pred_a = (
        out['audio']
        .astype(jnp.float32)
        .reshape(pred_v.shape[0], audio_chunk, s['samples_per_patch'])
      )
      pred_a = jnp.clip(pred_a, -1.0, 1.0)
      err_v = (pred_v - video[:, points['image']]) * valid['image'][:, None]
      err_a = (pred_a - audio[:, points['audio']]) * valid['audio'][:, None]
      sums = {
        'video_se': jnp.sum(err_v**2, (1, 2)),
        'video_ae': jnp.sum(jnp.abs(err_v), (1, 2)),
        'audio_se': jnp.sum(err_a**2, (1, 2)),
        'audio_ae': jnp.sum(jnp.abs(err_a), (1, 2)),
      }
      carry = {k: carry[k] + v for k, v in sums.items()}
      carry['label'] = out['label'].astype(jnp.float32)
      kept = (pred_v, pred_a) if keep_outputs else None
      return carry, kept

    b = video.shape[0]
    zeros = jnp.zeros((b,), jnp.float32)
    init = {k: zeros for k in ('video_se', 'video_ae', 'audio_se', 'audio_ae')}
    init['label'] = jnp.zeros((b, s['num_classes']), jnp.float32)
    sums, kept = jax.lax.scan(one_chunk, init, jnp.arange(chunks))
    if not keep_outputs:
      return sums, None
    pred_v, pred_a = kept  # [chunks, B, chunk, ...]
    pred_v = pred_v.swapaxes(0, 1).reshape(b, -1, 3)[:, : s['pixels']]
    pred_a = pred_a.swapaxes(0, 1).reshape(b, -1)[:, : s['audio_samples']]
    recon = {
      'video': pred_v.reshape(b, s['num_frames'], s['height'], s['width'], 3),
      'audio': pred_a,
    }
    return sums, recon

  def eval_outputs_full(self, model, variables, batch):
    """Per-example sums for the metrics of `summarize` (traced)."""
    sums, _ = self.decode_all(model, variables, batch, keep_outputs=False)
    video, audio = self.targets(batch)
    b = video.shape[0]
    frames = video.reshape(b, self.shapes['num_frames'], -1, 3)
    mean_frame = frames.mean(1, keepdims=True)
    logits = sums.pop('label')
    label = batch['label']
    rank = jnp.sum(logits > jnp.take_along_axis(logits, label[:, None], 1), 1)
    return {
      **sums,
      'video_se_mean_frame': jnp.sum((frames - mean_frame) ** 2, (1, 2, 3)),
      'video_se_mean_colour': jnp.sum(
        (frames - frames.mean((1, 2), keepdims=True)) ** 2, (1, 2, 3)
      ),
      'audio_se_silence': jnp.sum(audio**2, (1, 2)),
      'ce': optax.softmax_cross_entropy_with_integer_labels(logits, label),
      'top1': (rank < 1).astype(jnp.float32),
      'top5': (rank < 5).astype(jnp.float32),
      'weight': batch['weight'].astype(jnp.float32),
    }

  def eval_source(self):
    """This process's share of the eval clips, and every process's count."""
    index, count = jax.process_index(), jax.process_count()
    source = self.source('eval', index, count)
    return source, host_data.process_counts(len(source))

  def eval_data(self):
    """This process's eval clips (of the fixed subset with max_eval_examples
    that tables use, drawn over the processes' shares in process order),
    padded with weight-0 rows to the batch count of the busiest process."""
    source, sizes = self.eval_source()
    count = jax.process_count()
    shares, total = host_data.eval_plan(
      sizes, int(self.config.max_eval_examples)
    )
    local = int(self.config.eval_batch_size) // count
    mine = shares[jax.process_index()]
    num_batches = max(math.ceil(len(rows) / local) for rows in shares)

    def batches():
      for b in range(num_batches):
        rows = [int(r) for r in mine[b * local : (b + 1) * local]]
        pad = local - len(rows)
        batch = self.stack([source[r] for r in rows + [0] * pad])
        batch['weight'] = np.asarray(
          [1.0] * len(rows) + [0.0] * pad, np.float32
        )
        yield batch

    return batches(), total

  def evaluate(self, eval_step, state, mesh, model=None) -> Dict[str, Any]:
    """Every output of every eval clip, decoded in chunks (`decode_all`)."""
    del eval_step  # The full decoding needs the model's two halves.
    if model is None:
      raise ValueError('multimodal evaluation needs the model.')
    variables = {'params': state['params'], **state['model_state']}
    # Per-clip sums gathered on every host (the batch spans all processes).
    step = jax.jit(
      functools.partial(self.eval_outputs_full, model),
      out_shardings=sharding.replicated(mesh),
    )
    gathered = {}
    batches, expected = self.eval_data()
    with eval_progress.EvalProgress(
      self.config, expected, self.eval_unit
    ) as progress:
      for local in batches:
        out = sharding.to_host(
          step(variables, sharding.global_batch(local, mesh))
        )
        process_tuning.settle_host_memory()
        for key, value in out.items():
          gathered.setdefault(key, []).append(np.asarray(value))
        progress.update(int(np.sum(np.asarray(out['weight']) > 0)))
    return self.summarize({k: np.concatenate(v) for k, v in gathered.items()})

  def summarize(self, gathered):
    """Per-clip PSNRs averaged over clips; top-1/5 and chance; the loss."""
    s = self.shapes
    real = gathered['weight'] > 0
    g = {k: np.asarray(v, np.float64)[real] for k, v in gathered.items()}
    pixels, samples = s['pixels'] * 3, s['audio_samples']
    w = self.config.loss
    e = 'se' if str(w.get('error', 'l1')) == 'l2' else 'ae'
    loss = (
      float(w.video) * g[f'video_{e}'] / pixels
      + float(w.audio) * g[f'audio_{e}'] / samples
      + float(w.label) * g['ce']
    )
    mean = lambda x: float(np.mean(x)) if len(x) else float('nan')
    return {
      'video_psnr': mean(psnr(g['video_se'] / pixels)),
      'audio_psnr': mean(psnr(g['audio_se'] / samples)),
      'video_psnr_mean_frame': mean(psnr(g['video_se_mean_frame'] / pixels)),
      'video_psnr_mean_colour': mean(psnr(g['video_se_mean_colour'] / pixels)),
      'audio_psnr_silence': mean(psnr(g['audio_se_silence'] / samples)),
      'top1': mean(g['top1']),
      'top5': mean(g['top5']),
      'top1_chance': 1.0 / s['num_classes'],
      'loss': mean(loss),
      'num_examples': int(real.sum()),
    }

  def eval_data_description(self) -> str:
    d = self.config.data
    return f'source {d.eval_source or d.source}, split {d.eval_split}'

  # ------------------------------------------------------------ prediction --

  def reconstruct(self, model, variables, clip) -> Dict[str, np.ndarray]:
    """One clip -> reconstruction (video [T, H, W, 3], audio [S]) and
    logits, with the label masked."""
    batch = self.stack([clip])
    fn = jax.jit(lambda v, b: self.decode_all(model, v, b, keep_outputs=True))
    sums, recon = jax.device_get(fn(variables, batch))
    return {
      'video': np.asarray(recon['video'][0]),
      'audio': np.asarray(recon['audio'][0]),
      'logits': np.asarray(sums['label'][0]),
    }

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    info: Optional[Dict[str, Any]] = None,
    output: str = '',
    top_k: int = 0,
    pairs=None,
    **unused,
  ) -> List[str]:
    """Clip files -> reconstruction GIF + WAV, side-by-side PNG, top-k.

    Every clip is decoded (and refused with one line if it cannot be)
    before anything is written; files go to the folder `output` (default:
    the current directory) as <clip name>_reconstruction.gif/.wav and
    <clip name>_frames.png.
    """
    base.refuse_pairs(pairs, name)
    if not inputs:
      raise ValueError('give one or more video clips (mp4, webm, avi, ...).')
    folder = output or '.'
    if os.path.exists(folder) and not os.path.isdir(folder):
      raise ValueError(f'--output {folder} is a file; give a folder.')
    from perceiver_io.data import video  # pylint: disable=g-import-not-at-top

    s = self.shapes
    clips = [
      video.read_clip(
        path,
        num_frames=s['num_frames'],
        size=s['height'],
        sample_rate=int(self.config.data.sample_rate),
        audio_samples=s['audio_samples'],
        short=str(self.config.data.short),
      )
      for path in inputs
    ]
    names = list((info or {}).get('label_names') or [])
    k = min(int(top_k) or 5, s['num_classes'])
    os.makedirs(folder, exist_ok=True)
    lines = []
    for path, clip in zip(inputs, clips):
      out = self.reconstruct(model, variables, clip)
      stem = os.path.join(folder, os.path.splitext(os.path.basename(path))[0])
      written = multimodal_files.write_reconstruction(
        stem, clip, out, rate=int(self.config.data.sample_rate)
      )
      v_mse = np.mean((clip['video'] / 255.0 - out['video']) ** 2)
      a_mse = np.mean((clip['audio'] - out['audio']) ** 2)
      lines.append(
        f'{path}: video PSNR {float(psnr(v_mse)):.2f} dB, audio PSNR '
        f'{float(psnr(a_mse)):.2f} dB'
      )
      probs = jax.nn.softmax(out['logits'])
      for c in np.argsort(-out['logits'])[:k]:
        label = names[c] if c < len(names) else f'class {c}'
        lines.append(f'  {label}: {float(probs[c]):.4f}')
      lines += [f'  wrote {p}' for p in written]
    return lines
