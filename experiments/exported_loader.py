"""Runs an artifact of `python -m experiments.export` with only jax and numpy.

Why standalone: a service (or a user without this repository) copies this
one file beside the artifact. It imports nothing of perceiver_io, flax or
experiments, so it keeps working when the research code changes.

  import exported_loader
  model = exported_loader.load('/tmp/imdb_export')
  outputs = model(input_ids=ids, attention_mask=mask)  # dict of arrays
  model.signature['inputs']  # names, shapes ('b', 'l' symbolic), dtypes

JAX reads serialized artifacts for a limited time (`COMPATIBILITY`): an
artifact that this JAX cannot read raises one ValueError line that names
both versions and says how to re-export.
"""

import json
import os
from typing import Any, Dict

import jax
import numpy as np

try:
  from jax import export as jax_export
except ImportError:  # jax.export is public from JAX 0.4.30 on.
  raise ImportError(
    f'exported_loader needs JAX >= 0.4.30 (jax.export); this is JAX '
    f'{jax.__version__}: pip install -U jax jaxlib.'
  ) from None

SIGNATURE_FILE = 'signature.json'
COMPATIBILITY = (
  'jax.export guarantees that an artifact runs on jaxlib releases up to 6 '
  'months newer and up to 3 weeks older than the one that exported it'
)


class ExportedModel:
  """An exported Perceiver IO function with its parameters.

  `__call__(**inputs)` runs it eagerly; `call(params, inputs)` is the same
  function as a JAX callable (traceable inside jax.jit).
  """

  def __init__(self, path: str):
    self.path = path
    signature_path = os.path.join(path, SIGNATURE_FILE)
    if not os.path.isfile(signature_path):
      raise FileNotFoundError(
        f'{path!r} is not an exported artifact: no {SIGNATURE_FILE} in it '
        '(write one with python -m experiments.export).'
      )
    with open(signature_path, encoding='utf-8') as f:
      self.signature: Dict[str, Any] = json.load(f)
    if self.signature.get('format') != 'stablehlo':
      raise ValueError(
        f'{path!r} holds a {self.signature.get("format")!r} artifact, '
        "not a 'stablehlo' one: run an ONNX model.onnx with onnxruntime."
      )
    with open(os.path.join(path, self.signature['function_file']), 'rb') as f:
      serialized = bytearray(f.read())
    try:
      self.exported = jax_export.deserialize(serialized)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(version_error(self.signature, e)) from None
    with np.load(os.path.join(path, self.signature['params_file'])) as npz:
      self.params = {k: npz[k] for k in npz.files}

  @property
  def input_names(self):
    return list(self.signature['inputs'])

  def call(self, params, inputs: Dict[str, Any]):
    return self.exported.call(params, inputs)

  def __call__(self, **inputs) -> Dict[str, np.ndarray]:
    check_inputs(self.signature, inputs)
    try:
      out = self.exported.call(self.params, inputs)
    except (ValueError, TypeError) as e:
      if 'platform' in str(e):
        raise ValueError(
          f'{self.path}: exported for {self.signature["platforms"]}, but '
          f'JAX runs on {jax.default_backend()!r}.'
        ) from None
      raise
    return {k: np.asarray(v) for k, v in out.items()}


def version_error(signature: Dict[str, Any], error: Exception) -> str:
  first = str(error).strip().splitlines()[0] if str(error).strip() else ''
  return (
    f'cannot read this artifact (exported with JAX '
    f'{signature.get("jax_version")}, calling convention '
    f'{signature.get("calling_convention_version")}) with JAX '
    f'{jax.__version__} (reads {supported_versions()}): {first}. '
    f'{COMPATIBILITY}; re-export it with this JAX (python -m '
    'experiments.export ... --overwrite).'
  )


def supported_versions() -> str:
  low = jax_export.minimum_supported_calling_convention_version
  high = jax_export.maximum_supported_calling_convention_version
  return f'calling conventions {low}-{high}'


def check_inputs(signature: Dict[str, Any], inputs: Dict[str, Any]) -> None:
  """One clear error for a missing, extra or mis-shaped input."""
  expected = signature['inputs']
  if sorted(inputs) != sorted(expected):
    raise ValueError(
      f'inputs {sorted(inputs)} given; this artifact takes '
      f'{sorted(expected)} ({SIGNATURE_FILE}).'
    )
  for name, spec in expected.items():
    shape = np.shape(inputs[name])
    dims = spec['shape']
    if len(shape) != len(dims) or any(
      isinstance(d, int) and d != s for d, s in zip(dims, shape)
    ):
      raise ValueError(
        f'input {name!r} has shape {tuple(shape)}; expected {dims} '
        f'(symbolic: {signature.get("symbolic_dims", {})}).'
      )
    dtype = np.asarray(inputs[name]).dtype
    if str(dtype) != spec['dtype']:
      raise ValueError(f'input {name!r} is {dtype}; expected {spec["dtype"]}.')


def load(path: str) -> ExportedModel:
  return ExportedModel(path)
