"""profile_ours.py and the HLO readers it shares with the GPU roofline.

Why: a GPU profile is taken on a brief lease and read afterwards, so its
parsing is checked here on a hand-written trace in the GPU profiler's layout
(kernels by stream line, the derived lines not counted twice, idle time
between kernels) and on compiled HLO (bytes and matmul FLOPs per op, their
rates and bounds at measured ceilings); the CPU profile runs end to end.
"""

import json

import jax
import pytest

_GPU_TRACE = """
planes {
  id: 1
  name: "/device:GPU:0"
  lines { id: 1 name: "Stream #13(Compute)" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000
             stats { metadata_id: 1 ref_value: 11 } }
    events { metadata_id: 2 offset_ps: 8000000 duration_ps: 2000000
             stats { metadata_id: 1 ref_value: 12 } } }
  lines { id: 2 name: "Stream #14(Compute)" timestamp_ns: 1000
    events { metadata_id: 3 offset_ps: 4000000 duration_ps: 2000000
             stats { metadata_id: 1 ref_value: 13 } } }
  lines { id: 3 name: "XLA Ops" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 5000000 } }
  lines { id: 4 name: "Async XLA Ops" timestamp_ns: 1000
    events { metadata_id: 2 offset_ps: 0 duration_ps: 9000000 } }
  lines { id: 5 name: "CUPTI overhead" timestamp_ns: 1000
    events { metadata_id: 2 offset_ps: 0 duration_ps: 7000000 } }
  event_metadata { key: 1 value { id: 1 name: "sm90_xmma_gemm_bf16bf16" } }
  event_metadata { key: 2 value { id: 2 name: "loop_add_fusion" } }
  event_metadata { key: 3 value { id: 3 name: "cudnn_generated_fort_native_sdpa" } }
  stat_metadata { key: 1 value { id: 1 name: "hlo_op" } }
  stat_metadata { key: 11 value { id: 11 name: "cublas-gemm.1" } }
  stat_metadata { key: 12 value { id: 12 name: "fusion.7" } }
  stat_metadata { key: 13 value { id: 13 name: "custom-call.3" } }
}
planes { id: 2 name: "/host:CPU"
  lines { id: 1 name: "tf_XLAPjRtCpuClient" timestamp_ns: 0
    events { metadata_id: 1 offset_ps: 0 duration_ps: 99000000 } }
  event_metadata { key: 1 value { id: 1 name: "host_side_work" } } }
"""


def test_profile_summarises_gpu_kernels_by_op_category_and_idle_time():
  # A hand-written trace in the GPU profiler's layout: kernels on stream
  # lines named by kernel, each with the HLO op that launched it. The
  # derived 'XLA Ops' and 'Async XLA Ops' lines, the tracer's overhead and
  # the host plane must not count; busy time is the union of kernel
  # intervals (0-6 us, 8-10 us) over the 10 us span.
  from benchmarks import profile_ours

  data = jax.profiler.ProfileData.from_text_proto(_GPU_TRACE)
  got = profile_ours.summarise_trace(data)
  assert got['device'] == 'gpu'
  assert dict(got['ops']) == {
    'cublas-gemm.1': 5000,
    'fusion.7': 2000,
    'custom-call.3': 2000,
  }
  assert dict(got['categories']) == {
    'matmul': 5000,
    'attention (cuDNN)': 2000,
    'other fusions (elementwise, reductions)': 2000,
  }
  assert got['busy_ns'] == 8000 and got['span_ns'] == 10000


_HLO = """
ENTRY %main (x: bf16[64,128], w: bf16[128,256]) -> bf16[64,256] {
  %x = bf16[64,128]{1,0} parameter(0), metadata={op_name="x"}
  %w = bf16[128,256]{1,0} parameter(1), metadata={op_name="w"}
  %cublas-gemm.1 = (bf16[64,256]{1,0}, s8[1024]{0}) custom-call(%x, %w), custom_call_target="__cublas$gemm", metadata={op_name="jit(f)/dot_general"}, backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}
  %gte = bf16[64,256]{1,0} get-tuple-element(%cublas-gemm.1), index=0
  ROOT %fusion.7 = f32[64,256]{1,0} fusion(%gte), kind=kLoop, calls=%c, metadata={op_name="jit(f)/convert(x)"}
}
"""


def test_op_bytes_count_output_and_operands_once():
  from benchmarks import hlo_analysis

  got = hlo_analysis.op_bytes_from_hlo(_HLO)
  # The gemm: its tuple output (result and workspace) and both operands.
  assert got['cublas-gemm.1'] == (
    64 * 256 * 2 + 1024 + 64 * 128 * 2 + 128 * 256 * 2
  )
  assert got['fusion.7'] == 64 * 256 * 4 + 64 * 256 * 2
  # The same on XLA's own compiled text: an elementwise op on f32[1000].
  compiled = jax.jit(lambda v: v * 2 + 1).lower(jax.numpy.ones(1000)).compile()
  moved = [
    b
    for op, b in hlo_analysis.op_bytes_from_hlo(compiled.as_text()).items()
    if b and 'fusion' in op
  ]
  assert moved == [8000], moved


def test_matmul_flops_from_gemm_calls_fusions_and_dots():
  from benchmarks import hlo_analysis

  # A cuBLAS call: contracting dimensions from its backend config.
  assert hlo_analysis.op_flops_from_hlo(_HLO) == {
    'cublas-gemm.1': 2 * 64 * 256 * 128
  }

  # XLA's own compiled text: fusions holding a dot, batched dots included.
  def f(x, w, q, k):
    return jax.nn.gelu(x @ w), jax.numpy.einsum('bhtd,bhsd->bhts', q, k)

  bf16 = jax.numpy.bfloat16
  compiled = (
    jax.jit(f)
    .lower(
      jax.numpy.ones((64, 128), bf16),
      jax.numpy.ones((128, 256), bf16),
      jax.numpy.ones((2, 4, 16, 8), bf16),
      jax.numpy.ones((2, 4, 32, 8), bf16),
    )
    .compile()
  )
  flops = hlo_analysis.op_flops_from_hlo(compiled.as_text())
  # Each product counted once at the top level (the fusion that runs it)
  # and once at the dot inside; the executed ops are the fusions.
  assert sorted(set(flops.values())) == sorted(
    {2 * 64 * 256 * 128, 2 * 2 * 4 * 16 * 32 * 8}
  )


def test_gpu_summary_rates_by_category_and_op():
  from benchmarks import hlo_analysis
  from benchmarks import profile_ours

  trace = profile_ours.summarise_trace(
    jax.profiler.ProfileData.from_text_proto(_GPU_TRACE)
  )
  op_bytes = hlo_analysis.op_bytes_from_hlo(_HLO)
  got = profile_ours.gpu_rates_summary(
    trace,
    op_bytes,
    hlo_analysis.op_flops_from_hlo(_HLO),
    hlo_analysis.op_names_from_hlo(_HLO),
  )
  gemm = op_bytes['cublas-gemm.1']
  assert got['category_gbytes']['matmul'] == pytest.approx(gemm / 1e9)
  # Bytes per ns are GB/s: the gemm's kernel ran 5000 ns.
  assert got['category_gbytes_per_s']['matmul'] == pytest.approx(gemm / 5000)
  top = got['top_ops'][0]
  assert (top['op'], top['category'], top['location']) == (
    'cublas-gemm.1',
    'matmul',
    'dot_general',
  )
  assert top['gbytes_per_s'] == pytest.approx(gemm / 5000)
  # FLOPs per ns / 1e3 are TFLOP/s.
  assert top['tflops_per_s'] == pytest.approx(2 * 64 * 256 * 128 / 5000 / 1e3)
  assert got['category_tflops_per_s'] == {'matmul': top['tflops_per_s']}
  # An op the HLO text does not define has no bytes, not zero bytes.
  cudnn = next(o for o in got['top_ops'] if o['op'] == 'custom-call.3')
  assert cudnn['mbytes'] is None and cudnn['gbytes_per_s'] is None


def test_gpu_summary_bounds_each_kernel_at_the_measured_ceilings():
  # Each op's bound: max(bytes / copy bandwidth, matmul FLOPs / matmul
  # rate), summed per category; the gemm (115,712 bytes, 4.19 MFLOP) is
  # bandwidth-bound at 4000 GB/s and 500 TFLOP/s: 28.9 ns, run in 5000 ns.
  from benchmarks import hlo_analysis
  from benchmarks import profile_ours

  trace = profile_ours.summarise_trace(
    jax.profiler.ProfileData.from_text_proto(_GPU_TRACE)
  )
  ceilings = {'copy_gbytes_per_s': 4000.0, 'bf16_matmul_tflops': 500.0}
  op_bytes = hlo_analysis.op_bytes_from_hlo(_HLO)
  got = profile_ours.gpu_rates_summary(
    trace,
    op_bytes,
    hlo_analysis.op_flops_from_hlo(_HLO),
    hlo_analysis.op_names_from_hlo(_HLO),
    ceilings=ceilings,
  )
  gemm_ns = op_bytes['cublas-gemm.1'] / 4000.0
  assert gemm_ns > 2 * 64 * 256 * 128 / 500.0 / 1e3  # Memory-bound.
  assert got['category_bound_ms']['matmul'] == pytest.approx(gemm_ns / 1e6)
  fusion_ns = op_bytes['fusion.7'] / 4000.0
  assert got['category_bound_ms'][
    'other fusions (elementwise, reductions)'
  ] == pytest.approx(fusion_ns / 1e6)
  top = {o['op']: o for o in got['top_ops']}
  assert top['cublas-gemm.1']['bound_ms'] == pytest.approx(gemm_ns / 1e6)
  assert top['custom-call.3']['bound_ms'] is None  # Not in the HLO text.
  gpu = {
    'kernel_busy_ms': 0.008,
    'kernel_span_ms': 0.01,
    'idle_share': 0.2,
    'category_ms': {'matmul': 0.005},
    'ceilings': ceilings,
    **got,
  }
  doc = {
    'mode': 'train',
    'workload': 'w',
    'batch': 2,
    'perf': {},
    'step_times_s': [0.01],
    'op_time_ms_all_threads': 0.009,
    'phase_ms': {'forward': 0.009, 'backward': 0.0},
    'rows': [],
    'gpu': gpu,
  }
  md = profile_ours.to_markdown(doc, top=5)
  assert 'matmul 0.0 ms for a bound of 0.0 ms' in md
  assert f'| matmul | 0.01 | {5000 / gemm_ns:.1f} |' in md
  assert profile_ours.kernel_bound_ns(100, 0, None) is None


def test_profile_markdown_shows_rates_against_the_measured_copy_bandwidth():
  from benchmarks import hlo_analysis
  from benchmarks import profile_ours

  trace = profile_ours.summarise_trace(
    jax.profiler.ProfileData.from_text_proto(_GPU_TRACE)
  )
  gpu = {
    'kernel_busy_ms': 0.008,
    'kernel_span_ms': 0.01,
    'idle_share': 0.2,
    'category_ms': {'matmul': 0.005},
    'ceilings': {'copy_gbytes_per_s': 4000.0},
    **profile_ours.gpu_rates_summary(
      trace,
      hlo_analysis.op_bytes_from_hlo(_HLO),
      hlo_analysis.op_flops_from_hlo(_HLO),
      hlo_analysis.op_names_from_hlo(_HLO),
    ),
  }
  doc = {
    'mode': 'train',
    'workload': 'w',
    'batch': 2,
    'perf': {},
    'step_times_s': [0.01],
    'op_time_ms_all_threads': 0.009,
    'phase_ms': {'forward': 0.009, 'backward': 0.0},
    'rows': [],
    'gpu': gpu,
  }
  md = profile_ours.to_markdown(doc, top=5)
  rate = hlo_analysis.op_bytes_from_hlo(_HLO)['cublas-gemm.1'] / 5000
  assert '| cublas-gemm.1 | forward | dot_general | matmul | 0.01 |' in md
  assert f'| {rate:.0f} | {100 * rate / 4000:.0f}% | 1 |' in md
  assert 'matmul 0.00 TFLOP at 1 TFLOP/s' in md
  assert 'measured copy bandwidth 4000 GB/s' in md


def test_profile_ceilings_flag_with_a_missing_file_stops_first(tmp_path):
  from benchmarks import profile_ours

  with pytest.raises(SystemExit, match='--ceilings .*cannot read it'):
    profile_ours.main(
      [
        '--smoke',
        '--ceilings',
        str(tmp_path / 'none.json'),
        '--out',
        str(tmp_path),
      ]
    )


def test_profile_without_stream_lines_skips_the_derived_ones():
  # Should a tracer name its kernel lines otherwise, every line but the
  # derived and overhead ones counts: here the two renamed stream lines.
  from benchmarks import profile_ours

  text = _GPU_TRACE.replace('Stream #13(Compute)', 'Kernels A').replace(
    'Stream #14(Compute)', 'Kernels B'
  )
  got = profile_ours.summarise_trace(
    jax.profiler.ProfileData.from_text_proto(text)
  )
  assert dict(got['ops']) == {
    'cublas-gemm.1': 5000,
    'fusion.7': 2000,
    'custom-call.3': 2000,
  }


@pytest.mark.slow
def test_profile_ours_smoke_end_to_end(tmp_path):
  import gzip
  from benchmarks import profile_ours

  assert (
    profile_ours.main(
      [
        '--smoke',
        '--workload',
        'imagenet_conv',
        '--mode',
        'infer',
        '--keep_trace',
        '--out',
        str(tmp_path),
      ]
    )
    == 0
  )
  with open(tmp_path / 'profile_imagenet_conv_b2_infer.json') as f:
    doc = json.load(f)
  assert doc['device'] == 'cpu' and doc['rows']
  # The kept raw trace reads back and sums to the same op time.
  with gzip.open(tmp_path / 'profile_imagenet_conv_b2_infer.xplane.pb.gz') as f:
    kept = profile_ours.summarise_trace(
      jax.profiler.ProfileData.from_serialized_xspace(f.read())
    )
  assert sum(kept['ops'].values()) / 1e6 == pytest.approx(
    doc['op_time_ms_all_threads']
  )
  assert abs(sum(r['share_of_op_time'] for r in doc['rows']) - 1) < 1e-6
  # Locations are module paths without Flax's wrapper scopes.
  assert not any('shared_forward_fn' in r['location'] for r in doc['rows'])


def test_profile_ours_gpu_without_a_gpu_says_so():
  from benchmarks import profile_ours

  with pytest.raises(SystemExit, match='JAX found no gpu'):
    profile_ours.main(['--smoke', '--device', 'gpu', '--out', '/nonexistent'])
