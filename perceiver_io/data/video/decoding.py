"""One video file -> the paper's clip: frames at 224x224 and 48 kHz mono audio.

Why PyAV (ffmpeg's libraries through Cython) over decord: PyAV decodes and
encodes (the synthetic-clip writer and prediction's video output need an
encoder; decord only reads), its `AudioResampler` (libswresample) turns any
rate and channel layout into 48 kHz mono float32, its abi3 wheels bundle
ffmpeg, and it is released every few months (18.1.0 here); decord's newest
release on PyPI is 0.6.0 of 2021, with a manylinux2010 x86_64 wheel.

The choices, each a keyword of `decode_clip`:

* time: `sampling='window'` (default) takes `num_frames` frames at the
  paper's 25 fps from the middle of the clip, with the audio of the same
  0.64 s: the paper's 30,720 samples at 48 kHz are exactly 16 frames at
  25 fps, so only a window keeps picture and sound of the same moment. Each
  window time takes the latest frame shown at that time, so any frame rate
  works. `sampling='uniform'` spreads the frames over the whole clip (the
  centres of `num_frames` equal segments; the audio is still the middle
  window, so sound and picture line up only for clips of about 0.64 s).
* space: the shorter side is resized to `size` (ffmpeg's area filter, which
  averages rather than aliases when shrinking) and the centre `size x size`
  square is cut out: no distortion; wide frames lose their edges.
* short clips: fewer frames than the window needs are padded by repeating
  the last frame, audio by silence (`short='pad'`, reported in the result),
  or refused (`short='refuse'`). A gap under one frame's length at the end
  of the audio (encoder padding) is filled with silence and not counted.

Memory: a file is decoded whole and its frames are held until the window
is known (width x height x 1.5 bytes a frame: 33 MB for a 10 s 340x256
Kinetics clip at 25 fps), so it is made for clips; cut long videos into
clips first.

Bad files raise `ClipError` with one line naming the file and what would be
right; `sources.open_source` decides whether to skip (and count) or stop.
"""

import math
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from perceiver_io.data.video.synthetic import FPS

SAMPLINGS = ('window', 'uniform')
SHORT_POLICIES = ('pad', 'refuse')
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.avi', '.mkv', '.mov', '.m4v')


# What a refusal adds to a note, and what a clip kept anyway is logged with.
REFUSED_HINT = {
  'short': " (short='pad' would pad it).",
  'no_audio': " (no_audio='silence' would give it silent audio).",
}
KEPT_HINT = {
  'short': ' (padded: last frame repeated, silence added).',
  'no_audio': ' (given silent audio).',
}


class ClipError(ValueError):
  """A clip that cannot become a training example; `kind` names why:
  'undecodable', 'no_audio' or 'short'."""

  def __init__(self, kind: str, message: str):
    super().__init__(message)
    self.kind = kind


def check_settings(sampling: str, short: str) -> None:
  if sampling not in SAMPLINGS:
    raise ValueError(f'sampling={sampling!r}; expected one of {SAMPLINGS}.')
  if short not in SHORT_POLICIES:
    raise ValueError(f'short={short!r}; expected one of {SHORT_POLICIES}.')


def frame_indices(
  times: np.ndarray,
  num_frames: int,
  *,
  sampling: str = 'window',
  frame_duration: float,
) -> Tuple[np.ndarray, int, float]:
  """Which decoded frames make the clip (module docstring).

  Args:
    times: start time in seconds of each decoded frame, ascending, from 0.
    num_frames: frames wanted.
    sampling: 'window' or 'uniform'.
    frame_duration: how long the last frame is shown.

  Returns:
    (indices [num_frames] into `times`, how many are padding repeats of the
    last frame, the clip time in seconds the audio window is centred on).
  """
  count = len(times)
  duration = times[-1] + frame_duration
  window = num_frames / FPS
  start = max(0.0, (duration - window) / 2)
  if sampling == 'uniform':
    centre = duration / 2
    if count >= num_frames:
      picks = np.floor((np.arange(num_frames) + 0.5) * count / num_frames)
      return picks.astype(np.int64), 0, centre
    padded = num_frames - count
    picks = np.minimum(np.arange(num_frames), count - 1)
    return picks, padded, centre
  wanted = start + np.arange(num_frames) / FPS
  # The frame on screen at each wanted time (a small tolerance absorbs
  # timestamps rounded to the stream's time base).
  picks = np.searchsorted(times, wanted + 1e-6, side='right') - 1
  padded = int(np.sum(wanted >= duration - 1e-6))
  return np.clip(picks, 0, count - 1), padded, start + window / 2


def decode_clip(
  path: str,
  *,
  num_frames: int = 16,
  size: int = 224,
  sample_rate: int = 48000,
  audio_samples: int = 30720,
  sampling: str = 'window',
  short: str = 'pad',
  no_audio: str = 'bad',
) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
  """Decodes `path` (module docstring).

  `no_audio='silence'` gives a file without sound silent audio instead of
  raising, and `short='pad'` pads a short one; `info['notes']` then holds
  the line that `short='refuse'` or `no_audio='bad'` would have raised, by
  kind ('short', 'no_audio'), so a caller can decide later.

  Returns:
    (clip: dict(video=uint8 [num_frames, size, size, 3], audio=float32
    [audio_samples]), info: dict(padded_frames, padded_samples,
    source_rate, source_frames, notes)).

  Raises:
    ClipError: the file cannot be decoded or has no video; has no audio
      under `no_audio='bad'`; is short under `short='refuse'`.
  """
  import av  # pylint: disable=g-import-not-at-top

  check_settings(sampling, short)
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise ClipError('undecodable', _undecodable(path, e)) from None
  notes = {}
  with container:
    if not container.streams.video:
      raise ClipError(
        'undecodable',
        f'{path}: has no video stream; expected a video file with an audio '
        'track (mp4/webm/avi/mkv).',
      )
    streams = [container.streams.video[0], *container.streams.audio[:1]]
    source_rate = streams[1].rate if len(streams) > 1 else None
    resampler = av.AudioResampler(format='flt', layout='mono', rate=sample_rate)
    frames, frame_times, chunks = [], [], []
    audio_t0 = None
    try:
      for packet in container.demux(*streams):
        for frame in packet.decode():
          if packet.stream.type == 'video':
            frames.append(frame)
            frame_times.append(frame.time)
          else:
            if audio_t0 is None:
              audio_t0 = frame.time or 0.0
            chunks.extend(g.to_ndarray()[0] for g in resampler.resample(frame))
      if len(streams) > 1:
        chunks.extend(g.to_ndarray()[0] for g in resampler.resample(None))
    except av.FFmpegError as e:
      raise ClipError('undecodable', _undecodable(path, e)) from None
    fps = float(streams[0].average_rate or FPS)
  if not frames:
    raise ClipError(
      'undecodable', f'{path}: no video frame decodes; the file is damaged.'
    )
  if not chunks:
    notes['no_audio'] = (
      f'{path}: has no audio{" samples" if source_rate else " track"}; '
      'multimodal clips need sound (re-encode it with audio or drop it)'
    )
    if no_audio != 'silence':
      raise ClipError('no_audio', notes['no_audio'] + REFUSED_HINT['no_audio'])
  times = _frame_times(frame_times, fps)
  picks, padded, centre = frame_indices(
    times - times[0], num_frames, sampling=sampling, frame_duration=1.0 / fps
  )
  # The audio window in the track's samples: clip time is measured from the
  # first video frame, the track may start earlier or later.
  missing = 0
  audio = np.zeros(audio_samples, np.float32)
  if chunks:
    offset = (audio_t0 or 0.0) - times[0]
    begin = max(0.0, centre - audio_samples / sample_rate / 2)
    first = int(round((begin - offset) * sample_rate))
    audio, missing = _window(np.concatenate(chunks), first, audio_samples)
  short_audio = bool(chunks) and missing > sample_rate / fps
  if padded or short_audio:
    notes['short'] = (
      f'{path}: {_shortage(len(frames), padded, missing, sample_rate)}; '
      f'clips need {num_frames} frames at {FPS} fps '
      f'({num_frames / FPS:.2f} s) with sound'
    )
    if short == 'refuse':
      raise ClipError('short', notes['short'] + REFUSED_HINT['short'])
  video = np.stack([_to_rgb(frames[i], size) for i in picks])
  info = dict(
    padded_frames=int(padded),
    padded_samples=int(missing) if short_audio else 0,
    source_rate=int(source_rate or sample_rate),
    source_frames=len(frames),
    notes=notes,
  )
  return dict(video=video, audio=audio), info


def _undecodable(path: str, error: Exception) -> str:
  reason = getattr(error, 'strerror', None) or str(error).splitlines()[0]
  reason = reason or type(error).__name__
  return (
    f'{path}: cannot be decoded ({reason}); expected a video file that '
    f'ffmpeg reads, with an audio track ({"/".join(VIDEO_EXTENSIONS)}).'
  )


def _shortage(count: int, padded: int, missing: int, rate: int) -> str:
  parts = []
  if padded:
    parts.append(f'{count} frames leave {padded} of the window empty')
  if missing:
    parts.append(f'the audio is {missing / rate:.3f} s short')
  return ' and '.join(parts)


def _frame_times(frame_times: List[Any], fps: float) -> np.ndarray:
  """Presentation times in seconds; frames without a timestamp (some AVI
  files) get their index / fps."""
  if any(t is None for t in frame_times):
    return np.arange(len(frame_times)) / fps
  return np.asarray(frame_times, np.float64)  # Decoders emit them in order.


def _window(
  samples: np.ndarray, first: int, length: int
) -> Tuple[np.ndarray, int]:
  """samples[first:first + length], silence where the track has none;
  returns it and how many samples were silence."""
  out = np.zeros(length, np.float32)
  lo, hi = max(first, 0), min(first + length, len(samples))
  if hi > lo:
    out[lo - first : hi - first] = samples[lo:hi]
  return np.clip(out, -1.0, 1.0), length - max(hi - lo, 0)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 [T, H, W, 3] -> [T, size, size, 3] as decoded files are resized
  (arrays from TFDS)."""
  import av  # pylint: disable=g-import-not-at-top

  return np.stack(
    [
      _to_rgb(
        av.VideoFrame.from_ndarray(np.ascontiguousarray(f), 'rgb24'), size
      )
      for f in frames
    ]
  )


def _to_rgb(frame, size: int) -> np.ndarray:
  """Shorter side -> `size` (area filter), then the centre square."""
  width, height = frame.width, frame.height
  scale = size / min(width, height)
  new_w = max(size, int(math.floor(width * scale + 0.5)))
  new_h = max(size, int(math.floor(height * scale + 0.5)))
  rgb = frame.to_ndarray(
    width=new_w, height=new_h, format='rgb24', interpolation='AREA'
  )
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def read_clip(path: str, **settings) -> Dict[str, object]:
  """One file as a source's clip, for prediction: dict(video, audio,
  label=-1 (unknown)), decoded exactly as `open_source` decodes a folder.

  `settings`: `decode_clip`'s keyword arguments.

  Raises:
    FileNotFoundError: `path` is not a file.
    ClipError: as `decode_clip`.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'{path}: no such clip file; expected a video file with an audio track '
      f'({"/".join(VIDEO_EXTENSIONS)}).'
    )
  clip, _ = decode_clip(path, **settings)
  return dict(clip, label=-1)
