"""The model call, the train step, the eval step, and how many steps to run.

Why apart from the loop: tasks predict with the same model call the loop
trains with (`jitted_forward`), and the loop builds its steps from a task
without knowing which one it is. Everything random in a step is a function
of the step number (dropout and `Task.train_transform` keys are
`fold_in(key, step)`), so a run resumed from any checkpoint ends
bit-identical to an uninterrupted one.
"""

import collections
import math
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

PyTree = Any
# (inputs, keyword arguments) of a model call, from `Task.model_inputs`.
ModelInputs = Tuple[Any, Dict[str, Any]]
# Python-side trace counters: a retrace of a step shows up here (tests).
TRACE_COUNTS = collections.Counter()


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """Training steps: num_train_steps if > 0, else num_epochs over the data."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.num_epochs <= 0:
    raise ValueError('set config.num_train_steps > 0 or config.num_epochs > 0.')
  return max(
    int(math.ceil(config.num_epochs * num_examples / config.batch_size)), 1
  )


def apply_model(
  model,
  variables: PyTree,
  model_inputs: ModelInputs,
  *,
  train: bool,
  dropout_key=None,
):
  """Runs the model; returns (outputs, updated non-param collections)."""
  inputs, kwargs = model_inputs
  mutable = [k for k in variables if k != 'params'] if train else []
  mutable = mutable or False
  rngs = {'dropout': dropout_key} if (train and dropout_key is not None) else {}
  out = model.apply(
    variables,
    inputs,
    deterministic=not train,
    rngs=rngs,
    mutable=mutable,
    **kwargs,
  )
  if mutable:
    outputs, new_state = out
    return outputs, dict(new_state)
  return out, {}


def init_variables(model, model_inputs: ModelInputs, seed: int) -> PyTree:
  """Fresh model variables from example inputs (shapes only matter)."""
  inputs, kwargs = model_inputs
  return model.init(
    jax.random.PRNGKey(seed), inputs, deterministic=True, **kwargs
  )


def make_train_step(
  model,
  task,
  tx: optax.GradientTransformation,
  schedule: Callable,
  config: ml_collections.ConfigDict,
) -> Callable:
  """The (not yet jitted) train step: (state, batch) -> (state, metrics).

  The task's `train_transform(batch, key)` (e.g. MixUp) runs first; the
  loss is sum(loss) / sum(weight) of its `loss_fn(outputs, batch)`.
  """
  accumulate = int(config.optimizer.accumulate_steps)
  base_key = jax.random.PRNGKey(int(config.seed) + 1)
  transform_key = jax.random.PRNGKey(int(config.seed) + 2)

  def train_step(state, batch):
    TRACE_COUNTS['train_step'] += 1
    step = state['step']
    dropout_key = jax.random.fold_in(base_key, step)
    others = state['model_state']
    batch = task.train_transform(batch, jax.random.fold_in(transform_key, step))

    def loss_of(params):
      outputs, new_others = apply_model(
        model,
        {'params': params, **others},
        task.model_inputs(batch),
        train=True,
        dropout_key=dropout_key,
      )
      loss_sum, weight = task.loss_fn(outputs, batch)
      denom = jnp.maximum(jnp.sum(weight), 1.0)
      return jnp.sum(loss_sum) / denom, new_others

    (loss, new_others), grads = jax.value_and_grad(loss_of, has_aux=True)(
      state['params']
    )
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    new_state = dict(
      step=step + 1,
      params=params,
      opt_state=opt_state,
      model_state={**others, **new_others},
    )
    metrics = {
      'loss': loss,
      'grad_norm': grad_norm,
      'learning_rate': schedule(step // accumulate),
    }
    return new_state, metrics

  return train_step


def make_eval_step(model, task) -> Callable:
  """(params, model_state, batch) -> the task's per-example eval outputs."""

  def eval_step(params, model_state, batch):
    TRACE_COUNTS['eval_step'] += 1
    outputs, _ = apply_model(
      model,
      {'params': params, **model_state},
      task.model_inputs(batch),
      train=False,
    )
    return task.eval_outputs(outputs, batch)

  return eval_step


# id(model) -> (model, model_inputs function, jitted forward).
_FORWARDS = collections.OrderedDict()


def jitted_forward(model, model_inputs: Callable) -> Callable:
  """jit((variables, batch) -> outputs), kept for the last few models.

  Why jit: run eagerly, every op of the forward pass compiles on its own
  (the quickstart's five eval predictions: 130 small compiles against one).
  Repeated calls with one model reuse its compiled executables (our models
  hold a dict config, so they cannot be jit's hashable static argument).
  """
  hit = _FORWARDS.get(id(model))
  if hit is None or hit[0] is not model or hit[1] != model_inputs:
    hit = (
      model,
      model_inputs,
      jax.jit(
        lambda v, b: apply_model(model, v, model_inputs(b), train=False)[0]
      ),
    )
    _FORWARDS[id(model)] = hit
    while len(_FORWARDS) > 4:
      _FORWARDS.popitem(last=False)
  return hit[2]


def predict_batch(
  model, variables: PyTree, batch: Dict[str, np.ndarray], model_inputs: Callable
) -> np.ndarray:
  """The model's outputs for one batch, as one compiled call."""
  return np.asarray(jitted_forward(model, model_inputs)(variables, batch))
