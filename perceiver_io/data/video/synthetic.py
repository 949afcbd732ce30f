"""Generated video + audio clips with structure that sound, picture and label
share, for tests and for CPU-sized multimodal autoencoding.

Why: an autoencoder trained on noise learns nothing worth checking, and a
label nobody can recover from the content measures nothing. Here every clip
is one shape moving in a straight line over a plain background, and a tone
that follows it:

* picture: a `square` or a `disc` (the shape kind) of a bright random colour
  moves `right`, `left`, `down` or `up` (the direction) by 40 % of the frame
  over the clip, on a dark random background;
* sound: the shape's horizontal position sets the pitch (left = low, right =
  high), its height sets the loudness (top = loud), and its kind sets the
  timbre (a square sounds like a band-limited square wave: odd harmonics; a
  disc a pure sine);
* label: kind x direction, `label = kind * 4 + direction` (8 classes at
  most; `num_classes` < 8 uses the first ones), so both the frames (fill of
  the shape's bounding box, displacement of its centre) and the audio
  (harmonics, pitch and loudness trends) give it back.

A clip is a pure function of (seed, index): tests and the CPU variant need no
files, and `experiments.make_synthetic_clips` writes the same clips as mp4.

Time follows the paper's clips: frames at `FPS` = 25 per second, so the
audio rate is `audio_samples * FPS / num_frames` (48 kHz for 16 frames and
30,720 samples); pitches are fractions of that rate, so small clips keep the
same structure.
"""

from typing import Dict, List

import numpy as np

FPS = 25
KINDS = ('square', 'disc')
DIRECTIONS = ('right', 'left', 'down', 'up')
MAX_CLASSES = len(KINDS) * len(DIRECTIONS)
# Unit vectors (dx, dy) of the directions, y pointing down the frame.
_STEPS = {'right': (1, 0), 'left': (-1, 0), 'down': (0, 1), 'up': (0, -1)}
# Pitch range as fractions of the sample rate (480 Hz to 2,880 Hz at 48 kHz):
# the fifth harmonic of the highest note stays under Nyquist.
PITCH_LOW = 0.01
PITCH_HIGH = 0.06
HARMONICS = {'square': (1, 3, 5), 'disc': (1,)}
TRAVEL = 0.4  # Fraction of the frame the shape moves over the clip.
RADIUS = 0.125  # Half the shape's extent, as a fraction of the frame.


def label_names(num_classes: int = MAX_CLASSES) -> List[str]:
  """`kind_direction` of each label, e.g. 'square_right' for label 0."""
  _check_classes(num_classes)
  return [
    f'{KINDS[c // len(DIRECTIONS)]}_{DIRECTIONS[c % len(DIRECTIONS)]}'
    for c in range(num_classes)
  ]


def _check_classes(num_classes: int) -> None:
  if not 1 <= num_classes <= MAX_CLASSES:
    raise ValueError(
      f'synthetic clips have 1 to {MAX_CLASSES} classes (shape kind x '
      f'direction); got num_classes={num_classes}.'
    )


def sample_rate_of(num_frames: int, audio_samples: int) -> float:
  """The audio rate that makes `audio_samples` last `num_frames` at `FPS`."""
  return audio_samples * FPS / num_frames


def label_of(index: int, *, seed: int = 0, num_classes: int = MAX_CLASSES):
  """The label of clip `index`, without rendering it."""
  _check_classes(num_classes)
  return int(np.random.default_rng([seed, index]).integers(num_classes))


def trajectory(
  index: int,
  *,
  seed: int = 0,
  size: int = 224,
  num_classes: int = MAX_CLASSES,
):
  """(label, (x0, y0), (dx, dy), radius, shape colour, background colour) of a
  clip, in pixels: the random draws that `synthetic_clip` renders."""
  _check_classes(num_classes)
  rng = np.random.default_rng([seed, index])
  label = int(rng.integers(num_classes))  # The draw `label_of` repeats.
  dx, dy = _STEPS[DIRECTIONS[label % len(DIRECTIONS)]]
  radius = RADIUS * size
  travel = TRAVEL * size

  def start(step):
    # The shape stays inside the frame for the whole clip.
    low = radius + (travel if step < 0 else 0.0)
    high = size - 1 - radius - (travel if step > 0 else 0.0)
    return rng.uniform(low, high)

  x0, y0 = start(dx), start(dy)
  colour = rng.integers(128, 256, size=3)
  background = rng.integers(0, 64, size=3)
  return (
    label,
    (x0, y0),
    (dx * travel, dy * travel),
    radius,
    colour.astype(np.uint8),
    background.astype(np.uint8),
  )


def synthetic_clip(
  index: int,
  *,
  seed: int = 0,
  num_frames: int = 16,
  size: int = 224,
  audio_samples: int = 30720,
  num_classes: int = MAX_CLASSES,
  pitch_scale: float = 1.0,
) -> Dict[str, object]:
  """One generated clip (module docstring).

  `pitch_scale` multiplies every pitch: below 1, fewer cycles per clip (a
  smoother waveform, which a small model reconstructs sooner).

  Returns:
    dict(video=uint8 [num_frames, size, size, 3], audio=float32
    [audio_samples] in [-1, 1], label=int in [0, num_classes)).
  """
  label, (x0, y0), (dx, dy), radius, colour, background = trajectory(
    index, seed=seed, size=size, num_classes=num_classes
  )
  kind = KINDS[label // len(DIRECTIONS)]
  # Position over time: the first frame at the start, the last at the end.
  span = max(num_frames - 1, 1)
  progress = np.arange(num_frames) / span
  xs, ys = x0 + dx * progress, y0 + dy * progress
  grid = np.arange(size, dtype=np.float64)
  ox = grid[None, None, :] - xs[:, None, None]
  oy = grid[None, :, None] - ys[:, None, None]
  if kind == 'square':
    inside = (np.abs(ox) <= radius) & (np.abs(oy) <= radius)
  else:
    inside = ox**2 + oy**2 <= radius**2
  video = np.where(inside[..., None], colour, background).astype(np.uint8)

  # Sound: the same motion sampled per audio sample (continuous in time).
  t = (np.arange(audio_samples) + 0.5) / audio_samples * num_frames / span
  t = np.minimum(t, 1.0)
  x = (x0 + dx * t) / (size - 1)
  y = (y0 + dy * t) / (size - 1)
  pitch = pitch_scale * (
    PITCH_LOW + (PITCH_HIGH - PITCH_LOW) * x
  )  # Cycles/sample.
  phase = 2 * np.pi * np.cumsum(pitch)
  harmonics = HARMONICS[kind]
  wave = sum(np.sin(h * phase) / h for h in harmonics)
  wave /= sum(1.0 / h for h in harmonics)
  loudness = 0.2 + 0.7 * (1.0 - y)
  audio = (loudness * wave).astype(np.float32)
  return dict(video=video, audio=audio, label=label)
