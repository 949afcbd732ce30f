"""The evaluate and predict launchers, run as users run them (fast checks).

Why: the end-to-end runs that exercise every launcher are in the slow tier;
this keeps the launchers' own code (flags, the one-line error policy, not
creating what they were pointed at) in the fast tier.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
  'launcher,extra',
  [('experiments.evaluate', []), ('experiments.predict', ['some text'])],
)
def test_a_folder_that_is_no_workdir_is_one_line_and_stays_absent(
  launcher, extra, tmp_path, subprocess_env
):
  missing = tmp_path / 'not_a_run'
  proc = subprocess.run(
    [sys.executable, '-m', launcher, f'--workdir={missing}', *extra],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
    f'error: {missing}/config.json not found: {str(missing)!r} is not a '
    'workdir written by experiments.train (expected config.json and '
    'checkpoints/ in it).'
  ]
  assert not missing.exists()
