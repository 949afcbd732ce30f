"""scaling.py: time and memory against input length and output queries.

Why: "scales linearly" is a claim from a fit; the fit must recover an
exactly linear series, and a sweep re-run with `--keep_from` must keep the
other sweep's rows and say they are from an earlier run.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import scaling

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scaling_linearity_of_exactly_linear_points():
  # t = 2 us * n + 0.1 s: time per element falls, marginal time is constant.
  points = [(n, 2e-6 * n + 0.1) for n in (1000, 2000, 8000)]
  got = scaling.linearity(points)
  assert got['marginal_ratio_last_first'] == pytest.approx(1.0)
  assert got['fit_slope_s_per_element'] == pytest.approx(2e-6)
  assert got['fit_r2'] == pytest.approx(1.0)
  assert got['per_element_ratio_last_first'] == pytest.approx(
    (0.116 / 8000) / (0.102 / 1000)
  )
  assert scaling.linearity(points[:1]) is None


@pytest.mark.slow
def test_scaling_smoke_reruns_one_sweep_keeping_the_other(tmp_path):
  # Two tiny runs: the inputs sweep, then the queries sweep with
  # --keep_from the first: one table and plot with both, both dates noted.
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')

  def run(*args):
    proc = subprocess.run(
      [
        sys.executable,
        '-m',
        'benchmarks.scaling',
        '--smoke',
        '--series',
        'ours',
        '--repeats',
        '1',
        *args,
      ],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

  first, second = tmp_path / 'first', tmp_path / 'second'
  run(
    '--sweeps',
    'inputs',
    '--input_modes',
    'infer',
    '--inputs',
    '256,1024',
    '--out',
    str(first),
  )
  run(
    '--sweeps',
    'queries',
    '--queries',
    '64,256',
    '--out',
    str(second),
    '--keep_from',
    str(first),
  )
  doc = json.loads((second / 'scaling.json').read_text())
  assert {(r['sweep'], r['size'], r['status']) for r in doc['results']} == {
    ('inputs', 256, 'ok'),
    ('inputs', 1024, 'ok'),
    ('queries', 64, 'ok'),
    ('queries', 256, 'ok'),
  }
  assert doc['kept_from']['sweeps'] == ['inputs']
  assert {a['sweep'] for a in doc['linearity']} == {'inputs', 'queries'}
  assert (
    'sweep(s) are from an earlier run' in (second / 'scaling.md').read_text()
  )
  assert (second / 'scaling.png').stat().st_size > 0
  with pytest.raises(ValueError, match='cannot read an earlier scaling.json'):
    scaling.keep_earlier_sweeps(
      {'results': []}, str(tmp_path / 'none'), ['inputs']
    )
