"""JAX's persistent compilation cache for runs: a restart loads its steps.

Why: the train step of a large preset compiles for tens of seconds to
minutes, and every resume after a preemption or crash paid that again. JAX
keeps compiled executables on disk, keyed by the program, the compile
options, the devices and the JAX/XLA versions, so a restart of the same run
on the same topology loads them instead (another topology or an edited
model is another key and compiles afresh). Only programs that took at least
`jax_persistent_cache_min_compile_time_secs` (1 s by default) are kept, and
in a multi-process run only process 0 writes (JAX's rules).

`config.compilation_cache`: 'auto' (the default) is JAX's own setting when
the environment gives one (``JAX_COMPILATION_CACHE_DIR``), else
``WORKDIR/compilation_cache``, which a resume finds wherever the workdir is
mounted; a path shares one cache between runs; '' turns it off. As JAX
warns, a cache directory is trusted code: do not point it at a directory
others may write.
"""

import contextlib
import logging
import os
from typing import Dict, Iterator, Optional

import jax
from jax.experimental.compilation_cache import compilation_cache

CACHE_DIR = 'compilation_cache'
_HIT = '/jax/compilation_cache/cache_hits'


def directory(config, workdir: str) -> Optional[str]:
  """The cache directory `config.compilation_cache` asks for, or None."""
  choice = str(config.get('compilation_cache', 'auto') or '').strip()
  if not choice or choice.lower() in ('none', 'off'):
    return None
  if choice == 'auto':
    return jax.config.jax_compilation_cache_dir or os.path.join(
      workdir, CACHE_DIR
    )
  return choice


def _use(path: Optional[str]) -> None:
  """Points JAX's cache at `path` (None: off). JAX opens its cache once per
  process, so a different directory needs `reset_cache` first."""
  if path != jax.config.jax_compilation_cache_dir:
    compilation_cache.reset_cache()
    compilation_cache.set_cache_dir(path)


class Scope:
  """`enable` for one run; the process's previous setting comes back when
  the `scope` block ends (a notebook's next run gets its own directory)."""

  def enable(self, config, workdir: str) -> Optional[str]:
    """Caches what this process compiles from now on; returns the
    directory or None."""
    path = directory(config, workdir)
    _use(path)
    if path is not None:
      logging.info('compilation cache: %s', path)
    return path


@contextlib.contextmanager
def scope() -> Iterator[Scope]:
  previous = jax.config.jax_compilation_cache_dir
  try:
    yield Scope()
  finally:
    _use(previous)


@contextlib.contextmanager
def watch(path: Optional[str]) -> Iterator[Dict[str, int]]:
  """Counts, inside the block, the programs loaded from the cache
  (`jax.monitoring` events) and the entries written to `path` (JAX keeps
  only programs that took long enough to compile): yields {'loaded',
  'kept'}, filled when the block ends."""
  seen = {'loaded': 0, 'kept': 0}
  before = _entries(path)

  def listener(event: str, **_) -> None:
    if event == _HIT:
      seen['loaded'] += 1

  jax.monitoring.register_event_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_listener(listener)
    seen['kept'] = len(_entries(path) - before)


def _entries(path: Optional[str]) -> set:
  return set(os.listdir(path)) if path and os.path.isdir(path) else set()
