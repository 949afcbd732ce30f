"""The optimizers and schedules, checked against references: LAMB and AdamW
against optax's own `lamb` / `adamw`, gradient accumulation against one step
on the averaged gradient, schedules against their closed forms, and the
weight-decay mask against the official rule.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from experiments import optim
from perceiver_io import build_model
from perceiver_io import presets


def _tiny_conv_params():
  model = build_model(presets.get_config('tiny_imagenet_conv'))
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  )
  return variables['params']


def test_weight_decay_mask_follows_the_official_rule():
  params = _tiny_conv_params()
  flat = {
    tuple(str(k.key) for k in path): decayed
    for path, decayed in jax.tree_util.tree_flatten_with_path(
      optim.weight_decay_mask(params)
    )[0]
  }
  for path, decayed in flat.items():
    is_bias = path[-1] == 'bias'
    in_norm = any(
      name.endswith('_norm') or name == 'batchnorm' for name in path[:-1]
    )
    assert decayed == (not is_bias and not in_norm), path
  assert flat[('encoder', 'latents')]
  assert not flat[('preprocessor', 'conv_downsample', 'batchnorm', 'scale')]
  # Trainable queries / position embeddings: decayed unless asked not to.
  query = ('decoder', 'basic', 'query', 'trainable', 'embeddings')
  assert flat[query]
  no_pos = {
    tuple(str(k.key) for k in path): d
    for path, d in jax.tree_util.tree_flatten_with_path(
      optim.weight_decay_mask(params, decay_pos_embs=False)
    )[0]
  }
  assert not no_pos[query]


def _toy_params():
  rng = np.random.default_rng(0)
  return {
    'dense': {
      'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
      'bias': jnp.asarray(rng.normal(size=(4,)), jnp.float32),
    },
    'mlp_norm': {'scale': jnp.ones((4,), jnp.float32)},
  }


def _optimizer_config(name, lr=0.1, wd=0.01):
  config = common.base_config()
  config.optimizer.name = name
  config.optimizer.learning_rate = lr
  config.optimizer.weight_decay = wd
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.eps = 1e-6
  return config


@pytest.mark.parametrize('name', ['lamb', 'adamw'])
def test_lamb_and_adamw_match_optax_reference(name):
  params = _toy_params()
  config = _optimizer_config(name)
  ours, _ = optim.make_optimizer(config, params, total_steps=10)
  mask = optim.weight_decay_mask(params)
  ref_fn = optax.lamb if name == 'lamb' else optax.adamw
  ref = ref_fn(0.1, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=mask)
  state_a, state_b = ours.init(params), ref.init(params)
  p_a = p_b = params
  rng = np.random.default_rng(1)
  for _ in range(3):
    grads = jax.tree_util.tree_map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
    )
    u_a, state_a = ours.update(grads, state_a, p_a)
    u_b, state_b = ref.update(grads, state_b, p_b)
    p_a, p_b = optax.apply_updates(p_a, u_a), optax.apply_updates(p_b, u_b)
  for a, b in zip(
    jax.tree_util.tree_leaves(p_a), jax.tree_util.tree_leaves(p_b)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_gradient_accumulation_averages_micro_batches():
  params = _toy_params()
  config = _optimizer_config('adam', lr=0.01, wd=0.0)
  single, _ = optim.make_optimizer(config, params, total_steps=4)
  config.optimizer.accumulate_steps = 2
  accum, _ = optim.make_optimizer(config, params, total_steps=4)
  g1 = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 1.0), params)
  g2 = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 3.0), params)
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, g1, g2)
  s = accum.init(params)
  u1, s = accum.update(g1, s, params)
  assert all(
    float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(u1)
  )  # No update on the first call.
  u2, s = accum.update(g2, s, params)
  ref, _ = single.update(mean, single.init(params), params)
  for a, b in zip(
    jax.tree_util.tree_leaves(u2), jax.tree_util.tree_leaves(ref)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_schedules_match_closed_forms():
  sched = ml_collections.ConfigDict(
    dict(
      name='constant_cosine',
      warmup_steps=0,
      constant_fraction=0.5,
      decay_steps=-1,
      end_value=0.0,
    )
  )
  fn = optim.make_schedule(sched, 2e-3, 100)
  assert float(fn(0)) == pytest.approx(2e-3)
  assert float(fn(49)) == pytest.approx(2e-3)
  for t in (50, 60, 75, 99):  # Cosine over the last 50 steps.
    expected = 2e-3 * 0.5 * (1 + math.cos(math.pi * (t - 50) / 50))
    assert float(fn(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
  sched.name = 'warmup_cosine'
  sched.warmup_steps = 10
  fn = optim.make_schedule(sched, 1.0, 110)
  assert float(fn(5)) == pytest.approx(0.5)
  assert float(fn(10)) == pytest.approx(1.0)
  assert float(fn(60)) == pytest.approx(0.5, rel=1e-5)
  sched.name = 'warmup_linear'
  fn = optim.make_schedule(sched, 1.0, 110)
  assert float(fn(5)) == pytest.approx(0.5)
  assert float(fn(60)) == pytest.approx(0.5, rel=1e-5)
  sched.name = 'nope'
  with pytest.raises(ValueError, match='constant_cosine'):
    optim.make_schedule(sched, 1.0, 10)
