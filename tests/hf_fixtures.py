"""Small, non-default HuggingFace Perceiver models and matching inputs.

Shared by the parity tests: each builder returns an HF model with every
parameter and buffer randomised (so zero-initialised biases, BatchNorm
statistics and paddings are all exercised), plus inputs in HF layout and in
our channels-last layout.
"""

import numpy as np
import torch
import transformers as T

ENC = dict(
  num_latents=8,
  d_latents=48,
  num_blocks=2,
  num_self_attends_per_block=2,
  num_self_attention_heads=4,
  num_cross_attention_heads=2,
  qk_channels=16,
  v_channels=48,
  attention_probs_dropout_prob=0.0,
)


def randomise(model, seed=0):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
      if not p.is_floating_point():
        continue
      noise = torch.randn(p.shape, generator=g)
      if name.endswith('running_var'):
        p.copy_(0.5 + noise.abs())
      elif ('layernorm' in name or 'batchnorm' in name) and name.endswith(
        'weight'
      ):
        p.copy_(1.0 + 0.1 * noise)
      elif p.ndim >= 2 and not any(
        k in name
        for k in ('latents', 'position', 'embeddings', 'padding', 'mask')
      ):
        # Linear/conv weights: keep activations O(1) so that 1e-4 is tight.
        p.copy_(noise / np.sqrt(np.prod(p.shape[1:])))
      else:
        p.copy_(0.2 * noise)
  return model.eval()


def flow_patches_numpy(frames):
  """[B, 2, H, W, C] -> [B, 2, H, W, 9C], zero padded, order (ph, pw, c)."""
  b, t, h, w, c = frames.shape
  padded = np.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.empty((b, t, h, w, 9 * c), frames.dtype)
  for y in range(h):
    for x in range(w):
      out[:, :, y, x] = padded[:, :, y : y + 3, x : x + 3, :].reshape(b, t, -1)
  return out


def text_inputs(rng, batch=2, seq=24, vocab=262):
  ids = rng.integers(0, vocab, size=(batch, seq)).astype(np.int64)
  mask = np.ones((batch, seq), np.int64)
  mask[1, seq // 2 :] = 0  # Padding in the second example.
  return ids, mask


def build(family, seed=0):
  """(hf_model, hf_kwargs, our_inputs, our_kwargs) for a family."""
  rng = np.random.default_rng(seed)
  torch.manual_seed(seed)
  if family in ('mlm', 'sequence_classification'):
    cfg = T.PerceiverConfig(
      d_model=32, max_position_embeddings=24, num_labels=3, **ENC
    )
    cls = (
      T.PerceiverForMaskedLM
      if family == 'mlm'
      else T.PerceiverForSequenceClassification
    )
    model = randomise(cls(cfg), seed)
    ids, mask = text_inputs(rng)
    return (
      model,
      dict(inputs=torch.tensor(ids), attention_mask=torch.tensor(mask)),
      ids.astype(np.int32),
      dict(attention_mask=mask.astype(np.int32)),
    )
  if family.startswith('image_'):
    kind = family[len('image_') :]
    enc = dict(ENC, qk_channels=16, v_channels=48)
    if kind == 'learned':
      cfg = T.PerceiverConfig(image_size=8, num_labels=5, d_model=512, **enc)
      model = randomise(T.PerceiverForImageClassificationLearned(cfg), seed)
      size = 8
    elif kind == 'fourier':
      cfg = T.PerceiverConfig(num_labels=5, d_model=261, **enc)
      model = randomise(T.PerceiverForImageClassificationFourier(cfg), seed)
      size = 12
    else:
      cfg = T.PerceiverConfig(num_labels=5, d_model=322, **enc)
      model = randomise(
        T.PerceiverForImageClassificationConvProcessing(cfg), seed
      )
      size = 32
    images = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    return (
      model,
      dict(inputs=torch.tensor(images.transpose(0, 3, 1, 2))),
      images,
      {},
    )
  if family == 'optical_flow':
    cfg = T.PerceiverConfig(
      train_size=[8, 12],
      num_latents=8,
      d_latents=48,
      num_blocks=2,
      num_self_attends_per_block=2,
      num_self_attention_heads=4,
      num_cross_attention_heads=2,
      qk_channels=16,
      v_channels=48,
      attention_probs_dropout_prob=0.0,
    )
    model = randomise(T.PerceiverForOpticalFlow(cfg), seed)
    frames = rng.uniform(-1, 1, size=(2, 2, 8, 12, 3)).astype(np.float32)
    patches = flow_patches_numpy(frames).transpose(0, 1, 4, 2, 3)
    return model, dict(inputs=torch.tensor(patches)), frames, {}
  if family == 'multimodal':
    cfg = T.PerceiverConfig(
      num_frames=2,
      image_size=4,
      audio_samples_per_frame=32,
      samples_per_patch=16,
      output_shape=[1, 2, 16, 16],
      output_num_channels=24,
      num_labels=5,
      _label_trainable_num_channels=20,
      num_latents=8,
      d_latents=32,
      num_blocks=2,
      num_self_attends_per_block=2,
      num_self_attention_heads=4,
      num_cross_attention_heads=1,
      attention_probs_dropout_prob=0.0,
    )
    model = randomise(T.PerceiverForMultimodalAutoencoding(cfg), seed)
    video = rng.normal(size=(2, 2, 16, 16, 3)).astype(np.float32)
    audio = rng.normal(size=(2, 64, 1)).astype(np.float32)
    label = np.eye(5, dtype=np.float32)[[1, 3]]
    img_pts = np.sort(rng.choice(2 * 16 * 16, size=40, replace=False))
    aud_pts = np.arange(1, 4)
    hf_inputs = {
      'image': torch.tensor(video.transpose(0, 1, 4, 2, 3)),
      'audio': torch.tensor(audio),
      'label': torch.tensor(label),
    }
    hf_points = {
      'image': torch.tensor(img_pts),
      'audio': torch.tensor(aud_pts),
      'label': None,
    }
    ours = {'image': video, 'audio': audio, 'label': label}
    our_points = {'image': img_pts, 'audio': aud_pts, 'label': None}
    return (
      model,
      dict(inputs=hf_inputs, subsampled_output_points=hf_points),
      ours,
      dict(subsampled_output_points=our_points),
    )
  raise ValueError(family)


FAMILIES = (
  'mlm',
  'sequence_classification',
  'image_learned',
  'image_fourier',
  'image_conv',
  'optical_flow',
  'multimodal',
)


def hf_logits(model, kwargs):
  with torch.no_grad():
    out = model(**kwargs).logits
  if isinstance(out, dict):
    return {k: v.numpy() for k, v in out.items()}
  return out.numpy()
