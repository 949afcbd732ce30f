r"""Kill test: SIGKILL a tiny training run at random moments, rerun, compare.

  python -m benchmarks.kill_resume --kills=20 --seed=0 \
      --out=benchmarks/results/cpu/kill_resume.json

Why: "a run resumes by itself after a crash and ends bit-identical to an
uninterrupted one" is only worth saying if a crash at any moment, a
checkpoint write included, keeps it true. Each trial starts the tiny
quickstart run (a checkpoint every step) in a fresh workdir, kills it with
SIGKILL, reruns the same command to the end and checks that

  * the rerun exits 0, taking over the dead run's lock if it left one;
  * it resumed from a step that was intact on disk after the kill (or from
    the start, if none was saved yet);
  * its final parameters are bit-identical to an uninterrupted run's;
  * metrics.jsonl holds one train record per step.

Half the kills land at a uniformly random time of the run's training part
(from just before its first checkpoint write to just after its last, as
timed on an uninterrupted run); the other half as soon as Orbax has begun writing a
random step (its `*.orbax-checkpoint-tmp*` folder appears), so writes are
hit on purpose. A trial survives when
every check passes; the summary is survived / tried.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = '.orbax-checkpoint-tmp'


def train_command(workdir: str, steps: int) -> List[str]:
  return [
    sys.executable,
    '-m',
    'experiments.train',
    '--config=configs/quickstart.py:tiny',
    f'--workdir={workdir}',
    f'--config.num_train_steps={steps}',
    '--config.checkpoint_every_steps=1',
    f'--config.eval_every_steps={steps}',
    '--config.predict_examples=0',
  ]


def environment(cache_dir: str) -> Dict[str, str]:
  env = dict(os.environ)
  env.update(
    JAX_PLATFORMS='cpu',
    PYTHONPATH=os.pathsep.join(
      [REPO] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    ),
    JAX_COMPILATION_CACHE_DIR=cache_dir,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    TF_CPP_MIN_LOG_LEVEL='2',
  )
  return env


def final_params(workdir: str) -> List[np.ndarray]:
  """The parameters and model state of the workdir's latest step."""
  import jax  # pylint: disable=g-import-not-at-top

  from experiments import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  run = workdir_lib.load_workdir(workdir)
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(run.variables)]


def bit_identical(a: List[np.ndarray], b: List[np.ndarray]) -> bool:
  return len(a) == len(b) and all(
    x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    for x, y in zip(a, b)
  )


def on_disk(workdir: str) -> Dict[str, Any]:
  """Finished steps, Orbax temporary folders and the lock file, now."""
  ckpt = os.path.join(workdir, 'checkpoints')
  names = os.listdir(ckpt) if os.path.isdir(ckpt) else []
  return {
    'steps': sorted(int(n) for n in names if n.isdigit()),
    'writing': sorted(n for n in names if TMP_MARK in n),
    'lock_left': os.path.exists(os.path.join(workdir, '.lock')),
  }


def kill_during_write(proc, workdir: str, nth: int, limit_s: float) -> str:
  """Kills `proc` once the `nth` new Orbax temporary folder appears."""
  ckpt = os.path.join(workdir, 'checkpoints')
  seen = set()
  deadline = time.monotonic() + limit_s
  while proc.poll() is None and time.monotonic() < deadline:
    if os.path.isdir(ckpt):
      try:
        seen.update(n for n in os.listdir(ckpt) if TMP_MARK in n)
      except FileNotFoundError:
        pass
      if len(seen) >= nth:
        proc.send_signal(signal.SIGKILL)
        return f'at the write of checkpoint {len(seen)}'
    time.sleep(0.002)
  proc.send_signal(signal.SIGKILL)
  return 'after the run had ended (write not seen)'


def trial(
  index: int,
  rng: random.Random,
  root: str,
  steps: int,
  env: Dict[str, str],
  reference: List[np.ndarray],
  window: tuple,
) -> Dict[str, Any]:
  workdir = os.path.join(root, f'trial{index}')
  command = train_command(workdir, steps)
  proc = subprocess.Popen(
    command,
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  if index % 2 == 0:
    delay = rng.uniform(*window)
    time.sleep(delay)
    moment = f'at {delay:.2f} s'
    if proc.poll() is not None:
      moment += ' (after the run had ended)'
    proc.send_signal(signal.SIGKILL)
  else:
    moment = kill_during_write(
      proc, workdir, rng.randint(1, steps), window[1] * 2
    )
  proc.wait()
  after_kill = on_disk(workdir) if os.path.isdir(workdir) else {}
  rerun = subprocess.run(
    command, cwd=REPO, env=env, capture_output=True, text=True, check=False
  )
  problems = []
  if rerun.returncode != 0:
    problems.append(f'rerun exited {rerun.returncode}: {rerun.stderr[-300:]}')
  resumed = re.findall(r'resuming from \S+ step (\d+)\.', rerun.stderr)
  resumed_from = int(resumed[-1]) if resumed else 0
  if resumed and resumed_from not in after_kill.get('steps', []):
    problems.append(f'resumed from step {resumed_from}, not on disk')
  took_over = 'taking over the lock' in rerun.stderr
  if after_kill.get('lock_left') and not took_over:
    problems.append('a lock was left but the rerun did not say it took it')
  if rerun.returncode == 0:
    if not bit_identical(final_params(workdir), reference):
      problems.append('final parameters differ from the uninterrupted run')
    train = [
      json.loads(line)['step']
      for line in open(os.path.join(workdir, 'metrics.jsonl'))
      if '"train_loss"' in line
    ]
    if train != list(range(1, steps + 1)):
      problems.append(f'metrics.jsonl train steps {train}')
  end = on_disk(workdir)
  if end['lock_left']:
    problems.append('the finished rerun left its lock file')
  record = {
    'trial': index,
    'killed': moment,
    'after_kill': after_kill,
    'killed_running': 'after the run had ended' not in moment,
    'killed_during_write': bool(after_kill.get('writing')),
    'resumed_from': resumed_from,
    'took_over_lock': took_over,
    'moved_aside': 'moved it to' in rerun.stderr,
    'temporary_folders_left': end['writing'],
    'problems': problems,
    'survived': not problems,
  }
  shutil.rmtree(workdir, ignore_errors=True)
  return record


def run(
  kills: int, seed: int = 0, steps: int = 16, root: Optional[str] = None
) -> Dict[str, Any]:
  """`kills` trials; returns every record and survived / tried."""
  if root is None:
    with tempfile.TemporaryDirectory(prefix='kill_resume-') as tmp:
      return run(kills, seed, steps, tmp)
  env = environment(os.path.join(root, 'jax_cache'))
  reference_dir = os.path.join(root, 'reference')
  subprocess.run(  # Fills the compilation cache for the timed run.
    train_command(os.path.join(root, 'warmup'), steps),
    cwd=REPO,
    env=env,
    capture_output=True,
    check=True,
  )
  started = time.monotonic()
  proc = subprocess.Popen(
    train_command(reference_dir, steps),
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  writes = []  # When a checkpoint write was seen; startup comes before.
  while proc.poll() is None:
    if on_disk(reference_dir).get('writing'):
      writes.append(time.monotonic() - started)
    time.sleep(0.002)
  if proc.returncode != 0:
    raise RuntimeError(f'the uninterrupted run exited {proc.returncode}.')
  run_s = time.monotonic() - started
  # Timed kills fall in the training part of the run: from a little before
  # its first checkpoint write to just after its last one.
  window = (0.8 * writes[0], writes[-1] + 0.5) if writes else (0.0, run_s)
  reference = final_params(reference_dir)
  rng = random.Random(seed)
  records = []
  for i in range(kills):
    records.append(trial(i, rng, root, steps, env, reference, window))
    r = records[-1]
    print(
      f'trial {i}: killed {r["killed"]}, on disk {r["after_kill"]}, '
      f'resumed from {r["resumed_from"]}: '
      + ('survived' if r['survived'] else f'FAILED {r["problems"]}'),
      flush=True,
    )
  return {
    'kills': kills,
    'seed': seed,
    'steps': steps,
    'uninterrupted_run_s': round(run_s, 2),
    'timed_kill_window_s': [round(t, 2) for t in window],
    'survived': sum(r['survived'] for r in records),
    'killed_running': sum(r['killed_running'] for r in records),
    'killed_during_write': sum(r['killed_during_write'] for r in records),
    'records': records,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--kills', type=int, default=20)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--steps', type=int, default=16)
  p.add_argument('--out', default='', help='JSON file for every trial.')
  args = p.parse_args(argv)
  result = run(args.kills, args.seed, args.steps)
  print(
    f'{result["survived"]}/{result["kills"]} kills survived '
    f'({result["killed_running"]} killed while running, '
    f'{result["killed_during_write"]} during a checkpoint write; '
    f'uninterrupted run {result["uninterrupted_run_s"]} s).'
  )
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)
      f.write('\n')
  return 0 if result['survived'] == result['kills'] else 1


if __name__ == '__main__':
  sys.exit(main())
