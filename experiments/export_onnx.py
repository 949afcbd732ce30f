"""ONNX export through jax2onnx, checked with onnxruntime.

Why jax2onnx (and not StableHLO -> ONNX): it converts the traced JAX
program primitive by primitive into ONNX operators, is maintained, and
keeps a symbolic batch dimension; no maintained converter reads StableHLO
into ONNX. Unlike the StableHLO artifact, the weights are ONNX initializers
inside the graph (ONNX's own convention; jax2onnx spills them into a
`.onnx.data` sidecar past the protobuf limit), and text has a fixed length
(max_seq_len: the converter cannot decide `l <= max_seq_len` on a symbolic
length), so pad text to it with attention_mask 0.
"""

import importlib.util
import logging
import os
from typing import Any, Dict, Optional

import jax
import numpy as np

from experiments import export_lib

MODEL_FILE = 'model.onnx'
# Families jax2onnx 0.17 cannot convert, with its error, refused up front.
_UNSUPPORTED = {
  'conv': (
    "jax2onnx's max_pool converter fails on flax.linen.max_pool "
    '(patched_max_pool() takes 1 positional argument)'
  ),
}


def missing() -> Optional[str]:
  """One line naming what ONNX export needs and is not installed, or None."""
  absent = [
    name
    for name in ('jax2onnx', 'onnxruntime')
    if importlib.util.find_spec(name) is None
  ]
  if not absent:
    return None
  return (
    f'--format=onnx needs {" and ".join(absent)} (pip install --no-deps '
    '-r requirements-onnx.txt, from the repository root); use '
    '--format=stablehlo.'
  )


def unsupported(model_config: Dict[str, Any]) -> Optional[str]:
  pre = model_config['preprocessor']
  if pre.get('prep_type') == 'conv':
    return (
      'this model (a conv preprocessor: ImageNet conv) cannot be exported '
      f'to ONNX: {_UNSUPPORTED["conv"]}; use --format=stablehlo.'
    )
  return None


def onnx_layout(model_config: Dict[str, Any]):
  """(names, ONNX input shapes with 'B', dtypes, call, output name)."""
  layout, call, preprocessing, output_name = export_lib.input_layout(
    model_config
  )
  length = model_config['preprocessor'].get('max_seq_len')
  shapes = {
    name: tuple('B' if d == 'b' else length if d == 'l' else d for d in dims)
    for name, (dims, _) in layout.items()
  }
  dtypes = {name: dtype for name, (_, dtype) in layout.items()}
  return shapes, dtypes, call, preprocessing, output_name


def onnx_output_name(name: str, input_names) -> str:
  return f'{name}_output' if name in input_names else name


def convert(model, variables, model_config: Dict[str, Any], path: str):
  """Writes `path` (an .onnx file); returns the signature's parts."""
  from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top

  # onnx_ir warns once per shape constant it leaves untyped (harmless);
  # jax2onnx logs its optional plugins at INFO.
  logging.getLogger('onnx_ir').setLevel(logging.ERROR)
  logging.getLogger('jax2onnx').setLevel(logging.WARNING)

  problem = unsupported(model_config)
  if problem:
    raise ValueError(problem)
  model = export_lib.serving_model(model)
  shapes, dtypes, call, preprocessing, output_name = onnx_layout(model_config)
  names = list(shapes)

  def forward(v, inputs):
    x, kwargs = call(inputs)
    return model.apply(v, x, deterministic=True, **kwargs)

  out_shapes = jax.eval_shape(
    forward,
    variables,
    {
      n: jax.ShapeDtypeStruct(
        tuple(1 if d == 'B' else d for d in shapes[n]), dtypes[n]
      )
      for n in names
    },
  )
  outputs = (
    {output_name: out_shapes}
    if output_name
    else dict(sorted(out_shapes.items()))
  )

  def serve(*arrays):
    x, kwargs = call(dict(zip(names, arrays)))
    out = model.apply(variables, x, deterministic=True, **kwargs)
    return out if output_name else tuple(out[k] for k in outputs)

  # ONNX names are unique across inputs and outputs: a multimodal model's
  # outputs are '<modality>_output'.
  onnx_names = [onnx_output_name(n, names) for n in outputs]
  to_onnx(
    serve,
    [jax.ShapeDtypeStruct(shapes[n], np.dtype(dtypes[n])) for n in names],
    model_name=model_config.get('name', 'perceiver_io'),
    input_names=names,
    output_names=onnx_names,
    return_mode='file',
    output_path=path,
  )
  return {
    'inputs': {
      n: {
        'shape': ['b' if d == 'B' else d for d in shapes[n]],
        'dtype': dtypes[n],
      }
      for n in names
    },
    'outputs': {
      onnx_output_name(n, names): {
        'shape': ['b'] + list(o.shape[1:]),
        'dtype': str(o.dtype),
      }
      for n, o in outputs.items()
    },
    'preprocessing': preprocessing,
  }


def export(exportable, output: str, overwrite: bool = False):
  """Writes model.onnx, signature.json (and config.json) to `output`."""
  problem = missing() or unsupported(exportable['model_config'])
  if problem:
    raise ValueError(problem)
  export_lib.check_output(output, overwrite)
  tmp = f'{os.path.abspath(output)}.tmp-{os.getpid()}'
  os.makedirs(tmp)
  parts = convert(
    exportable['model'],
    exportable['variables'],
    exportable['model_config'],
    os.path.join(tmp, MODEL_FILE),
  )
  import onnxruntime  # pylint: disable=g-import-not-at-top

  signature = {
    'artifact_version': export_lib.ARTIFACT_VERSION,
    'format': 'onnx',
    'function_file': MODEL_FILE,
    'onnxruntime_version': onnxruntime.__version__,
    **parts,
    'symbolic_dims': {'b': 'batch size (any >= 1)'},
    'model_config': exportable['model_config'],
  }
  sizes = export_lib.place_artifact(
    tmp, output, signature, exportable['config'], exportable['info']
  )
  return output, sizes


def quiet_session_options(onnxruntime):
  """Session options without the per-initializer cleanup warnings."""
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  return options


def run(path: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Runs an ONNX artifact with onnxruntime (CPU): {output name: array}."""
  import onnxruntime  # pylint: disable=g-import-not-at-top

  session = onnxruntime.InferenceSession(
    os.path.join(path, MODEL_FILE),
    quiet_session_options(onnxruntime),
    providers=['CPUExecutionProvider'],
  )
  names = [o.name for o in session.get_outputs()]
  return dict(zip(names, session.run(names, inputs)))
