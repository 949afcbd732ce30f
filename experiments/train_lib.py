"""The training loop: one readable function plus small pure helpers.

Why it looks like this (big_vision / Flax-examples habits): `train_and_evaluate`
reads top to bottom in banner sections (workdir, data, mesh, model and
optimizer, state and resume, steps, loop). The train step is jitted once over
a mesh of every device of every process, with the state donated; the batch
is sharded on 'data', the state replicated. Everything random is a function
of the step (data order, MLM masks, dropout = fold_in(key, step)), so a run
resumed from any checkpoint ends bit-identical to an uninterrupted one.
"""

import collections
import functools
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import checkpointing
from experiments import eval_progress
from experiments import input_pipeline
from experiments import models
from experiments import optim
from experiments import process_tuning
from experiments import sharding
from experiments import tasks
from perceiver_io import flops

PyTree = Any
# Python-side trace counters: a retrace of a step shows up here (tests).
TRACE_COUNTS = collections.Counter()
METRICS_FILE = 'metrics.jsonl'


BUILTIN_TASKS = ('classification', 'regression', 'mlm')


def get_task(config, model_config=None):
  """The task object for `config.task`, or None for the built-in tasks.

  Tasks that bring their own data, loss and evaluation (ImageNet, optical
  flow) are looked up in `experiments.task_registry` (imported only then);
  see its docstring for the interface the loop calls.
  """
  if config.task in BUILTIN_TASKS:
    return None
  from experiments import task_registry  # pylint: disable=g-import-not-at-top
  task = task_registry.get(config, model_config)
  if task is None:
    raise ValueError(f'unknown config.task {config.task!r}; valid: '
                     f'{", ".join(BUILTIN_TASKS + tuple(task_registry.TASKS))}.')
  return task


class NonFiniteError(FloatingPointError):
  """Loss or gradient norm became NaN/inf."""


class Preempted(SystemExit):
  """Raised after SIGTERM, once the checkpoint is saved (exit code 143)."""

  def __init__(self):
    super().__init__(143)


# ============================================================================
# Small pure helpers.
# ============================================================================


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """Training steps: num_train_steps if > 0, else num_epochs over the data."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.num_epochs <= 0:
    raise ValueError('set config.num_train_steps > 0 or config.num_epochs > 0.')
  return max(int(math.ceil(config.num_epochs * num_examples /
                           config.batch_size)), 1)


def model_inputs(batch: Dict[str, Any]):
  """(inputs, keyword arguments) of the model call for a batch."""
  if 'image' in batch:
    return batch['image'], {}
  return batch['input_ids'], {'attention_mask': batch['attention_mask']}


def apply_model(model, variables, batch, *, train: bool,
                dropout_key=None):
  """Runs the model; returns (outputs, updated non-param collections)."""
  inputs, kwargs = model_inputs(batch)
  mutable = [k for k in variables if k != 'params'] if train else []
  mutable = mutable or False
  rngs = {'dropout': dropout_key} if (train and dropout_key is not None) else {}
  out = model.apply(variables, inputs, deterministic=not train, rngs=rngs,
                    mutable=mutable, **kwargs)
  if mutable:
    outputs, new_state = out
    return outputs, dict(new_state)
  return out, {}


def make_train_step(model, tx, schedule, config, task_object=None
                    ) -> Callable:
  """The (not yet jitted) train step: (state, batch) -> (state, metrics).

  With a task object, its `train_transform(batch, key)` (e.g. MixUp) runs
  first and its `loss_fn(outputs, batch)` replaces the built-in loss.
  """
  task = config.task
  smoothing = float(config.label_smoothing)
  accumulate = int(config.optimizer.accumulate_steps)
  base_key = jax.random.PRNGKey(int(config.seed) + 1)
  transform_key = jax.random.PRNGKey(int(config.seed) + 2)

  def train_step(state, batch):
    TRACE_COUNTS['train_step'] += 1
    step = state['step']
    dropout_key = jax.random.fold_in(base_key, step)
    others = state['model_state']
    if task_object is not None:
      batch = task_object.train_transform(
          batch, jax.random.fold_in(transform_key, step))

    def loss_of(params):
      outputs, new_others = apply_model(
          model, {'params': params, **others}, batch, train=True,
          dropout_key=dropout_key)
      if task_object is not None:
        loss_sum, weight = task_object.loss_fn(outputs, batch)
      else:
        loss_sum, weight = tasks.loss_fn(task, outputs, batch, smoothing)
      denom = jnp.maximum(jnp.sum(weight), 1.0)
      return jnp.sum(loss_sum) / denom, new_others

    (loss, new_others), grads = jax.value_and_grad(loss_of, has_aux=True)(
        state['params'])
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    new_state = dict(step=step + 1, params=params, opt_state=opt_state,
                     model_state={**others, **new_others})
    metrics = {'loss': loss, 'grad_norm': grad_norm,
               'learning_rate': schedule(step // accumulate)}
    return new_state, metrics

  return train_step


def make_eval_step(model, task: str) -> Callable:
  """(params, model_state, batch) -> per-example outputs for tasks.summarize."""

  def eval_step(params, model_state, batch):
    TRACE_COUNTS['eval_step'] += 1
    outputs, _ = apply_model(model, {'params': params, **model_state}, batch,
                             train=False)
    return tasks.eval_outputs(task, outputs, batch)

  return eval_step


def eval_metric_names(config) -> tuple:
  return tuple(n.strip() for n in config.eval_metrics.split(',') if n.strip())


def evaluate(eval_step, state, table, config, mesh) -> Dict[str, float]:
  """Runs the whole eval table and returns the task's metrics."""
  gathered = collections.defaultdict(list)
  limit = int(config.max_eval_examples)
  if config.task == 'mlm':
    batches = input_pipeline.mlm_eval_batches(config)
    expected = limit if limit > 0 else None  # The stream's length is unknown.
    unit = 'sequence'
  else:
    batches = input_pipeline.eval_batches(
        table, int(config.eval_batch_size), jax.process_index(),
        jax.process_count(), limit)
    expected = len(next(iter(table.values())))
    if limit > 0:
      expected = min(expected, limit)
    unit = 'example'
  with eval_progress.EvalProgress(config, expected, unit) as progress:
    for local in batches:
      batch = sharding.global_batch(local, mesh)
      out = sharding.to_host(eval_step(state['params'], state['model_state'],
                                       batch))
      process_tuning.settle_host_memory()
      for k, v in out.items():
        gathered[k].append(v)
      progress.update(_batch_examples(local) * jax.process_count())
  gathered = {k: np.concatenate(v) for k, v in gathered.items()}
  return tasks.summarize(config.task, gathered, eval_metric_names(config))


def _batch_examples(local) -> int:
  """Real (weight > 0) rows of a local eval batch, else its row count."""
  if 'weight' in local:
    return int(np.sum(np.asarray(local['weight']) > 0))
  return len(next(iter(local.values())))


def run_evaluation(task_object, eval_step, state, table, config, mesh,
                   model) -> Dict[str, Any]:
  """Eval metrics from the task object if there is one, else built-in."""
  if task_object is not None:
    return task_object.evaluate(eval_step, state, mesh, model)
  return evaluate(eval_step, state, table, config, mesh)


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
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
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


class MetricWriter:
  """metrics.jsonl (one JSON object per line) + TensorBoard events.

  Only process 0 writes. TensorBoard uses tensorboardX (no TensorFlow).
  A run resumed at `start_step` first drops the records written after it
  (a crash after the last checkpoint logged steps the resumed run logs
  again), so each step has one record.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, METRICS_FILE)
    self.tb = None
    if self.enabled:
      drop_records_after(self.path, start_step)
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        # purge_step: TensorBoard hides the events logged after start_step.
        self.tb = tensorboardX.SummaryWriter(
            os.path.join(workdir, 'tb'),
            purge_step=int(start_step) if start_step else None)
      except ImportError:
        logging.warning('tensorboardX is not installed; no TensorBoard '
                        'events (pip install tensorboardX).')

  def write(self, step: int, metrics: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step)}
    record.update({k: (float(v) if isinstance(v, (float, np.floating,
                                                 np.ndarray, jax.Array))
                       else v) for k, v in metrics.items()})
    append_jsonl(self.path, record)
    if self.tb is not None:
      for k, v in record.items():
        if k != 'step' and isinstance(v, (int, float)):
          self.tb.add_scalar(k, v, int(step))
      self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()


def drop_records_after(path: str, step: int) -> None:
  """Rewrites metrics.jsonl without the records of steps > `step`."""
  import json  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = []
  for line in lines:
    try:
      if int(json.loads(line).get('step', 0)) <= step:
        keep.append(line)
    except (ValueError, TypeError, AttributeError):
      keep.append(line)  # Not ours to judge: leave it.
  if len(keep) != len(lines):
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
      f.writelines(keep)
    os.replace(tmp, path)
    logging.info('metrics: dropped %d records after step %d (logged before '
                 'the last crash, logged again now).', len(lines) - len(keep),
                 step)


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
  import json  # pylint: disable=g-import-not-at-top
  with open(path, 'a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')


def format_eta(seconds: float) -> str:
  seconds = max(int(seconds), 0)
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def init_variables(model, example_batch, seed: int) -> PyTree:
  """Fresh model variables from an example batch (shapes only matter)."""
  inputs, kwargs = model_inputs(example_batch)
  return model.init(jax.random.PRNGKey(seed), inputs, deterministic=True,
                    **kwargs)


def train_step_flops(model, example, batch_size: int) -> float:
  """Matmul FLOPs of one train step (3x the forward), from shapes only.

  Creates no JAX backend (`flops.forward_flops`), so the launcher can
  size the step before choosing process settings
  (`process_tuning.reuse_host_memory_for_step`).
  """
  inputs, kwargs = model_inputs(example)
  examples = len(next(iter(example.values())))
  return 3.0 * flops.forward_flops(model, inputs, **kwargs) * (
      batch_size / examples)


def example_batch(table) -> Dict[str, np.ndarray]:
  """One example of each input array (for init / shape inference)."""
  return {k: np.asarray(v[:1]) for k, v in table.items()}


def text_example(max_length: int) -> Dict[str, np.ndarray]:
  return {'input_ids': np.zeros((1, max_length), np.int32),
          'attention_mask': np.ones((1, max_length), np.int32)}


def configure_jax(config) -> None:
  if config.disable_most_optimizations:
    jax.config.update('jax_disable_most_optimizations', True)


# ============================================================================
# The loop.
# ============================================================================


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, Any]:
  """Trains (resuming from `workdir` if possible), evaluates, checkpoints.

  Args:
    config: the experiment config (configs/common.py fields).
    workdir: run directory (config.json, model.json, checkpoints/, tb/,
      metrics.jsonl).

  Returns:
    {'step': final step, 'eval': final eval metrics, 'train_loss': last loss}.

  Raises:
    NonFiniteError: loss or gradient norm not finite (last good checkpoint
      kept).
    Preempted: SIGTERM arrived; a checkpoint was saved (exit code 143).
  """
  configure_jax(config)
  check_loop_settings(config)
  # -------------------------------------------------------------- workdir --
  # Nothing is written to the workdir until the run's state exists: a start
  # refused for any reason leaves it as it was.
  make_workdir(workdir)
  model, description = models.build(config)
  check_lengths(config, description)
  checkpointing.check_workdir(workdir, description, bool(config.overwrite),
                              config.to_dict())
  pretrained = None
  if config.init_from and checkpointing.has_checkpoints(workdir):
    logging.info('init_from %s is not used: resuming from the workdir\'s '
                 'checkpoints.', config.init_from)
  elif config.init_from:  # Before the data: a bad path fails in seconds.
    pretrained = models.load_pretrained(config.init_from,
                                        config.model.preset)

  # ----------------------------------------------------------------- data --
  task_object = get_task(config)
  if task_object is None:
    input_pipeline.check_eval_is_not_train(config)
  train_table, eval_table = None, None
  if task_object is None and config.task != 'mlm':
    train_table, train_info = input_pipeline.load_table(
        config, config.data.train_split)
    eval_table, eval_info = input_pipeline.load_table(
        config, config.data.eval_split)
    _check_labels(config, train_table, eval_table)
  if task_object is not None:
    example = task_object.example_batch()
  elif train_table is not None:
    example = example_batch(train_table)
  else:
    example = text_example(int(config.data.max_length))
  # Before anything creates JAX's backend (process_tuning.reuse_host_memory_for_step).
  logging.info('host memory reuse: %s', process_tuning.reuse_host_memory_for_step(
      train_step_flops(model, example, int(config.batch_size))))
  is_main = jax.process_index() == 0
  if task_object is not None:
    train_info, eval_info = task_object.data_info()
  elif config.task == 'mlm':
    if config.num_train_steps <= 0:
      raise ValueError('MLM runs are sized in steps: set '
                       'config.num_train_steps > 0.')
    train_info = {'num_examples': 0, 'label_names': []}
    eval_info = {'num_examples': -1, 'label_names': []}
  num_steps = (task_object.num_steps()
               if hasattr(task_object, 'num_steps')
               else total_steps(config, train_info['num_examples']))
  if config.task == 'mlm' and task_object is None:
    # A stream: documents are counted as they are read, not up front.
    logging.info('data: MLM stream from %s (train split %s, eval split %s); '
                 '%d steps of batch %d.', config.data.source,
                 config.data.train_split, config.data.eval_split, num_steps,
                 config.batch_size)
  else:
    logging.info('data: %d train / %d eval examples; %d steps of batch %d.',
                 train_info['num_examples'], eval_info['num_examples'],
                 num_steps, config.batch_size)

  # ----------------------------------------------------------------- mesh --
  mesh = sharding.make_mesh()
  sharding.check_batch_size(int(config.batch_size), mesh)
  sharding.check_batch_size(int(config.eval_batch_size), mesh,
                            'eval_batch_size')
  replicated = sharding.replicated(mesh)
  data_sharding = sharding.batch_sharding(mesh)
  logging.info('mesh: %d devices over %d process(es).', mesh.size,
               jax.process_count())

  # -------------------------------------------------- model and optimizer --
  abstract_vars = jax.eval_shape(
      functools.partial(init_variables, model, example, int(config.seed)))
  tx, schedule = optim.make_optimizer(config, abstract_vars['params'],
                                      num_steps)

  def make_state(variables):
    variables = dict(variables)
    params = variables.pop('params')
    return dict(step=jnp.zeros((), jnp.int32), params=params,
                opt_state=tx.init(params), model_state=variables)

  # ------------------------------------------------- state and resume ------
  # Priority: (1) the workdir's latest checkpoint, (2) config.init_from,
  # (3) fresh initialisation.
  abstract_state = jax.eval_shape(make_state, abstract_vars)
  state_sharding = sharding.state_shardings(
      abstract_state, mesh, int(config.shard_params_min_size))
  shardings = jax.tree_util.tree_leaves(state_sharding)
  logging.info('state: %d of %d arrays sharded over %d devices, the rest '
               'replicated.', sum(not s.is_fully_replicated for s in shardings),
               len(shardings), mesh.size)
  abstract_state = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, state_sharding)
  ckpt = checkpointing.Checkpointer(
      workdir, keep=int(config.keep_checkpoints),
      best_metric=config.best_metric, best_mode=config.best_mode)
  latest = ckpt.latest_step()
  if latest is not None:
    logging.info('resuming from %s step %d.', ckpt.directory, latest)
    try:
      state = ckpt.restore(latest, abstract_state)
    except checkpointing.CorruptCheckpointError:
      ckpt.close()
      raise
    except (ValueError, KeyError, TypeError) as e:
      ckpt.close()
      raise ValueError(
          f'the checkpoint at step {latest} in {ckpt.directory} does not fit '
          f'this run (same model and settings, but another state layout, '
          f'e.g. from an older version): {str(e)[:300]}. Use another '
          '--workdir.') from e
  else:
    init = functools.partial(init_variables, model, example, int(config.seed))
    if pretrained is not None:
      variables = jax.jit(init, out_shardings=replicated)()
      variables, new, unused = models.merge_pretrained(variables, pretrained)
      pretrained = None  # Its arrays are in `variables` now.
      models.log_merge(new, unused)
      variables = jax.device_put(variables, replicated)
      state = jax.jit(make_state, out_shardings=state_sharding)(variables)
    else:  # One compile for init + optimizer state.
      state = jax.jit(lambda: make_state(init()),
                      out_shardings=state_sharding)()
  start_step = int(jax.device_get(state['step']))
  if is_main:  # The run exists now: record what it is.
    checkpointing.write_json_atomic(
        os.path.join(workdir, checkpointing.CONFIG_FILE), config.to_dict())
    checkpointing.write_json_atomic(
        os.path.join(workdir, checkpointing.MODEL_FILE), description)
    checkpointing.write_json_atomic(
        os.path.join(workdir, checkpointing.DATA_INFO_FILE),
        {'label_names': list(train_info.get('label_names') or []),
         'text_fields': list(train_info.get('text_fields') or []),
         'num_examples': int(train_info['num_examples']),
         'source': config.data.source})
  if task_object is not None:
    train_stream = task_object.train_stream(start_step)
  elif config.task == 'mlm':
    train_stream = input_pipeline.MlmTrainStream(config, start_step)
  else:
    train_stream = input_pipeline.TableTrainStream(config, train_table)

  # ---------------------------------------------------------------- steps --
  train_step = jax.jit(make_train_step(model, tx, schedule, config,
                                       task_object),
                       in_shardings=(state_sharding, data_sharding),
                       out_shardings=(state_sharding, replicated),
                       donate_argnums=(0,))
  eval_fn = (task_object.make_eval_step(model) if task_object is not None
             else make_eval_step(model, config.task))
  eval_step = jax.jit(eval_fn,
                      in_shardings=(state_sharding['params'],
                                    state_sharding['model_state'],
                                    data_sharding),
                      out_shardings=replicated)

  # ----------------------------------------------------------------- loop --
  writer = MetricWriter(workdir, start_step)
  preemption = checkpointing.PreemptionFlag().install()
  history = []  # (step, device metrics) since the last finite check.
  last_metrics, eval_metrics = {}, {}
  last_good_step = latest
  progress = _progress_bar(config, start_step, num_steps) if is_main else None
  timer = (time.time(), start_step)
  try:
    for step in range(start_step, num_steps):
      batch = sharding.global_batch(train_stream.batch(step), mesh)
      if step == start_step:
        # Compile ahead of the first step and hand the compiler's freed heap
        # back to the OS, so it does not add to the step's peak memory.
        train_step = train_step.lower(state, batch).compile()
        process_tuning.release_host_memory()
      state, metrics = train_step(state, batch)
      process_tuning.settle_host_memory()  # CPU: keep one step's temporaries.
      done = step + 1
      if step == start_step:  # Compilation: keep it out of examples/s.
        jax.block_until_ready(metrics)
        timer = (time.time(), done)
      history.append((done, metrics))
      if progress is not None:
        progress.update(1)

      is_last = done == num_steps
      log_now = done % config.log_every_steps == 0 or is_last
      eval_now = done % config.eval_every_steps == 0 or is_last
      preempted = preemption_agreed(preemption.requested, log_now)
      save_now = (done % config.checkpoint_every_steps == 0 or is_last or
                  preempted)
      if log_now or eval_now or save_now:
        history = [(s, sharding.to_host(m)) for s, m in history]
        bad = first_nonfinite(history)
        if bad is not None:
          ckpt.wait()
          kept = (f'The last good checkpoint (step {last_good_step}) is '
                  f'kept in {ckpt.directory}.' if last_good_step is not None
                  else 'No checkpoint was saved before it.')
          raise NonFiniteError(
              f'{bad[1]} is {bad[2]} at step {bad[0]}; stopping. {kept} Try '
              'a lower optimizer.learning_rate, optimizer.grad_clip_norm > '
              '0, or model.dtype=float32.')
        last_metrics = dict(history[-1][1])
        if log_now:
          elapsed = time.time() - timer[0]
          rate = (done - timer[1]) * config.batch_size / max(elapsed, 1e-9)
          eta = ((num_steps - done) * config.batch_size / rate if rate > 0
                 else 0.0)
          train_record = {'train_loss': last_metrics['loss'],
                          'grad_norm': last_metrics['grad_norm'],
                          'learning_rate': last_metrics['learning_rate']}
          speed = ''
          if rate > 0:  # Not on the first (compiling) step.
            train_record['examples_per_sec'] = rate
            speed = f'  {rate:.1f} examples/s  ETA {format_eta(eta)}'
          writer.write(done, train_record)
          logging.info('step %d/%d  loss %.4f  grad_norm %.3f  lr %.3g%s',
                       done, num_steps, last_metrics['loss'],
                       last_metrics['grad_norm'],
                       last_metrics['learning_rate'], speed)
          timer = (time.time(), done)
        history = []
      if eval_now:
        eval_metrics = run_evaluation(task_object, eval_step, state,
                                      eval_table, config, mesh, model)
        writer.write(done, {f'eval_{k}': v for k, v in eval_metrics.items()})
        logging.info('eval at step %d: %s', done, _format_metrics(
            eval_metrics))
      if save_now or eval_now:
        ckpt.save(done, state, metrics=(
            {k: float(v) for k, v in eval_metrics.items()} if eval_now
            else None))
        last_good_step = done
      if (eval_now and config.best_metric and
          config.best_metric not in eval_metrics):
        ckpt.wait()
        raise ValueError(
            f'config.best_metric={config.best_metric!r} is not an eval metric '
            f'of this task ({", ".join(sorted(eval_metrics))}), so "best" '
            f'checkpoints would silently be the latest. The run is saved at '
            f'step {done}: run the same command again with --config.'
            'best_metric set to one of those.')
      if preempted and not is_last:
        ckpt.wait()
        logging.warning('preempted: checkpoint at step %d saved in %s.', done,
                        ckpt.directory)
        raise Preempted()
  finally:
    preemption.uninstall()
    if progress is not None:
      progress.close()
    ckpt.close()
    writer.close()
  final_step = max(start_step, num_steps)
  if start_step >= num_steps:  # Already trained: just evaluate.
    eval_metrics = run_evaluation(task_object, eval_step, state, eval_table,
                                  config, mesh, model)
  return {'step': final_step, 'eval': eval_metrics,
          'train_loss': float(last_metrics.get('loss', float('nan'))),
          'state': state, 'model': model, 'eval_table': eval_table,
          'eval_info': eval_info, 'task_object': task_object}


def _format_metrics(metrics: Dict[str, Any]) -> str:
  return '  '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
                   for k, v in metrics.items())


def _progress_bar(config, start: int, total: int):
  if not config.progress_bar:
    return None
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tqdm.tqdm(total=total, initial=start, unit='step', file=sys.stderr,
                   dynamic_ncols=True, mininterval=1.0)


# Loop settings that must be positive integers (one clear error instead of a
# ZeroDivisionError mid-run, or an eval that fails after training).
POSITIVE_SETTINGS = ('batch_size', 'eval_batch_size', 'log_every_steps',
                     'eval_every_steps', 'checkpoint_every_steps',
                     'keep_checkpoints')


def check_loop_settings(config) -> None:
  bad = [f'{k}={config[k]}' for k in POSITIVE_SETTINGS
         if int(config[k]) < 1]
  if bad:
    raise ValueError(f'config.{", config.".join(bad)}: must be >= 1 '
                     f'({", ".join(POSITIVE_SETTINGS)} are counts of '
                     f'examples or steps).')


def make_workdir(workdir: str) -> None:
  """Creates `workdir`, or says in one line why it cannot be used."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'cannot use --workdir={workdir}: {e.strerror or e} '
                     f'({type(e).__name__}); choose a writable '
                     f'directory.') from e


def check_lengths(config, description) -> None:
  """Text lengths must fit the model (MLM: exactly its output length)."""
  pre = description['perceiver']['preprocessor']
  if pre.get('type') != 'text':
    return
  length, limit = int(config.data.max_length), int(pre['max_seq_len'])
  if config.task == 'mlm':
    out = int(description['perceiver']['decoder']['output_index_dims'][0])
    if length != out:
      raise ValueError(f'config.data.max_length={length} must equal the MLM '
                       f"decoder's output length {out} (model max_seq_len).")
  elif length > limit:
    raise ValueError(f'config.data.max_length={length} exceeds the model\'s '
                     f'max_seq_len={limit}; lower config.data.max_length.')


def _check_labels(config, train_table, eval_table) -> None:
  """Labels must lie in [0, num_classes) for classification."""
  if config.task != 'classification':
    return
  k = int(config.data.num_classes)
  for name, table in (('train', train_table), ('eval', eval_table)):
    labels = table['label']
    bad = np.nonzero((labels < 0) | (labels >= k))[0]
    if len(bad):
      raise ValueError(
          f'{name} row {int(bad[0]) + 1} (1 = the first data row) has label '
          f'{int(labels[bad[0]])}, outside 0..{k - 1} '
          f'(config.data.num_classes={k}); set --config.data.num_classes or '
          'fix the data.')
