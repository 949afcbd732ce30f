"""Builds the model of an experiment and merges pretrained weights into it.

Why: configs name a `perceiver_io` preset; fine-tuning needs a few changes on
top (the number of classes, a tanh-MLP head for GLUE as in the paper's
Table 13, dropout), and starting from a checkpoint needs "load what fits,
initialise the rest, and say which is which". Both live here so the loop
stays short.
"""

import copy
import logging
from typing import Any, Dict, List, Tuple

import flax
import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_io import kernels
from perceiver_io import presets
from experiments import process_tuning
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
  def __call__(self, inputs, *, attention_mask=None, deterministic=True,
               **kwargs):
    features = PerceiverIO(self.perceiver_config, name='perceiver')(
        inputs, attention_mask=attention_mask, deterministic=deterministic,
        **kwargs)
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
    raise ValueError(f'config.model.dtype={name!r} does not run on the '
                     f'{backend.upper()} (XLA cannot compile its {name} '
                     'matrix products there); use bfloat16 (or float32) '
                     f'here, and {name} on a GPU.')
  raise ValueError(f'config.model.dtype={name!r} is not a compute dtype; '
                   f'choose one of {", ".join(valid)}'
                   f'{"" if backend != "cpu" else " (float16: GPU only)"}.')


def model_config(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The perceiver_io config dict (JSON-able) this experiment trains."""
  kwargs = dict(config.model.kwargs.to_dict())
  cfg = presets.get_config(config.model.preset, **kwargs)
  # The expected platform, not jax.default_backend(): the train launcher
  # sizes its step before JAX creates a backend (process_tuning.py).
  cfg['dtype'] = check_dtype(config.model.dtype, process_tuning.expected_platform())
  cfg['remat'] = bool(config.model.remat)
  # .get: workdirs written before the field existed lack it.
  chunk = int(config.model.get('query_chunk_size', 0) or 0)
  if chunk < 0:
    raise ValueError(f'config.model.query_chunk_size={chunk}; use 0 (decode '
                     'all queries at once) or a positive number of queries '
                     'per chunk (e.g. 16384).')
  if chunk:
    cfg['query_chunk_size'] = chunk
  impl = config.model.attention_impl
  if impl not in kernels.ATTENTION_IMPLS:
    raise ValueError(f'config.model.attention_impl={impl!r}; choose one of '
                     f'{", ".join(kernels.ATTENTION_IMPLS)} (on a GPU in '
                     "bfloat16, 'cudnn' takes cuDNN's flash attention).")
  cfg['attention_impl'] = impl
  if config.model.in_channels:
    cfg['preprocessor']['in_channels'] = int(config.model.in_channels)
  if config.model.dropout_rate:
    cfg['encoder']['dropout_rate'] = float(config.model.dropout_rate)
  return cfg


def num_outputs(config: ml_collections.ConfigDict) -> int:
  if config.task == 'regression':
    return 1
  return int(config.data.num_classes)


def build(config: ml_collections.ConfigDict) -> Tuple[nn.Module, Dict]:
  """(flax module, description dict stored in the workdir) for `config`."""
  cfg = model_config(config)
  head = config.model.head
  if config.task in ('classification', 'regression'):
    if cfg['decoder'].get('type') != 'classification':
      raise ValueError(f'task {config.task!r} needs a preset with a '
                       f'classification decoder; {config.model.preset!r} has '
                       f'{cfg["decoder"].get("type")!r}.')
    if head == 'tanh_mlp':
      hidden = int(config.model.head_hidden or
                   cfg['encoder']['latent_channels'])
      cfg['decoder']['num_classes'] = hidden
      description = {'perceiver': cfg, 'head': 'tanh_mlp',
                     'num_outputs': num_outputs(config)}
      return (PerceiverWithTanhHead(copy.deepcopy(cfg), num_outputs(config)),
              description)
    cfg['decoder']['num_classes'] = num_outputs(config)
  elif cfg['decoder'].get('type') == 'classification':
    # Image classification too: one field sizes the classifier, the one
    # the data settings name (data.num_classes was silently ignored here).
    cfg['decoder']['num_classes'] = int(config.data.num_classes)
  if head not in ('', 'tanh_mlp'):
    raise ValueError(f"model.head must be '' or 'tanh_mlp', got {head!r}.")
  if head == 'tanh_mlp':
    raise ValueError("model.head='tanh_mlp' needs task classification or "
                     'regression.')
  return PerceiverIO(copy.deepcopy(cfg)), {'perceiver': cfg, 'head': ''}


def build_from_description(description: Dict[str, Any]) -> nn.Module:
  """Rebuilds the module from the description saved in a workdir."""
  if description.get('head') == 'tanh_mlp':
    return PerceiverWithTanhHead(description['perceiver'],
                                 description['num_outputs'])
  return PerceiverIO(description['perceiver'])


def perceiver_config_of(description: Dict[str, Any]) -> Dict[str, Any]:
  return description['perceiver']


# ----------------------------------------------------------------------------
# Merging pretrained variables.
# ----------------------------------------------------------------------------


def _flat(tree) -> Dict[Tuple[str, ...], Any]:
  tree = flax.core.unfreeze(tree) if isinstance(
      tree, flax.core.FrozenDict) else tree
  return flax.traverse_util.flatten_dict(tree)


def merge_pretrained(fresh: PyTree, pretrained: PyTree
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
  pre_flat = _flat(pretrained)
  nested = any(k[1:2] == ('perceiver',) for k in fresh_flat) and not any(
      k[1:2] == ('perceiver',) for k in pre_flat)
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
  unused = ['/'.join(p) for p in pre_flat if p not in fresh_flat or
            np.shape(pre_flat[p]) != np.shape(fresh_flat[p])]
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
      missing.append(f'{"/".join(path)} {tuple(np.shape(value))} (not in '
                     'the checkpoint)')
    elif np.shape(src) != np.shape(value):
      missing.append(f'{"/".join(path)}: checkpoint '
                     f'{tuple(np.shape(src))} vs model '
                     f'{tuple(np.shape(value))}')
  if missing:
    body = sum(1 for p in fresh_flat
               if (p[2] if p[1:2] == ('perceiver',) else p[1]) in BODY_MODULES)
    raise ValueError(
        f'init_from does not fit this model: {len(missing)} of {body} '
        f'preprocessor/encoder arrays differ ({"; ".join(missing[:5])}'
        f'{" ..." if len(missing) > 5 else ""}). Only the decoder and head '
        'may be new; set config.model.preset / config.model.kwargs (and '
        'data.max_length for text) to the checkpoint\'s sizes, or train '
        'from scratch with config.init_from=\'\'.')


def load_pretrained(init_from: str, preset_hint: str = ''):
  """Variables of a pretrained model named by `config.init_from`.

  Args:
    init_from: 'hf:<dir or hub id>' (HuggingFace save_pretrained layout),
      'haiku:<pickle>' (official DeepMind checkpoint), 'workdir:<dir>' (a
      run of experiments.train: its latest checkpoint) or 'dir:<dir>'
      (`perceiver_io.checkpoints.save` output). Haiku pickles may name
      their architecture: 'haiku:<pickle>:<preset>'.
    preset_hint: preset name for Haiku pickles (they carry no config).

  Returns:
    The pretrained variables dict.
  """
  kind, _, where = init_from.partition(':')
  if not where or kind not in ('hf', 'haiku', 'workdir', 'dir'):
    raise ValueError(f'init_from must be hf:<dir or hub id>, haiku:<pickle>, '
                     f'workdir:<dir> or dir:<dir>; got {init_from!r}.')
  if kind == 'workdir':
    from experiments import predict_lib  # pylint: disable=g-import-not-at-top
    return predict_lib.load_variables_from_workdir(where)
  from perceiver_io import checkpoints  # pylint: disable=g-import-not-at-top
  if kind == 'dir':
    return checkpoints.load(where)[1]
  if kind == 'haiku':
    # 'haiku:<pickle>[:<preset of the pickle>]'; the official language
    # pickle is the MLM model, whatever head we fine-tune.
    path, _, preset = where.partition(':')
    if not preset:
      preset = ('language_mlm' if 'text' in preset_hint or 'language' in
                preset_hint else preset_hint.replace('tiny_', ''))
    return checkpoints.from_haiku(path, preset)[1]
  return checkpoints.from_hf(f'hf:{where}')[1]


def log_merge(new: List[str], unused: List[str]) -> None:
  logging.info('init_from: %d parameter arrays newly initialised%s', len(new),
               (': ' + ', '.join(new[:20]) + (' ...' if len(new) > 20 else ''))
               if new else '')
  if unused:
    logging.info('init_from: %d pretrained arrays not used: %s', len(unused),
                 ', '.join(unused[:20]))
