"""Middlebury colour coding of optical flow.

Why: flow fields are read by eye through the colour coding of Baker et al.
(Middlebury benchmark), which every flow paper and the official Perceiver IO
colab use: hue encodes direction, saturation encodes magnitude relative to a
maximum, white is zero motion. Reimplemented here from the description of the
code:

* the colour wheel has 55 entries in six ramps between the primaries and
  secondaries: red->yellow (15 steps), yellow->green (6), green->cyan (4),
  cyan->blue (11), blue->magenta (13), magenta->red (6). Entry i of a ramp of
  length n moves the changing channel by floor(255 * i / n).
* a flow (u, v) of normalised radius r has angle a = atan2(-v, -u) / pi in
  [-1, 1]; its wheel position is (a + 1) / 2 * (55 - 1), interpolated linearly
  between the two neighbouring entries (position 54 -> 55 wraps to entry 0).
  Pure +x motion (v = +0) hits a = -1, i.e. entry 0 (red).
* within the unit radius the colour is desaturated towards white,
  1 - r * (1 - colour); beyond it the colour is darkened to 75 %.
* pixels with unknown flow (non-finite or |u|, |v| >= 1e9) are black.
"""

import os
from typing import Optional, Union

import numpy as np
from PIL import Image

from perceiver_io.flow import formats as flow_formats

# (ramp length, start colour, end colour) in the Middlebury order.
_RAMPS = (
  (15, (255, 0, 0), (255, 255, 0)),  # RY
  (6, (255, 255, 0), (0, 255, 0)),  # YG
  (4, (0, 255, 0), (0, 255, 255)),  # GC
  (11, (0, 255, 255), (0, 0, 255)),  # CB
  (13, (0, 0, 255), (255, 0, 255)),  # BM
  (6, (255, 0, 255), (255, 0, 0)),  # MR
)


def make_colour_wheel() -> np.ndarray:
  """The 55 x 3 Middlebury colour wheel (float, 0..255)."""
  entries = []
  for length, start, end in _RAMPS:
    steps = np.floor(255.0 * np.arange(length) / length)
    for i in range(length):
      colour = []
      for s, e in zip(start, end):
        if s == e:
          colour.append(float(s))
        elif e > s:
          colour.append(steps[i])
        else:
          colour.append(255.0 - steps[i])
      entries.append(colour)
  return np.array(entries, np.float64)


COLOUR_WHEEL = make_colour_wheel()


def flow_to_color(
  flow: np.ndarray, max_flow: Optional[float] = None
) -> np.ndarray:
  """Colour-codes a flow field.

  Args:
    flow: [H, W, 2] flow (u, v) in pixels.
    max_flow: radius that maps to full saturation; default the largest
      magnitude among known pixels. Larger magnitudes are darkened.

  Returns:
    uint8 [H, W, 3] RGB image.
  """
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f'flow must have shape [H, W, 2]; got {flow.shape}.')
  known = flow_formats.known_flow_mask(flow) > 0
  # `+ 0.0` turns -0.0 into +0.0, so that v == 0 always gives atan2(-0.0, .)
  # and pure +x motion is red whatever the sign of its zero.
  u = np.where(known, flow[..., 0], 0.0) + 0.0
  v = np.where(known, flow[..., 1], 0.0) + 0.0
  radius = np.sqrt(u * u + v * v)
  if max_flow is None:
    max_flow = float(radius.max()) if radius.size else 0.0
  elif not max_flow > 0:
    raise ValueError(f'max_flow must be positive; got {max_flow}.')
  scale = max(max_flow, np.finfo(np.float64).eps)
  u, v, radius = u / scale, v / scale, radius / scale

  num_colours = COLOUR_WHEEL.shape[0]
  angle = np.arctan2(-v, -u) / np.pi
  position = (angle + 1) / 2 * (num_colours - 1)
  k0 = np.floor(position).astype(np.int64)
  k1 = k0 + 1
  k1[k1 == num_colours] = 0
  frac = (position - k0)[..., None]
  colour = ((1 - frac) * COLOUR_WHEEL[k0] + frac * COLOUR_WHEEL[k1]) / 255.0
  r = radius[..., None]
  colour = np.where(r <= 1, 1 - r * (1 - colour), colour * 0.75)
  colour = np.where(known[..., None], colour, 0.0)
  return np.floor(255.0 * colour).astype(np.uint8)


def save_flow_png(
  path: Union[str, os.PathLike],
  flow: np.ndarray,
  max_flow: Optional[float] = None,
) -> None:
  """Writes the colour coding of `flow` as an 8-bit RGB PNG (atomically)."""
  image = Image.fromarray(flow_to_color(flow, max_flow), 'RGB')
  flow_formats.atomic_write(path, lambda tmp: image.save(tmp, format='PNG'))
