"""Optical-flow benchmark folder layouts: Sintel, KITTI, Middlebury, FlyingChairs.

Why this module exists: every benchmark arranges its frames, ground truth and
masks in its own folder tree, and a listing that pairs the wrong frames or
skips a missing one gives plausible but wrong scores. The listers enumerate
the official layouts, check that every file of a pair exists, and fail with the
expected layout in the message; `perceiver_io.flow.formats` reads the files.

Every sample is a dict::

  {'frame1': uint8 [H, W, 3], 'frame2': uint8 [H, W, 3],
   'flow': float32 [H, W, 2] (u = x/column, v = y/row displacement, pixels,
           from frame1 to frame2),
   'valid': float32 [H, W] (1 = ground truth known and used, 0 = ignore),
   'name': str}
"""

import dataclasses
import os
import re
from typing import (
  Dict,
  Iterable,
  Iterator,
  List,
  Optional,
  Sequence,
  Tuple,
  Union,
)

import numpy as np

from perceiver_io.flow.formats import known_flow_mask
from perceiver_io.flow.formats import PathLike
from perceiver_io.flow.formats import read_flo
from perceiver_io.flow.formats import read_image
from perceiver_io.flow.formats import read_kitti_flow
from perceiver_io.flow.formats import read_mask

Sample = Dict[str, object]


@dataclasses.dataclass(frozen=True)
class FlowPairFiles:
  """The files of one ground-truth frame pair.

  Attributes:
    name: sample name (unique within a listing).
    frame1: first frame.
    frame2: second frame.
    flow: ground-truth flow file, forward from frame1 to frame2.
    flow_format: 'flo' (Middlebury float) or 'kitti_png' (16-bit PNG).
    invalid_masks: mask PNGs whose non-zero pixels are excluded from `valid`
      (Sintel `invalid`, optionally `occlusions`).
  """

  name: str
  frame1: str
  frame2: str
  flow: str
  flow_format: str
  invalid_masks: Tuple[str, ...] = ()


def load_pair(files: FlowPairFiles) -> Sample:
  """Reads one sample dict (see the module docstring) from its files.

  `valid` is 0 where the flow file marks the flow unknown (`.flo` values
  >= 1e9 or non-finite; KITTI blue channel 0) or where an invalid mask is set;
  the flow itself is set to 0 at unknown-flow pixels so downstream arithmetic
  stays finite.
  """
  frame1 = read_image(files.frame1)
  frame2 = read_image(files.frame2)
  if frame1.shape != frame2.shape:
    raise ValueError(
      f'{files.name}: frames have different sizes: {files.frame1} is '
      f'{frame1.shape[1]}x{frame1.shape[0]}, {files.frame2} is '
      f'{frame2.shape[1]}x{frame2.shape[0]}; both frames of a pair must match.'
    )
  if files.flow_format == 'flo':
    flow = read_flo(files.flow)
    valid = known_flow_mask(flow)
    flow = np.where(valid[..., None] > 0, flow, 0.0).astype(np.float32)
  elif files.flow_format == 'kitti_png':
    flow, valid = read_kitti_flow(files.flow)
  else:
    raise ValueError(
      f'Unknown flow_format {files.flow_format!r}; expected "flo" or "kitti_png".'
    )
  if flow.shape[:2] != frame1.shape[:2]:
    raise ValueError(
      f'{files.name}: flow {files.flow} is {flow.shape[1]}x{flow.shape[0]} but the '
      f'frames are {frame1.shape[1]}x{frame1.shape[0]}.'
    )
  for mask_path in files.invalid_masks:
    mask = read_mask(mask_path)
    if mask.shape != valid.shape:
      raise ValueError(
        f'{files.name}: mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but '
        f'the frames are {frame1.shape[1]}x{frame1.shape[0]}.'
      )
    valid = np.where(mask, 0.0, valid).astype(np.float32)
  return {
    'frame1': frame1,
    'frame2': frame2,
    'flow': flow,
    'valid': valid,
    'name': files.name,
  }


def iterate_pairs(files: Iterable[FlowPairFiles]) -> Iterator[Sample]:
  """Loads the sample dicts of a listing lazily, in order."""
  for f in files:
    yield load_pair(f)


def _require_dir(path: str, what: str, layout: str) -> str:
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f'{what} folder not found: {path}. Expected layout: {layout}'
    )
  return path


def _require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} not found: {path}')
  return path


def _nonempty(
  listing: List[FlowPairFiles], root: str, layout: str
) -> List[FlowPairFiles]:
  if not listing:
    raise FileNotFoundError(
      f'No ground-truth samples found under {root}. Expected layout: {layout}'
    )
  return listing


_SINTEL_LAYOUT = (
  '<root>/training/{clean,final}/<scene>/frame_XXXX.png and '
  '<root>/training/flow/<scene>/frame_XXXX.flo (optional '
  'training/invalid and training/occlusions masks).'
)


def list_sintel(
  root: PathLike,
  passes: Union[str, Sequence[str]] = ('clean', 'final'),
  use_invalid_masks: bool = True,
  exclude_occlusions: bool = False,
) -> List[FlowPairFiles]:
  """Lists MPI-Sintel training pairs.

  Pairs are driven by the ground truth: `flow/<scene>/frame_i.flo` pairs
  `<pass>/<scene>/frame_i.png` with `frame_{i+1}.png`.

  Args:
    root: the Sintel root (holding `training/`) or the `training/` folder.
    passes: 'clean', 'final' or both (in that order of listing).
    use_invalid_masks: exclude pixels set in `training/invalid/<scene>/frame_i.png`
      when that folder exists (the benchmark's own invalid pixels).
    exclude_occlusions: also exclude pixels set in `training/occlusions/...`
      (gives the "non-occluded" EPE; the standard Sintel EPE includes them).

  Returns:
    list of FlowPairFiles named '<pass>/<scene>/frame_XXXX'.
  """
  root = os.fspath(root)
  training = os.path.join(root, 'training')
  if not os.path.isdir(training) and os.path.isdir(os.path.join(root, 'flow')):
    training = root
  passes = (passes,) if isinstance(passes, str) else tuple(passes)
  for p in passes:
    if p not in ('clean', 'final'):
      raise ValueError(
        f'Unknown Sintel pass {p!r}; expected "clean" and/or "final".'
      )
  flow_root = _require_dir(
    os.path.join(training, 'flow'), 'Sintel flow', _SINTEL_LAYOUT
  )
  listing = []
  for pass_name in passes:
    pass_root = _require_dir(
      os.path.join(training, pass_name),
      f'Sintel {pass_name} pass',
      _SINTEL_LAYOUT,
    )
    for scene in sorted(os.listdir(flow_root)):
      scene_flow = os.path.join(flow_root, scene)
      if not os.path.isdir(scene_flow):
        continue
      for flow_name in sorted(os.listdir(scene_flow)):
        match = re.fullmatch(r'frame_(\d+)\.flo', flow_name)
        if not match:
          continue
        index = int(match.group(1))
        width = len(match.group(1))
        stem = f'frame_{index:0{width}d}'
        frame1 = os.path.join(pass_root, scene, stem + '.png')
        frame2 = os.path.join(
          pass_root, scene, f'frame_{index + 1:0{width}d}.png'
        )
        masks = []
        mask_dirs = (['invalid'] if use_invalid_masks else []) + (
          ['occlusions'] if exclude_occlusions else []
        )
        for mask_dir in mask_dirs:
          mask_root = os.path.join(training, mask_dir)
          if mask_dir == 'occlusions' or os.path.isdir(mask_root):
            masks.append(
              _require_file(
                os.path.join(mask_root, scene, stem + '.png'),
                f'Sintel {mask_dir} mask',
              )
            )
        listing.append(
          FlowPairFiles(
            name=f'{pass_name}/{scene}/{stem}',
            frame1=_require_file(frame1, 'Sintel frame'),
            frame2=_require_file(
              frame2, 'Sintel frame (the next frame of the pair)'
            ),
            flow=os.path.join(scene_flow, flow_name),
            flow_format='flo',
            invalid_masks=tuple(masks),
          )
        )
  return _nonempty(listing, root, _SINTEL_LAYOUT)


_KITTI_LAYOUT = (
  '<root>/training/<image dir>/XXXXXX_10.png, XXXXXX_11.png and '
  '<root>/training/flow_{occ,noc}/XXXXXX_10.png, where <image dir> is image_2 '
  '(KITTI 2015) or colored_0 / image_0 (KITTI 2012).'
)
_KITTI_IMAGE_DIRS = ('image_2', 'colored_0', 'image_0')


def list_kitti(
  root: PathLike, gt: str = 'occ', image_dir: Optional[str] = None
) -> List[FlowPairFiles]:
  """Lists KITTI 2012 / 2015 training pairs with ground truth.

  Args:
    root: the KITTI root (holding `training/`) or the `training/` folder.
    gt: 'occ' (all pixels with ground truth, the benchmark's Fl-all/EPE-all) or
      'noc' (non-occluded pixels only).
    image_dir: frame folder; default the first of image_2 (2015), colored_0
      (2012 colour), image_0 (2012 grayscale, replicated to 3 channels) that
      exists.

  Returns:
    list of FlowPairFiles named 'XXXXXX_10'.
  """
  if gt not in ('occ', 'noc'):
    raise ValueError(
      f'Unknown KITTI ground truth {gt!r}; expected "occ" or "noc".'
    )
  root = os.fspath(root)
  training = os.path.join(root, 'training')
  if not os.path.isdir(training) and os.path.isdir(
    os.path.join(root, f'flow_{gt}')
  ):
    training = root
  flow_root = _require_dir(
    os.path.join(training, f'flow_{gt}'), f'KITTI flow_{gt}', _KITTI_LAYOUT
  )
  if image_dir is None:
    candidates = [
      d for d in _KITTI_IMAGE_DIRS if os.path.isdir(os.path.join(training, d))
    ]
    if not candidates:
      raise FileNotFoundError(
        f'No KITTI frame folder (one of {", ".join(_KITTI_IMAGE_DIRS)}) '
        f'under {training}. Expected layout: {_KITTI_LAYOUT}'
      )
    image_dir = candidates[0]
  image_root = _require_dir(
    os.path.join(training, image_dir), 'KITTI frame', _KITTI_LAYOUT
  )
  listing = []
  for flow_name in sorted(os.listdir(flow_root)):
    match = re.fullmatch(r'(\d+)_10\.png', flow_name)
    if not match:
      continue
    sample_id = match.group(1)
    listing.append(
      FlowPairFiles(
        name=f'{sample_id}_10',
        frame1=_require_file(
          os.path.join(image_root, f'{sample_id}_10.png'), 'KITTI frame'
        ),
        frame2=_require_file(
          os.path.join(image_root, f'{sample_id}_11.png'), 'KITTI frame'
        ),
        flow=os.path.join(flow_root, flow_name),
        flow_format='kitti_png',
      )
    )
  return _nonempty(listing, root, _KITTI_LAYOUT)


_CHAIRS_LAYOUT = (
  '<root>/XXXXX_img1.ppm, XXXXX_img2.ppm, XXXXX_flow.flo (or the same under '
  '<root>/data/), with FlyingChairs_train_val.txt (1 = train, 2 = val) for splits.'
)


def list_flying_chairs(
  root: PathLike,
  split: Optional[str] = None,
  split_file: Optional[PathLike] = None,
) -> List[FlowPairFiles]:
  """Lists FlyingChairs pairs.

  Args:
    root: `FlyingChairs_release` (with `data/`) or the folder holding the files.
    split: None (all), 'train' or 'val'. Uses the official split file, whose
      i-th line (1 = train, 2 = val) belongs to the i-th sample in sorted order.
    split_file: the split file; default `FlyingChairs_train_val.txt` in `root`
      or in the parent of the data folder.

  Returns:
    list of FlowPairFiles named 'XXXXX'.
  """
  root = os.fspath(root)
  data_dir = (
    os.path.join(root, 'data')
    if os.path.isdir(os.path.join(root, 'data'))
    else root
  )
  _require_dir(data_dir, 'FlyingChairs', _CHAIRS_LAYOUT)
  listing = []
  for flow_name in sorted(os.listdir(data_dir)):
    match = re.fullmatch(r'(\d+)_flow\.flo', flow_name)
    if not match:
      continue
    sample_id = match.group(1)
    listing.append(
      FlowPairFiles(
        name=sample_id,
        frame1=_require_file(
          os.path.join(data_dir, f'{sample_id}_img1.ppm'), 'FlyingChairs frame'
        ),
        frame2=_require_file(
          os.path.join(data_dir, f'{sample_id}_img2.ppm'), 'FlyingChairs frame'
        ),
        flow=os.path.join(data_dir, flow_name),
        flow_format='flo',
      )
    )
  _nonempty(listing, root, _CHAIRS_LAYOUT)
  if split is None:
    return listing
  if split not in ('train', 'val'):
    raise ValueError(
      f'Unknown FlyingChairs split {split!r}; expected None, "train" or "val".'
    )
  if split_file is None:
    candidates = [
      os.path.join(d, 'FlyingChairs_train_val.txt')
      for d in (root, os.path.dirname(os.path.abspath(data_dir)))
    ]
    existing = [c for c in candidates if os.path.isfile(c)]
    if not existing:
      raise FileNotFoundError(
        f'FlyingChairs split file not found (looked for {candidates}); '
        'pass split_file= or split=None.'
      )
    split_file = existing[0]
  with open(
    _require_file(os.fspath(split_file), 'FlyingChairs split file'), 'rb'
  ) as f:  # Other bytes than 1/2 are reported below, not as a decode error.
    text = f.read().decode('utf-8', errors='replace')
  labels = [line.strip() for line in text.splitlines() if line.strip()]
  if len(labels) != len(listing) or any(
    label not in ('1', '2') for label in labels
  ):
    raise ValueError(
      f'{split_file}: expected {len(listing)} lines of 1 (train) / 2 (val), one per '
      f'sample; got {len(labels)} lines.'
    )
  wanted = '1' if split == 'train' else '2'
  return [f for f, label in zip(listing, labels) if label == wanted]


_MIDDLEBURY_LAYOUT = (
  '<root>/other-data/<scene>/frame10.png, frame11.png and '
  '<root>/other-gt-flow/<scene>/flow10.flo, or one folder holding '
  'frame10.png, frame11.png and flow10.flo.'
)


def list_middlebury(root: PathLike) -> List[FlowPairFiles]:
  """Lists Middlebury pairs (frame10 -> frame11 with flow10.flo).

  Args:
    root: the folder holding `other-data/` and `other-gt-flow/`, or a flat
      scene folder with frame10.png, frame11.png and flow10.flo.

  Returns:
    list of FlowPairFiles named by scene (the flat folder's own name).
  """
  root = os.fspath(root)
  _require_dir(root, 'Middlebury', _MIDDLEBURY_LAYOUT)
  if os.path.isfile(os.path.join(root, 'flow10.flo')):
    name = os.path.basename(os.path.normpath(os.path.abspath(root)))
    return [
      FlowPairFiles(
        name=name,
        frame1=_require_file(
          os.path.join(root, 'frame10.png'), 'Middlebury frame'
        ),
        frame2=_require_file(
          os.path.join(root, 'frame11.png'), 'Middlebury frame'
        ),
        flow=os.path.join(root, 'flow10.flo'),
        flow_format='flo',
      )
    ]
  gt_root = _require_dir(
    os.path.join(root, 'other-gt-flow'),
    'Middlebury other-gt-flow',
    _MIDDLEBURY_LAYOUT,
  )
  data_root = _require_dir(
    os.path.join(root, 'other-data'),
    'Middlebury other-data',
    _MIDDLEBURY_LAYOUT,
  )
  listing = []
  for scene in sorted(os.listdir(gt_root)):
    flow = os.path.join(gt_root, scene, 'flow10.flo')
    if not os.path.isfile(flow):
      continue
    listing.append(
      FlowPairFiles(
        name=scene,
        frame1=_require_file(
          os.path.join(data_root, scene, 'frame10.png'), 'Middlebury frame'
        ),
        frame2=_require_file(
          os.path.join(data_root, scene, 'frame11.png'), 'Middlebury frame'
        ),
        flow=flow,
        flow_format='flo',
      )
    )
  return _nonempty(listing, root, _MIDDLEBURY_LAYOUT)


DATASET_LISTERS = {
  'sintel': list_sintel,
  'kitti': list_kitti,
  'flying_chairs': list_flying_chairs,
  'middlebury': list_middlebury,
}


def sintel_samples(root: PathLike, **kwargs) -> Iterator[Sample]:
  """Yields MPI-Sintel samples; kwargs as in `list_sintel`."""
  return iterate_pairs(list_sintel(root, **kwargs))


def kitti_samples(root: PathLike, **kwargs) -> Iterator[Sample]:
  """Yields KITTI 2012/2015 samples; kwargs as in `list_kitti`."""
  return iterate_pairs(list_kitti(root, **kwargs))


def flying_chairs_samples(root: PathLike, **kwargs) -> Iterator[Sample]:
  """Yields FlyingChairs samples; kwargs as in `list_flying_chairs`."""
  return iterate_pairs(list_flying_chairs(root, **kwargs))


def middlebury_samples(root: PathLike) -> Iterator[Sample]:
  """Yields Middlebury samples."""
  return iterate_pairs(list_middlebury(root))
