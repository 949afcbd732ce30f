"""`tfds:NAME[:CONFIG]`: a prepared TFDS video dataset as a clip source.

What TFDS offers (tensorflow-datasets 4.9.10's catalog): `ucf101` (101
action classes, 25 fps, 256x256 frames in the default config) has video and
a label but no sound; no TFDS dataset holds Kinetics, and none pairs video
with an audio track. So a TFDS source needs `no_audio='silence'`: its clips
get silent audio (counted in `summary`), and the label and video train as
in the paper. For Kinetics with sound use a folder or a CSV of the clips.

Nothing is downloaded at run time: an unprepared dataset is one line naming
the `tfds build` command, found from the files alone before TensorFlow is
imported. Each process reads its own contiguous part of the split
(`tfds.even_splits`); its examples are converted once (frames at `FPS`,
the same window, resize and crop as files) and cached like decoded files,
with a manifest of labels, so a second run does not touch TFDS.
"""

import glob
import hashlib
import json
import logging
import os
from typing import Callable, Dict, Optional

import numpy as np

from perceiver_io.data.video import cache as cache_lib
from perceiver_io.data.video.clip_source import ClipSource
from perceiver_io.data.video.decoding import frame_indices
from perceiver_io.data.video.decoding import KEPT_HINT
from perceiver_io.data.video.decoding import REFUSED_HINT
from perceiver_io.data.video.decoding import resize_frames
from perceiver_io.data.video.synthetic import FPS


def default_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR') or os.path.join(
    os.path.expanduser('~'), 'tensorflow_datasets'
  )


def _not_prepared(name: str, config: str, data_dir: str) -> ValueError:
  target = f'{name}/{config}' if config else name
  return ValueError(
    f'tfds:{target} is not prepared in {data_dir} (nothing is downloaded at '
    f'run time); prepare it once with `tfds build {target} --data_dir='
    f'{data_dir}` on a machine with network, or use a folder of clips.'
  )


def open_tfds(
  spec: str,
  *,
  split: str,
  shape: Dict,
  num_classes: Optional[int],
  cache_dir: str,
  progress: Optional[Callable[[int, int], None]],
  process_index: int,
  process_count: int,
  short: str,
  no_audio: str,
  data_dir: Optional[str] = None,
) -> ClipSource:
  """The clips of `split` of a prepared TFDS dataset (module docstring)."""
  name, _, config = spec[len('tfds:') :].partition(':')
  data_dir = data_dir or default_data_dir()
  if not name or not glob.glob(
    os.path.join(data_dir, name, '**', 'dataset_info.json'), recursive=True
  ):
    raise _not_prepared(name, config, data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(
    f'{name}/{config}' if config else name, data_dir=data_dir
  )
  if not builder.is_prepared():
    raise _not_prepared(name, config, data_dir)
  features = builder.info.features
  if 'video' not in features or 'label' not in features:
    raise ValueError(
      f'{spec}: expected a video dataset with video and label features; it '
      f'has {sorted(features.keys())}.'
    )
  if no_audio != 'silence':
    raise ValueError(
      f'{spec}: has no audio (no TFDS video dataset has sound); pass '
      "no_audio='silence' to train on its video and labels with silent "
      'audio, or use a folder of clips with sound.'
    )
  names = list(features['label'].names)
  classes = num_classes or len(names)
  if classes < len(names):
    raise ValueError(
      f'{spec} has {len(names)} classes but num_classes={num_classes}.'
    )
  part = tfds.even_splits(split, process_count)[process_index]
  key = json.dumps([spec, str(builder.info.version), str(part), shape])
  folder = os.path.join(
    cache_dir, 'tfds', hashlib.sha1(key.encode()).hexdigest()
  )
  manifest = os.path.join(folder, 'manifest.json')
  if os.path.isfile(manifest):
    with open(manifest) as f:
      record = json.load(f)
    decoded = 0
  else:
    record = _convert(builder, part, shape, folder, short, progress, spec)
    os.makedirs(folder, exist_ok=True)
    with open(manifest + '.partial', 'w') as f:
      json.dump(record, f)
    os.replace(manifest + '.partial', manifest)
    decoded = len(record['labels'])
  count = len(record['labels'])
  audio = np.zeros(shape['audio_samples'], np.float32)
  where = f'split {split}, process {process_index} of {process_count}'
  return ClipSource(
    keys=[f'{spec}/{part}/{i}' for i in range(count)],
    labels=record['labels'],
    label_names=names,
    num_classes=classes,
    summary=(
      f'{spec} ({where}): {count} clips, {classes} classes; {count} without '
      f'audio given silence, {record["padded"]} short padded; {decoded} '
      f'decoded, {count - decoded} read from the cache {cache_dir}.'
    ),
    read=lambda i: dict(
      video=np.load(os.path.join(folder, f'{i:07d}.npy')), audio=audio
    ),
  )


def _convert(builder, part, shape, folder, short, progress, spec) -> Dict:
  """Frames of every example of `part` -> clips in `folder`."""
  total = builder.info.splits[part].num_examples
  tracker = cache_lib.Progress(total, progress)
  labels, padded = [], 0
  os.makedirs(folder, exist_ok=True)
  for i, example in enumerate(
    builder.as_dataset(split=part).as_numpy_iterator()
  ):
    frames = example['video']
    picks, pads, _ = frame_indices(
      np.arange(len(frames)) / FPS,
      shape['num_frames'],
      sampling=shape['sampling'],
      frame_duration=1.0 / FPS,
    )
    if pads:
      message = (
        f'{spec} example {i} of {part}: {len(frames)} frames leave {pads} '
        f'of the window empty'
      )
      if short == 'refuse':
        raise ValueError(message + REFUSED_HINT['short'])
      padded += 1
      logging.warning('%s%s', message, KEPT_HINT['short'])
    video = resize_frames(frames[picks], shape['size'])
    path = os.path.join(folder, f'{i:07d}.npy')
    np.save(path + '.partial.npy', video)
    os.replace(path + '.partial.npy', path)
    labels.append(int(example['label']))
    tracker.step()
  return dict(labels=labels, padded=padded)
