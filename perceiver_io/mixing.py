"""Batch mixing for image classification: MixUp, CutMix and label smoothing, in JAX.

Why a module outside `perceiver_io.data`: these run inside the jitted train step
on device (one random key per step), not in the tf.data pipeline, so they must
not depend on TensorFlow. The pairing and ratios follow the official Perceiver
code (`my_mixup_cutmix`, `cutmix_padding`).
"""

from typing import Optional

import jax
import jax.numpy as jnp


def smooth_labels(labels, smoothing: float):
  """Label smoothing as in the official code: (1 - s) * y + s / K.

  Args:
    labels: [..., K] one-hot or soft labels (each row sums to 1).
    smoothing: s in [0, 1) (official: 0.1).

  Returns:
    [..., K] labels; rows still sum to 1.
  """
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f'label smoothing must be in [0, 1), got {smoothing}.')
  if smoothing == 0.0:
    return labels
  return (1.0 - smoothing) * labels + smoothing / labels.shape[-1]


def cutmix_masks(rng, batch: int, height: int, width: int):
  """Random CutMix boxes, as in the official `cutmix_padding` (uniform area ratio).

  A centre is drawn uniformly over the pixels and a box of sides sqrt(1 - u) * (H, W), u ~ U(0, 1),
  is placed there and clipped to the image.

  Args:
    rng: JAX PRNG key.
    batch: number of masks.
    height: image height.
    width: image width.

  Returns:
    (mask float32 [batch, height, width, 1] with 1 inside the box, box_fraction float32 [batch]
    = mean of each mask).
  """
  key_y, key_x, key_area = jax.random.split(rng, 3)
  centre_y = jax.random.randint(key_y, (batch,), 0, height)
  centre_x = jax.random.randint(key_x, (batch,), 0, width)
  side = jnp.sqrt(1.0 - jax.random.uniform(key_area, (batch,)))
  half_h = (side * height).astype(jnp.int32) // 2
  half_w = (side * width).astype(jnp.int32) // 2
  top = jnp.clip(centre_y - half_h, 0, height)[:, None, None]
  bottom = jnp.clip(centre_y + half_h, 0, height)[:, None, None]
  left = jnp.clip(centre_x - half_w, 0, width)[:, None, None]
  right = jnp.clip(centre_x + half_w, 0, width)[:, None, None]
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  mask = (
    (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  ).astype(jnp.float32)
  return mask[..., None], mask.mean(axis=(1, 2))


def mixup_cutmix(
  rng,
  images,
  labels_onehot,
  mixup_alpha: Optional[float] = None,
  cutmix: bool = False,
):
  """MixUp and/or CutMix on a batch, paired as in the official Perceiver code.

  Each example i is mixed with partner B-1-i (the batch reversed). With only MixUp, every example
  gets MixUp with ratio ~ Beta(alpha, alpha); with only CutMix, every example gets a CutMix box;
  with both, the first half (B // 2) gets MixUp and the rest CutMix, like `my_mixup_cutmix`. The
  label is `ratio * y_i + (1 - ratio) * y_partner`, where for CutMix `ratio` is the exact fraction
  of pixels kept from example i. Differences from the official code: it draws the two sides of a
  pair from a doubled batch (2B inputs -> B outputs), we pair within the batch, so an epoch still
  sees every example once as the main image.

  Args:
    rng: JAX PRNG key.
    images: [B, H, W, C] float (normalised or not: mixing is linear).
    labels_onehot: [B, K] one-hot (or soft) labels.
    mixup_alpha: Beta parameter for MixUp (official: 0.2); None disables MixUp.
    cutmix: whether to use CutMix (official: True).

  Returns:
    (images [B, H, W, C], labels [B, K] float32 summing to 1 per row).
  """
  use_mixup = mixup_alpha is not None
  if use_mixup and mixup_alpha <= 0:
    raise ValueError(
      f'mixup_alpha must be > 0 (or None to disable), got {mixup_alpha}.'
    )
  labels = jnp.asarray(labels_onehot, jnp.float32)
  if not use_mixup and not cutmix:
    return images, labels
  batch, height, width = images.shape[:3]
  partner_images, partner_labels = images[::-1], labels[::-1]
  key_mixup, key_cutmix = jax.random.split(rng)

  mixup_ratio = jnp.ones((batch,), jnp.float32)
  if use_mixup:
    mixup_ratio = jax.random.beta(
      key_mixup, mixup_alpha, mixup_alpha, (batch,)
    ).astype(jnp.float32)
  cut_mask = jnp.ones((batch, height, width, 1), jnp.float32)
  cut_ratio = jnp.ones((batch,), jnp.float32)
  if cutmix:
    cut_mask, cut_ratio = cutmix_masks(key_cutmix, batch, height, width)

  if use_mixup and cutmix:
    is_mixup = jnp.arange(batch) < batch // 2
  else:
    is_mixup = jnp.full((batch,), use_mixup)
  # Per-pixel weight of example i: a constant for MixUp rows, the box mask for CutMix rows.
  pixel_weight = jnp.where(
    is_mixup[:, None, None, None], mixup_ratio[:, None, None, None], cut_mask
  )
  ratio = jnp.where(is_mixup, mixup_ratio, cut_ratio)
  mixed = pixel_weight * images + (1.0 - pixel_weight) * partner_images
  mixed_labels = (
    ratio[:, None] * labels + (1.0 - ratio[:, None]) * partner_labels
  )
  return mixed.astype(images.dtype), mixed_labels
