"""The reference side of the benchmark workloads: HF's PyTorch Perceiver.

Why: a comparison with `transformers`' Perceiver holds only if its model has
our parameters and does our arithmetic. `hf_config_kwargs` gives
`transformers.PerceiverConfig` a workload's sizes with the like-for-like
choices (`workloads` lists them), `hf_build` picks HF's class for it, and
the inputs are the same NumPy arrays in HF's layout (channels-first; flow
patches extracted inside the timed call, as our model extracts them inside
its forward). torch and transformers are imported inside the functions, so
a process that measures ours never loads them.
"""

from typing import Any, Dict

import numpy as np

from benchmarks.workloads import LEARNING_RATE
from benchmarks.workloads import NUM_BANDS
from benchmarks.workloads import WEIGHT_DECAY
from benchmarks.workloads import Workload


def hf_config_kwargs(w: Workload) -> Dict[str, Any]:
  """`transformers.PerceiverConfig` kwargs with our sizes (see /tmp/counts)."""
  s = w.sizes
  common = dict(attention_probs_dropout_prob=0.0, hidden_act='gelu')
  if w.kind == 'text':
    return dict(
      common,
      qk_channels=s['qk'],
      v_channels=s['latent_channels'],
      d_latents=s['latent_channels'],
      num_latents=s['num_latents'],
      d_model=s['d_model'],
      num_self_attends_per_block=s['depth'],
      num_blocks=1,
      num_self_attention_heads=s['heads'],
      num_cross_attention_heads=s['heads'],
      max_position_embeddings=s['max_seq_len'],
      num_labels=s['num_classes'],
    )
  fourier_width = 2 * (2 * NUM_BANDS + 1)
  if w.kind in ('image_fourier', 'image_conv', 'queries'):
    in_width = {'image_fourier': 3, 'image_conv': 64, 'queries': 3}[w.kind]
    return dict(
      common,
      num_latents=s['num_latents'],
      d_latents=s['latent_channels'],
      num_blocks=s['blocks'],
      num_self_attends_per_block=s['per_block'],
      num_self_attention_heads=s['self_heads'],
      num_cross_attention_heads=1,
      num_labels=s.get('num_classes', 1),
      image_size=s['image_size'],
      d_model=in_width + fourier_width,
    )
  if w.kind == 'flow':
    return dict(
      common,
      num_latents=s['num_latents'],
      d_latents=s['latent_channels'],
      num_blocks=1,
      num_self_attends_per_block=s['depth'],
      num_self_attention_heads=s['self_heads'],
      num_cross_attention_heads=1,
      d_model=s['channels'] + fourier_width,
      train_size=list(s['train_size']),
    )
  raise ValueError(f'unknown workload kind {w.kind!r}.')


def hf_build(w: Workload, seed=0):
  """The HF model for a workload (float32, train mode)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers as tr  # pylint: disable=g-import-not-at-top
  from transformers.models.perceiver import modeling_perceiver as mp  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  cfg = tr.PerceiverConfig(**hf_config_kwargs(w))
  if w.kind == 'text':
    return tr.PerceiverForSequenceClassification(cfg)
  if w.kind == 'image_fourier':
    return tr.PerceiverForImageClassificationFourier(cfg)
  if w.kind == 'image_conv':
    return tr.PerceiverForImageClassificationConvProcessing(cfg)
  if w.kind == 'flow':
    return tr.PerceiverForOpticalFlow(cfg)
  if w.kind == 'queries':
    s = w.sizes
    fourier = lambda res: dict(
      num_bands=NUM_BANDS,
      max_resolution=tuple(res),
      concat_pos=True,
      sine_only=False,
    )
    pre = mp.PerceiverImagePreprocessor(
      cfg,
      prep_type='pixels',
      spatial_downsample=1,
      fourier_position_encoding_kwargs=fourier(
        (s['image_size'], s['image_size'])
      ),
    )
    dec = mp.PerceiverBasicDecoder(
      cfg,
      output_num_channels=s['output_channels'],
      position_encoding_type='fourier',
      output_index_dims=tuple(s['grid']),
      num_channels=2 * (2 * NUM_BANDS + 1),
      num_heads=1,
      use_query_residual=False,
      final_project=True,
      fourier_position_encoding_kwargs=fourier(s['grid']),
    )
    return _hf_query_decoding(
      mp.PerceiverModel(cfg, input_preprocessor=pre, decoder=dec)
    )
  raise ValueError(f'unknown workload kind {w.kind!r}.')


def _hf_query_decoding(perceiver):
  """Wraps an HF `PerceiverModel` to decode a 1-D set of subsampled points.

  `PerceiverModel.forward` only accepts subsampled points as the multimodal
  dict (it indexes ['audio'] and ['image']), so this runs the same four steps
  it runs (preprocessor, latents, encoder, decoder_query + decoder) with the
  points passed straight to the basic decoder's `decoder_query`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers as tr  # pylint: disable=g-import-not-at-top

  class QueryDecoding(torch.nn.Module):
    """forward(inputs, subsampled_output_points) -> object with .logits."""

    def __init__(self, model):
      super().__init__()
      self.perceiver = model

    def forward(self, inputs, subsampled_output_points):
      m = self.perceiver
      x, sizes, without_pos = m.input_preprocessor(inputs)
      latents = m.embeddings(batch_size=x.shape[0])
      z = m.encoder(latents, attention_mask=None, inputs=x, inputs_mask=None)[0]
      query = m.decoder.decoder_query(
        x, sizes, without_pos, subsampled_points=subsampled_output_points
      )
      logits = m.decoder(query, z=z).logits
      return tr.modeling_outputs.ModelOutput(logits=logits)

  return QueryDecoding(perceiver)


def torch_flow_patches(frames):
  """[B, 2, H, W, 3] frames -> HF's [B, 2, 27, H, W] 3x3 patches (torch ops).

  Same work as our in-model `extract_flow_patches` (zero pad, 9 shifts);
  channel order (ph, pw, c), the order HF's `PerceiverForOpticalFlow` (and
  the official model) expects (checked in tests/test_benchmarks_workloads.py
  against tests/hf_fixtures.flow_patches_numpy).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  b, t, h, w, c = frames.shape
  x = frames.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
  x = F.pad(x, (1, 1, 1, 1))
  shifts = [x[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)]
  patches = torch.stack(shifts, dim=1)  # [BT, 9, C, H, W]: (ph, pw), c.
  return patches.reshape(b, t, 9 * c, h, w)


def hf_model_inputs(w: Workload, data: Dict[str, np.ndarray], device='cpu'):
  """(forward kwargs builder, labels) for HF. The builder runs per call so
  that input-layout work (flow patches) is timed like ours."""
  import torch  # pylint: disable=g-import-not-at-top

  x = torch.from_numpy(np.ascontiguousarray(data['inputs'])).to(device)
  labels = (
    torch.from_numpy(data['labels']).long().to(device)
    if 'labels' in data
    else None
  )
  if w.kind == 'text':
    mask = torch.from_numpy(data['mask']).to(device)
    return (lambda: dict(inputs=x.long(), attention_mask=mask)), labels
  if w.kind in ('image_fourier', 'image_conv'):
    return (lambda: dict(inputs=x.permute(0, 3, 1, 2))), labels
  if w.kind == 'flow':
    return (lambda: dict(inputs=torch_flow_patches(x))), labels
  if w.kind == 'queries':
    pts = torch.from_numpy(data['points']).long().to(device)
    return (
      lambda: dict(inputs=x.permute(0, 3, 1, 2), subsampled_output_points=pts)
    ), labels
  raise ValueError(f'unknown workload kind {w.kind!r}.')


def hf_optimizer(model, fused: bool = False):
  import torch  # pylint: disable=g-import-not-at-top

  return torch.optim.AdamW(
    model.parameters(),
    lr=LEARNING_RATE,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=WEIGHT_DECAY,
    **({'fused': True} if fused else {}),
  )
