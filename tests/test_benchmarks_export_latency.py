"""benchmarks.export_latency runs every side back to back (smoke sizes)."""

import pytest

from benchmarks import export_latency


@pytest.mark.slow
def test_every_side_is_timed_for_both_workloads():
  rows = export_latency.main(
    ['--sizes=smoke', '--batches=2', '--repeats=2', '--no_compile']
  )
  sides = {(r['workload'], r['side']) for r in rows}
  for workload in ('text_classifier', 'imagenet_fourier'):
    for side in ('jax_jit', 'stablehlo_artifact', 'hf_torch_eager'):
      assert (workload, side) in sides
  assert all(r['median_ms'] > 0 and r['batch'] == 2 for r in rows)
  assert all(r['repeats'] == 2 for r in rows)


def test_bad_arguments_are_refused():
  with pytest.raises(SystemExit, match='must be positive'):
    export_latency.main(['--batches=0'])


def test_unknown_workload_is_refused_naming_the_choices():
  with pytest.raises(SystemExit, match='choose from text,image_fourier'):
    export_latency.main(['--workloads=text,audio'])
