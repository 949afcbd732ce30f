"""cuDNN flash attention (perceiver_io/kernels/cudnn.py), checked on the CPU.

Why on the CPU: the lent GPU is rare, and the parts that can fail without
one can be checked here: which calls go to cuDNN (`supported`), that the
width padding keeps values and gradients (run through XLA's kernel), and
that a model traced for a Hopper GPU sends its attention calls there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perceiver_io
from perceiver_io import model as model_lib
from perceiver_io import presets
from perceiver_io.kernels import cudnn
from perceiver_io.kernels import reference
from tests.model_helpers import random_params


def test_cudnn_attention_only_where_cudnn_takes_it():
  q = lambda width, dtype=jnp.bfloat16: jnp.zeros((2, 8, 4, width), dtype)
  gpu = lambda *a, cc=8.0, **k: cudnn.supported(
    *a, backend='gpu', compute_capability=cc, **k
  )
  assert gpu(q(128))
  assert gpu(q(64, jnp.float16))
  assert not cudnn.supported(q(128), backend='cpu')
  assert not gpu(q(128, jnp.float32))
  assert not gpu(q(128), cc=7.5)  # Pre-Ampere: no cuDNN flash attention.
  assert not gpu(q(160))  # > 128 before Hopper ...
  assert gpu(q(160), cc=9.0)  # ... but cuDNN takes up to 256 on Hopper.
  assert not gpu(q(264), cc=9.0)
  assert not gpu(q(36))  # not 8k
  # Unequal widths: the wider one (after padding) must qualify.
  assert gpu(q(32), v_head_width=160, cc=9.0)
  assert not gpu(q(32), v_head_width=160, cc=8.0)
  assert not gpu(q(32), v_head_width=36, cc=9.0)
  # Even query and key lengths, masked or not (JAX's bias check, which a
  # call without a mask meets through JAX's placeholder bias).
  assert gpu(q(128), jnp.ones((2, 8, 6), bool))
  assert not gpu(q(128), jnp.ones((2, 8, 7), bool))
  assert gpu(q(128), kv_length=6)
  assert not gpu(q(128), kv_length=7)
  one_query = jnp.zeros((2, 1, 4, 128), jnp.bfloat16)  # A classifier's.
  assert not gpu(one_query, jnp.ones((2, 1, 8), bool))
  assert not gpu(one_query, kv_length=8)


@pytest.mark.slow
@pytest.mark.parametrize(
  'qk_width,v_width,masked',
  [(8, 40, False), (40, 8, False), (16, 16, False), (8, 40, True)],
)
def test_cudnn_attention_padding_keeps_values_and_gradients(
  qk_width, v_width, masked
):
  # `cudnn.attention` zero-pads the narrower of the q/k and v head widths
  # so that one fused kernel takes them. Run with XLA's kernel here (cuDNN
  # needs a GPU): values and all three gradients equal plain attention.
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  q = jax.random.normal(keys[0], (2, 5, 3, qk_width))
  k = jax.random.normal(keys[1], (2, 7, 3, qk_width))
  v = jax.random.normal(keys[2], (2, 7, 3, v_width))
  d_out = jax.random.normal(keys[3], (2, 5, 3, v_width))
  # A key padding mask (each row keeps at least one key, as the model's
  # fully masked rows are zeroed after attention anyway).
  mask = (jax.random.uniform(keys[4], (2, 5, 7)) < 0.6).at[:, :, 0].set(True)
  mask = mask if masked else None
  padded = lambda *a: cudnn.attention(*a, mask, implementation='xla')
  plain = lambda *a: reference.einsum_attention(*a, mask)
  out, vjp = jax.vjp(padded, q, k, v)
  ref, ref_vjp = jax.vjp(plain, q, k, v)
  assert out.shape == (2, 5, 3, v_width)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  for got, want in zip(vjp(d_out), ref_vjp(d_out)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_cudnn_impl_takes_the_language_model_on_hopper(monkeypatch):
  # The language model's attention (unequal q/k and v head widths, and a
  # padding mask on the input cross-attention) goes to the padded fused
  # path with attention_impl='cudnn' on a Hopper GPU. Traced for such a GPU
  # (`kernel_options` name the platform and compute capability), with the
  # einsum path standing in for cuDNN.
  calls = []

  def fake_cudnn(q, k, v, mask, implementation='cudnn'):
    assert implementation == 'cudnn'
    calls.append((q.shape[-1], v.shape[-1], mask is not None))
    return reference.einsum_attention(q, k, v, mask)

  monkeypatch.setattr(cudnn, 'attention', fake_cudnn)
  # Head widths that cuDNN takes: q/k 16 / 2 = 8, v 48 / 2 = 24.
  cfg = presets.get_config('tiny_language_mlm', depth=1, heads=2, qk=16)
  inputs, kwargs = model_lib.example_inputs(cfg, 2)
  inputs = np.random.default_rng(0).integers(0, 262, inputs.shape)
  variables = {'params': random_params(perceiver_io.build_model(cfg), inputs)}

  def forward(impl):
    model = perceiver_io.build_model(
      cfg,
      attention_impl=impl,
      dtype='bfloat16',
      kernel_options={'platform': 'gpu', 'compute_capability': 9.0},
    )
    return jax.jit(lambda v, x, kw: model.apply(v, x, **kw))(
      variables, inputs, kwargs
    )

  ref = forward('einsum')
  assert not calls
  got = forward('cudnn')
  assert len(calls) >= 3  # Input cross-attention, latents, decoder.
  assert any(qk != v for qk, v, _ in calls)
  assert any(masked for _, _, masked in calls)
  np.testing.assert_array_equal(
    np.asarray(got, np.float32), np.asarray(ref, np.float32)
  )
