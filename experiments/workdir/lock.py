"""One training run per workdir: an exclusive lock, and no trace if refused.

Why: two runs writing one workdir rename each other's Orbax temporary
folders away, wait on each other's timeouts and log every step twice. The
training run holds `fcntl.flock` on `<workdir>/.lock` for its whole life and
writes who it is into the file (host, PID, the PID's start time, start time,
command), so a second run is refused at once, naming the holder.

* A dead holder: the kernel drops a `flock` with its process, so a killed
  run leaves only the file. Its recorded PID is gone (or is another
  process now: the start time differs) on this host, so the lock is taken
  over with a warning.
* Another host's lock is refused even when `flock` succeeds: on network
  file systems `flock` may be local to each client (NFS without lock
  support, some FUSE and CIFS mounts), so the file's contents are the only
  sign of a run elsewhere. This host cannot tell whether that run is alive;
  the error names the file to remove if it is gone.
* Where `flock` is refused outright (ENOLCK, EOPNOTSUPP), the holder
  checks on the file's contents are the lock, with a warning that two runs
  starting in the same instant could both pass them.
* Multi-host runs: process 0 takes the lock for the whole job (the other
  processes take none: they are the same run) and tells the others through
  JAX's coordination service whether it got it; if not, every process stops
  with its error, none is left waiting.

The file is removed when the run ends, so a finished workdir holds none. A
refused start also removes the directories it created (`claim`), so it
leaves the file system as it found it. Readers (evaluate, predict) take no
lock: Orbax publishes a step by renaming its finished temporary folder, so
they only ever see whole steps, and they can read a finished step while a
run trains; a step that does not read is skipped
(`experiments.workdir.newest_intact_variables`).
"""

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

LOCK_FILE = '.lock'


class WorkdirBusyError(ValueError):
  """Another run holds the workdir."""


def process_start(pid: int) -> Optional[str]:
  """The start time of `pid` in clock ticks since boot (Linux), else None:
  with the PID it tells a live holder from a new process that reuses it."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Someone else's live process.
  return True


def holder_is_alive(holder: Dict[str, Any]) -> bool:
  """Whether the run recorded in a lock file still runs (this host only)."""
  try:
    pid = int(holder.get('pid', -1))
  except (TypeError, ValueError):  # Not a lock file we wrote.
    return False
  if pid <= 0 or not _pid_alive(pid):
    return False
  recorded, now = holder.get('pid_start'), process_start(pid)
  return recorded is None or now is None or recorded == now


def describe(holder: Dict[str, Any]) -> str:
  """'PID 123 on host h (started 2026-01-01 12:00:00 UTC: python -m ...)'."""
  if not holder:
    return 'another process (it has not written its name yet)'
  started = time.strftime(
    '%Y-%m-%d %H:%M:%S UTC', time.gmtime(float(holder.get('time', 0)))
  )
  command = str(holder.get('command', ''))[:120]
  return (
    f'PID {holder.get("pid")} on host {holder.get("host")} (started '
    f'{started}{": " + command if command else ""})'
  )


def _read_holder(fd: int) -> Dict[str, Any]:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 65536)
    holder = json.loads(data.decode('utf-8')) if data.strip() else {}
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}


def _me() -> Dict[str, Any]:
  return {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'pid_start': process_start(os.getpid()),
    'time': time.time(),
    'command': ' '.join(sys.argv)[:1000],
  }


class WorkdirLock:
  """The exclusive lock on `workdir` (which must exist); `release` ends it."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.workdir = workdir
    self._fd = None

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises WorkdirBusyError naming its holder."""
    for _ in range(100):  # Retries only while holders come and go.
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        if self._try_lock(fd) and self._still_the_file(fd):
          self._take(fd, _read_holder(fd))
          return self
      except BaseException:
        os.close(fd)
        raise
      os.close(fd)
    raise WorkdirBusyError(
      f'cannot lock workdir {self.workdir}: {self.path} keeps changing '
      '(several runs starting at once?); try again.'
    )

  def _try_lock(self, fd: int) -> bool:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      raise self._busy(_read_holder(fd)) from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
        raise
      reason = os.strerror(e.errno)
    logging.warning(
      'workdir %s: this file system refuses flock (%s); the lock relies '
      'on %s alone, which two runs starting in the same instant can both '
      'pass.',
      self.workdir,
      reason,
      self.path,
    )
    return True

  def _still_the_file(self, fd: int) -> bool:
    """Whether `fd` is still the lock file's path: a holder that ended
    between our open and our flock removed it (we locked an orphan)."""
    try:
      return os.stat(self.path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      return False

  def _take(self, fd: int, previous: Dict[str, Any]) -> None:
    if previous:
      if previous.get('host') != socket.gethostname():
        raise WorkdirBusyError(
          f'workdir {self.workdir} is locked by {describe(previous)}; this '
          'host cannot tell whether that run is still going. If it is '
          f'not, remove {self.path} and run again; else use another '
          '--workdir.'
        )
      if previous.get('pid') == os.getpid():
        pass  # This process's own earlier lock.
      elif holder_is_alive(previous):
        raise self._busy(previous)  # flock did not see it (network FS).
      else:
        logging.warning(
          'workdir %s: taking over the lock of %s, which is no longer running.',
          self.workdir,
          describe(previous),
        )
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(_me(), sort_keys=True) + '\n').encode('utf-8'))
    os.fsync(fd)
    self._fd = fd

  def _busy(self, holder: Dict[str, Any]) -> WorkdirBusyError:
    return WorkdirBusyError(
      f'workdir {self.workdir} is in use by {describe(holder)}. Wait for '
      'that run to end, or stop it, or use another --workdir.'
    )

  def release(self) -> None:
    """Removes the file while still holding it, then unlocks."""
    if self._fd is None:
      return
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path)
    os.close(self._fd)
    self._fd = None


def _created_dirs(workdir: str) -> List[str]:
  """The directories `os.makedirs(workdir)` would create, deepest first."""
  created, path = [], os.path.abspath(workdir)
  while not os.path.exists(path):
    created.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return created


def _job() -> Tuple[int, Any]:
  """(this process's index, the job's key-value client or None), without
  making JAX's backend (the launchers decide process settings before it
  exists: `process_tuning`)."""
  if 'jax' not in sys.modules:
    return 0, None
  import jax  # pylint: disable=g-import-not-at-top

  if not jax.distributed.is_initialized():
    return 0, None
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top

    state = distributed.global_state
    return int(state.process_id), state.client
  except (ImportError, AttributeError):  # Private API moved.
    return jax.process_index(), None


_CLAIMS = itertools.count()  # Every process of a job claims in step.
AGREE_TIMEOUT_S = 600


def _take_for_the_job(workdir: str) -> Optional[WorkdirLock]:
  """Process 0 makes and locks the workdir and tells the other processes
  how it went through the job's key-value store; they raise its error too.
  Why before JAX's backend exists: making it waits for every process, so a
  process 0 that stopped here would leave the others hanging."""
  index, client = _job()
  key = f'experiments/workdir_lock/{next(_CLAIMS)}'
  if index != 0:
    if client is not None:
      outcome = client.blocking_key_value_get(key, AGREE_TIMEOUT_S * 1000)
      if outcome != 'ok':
        raise WorkdirBusyError(f'process 0 did not start: {outcome}')
    return None
  try:
    make(workdir)
    lock = WorkdirLock(workdir).acquire()
  except Exception as e:
    if client is not None:
      client.key_value_set(key, str(e) or type(e).__name__)
    raise
  if client is not None:
    client.key_value_set(key, 'ok')
  return lock


@contextlib.contextmanager
def claim(workdir: str, transient: List[str] = ()) -> Iterator[Any]:
  """Creates and locks `workdir` for a run; releases the lock at the end.

  If the body raises before calling the yielded `started()`, everything the
  start created is removed again when empty: the directories that did not
  exist (the workdir, its parents, `transient` subdirectories such as an
  empty checkpoints/), so a refused start leaves no trace. Files are never
  removed. `make(workdir)` creates the directory (it says in one line why
  it cannot).

  Yields:
    A `started` function: call it once the run's state exists.
  """
  created = _created_dirs(workdir)
  extra = [
    os.path.join(workdir, name)
    for name in transient
    if not os.path.exists(os.path.join(workdir, name))
  ]
  lock, done = None, [False]
  try:
    lock = _take_for_the_job(workdir)
    yield lambda: done.__setitem__(0, True)
  except BaseException:
    if lock is not None:
      lock.release()
      lock = None
    if not done[0]:
      for path in extra + created:  # Deepest first.
        with contextlib.suppress(OSError):  # Not empty: keep it.
          os.rmdir(path)
    raise
  finally:
    if lock is not None:
      lock.release()


def make(workdir: str) -> None:
  """Creates `workdir`, or says in one line why it cannot be used."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(
      f'cannot use --workdir={workdir}: {e.strerror or e} '
      f'({type(e).__name__}); choose a writable directory.'
    ) from e
