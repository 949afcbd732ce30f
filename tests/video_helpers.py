"""NumPy rules that read a synthetic clip's label back from its content
(perceiver_io/data/video/synthetic.py), written from the clip's description,
not from the generator's code: the tests decide with them whether the
structure survived generation, mp4 encoding and decoding."""

import numpy as np

from perceiver_io.data.video import DIRECTIONS
from perceiver_io.data.video import KINDS


def shape_masks(video):
  """Per frame, the pixels far from the frame's most common colour."""
  masks = []
  for frame in video.astype(np.int32):
    pixels = frame.reshape(-1, 3)
    colours, counts = np.unique(pixels // 16, axis=0, return_counts=True)
    background = pixels[np.all(pixels // 16 == colours[counts.argmax()], 1)]
    distance = np.abs(frame - background.mean(0)).sum(-1)
    masks.append(distance > 120)
  return np.stack(masks)


def label_from_video(video):
  masks = shape_masks(video)
  fills = []
  for mask in masks:
    ys, xs = np.nonzero(mask)
    box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    fills.append(mask.sum() / box)
  kind = 'square' if np.median(fills) > 0.88 else 'disc'
  first, last = (np.argwhere(m).mean(0) for m in (masks[0], masks[-1]))
  dy, dx = last - first
  if abs(dx) > abs(dy):
    direction = 'right' if dx > 0 else 'left'
  else:
    direction = 'down' if dy > 0 else 'up'
  return KINDS.index(kind) * len(DIRECTIONS) + DIRECTIONS.index(direction)


def peak_frequency(audio, sample_rate):
  """The strongest frequency of `audio` in Hz (Hann window)."""
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
  return spectrum.argmax() * sample_rate / len(audio)


def label_from_audio(audio, sample_rate):
  quarter = len(audio) // 4
  head, tail = audio[:quarter], audio[-quarter:]
  f_head = peak_frequency(head, sample_rate)
  f_tail = peak_frequency(tail, sample_rate)
  # Timbre: a square wave has a third harmonic at a third of the amplitude.
  spectrum = np.abs(np.fft.rfft(head * np.hanning(quarter)))
  bin_ = int(round(f_head * quarter / sample_rate))
  third = spectrum[3 * bin_ - 2 : 3 * bin_ + 3].max() / spectrum[bin_]
  kind = 'square' if third > 0.1 else 'disc'
  loud_head, loud_tail = np.sqrt(np.mean(head**2)), np.sqrt(np.mean(tail**2))
  if abs(f_tail - f_head) > 0.005 * sample_rate:
    direction = 'right' if f_tail > f_head else 'left'
  else:
    direction = 'up' if loud_tail > loud_head else 'down'
  return KINDS.index(kind) * len(DIRECTIONS) + DIRECTIONS.index(direction)


def area_downscale(frames, factor):
  """Mean over factor x factor blocks: what an area filter computes for an
  integer shrink."""
  t, h, w, c = frames.shape
  blocks = frames.reshape(t, h // factor, factor, w // factor, factor, c)
  return blocks.astype(np.float64).mean(axis=(2, 4))


def numbered_frames(count, height=32, width=32):
  """Frames whose grey level is 6 x their index: a decoded frame tells
  which source frame it is (6 steps survive lossy coding)."""
  levels = (6 * np.arange(count) + 10).astype(np.uint8)
  return np.broadcast_to(
    levels[:, None, None, None], (count, height, width, 3)
  ).copy()


def frame_numbers(video):
  return np.round((video.astype(np.float64).mean(axis=(1, 2, 3)) - 10) / 6)
