"""The Perceiver encoder: latents, one cross-attend, a shared latent stack.

Official semantics (reference section 1.5): a trainable latent array
`[num_latents, latent_channels]` (truncated normal, std 0.02) cross-attends
once into the inputs; then `num_self_attends_per_block` self-attention layers
are applied `num_blocks` times *with the same weights* (total depth is the
product). Only the input mask is used; latent self-attention is never masked.

With `scan_layers` the stack runs as `nn.scan` over parameters stacked on a
leading layer axis (`self_attend/...` of shape [num_self_attends_per_block,
...] instead of `self_attend_0/...`, `self_attend_1/...`), and the
`num_blocks` repeats as a second `nn.scan` that broadcasts those parameters.
Why: XLA compiles one layer instead of every layer of every repeat (compile
time grows with depth otherwise); same values to float round-off.
`perceiver_io.checkpoints.stack_layers` / `unstack_layers` convert between
the two layouts.

What a layer keeps for the backward pass (`remat`, `remat_policy`): the
unrolled stack keeps what XLA decides to keep; a scanned stack must hand its
residuals across the loop as stacked arrays, so without `remat` its layers
keep only the outputs of their weight products ('dots_no_batch') and
recompute the rest (LayerNorm, GELU, attention scores), as XLA recomputes
cheap elementwise work in the unrolled graph. Saving every residual instead
held 1.6-1.8x the unrolled stack's temporaries and ran no faster
(BUILD_NOTES).
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from perceiver_io import kernels
from perceiver_io.attention import CrossAttentionBlock
from perceiver_io.attention import make_cross_attention_mask
from perceiver_io.attention import SelfAttentionBlock

# What a rematerialised latent layer saves for its backward pass.
REMAT_POLICIES = {
  'nothing': None,  # jax.checkpoint's default: save nothing.
  'dots': jax.checkpoint_policies.checkpoint_dots,
  'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class PerceiverEncoder(nn.Module):
  """Inputs [B, M, C] (+ mask [B, M]) -> latents [B, N, D].

  Attributes:
    kernel_options: how the blocks' products run (perceiver_io.kernels);
      `kernels.block` may add a gradient order to a block, never a change
      of what it computes.
    remat: rematerialise each latent layer in the backward pass (saves
      activation memory for deep stacks at ~30% more compute).
    remat_policy: what a rematerialised layer keeps (`REMAT_POLICIES`):
      'nothing' (recompute the whole layer), 'dots' (keep every matrix
      product's output) or 'dots_no_batch' (keep the weight products';
      recompute attention scores and elementwise work).
    scan_layers: run the latent stack with `nn.scan` over stacked
      parameters (module docstring).
  """

  num_latents: int = 512
  latent_channels: int = 1024
  num_blocks: int = 8
  num_self_attends_per_block: int = 6
  num_cross_attend_heads: int = 1
  num_self_attend_heads: int = 8
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  cross_attend_widening_factor: int = 1
  self_attend_widening_factor: int = 1
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  cross_attention_shape_for_attn: str = 'kv'
  use_query_residual: bool = True
  latents_init_scale: float = 0.02
  gelu_approximate: bool = True
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  remat: bool = False
  remat_policy: str = 'nothing'
  scan_layers: bool = False
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, input_mask=None, deterministic=True):
    for heads in (self.num_cross_attend_heads, self.num_self_attend_heads):
      if self.latent_channels % heads:
        raise ValueError(
          f'latent_channels={self.latent_channels} must be '
          f'divisible by the number of heads ({heads}).'
        )
    batch = inputs.shape[0]
    latents = self.param(
      'latents',
      nn.initializers.truncated_normal(self.latents_init_scale),
      (self.num_latents, self.latent_channels),
      self.param_dtype,
    )
    z = jnp.broadcast_to(latents, (batch,) + latents.shape)
    if self.dtype is not None:
      z = z.astype(self.dtype)
      inputs = inputs.astype(self.dtype)
    mask = None
    if input_mask is not None:
      mask = make_cross_attention_mask(
        jnp.ones((batch, self.num_latents), bool), input_mask
      )
    common = dict(
      gelu_approximate=self.gelu_approximate,
      kernel_options=self.kernel_options,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      dropout_rate=self.dropout_rate,
      attention_dropout_rate=self.attention_dropout_rate,
    )
    cross_block = kernels.block(CrossAttentionBlock, self.kernel_options)
    self_block = kernels.block(SelfAttentionBlock, self.kernel_options)
    if self.remat or self.scan_layers:
      # Inside a scan the loop already keeps XLA from merging the
      # recomputation with the forward pass, so no extra CSE barrier.
      policy = self.remat_policy if self.remat else 'dots_no_batch'
      self_block = nn.remat(
        self_block,
        static_argnums=(3,),
        prevent_cse=not self.scan_layers,
        policy=REMAT_POLICIES[policy],
      )
    z = cross_block(
      num_heads=self.num_cross_attend_heads,
      qk_channels=self.qk_channels,
      v_channels=self.v_channels,
      widening_factor=self.cross_attend_widening_factor,
      shape_for_attn=self.cross_attention_shape_for_attn,
      use_query_residual=self.use_query_residual,
      name='cross_attend',
      **common,
    )(z, inputs, mask=mask, deterministic=deterministic)
    self_attend = dict(
      num_heads=self.num_self_attend_heads,
      qk_channels=self.qk_channels,
      v_channels=self.v_channels,
      widening_factor=self.self_attend_widening_factor,
      **common,
    )
    if self.scan_layers:
      return self._scanned_stack(self_block, self_attend, z, deterministic)
    layers = [
      self_block(name=f'self_attend_{i}', **self_attend)
      for i in range(self.num_self_attends_per_block)
    ]
    for _ in range(self.num_blocks):  # Same modules each block: shared weights.
      for layer in layers:
        z = layer(z, None, deterministic)
    return z

  def _scanned_stack(self, self_block, kwargs, z, deterministic):
    """The latent stack as one scan over the layers of a block, inside a
    scan over the `num_blocks` repeats that shares their parameters."""
    layers = nn.scan(
      _carry(self_block),
      variable_axes={'params': 0},
      split_rngs={'params': True, 'dropout': True},
      in_axes=(nn.broadcast, nn.broadcast),
      length=self.num_self_attends_per_block,
    )(name='self_attend', **kwargs)

    def block(stack, carry, _):
      return stack(carry, None, deterministic)[0], None

    repeats = nn.scan(
      block,
      variable_broadcast='params',
      split_rngs={'params': False, 'dropout': True},
      length=self.num_blocks,
    )
    return repeats(layers, z, None)[0]


def _carry(block_cls):
  """`block_cls` with the (carry, output) return `nn.scan` expects."""

  class Carry(block_cls):  # pylint: disable=missing-class-docstring
    def __call__(self, z, mask, deterministic):
      return super().__call__(z, mask, deterministic), None

  Carry.__name__ = Carry.__qualname__ = block_cls.__name__
  return Carry
