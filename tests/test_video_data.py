"""perceiver_io.data.video: generated clips keep the structure they promise.

The label must come back from the pixels and from the sound by simple NumPy
rules (tests/video_helpers.py), the pitch must follow the motion, and a clip
must be a pure function of (seed, index).
"""

import numpy as np
import pytest

from perceiver_io.data import video as video_data
from tests import video_helpers

TINY = dict(num_frames=8, size=32, audio_samples=4096)
RATE = 4096 * video_data.FPS / 8


@pytest.fixture(scope='module')
def tiny_clips():
  return [video_data.synthetic_clip(i, seed=5, **TINY) for i in range(24)]


def test_synthetic_clip_shapes_and_ranges(tiny_clips):
  clip = tiny_clips[0]
  assert clip['video'].shape == (8, 32, 32, 3)
  assert clip['video'].dtype == np.uint8
  assert clip['audio'].shape == (4096,)
  assert clip['audio'].dtype == np.float32
  assert all(np.abs(c['audio']).max() <= 1.0 for c in tiny_clips)
  assert {c['label'] for c in tiny_clips} == set(range(8))


def test_synthetic_label_is_recoverable_from_video_and_audio(tiny_clips):
  for clip in tiny_clips:
    assert video_helpers.label_from_video(clip['video']) == clip['label']
    assert video_helpers.label_from_audio(clip['audio'], RATE) == clip['label']


def test_synthetic_pitch_follows_horizontal_position(tiny_clips):
  # Per frame: the shape's centre x and the tone's peak frequency rise and
  # fall together.
  for clip in tiny_clips[:8]:
    masks = video_helpers.shape_masks(clip['video'])
    xs = np.array([np.argwhere(m)[:, 1].mean() for m in masks])
    frames = clip['audio'].reshape(8, -1)
    pitch = np.array([video_helpers.peak_frequency(f, RATE) for f in frames])
    if np.ptp(xs) < 1:
      assert np.ptp(pitch) <= 2 * RATE / frames.shape[1]
    else:
      assert np.corrcoef(xs, pitch)[0, 1] > 0.9


def test_synthetic_clip_is_a_pure_function_of_seed_and_index():
  a = video_data.synthetic_clip(7, seed=1, **TINY)
  b = video_data.synthetic_clip(7, seed=1, **TINY)
  c = video_data.synthetic_clip(7, seed=2, **TINY)
  np.testing.assert_array_equal(a['video'], b['video'])
  np.testing.assert_array_equal(a['audio'], b['audio'])
  assert not np.array_equal(a['video'], c['video'])
  assert video_data.label_names(8)[0] == 'square_right'
  with pytest.raises(ValueError, match='1 to 8 classes'):
    video_data.synthetic_clip(0, num_classes=9)
