"""Local text files as sources: the split syntax, CSV / TSV / JSONL and aclImdb
layouts (BOMs, quotes, invalid UTF-8, headerless columns), errors that name
the file and row, and truncation counts.

Expected values are written by hand or come from the HF-verified tokenizer
applied to the hand-written text, never from the pipeline itself.
"""

import json

import numpy as np
import pytest

from perceiver_io.data import text as text_lib
from tests.text_data_helpers import all_batches as _all_batches
from tests.text_data_helpers import ids as _ids
from tests.text_data_helpers import write as _write


# ------------------------------------------------------------- split syntax
def test_parse_split_by_hand():
  select = lambda s, n: [
    i for p in text_lib.parse_split(s) for i in p.indices(n)
  ]
  assert select('train', 5) == [0, 1, 2, 3, 4]
  assert select('train[:3]+train[-2:]', 10) == [0, 1, 2, 8, 9]
  assert select('dev[2:4]', 10) == [2, 3]
  assert select('x[10%:30%]', 10) == [1, 2]
  assert select('x[:33%]', 10) == [0, 1, 2]  # 3.3 rounds to 3.
  assert select('x[-20%:]', 10) == [8, 9]
  assert [p.name for p in text_lib.parse_split('a[:1] + b')] == ['a', 'b']
  for bad in ('', 'train[1:2', 'train[a:b]', 'train[:101%]', 'train[]'):
    with pytest.raises(ValueError, match='split'):
      select(bad, 10)


# ---------------------------------------------------------------- formats
def test_tsv_with_bom_quotes_and_invalid_utf8(tmp_path):
  rows = [
    'he said "great',
    'a "quoted" word',
    '',
    "it's \u00e9t\u00e9 \U0001f600",
  ]
  data = '\ufeffsentence\tlabel\n' + ''.join(
    f'{r}\t{i % 2}\n' for i, r in enumerate(rows)
  )
  data = data.encode('utf-8') + b'bad \xff\xfe bytes\t1\n'
  path = _write(str(tmp_path / 'dev.tsv'), data)
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}', 'dev', max_length=32, batch_size=8, repeat=False
  )
  (batch,) = _all_batches(ds)
  assert info.text_fields == ('sentence',) and info.label_field == 'label'
  want = [_ids(r) for r in rows] + [_ids(b'bad \xff\xfe bytes')]
  np.testing.assert_array_equal(batch['input_ids'][:5], want)
  np.testing.assert_array_equal(batch['label'][:5], [0, 1, 0, 1, 1])
  np.testing.assert_array_equal(batch['mask'], [1, 1, 1, 1, 1, 0, 0, 0])
  assert (
    batch['input_ids'].dtype == np.int32
    and batch['attention_mask'].dtype == np.int32
  )
  assert batch['label'].dtype == np.int32 and batch['mask'].dtype == np.float32
  assert info.stats.num_empty == 1 and info.stats.num_invalid_utf8 == 1
  assert info.stats.label_counts == {0: 2, 1: 3}


def test_csv_pairs_with_quoted_commas_and_newlines(tmp_path):
  path = _write(
    str(tmp_path / 'train.csv'),
    'id,q1,q2,label\n'
    '1,"a, b","line one\nline two",yes\n'
    '2,"say ""hi""",plain,no\n',
  )
  ds, info = text_lib.make_text_dataset(
    f'csv:{path}',
    'train',
    max_length=40,
    batch_size=2,
    repeat=False,
    text_fields=('q1', 'q2'),
    label_field='label',
    classes=['no', 'yes'],
  )
  (batch,) = _all_batches(ds)
  np.testing.assert_array_equal(
    batch['input_ids'],
    [_ids('a, b', 'line one\nline two', 40), _ids('say "hi"', 'plain', 40)],
  )
  np.testing.assert_array_equal(batch['label'], [1, 0])
  assert info.classes == ('no', 'yes') and info.num_classes == 2


def test_jsonl_pairs_guessed_fields_and_split_file_template(tmp_path):
  for name, n in (('train', 5), ('dev', 3)):
    _write(
      str(tmp_path / f'{name}.jsonl'),
      ''.join(
        json.dumps(
          {
            'premise': f'{name} p{i}',
            'hypothesis': f'h{i}',
            'label': ['entailment', 'neutral', 'contradiction'][i % 3],
          }
        )
        + '\n'
        for i in range(n)
      ),
    )
  source = f'jsonl:{tmp_path}/{{split}}.jsonl'
  ds, info = text_lib.make_text_dataset(
    source,
    'train[-2:]+dev[:1]',
    max_length=24,
    batch_size=4,
    repeat=False,
    classes=text_lib.GLUE_TASKS['mnli'].classes,
  )
  (batch,) = _all_batches(ds)
  assert (
    info.text_fields == ('premise', 'hypothesis') and info.num_examples == 3
  )
  np.testing.assert_array_equal(
    batch['input_ids'][:3],
    [
      _ids('train p3', 'h3', 24),
      _ids('train p4', 'h4', 24),
      _ids('dev p0', 'h0', 24),
    ],
  )
  np.testing.assert_array_equal(batch['label'][:3], [0, 1, 0])


def test_aclimdb_layout(tmp_path):
  reviews = {
    ('train', 'neg', '3_2'): 'awful',
    ('train', 'pos', '1_9'): 'great <br />film',
    ('train', 'pos', '10_8'): 'good',
    ('train', 'neg', '2_1'): 'bad',
    ('test', 'pos', '0_10'): 'fine',
  }
  for (split, label, stem), review in reviews.items():
    _write(str(tmp_path / 'aclImdb' / split / label / f'{stem}.txt'), review)
  ds, info = text_lib.make_text_dataset(
    f'aclimdb:{tmp_path}/aclImdb',
    'train',
    max_length=20,
    batch_size=4,
    repeat=False,
  )
  (batch,) = _all_batches(ds)
  # Ordered by review id: 1 (pos), 2 (neg), 3 (neg), 10 (pos).
  np.testing.assert_array_equal(
    batch['input_ids'],
    [
      _ids('great <br />film', max_length=20),
      _ids('bad', max_length=20),
      _ids('awful', max_length=20),
      _ids('good', max_length=20),
    ],
  )
  np.testing.assert_array_equal(batch['label'], [1, 0, 0, 1])
  assert info.classes == ('neg', 'pos')
  _, test_info = text_lib.make_text_dataset(
    f'aclimdb:{tmp_path}/aclImdb',
    'test',
    max_length=20,
    batch_size=4,
    repeat=False,
  )
  assert test_info.num_examples == 1


def test_headerless_tsv_by_column_index_and_regression(tmp_path):
  path = _write(
    str(tmp_path / 'cola.tsv'),
    'gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n',
  )
  ds, _ = text_lib.make_text_dataset(
    f'tsv:{path}',
    'x',
    max_length=16,
    batch_size=2,
    repeat=False,
    has_header=False,
    text_fields=(3,),
    label_field=1,
  )
  (batch,) = _all_batches(ds)
  np.testing.assert_array_equal(
    batch['input_ids'],
    [_ids('The cat sat.', max_length=16), _ids('Cat the sat.', max_length=16)],
  )
  np.testing.assert_array_equal(batch['label'], [1, 0])
  path = _write(
    str(tmp_path / 'sts.tsv'), 's1\ts2\tscore\na\tb\t4.750\nc\td\t0.0\n'
  )
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}',
    'dev',
    max_length=8,
    batch_size=2,
    repeat=False,
    task='regression',
    text_fields=('s1', 's2'),
    label_field='score',
  )
  (batch,) = _all_batches(ds)
  assert batch['label'].dtype == np.float32
  np.testing.assert_allclose(batch['label'], [4.75, 0.0])
  assert info.num_classes is None and info.stats.label_counts == {}


def test_unlabelled_file(tmp_path):
  path = _write(str(tmp_path / 'test.tsv'), 'index\tsentence\n0\tfoo\n1\tbar\n')
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}',
    'test',
    max_length=8,
    batch_size=2,
    repeat=False,
    label_field=False,
  )
  (batch,) = _all_batches(ds)
  np.testing.assert_array_equal(batch['label'], [-1, -1])
  assert info.stats.num_unlabeled == 2


# ----------------------------------------------------------------- errors
def test_errors_name_file_and_row(tmp_path):
  make = lambda source, **kw: text_lib.make_text_dataset(
    source, 'train', max_length=16, batch_size=2, repeat=False, **kw
  )
  missing = str(tmp_path / 'nope.csv')
  with pytest.raises(FileNotFoundError, match='nope.csv'):
    make(f'csv:{missing}')
  path = _write(str(tmp_path / 'a.tsv'), 'sentence\tlabel\nok\t1\nbad\tmaybe\n')
  with pytest.raises(
    ValueError, match=r'a\.tsv, row 2 \(line 3\).*maybe.*classes'
  ):
    make(f'tsv:{path}', classes=['0', '1'])
  with pytest.raises(
    ValueError, match=r'a\.tsv.*label column .*polarity.* not in the header'
  ):
    make(f'tsv:{path}', label_field='polarity')
  path = _write(str(tmp_path / 'b.tsv'), 'sentence\tlabel\nok\t1\nshort\n')
  with pytest.raises(
    ValueError, match=r'b\.tsv, row 2 \(line 3\): has 1 fields'
  ):
    make(f'tsv:{path}')
  path = _write(
    str(tmp_path / 'c.jsonl'), '{"text": "a", "label": 0}\n\n{"text": "b"}\n'
  )
  with pytest.raises(
    ValueError, match=r'c\.jsonl, row 2 \(line 3\): missing label'
  ):
    make(f'jsonl:{path}')
  path = _write(str(tmp_path / 'd.csv'), 'text,label\na,1\nb,7\n')
  with pytest.raises(ValueError, match=r'd\.csv, row 2 \(line 3\).*7'):
    make(f'csv:{path}', classes=2)
  path = _write(str(tmp_path / 'e.csv'), 'body,label\na,1\n')
  with pytest.raises(ValueError, match='cannot guess the text column'):
    make(f'csv:{path}')
  with pytest.raises(FileNotFoundError, match='aclImdb layout'):
    make(f'aclimdb:{tmp_path}')
  with pytest.raises(ValueError, match='unknown source kind'):
    make('parquet:/x')
  with pytest.raises(ValueError, match='make_mlm_dataset'):
    make(f'text:{tmp_path}/*.txt')
  with pytest.raises(ValueError, match='process_index'):
    make(f'csv:{path}', process_index=2, process_count=2)


# ---------------------------------------------------------- truncation
def test_truncation_counts(tmp_path):
  texts = ['x' * 5, 'y' * 9, 'z' * 20, '']
  path = _write(
    str(tmp_path / 't.tsv'),
    'sentence\tlabel\n' + ''.join(f'{t}\t0\n' for t in texts),
  )
  ds, info = text_lib.make_text_dataset(
    f'tsv:{path}', 'all', max_length=10, batch_size=4, repeat=False
  )
  (batch,) = _all_batches(ds)
  # Room for 8 bytes: 5 fits, 9 loses 1, 20 loses 12.
  np.testing.assert_array_equal(batch['num_truncated'], [0, 1, 12, 0])
  assert info.stats.num_truncated == 2 and info.stats.num_truncated_tokens == 13
  assert info.stats.num_empty == 1
  assert batch['input_ids'][2].tolist() == [4] + [ord('z') + 6] * 8 + [5]
