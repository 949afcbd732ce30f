"""benchmarks.export_compat's two directions, with this JAX on both sides
(the script itself runs them against an older JAX's environment)."""

import sys

import pytest

from benchmarks import export_compat


@pytest.mark.slow
def test_an_artifact_written_by_another_process_loads_and_matches_numpy(
  tmp_path,
):
  outcome = export_compat.older_to_newer(sys.executable, str(tmp_path))
  assert outcome.startswith('loaded (calling convention'), outcome
  assert float(outcome.rsplit(' ', 1)[1]) < 1e-5


def test_a_missing_interpreter_is_reported_not_raised(tmp_path):
  outcome = export_compat.older_to_newer(
    sys.executable + '-missing', str(tmp_path)
  )
  assert outcome.startswith('the older JAX could not run'), outcome
