"""Multimodal autoencoding task (experiments/tasks/multimodal_autoencoding.py)
on the tiny model with random weights: the loss re-derived in NumPy with
other weights, label masking in training vs evaluation, per-example
subsampled queries against the rows of a full decoding, chunked evaluation
against one chunk, and PSNR / top-k against NumPy formulas.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import multimodal_autoencoding
from experiments import tasks
from perceiver_io import build_model
from perceiver_io.data import video
from tests.helpers import override_config


@pytest.fixture(scope='module')
def setup():
  config = multimodal_autoencoding.get_config('tiny')
  task = tasks.get(config)
  model = build_model(task.model_config)
  clips = [
    video.synthetic_clip(
      i, num_frames=2, size=16, audio_samples=64, num_classes=5
    )
    for i in range(3)
  ]
  batch = task.stack(clips)
  inputs, kwargs = task.model_inputs(task.example_batch())
  variables = jax.jit(lambda x, kw: model.init(jax.random.PRNGKey(1), x, **kw))(
    inputs, kwargs
  )
  # Non-trivial decoder outputs: random (not zero) biases and padding.
  rng = np.random.default_rng(2)
  variables = jax.tree_util.tree_map(
    lambda x: x + 0.05 * rng.standard_normal(x.shape, np.float32), variables
  )
  return config, task, model, variables, batch


def _apply(model, variables, inputs, kwargs):
  return jax.device_get(_forward(model)(variables, inputs, kwargs))


_FORWARDS = {}


def _forward(model):
  if id(model) not in _FORWARDS:
    _FORWARDS[id(model)] = jax.jit(lambda v, x, kw: model.apply(v, x, **kw))
  return _FORWARDS[id(model)]


def _tiny(**fields):
  """A fresh tiny config with `fields` set (override_config edits in place)."""
  return override_config(multimodal_autoencoding.get_config('tiny'), **fields)


def _with_draws(task, batch, first=0):
  draws = [task.train_draws(first + i) for i in range(len(batch['label']))]
  out = dict(batch)
  for key in draws[0]:
    out[key] = np.stack([d[key] for d in draws])
  return out


def test_loss_is_the_weighted_sum_of_l1_l1_and_ce(setup):
  _, _, model, variables, batch = setup
  task = tasks.get(_tiny(loss__video=0.5, loss__audio=2.0, loss__label=3.0))
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
    l1_v = np.abs(out['image'][b] - pixels[batch['image_points'][b]]).mean()
    l1_a = np.abs(
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
  evaluation = dict(batch)
  np.testing.assert_array_equal(
    logits(evaluation), logits(dict(evaluation, label=batch['label'] * 0))
  )


def test_per_example_subsampled_queries_equal_rows_of_full_decoding(setup):
  _, task, model, variables, batch = setup
  train = _with_draws(task, batch, first=7)
  inputs, kwargs = task.model_inputs(train)
  sub = _apply(model, variables, inputs, kwargs)
  full_points = {
    'image': np.arange(task.shapes['pixels']),
    'audio': np.arange(task.shapes['audio_patches']),
    'label': None,
  }
  kwargs['subsampled_output_points'] = full_points
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
  """decode_all in chunks of 7 pixels (not a divisor of 512) and in one."""
  _, _, model, variables, batch = setup
  results = {}
  for chunk in (7, 0):
    task = tasks.get(_tiny(model__query_chunk_size=chunk))
    results[chunk] = jax.device_get(
      jax.jit(lambda v, b: task.decode_all(model, v, b, True))(variables, batch)
    )
    if chunk:
      assert task.chunking() == (74, 7, 1)  # 512 pixels, 4 audio patches.
  return results


def test_chunked_evaluation_equals_one_chunk_and_the_model(setup, decoded):
  _, task, model, variables, batch = setup
  (sums7, rec7), (sums1, rec1) = decoded[7], decoded[0]
  for key in sums1:
    np.testing.assert_allclose(sums7[key], sums1[key], rtol=1e-5, atol=1e-5)
  for key in rec1:
    np.testing.assert_allclose(rec7[key], rec1[key], atol=1e-5)
  inputs, kwargs = task.model_inputs(batch)
  kwargs['subsampled_output_points'] = {
    'image': jnp.arange(512),
    'audio': jnp.arange(4),
    'label': None,
  }
  out = _apply(model, variables, inputs, kwargs)
  np.testing.assert_allclose(
    rec1['video'].reshape(3, -1, 3), np.clip(out['image'], 0, 1), atol=1e-5
  )
  np.testing.assert_allclose(rec1['audio'], np.clip(out['audio'], -1, 1))
  np.testing.assert_allclose(sums1['label'], out['label'], atol=1e-5)


def test_psnr_top_k_and_baselines_match_numpy(setup, decoded):
  _, task, model, variables, batch = setup
  batch = dict(batch, weight=np.array([1.0, 1.0, 0.0], np.float32))
  out = jax.device_get(
    jax.jit(lambda v, b: task.eval_outputs_full(model, v, b))(variables, batch)
  )
  metrics = task.summarize(out)
  sums, rec = decoded[0]
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
