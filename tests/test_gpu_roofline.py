"""The GPU roofline's arithmetic, on hand-written and XLA-compiled HLO.

Why: `benchmarks/gpu_roofline.py` says what limits our GPU steps from the
program alone (bytes and FLOPs per kernel); a misread kernel, a kernel
counted twice or a FLOP formula off by a factor would make every
conclusion drawn from it wrong. Compiling for a CUDA card needs JAX's CUDA
plugin (not installed in CI), so the compile itself is checked where the
plugin is installed (`benchmarks/gpu_roofline.py --smoke`); here the
reading of its output is.
"""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from benchmarks import gpu_compile
from benchmarks import gpu_roofline
from benchmarks import hlo_analysis

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A GPU program's shape: a cuBLAS GEMM, a convert fusion reading its
# result, and a cuDNN attention forward with q/k width 8 and v width 16
# (layout constraints [B, T, N, D]); parameters, get-tuple-element and the
# root tuple launch no kernel.
_GPU_HLO = """
%fused_convert (p: bf16[64,256]) -> f32[64,256] {
  %p = bf16[64,256]{1,0} parameter(0)
  ROOT %convert.1 = f32[64,256]{1,0} convert(%p)
}

ENTRY %main.9 (x: bf16[64,128], w: bf16[128,256], q: bf16[2,16,4,8], k: bf16[2,32,4,8], v: bf16[2,32,4,16]) -> (f32[64,256], bf16[2,4,16,16]) {
  %x = bf16[64,128]{1,0} parameter(0), metadata={op_name="x"}
  %w = bf16[128,256]{1,0} parameter(1), metadata={op_name="w"}
  %q = bf16[2,16,4,8]{3,2,1,0} parameter(2)
  %k = bf16[2,32,4,8]{3,2,1,0} parameter(3)
  %v = bf16[2,32,4,16]{3,2,1,0} parameter(4)
  %cublas-lt-matmul.1 = (bf16[64,256]{1,0}, s8[1024]{0}) custom-call(%x, %w), custom_call_target="__cublas$lt$matmul", metadata={op_name="jit(step)/jvp(PerceiverIO)/encoder/mlp/dense1/dot_general"}, backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}
  %gte.1 = bf16[64,256]{1,0} get-tuple-element(%cublas-lt-matmul.1), index=0
  %loop_convert_fusion.3 = f32[64,256]{1,0} fusion(%gte.1), kind=kLoop, calls=%fused_convert, metadata={op_name="jit(step)/transpose(jvp(PerceiverIO))/encoder/mlp/convert_element_type"}
  %fmha.2 = (bf16[2,4,16,16]{3,1,2,0}, f32[2,4,16]{2,1,0}, u8[0]{0}) custom-call(%q, %k, %v), custom_call_target="__cudnn$fmhaSoftmax", operand_layout_constraints={bf16[2,16,4,8]{3,2,1,0}, bf16[2,32,4,8]{3,2,1,0}, bf16[2,32,4,16]{3,2,1,0}}, api_version=API_VERSION_STATUS_RETURNING, metadata={op_name="jit(step)/jvp(PerceiverIO)/encoder/attention/dot_product_attention_fwd"}
  %gte.2 = bf16[2,4,16,16]{3,1,2,0} get-tuple-element(%fmha.2), index=0
  ROOT %tuple.4 = (f32[64,256]{1,0}, bf16[2,4,16,16]{3,1,2,0}) tuple(%loop_convert_fusion.3, %gte.2)
}
"""
# Bytes and FLOPs of its three kernels, by hand: output(s) + operands.
_GEMM_BYTES = 64 * 256 * 2 + 1024 + 64 * 128 * 2 + 128 * 256 * 2
_GEMM_FLOPS = 2 * 64 * 256 * 128
_CONVERT_BYTES = 64 * 256 * 4 + 64 * 256 * 2
_ATTN_BYTES = (
  2 * 4 * 16 * 16 * 2
  + 2 * 4 * 16 * 4  # out, softmax stats
  + 2 * 16 * 4 * 8 * 2
  + 2 * 32 * 4 * 8 * 2
  + 2 * 32 * 4 * 16 * 2
)
_ATTN_FLOPS = 2 * 2 * 4 * 16 * 32 * (8 + 16)  # QK^T (width 8) + PV (16)


def test_cudnn_attention_flops_forward_and_backward():
  got = hlo_analysis.attention_flops_from_hlo(_GPU_HLO)
  assert got == {'fmha.2': _ATTN_FLOPS}
  backward = _GPU_HLO.replace('fmhaSoftmax"', 'fmhaSoftmaxBackward"')
  # Recomputed QK^T, dQ and dK at width 8; dP and dV at width 16.
  assert hlo_analysis.attention_flops_from_hlo(backward) == {
    'fmha.2': 2 * 2 * 4 * 16 * 32 * (3 * 8 + 2 * 16)
  }


def test_a_convert_fusion_is_no_convolution():
  assert hlo_analysis.op_category(
    'loop_convert_fusion_3', 'loop_convert_fusion.3'
  ) == ('other fusions (elementwise, reductions)')
  assert hlo_analysis.op_category(
    'implicit_convolve_sgemm', 'convolution.1'
  ) == ('convolution')


def test_roofline_of_hand_written_gpu_hlo():
  # 20 GFLOP/s and 1 GB/s: the GEMM is math-bound (210 us vs 116 us),
  # attention (10 us vs 19 us) and the convert memory-bound.
  r = gpu_roofline.roofline(_GPU_HLO, peak_flops=2e10, bandwidth=1e9)
  assert r['kernels'] == 3
  assert r['gbytes'] == pytest.approx(
    (_GEMM_BYTES + _CONVERT_BYTES + _ATTN_BYTES) / 1e9
  )
  assert r['tflop'] == pytest.approx((_GEMM_FLOPS + _ATTN_FLOPS) / 1e12)
  math_ms = _GEMM_FLOPS / 2e10 * 1e3
  memory_ms = (_CONVERT_BYTES + _ATTN_BYTES) / 1e9 * 1e3
  assert r['math_bound_ms'] == pytest.approx(math_ms)
  assert r['memory_bound_ms'] == pytest.approx(memory_ms)
  assert r['ms'] == pytest.approx(math_ms + memory_ms)
  kinds = {k['kind']: k for k in r['kinds']}
  assert set(kinds) == {'matmul', 'attention (cuDNN)', 'loop_convert_fusion'}
  assert [k['kind'] for k in r['kinds']][0] == 'matmul'  # Longest first.
  places = {(p['phase'], p['location']): p['kind'] for p in r['locations']}
  assert places == {
    ('forward', 'encoder/mlp/dense1/dot_general'): 'matmul',
    ('backward', 'encoder/mlp'): 'loop_convert_fusion',
    (
      'forward',
      'encoder/attention/dot_product_attention_fwd',
    ): 'attention (cuDNN)',
  }


def test_roofline_counts_the_gemms_of_xla_compiled_hlo_exactly():
  # Real compiled text (the CPU's, the same HLO grammar): two chained
  # products, their FLOPs known, whatever XLA fuses around them.
  def mlp(x, w1, w2):
    return jnp.tanh(jax.nn.relu(x @ w1) @ w2).sum()

  args = [jnp.ones((256, 512)), jnp.ones((512, 384)), jnp.ones((384, 128))]
  hlo = jax.jit(mlp).lower(*args).compile().as_text()
  r = gpu_roofline.roofline(hlo, peak_flops=1e12, bandwidth=1e11)
  assert r['tflop'] * 1e12 == pytest.approx(
    2 * 256 * 512 * 384 + 2 * 256 * 384 * 128
  )
  # Every byte counted belongs to a kernel: at least the inputs are read.
  assert r['gbytes'] * 1e9 >= sum(a.size * 4 for a in args)
  assert r['kernels'] >= 1 and r['ms'] > 0


@pytest.mark.parametrize(
  'text',
  [
    'imdb:64:train',
    'imdb:x:train:bf16',
    'imdb:64:fit:bf16',
    'imdb:64:train:fp16',
  ],
)
def test_bad_items_say_the_format(text):
  with pytest.raises(ValueError, match='WORKLOAD:BATCH:MODE:PRECISION'):
    gpu_roofline.parse_item(text)


def test_parse_item():
  assert gpu_roofline.parse_item('imagenet_conv:32:train:bf16_cudnn') == (
    'imagenet_conv',
    32,
    'train',
    'bf16_cudnn',
  )


def test_without_the_cuda_plugin_it_says_what_to_install():
  # CI's JAX has no CUDA plugin: no card to compile for, one clear message.
  with pytest.raises(SystemExit, match=r'jax\[cuda13\]'):
    gpu_compile.gpu_sharding('h200')


def test_measured_rows_from_the_committed_gpu_results():
  rows, device = gpu_roofline.measured_rows(
    os.path.join(REPO_ROOT, 'benchmarks', 'results', 'gpu', 'gpu.json')
  )
  assert device == 'NVIDIA H200'
  fourier = rows[('imagenet_fourier', 32, 'train', 'bf16_cudnn')]
  assert fourier['median_s'] == pytest.approx(0.1511, abs=1e-3)
  assert rows[('imdb', 64, 'train', 'bf16')]['median_s'] == pytest.approx(
    0.0859, abs=1e-3
  )


def test_markdown_rows_with_and_without_a_measurement():
  r = gpu_roofline.roofline(_GPU_HLO, peak_flops=1e10, bandwidth=1e9)
  doc = {
    'card': 'NVIDIA H200',
    'how': 'compiled without the card',
    'peak_flops': 1e10,
    'tf32_flops': 5e9,
    'bandwidth': 1e9,
    'items': [
      {
        'item': 'a:1:train:bf16',
        'roofline': r,
        'model_tflop': 4e-6,
        'mfu_ceiling': 0.5,
        'device_gbytes': 1.25,
        'measured': {'median_s': 2 * r['ms'] / 1e3, 'mfu': 0.25},
      },
      {
        'item': 'b:1:train:bf16',
        'roofline': r,
        'model_tflop': 4e-6,
        'mfu_ceiling': 0.5,
        'device_gbytes': 1.25,
      },
    ],
  }
  md = gpu_roofline.to_markdown(doc)
  rows = [
    ln
    for ln in md.splitlines()
    if ln.startswith('| a:1') or ln.startswith('| b:1')
  ]
  assert rows[0].endswith('| 50 % | 1.2 GB | 1.1 ms | 25.0 % | 2.00 |'), rows
  assert rows[1].endswith('| 50 % | 1.2 GB | - | - | - |'), rows
  assert '## a:1:train:bf16' in md and '| matmul | 1 |' in md
  json.dumps(doc)  # What main writes is plain JSON.


@pytest.mark.slow
@pytest.mark.parametrize(
  'mode, precision', [('train', 'bf16'), ('infer', 'fp32')]
)
def test_compile_step_and_roofline_end_to_end_on_this_machines_device(
  mode, precision
):
  # The plumbing a GPU compile goes through (abstract model, shardings on
  # every argument, the jitted train step or forward, XLA's memory
  # analysis, the model FLOPs count), compiled for the CPU at tiny sizes:
  # the same path as for a described card, minus the card.
  sharding = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  hlo, memory = gpu_compile.compile_step(
    'imagenet_conv', 2, mode, precision, sharding, deviceless=False, smoke=True
  )
  r = gpu_roofline.roofline(hlo, peak_flops=1e12, bandwidth=1e11)
  flops = gpu_roofline.model_flops('imagenet_conv', 2, mode, smoke=True)
  assert r['kernels'] > 0 and r['tflop'] > 0
  # The GEMMs counted in the compiled program are the model's products
  # (the CPU runs attention as plain dots; convolutions are not counted,
  # hence a loose lower bound).
  assert 0.7 * flops <= r['tflop'] * 1e12 <= 1.05 * flops
  assert (
    gpu_roofline.predicted_device_bytes(memory)
    >= (memory.argument_size_in_bytes)
    > 0
  )


@pytest.mark.slow
def test_preset_gradient_compile_path_on_this_machines_device():
  # `--presets`' compile (every preset's bf16 gradient, traced as on a GPU),
  # here for the CPU and with XLA's attention (cuDNN's needs a CUDA
  # target): the multimodal preset has the most varied inputs.
  sharding = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  hlo = gpu_compile.compile_preset_gradient(
    'tiny_multimodal_autoencoding',
    2,
    sharding,
    deviceless=False,
    attention_impl='auto',
  )
  assert 'ENTRY' in hlo and hlo_analysis.op_flops_from_hlo(hlo)


def test_an_unreadable_measured_file_is_one_clear_error(tmp_path):
  bad = tmp_path / 'gpu.json'
  bad.write_text('{not json')
  for path in (bad, tmp_path / 'missing.json'):
    with pytest.raises(SystemExit, match='--measured .*cannot read it'):
      gpu_roofline.measured_rows(str(path))


def test_unknown_workload_is_refused_before_anything_compiles(capsys):
  with pytest.raises(SystemExit):
    gpu_roofline.main(['imdbx:64:train:bf16'])
  assert "unknown workloads ['imdbx']" in capsys.readouterr().err
