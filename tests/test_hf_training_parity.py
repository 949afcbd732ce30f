"""Training follows HuggingFace's PyTorch Perceiver step for step.

Why: forward parity (test_hf_parity.py) does not show that gradients, the
optimizer and their interplay match. Here both sides start from the same
randomised weights (imported with `from_hf`), take the same AdamW steps on
the same batch and labels, and must report the same loss at every step and
the same logits afterwards. Ours runs with the runner's kernels ('auto': the
CPU custom gradients here), so the hand-written backward is held against
torch's autograd too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from perceiver_io import checkpoints
from tests import hf_fixtures

STEPS = 3
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01


def _hf_steps(model, kwargs, labels):
  """Losses of `STEPS` AdamW steps, then the logits (eval mode)."""
  model.train()
  opt = torch.optim.AdamW(
    model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, eps=1e-8
  )
  losses = []
  for _ in range(STEPS):
    opt.zero_grad()
    logits = model(**kwargs).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    opt.step()
    losses.append(float(loss.detach()))
  model.eval()
  with torch.no_grad():
    return losses, model(**kwargs).logits.numpy()


def _our_steps(model, variables, inputs, kwargs, labels):
  # torch's AdamW: decoupled weight decay on every parameter, eps outside
  # the square root (optax.adamw's defaults but for eps and the decay).
  tx = optax.adamw(LEARNING_RATE, eps=1e-8, weight_decay=WEIGHT_DECAY)
  params = variables['params']
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = model.apply({'params': p}, inputs, **kwargs)
      return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels
      ).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(STEPS):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  return losses, np.asarray(model.apply({'params': params}, inputs, **kwargs))


@pytest.mark.slow
@pytest.mark.parametrize('family', ['sequence_classification', 'image_fourier'])
def test_adamw_steps_match_pytorch(family, tmp_path):
  hf_model, hf_kwargs, inputs, kwargs = hf_fixtures.build(family)
  hf_model.save_pretrained(tmp_path)
  labels = np.array([1, 2], np.int32)
  model, variables, _ = checkpoints.from_hf(
    str(tmp_path), attention_impl='auto'
  )
  ours, our_logits = _our_steps(
    model, variables, inputs, kwargs, jnp.asarray(labels)
  )
  theirs, their_logits = _hf_steps(hf_model, hf_kwargs, labels.astype(np.int64))
  print(f'{family}: losses ours {ours} vs HF {theirs}')
  assert abs(theirs[0] - theirs[-1]) > 1e-3  # The steps changed something.
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(our_logits, their_logits, rtol=1e-3, atol=1e-4)
