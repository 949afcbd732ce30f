"""Exporting a model for serving: a StableHLO artifact through `jax.export`.

Why this layout (a directory, not one file): the function is serialized
with the parameters as an *argument*, and the parameters are saved beside
it as `params.npz`. One compiled function then serves retrained or
fine-tuned weights of the same architecture (swap the .npz), the function
file stays small (a few hundred kB against the ~800 MB of text-classifier
weights: embedding them as constants would copy them into the IR and make
every re-export rewrite them), and the weights are readable with NumPy
alone. `signature.json` says what a caller needs without our code: input
and output names, shapes (with their symbolic dimensions), dtypes, and the
preprocessing. `exported_loader.py` runs the artifact with only jax and
numpy.

Symbolic dimensions: the batch ('b') always; for text, the length ('l'),
constrained to l <= max_seq_len (the text preprocessor takes the first l
rows of its position embedding). Platforms: CPU and CUDA in one artifact
(jax.export lowers for both; the caller's backend picks one).
"""

import json
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax
import jax
from jax import export as jax_export
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.workdir import init_from as init_from_lib
from experiments import models
from experiments import workdir as workdir_lib
from perceiver_io import model as model_lib
from perceiver_io import tokenizer

FORMATS = ('stablehlo', 'onnx')
PLATFORMS = ('cpu', 'cuda')
FUNCTION_FILE = 'model.stablehlo'
PARAMS_FILE = 'params.npz'
SIGNATURE_FILE = 'signature.json'
# The experiment config, so that `predict --exported` formats outputs as
# the task does (absent for a model exported without a task config).
CONFIG_FILE = 'config.json'
ARTIFACT_VERSION = 1

# ImageNet normalisation of the image tasks (image_classification.py).
_IMAGE_PREPROCESSING = (
  'RGB float32 in [0, 1]: resize the shorter side, centre-crop to H x W, '
  'then subtract mean (0.485, 0.456, 0.406) and divide by std (0.229, '
  '0.224, 0.225) per channel (as the ImageNet task does); MNIST-style '
  'models take the [0, 1] pixels as they are (config data.normalize).'
)
_FLOW_PREPROCESSING = (
  'two RGB frames [b, 2, H, W, 3] scaled to [-1, 1] (x / 127.5 - 1); the '
  'model extracts 3x3 patches itself (27 channels per pixel). Frames '
  'larger than H x W are tiled into overlapping H x W windows whose flows '
  'are blended (experiments/tasks/flow_full_frame.py); the output is '
  'flow in pixels, [b, H, W, 2] (dx, dy).'
)


def text_preprocessing(max_seq_len: int) -> str:
  return (
    f'UTF-8 bytes of the text, each byte + {tokenizer.NUM_SPECIAL_TOKENS} '
    '(ids 0-5 are special: pad=0, bos=1, eos=2, mask=3, cls=4, sep=5), '
    f'at most {max_seq_len} ids; pad to a common length l with 0 and '
    'attention_mask 0 (1 for real ids). perceiver_io/tokenizer.py.'
  )


class Exportable(Dict[str, Any]):
  """What an export needs: model, variables, model_config (perceiver_io
  dict), config (experiment config or None), info and a source name."""


def from_workdir(workdir: str, which: str = 'latest', config=None):
  run = workdir_lib.load_workdir(workdir, which, config)
  return Exportable(
    model=run.model,
    variables=run.variables,
    model_config=run.model_config,
    config=run.config,
    info=run.info,
    source=f'{workdir} (checkpoint step {run.step})',
  )


def from_init_from(config: ml_collections.ConfigDict):
  config = config.copy_and_resolve_references()
  run = init_from_lib.load_init_from(
    config.init_from, config.model.preset, config.model.attention_impl
  )
  return Exportable(
    model=run.model,
    variables=run.variables,
    model_config=run.model_config,
    config=run.config or config,
    info=run.info,
    source=config.init_from,
  )


# ----------------------------------------------------------------------------
# Inputs and outputs.
# ----------------------------------------------------------------------------


def input_layout(model_config: Dict[str, Any]):
  """(name -> (dims, dtype), call, preprocessing, output name).

  `dims` are strings for jax.export.symbolic_shape ('b' is the batch,
  'l' a text length); `call(inputs)` gives the model call's (inputs,
  kwargs).
  """
  pre = model_config['preprocessor']
  example, _ = model_lib.example_inputs(model_config, 1)
  if pre['type'] == 'text':
    names = {'input_ids': ('b', 'l'), 'attention_mask': ('b', 'l')}
    layout = {n: (d, 'int32') for n, d in names.items()}
    return (
      layout,
      lambda x: (x['input_ids'], {'attention_mask': x['attention_mask']}),
      text_preprocessing(int(pre['max_seq_len'])),
      'logits',
    )
  if pre['type'] == 'multimodal':
    layout = {
      name: (('b',) + tuple(int(d) for d in x.shape[1:]), str(x.dtype))
      for name, x in sorted(example.items())
    }
    return (
      layout,
      lambda x: (dict(x), {}),
      'image [b, T, H, W, 3] frames, audio [b, samples] waveform, label '
      '[b, classes] one-hot (zeros to let the model predict it); outputs '
      'are every query of each modality (no subsampling).',
      None,
    )
  dims = ('b',) + tuple(int(d) for d in example.shape[1:])
  flow = bool(pre.get('flow_patches'))
  name = 'frames' if flow else 'image' if pre['type'] == 'image' else 'inputs'
  layout = {name: (dims, str(example.dtype))}
  preprocessing = (
    _FLOW_PREPROCESSING
    if flow
    else _IMAGE_PREPROCESSING
    if pre['type'] == 'image'
    else f'{pre["type"]} inputs as perceiver_io.model.example_inputs shapes.'
  )
  return (
    layout,
    lambda x: (x[name], {}),
    preprocessing,
    ('flow' if flow else 'logits'),
  )


def symbolic_inputs(model_config: Dict[str, Any], layout) -> Dict[str, Any]:
  """jax.ShapeDtypeStruct per input, sharing one symbolic scope."""
  pre = model_config['preprocessor']
  constraints = []
  if pre['type'] == 'text':
    constraints.append(f'l <= {int(pre["max_seq_len"])}')
  names = ['b'] + (['l'] if pre['type'] == 'text' else [])
  symbols = dict(
    zip(
      names,
      jax_export.symbolic_shape(', '.join(names), constraints=constraints),
    )
  )
  return {
    name: jax.ShapeDtypeStruct(
      tuple(symbols[d] if isinstance(d, str) else d for d in dims),
      jnp.dtype(dtype),
    )
    for name, (dims, dtype) in layout.items()
  }


def flat_params(variables) -> Dict[str, np.ndarray]:
  """'collection/module/.../leaf' -> NumPy array (bfloat16 kept as is)."""
  tree = (
    flax.core.unfreeze(variables)
    if isinstance(variables, flax.core.FrozenDict)
    else variables
  )
  flat = flax.traverse_util.flatten_dict(dict(tree), sep='/')
  return {k: np.asarray(v) for k, v in sorted(flat.items())}


def _stored(array: np.ndarray) -> np.ndarray:
  """NumPy's .npz has no bfloat16: such leaves are stored as float32
  (exact) and cast back inside the function."""
  if array.dtype == jnp.bfloat16:
    return array.astype(np.float32)
  return array


# Kernels chosen by size (the CPU kernels block attention above a size)
# cannot be chosen for a symbolic batch, and the CPU kernels would also be
# lowered for CUDA: the artifact uses XLA's attention, lowered per platform.
SERVING_ATTENTION = 'xla'


def serving_model(model):
  """`model` computing with `SERVING_ATTENTION` (same parameters)."""
  if isinstance(model, models.PerceiverWithTanhHead):
    config = dict(model.perceiver_config, attention_impl=SERVING_ATTENTION)
    return model.clone(perceiver_config=config)
  return model.clone(
    config=dict(model.config, attention_impl=SERVING_ATTENTION)
  )


def serving_function(model, params_dtypes, call, output_name):
  """(params, inputs) -> {output name: array}, as jax.export traces it."""

  def serve(params, inputs):
    flat = {k: v.astype(params_dtypes[k]) for k, v in params.items()}
    variables = flax.traverse_util.unflatten_dict(flat, sep='/')
    x, kwargs = call(inputs)
    out = model.apply(variables, x, deterministic=True, **kwargs)
    return {output_name: out} if output_name else dict(out)

  return serve


def export_stablehlo(
  model,
  variables,
  model_config: Dict[str, Any],
  platforms: Sequence[str] = PLATFORMS,
):
  """(jax.export.Exported, stored params, signature dict) of the model."""
  layout, call, preprocessing, output_name = input_layout(model_config)
  params = flat_params(variables)
  stored = {k: _stored(v) for k, v in params.items()}
  dtypes = {k: v.dtype for k, v in params.items()}
  model = serving_model(model)
  serve = serving_function(model, dtypes, call, output_name)
  param_specs = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in stored.items()
  }
  input_specs = symbolic_inputs(model_config, layout)
  exported = jax_export.export(jax.jit(serve), platforms=tuple(platforms))(
    param_specs, input_specs
  )
  signature = make_signature(
    exported, layout, preprocessing, model_config, stored, platforms
  )
  return exported, stored, signature


def _dims(shape) -> list:
  return [d if isinstance(d, int) else str(d) for d in shape]


def make_signature(
  exported, layout, preprocessing, model_config, stored, platforms
) -> Dict[str, Any]:
  out_tree = jax.tree_util.tree_unflatten(
    exported.out_tree, list(exported.out_avals)
  )
  pre = model_config['preprocessor']
  return {
    'artifact_version': ARTIFACT_VERSION,
    'format': 'stablehlo',
    'function_file': FUNCTION_FILE,
    'params_file': PARAMS_FILE,
    'jax_version': jax.__version__,
    'calling_convention_version': exported.calling_convention_version,
    'platforms': list(platforms),
    'call': 'exported.call(params, inputs): params = dict(np.load('
    f'{PARAMS_FILE!r})), inputs = dict of the arrays below; returns a '
    'dict of the outputs below.',
    'inputs': {
      name: {'shape': list(dims), 'dtype': dtype}
      for name, (dims, dtype) in layout.items()
    },
    'outputs': {
      name: {'shape': _dims(aval.shape), 'dtype': str(aval.dtype)}
      for name, aval in sorted(out_tree.items())
    },
    'symbolic_dims': {
      'b': 'batch size (any >= 1)',
      **(
        {'l': f'text length, 1 <= l <= {int(pre["max_seq_len"])}'}
        if pre['type'] == 'text'
        else {}
      ),
    },
    'preprocessing': preprocessing,
    'params': {
      'count': int(sum(v.size for v in stored.values())),
      'dtypes': sorted({str(v.dtype) for v in stored.values()}),
    },
    'model_config': model_config,
  }


# ----------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------


def check_output(path: str, overwrite: bool) -> None:
  """Refuses an existing output path unless --overwrite, and never one that
  is not an artifact of ours (we would delete someone's files)."""
  if not os.path.lexists(path):
    return
  if not overwrite:
    raise ValueError(
      f'output {path!r} exists; pass --overwrite to replace it, or choose '
      'another --output.'
    )
  if not os.path.isdir(path) or not os.path.isfile(
    os.path.join(path, SIGNATURE_FILE)
  ):
    raise ValueError(
      f'output {path!r} exists and is not an exported artifact (no '
      f'{SIGNATURE_FILE} in it); --overwrite only replaces artifacts: '
      'choose another --output.'
    )


def write_artifact(
  path: str,
  exported,
  stored: Dict[str, np.ndarray],
  signature: Dict[str, Any],
  config: Optional[ml_collections.ConfigDict],
  info: Dict[str, Any],
  overwrite: bool = False,
) -> Dict[str, int]:
  """Writes the StableHLO artifact to `path` (see `place_artifact`)."""
  check_output(path, overwrite)
  tmp = f'{os.path.abspath(path)}.tmp-{os.getpid()}'
  os.makedirs(tmp)
  with open(os.path.join(tmp, FUNCTION_FILE), 'wb') as f:
    f.write(exported.serialize())
  np.savez(os.path.join(tmp, PARAMS_FILE), **stored)
  return place_artifact(tmp, path, signature, config, info)


def place_artifact(
  tmp: str,
  path: str,
  signature: Dict[str, Any],
  config: Optional[ml_collections.ConfigDict],
  info: Dict[str, Any],
) -> Dict[str, int]:
  """Adds signature.json (and config.json) to the artifact written in
  `tmp`, a sibling of `path`, then renames it into place, so that a failed
  export leaves an old artifact whole; returns the file sizes."""
  signature = dict(signature, info=_jsonable(info))
  workdir_lib.write_json_atomic(os.path.join(tmp, SIGNATURE_FILE), signature)
  if config is not None:
    with open(os.path.join(tmp, CONFIG_FILE), 'w', encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2))
  if os.path.lexists(path):
    old = f'{os.path.abspath(path)}.old-{os.getpid()}'
    os.rename(path, old)
    os.rename(tmp, path)
    _remove_artifact(old)
  else:
    os.rename(tmp, path)
  return {
    name: os.path.getsize(os.path.join(path, name))
    for name in sorted(os.listdir(path))
  }


def _remove_artifact(path: str) -> None:
  for name in os.listdir(path):
    os.remove(os.path.join(path, name))
  os.rmdir(path)


def _jsonable(info: Dict[str, Any]) -> Dict[str, Any]:
  return json.loads(json.dumps(info or {}, default=str))


def export(
  exportable: Exportable,
  output: str,
  overwrite: bool = False,
  platforms: Sequence[str] = PLATFORMS,
) -> Tuple[str, Dict[str, int]]:
  """Exports `exportable` to `output` as StableHLO; (output, file sizes in
  bytes)."""
  check_output(output, overwrite)
  exported, stored, signature = export_stablehlo(
    exportable['model'],
    exportable['variables'],
    exportable['model_config'],
    platforms,
  )
  sizes = write_artifact(
    output,
    exported,
    stored,
    signature,
    exportable['config'],
    exportable['info'],
    overwrite,
  )
  return output, sizes


def check_format(fmt: str) -> None:
  if fmt not in FORMATS:
    raise ValueError(
      f'unknown --format={fmt!r}; choose one of {", ".join(FORMATS)}.'
    )


def reference_outputs(model, variables, model_config, inputs) -> Callable:
  """The model's own outputs for `inputs` (the dict the artifact takes)."""
  _, call, _, output_name = input_layout(model_config)
  model = serving_model(model)
  x, kwargs = call(inputs)
  out = jax.jit(lambda v, x, k: model.apply(v, x, deterministic=True, **k))(
    variables, x, kwargs
  )
  return {output_name: out} if output_name else dict(out)
