r"""Launcher: write generated clips as real video files with sound.

  python -m experiments.make_synthetic_clips --out=/tmp/clips \
      --num_clips=64 --num_test_clips=16 --size=64

Writes `<out>/<split>/<class>/clip_<index>.mp4` (H.264 or MPEG-4 video, AAC
or Opus/MP3 audio) and `<out>/clips.csv` (path,label,split; paths relative
to it), the clips of `perceiver_io.data.video.synthetic_clip` (a moving
shape and a tone that follows it; the class is shape x direction), so that
a folder or CSV source decodes files that ffmpeg wrote:
`open_source('/tmp/clips')` or `open_source('/tmp/clips/clips.csv')`. The
test clips are the held-out indices of `synthetic:N` (from 2**30 on).

An existing file is never overwritten: the run stops with one line unless
`--out` is empty or holds only clips this command wrote with the same flags
(then it completes the missing ones).
"""

import csv
import json
import os

from absl import app
from absl import flags
from absl import logging

from experiments import cli

_OUT = flags.DEFINE_string('out', None, 'Folder to write the clips to.')
_NUM_CLIPS = flags.DEFINE_integer('num_clips', 64, 'Training clips.')
_NUM_TEST = flags.DEFINE_integer('num_test_clips', 16, 'Test clips.')
_NUM_FRAMES = flags.DEFINE_integer(
  'num_frames', 16, 'Frames per clip (at 25 fps; the paper: 16).'
)
_SIZE = flags.DEFINE_integer(
  'size', 224, 'Frame height and width (even; the paper: 224).'
)
_SAMPLE_RATE = flags.DEFINE_integer(
  'sample_rate', 48000, 'Audio rate of the files in Hz (the paper: 48000).'
)
_NUM_CLASSES = flags.DEFINE_integer(
  'num_classes', 8, 'Classes, 1 to 8 (shape kind x direction).'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the clips.')
_PITCH_SCALE = flags.DEFINE_float(
  'pitch_scale',
  1.0,
  'Scales every pitch (the cpu config trains on synthetic:N:pitch=0.1).',
)
_VIDEO_CODEC = flags.DEFINE_enum(
  'video_codec', 'libx264', ['libx264', 'mpeg4'], 'Video codec.'
)
_AUDIO_CODEC = flags.DEFINE_enum(
  'audio_codec', 'aac', ['aac', 'libopus', 'mp3'], 'Audio codec.'
)
_MANIFEST = '.make_synthetic_clips.json'


def check_out_folder(out: str, settings: dict) -> None:
  """Refuses a folder that holds anything but a run of the same flags."""
  if not os.path.exists(out):
    return
  if not os.path.isdir(out):
    raise ValueError(f'--out={out} is a file; expected a folder to write to.')
  entries = os.listdir(out)
  if not entries:
    return
  manifest = os.path.join(out, _MANIFEST)
  previous = None
  if os.path.isfile(manifest):
    with open(manifest) as f:
      previous = json.load(f)
  if previous != settings:
    raise ValueError(
      f'--out={out} already holds files'
      f'{" of other flags" if previous else ""}; choose an empty or new '
      'folder (nothing there is overwritten).'
    )


def main(argv):
  del argv
  with cli.one_line_errors():
    from perceiver_io.data import video  # pylint: disable=g-import-not-at-top
    from perceiver_io.data.video import cache  # pylint: disable=g-import-not-at-top

    out = _OUT.value
    if not out:
      raise ValueError('--out is required: the folder to write the clips to.')
    num_frames, rate = _NUM_FRAMES.value, _SAMPLE_RATE.value
    if (num_frames * rate) % video.FPS:
      raise ValueError(
        f'--num_frames={num_frames} at {video.FPS} fps is not a whole '
        f'number of samples at --sample_rate={rate}; pick a multiple of 25 '
        'Hz (e.g. 48000 or 44100).'
      )
    if _SIZE.value < 16 or _SIZE.value % 2:
      raise ValueError(f'--size={_SIZE.value}; expected an even size >= 16.')
    names = video.label_names(_NUM_CLASSES.value)
    settings = dict(
      num_clips=_NUM_CLIPS.value,
      num_test_clips=_NUM_TEST.value,
      num_frames=num_frames,
      size=_SIZE.value,
      sample_rate=rate,
      num_classes=_NUM_CLASSES.value,
      seed=_SEED.value,
      pitch_scale=_PITCH_SCALE.value,
      video_codec=_VIDEO_CODEC.value,
      audio_codec=_AUDIO_CODEC.value,
    )
    check_out_folder(out, settings)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, _MANIFEST), 'w') as f:
      json.dump(settings, f)
    jobs = [('train', i) for i in range(_NUM_CLIPS.value)] + [
      ('test', video.HELD_OUT_OFFSET + i) for i in range(_NUM_TEST.value)
    ]
    rows = []
    logging.info('writing %d clips to %s', len(jobs), out)
    # The library's clip progress: log lines with rate and ETA, and no JAX
    # to load (experiments.progress needs it for the process index).
    bar = cache.Progress(len(jobs), desc='writing')
    for split, index in jobs:
      clip = video.synthetic_clip(
        index,
        seed=_SEED.value,
        num_frames=num_frames,
        size=_SIZE.value,
        audio_samples=num_frames * rate // video.FPS,
        num_classes=_NUM_CLASSES.value,
        pitch_scale=_PITCH_SCALE.value,
      )
      name = names[clip['label']]
      relative = os.path.join(split, name, f'clip_{index:010d}.mp4')
      path = os.path.join(out, relative)
      if not os.path.exists(path):
        video.write_clip(
          path,
          clip['video'],
          clip['audio'],
          sample_rate=rate,
          video_codec=_VIDEO_CODEC.value,
          audio_codec=_AUDIO_CODEC.value,
        )
      rows.append((relative, name, split))
      bar.step()
    with open(os.path.join(out, 'clips.csv'), 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(('path', 'label', 'split'))
      writer.writerows(rows)
    logging.info(
      'wrote %d clips to %s: open_source(%r) or open_source(%r).',
      len(rows),
      out,
      out,
      os.path.join(out, 'clips.csv'),
    )


if __name__ == '__main__':
  flags.mark_flag_as_required('out')
  app.run(main)
