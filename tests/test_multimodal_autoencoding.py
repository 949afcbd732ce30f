"""Multimodal autoencoding (experiments/tasks/multimodal_autoencoding.py,
configs/multimodal_autoencoding.py) on the tiny model: a run on generated
clips evaluated again from its workdir and predicting an mp4 with sound into
GIF + WAV + PNG files with the top-5 labels; on its weights (perturbed), the
loss re-derived in NumPy with other weights, label masking in training vs
evaluation, per-example subsampled queries against the rows of a full
decoding, chunked evaluation against the model's one-call decoding, PSNR /
top-k / baselines against NumPy formulas; a tiny HuggingFace checkpoint
evaluated through `init_from=hf:` against the HF model's own outputs; bad clips refused in one line with nothing written. One module, so
that every test shares the run's compiled model.
"""

import json
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
from tests import parallel_helpers as ph
from tests.helpers import override_config


def _tiny(**fields):
  """A fresh tiny config with `fields` set (override_config edits in place)."""
  return override_config(multimodal_autoencoding.get_config('tiny'), **fields)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  # Tiny graphs: XLA's optimisation passes cost more than they save (the
  # tiny config sets this for its run; the other tests compile with it too).
  previous = jax.config.read('jax_disable_most_optimizations')
  root = tmp_path_factory.mktemp('mm')
  workdir = str(root / 'run')
  result = train_lib.train_and_evaluate(_tiny(), workdir)
  clip = video.synthetic_clip(
    3, num_frames=2, size=16, audio_samples=64, num_classes=5
  )
  path = str(root / 'clip.mp4')
  video.write_clip(path, clip['video'], clip['audio'], sample_rate=8000)
  yield root, workdir, result, path
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='module')
def setup(run):
  """The run's model with its weights perturbed (non-trivial outputs)."""
  result = run[2]
  config = _tiny()
  task = tasks.get(config)
  state = jax.device_get(result['state'])
  rng = np.random.default_rng(2)
  variables = jax.tree_util.tree_map(
    lambda x: x + 0.05 * rng.standard_normal(x.shape, np.float32),
    {'params': state['params'], **state['model_state']},
  )
  clips = [
    video.synthetic_clip(
      i, num_frames=2, size=16, audio_samples=64, num_classes=5
    )
    for i in range(3)
  ]
  return config, task, result['model'], variables, task.stack(clips)


@pytest.mark.slow  # Its setup trains the module's run.
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


@pytest.mark.slow
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


def _apply(model, variables, inputs, kwargs):
  return jax.device_get(_forward(model)(variables, inputs, kwargs))


_FORWARDS = {}


def _forward(model):
  if id(model) not in _FORWARDS:
    _FORWARDS[id(model)] = jax.jit(lambda v, x, kw: model.apply(v, x, **kw))
  return _FORWARDS[id(model)]


def _all_points(task):
  return {
    'image': np.arange(task.shapes['pixels'], dtype=np.int32),
    'audio': np.arange(task.shapes['audio_patches'], dtype=np.int32),
    'label': None,
  }


def _with_draws(task, batch, first=0):
  draws = [task.train_draws(first + i) for i in range(len(batch['label']))]
  out = dict(batch)
  for key in draws[0]:
    out[key] = np.stack([d[key] for d in draws])
  return out


@pytest.mark.parametrize('error', ['l1', 'l2'])
def test_loss_is_the_weighted_sum_of_errors_and_ce(setup, error):
  _, _, model, variables, batch = setup
  task = tasks.get(
    _tiny(loss__video=0.5, loss__audio=2.0, loss__label=3.0, loss__error=error)
  )
  norm = np.abs if error == 'l1' else np.square
  batch = _with_draws(task, batch)
  batch['weight'] = np.array([1.0, 0.0, 1.0], np.float32)
  inputs, kwargs = task.model_inputs(batch)
  out = _apply(model, variables, inputs, kwargs)
  loss, weight = jax.device_get(task.loss_fn(out, batch))
  # NumPy: gather the drawn pixels and audio patches by hand.
  expected = []
  for b in range(3):
    pixels = batch['video'][b].reshape(-1, 3) / 255.0
    patches = batch['audio'][b].reshape(-1, 16)
    l1_v = norm(out['image'][b] - pixels[batch['image_points'][b]]).mean()
    l1_a = norm(
      out['audio'][b].reshape(-1, 16) - patches[batch['audio_points'][b]]
    ).mean()
    logits = out['label'][b].astype(np.float64)
    ce = np.log(np.exp(logits).sum()) - logits[batch['label'][b]]
    expected.append(0.5 * l1_v + 2.0 * l1_a + 3.0 * ce)
  np.testing.assert_allclose(
    loss, np.array(expected) * batch['weight'], rtol=1e-5
  )
  np.testing.assert_array_equal(weight, batch['weight'])
  assert out['image'].shape == (3, 16, 3)  # data.image_queries
  assert out['audio'].shape == (3, 2 * 16)  # data.audio_queries x 16


def test_label_is_masked_for_half_of_training_and_always_at_evaluation(setup):
  _, task, model, variables, batch = setup
  masks = np.array([task.train_draws(p)['label_mask'] for p in range(400)])
  assert 160 < masks.sum() < 240  # Binomial(400, 0.5): +-4 sigma.
  again = [task.train_draws(p)['label_mask'] for p in range(400)]
  np.testing.assert_array_equal(masks, again)  # A function of the position.
  none = tasks.get(_tiny(data__label_mask_rate=0.0))
  assert not any(none.train_draws(p)['label_mask'] for p in range(50))

  def logits(b):
    inputs, kwargs = task.model_inputs(b)
    return np.asarray(_apply(model, variables, inputs, kwargs)['label'])

  # Three consecutive stream positions with the label both masked and shown.
  first = next(p for p in range(100) if 0 < masks[p : p + 3].sum() < 3)
  train = _with_draws(task, batch, first)
  flipped = dict(train, label=(train['label'] + 1) % 5)
  shown = ~train['label_mask'].astype(bool)
  assert shown.any() and (~shown).any()
  diff = np.abs(logits(train) - logits(flipped)).max(-1)
  # Masked rows never see the label; shown rows do.
  assert np.all(diff[~shown] == 0) and np.all(diff[shown] > 1e-4)
  inputs, kwargs = task.model_inputs(train)
  np.testing.assert_array_equal(
    np.asarray(inputs['label'])[~shown], 0.0
  )  # Zeroed, as the official colab feeds a masked label.

  # Evaluation batches (no 'label_mask'): every label masked.
  def eval_logits(b):
    inputs, kwargs = task.model_inputs(b)
    assert np.all(np.asarray(kwargs['input_masks']['label']))
    kwargs['subsampled_output_points'] = _all_points(task)
    return np.asarray(_apply(model, variables, inputs, kwargs)['label'])

  np.testing.assert_array_equal(
    eval_logits(batch), eval_logits(dict(batch, label=batch['label'] * 0))
  )


def test_per_example_subsampled_queries_equal_rows_of_full_decoding(setup):
  _, task, model, variables, batch = setup
  train = _with_draws(task, batch, first=7)
  inputs, kwargs = task.model_inputs(train)
  sub = _apply(model, variables, inputs, kwargs)
  kwargs['subsampled_output_points'] = _all_points(task)
  full = _apply(model, variables, inputs, kwargs)
  for b in range(3):
    np.testing.assert_allclose(
      sub['image'][b], full['image'][b][train['image_points'][b]], atol=1e-5
    )
    np.testing.assert_allclose(
      sub['audio'][b].reshape(-1, 16),
      full['audio'][b].reshape(-1, 16)[train['audio_points'][b]],
      atol=1e-5,
    )
  np.testing.assert_allclose(sub['label'], full['label'], atol=1e-5)
  assert len(set(map(tuple, train['image_points']))) == 3  # Per example.


@pytest.fixture(scope='module')
def decoded(setup):
  """decode_all in chunks of 7 pixels (not a divisor of 512) and the eval
  outputs of the same chunking, in one compiled call."""
  _, _, model, variables, batch = setup
  task = tasks.get(_tiny(model__query_chunk_size=7))
  assert task.chunking() == (74, 7, 1)  # 512 pixels, 4 audio patches.
  batch = dict(batch, weight=np.array([1.0, 1.0, 0.0], np.float32))

  def both(v, b):
    return task.decode_all(model, v, b, True), task.eval_outputs_full(
      model, v, b
    )

  return jax.device_get(jax.jit(both)(variables, batch)), batch


def test_chunked_evaluation_equals_the_model_decoding_every_point(
  setup, decoded
):
  _, task, model, variables, batch = setup
  ((sums, rec), _), _ = decoded
  inputs, kwargs = task.model_inputs(batch)
  kwargs['subsampled_output_points'] = _all_points(task)
  assert task.shapes['pixels'] == 512 and task.shapes['audio_patches'] == 4
  out = _apply(model, variables, inputs, kwargs)  # All points in one call.
  np.testing.assert_allclose(
    rec['video'].reshape(3, -1, 3), np.clip(out['image'], 0, 1), atol=1e-5
  )
  np.testing.assert_allclose(
    rec['audio'], np.clip(out['audio'], -1, 1), atol=1e-5
  )
  np.testing.assert_allclose(sums['label'], out['label'], atol=1e-5)
  assert np.ptp(rec['video']) > 0.01  # Not a constant reconstruction.


def test_psnr_top_k_and_baselines_match_numpy(setup, decoded):
  _, task, _, _, _ = setup
  ((sums, rec), out), batch = decoded
  metrics = task.summarize(out)
  real = [0, 1]
  v = batch['video'][real].astype(np.float64) / 255.0
  a = batch['audio'][real].astype(np.float64)

  def numpy_psnr(x, y):
    return np.mean(
      [10 * np.log10(1.0 / np.mean((p - q) ** 2)) for p, q in zip(x, y)]
    )

  assert metrics['num_examples'] == 2
  assert metrics['video_psnr'] == pytest.approx(
    numpy_psnr(rec['video'][real], v), abs=1e-3
  )
  assert metrics['audio_psnr'] == pytest.approx(
    numpy_psnr(rec['audio'][real], a), abs=1e-3
  )
  mean_frame = np.broadcast_to(v.mean(1, keepdims=True), v.shape)
  assert metrics['video_psnr_mean_frame'] == pytest.approx(
    numpy_psnr(mean_frame, v), abs=1e-3
  )
  colour = np.broadcast_to(v.mean((1, 2, 3), keepdims=True), v.shape)
  assert metrics['video_psnr_mean_colour'] == pytest.approx(
    numpy_psnr(colour, v), abs=1e-3
  )
  assert metrics['audio_psnr_silence'] == pytest.approx(
    numpy_psnr(np.zeros_like(a), a), abs=1e-3
  )
  logits = sums['label'][real]
  labels = batch['label'][real]
  ranks = [(np.argsort(-l).tolist()).index(y) for l, y in zip(logits, labels)]
  assert metrics['top1'] == np.mean([r < 1 for r in ranks])
  assert metrics['top5'] == np.mean([r < 5 for r in ranks]) == 1.0  # 5 classes
  assert metrics['top1_chance'] == 0.2


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(tmp_path, subprocess_env):
  """Real processes: the same batches (sharded training clips) and every
  eval clip scored once (per-process shares, gathered sums)."""
  args = [
    '--config=configs/multimodal_autoencoding.py:tiny',
    '--config.num_train_steps=3',
    '--config.eval_every_steps=3',
    '--config.checkpoint_every_steps=3',
    '--config.data.source=synthetic:9',
    '--config.max_eval_examples=-1',
  ]
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  ph.run_train(one, subprocess_env, args)
  ph.run_processes(two, subprocess_env, args, 2)
  losses = ph.read_losses(one)
  assert list(losses) == [1, 2, 3]
  np.testing.assert_allclose(
    list(ph.read_losses(two).values()), list(losses.values()), rtol=1e-5
  )
  evals = [
    [
      json.loads(line)
      for line in open(os.path.join(w, 'metrics.jsonl'))
      if 'eval_video_psnr' in line
    ][-1]
    for w in (one, two)
  ]
  assert evals[0]['eval_num_examples'] == evals[1]['eval_num_examples'] == 9
  for key in ('eval_video_psnr', 'eval_audio_psnr', 'eval_top1'):
    assert evals[1][key] == pytest.approx(evals[0][key], rel=1e-5), key
