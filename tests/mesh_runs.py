"""A few train steps of one config on several meshes, in one process.

Why in one process: a JAX process fixes its device count at start (3 s of
start-up each), so the mesh shapes of 8 simulated devices are trained one
after another here, with the runner's own pieces (task, model, optimizer,
`train_lib.state_shardings`, `steps.make_train_step`, `sharding.global_batch`)
and no workdir, eval or checkpoint in the way.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m tests.mesh_runs OUT.pkl 1x1 8x1 4x2 2x4 1x8
"""

import concurrent.futures
import functools
import pickle
import sys

import jax
import numpy as np

from configs import quickstart
from experiments import models
from experiments import optim
from experiments import sharding
from experiments import steps
from experiments import tasks
from experiments import train_lib
from tests import helpers

NUM_STEPS = 4


def tiny_config(**fields):
  """The quickstart's tiny config (global batch 8), with `fields` set."""
  config = quickstart.get_config('tiny')
  return helpers.override_config(
    config, num_train_steps=NUM_STEPS, batch_size=8, **fields
  )


def setup(config):
  """(task, train step function, initial state on the host)."""
  train_lib.configure_jax(config)
  task = tasks.get(config)
  model, _ = models.build(config, task.num_outputs())
  init = functools.partial(
    steps.init_variables,
    model,
    task.model_inputs(task.example_batch()),
    int(config.seed),
  )
  abstract_vars = jax.eval_shape(init)
  tx, schedule = optim.make_optimizer(
    config, abstract_vars['params'], int(config.num_train_steps)
  )
  state = jax.jit(lambda: train_lib.new_state(tx, init()))()
  # One function for every mesh: JAX traces it once.
  train_fn = steps.make_train_step(model, task, tx, schedule, config)
  return task, train_fn, sharding.to_host(state)


def compile_for_mesh(config, mesh, setup_result):
  """(the train step compiled for `mesh`, the state shardings)."""
  task, train_fn, state = setup_result
  abstract_state = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state
  )
  shardings = train_lib.state_shardings(abstract_state, mesh, config)
  batch = sharding.global_batch(task.train_stream(0).batch(0), mesh)
  train_step = jax.jit(
    train_fn,
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  return train_step.lower(abstract_state, batch).compile(), shardings


def train_on_mesh(config, mesh, setup_result, compiled=None):
  """(per-step losses, the final state, its shardings)."""
  task, _, state = setup_result
  train_step, shardings = compiled or compile_for_mesh(
    config, mesh, setup_result
  )
  state = jax.device_put(state, shardings)
  stream = task.train_stream(0)
  losses = []
  for step in range(int(config.num_train_steps)):
    batch = sharding.global_batch(stream.batch(step), mesh)
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
  return losses, state, shardings


def held_bytes(state):
  """The most bytes of `state` any one device holds, counted from the
  arrays' actual shards."""
  per_device = {}
  for leaf in jax.tree_util.tree_leaves(state):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = (
        per_device.get(shard.device, 0) + shard.data.nbytes
      )
  return max(per_device.values())


def main(argv):
  out, *shapes = argv[1:]
  config = tiny_config()
  prepared = setup(config)
  meshes = {}
  for shape in shapes:
    data, fsdp = (int(n) for n in shape.split('x'))
    # A mesh of fewer devices takes the first ones (1x1: one device).
    meshes[shape] = sharding.make_mesh(data, fsdp, jax.devices()[: data * fsdp])
  # XLA compiles outside the GIL: both cores compile at once.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    compiled = dict(
      zip(
        shapes,
        pool.map(
          lambda m: compile_for_mesh(config, m, prepared), meshes.values()
        ),
      )
    )
  results = {}
  for shape, mesh in meshes.items():
    losses, state, shardings = train_on_mesh(
      config, mesh, prepared, compiled[shape]
    )
    split = sum(
      not s.is_fully_replicated for s in jax.tree_util.tree_leaves(shardings)
    )
    results[shape] = dict(
      losses=losses,
      params=sharding.to_host(state['params']),
      split=split,
      held_bytes=held_bytes(state),
      computed_bytes=sharding.state_bytes_per_device(state, shardings),
    )
  with open(out, 'wb') as f:
    pickle.dump(jax.tree_util.tree_map(np.asarray, results), f)


if __name__ == '__main__':
  main(sys.argv)
