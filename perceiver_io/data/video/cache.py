"""Decoded clips on disk, and decoding a list of files into them in parallel.

Why a cache: decoding a 10 s clip and resizing it costs far more than
reading 2.5 MB back, and a training run reads every clip once per epoch, so
only the first epoch (or the first run) decodes.

* One `.npz` per clip (uncompressed: it loads fastest) named by a hash of the
  file's absolute path, modification time and size and of the decoding
  settings: an edited file or other settings decode again, nothing is ever
  overwritten with other content. A file that cannot become a clip leaves a
  small `.bad.json` (its one-line reason), so it is not decoded again either.
* Disk: `num_frames * size**2 * 3 + 4 * audio_samples` bytes per clip, 2.53
  MB at the paper's 16 x 224 x 224 and 30,720 samples (Kinetics-700's 545k
  training clips: 1.4 TB; put `cache_dir` on a disk that holds it).
* Memory: each worker holds one file's decoded frames (width x height x 1.5
  bytes per frame, about 33 MB for a 10 s 340x256 clip at 25 fps) and its
  clip; the parent holds only the list of files. Reading a clip back holds
  that one clip.
* Workers are processes started with 'spawn' (forking a process that may
  hold JAX's threads can deadlock), so a script that decodes with
  `workers > 1` needs the `if __name__ == '__main__':` guard; each worker
  writes its clips itself, atomically, so nothing large crosses between
  processes, and several runs may share one cache.
"""

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from perceiver_io.data.video.decoding import ClipError
from perceiver_io.data.video.decoding import decode_clip

CACHE_VERSION = 1


def default_cache_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
    os.path.expanduser('~'), '.cache'
  )
  return os.path.join(base, 'perceiver_io', 'clips')


def cache_file(cache_dir: str, path: str, settings: Dict) -> str:
  """Where the clip of `path` decoded with `settings` lives (without the
  `.npz` / `.bad.json` ending)."""
  stat = os.stat(path) if os.path.exists(path) else None
  identity = [
    CACHE_VERSION,
    os.path.abspath(path),
    stat.st_mtime_ns if stat else None,
    stat.st_size if stat else None,
    sorted(settings.items()),
  ]
  key = hashlib.sha1(json.dumps(identity).encode()).hexdigest()
  return os.path.join(cache_dir, key[:2], key)


def save(base: str, clip: Dict[str, np.ndarray], info: Dict) -> None:
  os.makedirs(os.path.dirname(base), exist_ok=True)
  partial = f'{base}.{os.getpid()}.partial.npz'
  np.savez(partial, info=json.dumps(info), **clip)
  os.replace(partial, base + '.npz')


def load(base: str) -> Dict[str, np.ndarray]:
  with np.load(base + '.npz') as data:
    return dict(video=data['video'], audio=data['audio'])


def _save_bad(base: str, error: ClipError) -> None:
  os.makedirs(os.path.dirname(base), exist_ok=True)
  partial = f'{base}.{os.getpid()}.partial.json'
  with open(partial, 'w') as f:
    json.dump(dict(kind=error.kind, message=str(error)), f)
  os.replace(partial, base + '.bad.json')


def _cached(base: str) -> Optional[Tuple[str, Dict]]:
  """('ok', info) or ('bad', {kind, message}) if `base` was decoded."""
  try:
    with np.load(base + '.npz') as data:
      return 'ok', json.loads(str(data['info']))
  except (OSError, ValueError, KeyError):
    pass  # Not there, or damaged: decode again.
  try:
    with open(base + '.bad.json') as f:
      return 'bad', json.load(f)
  except (OSError, ValueError):
    return None


def decode_to_cache(path: str, base: str, settings: Dict) -> Tuple[str, Dict]:
  """Decodes one file into `base`.npz (the worker's job); ('ok', info) or
  ('bad', {kind, message}). Short clips are padded and files without sound
  get silence, both noted in `info['notes']`: the policy is the caller's,
  and the cached clip serves every policy."""
  try:
    clip, info = decode_clip(path, short='pad', no_audio='silence', **settings)
  except ClipError as e:
    _save_bad(base, e)
    return 'bad', dict(kind=e.kind, message=str(e))
  save(base, clip, info)
  return 'ok', info


class Progress:
  """Progress over clips as log lines with rate and ETA (the runner's
  format, experiments/progress.py, which this layer may not import; it
  also needs no JAX), at most every `every_s` seconds and at the end of a
  run that logged, and `callback(done, total)` after each clip."""

  def __init__(
    self,
    total: int,
    callback: Optional[Callable[[int, int], None]] = None,
    every_s: float = 10.0,
    desc: str = 'decoding',
  ):
    self.total, self.callback, self.every_s = total, callback, every_s
    self.desc, self.logged = desc, False
    self.done = 0
    self.start = self.last = time.monotonic()

  def step(self) -> None:
    self.done += 1
    if self.callback is not None:
      self.callback(self.done, self.total)
    now = time.monotonic()
    finished = self.done == self.total and self.logged
    if now - self.last >= self.every_s or finished:
      self.last, self.logged = now, True
      elapsed = now - self.start
      rate = self.done / max(elapsed, 1e-9)
      logging.info(
        '%s: %d/%d clips, %.3g clip/s, elapsed %s, ETA %s',
        self.desc,
        self.done,
        self.total,
        rate,
        _duration(elapsed),
        _duration((self.total - self.done) / max(rate, 1e-9)),
      )


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def decode_all(
  paths: Sequence[str],
  bases: Sequence[str],
  settings: Dict,
  *,
  workers: int,
  check: Callable[[str, str, Dict], None],
  progress: Optional[Callable[[int, int], None]] = None,
) -> Tuple[List[Tuple[str, Dict]], int]:
  """Results of `decode_to_cache` for every path, reading the cache first,
  and how many were decoded (not read from the cache).

  `check(path, status, result)` sees each result as it arrives (in any
  order with several workers); if it raises, the work not started yet is
  cancelled and the error propagates.
  """
  results: List[Optional[Tuple[str, Dict]]] = [None] * len(paths)
  todo = []
  for i, base in enumerate(bases):
    results[i] = _cached(base)
    if results[i] is None:
      todo.append(i)
    else:
      check(paths[i], *results[i])
  tracker = Progress(len(todo), progress)
  if workers <= 1 or len(todo) <= 1:
    for i in todo:
      results[i] = decode_to_cache(paths[i], bases[i], settings)
      tracker.step()
      check(paths[i], *results[i])
    return results, tracker.done
  context = multiprocessing.get_context('spawn')
  pool = concurrent.futures.ProcessPoolExecutor(workers, context)
  try:
    futures = {
      pool.submit(decode_to_cache, paths[i], bases[i], settings): i
      for i in todo
    }
    for future in concurrent.futures.as_completed(futures):
      i = futures[future]
      try:
        results[i] = future.result()
      except concurrent.futures.process.BrokenProcessPool:
        raise RuntimeError(
          f'a decoding worker died on {paths[i]} (out of memory, or a script '
          "without the `if __name__ == '__main__':` guard that 'spawn' "
          'workers need); workers=1 decodes in this process.'
        ) from None
      tracker.step()
      check(paths[i], *results[i])
  finally:
    pool.shutdown(cancel_futures=True)
  return results, tracker.done
