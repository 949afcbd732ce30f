"""Clips -> real video files with an audio track (PyAV), so that the decoder
is exercised end to end on files that ffmpeg wrote, not on arrays."""

import fractions
import os
from typing import Optional

import numpy as np

from perceiver_io.data.video.synthetic import FPS

VIDEO_CODECS = ('libx264', 'mpeg4')
AUDIO_CODECS = ('aac', 'libopus', 'mp3')


def write_clip(
  path: str,
  video: np.ndarray,
  audio: Optional[np.ndarray],
  *,
  fps: int = FPS,
  sample_rate: int = 48000,
  video_codec: str = 'libx264',
  audio_codec: str = 'aac',
  quality: int = 18,
) -> None:
  """Writes uint8 `video` [T, H, W, 3] and float `audio` [S] in [-1, 1]
  (mono; None: no audio track) to `path` (the container from its
  extension, e.g. .mp4), atomically: a half-written file never appears.

  `quality` is x264's CRF (0 lossless .. 51; 18 is visually lossless), or
  MPEG-4's qscale, 1 (best) .. 31. H.264 with 4:2:0 chroma needs even
  sizes; odd ones are refused.
  """
  import av  # pylint: disable=g-import-not-at-top

  video = np.asarray(video)
  if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
    raise ValueError(
      f'{path}: video must be uint8 [frames, height, width, 3]; got '
      f'{video.dtype} {video.shape}.'
    )
  _, height, width, _ = video.shape
  if height % 2 or width % 2:
    raise ValueError(
      f'{path}: frames are {height}x{width}; 4:2:0 video needs even sizes.'
    )
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  base, extension = os.path.splitext(os.path.basename(path))
  partial = os.path.join(directory, f'.{base}.partial{extension}')
  try:
    with av.open(partial, mode='w') as container:
      stream = container.add_stream(video_codec, rate=fps)
      stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
      if video_codec == 'libx264':
        stream.options = {'crf': str(quality), 'preset': 'veryfast'}
      else:
        stream.codec_context.qscale = quality
        stream.codec_context.flags |= av.codec.context.Flags.qscale
      audio_stream = None
      if audio is not None:
        audio_stream = container.add_stream(audio_codec, rate=sample_rate)
        audio_stream.layout = 'mono'
      for frame in video:
        out = av.VideoFrame.from_ndarray(frame, format='rgb24')
        container.mux(stream.encode(out))
      container.mux(stream.encode(None))
      if audio_stream is not None:
        samples = np.clip(np.asarray(audio, np.float32), -1, 1)[None]
        frame = av.AudioFrame.from_ndarray(samples, format='flt', layout='mono')
        frame.sample_rate = sample_rate
        # An explicit start lets the encoder date its priming samples
        # before 0, so the muxer writes an edit list and decoders drop them
        # (without it the decoded audio starts 1,024 samples late).
        frame.pts, frame.time_base = 0, fractions.Fraction(1, sample_rate)
        container.mux(audio_stream.encode(frame))
        container.mux(audio_stream.encode(None))
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
