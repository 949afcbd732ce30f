"""Parity with HuggingFace's PyTorch Perceiver on the same weights.

For each of the seven HF classes: a small, non-default, fully randomised model
is saved with `save_pretrained`, imported with `from_hf`, and both are run on
the same inputs (ours channels-last). Max |difference| of logits must be
<= 1e-4 in float32.
"""

import jax
import numpy as np
import pytest

from perceiver_io import checkpoints
from tests import hf_fixtures

TOL = 1e-4


def _max_diff(a, b):
  if isinstance(a, dict):
    assert sorted(a) == sorted(b)
    return max(_max_diff(a[k], b[k]) for k in a)
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(a - b)))


# Every family through safetensors; the torch-pickle path on two of them.
CASES = [(f, True) for f in hf_fixtures.FAMILIES] + [
  ('mlm', False),
  ('image_conv', False),
]


@pytest.mark.parametrize('family,safe', CASES)
def test_from_hf_matches_pytorch(family, safe, tmp_path):
  hf_model, hf_kwargs, inputs, kwargs = hf_fixtures.build(family)
  hf_model.save_pretrained(tmp_path, safe_serialization=safe)
  expected = hf_fixtures.hf_logits(hf_model, hf_kwargs)

  model, variables, config = checkpoints.from_hf(str(tmp_path))
  got = jax.jit(lambda v, x, kw: model.apply(v, x, **kw))(
    variables, inputs, kwargs
  )
  diff = _max_diff(got, expected)
  scale = _max_diff(expected, jax.tree_util.tree_map(np.zeros_like, expected))
  assert scale > 1e-2  # Outputs are not trivially small.
  print(f'{family}: max |logit diff| = {diff:.2e}')
  assert diff <= TOL
  assert config['name'].startswith('hf:')
