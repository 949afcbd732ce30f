"""`open_source(spec, ...)`: the clips of one split, as the multimodal task
reads them: `source[i]` -> dict(video=uint8 [T, H, W, 3], audio=float32 [S]
in [-1, 1], label=int).

Specs:
  * `synthetic:N`: N generated clips (`synthetic.py`); the train split uses
    indices 0..N-1, every other split indices from 2**30 on, so they never
    share a clip. `synthetic:N:pitch=F` scales every tone's pitch by F.
  * a folder of class folders, or a CSV of `path,label` (`listing.py`):
    every file of the split (this process's share) is decoded once, in
    `workers` processes with progress, into `cache_dir` (`cache.py`); then
    `source[i]` reads one cached clip.
  * `tfds:NAME[:CONFIG]`: a prepared TFDS video dataset (`tfds_source.py`).

Bad clips (`decoding.ClipError`): one line each naming the file and what
would be right. `on_bad='skip'` logs it, leaves the clip out and counts it
in `summary`; `on_bad='refuse'` raises it. A file without an audio track is
a bad clip unless `no_audio='silence'` (explicit and counted: the clip gets
zeros). Short clips are padded (`short='pad'`, counted) or refused.

Several processes (`process_index` of `process_count`): the split's clips
in a fixed order are dealt round robin, so the shares are disjoint, cover
the split and differ in length by at most one clip; each process decodes
only its own.
"""

import collections
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Union


from perceiver_io.data.video import cache as cache_lib
from perceiver_io.data.video import listing
from perceiver_io.data.video import synthetic
from perceiver_io.data.video.clip_source import ClipSource
from perceiver_io.data.video.decoding import check_settings
from perceiver_io.data.video.decoding import ClipError
from perceiver_io.data.video.decoding import KEPT_HINT
from perceiver_io.data.video.decoding import REFUSED_HINT

ON_BAD = ('skip', 'refuse')
NO_AUDIO = ('bad', 'silence')
HELD_OUT_OFFSET = 2**30  # First synthetic index of the non-train splits.
_SPLITS = ('train', 'validation', 'val', 'test', 'eval')
SPECS = (
  'synthetic:N, a folder of class folders, a CSV of path,label, or '
  'tfds:NAME[:CONFIG]'
)


def _check(name: str, value, allowed: Sequence) -> None:
  if value not in allowed:
    raise ValueError(f'{name}={value!r}; expected one of {tuple(allowed)}.')


def _share(items: Sequence, process_index: int, process_count: int) -> List:
  if not 0 <= process_index < process_count:
    raise ValueError(
      f'process_index={process_index} with process_count={process_count}; '
      'expected 0 <= process_index < process_count.'
    )
  return list(items[process_index::process_count])


def _num_classes(num_classes: Optional[int], names: List[str], where: str):
  if num_classes is None:
    return len(names)
  if num_classes < len(names):
    raise ValueError(
      f'{where} has {len(names)} classes but num_classes={num_classes}; '
      f'set num_classes to at least {len(names)} (or leave it unset).'
    )
  return num_classes


def open_source(
  spec: str,
  *,
  split: str = 'train',
  num_frames: int = 16,
  size: int = 224,
  sample_rate: int = 48000,
  audio_samples: int = 30720,
  num_classes: Optional[int] = None,
  label_names: Union[None, str, Sequence[str]] = None,
  on_bad: str = 'skip',
  short: str = 'pad',
  no_audio: str = 'bad',
  sampling: str = 'window',
  workers: Optional[int] = None,
  cache_dir: Optional[str] = None,
  progress: Optional[Callable[[int, int], None]] = None,
  process_index: int = 0,
  process_count: int = 1,
  seed: int = 0,
) -> ClipSource:
  """The clips of `split` of `spec` (module docstring).

  Args:
    spec: what to read (module docstring).
    split: 'train', 'validation'/'val', 'test' or 'eval'.
    num_frames, size, sample_rate, audio_samples: the clip's shape: the
      paper's 16 frames of 224x224 and 30,720 samples at 48 kHz.
    num_classes: the label space; defaults to the classes found (a larger
      number leaves room for classes this split lacks).
    label_names: the classes in order (a list or a text file), for files.
    on_bad: 'skip' (log, count, leave out) or 'refuse' (raise).
    short: 'pad' (repeat the last frame, add silence; counted) or 'refuse'.
    no_audio: 'bad' (a bad clip) or 'silence' (zeros; counted).
    sampling: 'window' or 'uniform' (`decoding.py`).
    workers: decoding processes; default min(CPUs, 8); 1 decodes here.
    cache_dir: decoded clips; default ~/.cache/perceiver_io/clips.
    progress: called as `progress(done, total)` after each decoded clip.
    process_index, process_count: this process's share (module docstring).
    seed: the synthetic clips' seed.

  Raises:
    ValueError: an unknown spec, an empty folder or CSV, an unknown label,
      bad settings; `ClipError` (a ValueError) for a bad clip under
      `on_bad='refuse'`.
    FileNotFoundError: a spec path that does not exist.
  """
  _check('on_bad', on_bad, ON_BAD)
  _check('no_audio', no_audio, NO_AUDIO)
  _check('split', split, _SPLITS)
  check_settings(sampling, short)
  shape = dict(num_frames=num_frames, size=size, audio_samples=audio_samples)
  where = f'split {split}, process {process_index} of {process_count}'
  if spec.startswith('synthetic:'):
    return _synthetic_source(
      spec, split, shape, num_classes, seed, process_index, process_count
    )
  if spec.startswith('tfds:'):
    from perceiver_io.data.video import tfds_source  # pylint: disable=g-import-not-at-top

    return tfds_source.open_tfds(
      spec,
      split=split,
      shape=dict(shape, sampling=sampling),
      num_classes=num_classes,
      cache_dir=cache_dir or cache_lib.default_cache_dir(),
      progress=progress,
      process_index=process_index,
      process_count=process_count,
      short=short,
      no_audio=no_audio,
    )
  names = listing.resolve_label_names(label_names)
  if os.path.isdir(spec):
    paths, labels, names = listing.list_folder(spec, split, names)
  elif os.path.isfile(spec) and spec.lower().endswith('.csv'):
    paths, labels, names = listing.list_csv(spec, split, names)
  elif os.path.exists(spec) or os.sep in spec or spec.endswith('.csv'):
    raise FileNotFoundError(
      f'clip source {spec!r} is not a folder nor a .csv file; expected {SPECS}.'
    )
  else:
    raise ValueError(f'unknown clip source {spec!r}; expected {SPECS}.')
  classes = _num_classes(num_classes, names, spec)
  order = sorted(range(len(paths)), key=lambda i: paths[i])
  mine = _share(order, process_index, process_count)
  paths = [paths[i] for i in mine]
  labels = [labels[i] for i in mine]
  settings = dict(shape, sample_rate=sample_rate, sampling=sampling)
  cache_dir = cache_dir or cache_lib.default_cache_dir()
  bases = [cache_lib.cache_file(cache_dir, p, settings) for p in paths]
  tally = _Tally(on_bad, short, no_audio, sample_rate)
  results, decoded = cache_lib.decode_all(
    paths,
    bases,
    settings,
    workers=workers or min(os.cpu_count() or 1, 8),
    check=tally.check,
    progress=progress,
  )
  tally.log_rates()
  kept = [i for i, path in enumerate(paths) if path not in tally.dropped]
  if not kept:
    raise ValueError(
      f'{spec} ({where}): none of its {len(paths)} clips can be used '
      f'({tally.counts_text()}); see the lines above.'
    )
  return ClipSource(
    keys=[paths[i] for i in kept],
    labels=[labels[i] for i in kept],
    label_names=names,
    num_classes=classes,
    summary=(
      f'{spec} ({where}): {len(kept)} clips of {len(paths)}, {classes} '
      f'classes; {tally.counts_text()}; {decoded} decoded, '
      f'{len(paths) - decoded} read from the cache {cache_dir}.'
    ),
    read=lambda i: cache_lib.load(bases[kept[i]]),
  )


def _synthetic_source(
  spec, split, shape, num_classes, seed, process_index, process_count
) -> ClipSource:
  """`synthetic:N`: generated on demand; the audio rate is the one that
  makes `audio_samples` last `num_frames` at 25 fps (48 kHz for the
  paper's shapes)."""
  count, _, option = spec.partition(':')[2].partition(':')
  pitch = option.partition('pitch=')[2]
  try:
    pitch_scale = float(pitch) if option else 1.0
  except ValueError:
    pitch_scale = -1.0
  if not count.isdigit() or int(count) < 1 or not pitch_scale > 0:
    raise ValueError(
      f'clip source {spec!r}: expected synthetic:N with N >= 1 clips, '
      'optionally synthetic:N:pitch=F with a pitch scale F > 0.'
    )
  classes = num_classes or synthetic.MAX_CLASSES
  names = synthetic.label_names(classes)
  first = 0 if split == 'train' else HELD_OUT_OFFSET
  indices = _share(
    range(first, first + int(count)), process_index, process_count
  )

  def read(i):
    clip = synthetic.synthetic_clip(
      indices[i],
      seed=seed,
      num_classes=classes,
      pitch_scale=pitch_scale,
      **shape,
    )
    return dict(video=clip['video'], audio=clip['audio'])

  return ClipSource(
    keys=[f'synthetic:{i}' for i in indices],
    labels=[
      synthetic.label_of(i, seed=seed, num_classes=classes) for i in indices
    ],
    label_names=names,
    num_classes=classes,
    summary=(
      f'{spec} (split {split}, process {process_index} of {process_count}):'
      f' {len(indices)} clips, {classes} classes.'
    ),
    read=read,
  )


class _Tally:
  """Applies the bad-clip policies to decoding results, logs one line per
  bad clip, and counts them."""

  def __init__(self, on_bad, short, no_audio, sample_rate):
    self.on_bad, self.short, self.no_audio = on_bad, short, no_audio
    self.sample_rate = sample_rate
    self.counts = collections.Counter()
    self.dropped = set()
    self.rates = collections.defaultdict(list)

  def check(self, path: str, status: str, result: Dict) -> None:
    if status == 'bad':
      self._bad(path, result['kind'], result['message'])
      return
    notes = result['notes']
    if 'no_audio' in notes:
      if self.no_audio == 'bad':
        self._bad(
          path, 'no_audio', notes['no_audio'] + REFUSED_HINT['no_audio']
        )
        return
      self.counts['without audio given silence'] += 1
      logging.warning('%s%s', notes['no_audio'], KEPT_HINT['no_audio'])
    elif result['source_rate'] != self.sample_rate:
      self.rates[result['source_rate']].append(path)
    if 'short' in notes:
      if self.short == 'refuse':
        raise ClipError('short', notes['short'] + REFUSED_HINT['short'])
      self.counts['short padded'] += 1
      logging.warning('%s%s', notes['short'], KEPT_HINT['short'])

  def _bad(self, path: str, kind: str, message: str) -> None:
    if self.on_bad == 'refuse':
      raise ClipError(kind, message)
    self.counts[f'skipped {kind.replace("_", " ")}'] += 1
    self.dropped.add(path)
    logging.warning('%s (skipped)', message.rstrip('.'))

  def counts_text(self) -> str:
    if not self.counts:
      return 'none bad'
    return ', '.join(f'{n} {what}' for what, n in sorted(self.counts.items()))

  def log_rates(self) -> None:
    """Logs once per source rate which clips had their audio resampled."""
    for rate, files in sorted(self.rates.items()):
      logging.info(
        'audio of %d clip(s) resampled from %d Hz to %d Hz (e.g. %s).',
        len(files),
        rate,
        self.sample_rate,
        files[0],
      )
