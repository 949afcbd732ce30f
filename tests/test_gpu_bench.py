"""The GPU benchmark's planning and reporting, checked on the CPU.

Why: the GPU script runs in a 15-minute device lease, so what it measures
and how it reports must be right before it gets there: the item order (the
targets first), `--only`, the MFU arithmetic with FLOP counts taken from the
CPU lowering, and merging a second run without losing the first run's
measurements to the second run's skips; and the lease's one script,
gpu_targets.sh, end to end at tiny sizes.
"""

import os
import re
import subprocess
import sys
import tarfile

import pytest

from benchmarks import count_flops
from benchmarks import gpu_bench
from benchmarks import gpu_bench_items
from benchmarks import gpu_bench_report
from benchmarks import workloads as W


def _args(*argv):
  return gpu_bench.build_parser().parse_args(['--smoke', *argv])


def _keys(items):
  return [gpu_bench_items.item_key(i) for i in items]


def test_items_order_targets_first():
  ours = _keys(
    gpu_bench_items.items_for(
      _args('--workloads', 'imdb,imagenet_fourier'), 'ours'
    )
  )
  # cuDNN first (issue batches, then the MFU batches, smoke: 3), then XLA's
  # attention, fp32, and inference in the same precision order.
  assert ours[:4] == [
    'ours/imdb/train/bf16_cudnn',
    'ours/imagenet_fourier/train/bf16_cudnn',
    'ours/imdb@3/train/bf16_cudnn',
    'ours/imagenet_fourier@3/train/bf16_cudnn',
  ]
  assert ours[4:8] == [k.replace('bf16_cudnn', 'bf16') for k in ours[:4]]
  assert ours[8:10] == [
    'ours/imdb/train/fp32',
    'ours/imagenet_fourier/train/fp32',
  ]
  assert ours[10:] == [
    f'ours/{w}/infer/{p}'
    for p in ('bf16_cudnn', 'bf16', 'fp32')
    for w in ('imdb', 'imagenet_fourier')
  ]
  hf = _keys(gpu_bench_items.items_for(_args('--workloads', 'imdb'), 'hf'))
  assert hf == [
    'hf/imdb/train/bf16_autocast',
    'hf/imdb/train/tf32',
    'hf/imdb/train/fp32',
    'hf/imdb@3/train/bf16_autocast',
    'hf/imdb@3/train/tf32',
    'hf/imdb/infer/bf16_autocast',
    'hf/imdb/infer/tf32',
    'hf/imdb/infer/fp32',
  ]


def test_hf_compile_adds_compiled_autocast_items_and_a_column():
  items = gpu_bench_items.items_for(
    _args('--workloads', 'imdb', '--modes', 'train', '--hf_compile'), 'hf'
  )
  assert _keys(items) == [
    'hf/imdb/train/bf16_autocast',
    'hf/imdb/train/bf16_autocast_compiled',
    'hf/imdb/train/tf32',
    'hf/imdb/train/fp32',
    'hf/imdb@3/train/bf16_autocast',
    'hf/imdb@3/train/bf16_autocast_compiled',
    'hf/imdb@3/train/tf32',
  ]
  assert [i.get('torch_compile') for i in items[:2]] == [None, 'inductor']
  # The compiled reference counts for "best", and the table shows it.
  doc = {
    'device_name': 'NVIDIA H200',
    'date': 'd',
    'versions': {},
    'settings': {'budget_s': 1},
    'elapsed_s': 1,
    'results': [
      {
        'impl': 'ours',
        'workload': 'imdb',
        'mode': 'train',
        'precision': 'bf16_cudnn',
        'status': 'ok',
        'median_s': 1.0,
        'batch': 4,
      },
      {
        'impl': 'hf',
        'workload': 'imdb',
        'mode': 'train',
        'precision': 'bf16_autocast',
        'status': 'ok',
        'median_s': 3.0,
        'batch': 4,
      },
      {
        'impl': 'hf',
        'workload': 'imdb',
        'mode': 'train',
        'precision': 'bf16_autocast_compiled',
        'status': 'ok',
        'median_s': 2.0,
        'batch': 4,
      },
    ],
  }
  doc['summary'] = gpu_bench_report.summarise(doc)
  row = doc['summary'][0]
  assert row['ref_best'] == 'bf16_autocast_compiled'
  assert row['throughput_ratio_best'] == pytest.approx(2.0)
  md = gpu_bench_report.to_markdown(doc)
  assert 'ref bf16 autocast + torch.compile' in md and '| 2.00x |' in md


def test_only_and_mfu_batch_flags():
  args = _args(
    '--only',
    'ours/*/infer/bf16,ours/imdb@5/train/*',
    '--mfu_batch',
    'imdb=5',
    '--mfu_batch',
    'imagenet_fourier=0',
  )
  items = gpu_bench_items.items_for(args, 'ours')
  assert _keys(items) == [
    'ours/imdb@5/train/bf16_cudnn',
    'ours/imdb@5/train/bf16',
    'ours/imdb/infer/bf16',
    'ours/imagenet_fourier/infer/bf16',
    'ours/imagenet_conv/infer/bf16',
    'ours/optical_flow/infer/bf16',
  ]
  assert items[0]['workload']['batch'] == 5
  assert items[0]['dtype'] == items[1]['dtype'] == 'bfloat16'
  assert (items[0]['attention_impl'], items[1]['attention_impl']) == (
    'cudnn',
    'auto',
  )
  assert gpu_bench_items.items_for(args, 'hf') == []
  cudnn = gpu_bench_items.items_for(_args('--only', '*bf16_cudnn'), 'ours')
  assert {i['attention_impl'] for i in cudnn} == {'cudnn'}
  with pytest.raises(ValueError, match='unknown workloads'):
    gpu_bench_items.items_for(_args('--workloads', 'imdb,nope'), 'ours')


def _result(impl, workload, mode, precision, median_s, batch=32, **kw):
  return dict(
    impl=impl,
    workload=workload,
    mode=mode,
    precision=precision,
    median_s=median_s,
    batch=batch,
    status='ok',
    **kw,
  )


def _doc(results, date='2026-01-01T00:00:00', elapsed=100.0):
  return {
    'device_name': 'NVIDIA H200',
    'date': date,
    'machine': {},
    'versions': {},
    'settings': {'budget_s': 420.0},
    'elapsed_s': elapsed,
    'results': results,
  }


def test_summary_ratios_and_mfu_from_cpu_counts():
  doc = _doc(
    [
      _result('ours', 'imagenet_fourier', 'train', 'bf16', 0.2),
      _result('ours', 'imagenet_fourier', 'train', 'bf16_cudnn', 0.1),
      _result('ours', 'imagenet_fourier', 'train', 'fp32', 0.4),
      _result('hf', 'imagenet_fourier', 'train', 'bf16_autocast', 0.6),
      _result('hf', 'imagenet_fourier', 'train', 'tf32', 0.5),
    ]
  )
  key = count_flops.flops_key('imagenet_fourier', 32, 'train')
  gpu_bench_report.fill_flops(doc['results'], {key: 98.94e12})
  (row,) = gpu_bench_report.summarise(doc)
  assert row['ours_best'] == 'bf16_cudnn' and row['ref_best'] == 'tf32'
  assert row['throughput_ratio_best'] == pytest.approx(5.0)  # 0.5 / 0.1
  assert row['throughput_ratio_bf16'] == pytest.approx(6.0)  # 0.6 / 0.1
  # 98.94 TFLOP / 0.1 s / 989.4 TFLOP/s bf16 peak = 100 %.
  assert row['ours_best_mfu'] == pytest.approx(1.0)
  # fp32 is held against the TF32 peak: 98.94e12 / 0.4 / 494.7e12 = 50 %.
  assert row['ours_fp32_mfu'] == pytest.approx(0.5)
  assert doc['results'][0]['flops_source'].startswith('count_flops')


def test_merge_keeps_measured_items_over_later_skips():
  run1 = _doc(
    [
      _result('hf', 'imdb', 'infer', 'tf32', 0.013, batch=4),
      _result(
        'ours',
        'imdb',
        'infer',
        'bf16',
        None,
        batch=4,
      )
      | {'status': 'skipped'},
    ]
  )
  run2 = _doc(
    [
      _result('ours', 'imdb', 'infer', 'bf16', 0.004, batch=4),
      _result('hf', 'imdb', 'infer', 'tf32', None, batch=4)
      | {'status': 'skipped'},
    ],
    date='2026-01-01T01:00:00',
  )
  merged = gpu_bench_report.merge_docs([run1, run2])
  by_impl = {r['impl']: r for r in merged['results']}
  assert by_impl['hf']['median_s'] == 0.013 and by_impl['hf']['run'] == 0
  assert by_impl['ours']['median_s'] == 0.004 and by_impl['ours']['run'] == 1
  (row,) = gpu_bench_report.summarise(merged)
  assert row['runs'] == {'ours': [2], 'hf': [1]}
  assert row['throughput_ratio_best'] == pytest.approx(0.013 / 0.004)
  assert 'runs (ours / ref)' in gpu_bench_report.to_markdown(
    dict(merged, summary=[row])
  )
  with pytest.raises(ValueError, match='different cards'):
    gpu_bench_report.merge_docs([run1, dict(run2, device_name='NVIDIA H100')])


def test_count_flops_items_and_linearity():
  assert count_flops.parse_item('imdb:4:train') == ('imdb', 4, 'train')
  with pytest.raises(ValueError, match='WORKLOAD:BATCH:MODE'):
    count_flops.parse_item('imdb:4')
  flops = count_flops.count(
    [('imdb', 1, 'infer'), ('imdb', 2, 'infer')], smoke=True
  )
  one, two = flops['imdb@1/infer'], flops['imdb@2/infer']
  assert one > 0 and two == pytest.approx(2 * one, rel=0.01)
  w = W.standard_workloads(True, {'imdb': 1})['imdb']
  assert w.batch == 1


@pytest.mark.slow
def test_gpu_targets_script_smoke_brings_back_eight_named_files(tmp_path):
  # The one script a GPU lease runs, end to end at tiny sizes on the CPU:
  # every step ran (no 'failed' line), and its output is what a device call
  # brings back: at most 8 plain files named in [A-Za-z0-9._-].
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / 'out'
  proc = subprocess.run(
    [os.path.join(root, 'benchmarks', 'gpu_targets.sh'), str(out), '--smoke'],
    env={
      **os.environ,
      'PYTHON': sys.executable,
      'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax'),
    },
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'failed' not in proc.stdout, proc.stdout[-3000:]
  names = sorted(os.listdir(out))
  assert len(names) == 8, names
  assert all(re.fullmatch(r'[A-Za-z0-9._-]+', n) for n in names), names
  assert {'ceilings.json', 'gpu.json', 'gpu.md', 'traces.tar'} <= set(names)
  with tarfile.open(out / 'traces.tar') as tar:
    assert len([n for n in tar.getnames() if n.endswith('.xplane.pb.gz')]) == 2
  # The script turns JAX's persistent compilation cache on.
  assert os.listdir(tmp_path / 'jax')


@pytest.mark.parametrize('mib, fourier_batch', [(81559, '64'), (143771, None)])
def test_gpu_targets_picks_fouriers_mfu_batch_by_card_memory(
  tmp_path, mib, fourier_batch
):
  # Fourier's batch-128 cuDNN step needs 107 GB (gpu_roofline.py): it fits
  # an H200's pool, not an 80 GB H100's. A stand-in nvidia-smi reports the
  # card's memory and a stand-in Python records what each step was asked.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  log = tmp_path / 'calls.log'
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'nvidia-smi').write_text(f'#!/bin/sh\necho {mib}\n')
  (bin_dir / 'python').write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
  for name in ('nvidia-smi', 'python'):
    os.chmod(bin_dir / name, 0o755)
  proc = subprocess.run(
    [os.path.join(root, 'benchmarks', 'gpu_targets.sh'), str(tmp_path / 'o')],
    env={
      **os.environ,
      'PATH': f'{bin_dir}:{os.environ["PATH"]}',
      'PYTHON': str(bin_dir / 'python'),
    },
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  bench = [
    ln for ln in log.read_text().splitlines() if 'benchmarks.gpu_bench' in ln
  ]
  assert len(bench) == 1, log.read_text()
  if fourier_batch:
    assert f'--mfu_batch imagenet_fourier={fourier_batch}' in bench[0]
    assert f'{mib} MiB card' in proc.stdout
  else:
    assert '--mfu_batch' not in bench[0]


@pytest.mark.slow
def test_profile_reuses_the_benchmark_workers_compiled_step(tmp_path):
  # What gpu_targets.sh's cache relies on: the GPU benchmark's worker (no
  # CPU process settings, as on a GPU) and profile_ours compile the same
  # train step, so the profile finds it in the cache: one entry, not two.
  import dataclasses
  import json

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {
    **os.environ,
    'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax'),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
  }
  w = W.standard_workloads(True)['imagenet_conv']
  item = {
    'impl': 'ours',
    'mode': 'train',
    'precision': 'bf16_cudnn',
    'workload': dataclasses.asdict(w),
    'dtype': 'bfloat16',
    'attention_impl': 'cudnn',
  }
  spec = {
    'items': [item],
    'device': 'cpu',
    'repeats': 1,
    'warmup': 1,
    'low_memory_cpu': False,
    'items_cache': True,
  }
  worker = subprocess.run(
    [sys.executable, '-m', 'benchmarks.worker', '--spec', json.dumps(spec)],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert '"status": "ok"' in worker.stdout, worker.stderr[-2000:]
  steps = lambda: sorted(
    n for n in os.listdir(tmp_path / 'jax') if n.startswith('jit_step-')
  )
  assert len(steps()) == 1
  prof = subprocess.run(
    [
      sys.executable,
      '-m',
      'benchmarks.profile_ours',
      '--smoke',
      '--workload',
      'imagenet_conv',
      '--mode',
      'train',
      '--batch',
      str(w.batch),
      '--ours',
      'dtype=bfloat16',
      '--ours',
      'attention_impl=cudnn',
      '--out',
      str(tmp_path / 'p'),
    ],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert prof.returncode == 0, prof.stderr[-2000:]
  assert len(steps()) == 1, steps()


_FAKE_WORKER = """
import json, os, sys
spec = json.loads(sys.argv[sys.argv.index('--spec') + 1])
with open(os.environ['FAKE_WORKER_LOG'], 'a') as f:
  f.write(' '.join(i['workload']['name'] for i in spec['items']) + '\\n')
for item in spec['items']:
  if item['workload']['name'] == 'boom':
    sys.stderr.write('fatal: cuDNN said no\\n')
    sys.stderr.flush()
    os.abort()
  print('RESULT ' + json.dumps({
      'impl': 'ours', 'workload': item['workload']['name'],
      'mode': item['mode'], 'precision': item['precision'],
      'status': 'ok', 'median_s': 0.1}), flush=True)
"""


def test_a_crashed_worker_costs_one_item_and_the_rest_run_again(
  tmp_path, monkeypatch
):
  # A kernel library's fatal error ends the worker process mid-item; the
  # items after it must still be measured (in a fresh process), and the
  # one that crashed is reported as such with the process's stderr.
  import time

  worker = tmp_path / 'fake_worker.py'
  worker.write_text(_FAKE_WORKER)
  log = tmp_path / 'log'
  monkeypatch.setenv('FAKE_WORKER_LOG', str(log))
  items = [
    {
      'workload': {'name': n, 'batch': 2},
      'mode': 'train',
      'precision': 'bf16_cudnn',
    }
    for n in ('a', 'boom', 'c', 'd')
  ]
  monkeypatch.setattr(gpu_bench_items, 'items_for', lambda args, impl: items)
  results = gpu_bench.run_impl(
    _args(),
    'ours',
    'cpu',
    time.time() + 60,
    time.time() + 90,
    worker_cmd=[sys.executable, str(worker)],
  )
  got = {r['workload']: r['status'] for r in results}
  assert got == {'a': 'ok', 'boom': 'crashed', 'c': 'ok', 'd': 'ok'}
  crashed = next(r for r in results if r['status'] == 'crashed')
  assert 'cuDNN said no' in crashed['stderr_tail']
  # Two processes: all four items, then the two after the crash.
  assert log.read_text().splitlines() == ['a boom c d', 'c d']
