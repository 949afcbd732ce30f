"""The 2-D data x fsdp mesh and the per-parameter sharding rules.

* mesh shapes: -1 is the rest of the devices; a shape that does not fit is
  one line listing the ones that do;
* the rule table (experiments/partition_rules.py) on the state of every
  tiny preset: every split axis divides the fsdp size, most of the state is
  split, Adam moments follow their parameter by path, a scanned stack is
  split as each of its layers;
* equality: a few train steps on 8 simulated devices with meshes 8x1, 4x2,
  2x4 and 1x8 give the losses and parameters of one device to float
  round-off (one subprocess, `tests.mesh_runs`, the reference on a mesh of
  its first device), and the bytes each device holds are the ones the
  runner's abstract count logs.
"""

import functools
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import common
from experiments import optim
from experiments import partition_rules
from experiments import sharding
from experiments import train_lib
from perceiver_io import model as model_lib
from perceiver_io import presets
from tests import parallel_helpers as ph

MESHES = ('8x1', '4x2', '2x4', '1x8')
TINY = [n for n in presets.names() if n.startswith('tiny_')]


# ----------------------------------------------------------------------------
# Mesh shapes.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
  'data, fsdp, count, want',
  [
    (-1, 1, 8, (8, 1)),
    (2, -1, 8, (2, 4)),
    (-1, 4, 8, (2, 4)),
    (4, 2, 8, (4, 2)),
    (-1, 1, 1, (1, 1)),
    (1, -1, 2, (1, 2)),
  ],
)
def test_mesh_shape_fills_the_rest(data, fsdp, count, want):
  assert sharding.mesh_shape(data, fsdp, count) == want


@pytest.mark.parametrize(
  'data, fsdp', [(3, -1), (4, 4), (-1, 3), (-1, -1), (0, 8), (-2, 1)]
)
def test_a_mesh_that_does_not_fit_is_one_line_naming_the_ones_that_do(
  data, fsdp
):
  with pytest.raises(ValueError) as info:
    sharding.mesh_shape(data, fsdp, 8)
  message = str(info.value)
  assert '\n' not in message
  assert f'config.mesh.data={data}, config.mesh.fsdp={fsdp}' in message
  assert '(1,8), (2,4), (4,2), (8,1)' in message


def test_the_default_mesh_is_data_parallel_over_every_device():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ('data', 'fsdp')
  assert mesh.devices.shape == (jax.device_count(), 1)
  assert sharding.batch_sharding(mesh).spec == P(('data', 'fsdp'))


# ----------------------------------------------------------------------------
# The rule table.
# ----------------------------------------------------------------------------


def _abstract_state(model_config):
  variables = model_lib.abstract_variables(model_lib.build_model(model_config))
  tx, _ = optim.make_optimizer(common.base_config(), variables['params'], 10)
  return jax.eval_shape(functools.partial(train_lib.new_state, tx), variables)


@pytest.fixture(scope='module')
def tiny_states():
  """The adamw train state (shapes) of every tiny preset."""
  return {name: _abstract_state(presets.get_config(name)) for name in TINY}


def _specs_by_path(state, fsdp):
  specs, _ = partition_rules.state_specs(state, fsdp)
  flat = jax.tree_util.tree_leaves_with_path(
    specs, is_leaf=lambda s: isinstance(s, P)
  )
  return {partition_rules.path_name(p): s for p, s in flat}


@pytest.mark.parametrize('fsdp', [2, 4, 8])
def test_every_leaf_of_every_preset_gets_a_spec_whose_axes_divide(
  tiny_states, fsdp
):
  for name, state in tiny_states.items():
    specs, unsplit = partition_rules.state_specs(state, fsdp)
    leaves = jax.tree_util.tree_leaves_with_path(state)
    spec_leaves = jax.tree_util.tree_leaves(
      specs, is_leaf=lambda s: isinstance(s, P)
    )
    split = 0
    for (path, x), spec in zip(leaves, spec_leaves, strict=True):
      where = f'{name}: {partition_rules.path_name(path)} {x.shape} {spec}'
      assert len(spec) in (0, x.ndim), where
      axes = [i for i, a in enumerate(spec) if a is not None]
      assert len(axes) <= 1, where
      for i in axes:
        assert spec[i] == 'fsdp' and x.shape[i] % fsdp == 0, where
      split += bool(axes)
    assert split > 0, name
    # Each reported leaf really is replicated, and is a parameter or moment.
    by_path = _specs_by_path(state, fsdp)
    for entry in unsplit:
      assert by_path[entry.split(' ')[0]] == P(), entry
    sizes = {'data': 1, 'fsdp': fsdp}
    whole = jax.tree_util.tree_map(lambda _: P(), specs)
    held = partition_rules.bytes_per_device(state, specs, sizes)
    total = partition_rules.bytes_per_device(state, whole, sizes)
    # Norms and biases stay whole; the weights do, only where no axis
    # divides (tiny_multimodal_autoencoding's 387-wide decoder MLP).
    assert held < (0.6 if not unsplit else 1.0) * total, (name, held, total)


def test_adam_moments_follow_their_parameter_by_path(tiny_states):
  by_path = _specs_by_path(tiny_states['tiny_language_mlm'], 4)
  params = {
    k[len('params/') :]: s for k, s in by_path.items() if 'params/' == k[:7]
  }
  moments = 0
  for name, spec in by_path.items():
    for kind in ('/mu/', '/nu/'):
      if name.startswith('opt_state/') and kind in name:
        assert spec == params[name.split(kind, 1)[1]], name
        moments += 1
  assert moments == 2 * len(params)
  assert sum(s != P() for s in params.values()) > 10


def test_rules_name_the_axis_of_each_kind_of_parameter():
  spec = lambda name, shape, fsdp=4: partition_rules.leaf_spec(  # noqa: E731
    name, shape, fsdp
  )
  # Dense kernels: input features; else output features.
  assert spec('params/a/mlp/dense1/kernel', (64, 32)) == (P('fsdp', None), True)
  assert spec('params/a/query/kernel', (30, 16)) == (P(None, 'fsdp'), True)
  # Norms and biases: whole by choice.
  assert spec('params/a/kv_norm/scale', (64,)) == (P(), True)
  assert spec('params/a/query/bias', (64,)) == (P(), True)
  # Latents: channels. Byte embeddings: 262 ids do not split in 4.
  assert spec('params/encoder/latents', (8, 64)) == (P(None, 'fsdp'), True)
  assert spec('params/p/embed/embedding', (262, 64)) == (P(None, 'fsdp'), True)
  # Nothing divides: whole, and reported.
  assert spec('params/a/value/kernel', (35, 35)) == (P(), False)
  # No rule: the largest axis that divides.
  assert spec('params/x/w', (3, 8, 12)) == (P(None, None, 'fsdp'), True)
  # One device on fsdp, or below the size threshold: whole.
  assert spec('params/a/value/kernel', (64, 64), 1) == (P(), True)
  assert partition_rules.leaf_spec('params/a/k/kernel', (8, 8), 4, 65) == (
    P(),
    True,
  )


def test_a_scanned_stack_is_split_as_each_of_its_layers():
  config = presets.get_config('tiny_language_mlm')
  unrolled = _specs_by_path(_abstract_state(config), 4)
  scanned = _specs_by_path(_abstract_state(dict(config, scan_layers=True)), 4)
  stacked = [k for k in scanned if '/self_attend/' in k]
  assert len(stacked) == 3 * 16  # 16 arrays per layer: params, mu, nu.
  for name in stacked:
    layer = unrolled[name.replace('/self_attend/', '/self_attend_0/')]
    assert scanned[name] == (P(None, *layer) if layer else P()), name
  assert any(scanned[k] != P() for k in stacked)


# ----------------------------------------------------------------------------
# Equality with one device.
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_four_mesh_shapes_on_eight_devices_match_one_device(
  tmp_path, subprocess_env
):
  out = str(tmp_path / 'meshes.pkl')
  proc = subprocess.run(
    [sys.executable, '-m', 'tests.mesh_runs', out, '1x1', *MESHES],
    cwd=ph.REPO,
    env=ph.with_devices(subprocess_env, 8),
    capture_output=True,
    text=True,
    timeout=ph.TIMEOUT,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out, 'rb') as f:
    runs = pickle.load(f)
  # The reference: a mesh of the first device alone.
  ref_losses, ref_params = runs['1x1']['losses'], runs['1x1']['params']
  for shape in MESHES:
    run = runs[shape]
    # Sums over 8 batch shards (and fsdp's reduce-scatter) add in another
    # order than one device's sum: equal to float32 round-off, not bits.
    np.testing.assert_allclose(run['losses'], ref_losses, rtol=1e-5)
    ph.assert_trees(run['params'], ref_params, exact=False)
    assert (run['split'] > 0) == (shape != '8x1'), shape
    assert run['held_bytes'] == run['computed_bytes'], shape
  fsdp8 = runs['1x8']['held_bytes'] / runs['8x1']['held_bytes']
  assert 0.125 <= fsdp8 < 0.5
