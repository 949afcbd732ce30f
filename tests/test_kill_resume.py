"""SIGKILL at random moments, checkpoint writes included: the rerun resumes
from an intact step and ends bit-identical to an uninterrupted run.

The full figure (20 kills) comes from `python -m benchmarks.kill_resume`;
this runs three of its trials (one timed kill, one during a write, one
timed), a few minutes of subprocesses.
"""

import numpy as np
import pytest

from benchmarks import kill_resume


@pytest.mark.slow
def test_three_kills_resume_to_the_uninterrupted_parameters(tmp_path):
  result = kill_resume.run(kills=3, seed=0, steps=6, root=str(tmp_path))
  failed = [r for r in result['records'] if not r['survived']]
  assert not failed, failed
  assert result['survived'] == 3
  write_kill = result['records'][1]
  assert write_kill['killed'].startswith('at the write of checkpoint')


def test_a_wrong_rerun_is_caught():
  """The comparison the kill test rests on tells parameters apart."""
  a = [np.zeros(3, np.float32), np.ones(2, np.float32)]
  b = [np.zeros(3, np.float32), np.nextafter(np.ones(2, np.float32), 2)]
  assert kill_resume.bit_identical(a, [x.copy() for x in a])
  assert not kill_resume.bit_identical(a, b)
  assert not kill_resume.bit_identical(a, a[:1])
  assert not kill_resume.bit_identical(a, [a[0].astype(np.float64), a[1]])
