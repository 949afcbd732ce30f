"""The Perceiver AR benchmarks run end to end at toy sizes and write what
their docs say: the generation benchmark's two decoders give the same
tokens, and the scaling benchmark measures every context it is given."""

import json
import os

import pytest

from benchmarks import perceiver_ar_generation
from benchmarks import perceiver_ar_scaling


@pytest.mark.slow
def test_generation_benchmark_compares_the_same_tokens(tmp_path, capsys):
  # 24 new tokens past M=8 latents: the strided cache resets several times.
  perceiver_ar_generation.main(
    [
      '--context=32',
      '--num_latents=8',
      '--channels=16',
      '--heads=2',
      '--layers=1',
      '--prompt=10',
      '--new_tokens=24',
      f'--out={tmp_path}',
    ]
  )
  with open(os.path.join(tmp_path, 'perceiver_ar_generation.json')) as f:
    result = json.load(f)['result']
  assert result['same_tokens'] is True
  for name in ('cached', 'full recompute'):
    assert result[name]['tokens_per_s'] > 0
  table = (tmp_path / 'perceiver_ar_generation.md').read_text()
  assert '| cached |' in table and 'same tokens: True' in table
  assert 'Speed-up' in capsys.readouterr().out


@pytest.mark.slow
def test_scaling_benchmark_measures_a_context_in_its_own_process(tmp_path):
  perceiver_ar_scaling.main(['--smoke', '--contexts=32', f'--out={tmp_path}'])
  with open(os.path.join(tmp_path, 'perceiver_ar_scaling.json')) as f:
    (point,) = json.load(f)['points']
  assert 'error' not in point, point
  assert point['context'] == 32 and point['median_s'] > 0
  assert point['peak_rss_gib'] > 0 and point['loss'] > 0
  assert (tmp_path / 'perceiver_ar_scaling.md').exists()
