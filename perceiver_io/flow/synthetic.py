"""Procedural optical-flow training pairs with exact ground truth (AutoFlow-style).

Why: Perceiver IO's flow model is trained on AutoFlow (Sun et al. 2021), a
large set of rendered layered scenes. That data is not available offline, so
this module renders pairs of the same kind on the fly: a textured background
plus K textured foreground layers (ellipses and star-shaped polygons), each
moving with its own affine motion (translation, rotation, scale, small
shear), composited back to front so that layers occlude each other.

Both frames are rendered by inverse mapping: every layer owns a texture image
in its own coordinates; frame t at pixel x shows the top-most layer whose
shape contains T_t^-1(x), sampled bilinearly from its texture. The flow at x is
the motion of frame 1's top-most layer, M(x) - x, computed analytically, so it
is exact: frame2(x + flow(x)) == frame1(x) at every valid pixel up to the
bilinear interpolation of frame 2 between its pixel centres. `valid` is 0
where x + flow(x) leaves the image or is covered in frame 2 by a layer above
the one seen at x (occlusion, tested analytically against the shapes).

Conventions: pixel (row i, column j) has coordinates x = j, y = i; flow[..., 0]
is the x (column) displacement, flow[..., 1] the y (row) displacement.

Sample i of `synthetic_flow_batches(seed, ...)` depends only on (seed, i), via
`numpy.random.SeedSequence([seed, i])`, so a data stream can be resumed or
sharded by index.
"""

import dataclasses
import math
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
from PIL import Image

Sample = Dict[str, np.ndarray]
RngOrSeed = Union[np.random.Generator, int]


@dataclasses.dataclass(frozen=True)
class SyntheticFlowConfig:
  """Scene and motion distribution of the generator.

  Attributes:
    min_foreground_layers: fewest foreground layers per scene.
    max_foreground_layers: most foreground layers per scene.
    min_object_radius: smallest foreground radius, as a fraction of min(H, W).
    max_object_radius: largest foreground radius, as a fraction of min(H, W).
    polygon_prob: probability that a foreground shape is a star polygon (else
      an ellipse).
    max_translation: largest foreground translation in pixels (the magnitude is
      max_translation * u**2, u ~ U[0, 1], so small motions dominate).
    max_rotation_deg: largest foreground rotation between frames.
    max_log_scale: foreground scale change is exp(U[-m, m]).
    max_shear: largest foreground shear between frames.
    background_max_translation: as above for the background.
    background_max_rotation_deg: as above for the background.
    background_max_log_scale: as above for the background.
    texture_detail: amplitude (0..1) of the fine noise added to every texture
      so that every region has trackable detail.
  """

  min_foreground_layers: int = 2
  max_foreground_layers: int = 6
  min_object_radius: float = 0.06
  max_object_radius: float = 0.3
  polygon_prob: float = 0.5
  max_translation: float = 40.0
  max_rotation_deg: float = 10.0
  max_log_scale: float = 0.1
  max_shear: float = 0.05
  background_max_translation: float = 16.0
  background_max_rotation_deg: float = 3.0
  background_max_log_scale: float = 0.04
  texture_detail: float = 0.15

  def __post_init__(self):
    if not 0 <= self.min_foreground_layers <= self.max_foreground_layers:
      raise ValueError(
        'need 0 <= min_foreground_layers <= max_foreground_layers; got '
        f'{self.min_foreground_layers}, {self.max_foreground_layers}.'
      )
    if not 0 < self.min_object_radius <= self.max_object_radius:
      raise ValueError(
        'need 0 < min_object_radius <= max_object_radius; got '
        f'{self.min_object_radius}, {self.max_object_radius}.'
      )


# --------------------------------------------------------------------------
# Geometry helpers.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Layer:
  """One layer: texture in local coordinates, shape, and two placements.

  `frame_to_local[t] = (A, b)` maps image coordinates of frame t to texture
  coordinates, p = A @ x + b. `motion = (M, t)` maps frame-1 image coordinates
  to frame-2 image coordinates, x2 = M @ x1 + t.
  """

  texture: np.ndarray  # float32 [S, S, 3]
  frame_to_local: Tuple[
    Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]
  ]
  motion: Tuple[np.ndarray, np.ndarray]
  image_centres: Tuple[np.ndarray, np.ndarray]  # layer centre in each frame
  image_radii: Tuple[float, float]  # bounding radius in each frame
  shape: Optional[dict]  # None: covers everything


def _rotation(angle: float) -> np.ndarray:
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, -s], [s, c]])


def _random_motion(
  rng: np.random.Generator,
  max_translation: float,
  max_rotation_deg: float,
  max_log_scale: float,
  max_shear: float,
) -> Tuple[np.ndarray, np.ndarray]:
  """A random affine motion about the origin: (linear part M, translation t)."""
  angle = math.radians(rng.uniform(-max_rotation_deg, max_rotation_deg))
  scale = math.exp(rng.uniform(-max_log_scale, max_log_scale))
  shear = rng.uniform(-max_shear, max_shear)
  linear = scale * _rotation(angle) @ np.array([[1.0, shear], [0.0, 1.0]])
  direction = rng.uniform(0, 2 * math.pi)
  magnitude = max_translation * rng.uniform() ** 2
  translation = magnitude * np.array([math.cos(direction), math.sin(direction)])
  return linear, translation


def _inside_shape(
  shape: Optional[dict], px: np.ndarray, py: np.ndarray
) -> np.ndarray:
  """Whether texture coordinates (px, py) lie inside a layer's shape."""
  if shape is None:
    return np.ones(px.shape, bool)
  dx = px - shape['centre'][0]
  dy = py - shape['centre'][1]
  if shape['kind'] == 'ellipse':
    c, s = math.cos(shape['angle']), math.sin(shape['angle'])
    u = (c * dx + s * dy) / shape['radii'][0]
    v = (-s * dx + c * dy) / shape['radii'][1]
    return u * u + v * v <= 1.0
  # Star-shaped polygon around the centre: find the angular sector of each
  # point, then test which side of that sector's edge it lies on.
  angles, vx, vy = shape['angles'], shape['vx'], shape['vy']
  theta = np.mod(np.arctan2(dy, dx), 2 * math.pi)
  sector = (
    np.searchsorted(angles, theta, side='right') - 1
  )  # -1 => last sector (wraps)
  start = np.mod(sector, len(angles))
  end = np.mod(sector + 1, len(angles))
  ex, ey = vx[end] - vx[start], vy[end] - vy[start]
  # Vertices are counter-clockwise in (x right, y down) angle order, so the
  # centre lies on the side where the cross product has the centre's sign.
  cross_point = ex * (dy - vy[start]) - ey * (dx - vx[start])
  cross_centre = ex * (-vy[start]) - ey * (-vx[start])
  return cross_point * cross_centre >= 0


def _random_shape(
  rng: np.random.Generator,
  centre: np.ndarray,
  radius: float,
  polygon_prob: float,
) -> dict:
  if rng.uniform() < polygon_prob:
    num_vertices = int(rng.integers(3, 10))
    # Sorted angles in [0, 2 pi), no gap above 180 degrees (the inside test
    # below needs convex sectors), and radii in [0.45, 1] * r.
    gaps = rng.uniform(0.6, 1.0, num_vertices)  # every sector < 180 degrees
    angles = np.cumsum(gaps) / gaps.sum() * 2 * math.pi
    angles = np.sort(np.mod(angles + rng.uniform(0, 2 * math.pi), 2 * math.pi))
    radii = radius * rng.uniform(0.45, 1.0, num_vertices)
    return {
      'kind': 'polygon',
      'centre': centre,
      'angles': angles,
      'vx': radii * np.cos(angles),
      'vy': radii * np.sin(angles),
    }
  aspect = rng.uniform(0.4, 1.0)
  return {
    'kind': 'ellipse',
    'centre': centre,
    'angle': rng.uniform(0, math.pi),
    'radii': (radius, radius * aspect),
  }


# --------------------------------------------------------------------------
# Textures.
# --------------------------------------------------------------------------


def _upsampled_noise(
  rng: np.random.Generator, size: int, cells: int, channels: int = 3
) -> np.ndarray:
  """Smooth noise in [0, 1]: a random cells x cells grid resized bicubically."""
  cells = max(2, int(cells))
  grid = rng.integers(0, 256, (cells, cells, channels), dtype=np.uint8)
  mode = 'RGB' if channels == 3 else 'L'
  image = Image.fromarray(grid if channels == 3 else grid[..., 0], mode)
  out = (
    np.asarray(image.resize((size, size), Image.BICUBIC), np.float32) / 255.0
  )
  return out if channels == 3 else out[..., None]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
  return rng.uniform(0, 255, 3).astype(np.float32)


def _random_texture(
  rng: np.random.Generator, size: int, detail: float
) -> np.ndarray:
  """A float32 [size, size, 3] texture with values in [0, 255]."""
  kind = rng.integers(0, 4)
  c1, c2 = _random_colour(rng), _random_colour(rng)
  if kind == 0:  # smooth colour blobs
    texture = _upsampled_noise(rng, size, rng.integers(2, 8)) * 255.0
  elif kind == 1:  # fractal noise mapped between two colours
    total = np.zeros((size, size, 1), np.float32)
    amplitude, weight = 1.0, 0.0
    cells = int(rng.integers(3, 8))
    while cells <= size // 2 and cells <= 256:
      total += amplitude * _upsampled_noise(rng, size, cells, channels=1)
      weight += amplitude
      amplitude *= 0.6
      cells *= 2
    t = total / max(weight, 1e-6)
    t = np.clip((t - t.mean()) * 2.5 + 0.5, 0, 1)
    texture = c1 + (c2 - c1) * t
  elif kind == 2:  # stripes
    period = rng.uniform(4, 40)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (
      2 * math.pi / period
    )
    t = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * math.pi))
    if rng.uniform() < 0.5:
      t = (t > 0.5).astype(np.float32) * 0.8 + 0.1 * t  # sharper stripes
    texture = c1 + (c2 - c1) * t[..., None]
  else:  # checkerboard-like blocks with random colours
    cells = int(rng.integers(4, 16))
    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    texture = np.asarray(
      Image.fromarray(grid, 'RGB').resize((size, size), Image.NEAREST),
      np.float32,
    )
  fine = (
    _upsampled_noise(rng, size, max(2, size // int(rng.integers(2, 6)))) - 0.5
  )
  texture = texture + (detail * 255.0) * fine
  return np.clip(texture, 0, 255).astype(np.float32)


def _bilinear_clamped(
  texture: np.ndarray, px: np.ndarray, py: np.ndarray
) -> np.ndarray:
  """Samples a [Sy, Sx, C] texture at float coordinates, clamping to its edge."""
  size_y, size_x, channels = texture.shape
  px = np.clip(px.astype(np.float32), 0, size_x - 1)
  py = np.clip(py.astype(np.float32), 0, size_y - 1)
  x0 = np.minimum(px.astype(np.int32), size_x - 2)  # floor, as px >= 0
  y0 = np.minimum(py.astype(np.int32), size_y - 2)
  wx = (px - x0)[:, None]
  wy = (py - y0)[:, None]
  flat = texture.reshape(-1, channels)
  index = y0 * size_x + x0
  top = flat[index] * (1 - wx) + flat[index + 1] * wx
  bottom = flat[index + size_x] * (1 - wx) + flat[index + size_x + 1] * wx
  return top * (1 - wy) + bottom * wy


# --------------------------------------------------------------------------
# Scene construction and rendering.
# --------------------------------------------------------------------------


def _make_layer(
  rng: np.random.Generator,
  height: int,
  width: int,
  config: SyntheticFlowConfig,
  background: bool,
) -> _Layer:
  min_side = min(height, width)
  placement_angle = rng.uniform(0, 2 * math.pi)
  placement_scale = math.exp(rng.uniform(-0.25, 0.25))
  if background:
    motion = _random_motion(
      rng,
      config.background_max_translation,
      config.background_max_rotation_deg,
      config.background_max_log_scale,
      0.0,
    )
    image_centre = np.array([(width - 1) / 2, (height - 1) / 2])
    # The texture must cover the frame in both frames (clamping would smear
    # its border otherwise): half-diagonal / smallest scale + translation.
    half_diagonal = 0.5 * math.hypot(height, width)
    min_scale = placement_scale * math.exp(-config.background_max_log_scale)
    radius = (half_diagonal + config.background_max_translation) / min_scale + 2
    shape_radius = None
  else:
    motion = _random_motion(
      rng,
      config.max_translation,
      config.max_rotation_deg,
      config.max_log_scale,
      config.max_shear,
    )
    image_centre = np.array(
      [
        rng.uniform(-0.1, 1.1) * (width - 1),
        rng.uniform(-0.1, 1.1) * (height - 1),
      ]
    )
    shape_radius = (
      rng.uniform(config.min_object_radius, config.max_object_radius) * min_side
    )
    radius = shape_radius / placement_scale + 2
  size = int(2 * math.ceil(radius) + 2)
  texture = _random_texture(rng, size, config.texture_detail)
  local_centre = np.array([(size - 1) / 2, (size - 1) / 2])
  shape = None
  if not background:
    shape = _random_shape(
      rng, local_centre, shape_radius / placement_scale, config.polygon_prob
    )

  # Frame 1: x = P (p - local_centre) + image_centre, with P = scale * R.
  placement = placement_scale * _rotation(placement_angle)
  # Motion about the layer's own centre: x2 = L (x1 - c) + c + t.
  linear, translation = motion
  motion_matrix = linear
  motion_offset = image_centre + translation - linear @ image_centre
  placement2 = linear @ placement
  centre2 = image_centre + translation

  def to_local(matrix, centre):
    inverse = np.linalg.inv(matrix)
    return inverse, local_centre - inverse @ centre

  local_radius = radius if background else shape_radius / placement_scale
  radius1 = local_radius * np.linalg.norm(placement, 2) + 1
  radius2 = local_radius * np.linalg.norm(placement2, 2) + 1
  return _Layer(
    texture=texture,
    frame_to_local=(
      to_local(placement, image_centre),
      to_local(placement2, centre2),
    ),
    motion=(motion_matrix, motion_offset),
    image_centres=(image_centre, centre2),
    image_radii=(radius1, radius2),
    shape=shape,
  )


def _bbox(
  layer: _Layer, frame: int, height: int, width: int
) -> Optional[Tuple[int, int, int, int]]:
  """Pixel box (y0, y1, x0, x1), end-exclusive, of a layer in a frame; None if off-image."""
  if layer.shape is None:
    return 0, height, 0, width
  cx, cy = layer.image_centres[frame]
  r = layer.image_radii[frame]
  x0, x1 = (
    max(0, int(math.floor(cx - r))),
    min(width, int(math.ceil(cx + r)) + 1),
  )
  y0, y1 = (
    max(0, int(math.floor(cy - r))),
    min(height, int(math.ceil(cy + r)) + 1),
  )
  if x0 >= x1 or y0 >= y1:
    return None
  return y0, y1, x0, x1


def _to_local(layer: _Layer, frame: int, x: np.ndarray, y: np.ndarray):
  matrix, offset = layer.frame_to_local[frame]
  px = matrix[0, 0] * x + matrix[0, 1] * y + offset[0]
  py = matrix[1, 0] * x + matrix[1, 1] * y + offset[1]
  return px, py


def _render(layers, frame: int, height: int, width: int):
  """Composites the layers back to front; returns (image float32, top-layer index int16).

  The top-most layer of every pixel is found first (shape tests only), then
  each pixel samples the texture of that layer alone.
  """
  top = np.full((height, width), -1, np.int16)
  for index, layer in enumerate(layers):
    box = _bbox(layer, frame, height, width)
    if box is None:
      continue
    y0, y1, x0, x1 = box
    if layer.shape is None:
      top[y0:y1, x0:x1] = index
      continue
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    px, py = _to_local(layer, frame, xx, yy)
    inside = _inside_shape(layer.shape, px, py)
    top[y0:y1, x0:x1][inside] = index
  image = np.zeros((height * width, 3), np.float32)
  flat_top = top.reshape(-1)
  for index, layer in enumerate(layers):
    pixels = np.flatnonzero(flat_top == index)
    if pixels.size == 0:
      continue
    y, x = np.divmod(pixels, width)
    px, py = _to_local(layer, frame, x.astype(np.float64), y.astype(np.float64))
    image[pixels] = _bilinear_clamped(layer.texture, px, py)
  return image.reshape(height, width, 3), top


def _flow_and_valid(
  layers, top: np.ndarray, height: int, width: int, source: int = 0
):
  """Exact flow of the top-most layer from frame `source` to the other frame, and its validity.

  Forward (source 0) maps x1 -> M x1 + t; backward (source 1) maps x2 -> M^-1 (x2 - t).
  """
  target = 1 - source
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  x2 = np.empty_like(xx)
  y2 = np.empty_like(yy)
  for index, layer in enumerate(layers):
    sel = top == index
    if not sel.any():
      continue
    matrix, offset = layer.motion
    if source == 1:
      matrix = np.linalg.inv(matrix)
      offset = -matrix @ offset
    x2[sel] = matrix[0, 0] * xx[sel] + matrix[0, 1] * yy[sel] + offset[0]
    y2[sel] = matrix[1, 0] * xx[sel] + matrix[1, 1] * yy[sel] + offset[1]
  flow = np.stack([x2 - xx, y2 - yy], axis=-1).astype(np.float32)
  valid = (x2 >= 0) & (x2 <= width - 1) & (y2 >= 0) & (y2 <= height - 1)
  # Occlusion: a layer above the one seen at x covers x + flow(x) in the target frame.
  for index, layer in enumerate(layers):
    if layer.shape is None:
      continue
    cx, cy = layer.image_centres[target]
    r = layer.image_radii[target]
    candidates = (
      valid & (top < index) & (np.abs(x2 - cx) <= r) & (np.abs(y2 - cy) <= r)
    )
    if not candidates.any():
      continue
    px, py = _to_local(layer, target, x2[candidates], y2[candidates])
    covered = _inside_shape(layer.shape, px, py)
    valid[candidates] = ~covered
  return flow, valid.astype(np.float32)


def _as_generator(rng_or_seed: RngOrSeed) -> np.random.Generator:
  if isinstance(rng_or_seed, np.random.Generator):
    return rng_or_seed
  if isinstance(rng_or_seed, (int, np.integer)) and not isinstance(
    rng_or_seed, bool
  ):
    if rng_or_seed < 0:
      raise ValueError(
        f'seed must be a non-negative integer; got {rng_or_seed}.'
      )
    return np.random.default_rng(int(rng_or_seed))
  raise TypeError(
    f'expected a numpy Generator or an int seed; got {type(rng_or_seed).__name__}.'
  )


def generate_pair(
  rng_or_seed: RngOrSeed,
  height: int,
  width: int,
  config: Optional[SyntheticFlowConfig] = None,
  backward: bool = False,
) -> Sample:
  """Renders one synthetic frame pair with exact forward flow.

  Args:
    rng_or_seed: a numpy Generator (consumed) or a non-negative int seed.
    height: frame height in pixels (>= 8).
    width: frame width in pixels (>= 8).
    config: scene/motion distribution; default `SyntheticFlowConfig()`.
    backward: return the same scene in reverse order (the rendered second
      frame first) with its exact flow back to the rendered first frame, as
      the "backward-ordered pairs" of the Perceiver IO flow curriculum. The
      random draws are the same as for the forward pair.

  Returns:
    dict with 'frame1', 'frame2' (uint8 [H, W, 3]), 'flow' (float32 [H, W, 2],
    from frame1 to frame2) and 'valid' (float32 [H, W]; 0 where the
    pixel leaves the image or is occluded in frame 2).
  """
  if int(height) < 8 or int(width) < 8:
    raise ValueError(f'height and width must be >= 8; got {height}x{width}.')
  height, width = int(height), int(width)
  config = config or SyntheticFlowConfig()
  rng = _as_generator(rng_or_seed)
  num_foreground = int(
    rng.integers(config.min_foreground_layers, config.max_foreground_layers + 1)
  )
  layers = [_make_layer(rng, height, width, config, background=True)]
  layers += [
    _make_layer(rng, height, width, config, background=False)
    for _ in range(num_foreground)
  ]
  image1, top1 = _render(layers, 0, height, width)
  image2, top2 = _render(layers, 1, height, width)
  to_uint8 = lambda image: np.clip(np.round(image), 0, 255).astype(np.uint8)
  if backward:
    flow, valid = _flow_and_valid(layers, top2, height, width, source=1)
    return {
      'frame1': to_uint8(image2),
      'frame2': to_uint8(image1),
      'flow': flow,
      'valid': valid,
    }
  flow, valid = _flow_and_valid(layers, top1, height, width)
  return {
    'frame1': to_uint8(image1),
    'frame2': to_uint8(image2),
    'flow': flow,
    'valid': valid,
  }


def sample_at(
  seed: int,
  index: int,
  height: int,
  width: int,
  config: Optional[SyntheticFlowConfig] = None,
  backward: bool = False,
) -> Sample:
  """Sample `index` of the stream `seed`; depends only on (seed, index, backward)."""
  if seed < 0 or index < 0:
    raise ValueError(
      f'seed and index must be non-negative; got seed={seed}, index={index}.'
    )
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
  return generate_pair(rng, height, width, config, backward=backward)


def synthetic_flow_batches(
  seed: int,
  batch_size: int,
  height: int,
  width: int,
  start_index: int = 0,
  num_batches: Optional[int] = None,
  config: Optional[SyntheticFlowConfig] = None,
) -> Iterator[Sample]:
  """Yields batches of synthetic pairs, deterministically and resumably.

  Batch b holds samples start_index + b * batch_size + [0, batch_size); sample
  i is `sample_at(seed, i, ...)`, so skipping ahead (start_index) or sharding
  by index reproduces the same samples.

  Args:
    seed: non-negative stream seed.
    batch_size: samples per batch.
    height: frame height.
    width: frame width.
    start_index: index of the first sample.
    num_batches: stop after this many batches (None = endless).
    config: scene/motion distribution.

  Yields:
    dicts with 'frame1', 'frame2' uint8 [B, H, W, 3], 'flow' float32
    [B, H, W, 2], 'valid' float32 [B, H, W] and 'index' int64 [B].
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1; got {batch_size}.')
  if start_index < 0:
    raise ValueError(f'start_index must be >= 0; got {start_index}.')
  batch = 0
  while num_batches is None or batch < num_batches:
    first = start_index + batch * batch_size
    indices = np.arange(first, first + batch_size, dtype=np.int64)
    samples = [sample_at(seed, int(i), height, width, config) for i in indices]
    out = {key: np.stack([s[key] for s in samples]) for key in samples[0]}
    out['index'] = indices
    yield out
    batch += 1
