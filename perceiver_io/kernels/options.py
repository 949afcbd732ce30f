"""The one typed object that says how the model's products are computed.

Why an object passed down the modules: every layer must make the same
choice, tests and benchmarks must be able to make another one for a single
call, and nothing global may change what a layer computes. The choice never
changes *what* is computed: every kernel gives the same values and gradients
to float round-off (tests/test_kernels_*.py).
"""

import dataclasses
from typing import Any, Dict, Optional

import jax

# `attention` values:
#   'xla'     default: `jax.nn.dot_product_attention` (XLA's fused kernel)
#             where the q/k and v head widths agree and no attention dropout
#             is active, the reference einsum otherwise. Plain autodiff, so
#             every JAX transformation works on every backend.
#   'auto'    the fastest kernels this backend has: 'cpu' on the CPU
#             backend, 'xla' elsewhere. The experiment runner's default.
#   'cpu'     the CPU kernels (kernels/cpu.py, kernels/blocked.py) on the
#             CPU backend, 'xla' elsewhere. Custom VJPs: no forward mode
#             (`jax.jvp`, `jax.jacfwd`).
#   'cudnn'   cuDNN's flash attention on an NVIDIA GPU where it takes the
#             call (kernels/cudnn.py), 'xla' for the other calls; on the CPU
#             backend as 'cpu' (a GPU config runs on a laptop unchanged).
#   'fused'   as 'xla', but an error where the fused kernel cannot be used.
#   'einsum'  always the reference einsum (kernels/reference.py).
ATTENTION_IMPLS = ('xla', 'auto', 'cpu', 'cudnn', 'fused', 'einsum')

# Defaults of the CPU kernels' size rules (kernels/blocked.py).
DEFAULT_ATTENTION_BLOCK_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class KernelOptions:
  """How attention and dense layers run; see `ATTENTION_IMPLS` above.

  Attributes:
    attention: one of `ATTENTION_IMPLS`.
    blockwise_gradients: CPU kernels only: compute each block's parameter
      gradients before the previous block's backward (kernels/cpu.py).
      False only for A/B measurements.
    blocked_attention_min_bytes: CPU kernels only: run attention one batch
      element, head and row block at a time from this many bytes of fp32
      logits; None = the measured default rule (kernels/blocked.py). 0
      blocks every call, a huge value none.
    attention_block_bytes: CPU kernels only: the size of one such block.
    platform: the backend to choose kernels for; None = JAX's default
      backend. Set it to trace for another backend (deviceless GPU compiles,
      or counting FLOPs before any backend exists).
    compute_capability: the NVIDIA GPU to choose cuDNN calls for (9.0:
      Hopper); None = read from the first device.
  """

  attention: str = 'xla'
  blockwise_gradients: bool = True
  blocked_attention_min_bytes: Optional[int] = None
  attention_block_bytes: int = DEFAULT_ATTENTION_BLOCK_BYTES
  platform: Optional[str] = None
  compute_capability: Optional[float] = None

  def __post_init__(self):
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(
        f'attention_impl must be one of '
        f'{", ".join(ATTENTION_IMPLS)}; got '
        f'{self.attention!r}.'
      )

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> 'KernelOptions':
    """From a model config: `attention_impl` and optional `kernel_options`."""
    extra = dict(config.get('kernel_options') or {})
    valid = {f.name for f in dataclasses.fields(cls)} - {'attention'}
    unknown = sorted(set(extra) - valid)
    if unknown:
      raise ValueError(
        f'unknown kernel_options keys {unknown}; valid keys '
        f'are {sorted(valid)}.'
      )
    return cls(attention=config.get('attention_impl', 'xla'), **extra)

  def backend(self) -> str:
    return self.platform or jax.default_backend()

  def resolved(self) -> str:
    """The kernel family for this backend: 'xla', 'fused', 'einsum',
    'cudnn' or 'cpu' ('auto' and the backend-specific names resolved)."""
    if self.attention in ('auto', 'cpu', 'cudnn'):
      backend = self.backend()
      if backend == 'cpu':
        return 'cpu'
      return 'cudnn' if self.attention == 'cudnn' else 'xla'
    return self.attention

  def cpu_kernels(self) -> bool:
    return self.resolved() == 'cpu'
