"""Benchmark drivers check their arguments before starting any worker.

A bad argument is one argparse error line (no traceback), a failed
measurement exits non-zero, a default (non-smoke) run never overwrites the
committed result files, and benchmarks/flow_generated.py refuses a bad tile
overlap before training and still writes its JSON when a real-data
evaluation fails.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _usage_error(main, argv, capsys):
  """The argparse error line of `main(argv)` (which must exit 2 at once)."""
  with pytest.raises(SystemExit) as e:
    main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert 'error: ' in err
  return err


@pytest.mark.parametrize(
  'argv,message',
  [
    (['--batch', 'imdb=0'], 'a batch is a whole number >= 1'),
    (['--batch', 'imdb=-3'], 'a batch is a whole number >= 1'),
    (['--batch', 'imgnet=2'], "unknown workload(s) ['imgnet']"),
    (['--ours', 'remat=maybe'], 'remat must be True or False'),
    (['--ours', 'attention_impl=flash'], 'attention_impl=flash'),
    (['--ours', 'dtype=float8'], 'dtype must be one of'),
    (['--ours', 'remats=true'], '--ours keys must be among'),
    (['--workloads', 'imdbx'], "unknown workloads ['imdbx'] (--workloads)"),
    (['--modes', 'eval'], '--modes takes train/infer'),
    (['--repeats', '0'], '--repeats must be >= 1'),
  ],
)
def test_compare_reference_rejects_bad_args_up_front(
  argv, message, capsys, monkeypatch
):
  from benchmarks import compare_reference  # pylint: disable=g-import-not-at-top
  from benchmarks import runner  # pylint: disable=g-import-not-at-top

  started = []
  monkeypatch.setattr(
    runner, 'run_worker', lambda *a, **k: started.append(a) or {}
  )
  # No --smoke: the full-size run must not start either.
  err = _usage_error(
    compare_reference.main,
    ['--workloads', 'imdb', '--impls', 'ours'] + [a for a in argv if a]
    if argv[0] != '--workloads'
    else ['--impls', 'ours'] + argv,
    capsys,
  )
  assert message in err
  assert not started


def test_benchmark_cli_error_is_one_line_without_traceback(subprocess_env):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'benchmarks.compare_reference',
      '--workloads',
      'imdb',
      '--batch',
      'imdb=0',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert 'Traceback' not in proc.stderr
  assert (
    proc.stderr.strip()
    .splitlines()[-1]
    .endswith('error: --batch imdb=0: a batch is a whole number >= 1.')
  )
  assert proc.stdout == ''


@pytest.mark.parametrize(
  'argv,message',
  [
    (['--sweeps', 'input'], '--sweeps takes inputs and/or queries'),
    (['--series', 'ours,torch'], '--series takes'),
    (['--inputs', '0,256'], '--inputs takes comma-separated whole numbers'),
    (['--input_modes', 'eval'], '--input_modes takes'),
  ],
)
def test_scaling_rejects_bad_args_up_front(argv, message, capsys):
  from benchmarks import scaling  # pylint: disable=g-import-not-at-top

  assert message in _usage_error(scaling.main, ['--no_plot'] + argv, capsys)


@pytest.mark.parametrize(
  'argv,message',
  [
    (['--workload', 'imdbx', '--variant', 'default'], 'unknown --workload'),
    (['--variant', 'remat=maybe'], 'remat must be True or False'),
    (['--variant', 'bogus=1'], 'unknown perf option'),
    (
      [
        '--mode',
        'infer',
        '--workload',
        'optical_flow',
        '--variant',
        'default',
        '--rounds',
        '0',
      ],
      '--rounds must be >= 1',
    ),
  ],
)
def test_paired_options_rejects_bad_args_up_front(argv, message, capsys):
  from benchmarks import paired_options  # pylint: disable=g-import-not-at-top

  assert message in _usage_error(paired_options.main, argv, capsys)


@pytest.mark.parametrize(
  'argv,message',
  [
    (['--workload', 'imdbx'], 'unknown --workload'),
    (['--batch', '0'], '--batch must be >= 1'),
    (['--ours', 'remat=maybe'], 'remat must be True or False'),
  ],
)
def test_profile_ours_rejects_bad_args_up_front(
  argv, message, capsys, tmp_path
):
  from benchmarks import profile_ours  # pylint: disable=g-import-not-at-top

  assert message in _usage_error(
    profile_ours.main, argv + ['--out', str(tmp_path)], capsys
  )


def test_failed_measurement_exits_non_zero(tmp_path, monkeypatch):
  from benchmarks import compare_reference  # pylint: disable=g-import-not-at-top
  from benchmarks import runner  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(
    runner,
    'run_worker',
    lambda spec, *a, **k: {
      'status': 'error',
      'impl': spec['impl'],
      'mode': spec['mode'],
      'workload': spec['workload']['name'],
      'batch': spec['workload']['batch'],
    },
  )
  code = compare_reference.main(
    [
      '--smoke',
      '--workloads',
      'imdb',
      '--modes',
      'infer',
      '--impls',
      'ours',
      '--out',
      str(tmp_path),
    ]
  )
  assert code == 1
  assert (tmp_path / 'compare.json').exists()


def test_default_benchmark_out_never_replaces_committed_results(monkeypatch):
  from benchmarks import compare_reference  # pylint: disable=g-import-not-at-top
  from benchmarks import runner  # pylint: disable=g-import-not-at-top

  results = os.path.join(REPO, 'benchmarks', 'results')
  committed = os.path.join(results, 'cpu', 'compare.json')
  before = open(committed).read() if os.path.exists(committed) else None
  out = runner.results_dir(None, False, 'cpu')
  assert os.path.dirname(out) == os.path.join(results, 'cpu')
  assert os.path.basename(out).startswith('run-')
  assert runner.results_dir(None, True, 'cpu') == os.path.join(results, 'smoke')
  assert runner.results_dir('/x', False, 'cpu') == '/x'
  # A default (non-smoke) run end to end, with the measurement faked.
  monkeypatch.setattr(
    runner,
    'run_worker',
    lambda spec, *a, **k: {
      'status': 'ok',
      'impl': spec['impl'],
      'mode': spec['mode'],
      'workload': spec['workload']['name'],
      'batch': spec['workload']['batch'],
      'median_s': 0.5,
      'times_s': [0.5],
      'peak_rss': 1,
      'first_s': 1.0,
    },
  )
  made = []
  real = runner.new_run_dir
  monkeypatch.setattr(
    runner, 'new_run_dir', lambda kind: made.append(real(kind)) or made[-1]
  )
  try:
    assert (
      compare_reference.main(
        [
          '--workloads',
          'imdb',
          '--modes',
          'infer',
          '--impls',
          'ours',
          '--repeats',
          '1',
        ]
      )
      == 0
    )
    assert os.path.exists(os.path.join(made[0], 'compare.json'))
  finally:
    import shutil  # pylint: disable=g-import-not-at-top

    for d in made:
      shutil.rmtree(d, ignore_errors=True)
  after = open(committed).read() if os.path.exists(committed) else None
  assert after == before


def test_flow_generated_bad_overlap_fails_before_training(
  tmp_path, subprocess_env
):
  proc = subprocess.run(
    [
      sys.executable,
      'benchmarks/flow_generated.py',
      '--steps',
      '2',
      '--sintel',
      str(tmp_path),
      '--tile_overlap',
      '20',
      '--workdir',
      str(tmp_path / 'w'),
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert 'pass --tile_overlap=<value> to this script' in proc.stderr
  assert '--config.eval_tile_overlap' not in proc.stderr
  assert not (tmp_path / 'w').exists()  # No training started.


@pytest.mark.slow
def test_flow_generated_writes_json_when_real_data_eval_fails(
  tmp_path, subprocess_env
):
  (tmp_path / 'empty').mkdir()
  output = tmp_path / 'result.json'
  proc = subprocess.run(
    [
      sys.executable,
      'benchmarks/flow_generated.py',
      '--steps',
      '2',
      '--batch',
      '2',
      '--eval_pairs',
      '4',
      '--middlebury',
      str(tmp_path / 'empty'),
      '--workdir',
      str(tmp_path / 'w'),
      '--output',
      str(output),
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert 'error: middlebury' in proc.stderr
  with open(output) as f:
    summary = json.load(f)
  assert summary['steps'] == 2 and summary['val_pairs'] == 4
  assert 'folder not found' in summary['real_data']['middlebury']['error']
