"""GLUE inputs as users bring them, and benchmark arguments checked up front.

* Sentence-pair models (7 of the 9 GLUE tasks) take pairs in
  `experiments.predict` and refuse single texts with one message saying how
  to pass pairs.
* The original GLUE TSVs (string labels such as RTE's 'entailment' /
  'not_entailment', QQP's `is_duplicate` column) train with the glue_bytes
  configs as they are, predictions print class names, and errors name the
  command-line flags.
* Benchmark drivers reject bad arguments before starting any worker, and a
  default (non-smoke) run never overwrites the committed result files.
"""

import csv
import json
import os
import subprocess
import sys

import pytest

from configs import glue_bytes
from experiments import input_pipeline
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib
from experiments import workdir as workdir_lib
from experiments.tasks import classification
from tests.helpers import override_config as _override

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTE_DEV = '/work/shared/data/glue_rte/dev.tsv'


def _rte_rows():
  """(sentence1, sentence2, label id) rows: the shared RTE sample when
  present (HF layout, 0 = entailment), else generated ones."""
  if os.path.exists(RTE_DEV):
    with open(RTE_DEV, encoding='utf-8') as f:
      rows = list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
    return [
      (r['sentence1'], r['sentence2'], int(r['label'])) for r in rows[:24]
    ]
  return [
    (f'A man plays {i}.', f'Someone plays {i % 3}.', i % 2) for i in range(24)
  ]


def _write_original_rte(path, rows):
  """The original GLUE RTE layout: index, sentence1, sentence2, label
  with string labels."""
  names = ('entailment', 'not_entailment')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('index\tsentence1\tsentence2\tlabel\n')
    for i, (a, b, label) in enumerate(rows):
      f.write(f'{i}\t{a}\t{b}\t{names[label]}\n')


@pytest.fixture(scope='module')
def rte_workdir(tmp_path_factory):
  """A tiny RTE model trained on original-layout TSVs (string labels)."""
  root = tmp_path_factory.mktemp('rte')
  rows = _rte_rows()
  _write_original_rte(root / 'train.tsv', rows[:16])
  _write_original_rte(root / 'dev.tsv', rows[16:])
  config = _override(
    glue_bytes.get_config('rte,tiny'),
    data__source=f'tsv:{root}/{{split}}.tsv',
    data__eval_split='dev',
  )
  workdir = str(root / 'workdir')
  result = train_lib.train_and_evaluate(config, workdir)
  return workdir, result


def test_original_rte_tsv_string_labels_train_and_predict_names(rte_workdir):
  workdir, result = rte_workdir
  assert result['eval']['num_examples'] == 8
  with open(os.path.join(workdir, 'data_info.json')) as f:
    info = json.load(f)
  assert info['label_names'] == ['entailment', 'not_entailment']
  assert info['text_fields'] == ['sentence1', 'sentence2']
  lines = predict_lib.predict_lines(
    workdir, ['A man plays a guitar.\tA man plays music.']
  )
  label = lines[-1].split(' (p=')[0]
  assert label in ('entailment', 'not_entailment')
  assert lines[-1].endswith('A man plays a guitar. [SEP] A man plays music.')


def test_pair_model_refuses_single_text_and_takes_pairs(rte_workdir):
  workdir, _ = rte_workdir
  with pytest.raises(ValueError, match='trained on sentence pairs') as e:
    predict_lib.predict_lines(workdir, ['A man is dancing.'])
  assert '--pair=' in str(e.value) and '<TAB>' in str(e.value)
  tab = predict_lib.predict_lines(workdir, ['One text.\tAnother text.'])
  flag = predict_lib.predict_lines(
    workdir, ['One text.'], pairs=['Another text.']
  )
  assert tab[1:] == flag[1:]
  # The model sees [CLS] a [SEP] b [SEP], not the text with a tab in it.
  config = workdir_lib.load_config(workdir)
  fields = classification.pair_fields(
    workdir_lib.read_data_info(workdir), config
  )
  _, seconds, _ = classification.split_pairs(workdir, fields, ['a\tb'])
  batch = classification.text_batch(['a'], config, seconds)
  assert int(batch['attention_mask'].sum()) == 5


def test_predict_cli_pair_flag_and_single_text_error(
  rte_workdir, subprocess_env
):
  workdir, _ = rte_workdir
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.predict',
      f'--workdir={workdir}',
      'A man is dancing.',
      '--pair=A man dances.',
      'Two.',
      '--pair=Three.',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [l for l in proc.stdout.splitlines() if '(p=' in l]
  assert lines[0].endswith('A man is dancing. [SEP] A man dances.')
  assert lines[1].endswith('Two. [SEP] Three.')
  assert lines[0].split(' (p=')[0] in ('entailment', 'not_entailment')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.predict',
      f'--workdir={workdir}',
      'A man is dancing.',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1
  assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
  assert 'trained on sentence pairs' in proc.stderr
  assert '--pair=' in proc.stderr


def test_single_text_model_refuses_pair(tmp_path):
  config = _override(
    glue_bytes.get_config('sst2,tiny'), data__text_fields='sentence'
  )
  fields = classification.pair_fields({}, config)
  with pytest.raises(ValueError, match='single texts'):
    classification.split_pairs(str(tmp_path), fields, ['a'], pairs=['b'])
  texts, seconds, _ = classification.split_pairs(
    str(tmp_path), fields, ['a\tb']
  )
  assert texts == ['a\tb'] and seconds is None


def test_pair_fields_from_config_without_data_info(tmp_path):
  """Workdirs written before data_info.json recorded the fields."""
  info = workdir_lib.read_data_info(str(tmp_path))  # None there: {}.
  stsb = glue_bytes.get_config('stsb,tiny')  # text_fields '' = the task's.
  assert classification.pair_fields(info, stsb) == ['sentence1', 'sentence2']
  assert (
    classification.pair_fields(info, glue_bytes.get_config('cola,tiny')) is None
  )
  two = _override(glue_bytes.get_config('cola,tiny'), data__text_fields='1,2')
  assert classification.pair_fields(info, two) == ['1', '2']


def test_qqp_is_duplicate_column_and_numeric_labels(tmp_path):
  path = tmp_path / 'train.tsv'
  with open(path, 'w', encoding='utf-8') as f:
    f.write('id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n')
    for i in range(6):
      f.write(
        f'{i}\t{2 * i}\t{2 * i + 1}\tHow do I {i}?\tWhat is {i}?\t{i % 2}\n'
      )
  config = _override(
    glue_bytes.get_config('qqp,tiny'), data__source=f'tsv:{path}'
  )
  table, info = input_pipeline.load_table(config, 'train')
  assert list(table['label']) == [0, 1, 0, 1, 0, 1]
  assert info['label_names'] == ['not_duplicate', 'duplicate']
  assert info['text_fields'] == ['question1', 'question2']


def test_mnli_gold_label_strings(tmp_path):
  path = tmp_path / 'dev_matched.tsv'
  names = ('entailment', 'neutral', 'contradiction')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('index\tpremise\thypothesis\tgold_label\n')
    for i in range(6):
      f.write(f'{i}\tP {i}.\tH {i}.\t{names[i % 3]}\n')
  config = _override(
    glue_bytes.get_config('mnli,tiny'), data__source=f'tsv:{path}'
  )
  table, _ = input_pipeline.load_table(config, 'dev_matched')
  assert list(table['label']) == [0, 1, 2, 0, 1, 2]


def test_text_errors_name_cli_flags(tmp_path):
  # A non-GLUE config: string labels without label names.
  from configs import imdb_bytes  # pylint: disable=g-import-not-at-top

  path = tmp_path / 'train.csv'
  path.write_text('text,label\ngood,pos\nbad,neg\n')
  config = _override(imdb_bytes.get_config('tiny'), data__source=f'csv:{path}')
  with pytest.raises(ValueError) as e:
    input_pipeline.load_table(config, 'train')
  assert '--config.data.label_names=' in str(e.value)
  assert 'classes=[' not in str(e.value)
  # No label column that can be guessed.
  path = tmp_path / 'odd.tsv'
  path.write_text('question1\tquestion2\tdup\nA?\tB?\t1\n')
  config = _override(
    glue_bytes.get_config('qqp,tiny'), data__source=f'tsv:{path}'
  )
  with pytest.raises(ValueError) as e:
    input_pipeline.load_table(config, 'train')
  assert '--config.data.label_field=' in str(e.value)
  assert 'label_field="name"' not in str(e.value)
  # A wrong label string against the GLUE class names.
  path = tmp_path / 'rte.tsv'
  path.write_text('sentence1\tsentence2\tlabel\nA.\tB.\tentailed\n')
  config = _override(
    glue_bytes.get_config('rte,tiny'), data__source=f'tsv:{path}'
  )
  with pytest.raises(ValueError, match="'entailed' is not one of the classes"):
    input_pipeline.load_table(config, 'train')


def test_offline_tfds_hint_names_cli_flags():
  from perceiver_io.data import text as text_data  # pylint: disable=g-import-not-at-top

  hint = input_pipeline.cli_hint(text_data.local_source_hint('imdb_reviews'))
  assert (
    "--config.data.source='csv:/path/{split}.csv' with "
    '--config.data.text_fields=text --config.data.label_field=label' in hint
  )
  hint = input_pipeline.cli_hint(text_data.local_source_hint('glue/mrpc'))
  assert '--config.data.text_fields=sentence1,sentence2' in hint
  assert 'text_fields=(' not in hint


# ---------------------------------------------------------------- benchmarks


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


# ------------------------------------------------------------ small messages


def test_malformed_csv_and_tsv_rows_give_the_right_reason(tmp_path):
  from perceiver_io.data import text as text_data  # pylint: disable=g-import-not-at-top

  bad_csv = tmp_path / 'bad.csv'
  bad_csv.write_text('text,label\nfine,1\ntoo,many,0\n')
  with pytest.raises(ValueError, match='row 2 \\(line 3\\)') as e:
    text_data.make_text_dataset(
      f'csv:{bad_csv}', 'train', max_length=16, repeat=False, batch_size=2
    )
  assert 'quoting off' not in str(e.value)
  assert 'a comma inside an unquoted text' in str(e.value)
  bad_tsv = tmp_path / 'bad.tsv'
  bad_tsv.write_text('sentence\tlabel\nfine\t1\na\ttab\t0\n')
  with pytest.raises(ValueError, match='quoting off, a tab inside a text'):
    text_data.make_text_dataset(
      f'tsv:{bad_tsv}', 'train', max_length=16, repeat=False, batch_size=2
    )


def test_label_out_of_range_row_is_one_based():
  import numpy as np  # pylint: disable=g-import-not-at-top

  config = glue_bytes.get_config('cola,tiny')
  good = {'label': np.array([0, 1])}
  with pytest.raises(
    ValueError,
    match=r'train row 3 \(1 = the first data row\) has '
    r'label 5.*--config\.data\.num_classes',
  ):
    classification.check_labels(config, {'label': np.array([0, 1, 5])}, good)


def test_flow_directory_eval_header_names_the_source_not_a_split():
  from configs import optical_flow  # pylint: disable=g-import-not-at-top

  config = _override(
    optical_flow.get_config('tiny'), data__eval_source='sintel:/data/sintel'
  )
  assert tasks.get(config).eval_data_description() == (
    'source sintel:/data/sintel'
  )
  config = _override(
    optical_flow.get_config('tiny'), data__eval_source='generated'
  )
  assert tasks.get(config).eval_data_description().startswith('split ')
  assert (
    tasks.get(glue_bytes.get_config('mnli,tiny')).eval_data_description()
    == 'split validation_matched'
  )


def test_mlm_data_log_has_no_made_up_counts(tmp_path, caplog):
  import logging  # pylint: disable=g-import-not-at-top
  from configs import mlm_bytes  # pylint: disable=g-import-not-at-top

  corpus = tmp_path / 'corpus.txt'
  corpus.write_text(
    ''.join(f'the film number {i} was fine\n' for i in range(20))
  )
  config = _override(
    mlm_bytes.get_config('tiny'),
    data__source=f'text:{corpus}',
    num_train_steps=1,
  )
  with caplog.at_level(logging.INFO):
    train_lib.train_and_evaluate(config, str(tmp_path / 'mlm'))
  data_lines = [
    r.getMessage()
    for r in caplog.records
    if r.getMessage().startswith('data: ')
  ]
  assert data_lines and 'MLM stream from text:' in data_lines[0]
  assert '-1 eval' not in data_lines[0] and '0 train' not in data_lines[0]
