"""`scan_layers`: the latent stack as nn.scan over stacked parameters.

The scanned model must compute what the unrolled one does (forward and
gradients, every family with a latent stack, with remat and with the CPU
kernels), its layout must convert exactly both ways, and every loader
(HuggingFace, Haiku, our own checkpoints, init_from) must fill either
layout with the same weights.
"""

import json
import pickle

import flax
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import scan_compile
from configs import quickstart
from experiments import models
from experiments import train_lib
from experiments import workdir as workdir_lib
from experiments.workdir import init_from as init_from_lib
from perceiver_io import checkpoints
from perceiver_io import convert
from perceiver_io import flops
from perceiver_io import presets
from perceiver_io.model import abstract_variables
from perceiver_io.model import build_model
from perceiver_io.model import example_inputs
from tests.helpers import override_config
from tests.model_helpers import JIT_OPTIONS

TINY = sorted(
  n
  for n in presets.names()
  if n.startswith('tiny_') and presets.family(n) == 'perceiver_io'
)


def _flat(tree):
  return {
    jax.tree_util.keystr(k): np.asarray(v)
    for k, v in jax.tree_util.tree_flatten_with_path(flax.core.unfreeze(tree))[
      0
    ]
  }


def _random_inputs(config, seed=0):
  """Example inputs of the config's shapes with random values."""
  inputs, kwargs = example_inputs(config, batch_size=2)
  rng = np.random.default_rng(seed)

  def fill(x):
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
      return rng.integers(0, 256, x.shape).astype(x.dtype)
    return rng.standard_normal(x.shape).astype(x.dtype)

  inputs = jax.tree_util.tree_map(fill, inputs)
  if 'attention_mask' in kwargs:
    mask = np.ones_like(kwargs['attention_mask'])
    mask[1, mask.shape[1] // 2 :] = 0  # Padding in the second example.
    kwargs['attention_mask'] = mask
  return inputs, kwargs


def _unrolled_variables(model, inputs, kwargs, seed=0):
  """Initialised variables with every parameter perturbed, so that no zero
  bias or unit scale can hide a layer applied in the wrong place."""
  variables = jax.jit(
    lambda x: model.init(jax.random.PRNGKey(seed), x, **kwargs)
  )(inputs)
  rng = np.random.default_rng(seed + 1)
  return jax.tree_util.tree_map(
    lambda v: (
      np.asarray(v)
      + 0.05 * rng.standard_normal(np.shape(v)).astype(np.asarray(v).dtype)
    ),
    flax.core.unfreeze(variables),
  )


def _value_and_grads(model, variables, inputs, kwargs):
  """Outputs and d/d(params) of a fixed random projection of them."""

  def outputs(params):
    return model.apply({**variables, 'params': params}, inputs, **kwargs)

  shapes = jax.eval_shape(outputs, variables['params'])
  rng = np.random.default_rng(7)
  proj = jax.tree_util.tree_map(
    lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes
  )

  def loss(params):
    out = outputs(params)
    return sum(
      jnp.sum(o.astype(jnp.float32) * p)
      for o, p in zip(
        jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(proj)
      )
    ), out

  (_, out), grads = jax.jit(
    jax.value_and_grad(loss, has_aux=True), compiler_options=JIT_OPTIONS
  )(variables['params'])
  return out, grads


def _assert_close(got, want, what):
  got, want = _flat(got), _flat(want)
  assert sorted(got) == sorted(want), what
  for name, w in want.items():
    scale = float(np.max(np.abs(w))) or 1.0
    np.testing.assert_allclose(
      got[name], w, rtol=1e-4, atol=2e-5 * scale, err_msg=f'{what}: {name}'
    )


def _compare(preset, **options):
  config = presets.get_config(preset)
  unrolled = build_model(config, **options)
  scanned = build_model(config, scan_layers=True, **options)
  inputs, kwargs = _random_inputs(config)
  variables = _unrolled_variables(unrolled, inputs, kwargs)
  stacked = checkpoints.stack_layers(variables)
  assert checkpoints.layout_of(stacked) == 'scanned'
  want_out, want_grads = _value_and_grads(unrolled, variables, inputs, kwargs)
  got_out, got_grads = _value_and_grads(scanned, stacked, inputs, kwargs)
  _assert_close(got_out, want_out, f'{preset} outputs')
  _assert_close(
    checkpoints.unstack_layers({'params': got_grads}),
    {'params': want_grads},
    f'{preset} gradients',
  )
  return config


@pytest.mark.slow
@pytest.mark.parametrize('preset', TINY)
def test_scanned_equals_unrolled(preset):
  _compare(preset)


@pytest.mark.slow
def test_scanned_equals_unrolled_repeated_blocks():
  # num_blocks=2 x 2 layers: the repeat scan shares the layer scan's weights.
  config = _compare('tiny_imagenet_fourier')
  assert config['encoder']['num_blocks'] > 1


@pytest.mark.slow
@pytest.mark.parametrize('attention_impl', ['xla', 'cpu'])
def test_scanned_equals_unrolled_with_remat(attention_impl):
  _compare('tiny_imagenet_fourier', remat=True, attention_impl=attention_impl)


@pytest.mark.slow
@pytest.mark.parametrize('policy', ['dots', 'dots_no_batch'])
def test_scanned_equals_unrolled_with_remat_policy(policy):
  _compare('tiny_imagenet_fourier', remat=True, remat_policy=policy)


@pytest.mark.slow
@pytest.mark.parametrize('blocked', [False, True])
def test_cpu_kernels_scan(blocked):
  # kernels.block's custom-gradient block (the CPU kernels) inside nn.scan;
  # with `blocked`, attention in blocks (kernels/blocked.py) for every call.
  _compare(
    'tiny_text_classification',
    attention_impl='cpu',
    kernel_options={'blocked_attention_min_bytes': 0} if blocked else None,
  )


def test_scanned_layout_shapes():
  config = presets.get_config('tiny_imagenet_fourier')
  depth = config['encoder']['num_self_attends_per_block']
  model = build_model(config, scan_layers=True)
  inputs, kwargs = example_inputs(config)
  shapes = jax.eval_shape(
    lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), inputs
  )
  encoder = shapes['params']['encoder']
  assert not [k for k in encoder if k.startswith('self_attend_')]
  leaves = jax.tree_util.tree_leaves(encoder['self_attend'])
  assert leaves and all(leaf.shape[0] == depth for leaf in leaves)


def test_conversion_round_trips_exactly():
  rng = np.random.default_rng(0)
  layer = lambda: {
    'attention': {'query': {'kernel': rng.standard_normal((4, 4))}},
    'mlp_norm': {'scale': rng.standard_normal(4)},
  }
  tree = {
    'params': {
      'encoder': {
        'cross_attend': layer(),
        'latents': rng.standard_normal((2, 4)),
        **{f'self_attend_{i}': layer() for i in range(3)},
      },
      'decoder': {'self_attend_0': layer()},  # Not the latent stack.
    }
  }
  stacked = checkpoints.stack_layers(tree)
  assert stacked['params']['decoder'].keys() == {'self_attend_0'}
  kernel = stacked['params']['encoder']['self_attend']['attention']['query']
  assert kernel['kernel'].shape == (3, 4, 4)
  back = checkpoints.unstack_layers(stacked)
  assert _flat(back).keys() == _flat(tree).keys()
  for name, value in _flat(tree).items():
    assert np.array_equal(_flat(back)[name], value), name
  again = checkpoints.stack_layers(back)
  for name, value in _flat(stacked).items():
    assert np.array_equal(_flat(again)[name], value), name
  # Each layout converts to itself unchanged.
  assert _flat(checkpoints.unstack_layers(tree)).keys() == _flat(tree).keys()
  assert checkpoints.match_layout(tree, stacked)['params'][
    'encoder'
  ].keys() == (stacked['params']['encoder'].keys())


def test_conversion_refuses_a_gap():
  tree = {'encoder': {'self_attend_0': {'b': np.ones(2)}, 'self_attend_2': {}}}
  with pytest.raises(ValueError, match=r'self_attend_0 to self_attend_1'):
    checkpoints.stack_layers(tree)


def test_scan_layers_must_be_a_bool():
  config = presets.get_config('tiny_imagenet_fourier')
  with pytest.raises(ValueError, match='scan_layers must be True or False'):
    build_model(config, scan_layers='yes')


@pytest.mark.slow
def test_native_checkpoint_loads_into_either_layout(tmp_path):
  config = presets.get_config('tiny_text_classification')
  model = build_model(config)
  inputs, kwargs = _random_inputs(config)
  variables = _unrolled_variables(model, inputs, kwargs)
  want = model.apply(variables, inputs, **kwargs)
  checkpoints.save(str(tmp_path / 'unrolled'), variables, model.config)
  scanned, scanned_vars, scanned_config = checkpoints.load(
    str(tmp_path / 'unrolled'), scan_layers=True
  )
  assert scanned_config['scan_layers'] is True
  assert checkpoints.layout_of(scanned_vars) == 'scanned'
  got = scanned.apply(scanned_vars, inputs, **kwargs)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # A scanned checkpoint loads back unrolled, bit for bit.
  checkpoints.save(str(tmp_path / 'scanned'), scanned_vars, scanned_config)
  _, back, _ = checkpoints.load(str(tmp_path / 'scanned'), scan_layers=False)
  for name, value in _flat(variables).items():
    assert np.array_equal(_flat(back)[name], value), name


@pytest.mark.slow
def test_hf_and_haiku_import_into_scanned_layout(tmp_path):
  from tests import hf_fixtures  # pylint: disable=g-import-not-at-top
  from tests.test_haiku_import import haiku_checkpoint  # pylint: disable=g-import-not-at-top

  hf_model, _, inputs, kwargs = hf_fixtures.build('image_fourier')
  hf_model.save_pretrained(tmp_path / 'hf')
  model, variables, config = checkpoints.from_hf(str(tmp_path / 'hf'))
  scanned, scanned_vars, _ = checkpoints.from_hf(
    str(tmp_path / 'hf'), scan_layers=True
  )
  assert checkpoints.layout_of(scanned_vars) == 'scanned'
  run = lambda m, v: np.asarray(
    jax.jit(lambda v, x: m.apply(v, x, **kwargs))(v, inputs)
  )
  want = run(model, variables)
  np.testing.assert_allclose(
    run(scanned, scanned_vars), want, rtol=1e-5, atol=1e-5
  )
  path = tmp_path / 'model.pystate'
  with open(path, 'wb') as f:
    pickle.dump(haiku_checkpoint(hf_model.state_dict(), 'image_fourier'), f)
  _, haiku_vars, _ = checkpoints.from_haiku(str(path), config, scan_layers=True)
  got, want_vars = _flat(haiku_vars), _flat(scanned_vars)
  assert sorted(got) == sorted(want_vars)
  for name, value in want_vars.items():
    assert np.array_equal(got[name], value), name


def test_experiment_config_sets_the_layout():
  config = quickstart.get_config('tiny')
  assert 'scan_layers' not in models.model_config(config)  # Unchanged.
  config = override_config(config, model__scan_layers=True)
  model, description = models.build(config)
  assert description['perceiver']['scan_layers'] is True
  assert model.config['scan_layers'] is True


def test_resume_in_the_other_layout_is_one_line(tmp_path):
  (tmp_path / 'checkpoints' / '5').mkdir(parents=True)
  old = {'perceiver': {'encoder': {'num_latents': 8}}, 'head': ''}
  workdir_lib.write_json_atomic(str(tmp_path / 'model.json'), old)
  new = json.loads(json.dumps(old))
  new['perceiver']['scan_layers'] = True
  with pytest.raises(ValueError) as e:
    workdir_lib.check_workdir(str(tmp_path), new, overwrite=False)
  message = str(e.value)
  assert '\n' not in message
  assert 'unrolled parameter layout' in message
  assert '--config.model.scan_layers=False' in message
  assert f'--config.init_from=workdir:{tmp_path}' in message
  # Another change as well: the general refusal names both.
  new['perceiver']['encoder']['num_latents'] = 16
  with pytest.raises(ValueError, match='different model.*num_latents'):
    workdir_lib.check_workdir(str(tmp_path), new, overwrite=False)


def test_merge_pretrained_converts_the_layout():
  rng = np.random.default_rng(0)
  layer = lambda: {'mlp': {'kernel': rng.standard_normal((3, 3))}}
  unrolled = {
    'params': {'encoder': {f'self_attend_{i}': layer() for i in range(2)}}
  }
  fresh = {
    'params': {
      'perceiver': checkpoints.stack_layers(
        {'encoder': {f'self_attend_{i}': layer() for i in range(2)}}
      ),
      'head': {'kernel': np.zeros((3, 2))},
    }
  }
  merged, new, unused = models.merge_pretrained(fresh, unrolled)
  got = merged['params']['perceiver']['encoder']['self_attend']['mlp']
  want = checkpoints.stack_layers(unrolled)['params']['encoder']['self_attend']
  assert np.array_equal(got['kernel'], want['mlp']['kernel'])
  assert new == ['params/head/kernel'] and unused == []


@pytest.mark.slow
def test_train_then_continue_scanned_from_an_unrolled_workdir(tmp_path):
  """An unrolled run's weights start a scanned run (init_from), which
  trains and evaluates; resuming the unrolled workdir scanned is refused."""
  unrolled_dir, scanned_dir = str(tmp_path / 'a'), str(tmp_path / 'b')
  tiny = lambda **f: override_config(
    quickstart.get_config('tiny'), num_train_steps=2, **f
  )
  train_lib.train_and_evaluate(tiny(), unrolled_dir)
  scanned = tiny(model__scan_layers=True)
  with pytest.raises(ValueError, match='unrolled parameter layout'):
    train_lib.train_and_evaluate(scanned, unrolled_dir)
  trained = init_from_lib.load_init_from(f'workdir:{unrolled_dir}').variables
  model, _ = models.build(scanned)
  inputs, kwargs = example_inputs(model.config)
  fresh = model.init(jax.random.PRNGKey(1), inputs, **kwargs)
  merged, new, _ = models.merge_pretrained(fresh, trained)
  assert not [p for p in new if '/encoder/' in p or '/preprocessor/' in p]
  want = _flat(checkpoints.stack_layers(trained))
  encoder = [n for n in _flat(merged) if "['encoder']" in n]
  assert any("['self_attend']" in n for n in encoder)
  for name in encoder:
    assert np.array_equal(_flat(merged)[name], want[name]), name
  scanned = override_config(scanned, init_from=f'workdir:{unrolled_dir}')
  result = train_lib.train_and_evaluate(scanned, scanned_dir)
  assert result['step'] == 2
  run = workdir_lib.load_workdir(scanned_dir)
  assert checkpoints.layout_of(run.variables) == 'scanned'


def test_benchmark_summary_and_arguments():
  ok = lambda name, layout, compile_s, step_s: {
    'workload': name,
    'layout': layout,
    'status': 'ok',
    'compile_s': compile_s,
    'median_s': step_s,
    'batch': 1,
  }
  results = [
    {**ok('imdb', 'unrolled', 60.0, 2.0), 'restart_compile_s': 9.0},
    {**ok('imdb', 'scanned', 15.0, 2.05), 'restart_compile_s': 0.5},
    ok('imdb', 'scanned', 19.0, 3.0),  # A round slowed by other work.
    ok('imagenet_fourier', 'unrolled', 30.0, 4.0),
    {'workload': 'imagenet_fourier', 'layout': 'scanned', 'status': 'timeout'},
  ]
  summary = scan_compile.summarise(results)
  assert summary['imdb']['compile_speedup'] == pytest.approx(4.0)
  assert summary['imdb']['step_time_ratio'] == pytest.approx(1.025)
  assert summary['imdb']['meets_goal']
  assert summary['imagenet_fourier'] == {'status': 'incomplete'}
  args = scan_compile.parse_args(['--workloads=imdb', '--repeats=2'])
  table = scan_compile.markdown(results, summary, args)
  assert (
    '60.00 s -> 15.00 s (4.00x faster), a restart from the compilation '
    'cache 9.00 s -> 500.0 ms; step' in table
  )
  assert '(ratio 1.025); goal met: True' in table
  assert '| imagenet_fourier | scanned | 0 | 1 | timeout |' in table
  with pytest.raises(SystemExit):
    scan_compile.parse_args(['--workloads=flow'])
  with pytest.raises(SystemExit):
    scan_compile.parse_args(['--rounds=0'])


def test_remat_applies_per_scanned_layer():
  # One rematerialised body inside the scans, where the unrolled stack has
  # one per layer call (num_blocks x num_self_attends_per_block).
  config = presets.get_config('tiny_imagenet_fourier')
  enc = config['encoder']
  inputs, kwargs = example_inputs(config)

  def program(**options):
    model = build_model(config, remat=True, **options)
    shapes = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), inputs
    )
    return str(
      jax.make_jaxpr(lambda v, x: model.apply(v, x, **kwargs))(shapes, inputs)
    )

  scanned = program(scan_layers=True)
  assert scanned.count('remat2[') == 1
  assert scanned.index('scan[') < scanned.index('remat2[')
  unrolled = program()
  calls = enc['num_blocks'] * enc['num_self_attends_per_block']
  assert unrolled.count('remat2[') == calls > 1


def _checkpoint_policies(jaxpr):
  """The `policy` of every checkpoint (remat) in a jaxpr, nested ones too."""
  found = []
  for eqn in jaxpr.eqns:
    if 'policy' in eqn.params and 'prevent_cse' in eqn.params:
      found.append(eqn.params['policy'])
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _checkpoint_policies(sub)
  return found


def test_remat_policy_reaches_each_layer():
  # The policy is the checkpoint's: per layer call when unrolled, once in
  # the scan. Without remat a scanned layer keeps only its weight products'
  # outputs (the unrolled stack has no checkpoint at all).
  config = presets.get_config('tiny_imagenet_fourier')
  enc = config['encoder']
  inputs, kwargs = example_inputs(config)
  policies = jax.checkpoint_policies

  def checkpoints_of(**options):
    model = build_model(config, **options)
    shapes = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), inputs
    )
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, **kwargs))(
      shapes, inputs
    )
    return _checkpoint_policies(closed.jaxpr)

  calls = enc['num_blocks'] * enc['num_self_attends_per_block']
  unrolled = checkpoints_of(remat=True, remat_policy='dots')
  assert unrolled == [policies.checkpoint_dots] * calls
  scanned = checkpoints_of(remat=True, remat_policy='dots', scan_layers=True)
  assert scanned == [policies.checkpoint_dots]
  assert checkpoints_of(remat=True) == [None] * calls  # Save nothing.
  assert checkpoints_of(scan_layers=True) == [
    policies.dots_with_no_batch_dims_saveable
  ]
  assert checkpoints_of() == []
  with pytest.raises(ValueError, match=r'remat_policy must be one of \['):
    checkpoints_of(remat=True, remat_policy='everything')


def test_experiment_config_sets_the_remat_policy():
  def described(**fields):
    config = quickstart.get_config('tiny')
    return models.model_config(
      override_config(config, **{f'model__{k}': v for k, v in fields.items()})
    )

  assert 'remat_policy' not in described()
  assert 'remat_policy' not in described(remat_policy='dots')  # No remat.
  assert 'remat_policy' not in described(remat=True)  # 'nothing'.
  got = described(remat=True, remat_policy='dots_no_batch')
  assert (got['remat'], got['remat_policy']) == (True, 'dots_no_batch')
  build_model(got)  # A valid description.


def test_flop_count_is_the_same_in_both_layouts():
  # The launchers size a step by this count (perceiver_io.flops).
  config = presets.get_config('tiny_imagenet_fourier')
  inputs, kwargs = example_inputs(config)
  count = lambda **o: flops.forward_flops(
    build_model(config, **o), inputs, **kwargs
  )
  assert count(scan_layers=True) == count() > 0


def test_convert_command_switches_a_checkpoint_layout(tmp_path, capsys):
  config = presets.get_config('tiny_imagenet_fourier')
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
    lambda s: rng.standard_normal(s.shape).astype(s.dtype),
    flax.core.unfreeze(abstract_variables(build_model(config))),
  )
  checkpoints.save(str(tmp_path / 'a'), variables, config)
  run = lambda src, dst, scan: convert.main(
    ['--from', f'dir:{tmp_path / src}', '--scan_layers', scan]
    + ['--out', str(tmp_path / dst)]
  )
  assert run('a', 'b', 'true') == 0
  _, scanned, scanned_config = checkpoints.load(str(tmp_path / 'b'))
  assert scanned_config['scan_layers'] is True
  want = _flat(checkpoints.stack_layers(variables))
  assert _flat(scanned).keys() == want.keys()
  for name, value in want.items():
    assert np.array_equal(_flat(scanned)[name], value), name
  assert run('b', 'c', 'false') == 0
  _, back, _ = checkpoints.load(str(tmp_path / 'c'))
  assert _flat(back).keys() == _flat(variables).keys()
  for name, value in _flat(variables).items():
    assert np.array_equal(_flat(back)[name], value), name
  assert run('missing', 'd', 'true') == 2
  assert 'not a perceiver_io checkpoint' in capsys.readouterr().err
