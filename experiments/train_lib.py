"""The training loop: one function that reads top to bottom, for every task.

Why it looks like this (big_vision / Flax-examples habits):
`train_and_evaluate` runs in banner sections (workdir, task and data, mesh,
model and optimizer, state and resume, steps, loop) and asks the task
(`experiments.tasks`) at fixed points instead of branching on it. The train
step is jitted once over a data x fsdp mesh of every device of every
process, with the state donated (split over 'fsdp' by rule) and the batch
split over both axes. Everything random is a function of the step and the
global batch (data order, MLM masks, MixUp, dropout), so a run resumed from
any checkpoint ends bit-identical to an uninterrupted one, and one resumed
on another mesh or process count equal to float round-off.
"""

import functools
import logging
import math
import os
from typing import Any, Dict, Optional

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import checkpointing
from experiments import compile_cache
from experiments.workdir import init_from as init_from_lib
from experiments.workdir import lock as workdir_lock
from experiments.workdir import metric_writer
from experiments import models
from experiments import optim
from experiments import process_tuning
from experiments import progress as progress_lib
from experiments import sharding
from experiments import steps
from experiments import tasks
from experiments import workdir as workdir_lib
from perceiver_io import flops

PyTree = Any


class NonFiniteError(FloatingPointError):
  """Loss or gradient norm became NaN/inf."""


class Preempted(SystemExit):
  """Raised after SIGTERM, once the checkpoint is saved (exit code 143)."""

  def __init__(self):
    super().__init__(143)


# ============================================================================
# The loop.
# ============================================================================


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> Dict[str, Any]:
  """Trains (resuming from `workdir` if possible), evaluates, checkpoints.

  Args:
    config: the experiment config (configs/common.py fields).
    workdir: the run directory (layout: experiments/workdir/).

  Returns:
    {'step': final step, 'eval': final eval metrics, 'train_loss': last
     loss, 'state': the train state, 'model': the module, 'task': the task}.

  Raises:
    NonFiniteError: loss or gradient norm not finite (last good checkpoint
      kept).
    Preempted: SIGTERM arrived; a checkpoint was saved (exit code 143).
  """
  configure_jax(config)
  check_loop_settings(config)
  # One run per workdir (`workdir.lock`); a start refused for any reason
  # removes the directories it made, and nothing is written to the workdir
  # until the run's state exists: the workdir is left as it was.
  with (
    workdir_lock.claim(workdir, [workdir_lib.CHECKPOINT_DIR]) as started,
    compile_cache.scope() as cache,
  ):
    return train_in_workdir(config, workdir, started, cache)


def train_in_workdir(
  config: ml_collections.ConfigDict, workdir: str, started, cache
) -> Dict[str, Any]:
  """`train_and_evaluate` in a workdir it has locked; `started()` marks the
  point from which the run exists (its state and records), from which
  `cache` (a `compile_cache.Scope`) keeps what it compiles."""
  # -------------------------------------------------------------- workdir --
  task = tasks.get(config)
  model, description = models.build(config, task.num_outputs())
  workdir_lib.check_workdir(
    workdir, description, bool(config.overwrite), config.to_dict()
  )
  pretrained = pretrained_variables(config, workdir)  # Before the data.

  # -------------------------------------------------------- task and data --
  example = task.example_batch()
  # Before anything creates JAX's backend (process_tuning.py).
  process_tuning.log_host_memory_reuse(
    process_tuning.reuse_host_memory_for_step(
      train_step_flops(model, task, int(config.batch_size))
    )
  )
  train_info, eval_info = task.data_info()
  num_steps = steps.total_steps(config, train_info['num_examples'])
  logging.info(
    'data: %s; %d steps of batch %d.',
    data_summary(train_info, eval_info, config),
    num_steps,
    config.batch_size,
  )

  # ----------------------------------------------------------------- mesh --
  mesh = sharding.make_mesh(int(config.mesh.data), int(config.mesh.fsdp))
  sharding.check_batch_size(int(config.batch_size), mesh)
  sharding.check_batch_size(
    int(config.eval_batch_size), mesh, 'eval_batch_size'
  )
  replicated = sharding.replicated(mesh)
  data_sharding = sharding.batch_sharding(mesh)
  logging.info(
    'mesh: %d devices over %d process(es), data=%d x fsdp=%d.',
    mesh.size,
    jax.process_count(),
    *mesh.devices.shape,
  )

  # -------------------------------------------------- model and optimizer --
  init = functools.partial(
    steps.init_variables, model, task.model_inputs(example), int(config.seed)
  )
  abstract_vars = jax.eval_shape(init)
  tx, schedule = optim.make_optimizer(
    config, abstract_vars['params'], num_steps
  )
  make_state = functools.partial(new_state, tx)

  # ---------------------------------------------------- state and resume --
  # Priority: (1) the workdir's latest checkpoint, (2) config.init_from,
  # (3) fresh initialisation.
  abstract_state = jax.eval_shape(make_state, abstract_vars)
  state_sharding = state_shardings(abstract_state, mesh, config)
  ckpt = workdir_lib.open_checkpoints(
    workdir, int(config.keep_checkpoints), config.best_metric, config.best_mode
  )
  try:
    # A step that does not read is moved aside: resume from the one before.
    latest, state = ckpt.restore_newest_intact(
      lambda step: restore_state(ckpt, step, abstract_state, state_sharding),
      functools.partial(set_aside, ckpt, workdir),
    )
    if latest is None:
      if pretrained is None:  # Every step was moved aside: start afresh.
        pretrained = pretrained_variables(config, workdir)
      state = initial_state(
        init, make_state, pretrained, state_sharding, replicated
      )
      pretrained = None  # Its arrays are in `state` now.
  except BaseException:
    ckpt.close()
    raise
  start_step = int(jax.device_get(state['step']))
  # The run exists now: record what it is.
  workdir_lib.write_records(workdir, config, description, train_info)
  started()
  # From here on compiled steps are kept, so a restart loads them.
  cache_dir = cache.enable(config, workdir)
  train_stream = task.train_stream(start_step)

  # ---------------------------------------------------------------- steps --
  train_step = jax.jit(
    steps.make_train_step(model, task, tx, schedule, config),
    in_shardings=(state_sharding, data_sharding),
    out_shardings=(state_sharding, replicated),
    donate_argnums=(0,),
  )
  eval_step = jax.jit(
    steps.make_eval_step(model, task),
    in_shardings=(
      state_sharding['params'],
      state_sharding['model_state'],
      data_sharding,
    ),
    out_shardings=replicated,
  )

  # ----------------------------------------------------------------- loop --
  writer = metric_writer.MetricWriter(workdir, start_step)
  preemption = checkpointing.PreemptionFlag().install()
  history = []  # (step, device metrics) since the last finite check.
  last_metrics, eval_metrics = {}, {}
  last_good_step = latest
  if jax.process_index() == 0:
    logging.info('%s', progress_lib.where_outputs_go(workdir))
  progress = progress_lib.TrainProgress(config, start_step, num_steps)
  timer = progress_lib.Throughput(config.batch_size, num_steps, start_step)
  try:
    for step in range(start_step, num_steps):
      batch = sharding.global_batch(train_stream.batch(step), mesh)
      if step == start_step:
        # Compile ahead of the first step and hand the compiler's freed heap
        # back to the OS, so it does not add to the step's peak memory.
        with progress.compiling(cache_dir):
          train_step = train_step.lower(state, batch).compile()
        process_tuning.release_host_memory()
      state, metrics = train_step(state, batch)
      process_tuning.settle_host_memory()  # CPU: keep one step's temporaries.
      done = step + 1
      if step == start_step:  # Compilation: keep it out of examples/s.
        timer.restart(done, metrics)
      history.append((done, metrics))
      progress.update(done)

      is_last = done == num_steps
      log_now = done % config.log_every_steps == 0 or is_last
      eval_now = done % config.eval_every_steps == 0 or is_last
      preempted = preemption_agreed(preemption.requested, log_now)
      save_now = (
        done % config.checkpoint_every_steps == 0 or is_last or preempted
      )
      if log_now or eval_now or save_now:
        history = [(s, sharding.to_host(m)) for s, m in history]
        check_finite(history, ckpt, last_good_step)
        last_metrics = dict(history[-1][1])
        if log_now:
          progress_lib.log_train_metrics(writer, done, last_metrics, timer)
        history = []
      if eval_now:
        eval_metrics = evaluate(
          task, eval_step, state, mesh, model, writer, done
        )
      if save_now or eval_now:
        ckpt.save(
          done,
          state,
          metrics=(
            {k: float(v) for k, v in eval_metrics.items()} if eval_now else None
          ),
        )
        last_good_step = done
      if eval_now:
        check_best_metric(config, eval_metrics, ckpt, done)
      if preempted and not is_last:
        stop_for_preemption(ckpt, done)
  finally:
    preemption.uninstall()
    progress.close()
    ckpt.close()
    writer.close()
  if start_step >= num_steps:  # Already trained: just evaluate.
    eval_metrics = task.evaluate(eval_step, state, mesh, model)
  return {
    'step': max(start_step, num_steps),
    'eval': eval_metrics,
    'train_loss': float(last_metrics.get('loss', float('nan'))),
    'state': state,
    'model': model,
    'task': task,
  }


# ============================================================================
# Helpers of the loop.
# ============================================================================


def configure_jax(config) -> None:
  if config.disable_most_optimizations:
    jax.config.update('jax_disable_most_optimizations', True)


# Loop settings that must be positive integers (one clear error instead of a
# ZeroDivisionError mid-run, or an eval that fails after training).
POSITIVE_SETTINGS = (
  'batch_size',
  'eval_batch_size',
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
)


def check_loop_settings(config) -> None:
  bad = [f'{k}={config[k]}' for k in POSITIVE_SETTINGS if int(config[k]) < 1]
  if bad:
    raise ValueError(
      f'config.{", config.".join(bad)}: must be >= 1 '
      f'({", ".join(POSITIVE_SETTINGS)} are counts of '
      f'examples or steps).'
    )


def train_step_flops(model, task, batch_size: int) -> float:
  """Matmul FLOPs of one train step (3x the forward), from shapes only.

  Creates no JAX backend (`flops.forward_flops`), so the launcher can
  size the step before choosing process settings
  (`process_tuning.reuse_host_memory_for_step`).
  """
  example = task.example_batch()
  inputs, kwargs = task.model_inputs(example)
  examples = len(next(iter(example.values())))
  return (
    3.0
    * flops.forward_flops(models.counting_model(model), inputs, **kwargs)
    * (batch_size / examples)
  )


def data_summary(train_info, eval_info, config) -> str:
  """The task's summary of its data, else its example counts; an eval set
  counted only while evaluating is named by its source and split."""
  if train_info.get('summary'):
    return train_info['summary']
  count = int(eval_info['num_examples'])
  if count >= 0:
    return f'{train_info["num_examples"]} train / {count} eval examples'
  data = config.data
  limit = int(config.max_eval_examples)
  return (
    f'{train_info["num_examples"]} train examples; eval: '
    f'{data.get("eval_source") or data.source} [{data.eval_split}]'
    + (f', at most {limit} examples' if limit > 0 else '')
  )


def pretrained_variables(config, workdir: str) -> Optional[PyTree]:
  """The variables of config.init_from, unless the workdir has checkpoints
  to resume from."""
  if not config.init_from:
    return None
  if workdir_lib.has_checkpoints(workdir):
    logging.info(
      "init_from %s is not used: resuming from the workdir's checkpoints.",
      config.init_from,
    )
    return None
  return init_from_lib.load_init_from(
    config.init_from, config.model.preset
  ).variables


def new_state(tx, variables: PyTree) -> PyTree:
  """The training state of fresh `variables`: step 0, optimizer state."""
  variables = dict(variables)
  params = variables.pop('params')
  return dict(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    model_state=variables,
  )


def state_shardings(abstract_state: PyTree, mesh, config) -> PyTree:
  """Each state array's layout (`sharding.state_shardings`), logged with
  the bytes of state each device holds."""
  shardings, unsplit = sharding.state_shardings(
    abstract_state, mesh, int(config.shard_params_min_size)
  )
  leaves = jax.tree_util.tree_leaves(shardings)
  # Only worth a line where there is something to split.
  log = logging.info if mesh.size > 1 else logging.debug
  log(
    'state: %d of %d arrays sharded over fsdp=%d, the rest replicated.',
    sum(not s.is_fully_replicated for s in leaves),
    len(leaves),
    sharding.axis_sizes(mesh)[sharding.FSDP_AXIS],
  )
  if unsplit:  # Named by parameter: their optimizer moments follow them.
    named = [u for u in unsplit if not u.startswith('opt_state/')]
    logging.warning(
      'state: %d array(s) replicated, no axis their rule names divides '
      'fsdp=%d: %s.',
      len(unsplit),
      sharding.axis_sizes(mesh)[sharding.FSDP_AXIS],
      ', '.join(named[:4]) + (', ...' if len(named) > 4 else ''),
    )
  logging.info(
    'memory: parameters + optimizer state %s per device (all %d devices '
    'alike).',
    sharding.format_bytes(
      sharding.state_bytes_per_device(abstract_state, shardings)
    ),
    mesh.size,
  )
  return shardings


def restore_state(
  ckpt: checkpointing.Checkpointer,
  step: int,
  abstract_state: PyTree,
  state_sharding: PyTree,
) -> PyTree:
  """The training state saved at `step`, laid out as `state_sharding`."""
  logging.info('resuming from %s step %d.', ckpt.directory, step)
  abstract_state = jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    abstract_state,
    state_sharding,
  )
  try:
    return ckpt.restore(step, abstract_state)
  except checkpointing.CorruptCheckpointError:
    raise
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
      f'the checkpoint at step {step} in {ckpt.directory} does not fit '
      f'this run (same model and settings, but another state layout, '
      f'e.g. from an older version): {str(e)[:300]}. Use another '
      '--workdir.'
    ) from e


def set_aside(
  ckpt: checkpointing.Checkpointer,
  workdir: str,
  error: checkpointing.CorruptCheckpointError,
) -> None:
  """Moves an unreadable step out of the way of the resume (kept)."""
  aside = ckpt.move_aside(
    error.step, os.path.join(workdir, workdir_lib.CORRUPT_CHECKPOINT_DIR)
  )
  logging.warning(
    'checkpoint step %d cannot be read (%s); moved it to %s (kept) and '
    'resuming from the newest step that reads.',
    error.step,
    error.cause,
    aside,
  )


def initial_state(
  init,
  make_state,
  pretrained: Optional[PyTree],
  state_sharding: PyTree,
  replicated,
) -> PyTree:
  """A fresh training state, with the pretrained arrays that fit."""
  if pretrained is None:  # One compile for init + optimizer state.
    return jax.jit(lambda: make_state(init()), out_shardings=state_sharding)()
  variables = jax.jit(init, out_shardings=replicated)()
  variables, new, unused = models.merge_pretrained(variables, pretrained)
  models.log_merge(new, unused)
  variables = jax.device_put(variables, replicated)
  return jax.jit(make_state, out_shardings=state_sharding)(variables)


def preemption_agreed(requested: bool, sync_point: bool) -> bool:
  """Whether to stop for preemption now, the same answer on every process.

  One process: the local flag, every step. Several: the flags are combined
  at log steps only (a cheap all-gather), so all processes save the same
  step together (an Orbax save is collective).
  """
  if jax.process_count() == 1:
    return requested
  if not sync_point:
    return False
  flags = multihost_utils.process_allgather(np.asarray([requested], np.int32))
  return bool(np.any(flags))


def first_nonfinite(history) -> Optional[tuple]:
  """(step, name, value) of the first non-finite loss/grad norm, else None."""
  for step, metrics in history:
    for name in ('loss', 'grad_norm'):
      value = float(metrics[name])
      if not math.isfinite(value):
        return step, name, value
  return None


def check_finite(
  history, ckpt: checkpointing.Checkpointer, last_good_step: Optional[int]
) -> None:
  """Stops at the first non-finite loss, naming the last good checkpoint."""
  bad = first_nonfinite(history)
  if bad is None:
    return
  ckpt.wait()
  kept = (
    f'The last good checkpoint (step {last_good_step}) is kept in '
    f'{ckpt.directory}.'
    if last_good_step is not None
    else 'No checkpoint was saved before it.'
  )
  raise NonFiniteError(
    f'{bad[1]} is {bad[2]} at step {bad[0]}; stopping. {kept} Try a lower '
    'optimizer.learning_rate, optimizer.grad_clip_norm > 0, or '
    'model.dtype=float32.'
  )


def check_best_metric(
  config,
  eval_metrics: Dict[str, Any],
  ckpt: checkpointing.Checkpointer,
  step: int,
) -> None:
  """A best_metric the task does not report would make 'best' the latest."""
  if not config.best_metric or config.best_metric in eval_metrics:
    return
  ckpt.wait()
  raise ValueError(
    f'config.best_metric={config.best_metric!r} is not an eval metric '
    f'of this task ({", ".join(sorted(eval_metrics))}), so "best" '
    f'checkpoints would silently be the latest. The run is saved at '
    f'step {step}: run the same command again with --config.'
    'best_metric set to one of those.'
  )


def evaluate(
  task,
  eval_step,
  state,
  mesh,
  model,
  writer: metric_writer.MetricWriter,
  step: int,
) -> Dict[str, Any]:
  """The task's eval metrics at `step`, logged and recorded."""
  metrics = task.evaluate(eval_step, state, mesh, model)
  writer.write(step, {f'eval_{k}': v for k, v in metrics.items()})
  logging.info(
    'eval at step %d: %s', step, progress_lib.format_metrics(metrics)
  )
  return metrics


def stop_for_preemption(ckpt: checkpointing.Checkpointer, step: int) -> None:
  ckpt.wait()
  logging.warning(
    'preempted: checkpoint at step %d saved in %s.', step, ckpt.directory
  )
  raise Preempted()
