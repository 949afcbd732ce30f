"""Optimizers and learning-rate schedules from the config, as optax chains.

Why a module: the paper's recipes differ only in a few choices (LAMB or AdamW,
constant-then-cosine or warmup-then-cosine, clipping, accumulation), and the
official code masks weight decay by parameter name. Writing that mask and the
schedules once, as small pure functions, keeps every config honest.

Official weight-decay rule (deepmind-research perceiver/train/utils.py): no
decay for biases and for every parameter of a LayerNorm or BatchNorm module;
trainable position embeddings *are* decayed (`decay_pos_embs=True`).
"""

from typing import Any, Callable

import jax
import ml_collections
import optax

PyTree = Any

_POS_EMB_MARKERS = ('position_embeddings', 'pos_embs', 'trainable')


def _path_names(path) -> tuple:
  return tuple(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def is_decayed(path_names: tuple, decay_pos_embs: bool = True) -> bool:
  """Whether the parameter at `path_names` gets weight decay.

  Args:
    path_names: the parameter's path, e.g. ('encoder', 'mlp_norm', 'scale').
    decay_pos_embs: decay trainable position embeddings / queries.

  Returns:
    False for biases ('bias', Haiku 'b'), for any parameter under a module
    whose name contains 'norm' (LayerNorm, BatchNorm: 'kv_norm', 'batchnorm',
    'layer_norm'), and for position embeddings if `decay_pos_embs` is False.
  """
  leaf = path_names[-1] if path_names else ''
  if leaf in ('bias', 'b'):
    return False
  if any('norm' in name.lower() for name in path_names[:-1]):
    return False
  if not decay_pos_embs and any(
    marker in name for name in path_names for marker in _POS_EMB_MARKERS
  ):
    return False
  return True


def weight_decay_mask(params: PyTree, decay_pos_embs: bool = True) -> PyTree:
  """A pytree of bools like `params`: True where weight decay applies."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: is_decayed(_path_names(path), decay_pos_embs), params
  )


def make_schedule(
  config: ml_collections.ConfigDict, learning_rate: float, total_steps: int
) -> optax.Schedule:
  """Learning rate per optimizer update.

  Args:
    config: `config.schedule` (name, warmup_steps, constant_fraction,
      decay_steps, end_value).
    learning_rate: the peak learning rate.
    total_steps: number of optimizer updates in the run (after accumulation).

  Returns:
    An optax schedule. Names:
      'constant': flat (after optional linear warmup);
      'constant_cosine': flat for `constant_fraction` of the run, then cosine
        to `end_value` (the official ImageNet/flow schedule, no warmup);
      'warmup_cosine': linear warmup, then cosine to `end_value` over
        `decay_steps` (-1: the rest of the run) (paper Table 12 MLM);
      'warmup_linear': linear warmup, then linear decay to `end_value`;
      'warmup_constant': linear warmup, then flat.
  """
  name = config.name
  warmup = int(config.warmup_steps)
  total = max(int(total_steps), 1)
  decay_steps = int(config.decay_steps) if config.decay_steps > 0 else total
  end = float(config.end_value)
  if warmup < 0:
    raise ValueError(f'schedule.warmup_steps must be >= 0, got {warmup}.')

  def with_warmup(after: optax.Schedule) -> optax.Schedule:
    if warmup == 0:
      return after
    ramp = optax.linear_schedule(0.0, learning_rate, warmup)
    return optax.join_schedules([ramp, after], [warmup])

  if name == 'constant':
    return with_warmup(optax.constant_schedule(learning_rate))
  if name == 'warmup_constant':
    return with_warmup(optax.constant_schedule(learning_rate))
  if name == 'constant_cosine':
    flat = int(total * float(config.constant_fraction))
    cosine = optax.cosine_decay_schedule(
      learning_rate,
      max(total - flat, 1),
      alpha=end / learning_rate if learning_rate else 0.0,
    )
    return with_warmup(
      optax.join_schedules(
        [optax.constant_schedule(learning_rate), cosine], [flat]
      )
    )
  if name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
      0.0,
      learning_rate,
      max(warmup, 0),
      max(decay_steps, warmup + 1),
      end_value=end,
    )
  if name == 'warmup_linear':
    return with_warmup(
      optax.linear_schedule(learning_rate, end, max(decay_steps - warmup, 1))
    )
  raise ValueError(
    f'unknown schedule.name {name!r}; valid: constant, '
    'constant_cosine, warmup_cosine, warmup_linear, '
    'warmup_constant.'
  )


def make_optimizer(
  config: ml_collections.ConfigDict, params: PyTree, total_steps: int
) -> tuple[optax.GradientTransformation, Callable]:
  """The optax chain of `config.optimizer` + `config.schedule`.

  Args:
    config: the experiment config (reads `optimizer` and `schedule`).
    params: parameters (or their shapes) to build the decay mask from.
    total_steps: training steps of the loop (micro-steps when accumulating).

  Returns:
    (optimizer, schedule). With `accumulate_steps > 1` the optimizer is an
    `optax.MultiSteps`: it averages gradients over that many calls and
    updates on the last; the schedule counts updates.
  """
  opt = config.optimizer
  accumulate = int(opt.accumulate_steps)
  if accumulate < 1:
    raise ValueError(
      f'optimizer.accumulate_steps must be >= 1, got {accumulate}.'
    )
  schedule = make_schedule(
    config.schedule, float(opt.learning_rate), max(total_steps // accumulate, 1)
  )
  mask = weight_decay_mask(params, bool(opt.decay_pos_embs))
  parts = []
  if opt.grad_clip_norm and opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
  name = opt.name
  wd = float(opt.weight_decay)
  if name == 'lamb':
    # Official order: adam moments -> masked decay -> trust ratio -> lr.
    parts += [
      optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps),
      optax.add_decayed_weights(wd, mask=mask),
      optax.scale_by_trust_ratio(),
    ]
  elif name == 'adamw':
    parts += [
      optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps),
      optax.add_decayed_weights(wd, mask=mask),
    ]
  elif name == 'adam':
    parts += [optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps)]
  elif name == 'sgd':
    parts += [
      optax.add_decayed_weights(wd, mask=mask),
      optax.trace(decay=opt.b1),
    ]
  else:
    raise ValueError(
      f'unknown optimizer.name {name!r}; valid: lamb, adamw, adam, sgd.'
    )
  parts += [optax.scale_by_schedule(schedule), optax.scale(-1.0)]
  tx = optax.chain(*parts)
  if accumulate > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
  return tx, schedule
