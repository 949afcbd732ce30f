"""The files a multimodal prediction writes: a GIF of the reconstructed
frames, a 16-bit WAV of the reconstructed audio, and a PNG with the original
frames above the reconstructed ones.

Why these formats: Pillow (a dependency already) writes GIF and PNG, and the
standard library's `wave` writes WAV, so predicting needs no video encoder;
mp4 with sound needs one (PyAV) and adds nothing a viewer needs. Each file
is written under a temporary name and renamed, so an interrupted prediction
never leaves a half-written file under the final name.
"""

import os
import wave
from typing import Dict, List

import numpy as np
from PIL import Image


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """Frames in [0, 1] -> uint8 (rounded, clipped)."""
  return np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)


def side_by_side(
  original: np.ndarray, reconstruction: np.ndarray, max_frames: int = 8
) -> np.ndarray:
  """[2 H + gap, n W + gaps, 3] uint8: evenly spaced frames, originals on
  top, reconstructions below (both uint8 [T, H, W, 3])."""
  t = original.shape[0]
  picks = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round())
  picks = picks.astype(int)
  gap = max(original.shape[1] // 16, 1)

  def row(frames):
    parts = []
    for i in picks:
      parts += [frames[i], np.full((frames.shape[1], gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)

  top, bottom = row(original), row(reconstruction)
  space = np.full((gap,) + top.shape[1:], 255, np.uint8)
  return np.concatenate([top, space, bottom], axis=0)


def _replace(path: str, write) -> str:
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_gif(path: str, frames: np.ndarray, fps: float = 25.0) -> str:
  images = [Image.fromarray(f) for f in frames]
  return _replace(
    path,
    lambda p: images[0].save(
      p,
      format='GIF',
      save_all=True,
      append_images=images[1:],
      duration=int(round(1000 / fps)),
      loop=0,
    ),
  )


def write_wav(path: str, audio: np.ndarray, rate: int) -> str:
  """Mono 16-bit PCM of samples in [-1, 1]."""
  pcm = np.clip(np.round(np.asarray(audio) * 32767), -32768, 32767)

  def write(p):
    with wave.open(p, 'wb') as f:
      f.setnchannels(1)
      f.setsampwidth(2)
      f.setframerate(int(rate))
      f.writeframes(pcm.astype('<i2').tobytes())

  return _replace(path, write)


def write_png(path: str, image: np.ndarray) -> str:
  return _replace(
    path, lambda p: Image.fromarray(image).save(p, format='PNG', optimize=True)
  )


def write_reconstruction(
  stem: str, clip: Dict[str, np.ndarray], out: Dict[str, np.ndarray], rate: int
) -> List[str]:
  """<stem>_reconstruction.gif/.wav and <stem>_frames.png; their paths."""
  frames = to_uint8(out['video'])
  fps = rate * frames.shape[0] / max(len(out['audio']), 1)
  return [
    write_gif(f'{stem}_reconstruction.gif', frames, fps),
    write_wav(f'{stem}_reconstruction.wav', out['audio'], rate),
    write_png(
      f'{stem}_frames.png',
      side_by_side(np.asarray(clip['video'], np.uint8), frames),
    ),
  ]
