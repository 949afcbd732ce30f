"""Video files written with PyAV and decoded back (perceiver_io.data.video).

The decoder is checked against what was written, re-derived in NumPy: which
source frame each output frame is (window and uniform sampling, other frame
rates, padding), the resize and centre crop (an area mean of the original),
the audio (the same samples, its pitch in Hz after resampling from 44.1
kHz), and the label read back from decoded pixels and sound.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from perceiver_io.data import video
from tests import video_helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES, SIZE, RATE = 20, 32, 48000
TEST_INDEX = video.HELD_OUT_OFFSET


def _clip(index, rate=RATE, frames=FRAMES):
  return video.synthetic_clip(
    index, num_frames=frames, size=SIZE, audio_samples=frames * rate // 25
  )


@pytest.fixture(scope='module')
def written(tmp_path_factory, subprocess_env):
  """6 + 2 clips of 20 frames at 32x32, written by the launcher."""
  out = tmp_path_factory.mktemp('clips') / 'synthetic'
  command = [
    sys.executable,
    '-m',
    'experiments.make_synthetic_clips',
    f'--out={out}',
    '--num_clips=6',
    '--num_test_clips=2',
    f'--num_frames={FRAMES}',
    f'--size={SIZE}',
  ]
  run = subprocess.run(
    command, cwd=REPO, env=subprocess_env, capture_output=True, text=True
  )
  assert run.returncode == 0, run.stderr[-3000:]
  return out


def test_launcher_writes_class_folders_and_a_csv(written):
  rows = (written / 'clips.csv').read_text().splitlines()
  assert rows[0] == 'path,label,split'
  assert len(rows) == 1 + 8
  for row in rows[1:]:
    path, label, split = row.split(',')
    assert path.startswith(f'{split}/{label}/') and (written / path).is_file()
  names = video.label_names()
  index = int(rows[1].split(',')[0].split('_')[-1][:-4])
  assert rows[1].split(',')[1] == names[_clip(index)['label']]


def test_launcher_refuses_a_folder_of_other_files(written, tmp_path):
  from experiments import make_synthetic_clips

  with pytest.raises(ValueError, match='already holds files of other flags'):
    make_synthetic_clips.check_out_folder(str(written), {'num_clips': 1})
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='already holds files;'):
    make_synthetic_clips.check_out_folder(str(tmp_path), {})
  assert (tmp_path / 'notes.txt').read_text() == 'mine'


def _first_train_clip(written):
  row = (written / 'clips.csv').read_text().splitlines()[1]
  path = row.split(',')[0]
  return str(written / path), int(path.split('_')[-1][:-4])


def test_window_decoding_gives_the_middle_frames_and_their_sound(written):
  path, index = _first_train_clip(written)
  clip, info = video.decode_clip(path, size=SIZE)
  original = _clip(index)
  assert clip['video'].shape == (16, SIZE, SIZE, 3)
  assert clip['audio'].shape == (30720,) and clip['audio'].dtype == np.float32
  assert info['padded_frames'] == 0 and info['source_frames'] == FRAMES
  # 20 frames = 0.8 s; the middle 0.64 s starts at 0.08 s = frame 2 and
  # sample 3,840.
  error = np.abs(clip['video'].astype(int) - original['video'][2:18]).mean()
  assert error < 6
  other = np.abs(clip['video'].astype(int) - original['video'][:16]).mean()
  assert other > error  # Exact frame choice: the numbered-frames test.
  expected = original['audio'][3840 : 3840 + 30720]
  assert np.corrcoef(clip['audio'], expected)[0, 1] > 0.98
  assert np.abs(clip['audio'] - expected).mean() < 0.02


def test_decoded_files_keep_their_label_in_picture_and_sound(written):
  for path in sorted(written.glob('*/*/*.mp4')):
    clip, _ = video.decode_clip(str(path), size=SIZE)
    label = video.label_names().index(path.parent.name)
    assert video_helpers.label_from_video(clip['video']) == label, path
    assert video_helpers.label_from_audio(clip['audio'], RATE) == label, path


@pytest.mark.parametrize('fps', [25, 50])
def test_frame_choice_at_other_frame_rates(tmp_path, fps):
  frames = video_helpers.numbered_frames(40)
  path = str(tmp_path / f'numbered{fps}.mp4')
  video.write_clip(path, frames, np.zeros(48000, np.float32), fps=fps)
  window, _ = video.decode_clip(path, size=SIZE)
  uniform, _ = video.decode_clip(path, size=SIZE, sampling='uniform')
  duration = 40 / fps
  start = (duration - 0.64) / 2
  wanted = np.floor((start + np.arange(16) / 25) * fps + 1e-6)
  np.testing.assert_array_equal(
    video_helpers.frame_numbers(window['video']), wanted
  )
  segments = np.floor((np.arange(16) + 0.5) * 40 / 16)
  np.testing.assert_array_equal(
    video_helpers.frame_numbers(uniform['video']), segments
  )


def test_resize_shorter_side_then_centre_crop(tmp_path):
  rng = np.random.default_rng(0)
  # Grey 4x4 blocks: lossless H.264 keeps them (colour would pass through
  # 4:2:0 chroma, whose filters blur block edges).
  coarse = rng.integers(16, 236, (16, 8, 12, 1)).astype(np.uint8)
  frames = coarse.repeat(3, axis=3).repeat(4, axis=1).repeat(4, axis=2)
  path = str(tmp_path / 'wide.mp4')
  video.write_clip(path, frames, np.zeros(30720, np.float32), quality=0)
  clip, _ = video.decode_clip(path, size=16)
  # Shorter side 32 -> 16, so 48 -> 24; the centre 16 columns are 4..19.
  shrunk = video_helpers.area_downscale(frames, 2)
  assert clip['video'].shape == (16, 16, 16, 3)
  assert np.abs(clip['video'] - shrunk[:, :, 4:20]).mean() < 3
  assert np.abs(clip['video'] - shrunk[:, :, 3:19]).mean() > 20


def test_audio_at_44100_hz_is_resampled_to_48000_with_its_pitch(tmp_path):
  original = _clip(3, rate=44100)
  path = str(tmp_path / 'cd.mp4')
  video.write_clip(
    path, original['video'], original['audio'], sample_rate=44100
  )
  clip, info = video.decode_clip(path, size=SIZE)
  assert info['source_rate'] == 44100
  assert clip['audio'].shape == (30720,)
  # The middle 0.64 s in both: the same tone in Hz at either rate.
  source = original['audio'][3528 : 3528 + 28224]
  for part in range(4):
    heard = clip['audio'][part * 7680 : (part + 1) * 7680]
    sent = source[part * 7056 : (part + 1) * 7056]
    f_heard = video_helpers.peak_frequency(heard, 48000)
    f_sent = video_helpers.peak_frequency(sent, 44100)
    # Both spectra have 6.25 Hz bins; the tone glides within a quarter.
    assert abs(f_heard - f_sent) <= 2 * 6.25
  label = video_helpers.label_from_audio(clip['audio'], 48000)
  assert label == original['label']


def test_short_clip_is_padded_or_refused(tmp_path):
  frames = video_helpers.numbered_frames(10)
  path = str(tmp_path / 'short.mp4')
  # 0.4 s of a 1 kHz tone, like the frames.
  audio = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(19200) / 48000)
  video.write_clip(path, frames, audio)
  clip, info = video.decode_clip(path, size=SIZE)
  numbers = video_helpers.frame_numbers(clip['video'])
  np.testing.assert_array_equal(numbers, np.minimum(np.arange(16), 9))
  assert info['padded_frames'] == 6
  rms = np.sqrt(np.mean(clip['audio'][:18000] ** 2))
  assert abs(rms - 0.5 / np.sqrt(2)) < 0.02
  assert np.abs(clip['audio'][20000:]).max() == 0
  with pytest.raises(video.ClipError, match='short.mp4: 10 frames leave 6'):
    video.decode_clip(path, size=SIZE, short='refuse')


def test_read_clip_is_the_sources_decoding(written, tmp_path):
  path, _ = _first_train_clip(written)
  clip = video.read_clip(path, size=SIZE)
  decoded, _ = video.decode_clip(path, size=SIZE)
  np.testing.assert_array_equal(clip['video'], decoded['video'])
  assert clip['label'] == -1
  with pytest.raises(FileNotFoundError, match='nope.mp4: no such clip'):
    video.read_clip(str(tmp_path / 'nope.mp4'))
