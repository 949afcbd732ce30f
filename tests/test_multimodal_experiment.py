"""Multimodal autoencoding end to end (configs/multimodal_autoencoding.py):
a tiny run on generated clips, evaluated again from its workdir, predicting
an mp4 with sound into GIF + WAV + PNG files with the top-5 labels, a tiny
HuggingFace checkpoint evaluated through `init_from=hf:` against PSNRs
computed from the HF model's own outputs, and bad clips refused in one line
with nothing written.
"""

import os
import wave

import jax
import numpy as np
import pytest
from PIL import Image

from configs import multimodal_autoencoding
from experiments import eval_lib
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib
from perceiver_io.data import video
from tests.helpers import override_config


def _tiny(**fields):
  return override_config(multimodal_autoencoding.get_config('tiny'), **fields)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('mm')
  workdir = str(root / 'run')
  previous = jax.config.read('jax_disable_most_optimizations')
  result = train_lib.train_and_evaluate(_tiny(), workdir)
  jax.config.update('jax_disable_most_optimizations', previous)
  clip = video.synthetic_clip(
    3, num_frames=2, size=16, audio_samples=64, num_classes=5
  )
  path = str(root / 'clip.mp4')
  # Lossless-ish H.264 at 800 Hz AAC is not possible: MPEG-4 + MP3 would be
  # lossy too; the clip only has to decode to the model's shapes.
  video.write_clip(path, clip['video'], clip['audio'], sample_rate=8000)
  return root, workdir, result, path


def test_tiny_run_evaluates_the_same_from_its_workdir(run):
  _, workdir, result, _ = run
  assert result['step'] == 2
  metrics = result['eval']
  assert metrics['num_examples'] == 4  # max_eval_examples of 16 held out.
  assert metrics['top1_chance'] == 0.2 and metrics['top5'] == 1.0
  assert all(np.isfinite(v) for v in metrics.values())
  again = eval_lib.evaluate_workdir(workdir)['metrics']
  for key, value in metrics.items():
    assert again[key] == pytest.approx(value, rel=1e-5), key


def test_predict_writes_gif_wav_and_side_by_side_png(run):
  root, workdir, _, clip_path = run
  out = root / 'predicted'
  lines = predict_lib.predict_lines(
    workdir, [clip_path], output=str(out), top_k=0
  )
  names = sorted(os.listdir(out))
  assert names == [
    'clip_frames.png',
    'clip_reconstruction.gif',
    'clip_reconstruction.wav',
  ]
  gif = Image.open(out / 'clip_reconstruction.gif')
  assert gif.size == (16, 16)
  durations = []  # Pillow merges equal frames and adds up their durations.
  for i in range(gif.n_frames):
    gif.seek(i)
    durations.append(gif.info['duration'])
  assert sum(durations) == 2 * 40  # 2 frames at 25 fps.
  with wave.open(str(out / 'clip_reconstruction.wav')) as f:
    assert (f.getnframes(), f.getframerate(), f.getsampwidth()) == (64, 800, 2)
  png = np.asarray(Image.open(out / 'clip_frames.png'))
  assert png.shape == (16 + 1 + 16, 16 + 1 + 16, 3)  # 2 frames, 2 rows.
  original = video.read_clip(
    clip_path, num_frames=2, size=16, sample_rate=800, audio_samples=64
  )['video']
  np.testing.assert_array_equal(png[:16, :16], original[0])
  label_lines = [l for l in lines if l.startswith('  ') and ': 0.' in l]
  assert len(label_lines) == 5  # top-5 of the 5 classes, named.
  assert {l.split(':')[0].strip() for l in label_lines} == set(
    video.label_names(5)
  )
  assert 'video PSNR' in lines[1]


def test_bad_clips_are_one_line_and_write_nothing(run):
  root, workdir, _, clip_path = run
  clip = video.synthetic_clip(0, num_frames=2, size=16, audio_samples=64)
  silent = str(root / 'silent.mp4')
  video.write_clip(silent, clip['video'], None)
  short = str(root / 'short.mp4')
  video.write_clip(short, clip['video'][:1], clip['audio'], sample_rate=8000)
  text = root / 'notes.mp4'
  text.write_text('not a video\n')
  out = root / 'bad_out'
  os.makedirs(out)
  cases = [
    ([str(text)], {}, 'notes.mp4'),
    ([silent], {}, 'audio'),
    ([str(root / 'missing.mp4')], {}, 'no such clip file'),
    ([clip_path, str(text)], {}, 'notes.mp4'),
    ([clip_path], {'output': clip_path}, 'is a file'),
  ]
  for inputs, options, message in cases:
    options.setdefault('output', str(out))
    with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
      predict_lib.predict_lines(workdir, inputs, **options)
    assert '\n' not in str(e.value)
    assert not os.listdir(out), message
  config = _tiny(data__short='refuse')
  task = tasks.get(config)
  with pytest.raises(ValueError, match='short.mp4'):
    task.predict_lines(None, None, [short], output=str(out))
  assert not os.listdir(out)


def test_imported_hf_checkpoint_evaluates_as_hf_decodes(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  from tests import hf_fixtures  # pylint: disable=g-import-not-at-top

  hf_model, _, _, _ = hf_fixtures.build('multimodal', seed=3)
  path = str(tmp_path / 'hf_mm')
  hf_model.save_pretrained(path)
  config = _tiny(init_from=f'hf:{path}', max_eval_examples=2)
  result = eval_lib.evaluate_pretrained(config)['metrics']
  # The same clips through the HF model, every point decoded at once.
  task = tasks.get(_tiny())
  clips = [task.source('eval')[i] for i in range(16)]
  rows = np.sort(np.random.default_rng(0).choice(16, 2, replace=False))
  batch = task.stack([clips[i] for i in rows])
  frames = batch['video'].astype(np.float32) / 255.0
  with torch.no_grad():
    out = hf_model(
      inputs={
        'image': torch.tensor(frames.transpose(0, 1, 4, 2, 3)),
        'audio': torch.tensor(batch['audio'][..., None]),
        'label': torch.zeros(2, 5),
      },
      subsampled_output_points={
        'image': torch.arange(512),
        'audio': torch.arange(4),
        'label': None,
      },
    ).logits
  image = np.clip(out['image'].numpy(), 0, 1).reshape(frames.shape)
  audio = np.clip(out['audio'].numpy().reshape(2, -1), -1, 1)

  def psnr(x, y):
    return np.mean(
      [-10 * np.log10(np.mean((p - q) ** 2)) for p, q in zip(x, y)]
    )

  assert result['num_examples'] == 2
  assert result['video_psnr'] == pytest.approx(psnr(image, frames), abs=1e-3)
  assert result['audio_psnr'] == pytest.approx(
    psnr(audio, batch['audio']), abs=1e-3
  )
  logits = out['label'].numpy()
  top1 = np.mean(np.argmax(logits, -1) == batch['label'])
  assert result['top1'] == top1
