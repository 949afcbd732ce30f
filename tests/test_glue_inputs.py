"""GLUE inputs as users bring them, and the messages of other bad inputs.

* Sentence-pair models (7 of the 9 GLUE tasks) take pairs in
  `experiments.predict` and refuse single texts with one message saying how
  to pass pairs.
* The original GLUE TSVs (string labels such as RTE's 'entailment' /
  'not_entailment', QQP's `is_duplicate` column) train with the glue_bytes
  configs as they are, predictions print class names, and errors name the
  command-line flags.
* Small messages: malformed CSV / TSV rows, a label out of range, the eval
  data a flow folder or MLM stream reports.
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
