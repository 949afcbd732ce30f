"""ImageNet-style image classification (task 'image_classification').

Why its own task: ImageNet is 1.28M JPEGs, so data must stream through
tf.data (`perceiver_io.data.image`, the official Perceiver pipeline) rather
than sit in a table; the official recipe mixes labels inside the step
(MixUp on half the batch, CutMix on the other half, then label smoothing
0.1); and evaluation reports top-1 and top-5 on a padded, ordered
validation stream.

Data (`config.data`):
  source       'imagenet2012' (TFDS; prepare once with data.manual_dir), any
               'tfds:<name>', a folder ('dir:<path>': <path>/<split>/ if it
               exists, else <path>; class-per-folder or labels.csv), or
               'synthetic:<classes>[:<n>]' (generated, for tests).
  eval_source  '' = `source`; e.g. train on TFDS, evaluate a local val folder.
  class_names  optional CSV/text class list: maps folder names (e.g. wnids)
               to the model's indices and names the classes in predictions.
               TFDS imagenet2012, the official checkpoints and
               the sample data's synsets_all_1000.csv (not in this
               repository: /work/shared/data/imagenet_samples/) all use
               0 = n01440764 (tench) ... 999 = n15075141 (toilet tissue).
               The official code has no -1/+1 label shift (1000 outputs);
               1001-class TF-slim checkpoints need logits[..., 1:].

Images are as large as the model expects (e.g. 224 for the paper presets,
taken from the model config, so an imported checkpoint decides its own
size). Training: Inception crop + flip, RandAugment(layers, magnitude),
bicubic resize, mean/std; evaluation: centre crop 224/256, bicubic, mean/std.
"""

import csv
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import input_pipeline
from experiments import host_data
from experiments.tasks import base
from perceiver_io import mixing
from perceiver_io import model as model_lib
from perceiver_io.data import image as image_data

_NAME_COLUMNS = (
  'name',
  'class_name',
  'name_from_filename',
  'label',
  'wnid',
  'synset',
)


def read_display_names(path: str) -> List[str]:
  """Human-readable class names, in class-index order, from a CSV or text file.

  A CSV needs a header; rows are ordered by `class_index` (or `index`) when
  present, and the names come from the first of the columns name,
  class_name, name_from_filename, label, wnid, synset. Other files: one name
  per non-empty line. Names may repeat (ImageNet has two 'crane's).

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: no usable column, or bad indices.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'class list file not found: {path}')
  if not path.lower().endswith('.csv'):
    with open(path, encoding='utf-8-sig') as f:
      return [line.strip() for line in f if line.strip()]
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    rows = list(reader)
  column = next((c for c in _NAME_COLUMNS if c in fields), None)
  if column is None:
    raise ValueError(
      f'{path}: no class-name column (one of {_NAME_COLUMNS}); '
      f'the header is {fields}.'
    )
  index_column = next(
    (c for c in ('class_index', 'index') if c in fields), None
  )
  if index_column is not None:
    try:
      order = [int(row[index_column]) for row in rows]
    except ValueError as e:
      raise ValueError(
        f'{path}: column {index_column!r} must hold integers: {e}'
      ) from e
    if sorted(order) != list(range(len(rows))):
      raise ValueError(
        f'{path}: column {index_column!r} must list '
        f'0..{len(rows) - 1} once each.'
      )
    rows = [row for _, row in sorted(zip(order, rows), key=lambda p: p[0])]
  return [(row[column] or '').strip() for row in rows]


class _TrainStream:
  """Step-ordered training batches from the tf.data iterator."""

  def __init__(self, iterator, start_step: int):
    self._it = iterator
    self._next_step = start_step

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    if step != self._next_step:
      raise ValueError(
        f'image stream expected step {self._next_step}, got '
        f'{step}; rebuild it with start_step.'
      )
    self._next_step += 1
    b = next(self._it)
    return {
      'image': b['image'],
      'label': b['label'],
      'weight': b['mask'].astype(np.float32),
    }


class Task(base.Task):
  """The ImageNet recipe: streamed images, MixUp/CutMix, top-1 / top-5."""

  eval_unit = 'image'
  predict_args = 'IMAGE.jpg'

  def __init__(self, config):
    super().__init__(config)
    self._first_train = None

  def use_model(self, model_config: Dict[str, Any]) -> None:
    """Takes the classes and the image size from the model (an imported
    checkpoint decides its own)."""
    super().use_model(model_config)
    decoder = model_config['decoder']
    if decoder.get('type') != 'classification':
      raise ValueError(
        f"task 'image_classification' needs a model with a classification "
        f'decoder; this one has {decoder.get("type")!r} (model '
        f'{model_config.get("name")!r}).'
      )
    self.num_classes = int(decoder['num_classes'])
    shape = model_lib.example_inputs(model_config)[0].shape
    if len(shape) != 4 or shape[1] != shape[2]:
      raise ValueError(
        f'image classification needs a square single-image '
        f'model; this one takes inputs of shape {shape}.'
      )
    self.image_size = int(shape[1])
    self.in_channels = int(shape[3])

  # ------------------------------------------------------------------ data --

  def _dataset(
    self,
    source: str,
    split: str,
    *,
    train: bool,
    start_batch: int = 0,
    max_examples: int = -1,
  ):
    d = self.config.data
    if self.in_channels != 3:
      raise ValueError(
        f'the ImageNet pipeline gives RGB images; the model '
        f'takes {self.in_channels} channels.'
      )
    batch = int(
      self.config.batch_size if train else self.config.eval_batch_size
    )
    count = jax.process_count()
    if batch % count:
      raise ValueError(
        f'batch size {batch} must be divisible by the number '
        f'of processes {count}.'
      )
    layers = int(d.randaugment_layers)
    randaugment = (
      (layers, float(d.randaugment_magnitude)) if layers > 0 else None
    )
    iterator, info = image_data.make_image_dataset(
      source,
      split,
      batch_size=batch // count,
      train=train,
      image_size=self.image_size,
      seed=int(self.config.seed),
      process_index=jax.process_index(),
      process_count=count,
      randaugment=randaugment,
      data_dir=d.data_dir or None,
      manual_dir=d.manual_dir or None,
      class_names=d.class_names or None,
      start_batch=start_batch,
      geometry=d.geometry or None,
      max_examples=max_examples,
      # Shards fixed by the batch and the config, not the process count
      # (host_data): the same global batches on any number of processes.
      num_shards=host_data.num_shards(
        int(d.get('num_shards', 0) or 0), batch, batch, count
      )
      if train
      else 0,
    )
    self._check_classes(info, source)
    return iterator, info

  def _check_classes(self, info, source: str) -> None:
    k = self.num_classes
    if info['num_classes'] > k:
      raise ValueError(
        f'{source} has {info["num_classes"]} classes but the '
        f'model predicts {k}; set config.data.num_classes '
        '(training) or use a matching checkpoint.'
      )
    folder_names = (
      info['class_names'] is not None
      and not self.config.data.class_names
      and not source.startswith(('tfds:', 'imagenet2012'))
    )
    if folder_names and len(info['class_names']) != k:
      raise ValueError(
        f'{source} has {len(info["class_names"])} class folders but the '
        f'model predicts {k} classes, so the folder order cannot be mapped '
        f"to the model's indices. Pass --config.data.class_names=<CSV or "
        f"text file listing the {k} classes in the model's order> (for "
        f'ImageNet: a CSV with class_index and wnid columns, e.g. '
        f'synsets_all_1000.csv).'
      )

  def _eval_source(self) -> str:
    return self.config.data.eval_source or self.config.data.source

  def _check_eval_is_not_train(self) -> None:
    """A `dir:` root without split folders gives the same images to every
    split: training on them and evaluating on them would report training
    accuracy as test accuracy."""
    d = self.config.data
    folders = []
    for source, split in (
      (d.source, d.train_split),
      (self._eval_source(), d.eval_split),
    ):
      path = source[len('dir:') :] if source.startswith('dir:') else source
      if not os.path.isdir(path):
        return  # TFDS, digits, synthetic: their splits are their own.
      folders.append(os.path.realpath(image_data.split_folder(path, split)))
    if folders[0] == folders[1]:
      raise ValueError(
        f'training ({d.train_split!r}) and evaluation ({d.eval_split!r}) '
        f'would both read every image in {folders[0]} (it has no train/ '
        'and validation/ folders), so the eval accuracy would be training '
        'accuracy. Give held-out images: --config.data.eval_source=dir:'
        '<folder of class folders>, or split folders under the root.'
      )

  def data_info(self):
    iterator, info = self._dataset(
      self.config.data.source, self.config.data.train_split, train=True
    )
    self._check_eval_is_not_train()
    self._first_train = iterator
    names = self.display_names(fallback=info['class_names'] or [])
    train_info = {
      'num_examples': int(info['num_examples']),
      'label_names': names,
      'num_classes': self.num_classes,
    }
    return train_info, {'num_examples': -1, 'label_names': names}

  def example_batch(self) -> Dict[str, np.ndarray]:
    s = self.image_size
    return {'image': np.zeros((1, s, s, self.in_channels), np.float32)}

  def train_stream(self, start_step: int):
    if start_step == 0 and self._first_train is not None:
      iterator, self._first_train = self._first_train, None
    else:
      iterator, _ = self._dataset(
        self.config.data.source,
        self.config.data.train_split,
        train=True,
        start_batch=start_step,
      )
    return _TrainStream(iterator, start_step)

  def eval_data(self):
    """The ordered eval stream, of at most `max_eval_examples`: a seeded
    random subset of a folder, digits or synthetic source (the library
    picks it), the first ones of a TFDS split (in whole batches: every
    process stops after the same batch)."""
    limit = int(self.config.max_eval_examples)
    iterator, info = self._dataset(
      self._eval_source(),
      self.config.data.eval_split,
      train=False,
      max_examples=limit,
    )
    expected = int(info['num_examples'])
    if limit > 0:
      expected = min(expected, limit)
    max_batches = (
      math.ceil(limit / int(self.config.eval_batch_size)) if limit > 0 else None
    )

    def batches():
      for i, b in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
          break
        yield {
          'image': b['image'],
          'label': b['label'],
          'weight': b['mask'].astype(np.float32),
        }

    return batches(), expected

  # ----------------------------------------------------- traced functions --

  def train_transform(self, batch, key):
    """One-hot -> MixUp/CutMix (paired as officially) -> label smoothing."""
    d = self.config.data
    labels = jax.nn.one_hot(batch['label'], self.num_classes)
    images = batch['image']
    alpha = float(d.mixup_alpha)
    if alpha > 0 or bool(d.cutmix):
      images, labels = mixing.mixup_cutmix(
        key, images, labels, alpha if alpha > 0 else None, bool(d.cutmix)
      )
    labels = mixing.smooth_labels(labels, float(self.config.label_smoothing))
    return {**batch, 'image': images, 'targets': labels}

  def loss_fn(self, outputs, batch):
    weight = batch['weight'].astype(jnp.float32)
    loss = optax.softmax_cross_entropy(
      outputs.astype(jnp.float32), batch['targets']
    )
    return loss * weight, weight

  def eval_outputs(self, outputs, batch):
    logits = outputs.astype(jnp.float32)
    weight = batch['weight'].astype(jnp.float32)
    labels = batch['label']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top = jax.lax.top_k(logits, min(5, self.num_classes))[1] == labels[:, None]
    return {
      'loss': loss * weight,
      'top1': top[:, 0] * weight,
      'top5': jnp.any(top, axis=-1) * weight,
      'weight': weight,
      'label': labels,
    }

  # ------------------------------------------------------------------ host --

  def summarize(self, gathered):
    """Top-1 / top-5 accuracy (of 1) and loss over the eval stream."""
    total = float(np.sum(gathered.get('weight', []), dtype=np.float64))
    if total <= 0:
      raise ValueError(
        f'the eval data {self._eval_source()} '
        f'[{self.config.data.eval_split}] has no images.'
      )
    sums = {
      k: float(np.sum(gathered[k], dtype=np.float64))
      for k in ('top1', 'top5', 'loss')
    }
    if 'label' in gathered:
      labels = np.asarray(gathered['label'])[np.asarray(gathered['weight']) > 0]
      input_pipeline.warn_if_single_class(
        labels, [], f'{self._eval_source()} [{self.config.data.eval_split}]'
      )
    return {
      'top1': sums['top1'] / total,
      'top5': sums['top5'] / total,
      'loss': sums['loss'] / total,
      'num_examples': int(total),
    }

  # ------------------------------------------------------------ prediction --

  def display_names(
    self, override: str = '', fallback: Sequence[str] = ()
  ) -> List[str]:
    """Class names for printing: a class-list file, else `fallback` (the
    checkpoint's labels, or folder names); [] if none."""
    path = override or self.config.data.class_names
    names = read_display_names(path) if path else list(fallback)
    if names and len(names) != self.num_classes:
      where = path or 'the label list'
      raise ValueError(
        f'{where} names {len(names)} classes but the model '
        f'predicts {self.num_classes}.'
      )
    return names

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    info: Optional[Dict[str, Any]] = None,
    top_k: int = 0,
    class_names: str = '',
    pairs: Optional[Sequence[Optional[str]]] = None,
    **unused,
  ) -> List[str]:
    """Image files -> the top-k classes with probabilities (k = 5 default).

    Class names come from `class_names` (a class-list file), else
    config.data.class_names, else the run's or checkpoint's label names.
    """
    base.refuse_pairs(pairs, name)
    if not inputs:
      raise ValueError('give one or more image files to classify.')
    images = np.stack(
      [
        image_data.eval_preprocess_numpy(
          image_data.load_image_numpy(path), self.image_size
        )
        for path in inputs
      ]
    )
    # One jitted call (ImageNet Fourier, one image, 2-core CPU: 4.4 s with
    # its compile vs 6.1 s eagerly, then 1.4 vs 2.7 s).
    logits = self.predict(model, variables, {'image': images}).astype(
      np.float64
    )
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    names = self.display_names(
      class_names, (info or {}).get('label_names') or ()
    )
    k = min(top_k or 5, self.num_classes)
    lines = []
    for path, p in zip(inputs, probs):
      lines.append(path)
      for rank, j in enumerate(np.argsort(-p)[:k], 1):
        name = names[j] if names else f'class {j}'
        lines.append(f'  {rank}. {p[j]:.4f}  {name}  [{j}]')
    logging.info(
      'classified %d image(s) at %dx%d.',
      len(inputs),
      self.image_size,
      self.image_size,
    )
    return lines
