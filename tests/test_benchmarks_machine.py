"""What the benchmark results say about the machine: its CPU, GEMM rate and
a GPU's measured ceilings.

Why: a result is only comparable with another from the same hardware, and a
step's speed is read against what the machine can do: the CPU's family,
model and vector ISA travel with every result, the GEMM script must have
both libraries compute the same products, and a card's rates must be the
counted work over the measured times.
"""

import json

import numpy as np
import pytest

from benchmarks import runner


def test_describe_cpu_names_family_model_and_vector_isa():
  # The dev machine's name alone ('AMD EPYC') hid a hardware change; results
  # carry family, model and the widest vector ISA.
  cpuinfo = (
    'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n'
    'model\t\t: 2\nmodel name\t: AMD EPYC\n'
    'flags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n'
    'processor\t: 1\nmodel name\t: Other\n'
  )
  got = runner.describe_cpu(cpuinfo)
  assert got['cpu'] == 'AMD EPYC (family 26, model 2, avx512)'
  assert (got['cpu_family'], got['cpu_model'], got['cpu_isa']) == (
    '26',
    '2',
    'avx512',
  )
  assert (
    runner.describe_cpu('model name\t: X\nflags\t: sse2\n')['cpu_isa']
    == 'no avx2'
  )
  assert 'cpu' in runner.machine_info()  # This machine's /proc/cpuinfo.


def test_gemm_benchmark_compares_the_same_products(tmp_path):
  # Both libraries must compute the same product in each form ('tn' is
  # x^T @ dy), and the script writes its table.
  from benchmarks import gemm  # pylint: disable=g-import-not-at-top

  for form in ('nn', 'tn'):
    fns = gemm.gemm_callables(48, 32, 16, form)
    got, want = np.asarray(fns['xla']()), fns['torch']().numpy()
    assert got.shape == (48, 16)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert (
    gemm.main(
      [
        '--sizes',
        '64x32x16',
        '--rounds',
        '1',
        '--calls',
        '1',
        '--out',
        str(tmp_path),
      ]
    )
    == 0
  )
  doc = json.loads((tmp_path / 'gemm.json').read_text())
  assert [r['form'] for r in doc['rows']] == ['nn', 'tn']
  assert all(r['xla_gflops'] > 0 and r['torch_gflops'] > 0 for r in doc['rows'])
  assert '| 64 x 32 x 16 | tn |' in (tmp_path / 'gemm.md').read_text()
  with pytest.raises(ValueError, match='MxKxN'):
    gemm.parse_size('64x32')


def test_gpu_ceilings_smoke_writes_both_rates(tmp_path):
  from benchmarks import gpu_ceilings

  assert gpu_ceilings.main(['--smoke', '--out', str(tmp_path)]) == 0
  with open(tmp_path / 'ceilings.json') as f:
    doc = json.load(f)
  assert doc['bf16_matmul_tflops'] > 0 and doc['copy_gbytes_per_s'] > 0
  # The rates are the counted work over the measured medians.
  assert doc['bf16_matmul_tflops'] == pytest.approx(
    2 * doc['matmul_n'] ** 3 / doc['matmul_median_s'] / 1e12
  )
  assert doc['copy_gbytes_per_s'] == pytest.approx(
    2 * doc['copy_mib'] * 2**20 / doc['copy_median_s'] / 1e9
  )
