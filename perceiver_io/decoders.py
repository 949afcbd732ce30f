"""Decoders: output queries cross-attend into the latents.

Every decoder here has the same call signature,
`decoder(z, *, inputs, modality_sizes, inputs_without_pos, index_dims,
subsampled_points, query_mask, deterministic)`, and builds its own queries
from what it needs of the preprocessed inputs (official
`decoder_query`):

* `BasicDecoder`: trainable or Fourier queries over `output_index_dims`
  (optionally subsampled, optionally with the preprocessed input prepended);
* `ClassificationDecoder`: one trainable query -> `[B, num_classes]`;
* `FlowDecoder`: the preprocessed input *is* the query; output / 100 reshaped to
  `[B, H, W, 2]`;
* `MultimodalDecoder`: per-modality query builders padded to a common width
  with learned vectors, one shared cross-attention;
* `ProjectionDecoder`: the original Perceiver mean-over-latents head.

Large query sets can be decoded in chunks (`query_chunk_size`): the queries are
independent given the latents, so chunking changes memory, not results.
"""

import dataclasses
from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_io import kernels
from perceiver_io.attention import CrossAttentionBlock
from perceiver_io.attention import default_kernel_init
from perceiver_io.position_encoding import PositionEncoding
from perceiver_io.position_encoding import subsampled_positions


class DecoderCrossAttention(nn.Module):
  """Queries [B, O, Cq] x latents [B, N, D] -> [B, O, output_channels or Cq].

  The cross-attention block (MLP in the query width) followed by an optional
  final Linear named `output`.
  """

  num_heads: int = 1
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  widening_factor: int = 1
  use_query_residual: bool = False
  output_channels: Optional[int] = None  # None: no final projection.
  output_zero_init: bool = False
  query_chunk_size: Optional[int] = None
  gelu_approximate: bool = True
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  def setup(self):
    self.cross_attend = kernels.block(CrossAttentionBlock, self.kernel_options)(
      num_heads=self.num_heads,
      qk_channels=self.qk_channels,
      v_channels=self.v_channels,
      widening_factor=self.widening_factor,
      use_query_residual=self.use_query_residual,
      shape_for_attn='kv',
      gelu_approximate=self.gelu_approximate,
      kernel_options=self.kernel_options,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    if self.output_channels is not None:
      init = (
        nn.initializers.zeros if self.output_zero_init else default_kernel_init
      )
      self.output = nn.Dense(
        self.output_channels,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=init,
      )

  def _decode(self, queries, z, query_mask, deterministic):
    mask = None
    if query_mask is not None:
      mask = jnp.broadcast_to(
        query_mask.astype(bool)[:, :, None], query_mask.shape + (z.shape[1],)
      )
    x = self.cross_attend(queries, z, mask=mask, deterministic=deterministic)
    if self.output_channels is not None:
      x = self.output(x)
    return x

  def __call__(self, queries, z, query_mask=None, deterministic=True):
    if query_mask is not None and (
      tuple(query_mask.shape) != tuple(queries.shape[:2])
    ):
      raise ValueError(
        f'query_mask must have shape [batch, num_queries] = '
        f'{tuple(queries.shape[:2])}, got '
        f'{tuple(query_mask.shape)}.'
      )
    if self.dtype is not None:
      queries, z = queries.astype(self.dtype), z.astype(self.dtype)
    num_queries = queries.shape[1]
    chunk = self.query_chunk_size
    if chunk is None or num_queries <= chunk:
      return self._decode(queries, z, query_mask, deterministic)
    if self.is_initializing():
      # Create the parameters on one chunk (they do not depend on the number
      # of queries), so that init, too, never holds all queries' activations.
      self._decode(
        queries[:, :chunk],
        z,
        None if query_mask is None else query_mask[:, :chunk],
        deterministic,
      )
    # Chunked decoding: scan over the full chunks with shared (broadcast)
    # params, slicing each chunk out of `queries` inside the loop (no padded
    # or transposed copy of the whole query array), so only one chunk's
    # activations are alive at a time; a shorter last chunk is decoded after.
    num_full = num_queries // chunk
    has_mask = query_mask is not None

    def take(array, i):
      return jax.lax.dynamic_slice_in_dim(array, i * chunk, chunk, axis=1)

    def body(module, carry, i):
      m_chunk = take(query_mask, i) if has_mask else None
      out = module._decode(take(queries, i), z, m_chunk, deterministic)
      return carry, out

    scan = nn.scan(
      body,
      variable_broadcast='params',
      split_rngs={'params': False, 'dropout': True},
      length=num_full,
    )
    _, out = scan(self, None, jnp.arange(num_full))
    out = out.swapaxes(0, 1).reshape(queries.shape[0], num_full * chunk, -1)
    tail = num_queries - num_full * chunk
    if tail:
      out_tail = self._decode(
        queries[:, num_full * chunk :],
        z,
        query_mask[:, num_full * chunk :] if has_mask else None,
        deterministic,
      )
      out = jnp.concatenate([out, out_tail], axis=1)
    return out


def _query_from_encoding(
  cfg, batch, output_index_dims, subsampled_points, dtype, name
):
  """Trainable or Fourier queries, optionally at subsampled points."""
  pos = None
  if subsampled_points is not None:
    if cfg['type'] != 'fourier':
      raise ValueError(
        'Only Fourier queries can be subsampled; trainable '
        'queries ignore positions (official behaviour).'
      )
    pos = subsampled_positions(subsampled_points, output_index_dims)
  return PositionEncoding(
    cfg, cfg.get('project_pos_dim', -1), dtype=dtype, name=name
  )(batch, output_index_dims, pos)


class _QueryDecoder(nn.Module):
  """Fields shared by the decoders whose queries cross-attend into the latents
  (the decoder's cross-attention; how it computes)."""

  num_heads: int = 1
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  use_query_residual: bool = False
  query_chunk_size: Optional[int] = None
  gelu_approximate: bool = True
  kernel_options: kernels.KernelOptions = kernels.KernelOptions()
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  def shared_fields(self) -> Dict[str, Any]:
    return {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(_QueryDecoder)
      if f.name not in ('parent', 'name')
    }

  def cross_attention(
    self, output_channels, output_zero_init=False
  ) -> DecoderCrossAttention:
    """The decoder's cross-attention (+ output Linear), named 'decoder'."""
    return DecoderCrossAttention(
      output_channels=output_channels,
      output_zero_init=output_zero_init,
      name='decoder',
      **self.shared_fields(),
    )


class BasicDecoder(_QueryDecoder, kw_only=True):
  """Queries from a position encoding over `output_index_dims`.

  Attributes:
    query: position-encoding config for the queries ({'type': 'trainable',
      'num_channels': C, 'index_dims': O} or {'type': 'fourier', ...}).
    output_index_dims: the (unsubsampled) output grid.
    concat_preprocessed_input: prepend the input features (without positions)
      to the queries; needs as many queries as inputs.
  """

  query: Dict[str, Any]
  output_index_dims: Sequence[int]
  output_channels: Optional[int] = None
  concat_preprocessed_input: bool = False

  def build_queries(
    self, batch, inputs_without_pos=None, subsampled_points=None
  ):
    q = _query_from_encoding(
      self.query,
      batch,
      tuple(self.output_index_dims),
      subsampled_points,
      self.dtype,
      'query',
    )
    if self.concat_preprocessed_input:
      if inputs_without_pos is None:
        raise ValueError(
          'concat_preprocessed_input needs the preprocessed inputs.'
        )
      q = jnp.concatenate([inputs_without_pos.astype(q.dtype), q], axis=-1)
    return q

  @nn.compact
  def __call__(
    self,
    z,
    *,
    inputs=None,
    inputs_without_pos=None,
    subsampled_points=None,
    query_mask=None,
    deterministic=True,
    **unused,
  ):
    queries = self.build_queries(
      z.shape[0], inputs_without_pos, subsampled_points
    )
    return self.cross_attention(self.output_channels)(
      queries, z, query_mask=query_mask, deterministic=deterministic
    )


class ClassificationDecoder(_QueryDecoder, kw_only=True):
  """One trainable query of `num_query_channels` -> logits [B, num_classes].

  Like the official decoder, it ignores `query_mask`.
  """

  num_classes: int
  num_query_channels: int = 1024
  use_query_residual: bool = True

  @nn.compact
  def __call__(self, z, *, deterministic=True, **unused):
    out = BasicDecoder(
      query={
        'type': 'trainable',
        'num_channels': self.num_query_channels,
        'index_dims': (1,),
      },
      output_index_dims=(1,),
      output_channels=self.num_classes,
      name='basic',
      **self.shared_fields(),
    )(z, deterministic=deterministic)
    return out[:, 0, :]


class FlowDecoder(_QueryDecoder, kw_only=True):
  """The preprocessed input (features + positions) is the query.

  Output: `[B, H, W, output_channels]` divided by `rescale_factor` (this is the
  quantity HuggingFace returns as `logits`; the official colab multiplies it by
  a further 20 to get pixels).
  """

  output_channels: int = 2
  rescale_factor: float = 100.0

  @nn.compact
  def __call__(
    self,
    z,
    *,
    inputs,
    index_dims,
    subsampled_points=None,
    deterministic=True,
    **unused,
  ):
    if subsampled_points is not None:
      raise ValueError(
        "FlowDecoder doesn't support subsampled output points "
        '(as in the official code).'
      )
    out = self.cross_attention(self.output_channels, output_zero_init=True)(
      inputs, z, deterministic=deterministic
    )
    out = out / self.rescale_factor
    return out.reshape((out.shape[0],) + tuple(index_dims) + (out.shape[-1],))


class MultimodalDecoder(_QueryDecoder, kw_only=True):
  """Per-modality queries, padded to a common width, one shared decoder.

  Attributes:
    modalities: name -> {'query': position-encoding config,
      'output_index_dims': grid}. Queries are concatenated in sorted name order
      and padded to `max(query widths) + min_padding_size` with a learned
      per-modality vector named `{name}_padding`.
    output_channels: width of the shared decoder output (postprocessors map it
      to each modality).
  """

  modalities: Dict[str, Dict[str, Any]]
  output_channels: int
  min_padding_size: int = 2

  def query_width(self) -> int:
    widths = [
      PositionEncoding(
        m['query'], m['query'].get('project_pos_dim', -1)
      ).output_size(len(m['output_index_dims']))
      for m in self.modalities.values()
    ]
    return max(widths) + self.min_padding_size

  @nn.compact
  def __call__(
    self, z, *, subsampled_points=None, deterministic=True, **unused
  ):
    batch = z.shape[0]
    width = self.query_width()
    subsampled_points = subsampled_points or {}
    queries = []
    for name in sorted(self.modalities):
      spec = self.modalities[name]
      q = _query_from_encoding(
        spec['query'],
        batch,
        tuple(spec['output_index_dims']),
        subsampled_points.get(name),
        self.dtype,
        f'{name}_query',
      )
      pad = self.param(
        f'{name}_padding',
        nn.initializers.truncated_normal(0.02),
        (1, width - q.shape[-1]),
        self.param_dtype,
      )
      pad = jnp.broadcast_to(
        pad.astype(q.dtype), (batch, q.shape[1], pad.shape[-1])
      )
      queries.append(jnp.concatenate([q, pad], axis=-1))
    queries = jnp.concatenate(queries, axis=1)
    return self.cross_attention(self.output_channels)(
      queries, z, deterministic=deterministic
    )

  def output_sizes(self, subsampled_points=None) -> Dict[str, int]:
    """Number of decoded positions per modality (sorted-name layout)."""
    subsampled_points = subsampled_points or {}
    sizes = {}
    for name, spec in self.modalities.items():
      pts = subsampled_points.get(name)
      sizes[name] = (
        int(np.shape(pts)[-1])  # [n] or per example [B, n].
        if pts is not None
        else int(np.prod(spec['output_index_dims']))
      )
    return sizes


class ProjectionDecoder(nn.Module):
  """Original Perceiver head: mean over latents, zero-initialised Linear."""

  num_classes: int
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, **unused):
    return nn.Dense(
      self.num_classes,
      kernel_init=nn.initializers.zeros,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name='logits',
    )(jnp.mean(z, axis=1))
