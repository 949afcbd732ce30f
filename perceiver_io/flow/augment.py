"""Photometric and spatial augmentation of optical-flow samples (NumPy).

Why: a flow network generalises only if training pairs vary in colour, scale
and orientation, and every geometric change must be applied to the ground
truth too: resizing multiplies the flow by the scale factors, a horizontal
flip negates u, a vertical flip negates v, and sparse ground truth (KITTI)
must be resampled without mixing valid and invalid pixels. This module keeps
frames, flow and valid mask consistent (frame2(x + flow(x)) == frame1(x) still
holds after augmentation) and is deterministic given a numpy Generator.

Samples are dicts with 'frame1', 'frame2' (uint8 [H, W, 3]), 'flow' (float32
[H, W, 2], u = x displacement, v = y displacement) and 'valid' (float32
[H, W]); other keys are passed through unchanged.

Photometric jitter: with probability `1 - asymmetric_prob` one set of
parameters is drawn and applied to both frames (contrast pivots on the mean
luma of both frames together, as when the frames are stacked); otherwise each
frame gets its own parameters. Noise is always drawn independently per pixel
and frame, with a shared standard deviation. The order is fixed: brightness,
contrast, saturation, hue, gamma, noise.

Spatial: random scale (optionally stretched per axis) -> flips -> random crop.
Resizing uses Pillow with the pixel-centre convention
x_new = (x_old + 0.5) * s - 0.5, under which flow scales by exactly s.
"""

import dataclasses
import math
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

Sample = Dict[str, object]

# ITU-R BT.601 luma and the YIQ colour space used for the hue rotation.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array(
  [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
  np.float32,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PhotometricConfig:
  """Photometric jitter ranges (all off at 0).

  Attributes:
    brightness: multiply by a factor in [1 - b, 1 + b].
    contrast: scale deviations from the mean luma by [1 - c, 1 + c].
    saturation: scale deviations from each pixel's luma by [1 - s, 1 + s].
    hue: rotate chroma (YIQ I/Q plane) by up to +-hue turns (0.5 = 180 deg).
    gamma: (low, high) range of the exponent applied to values in [0, 1].
    noise_std: largest std of additive Gaussian noise, in [0, 1] units.
    asymmetric_prob: probability of drawing separate parameters per frame.
  """

  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.5 / math.pi
  gamma: Tuple[float, float] = (1.0, 1.0)
  noise_std: float = 0.0
  asymmetric_prob: float = 0.2


@dataclasses.dataclass(frozen=True)
class SpatialConfig:
  """Spatial augmentation.

  Attributes:
    crop_size: (height, width) of the output; None keeps the scaled size.
    scale_prob: probability of rescaling.
    min_log2_scale: lower end of log2 of the scale factor.
    max_log2_scale: upper end of log2 of the scale factor.
    stretch_prob: probability of a different scale per axis.
    max_log2_stretch: largest log2 ratio between the axis scales.
    hflip_prob: probability of a horizontal (left-right) flip.
    vflip_prob: probability of a vertical (up-down) flip.
    sparse: ground truth is sparse (KITTI): resample valid points only
      (each moves to its nearest pixel in the resized grid) instead of
      interpolating the flow field.
  """

  crop_size: Optional[Tuple[int, int]] = (368, 496)
  scale_prob: float = 0.8
  min_log2_scale: float = -0.2
  max_log2_scale: float = 0.6
  stretch_prob: float = 0.8
  max_log2_stretch: float = 0.2
  hflip_prob: float = 0.5
  vflip_prob: float = 0.1
  sparse: bool = False


# --------------------------------------------------------------------------
# Photometric.
# --------------------------------------------------------------------------


def _draw_photometric(
  rng: np.random.Generator, config: PhotometricConfig
) -> Dict[str, float]:
  uniform = lambda r: float(rng.uniform(1 - r, 1 + r)) if r > 0 else 1.0
  return {
    'brightness': uniform(config.brightness),
    'contrast': uniform(config.contrast),
    'saturation': uniform(config.saturation),
    'hue': float(rng.uniform(-config.hue, config.hue))
    if config.hue > 0
    else 0.0,
    'gamma': float(rng.uniform(*config.gamma)),
  }


def adjust_colours(
  image: np.ndarray,
  brightness: float = 1.0,
  contrast: float = 1.0,
  saturation: float = 1.0,
  hue: float = 0.0,
  gamma: float = 1.0,
  contrast_mean: Optional[float] = None,
) -> np.ndarray:
  """Applies the colour adjustments to a float [..., 3] image in [0, 1].

  Args:
    image: float32 [..., 3] RGB in [0, 1].
    brightness: multiplicative factor.
    contrast: factor on deviations from `contrast_mean`.
    saturation: factor on deviations from each pixel's luma.
    hue: chroma rotation in turns.
    gamma: exponent (after clipping to [0, 1]).
    contrast_mean: pivot luma for contrast (after brightness); default this
      image's mean luma.

  Returns:
    float32 [..., 3] clipped to [0, 1].
  """
  x = np.clip(image * brightness, 0, 1)
  if contrast != 1.0:
    mean = (
      float((x @ _LUMA).mean())
      if contrast_mean is None
      else contrast_mean * brightness
    )
    x = np.clip((x - mean) * contrast + mean, 0, 1)
  if saturation != 1.0:
    gray = (x @ _LUMA)[..., None]
    x = np.clip(gray + (x - gray) * saturation, 0, 1)
  if hue != 0.0:
    angle = 2 * math.pi * hue
    c, s = math.cos(angle), math.sin(angle)
    rotate = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    x = np.clip(x @ (_YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ).T, 0, 1)
  if gamma != 1.0:
    x = x**gamma
  return x.astype(np.float32)


def photometric_augment(
  rng: np.random.Generator,
  frame1: np.ndarray,
  frame2: np.ndarray,
  config: PhotometricConfig = PhotometricConfig(),
) -> Tuple[np.ndarray, np.ndarray]:
  """Colour-jitters a frame pair (see the module docstring for the policy).

  Args:
    rng: numpy Generator.
    frame1: uint8 [H, W, 3].
    frame2: uint8 [H, W, 3].
    config: jitter ranges.

  Returns:
    the two augmented uint8 frames.
  """
  f1 = np.asarray(frame1, np.float32) / 255.0
  f2 = np.asarray(frame2, np.float32) / 255.0
  if rng.uniform() < config.asymmetric_prob:
    out1 = adjust_colours(f1, **_draw_photometric(rng, config))
    out2 = adjust_colours(f2, **_draw_photometric(rng, config))
  else:
    params = _draw_photometric(rng, config)
    joint_mean = float(
      (np.concatenate([f1.reshape(-1, 3), f2.reshape(-1, 3)]) @ _LUMA).mean()
    )
    out1 = adjust_colours(f1, contrast_mean=joint_mean, **params)
    out2 = adjust_colours(f2, contrast_mean=joint_mean, **params)
  if config.noise_std > 0:
    std = float(rng.uniform(0, config.noise_std))
    out1 = out1 + rng.normal(0, std, out1.shape).astype(np.float32)
    out2 = out2 + rng.normal(0, std, out2.shape).astype(np.float32)
  to_uint8 = lambda x: np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
  return to_uint8(out1), to_uint8(out2)


# --------------------------------------------------------------------------
# Spatial.
# --------------------------------------------------------------------------


def _resize_channel(
  channel: np.ndarray, size: Tuple[int, int], resample
) -> np.ndarray:
  """Resizes a float32 [H, W] array to (height, width) with Pillow."""
  image = Image.fromarray(np.ascontiguousarray(channel, np.float32), 'F')
  return np.asarray(image.resize((size[1], size[0]), resample), np.float32)


def resize_sample(
  sample: Sample, size: Tuple[int, int], sparse: bool = False
) -> Sample:
  """Resizes frames, flow and valid mask to size = (height, width).

  Dense flow is resized bilinearly and multiplied by the per-axis scale; the
  valid mask is resized with nearest neighbour. Sparse flow moves every valid
  pixel to its nearest pixel in the new grid (later points win collisions).
  """
  height, width = np.asarray(sample['frame1']).shape[:2]
  new_h, new_w = int(size[0]), int(size[1])
  if new_h < 1 or new_w < 1:
    raise ValueError(f'resize target must be positive; got {size}.')
  sx, sy = new_w / width, new_h / height
  out = dict(sample)
  for key in ('frame1', 'frame2'):
    image = Image.fromarray(np.asarray(sample[key], np.uint8))
    out[key] = np.asarray(
      image.resize((new_w, new_h), Image.BILINEAR), np.uint8
    )
  flow = np.asarray(sample['flow'], np.float32)
  valid = np.asarray(sample['valid'], np.float32)
  if not sparse:
    u = _resize_channel(flow[..., 0], (new_h, new_w), Image.BILINEAR) * sx
    v = _resize_channel(flow[..., 1], (new_h, new_w), Image.BILINEAR) * sy
    out['flow'] = np.stack([u, v], axis=-1)
    out['valid'] = (
      _resize_channel(valid, (new_h, new_w), Image.NEAREST) > 0.5
    ).astype(np.float32)
    return out
  ys, xs = np.nonzero(valid > 0.5)
  new_x = np.round((xs + 0.5) * sx - 0.5).astype(np.int64)
  new_y = np.round((ys + 0.5) * sy - 0.5).astype(np.int64)
  keep = (new_x >= 0) & (new_x < new_w) & (new_y >= 0) & (new_y < new_h)
  new_flow = np.zeros((new_h, new_w, 2), np.float32)
  new_valid = np.zeros((new_h, new_w), np.float32)
  new_flow[new_y[keep], new_x[keep]] = flow[ys[keep], xs[keep]] * np.array(
    [sx, sy], np.float32
  )
  new_valid[new_y[keep], new_x[keep]] = 1.0
  out['flow'], out['valid'] = new_flow, new_valid
  return out


def flip_sample(
  sample: Sample, horizontal: bool = False, vertical: bool = False
) -> Sample:
  """Flips frames, flow and valid; a horizontal flip negates u, a vertical one v."""
  out = dict(sample)
  keys = ('frame1', 'frame2', 'flow', 'valid')
  arrays = {k: np.asarray(sample[k]) for k in keys}
  flow = arrays['flow'].astype(np.float32, copy=True)
  if horizontal:
    arrays = {k: a[:, ::-1] for k, a in arrays.items()}
    flow = flow[:, ::-1] * np.array([-1, 1], np.float32)
  if vertical:
    arrays = {k: a[::-1] for k, a in arrays.items()}
    flow = flow[::-1] * np.array([1, -1], np.float32)
  for k in ('frame1', 'frame2', 'valid'):
    out[k] = np.ascontiguousarray(arrays[k])
  out['flow'] = np.ascontiguousarray(flow)
  return out


def crop_sample(
  sample: Sample, top: int, left: int, size: Tuple[int, int]
) -> Sample:
  """Crops frames, flow and valid to [top:top+h, left:left+w] (flow values unchanged)."""
  height, width = np.asarray(sample['frame1']).shape[:2]
  crop_h, crop_w = size
  if not (
    0 <= top and top + crop_h <= height and 0 <= left and left + crop_w <= width
  ):
    raise ValueError(
      f'crop {crop_h}x{crop_w} at (top={top}, left={left}) does not fit in a '
      f'{height}x{width} sample.'
    )
  out = dict(sample)
  for key in ('frame1', 'frame2', 'flow', 'valid'):
    out[key] = np.ascontiguousarray(
      np.asarray(sample[key])[top : top + crop_h, left : left + crop_w]
    )
  return out


def spatial_augment(
  rng: np.random.Generator,
  sample: Sample,
  config: SpatialConfig = SpatialConfig(),
) -> Sample:
  """Random scale -> flips -> random crop, keeping flow consistent.

  The scale is raised where needed so that the scaled sample still covers
  `crop_size`. A sample smaller than `crop_size` with scaling disabled
  (scale_prob = 0) is rejected.

  Args:
    rng: numpy Generator.
    sample: sample dict (see module docstring).
    config: augmentation ranges.

  Returns:
    the augmented sample dict.
  """
  height, width = np.asarray(sample['frame1']).shape[:2]
  crop = config.crop_size
  out = sample
  if rng.uniform() < config.scale_prob:
    log_scale = rng.uniform(config.min_log2_scale, config.max_log2_scale)
    log_sx = log_sy = log_scale
    if rng.uniform() < config.stretch_prob:
      stretch = rng.uniform(-config.max_log2_stretch, config.max_log2_stretch)
      log_sx, log_sy = log_scale + stretch / 2, log_scale - stretch / 2
    new_h = int(round(height * 2.0**log_sy))
    new_w = int(round(width * 2.0**log_sx))
    if crop is not None:
      new_h, new_w = max(new_h, crop[0]), max(new_w, crop[1])
    if (new_h, new_w) != (height, width):
      out = resize_sample(out, (new_h, new_w), sparse=config.sparse)
  hflip = rng.uniform() < config.hflip_prob
  vflip = rng.uniform() < config.vflip_prob
  if hflip or vflip:
    out = flip_sample(out, horizontal=hflip, vertical=vflip)
  if crop is not None:
    cur_h, cur_w = np.asarray(out['frame1']).shape[:2]
    if cur_h < crop[0] or cur_w < crop[1]:
      raise ValueError(
        f'sample is {cur_h}x{cur_w}, smaller than crop_size {crop[0]}x{crop[1]}; '
        'enable scaling (scale_prob > 0) or use a smaller crop.'
      )
    top = int(rng.integers(0, cur_h - crop[0] + 1))
    left = int(rng.integers(0, cur_w - crop[1] + 1))
    out = crop_sample(out, top, left, crop)
  return out


def augment_sample(
  rng: np.random.Generator,
  sample: Sample,
  photometric: Optional[PhotometricConfig] = PhotometricConfig(),
  spatial: Optional[SpatialConfig] = SpatialConfig(),
) -> Sample:
  """Photometric then spatial augmentation (either may be None to skip it)."""
  out = dict(sample)
  if photometric is not None:
    out['frame1'], out['frame2'] = photometric_augment(
      rng, out['frame1'], out['frame2'], photometric
    )
  if spatial is not None:
    out = spatial_augment(rng, out, spatial)
  return out
