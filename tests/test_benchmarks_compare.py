"""compare_reference.py: its flags, and the table that reports ours / reference.

Why: the CPU table is what people read; a ratio the wrong way round, a
failed measurement shown as a number, or unequal parameter counts shown as
equal would mislead them, and a bad flag should fail before minutes of
workers start.
"""

import pytest

from benchmarks import compare_reference


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
