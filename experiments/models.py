"""Builds the model of an experiment and merges pretrained weights into it.

Why: configs name a `perceiver_io` preset; fine-tuning needs a few changes on
top (the number of classes, a tanh-MLP head for GLUE as in the paper's
Table 13, dropout), and starting from a checkpoint needs "load what fits,
initialise the rest, and say which is which". Both live here so the loop
stays short.
"""

import copy
import logging
from typing import Any, Dict, List, Optional, Tuple

import flax
import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import process_tuning
from perceiver_io import ar
from perceiver_io import checkpoints
from perceiver_io import flops
from perceiver_io import kernels
from perceiver_io import presets
from perceiver_io.model import PerceiverIO

PyTree = Any


class PerceiverWithTanhHead(nn.Module):
  """Perceiver IO whose decoder emits `hidden` features -> tanh -> Dense.

  With a classification decoder of `hidden` outputs, decoder output Linear +
  tanh + Dense(num_outputs) is the paper's two-layer tanh MLP head (GLUE,
  Table 13) on the single decoder query.
  """

  perceiver_config: Dict[str, Any]
  num_outputs: int

  @nn.compact
  def __call__(
    self, inputs, *, attention_mask=None, deterministic=True, **kwargs
  ):
    features = PerceiverIO(self.perceiver_config, name='perceiver')(
      inputs,
      attention_mask=attention_mask,
      deterministic=deterministic,
      **kwargs,
    )
    return nn.Dense(self.num_outputs, name='head')(jnp.tanh(features))


# Compute dtypes the runner trains in, per backend: XLA:CPU has no float16
# matrix product with float32 accumulation (the attention's logits), so a
# float16 run fails there while compiling its evaluation.
_DTYPES = {'cpu': ('float32', 'bfloat16')}
_ACCELERATOR_DTYPES = ('float32', 'bfloat16', 'float16')


def check_dtype(name: str, backend: str) -> str:
  """`name` if the model can compute in it on `backend`, else one error.

  Why up front: an unsupported dtype otherwise fails deep inside XLA's
  compile ("F16_F16_F32 not supported") after the run has started.
  """
  valid = _DTYPES.get(backend, _ACCELERATOR_DTYPES)  # 'gpu', 'accelerator'.
  if name in valid:
    return name
  if name in _ACCELERATOR_DTYPES:
    raise ValueError(
      f'config.model.dtype={name!r} does not run on the '
      f'{backend.upper()} (XLA cannot compile its {name} '
      'matrix products there); use bfloat16 (or float32) '
      f'here, and {name} on a GPU.'
    )
  raise ValueError(
    f'config.model.dtype={name!r} is not a compute dtype; '
    f'choose one of {", ".join(valid)}'
    f'{"" if backend != "cpu" else " (float16: GPU only)"}.'
  )


def model_config(
  config: ml_collections.ConfigDict, num_outputs: Optional[int] = None
) -> Dict[str, Any]:
  """The perceiver_io config dict (JSON-able) this experiment trains.

  With `num_outputs`, a classification decoder is sized to it (as `build`
  sizes it; a tanh head's decoder emits its hidden features instead).
  """
  kwargs = dict(config.model.kwargs.to_dict())
  cfg = presets.get_config(config.model.preset, **kwargs)
  if (
    num_outputs is not None
    and 'num_classes' not in kwargs
    and 'num_classes' in presets.size_kwargs(config.model.preset)
    and cfg.get('decoder', {}).get('type') != 'classification'
  ):
    # One class count (data.num_classes) also where the labels are not a
    # classification decoder (the multimodal label modality).
    kwargs['num_classes'] = int(num_outputs)
    cfg = presets.get_config(config.model.preset, **kwargs)
  if cfg.get('family') == ar.FAMILY:
    return ar_model_config(config, cfg)
  # The expected platform, not jax.default_backend(): the train launcher
  # sizes its step before JAX creates a backend (process_tuning.py).
  cfg['dtype'] = check_dtype(
    config.model.dtype, process_tuning.expected_platform()
  )
  cfg['remat'] = bool(config.model.remat)
  # Only when it changes something: descriptions stay what they were.
  policy = config.model.get('remat_policy', 'nothing')
  if cfg['remat'] and policy != 'nothing':
    cfg['remat_policy'] = policy
  # Only when set: descriptions of unrolled runs stay what they were.
  if config.model.get('scan_layers', False):
    cfg['scan_layers'] = True
  # .get: workdirs written before the field existed lack it.
  chunk = int(config.model.get('query_chunk_size', 0) or 0)
  if chunk < 0:
    raise ValueError(
      f'config.model.query_chunk_size={chunk}; use 0 (decode '
      'all queries at once) or a positive number of queries '
      'per chunk (e.g. 16384).'
    )
  if chunk:
    cfg['query_chunk_size'] = chunk
  impl = config.model.attention_impl
  if impl not in kernels.ATTENTION_IMPLS:
    raise ValueError(
      f'config.model.attention_impl={impl!r}; choose one of '
      f'{", ".join(kernels.ATTENTION_IMPLS)} (on a GPU in '
      "bfloat16, 'cudnn' takes cuDNN's flash attention)."
    )
  cfg['attention_impl'] = impl
  if config.model.in_channels:
    cfg['preprocessor']['in_channels'] = int(config.model.in_channels)
  if config.model.dropout_rate:
    cfg['encoder']['dropout_rate'] = float(config.model.dropout_rate)
  if num_outputs is not None and cfg['decoder'].get('type') == (
    'classification'
  ):
    cfg['decoder']['num_classes'] = int(num_outputs)
  return cfg


def ar_model_config(config, cfg: Dict[str, Any]) -> Dict[str, Any]:
  """A Perceiver AR config with the runner's compute options (its sizes,
  positions and dropout come from model.kwargs)."""
  cfg = ar.config(**{k: v for k, v in cfg.items() if k != 'family'})
  cfg['dtype'] = check_dtype(
    config.model.dtype, process_tuning.expected_platform()
  )
  impl = config.model.attention_impl
  cfg['attention_impl'] = 'xla' if impl == 'auto' else impl
  if config.model.dropout_rate:
    cfg['dropout_rate'] = float(config.model.dropout_rate)
  return cfg


def counting_model(model: nn.Module) -> nn.Module:
  """`model` with its kernels chosen for the CPU by name, so that tracing it
  to count FLOPs creates no JAX backend (`flops.counting_config`; the
  launcher decides host-memory settings before one exists)."""
  if isinstance(model, PerceiverWithTanhHead):
    return model.clone(
      perceiver_config=flops.counting_config(model.perceiver_config)
    )
  if isinstance(model, PerceiverIO):
    return model.clone(config=flops.counting_config(model.config))
  return model


def build(
  config: ml_collections.ConfigDict, num_outputs: Optional[int] = None
) -> Tuple[nn.Module, Dict]:
  """(flax module, description dict stored in the workdir) for `config`.

  Args:
    config: the experiment config (reads `model`).
    num_outputs: the size of a classification decoder, as the task wants it
      (`Task.num_outputs`: the number of classes, 1 for regression); None
      keeps the preset's decoder as it is.
  """
  cfg = model_config(config, num_outputs)
  if cfg.get('family') == ar.FAMILY:
    return ar.PerceiverAR(copy.deepcopy(cfg)), {'perceiver': cfg, 'head': ''}
  head = config.model.head
  if head not in ('', 'tanh_mlp'):
    raise ValueError(f"model.head must be '' or 'tanh_mlp', got {head!r}.")
  classifier = cfg['decoder'].get('type') == 'classification'
  if head == 'tanh_mlp':
    if num_outputs is None or not classifier:
      raise ValueError(
        "model.head='tanh_mlp' needs a task with a "
        'classification decoder (classification or '
        'regression).'
      )
    hidden = int(config.model.head_hidden or cfg['encoder']['latent_channels'])
    cfg['decoder']['num_classes'] = hidden
    description = {
      'perceiver': cfg,
      'head': 'tanh_mlp',
      'num_outputs': int(num_outputs),
    }
    return (
      PerceiverWithTanhHead(copy.deepcopy(cfg), int(num_outputs)),
      description,
    )
  if classifier and num_outputs is not None:
    cfg['decoder']['num_classes'] = int(num_outputs)
  return PerceiverIO(copy.deepcopy(cfg)), {'perceiver': cfg, 'head': ''}


def build_from_description(description: Dict[str, Any]) -> nn.Module:
  """Rebuilds the module from the description saved in a workdir."""
  if description.get('head') == 'tanh_mlp':
    return PerceiverWithTanhHead(
      description['perceiver'], description['num_outputs']
    )
  if description['perceiver'].get('family') == ar.FAMILY:
    return ar.PerceiverAR(description['perceiver'])
  return PerceiverIO(description['perceiver'])


# ----------------------------------------------------------------------------
# Merging pretrained variables.
# ----------------------------------------------------------------------------


def _flat(tree) -> Dict[Tuple[str, ...], Any]:
  tree = (
    flax.core.unfreeze(tree) if isinstance(tree, flax.core.FrozenDict) else tree
  )
  return flax.traverse_util.flatten_dict(tree)


def merge_pretrained(
  fresh: PyTree, pretrained: PyTree
) -> Tuple[PyTree, List[str], List[str]]:
  """Copies every pretrained leaf whose path and shape match into `fresh`.

  If `fresh` nests the model under 'perceiver' (the tanh head) and the
  pretrained tree does not, the pretrained tree is matched under it.

  Args:
    fresh: freshly initialised variables ({'params': ..., ...}).
    pretrained: variables from a checkpoint.

  Returns:
    (merged variables, paths newly initialised, pretrained paths unused).
  """
  fresh_flat = _flat(fresh)
  # The latent stack in `fresh`'s layout (scan_layers), whichever it was.
  pre_flat = _flat(checkpoints.match_layout(pretrained, fresh))
  nested = any(k[1:2] == ('perceiver',) for k in fresh_flat) and not any(
    k[1:2] == ('perceiver',) for k in pre_flat
  )
  if nested:
    pre_flat = {(k[0], 'perceiver') + k[1:]: v for k, v in pre_flat.items()}
  merged, new = {}, []
  for path, value in fresh_flat.items():
    src = pre_flat.get(path)
    if src is not None and np.shape(src) == np.shape(value):
      merged[path] = np.asarray(src, dtype=value.dtype)
    else:
      merged[path] = value
      new.append('/'.join(path))
  unused = [
    '/'.join(p)
    for p in pre_flat
    if p not in fresh_flat or np.shape(pre_flat[p]) != np.shape(fresh_flat[p])
  ]
  _check_body_loaded(fresh_flat, pre_flat)
  return flax.traverse_util.unflatten_dict(merged), new, unused


# Parts of the model that fine-tuning keeps from the checkpoint; the decoder,
# postprocessor and a tanh head may be new (another task's outputs).
BODY_MODULES = ('preprocessor', 'encoder')


def _check_body_loaded(fresh_flat, pre_flat) -> None:
  """Every preprocessor and encoder array must come from the checkpoint.

  A checkpoint of another size (other latents, widths, depth or input
  length) would otherwise leave the whole body freshly initialised and the
  run would quietly train from scratch.
  """
  missing = []
  for path, value in fresh_flat.items():
    module = path[2] if path[1:2] == ('perceiver',) else path[1]
    if module not in BODY_MODULES:
      continue
    src = pre_flat.get(path)
    if src is None:
      missing.append(
        f'{"/".join(path)} {tuple(np.shape(value))} (not in the checkpoint)'
      )
    elif np.shape(src) != np.shape(value):
      missing.append(
        f'{"/".join(path)}: checkpoint '
        f'{tuple(np.shape(src))} vs model '
        f'{tuple(np.shape(value))}'
      )
  if missing:
    body = sum(
      1
      for p in fresh_flat
      if (p[2] if p[1:2] == ('perceiver',) else p[1]) in BODY_MODULES
    )
    raise ValueError(
      f'init_from does not fit this model: {len(missing)} of {body} '
      f'preprocessor/encoder arrays differ ({"; ".join(missing[:5])}'
      f'{" ..." if len(missing) > 5 else ""}). Only the decoder and head '
      'may be new; set config.model.preset / config.model.kwargs (and '
      "data.max_length for text) to the checkpoint's sizes, or train "
      "from scratch with config.init_from=''."
    )


def log_merge(new: List[str], unused: List[str]) -> None:
  logging.info(
    'init_from: %d parameter arrays newly initialised%s',
    len(new),
    (': ' + ', '.join(new[:20]) + (' ...' if len(new) > 20 else ''))
    if new
    else '',
  )
  if unused:
    logging.info(
      'init_from: %d pretrained arrays not used: %s',
      len(unused),
      ', '.join(unused[:20]),
    )
