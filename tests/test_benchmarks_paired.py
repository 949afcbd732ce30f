"""paired_options.py: A/B of our performance options in one process.

Why: the defaults were chosen from variants alternated round by round in one
process; the script must run every variant on the same build and timing,
report each against the first, and refuse an option it does not know before
anything is built.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import paired_options

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
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
