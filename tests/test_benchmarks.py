"""Checks that the benchmarks compare like with like, and that they run.

Why: a speed/memory table against HuggingFace's PyTorch Perceiver means
something only if both sides are the same model. These tests check, at tiny
sizes, that every benchmark workload builds models with equal parameter
counts on both sides (counted independently: ours from abstract shapes, HF
from torch), that our model computes HF's logits when given HF's weights (so
the two sides do the same arithmetic, not just hold the same number of
weights), that one worker measurement runs end to end for each
implementation, and that the comparison table reports ours / reference.
"""

import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
import torch

from benchmarks import compare_reference
from benchmarks import paired_options
from benchmarks import runner
from benchmarks import scaling
from benchmarks import workloads as W
from perceiver_io.checkpoints import common as ckpt_common
from perceiver_io.checkpoints import hf as ckpt_hf
from perceiver_io.model import build_model
from tests import hf_fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_workloads():
  """Every smoke workload plus the scaling script's tiny workloads."""
  items = list(W.standard_workloads(smoke=True).values())
  items.append(W.query_workload(64, grid=(32, 32), tiny=True))
  items.append(W.text_workload(256, tiny=True))
  return items


def _ours_param_count(w):
  """Our parameter count from abstract shapes (nothing is allocated)."""
  model = build_model(W.ours_config(w))
  x, kwargs = W.ours_model_inputs(W.make_inputs(w))
  kwargs.pop('attention_mask', None)
  one = jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)
  shapes = jax.eval_shape(
    lambda x, kw: model.init(jax.random.PRNGKey(0), x, **kw), one, kwargs
  )
  return sum(
    int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes['params'])
  )


@pytest.mark.parametrize('w', _tiny_workloads(), ids=lambda w: w.name)
def test_parameter_counts_equal(w):
  ours = _ours_param_count(w)
  hf = sum(p.numel() for p in W.hf_build(w).parameters())
  assert ours == hf, f'{w.name}: ours {ours} vs HF {hf} parameters'
  assert ours > 1000  # A real model, not an empty tree.


def _ours_with_hf_weights(w, hf_model, arch):
  """Our model built from the benchmark's config, loaded with HF's weights."""
  model = build_model(W.ours_config(w))
  state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  flat = ckpt_hf.convert_state_dict(state, arch)
  # Raises with the offending names if the two architectures differ.
  variables = ckpt_common.check_and_unflatten(model, flat, f'HF {arch}')
  return model, flax.core.unfreeze(variables)


@pytest.mark.parametrize(
  'name,arch',
  [
    ('imdb', 'PerceiverForSequenceClassification'),
    ('optical_flow', 'PerceiverForOpticalFlow'),
  ],
)
def test_same_logits_on_hf_weights(name, arch):
  """Ours (benchmark config) on HF's weights gives HF's logits.

  HF's flow model is fed 3x3 patches extracted by an independent NumPy loop
  in HF's (patch row, patch column, channel) order, so this checks the two
  models, not the benchmark's torch patch helper.
  """
  w = W.standard_workloads(smoke=True)[name]
  hf_model = hf_fixtures.randomise(W.hf_build(w))  # Also sets eval mode.
  data = W.make_inputs(w)
  if w.kind == 'flow':
    patches = hf_fixtures.flow_patches_numpy(data['inputs'])
    hf_kwargs = dict(
      inputs=torch.from_numpy(
        np.ascontiguousarray(patches.transpose(0, 1, 4, 2, 3))
      )
    )
  else:
    hf_kwargs = W.hf_model_inputs(w, data)[0]()
  with torch.no_grad():
    expected = hf_model(**hf_kwargs).logits.numpy()
  model, variables = _ours_with_hf_weights(w, hf_model, arch)
  x, kwargs = W.ours_model_inputs(data)
  got = np.asarray(model.apply(variables, x, **kwargs))
  assert got.shape == expected.shape
  assert np.max(np.abs(expected)) > 1e-2  # Not trivially small outputs.
  # Measured differences are <= 5e-7; tanh GELU instead of the exact one
  # (the kind of mismatch this guards against) gives 1.4e-4 on imdb.
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_torch_flow_patches_match_numpy_reference():
  """The benchmark's torch patch helper = the independent NumPy loop, in
  HF's [B, T, 27, H, W] layout (channel order patch row, patch column, c)."""
  frames = (
    np.random.default_rng(0)
    .uniform(-1, 1, size=(2, 2, 5, 7, 3))
    .astype(np.float32)
  )
  got = W.torch_flow_patches(torch.from_numpy(frames)).numpy()
  expected = hf_fixtures.flow_patches_numpy(frames).transpose(0, 1, 4, 2, 3)
  np.testing.assert_array_equal(got, expected)


def _run_worker(impl, mode='infer', **extra):
  """Runs one tiny imdb measurement as `python -m benchmarks.worker`."""
  w = W.standard_workloads(smoke=True)['imdb']
  spec = {
    'impl': impl,
    'mode': mode,
    'workload': {
      'name': w.name,
      'kind': w.kind,
      'batch': w.batch,
      'sizes': w.sizes,
      'modes': list(w.modes),
      'description': w.description,
    },
    'repeats': 1,
    'warmup': 1,
    'threads': 1,
    'device': 'cpu',
    **extra,
  }
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
    [sys.executable, '-m', 'benchmarks.worker', '--spec', json.dumps(spec)],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert len(lines) == 1, proc.stdout
  return json.loads(lines[0][len('RESULT ') :])


def test_worker_end_to_end():
  results = {impl: _run_worker(impl) for impl in ('ours', 'hf')}
  for impl, r in results.items():
    assert 'status' not in r  # A single spec reports its result directly.
    assert (r['impl'], r['mode'], r['workload']) == (impl, 'infer', 'imdb')
    assert r['median_s'] > 0 and len(r['times_s']) == 1
    assert r['first_s'] > 0
    assert r['peak_rss'] > 0 and r['peak_rss'] >= r['rss_at_start']
    assert r['cpu_threads'] == 1
    assert not r['imported_tensorflow']
  assert results['ours']['params'] == results['hf']['params']
  assert results['ours']['params'] == _ours_param_count(
    W.standard_workloads(smoke=True)['imdb']
  )
  assert results['ours']['flops'] > 0
  assert results['ours']['compile_s'] > 0
  # Host memory reuse decided as the launchers do, before JAX's backend.
  settings = results['ours']['process_settings']
  if 'PERCEIVER_IO_REUSE_HOST_MEMORY' not in os.environ:
    assert settings['host_memory_reuse'].startswith('off (step '), settings


def test_worker_times_a_torch_compiled_reference():
  # --hf_compile's path (compare_reference passes backend 'inductor'; the
  # 'eager' backend here runs the same torch.compile wrapping and Dynamo
  # tracing without building C++ kernels): the compiled model trains, its
  # first call is kept apart, and the result says it was compiled.
  r = _run_worker('hf', 'train', torch_compile='eager')
  assert r['torch_compile'] == 'eager'
  assert r['median_s'] > 0 and r['first_s'] > 0 and np.isfinite(r['loss'])


def test_parse_key_values():
  parse = compare_reference.parse_key_values
  assert parse(['imdb=2,imagenet_conv=1', 'optical_flow=3'], '--batch') == {
    'imdb': 2,
    'imagenet_conv': 1,
    'optical_flow': 3,
  }
  assert parse(
    ['remat=true,dtype=bfloat16,query_chunk_size=None'], '--ours'
  ) == {'remat': True, 'dtype': 'bfloat16', 'query_chunk_size': None}
  assert parse([], '--batch') == {}
  with pytest.raises(ValueError, match='key=value'):
    parse(['imdb'], '--batch')


@pytest.mark.parametrize(
  'argv,message',
  [
    (['--workloads', 'imdb,nope'], 'unknown workloads'),
    (['--ours', 'bogus=1'], '--ours keys'),
    (['--modes', 'fit'], '--modes'),
    (['--impls', 'tf'], '--impls'),
  ],
)
def test_run_all_rejects_bad_arguments(argv, message):
  """Bad flags fail before any worker process is started."""
  args = compare_reference.build_parser().parse_args(['--smoke'] + argv)
  with pytest.raises(ValueError, match=message):
    compare_reference.run_all(args)


def _fake_doc():
  gib = 1024**3
  base = dict(batch=4, status='ok')
  return {
    'machine': {
      'date': '2026-01-01T00:00:00',
      'cpu': 'Test CPU',
      'cpu_count': 2,
      'memory_gib': 8.0,
    },
    'versions': {'jax': 'x'},
    'settings': {'repeats': 3},
    'results': [
      dict(
        base,
        workload='imdb',
        mode='train',
        impl='ours',
        median_s=2.0,
        peak_rss=3 * gib,
        params=100,
        first_s=5.0,
        compile_s=4.0,
      ),
      dict(
        base,
        workload='imdb',
        mode='train',
        impl='hf',
        median_s=4.0,
        peak_rss=2 * gib,
        params=100,
        first_s=4.5,
      ),
      dict(
        base,
        workload='optical_flow',
        mode='infer',
        impl='ours',
        batch=1,
        median_s=0.5,
        peak_rss=gib,
        params=7,
      ),
      dict(
        workload='optical_flow',
        mode='infer',
        impl='hf',
        batch=1,
        status='over_memory_cap',
      ),
      dict(
        base,
        workload='imagenet_conv',
        mode='infer',
        impl='ours',
        median_s=1.0,
        peak_rss=gib,
        params=10,
      ),
      dict(
        base,
        workload='imagenet_conv',
        mode='infer',
        impl='hf',
        median_s=1.0,
        peak_rss=gib,
        params=11,
      ),
    ],
  }


def test_summary_rows_ratios_and_failures():
  rows = compare_reference.summary_rows(_fake_doc())
  assert [(r['workload'], r['mode']) for r in rows] == [
    ('imdb', 'train'),
    ('optical_flow', 'infer'),
    ('imagenet_conv', 'infer'),
  ]
  imdb, flow, conv = rows
  assert imdb['time_ratio'] == pytest.approx(0.5)  # 2 s / 4 s.
  assert imdb['rss_ratio'] == pytest.approx(1.5)  # 3 GiB / 2 GiB.
  assert imdb['params_match'] is True
  assert flow['ref_s'] is None and flow['time_ratio'] is None
  assert flow['ref_status'] == 'over_memory_cap'
  assert flow['params_match'] is None  # Unknown, not "equal".
  assert conv['params_match'] is False


def test_markdown_table():
  text = compare_reference.to_markdown(_fake_doc())
  table = [l for l in text.splitlines() if l.startswith('| ')]
  header = [c.strip() for c in table[0].strip('|').split('|')]
  cells = [
    dict(zip(header, (c.strip() for c in l.strip('|').split('|'))))
    for l in table[2:]
  ]
  assert len(cells) == 3
  imdb, flow, conv = cells
  assert imdb['ours'] == '2.00 s' and imdb['reference'] == '4.00 s'
  assert imdb['time ratio'] == '0.50' and imdb['RSS ratio'] == '1.50'
  assert imdb['ours peak RSS'] == '3.00 GiB'
  assert imdb['ours compile'] == '4.00 s' and imdb['params equal'] == 'yes'
  assert flow['ours'] == '500.0 ms'
  assert flow['reference'] == '- (over_memory_cap)'
  assert flow['time ratio'] == '-' and flow['params equal'] == '-'
  assert conv['params equal'] == 'NO'
  assert 'ratio = ours / reference' in text
  assert 'Test CPU (2 cores, 8.0 GiB)' in text


def test_paired_options_end_to_end(tmp_path):
  # Two variants alternated in one process: a row each, ratio to the first.
  out = tmp_path / 'paired'
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'benchmarks.paired_options',
      '--smoke',
      '--workload',
      'imagenet_fourier',
      '--mode',
      'train',
      '--rounds',
      '2',
      '--repeats',
      '1',
      '--variant',
      'attention_impl=einsum',
      '--variant',
      'default',
      '--variant',
      'blockwise_cpu_gradients=false',
      '--variant',
      'blocked_attention_min_mib=0',
      '--out',
      str(out),
    ],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '[6/8] round 2 default' in proc.stdout  # Progress lines.
  doc = json.loads((out / 'paired_imagenet_fourier_train.json').read_text())
  assert [r['variant'] for r in doc['rows']] == [
    'attention_impl=einsum',
    'default',
    'blockwise_cpu_gradients=false',
    'blocked_attention_min_mib=0',
  ]
  first, second, _, blocked = doc['rows']
  # Every attention call blocked: a different program. (Fewer temporaries
  # on JAX 0.10's CPU backend; at these smoke sizes JAX 0.12's plans more.
  # The saving at a real size: test_blocked_attention_plans_fewer_temporaries.)
  assert blocked['temp_bytes'] != second['temp_bytes']
  assert second['ratio'] == pytest.approx(
    second['median_s'] / first['median_s']
  )
  for row in doc['rows']:
    assert len(row['times_s']) == 2 and row['temp_bytes'] > 0
  assert doc['process_settings']  # Configured before JAX started.
  assert '| default |' in (out / 'paired_imagenet_fourier_train.md').read_text()


def test_paired_options_rejects_unknown_option():
  assert paired_options.parse_variants(['default', 'remat=true']) == [
    ('default', {}),
    ('remat=true', {'remat': True}),
  ]
  with pytest.raises(ValueError, match='unknown perf option'):
    paired_options.parse_variants(['atention_impl=cpu'])
  assert paired_options.parse_variants(['blockwise_cpu_gradients=false']) == [
    ('blockwise_cpu_gradients=false', {'blockwise_cpu_gradients': False})
  ]
  with pytest.raises(ValueError, match='true or false'):
    paired_options.parse_variants(['blockwise_cpu_gradients=1'])
  assert paired_options.parse_variants(['blocked_attention_min_mib=0']) == [
    ('blocked_attention_min_mib=0', {'blocked_attention_min_mib': 0})
  ]
  for bad in ('blocked_attention_min_mib=-1', 'blocked_attention_min_mib=x'):
    with pytest.raises(ValueError, match='whole number of MiB'):
      paired_options.parse_variants([bad])


def test_paired_options_text_workload_by_length():
  # `--workload text_N`: the scaling sweep's language classifier.
  w = paired_options.workload('text_65536')
  assert w.sizes['seq_len'] == w.sizes['max_seq_len'] == 65536
  assert w.sizes['depth'] == paired_options.TEXT_DEPTH and w.batch == 1
  assert paired_options.workload('imdb').batch == 4
  for bad in ('text_', 'text_0', 'txt_64'):
    with pytest.raises(ValueError, match='text_N'):
      paired_options.workload(bad)


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


# ------------------------------------------------------------ profile_ours --
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
  from benchmarks import profile_ours

  got = profile_ours.op_bytes_from_hlo(_HLO)
  # The gemm: its tuple output (result and workspace) and both operands.
  assert got['cublas-gemm.1'] == (
    64 * 256 * 2 + 1024 + 64 * 128 * 2 + 128 * 256 * 2
  )
  assert got['fusion.7'] == 64 * 256 * 4 + 64 * 256 * 2
  # The same on XLA's own compiled text: an elementwise op on f32[1000].
  compiled = jax.jit(lambda v: v * 2 + 1).lower(jax.numpy.ones(1000)).compile()
  moved = [
    b
    for op, b in profile_ours.op_bytes_from_hlo(compiled.as_text()).items()
    if b and 'fusion' in op
  ]
  assert moved == [8000], moved


def test_matmul_flops_from_gemm_calls_fusions_and_dots():
  from benchmarks import profile_ours

  # A cuBLAS call: contracting dimensions from its backend config.
  assert profile_ours.op_flops_from_hlo(_HLO) == {
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
  flops = profile_ours.op_flops_from_hlo(compiled.as_text())
  # Each product counted once at the top level (the fusion that runs it)
  # and once at the dot inside; the executed ops are the fusions.
  assert sorted(set(flops.values())) == sorted(
    {2 * 64 * 256 * 128, 2 * 2 * 4 * 16 * 32 * 8}
  )


def test_gpu_summary_rates_by_category_and_op():
  from benchmarks import profile_ours

  trace = profile_ours.summarise_trace(
    jax.profiler.ProfileData.from_text_proto(_GPU_TRACE)
  )
  op_bytes = profile_ours.op_bytes_from_hlo(_HLO)
  got = profile_ours.gpu_rates_summary(
    trace,
    op_bytes,
    profile_ours.op_flops_from_hlo(_HLO),
    profile_ours.op_names_from_hlo(_HLO),
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
  from benchmarks import profile_ours

  trace = profile_ours.summarise_trace(
    jax.profiler.ProfileData.from_text_proto(_GPU_TRACE)
  )
  ceilings = {'copy_gbytes_per_s': 4000.0, 'bf16_matmul_tflops': 500.0}
  op_bytes = profile_ours.op_bytes_from_hlo(_HLO)
  got = profile_ours.gpu_rates_summary(
    trace,
    op_bytes,
    profile_ours.op_flops_from_hlo(_HLO),
    profile_ours.op_names_from_hlo(_HLO),
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
      profile_ours.op_bytes_from_hlo(_HLO),
      profile_ours.op_flops_from_hlo(_HLO),
      profile_ours.op_names_from_hlo(_HLO),
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
  rate = profile_ours.op_bytes_from_hlo(_HLO)['cublas-gemm.1'] / 5000
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


def test_profile_ours_gpu_without_a_gpu_says_so():
  from benchmarks import profile_ours

  with pytest.raises(SystemExit, match='JAX found no gpu'):
    profile_ours.main(['--smoke', '--device', 'gpu', '--out', '/nonexistent'])
