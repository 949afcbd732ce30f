"""Our steps compiled for an H100/H200, whether or not the card is here.

Why: a GPU is lent rarely and briefly, yet what a step will run on the card
(its fusions, cuBLAS and cuDNN calls, buffer sizes) can be known on any
machine: XLA compiles for a CUDA card that is absent when given the card's
description (JAX's deviceless ahead-of-time compilation; it needs JAX's CUDA
plugin, not a GPU). This holds that description and what such a compile
needs (environment set before JAX starts, Hopper's compute capability told
to JAX's and our cuDNN checks), and compiles a benchmark step or a preset's
gradient for it; `gpu_roofline.py` reads the programs. With a GPU visible
it compiles for that GPU unchanged.
"""

import contextlib
import os

# The cards' published figures: dense bf16 and TF32 tensor-core rates (JAX
# runs fp32 matmuls on a GPU as TF32 by default), HBM bandwidth, and what
# XLA's GPU compiler reads from a device description.
CARDS = {
  'h100': dict(
    name='NVIDIA H100 80GB HBM3',
    peak_flops=989.4e12,
    tf32_flops=494.7e12,
    bandwidth=3.35e12,
    memory=85_520_809_984,
  ),
  'h200': dict(
    name='NVIDIA H200',
    peak_flops=989.4e12,
    tf32_flops=494.7e12,
    bandwidth=4.8e12,
    memory=150_754_820_096,
  ),
}
# Hopper's shape, the same for both (132 SMs at 1.98 GHz, compute 9.0).
_TARGET_CONFIG = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth:.0f}
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: {memory}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: {cudnn_major} minor: {cudnn_minor} }}
runtime_version {{ major: {cuda_major} minor: {cuda_minor} }}
device_description_str: "{name}"
"""
PRECISIONS = {
  'fp32': ('float32', 'auto'),
  'bf16': ('bfloat16', 'auto'),
  'bf16_cudnn': ('bfloat16', 'cudnn'),
}


def _deviceless_environment():
  """What a compile for an absent card needs; set before JAX starts."""
  os.environ.setdefault('CUDA_VISIBLE_DEVICES', '-1')
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_gpu_enable_triton_gemm' not in flags:
    os.environ['XLA_FLAGS'] = (
      flags + ' --xla_gpu_enable_triton_gemm=false'
    ).strip()


def deviceless_environment_if_no_gpu():
  """`_deviceless_environment` unless a GPU is visible (nvidia-smi's
  device files), decided before JAX's backends start."""
  if not any(os.path.exists(f'/dev/nvidia{i}') for i in range(16)):
    _deviceless_environment()


def _installed_cuda_versions():
  """The cuDNN and CUDA runtime versions of the installed CUDA wheels (they
  decide which cuDNN attention XLA may use); no device needed to read them."""
  from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top

  cudnn = cuda_versions.cudnn_get_version()  # 92801: 9.28.1
  cuda = cuda_versions.cuda_runtime_get_version()  # 13050: 13.5
  return dict(
    cudnn_major=cudnn // 10000,
    cudnn_minor=cudnn // 100 % 100,
    cuda_major=cuda // 1000,
    cuda_minor=cuda // 10 % 100,
  )


def gpu_sharding(card):
  """(sharding to compile for, whether a real GPU is used)."""
  import jax  # pylint: disable=g-import-not-at-top

  try:
    gpus = jax.devices('cuda')
  except RuntimeError:
    gpus = []
  if gpus:
    return jax.sharding.SingleDeviceSharding(gpus[0]), True
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  try:
    topology = topologies.get_topology_desc(
      platform='cuda',
      topology='1x1x1',
      target_config=_TARGET_CONFIG.format(
        **CARDS[card], **_installed_cuda_versions()
      ),
    )
  except Exception as e:  # pylint: disable=broad-except
    raise SystemExit(
      f'gpu_roofline: cannot compile for a CUDA card here ({e}). It needs '
      'JAX\'s CUDA plugin (no GPU): pip install "jax[cuda13]=='
      f'{jax.__version__}"'
    ) from e
  mesh = topologies.make_mesh(topology, (1,), ('x',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), False


def compile_step(
  name, batch, mode, precision, sharding, deviceless, smoke=False
):
  """(compiled HLO text, XLA's memory analysis) of our step for one item,
  compiled for `sharding`'s device; `deviceless`: that device is absent
  (a described card), `smoke`: tiny sizes."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads as W  # pylint: disable=g-import-not-at-top

  dtype, impl = PRECISIONS[precision]
  workloads = W.standard_workloads(smoke, {name: batch})
  if name not in workloads:
    raise ValueError(
      f'unknown workload {name!r}; choose from {sorted(workloads)}.'
    )
  w = workloads[name]
  data = W.make_inputs(w)
  put = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)
  with _hopper_answers(deviceless):
    return _lower_and_compile(w, data, mode, dtype, impl, put, deviceless)


@contextlib.contextmanager
def _hopper_answers(deviceless):
  """Without the device, JAX's cuDNN check (a private module, so touched
  only then) would ask it for its compute capability: answer Hopper's (9.0)
  for the duration. Ours is told through `gpu_kernel_options`."""
  if not deviceless:
    yield
    return
  from jax._src.cudnn import fused_attention_stablehlo as jax_cudnn  # pylint: disable=g-import-not-at-top

  saved = jax_cudnn.check_compute_capability
  jax_cudnn.check_compute_capability = lambda c: float(c) <= 9.0
  try:
    yield
  finally:
    jax_cudnn.check_compute_capability = saved


def gpu_kernel_options(deviceless):
  """Our `kernel_options` for tracing as on the GPU: the platform, and
  without the device Hopper's compute capability (9.0)."""
  return {'platform': 'gpu', 'compute_capability': 9.0 if deviceless else None}


def _lower_and_compile(w, data, mode, dtype, impl, put, deviceless):
  """Our train step (or forward) for workload `w`, traced as on a GPU, its
  abstract arguments placed by `put`, lowered and compiled."""
  from benchmarks import workloads_ours  # pylint: disable=g-import-not-at-top

  model, variables, x, kwargs = workloads_ours.ours_build(
    w,
    data,
    abstract=True,
    dtype=dtype,
    attention_impl=impl,
    kernel_options=gpu_kernel_options(deviceless),
  )
  fn, args = workloads_ours.ours_abstract_call(
    model, variables, x, kwargs, data, mode, put
  )
  compiled = fn.lower(*args).compile()
  return compiled.as_text(), compiled.memory_analysis()


def compile_preset_gradient(
  name, batch, sharding, deviceless, attention_impl='cudnn'
):
  """Compiled HLO of the gradient of a preset's summed outputs, in bf16.

  A compile check of the library's GPU path beyond the benchmark
  workloads: every preset (masks, multimodal inputs and subsampled output
  points as `model.example_inputs` gives them), traced as on a GPU, where
  a shape JAX's cuDNN attention refuses fails at trace time.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from perceiver_io import model as model_lib  # pylint: disable=g-import-not-at-top
  from perceiver_io import presets  # pylint: disable=g-import-not-at-top

  cfg = presets.get_config(name)
  model = model_lib.build_model(
    cfg,
    dtype='bfloat16',
    attention_impl=attention_impl,
    kernel_options=gpu_kernel_options(deviceless),
  )
  x, kwargs = model_lib.example_inputs(cfg, batch)
  one, _ = model_lib.example_inputs(cfg, 1)
  init_kwargs = {k: v for k, v in kwargs.items() if k != 'attention_mask'}
  put = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)
  x, kwargs = jax.tree_util.tree_map(put, (x, kwargs))

  def loss(params, others, x, kwargs):
    out = model.apply({'params': params, **others}, x, **kwargs)
    return sum(
      jnp.sum(leaf.astype(jnp.float32))
      for leaf in jax.tree_util.tree_leaves(out)
    )

  with _hopper_answers(deviceless):
    variables = jax.tree_util.tree_map(
      put,
      jax.eval_shape(
        lambda: model.lazy_init(
          jax.random.PRNGKey(0), jax.tree_util.tree_map(put, one), **init_kwargs
        )
      ),
    )
    others = {k: v for k, v in variables.items() if k != 'params'}
    return (
      jax.jit(jax.grad(loss))
      .lower(variables['params'], others, x, kwargs)
      .compile()
      .as_text()
    )
