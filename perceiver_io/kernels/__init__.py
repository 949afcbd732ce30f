"""How the model's attention, dense layers and blocks are computed.

The model modules (attention.py, encoder.py, decoders.py) say *what* the
paper computes; this package decides *how*, from one `KernelOptions` object
passed explicitly down the modules. Four entry points:

  attend(q, k, v, mask, options, ...)   the attention core of one call
  dense(features, options, ...)         a Dense layer (its weight gradient)
  layer_norm(options, ...)              a LayerNorm (its parameter gradient)
  block(block_cls, options)             a Perceiver block (gradient order)

On the default options ('xla') they are plain Flax/JAX: every JAX
transformation works on every backend. The other kernels are opt-in
(`KernelOptions.attention`, options.py), each with a note in its module on
what it buys, measured, and how to remove it:

  reference.py   the official computation (einsum) and XLA's fused kernel
  cudnn.py       cuDNN flash attention (NVIDIA GPUs)
  cpu.py         row-major weight gradients, attention backward, blockwise
                 layer gradients, 2-D LayerNorm (XLA:CPU)
  blocked.py     attention in blocks for long inputs (XLA:CPU)
"""

import flax.linen as nn

from perceiver_io.kernels import cpu
from perceiver_io.kernels import cudnn
from perceiver_io.kernels import reference
from perceiver_io.kernels.options import ATTENTION_IMPLS
from perceiver_io.kernels.options import KernelOptions

__all__ = [
  'ATTENTION_IMPLS',
  'KernelOptions',
  'attend',
  'block',
  'dense',
  'layer_norm',
]


def attend(
  q,
  k,
  v,
  mask,
  options: KernelOptions,
  *,
  dropout_rate=0.0,
  deterministic=True,
  dropout_rng=None,
):
  """softmax(q k^T / sqrt(d_qk)) v: [B,T,H,D] x [B,S,H,D] x [B,S,H,Dv].

  `mask` is [B, T, S] (True: attend) or None. Attention dropout, when
  active, always runs the reference einsum (the fused kernels take none).
  """
  use_dropout = dropout_rate > 0.0 and not deterministic
  kind = options.resolved()
  if kind == 'fused' and (q.shape[-1] != v.shape[-1] or use_dropout):
    raise ValueError(
      'attention_impl="fused" needs qk_channels == v_channels '
      'and no active attention dropout; use "xla".'
    )
  if use_dropout:
    return reference.einsum_attention(q, k, v, mask, dropout_rate, dropout_rng)
  if kind == 'einsum':
    return reference.einsum_attention(q, k, v, mask)
  if kind == 'cudnn' and cudnn.supported(
    q,
    mask,
    backend=options.backend(),
    v_head_width=v.shape[-1],
    compute_capability=options.compute_capability,
    kv_length=k.shape[1],
  ):
    return cudnn.attention(q, k, v, mask)
  if kind == 'cpu':
    return cpu.attention(q, k, v, mask, options)
  return reference.xla_attention(q, k, v, mask)


def dense(features, options: KernelOptions, **kwargs) -> nn.Dense:
  """`nn.Dense(features, **kwargs)`; with the CPU kernels its weight
  gradient is a row-major product (kernels/cpu.py)."""
  if options.cpu_kernels():
    kwargs['dot_general'] = cpu.dense_dot_general
  return nn.Dense(features, **kwargs)


def layer_norm(options: KernelOptions, **kwargs) -> nn.LayerNorm:
  """`nn.LayerNorm(**kwargs)`; with the CPU kernels it normalises its input
  seen as 2-D (same values and parameters; kernels/cpu.py)."""
  return (cpu.LayerNorm if options.cpu_kernels() else nn.LayerNorm)(**kwargs)


def block(block_cls, options: KernelOptions):
  """`block_cls`; with the CPU kernels a subclass whose backward computes
  each block's parameter gradients before passing on (kernels/cpu.py)."""
  return (
    cpu.ordered_gradients(block_cls) if options.cpu_kernels() else block_cls
  )
