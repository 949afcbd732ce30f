"""Checks that the benchmark's two sides are the same model, and that a
worker measures each.

Why: a speed/memory table against HuggingFace's PyTorch Perceiver means
something only if both sides are the same model. These tests check, at tiny
sizes, that every benchmark workload builds models with equal parameter
counts on both sides (counted independently: ours from abstract shapes, HF
from torch), that our model computes HF's logits when given HF's weights (so
the two sides do the same arithmetic, not just hold the same number of
weights), and that one worker measurement runs end to end for each
implementation.
"""

import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
import torch

from benchmarks import workloads as W
from benchmarks import workloads_hf
from benchmarks import workloads_ours
from perceiver_io.checkpoints import common as ckpt_common
from perceiver_io.checkpoints import hf as ckpt_hf
from perceiver_io.model import build_model
from tests import hf_fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_workloads():
  """Every smoke workload plus the scaling script's tiny workloads."""
  items = list(W.standard_workloads(smoke=True).values())
  items.append(W.query_workload(64, grid=(32, 32), tiny=True))
  items.append(W.text_workload(256, tiny=True))
  return items


def _ours_param_count(w):
  """Our parameter count from abstract shapes (nothing is allocated)."""
  model = build_model(workloads_ours.ours_config(w))
  x, kwargs = workloads_ours.ours_model_inputs(W.make_inputs(w))
  kwargs.pop('attention_mask', None)
  one = jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)
  shapes = jax.eval_shape(
    lambda x, kw: model.init(jax.random.PRNGKey(0), x, **kw), one, kwargs
  )
  return sum(
    int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes['params'])
  )


@pytest.mark.parametrize('w', _tiny_workloads(), ids=lambda w: w.name)
def test_parameter_counts_equal(w):
  ours = _ours_param_count(w)
  hf = sum(p.numel() for p in workloads_hf.hf_build(w).parameters())
  assert ours == hf, f'{w.name}: ours {ours} vs HF {hf} parameters'
  assert ours > 1000  # A real model, not an empty tree.


def _ours_with_hf_weights(w, hf_model, arch):
  """Our model built from the benchmark's config, loaded with HF's weights."""
  model = build_model(workloads_ours.ours_config(w))
  state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  flat = ckpt_hf.convert_state_dict(state, arch)
  # Raises with the offending names if the two architectures differ.
  variables = ckpt_common.check_and_unflatten(model, flat, f'HF {arch}')
  return model, flax.core.unfreeze(variables)


@pytest.mark.slow
@pytest.mark.parametrize(
  'name,arch',
  [
    ('imdb', 'PerceiverForSequenceClassification'),
    ('optical_flow', 'PerceiverForOpticalFlow'),
  ],
)
def test_same_logits_on_hf_weights(name, arch):
  """Ours (benchmark config) on HF's weights gives HF's logits.

  HF's flow model is fed 3x3 patches extracted by an independent NumPy loop
  in HF's (patch row, patch column, channel) order, so this checks the two
  models, not the benchmark's torch patch helper.
  """
  w = W.standard_workloads(smoke=True)[name]
  hf_model = hf_fixtures.randomise(
    workloads_hf.hf_build(w)
  )  # Also sets eval mode.
  data = W.make_inputs(w)
  if w.kind == 'flow':
    patches = hf_fixtures.flow_patches_numpy(data['inputs'])
    hf_kwargs = dict(
      inputs=torch.from_numpy(
        np.ascontiguousarray(patches.transpose(0, 1, 4, 2, 3))
      )
    )
  else:
    hf_kwargs = workloads_hf.hf_model_inputs(w, data)[0]()
  with torch.no_grad():
    expected = hf_model(**hf_kwargs).logits.numpy()
  model, variables = _ours_with_hf_weights(w, hf_model, arch)
  x, kwargs = workloads_ours.ours_model_inputs(data)
  got = np.asarray(model.apply(variables, x, **kwargs))
  assert got.shape == expected.shape
  assert np.max(np.abs(expected)) > 1e-2  # Not trivially small outputs.
  # Measured differences are <= 5e-7; tanh GELU instead of the exact one
  # (the kind of mismatch this guards against) gives 1.4e-4 on imdb.
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_torch_flow_patches_match_numpy_reference():
  """The benchmark's torch patch helper = the independent NumPy loop, in
  HF's [B, T, 27, H, W] layout (channel order patch row, patch column, c)."""
  frames = (
    np.random.default_rng(0)
    .uniform(-1, 1, size=(2, 2, 5, 7, 3))
    .astype(np.float32)
  )
  got = workloads_hf.torch_flow_patches(torch.from_numpy(frames)).numpy()
  expected = hf_fixtures.flow_patches_numpy(frames).transpose(0, 1, 4, 2, 3)
  np.testing.assert_array_equal(got, expected)


def _run_worker(impl, mode='infer', **extra):
  """Runs one tiny imdb measurement as `python -m benchmarks.worker`."""
  w = W.standard_workloads(smoke=True)['imdb']
  spec = {
    'impl': impl,
    'mode': mode,
    'workload': {
      'name': w.name,
      'kind': w.kind,
      'batch': w.batch,
      'sizes': w.sizes,
      'modes': list(w.modes),
      'description': w.description,
    },
    'repeats': 1,
    'warmup': 1,
    'threads': 1,
    'device': 'cpu',
    **extra,
  }
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
    [sys.executable, '-m', 'benchmarks.worker', '--spec', json.dumps(spec)],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert len(lines) == 1, proc.stdout
  return json.loads(lines[0][len('RESULT ') :])


@pytest.mark.slow
def test_worker_end_to_end():
  results = {impl: _run_worker(impl) for impl in ('ours', 'hf')}
  for impl, r in results.items():
    assert 'status' not in r  # A single spec reports its result directly.
    assert (r['impl'], r['mode'], r['workload']) == (impl, 'infer', 'imdb')
    assert r['median_s'] > 0 and len(r['times_s']) == 1
    assert r['first_s'] > 0
    assert r['peak_rss'] > 0 and r['peak_rss'] >= r['rss_at_start']
    assert r['cpu_threads'] == 1
    assert not r['imported_tensorflow']
  assert results['ours']['params'] == results['hf']['params']
  assert results['ours']['params'] == _ours_param_count(
    W.standard_workloads(smoke=True)['imdb']
  )
  assert results['ours']['flops'] > 0
  assert results['ours']['compile_s'] > 0
  # Host memory reuse decided as the launchers do, before JAX's backend.
  settings = results['ours']['process_settings']
  if 'PERCEIVER_IO_REUSE_HOST_MEMORY' not in os.environ:
    assert settings['host_memory_reuse'].startswith('off (step '), settings


@pytest.mark.slow
def test_worker_times_a_torch_compiled_reference():
  # --hf_compile's path (compare_reference passes backend 'inductor'; the
  # 'eager' backend here runs the same torch.compile wrapping and Dynamo
  # tracing without building C++ kernels): the compiled model trains, its
  # first call is kept apart, and the result says it was compiled.
  r = _run_worker('hf', 'train', torch_compile='eager')
  assert r['torch_compile'] == 'eager'
  assert r['median_s'] > 0 and r['first_s'] > 0 and np.isfinite(r['loss'])
