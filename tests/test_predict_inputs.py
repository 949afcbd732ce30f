"""Predict refuses inputs with nothing to predict on.

An empty text (an unset shell variable) used to print a confident label,
`1 (p=0.935)`, as if it were a prediction about something.
"""

import pytest

from experiments import predict_lib
from experiments.tasks import classification


@pytest.mark.parametrize('text', ['', '   ', '\t\n'])
def test_a_blank_text_argument_is_refused(text):
  with pytest.raises(ValueError, match='input argument 2 is empty'):
    predict_lib.read_inputs(['a fine review', text], '')


def test_texts_and_file_lines_are_read_in_order(tmp_path):
  path = tmp_path / 'in.txt'
  path.write_text('first line\n\n   \nsecond line\n')
  got = predict_lib.read_inputs(['arg'], str(path))
  assert got == ['arg', 'first line', 'second line']


@pytest.mark.parametrize('content', ['', '\n\n', '  \n\t\n'])
def test_an_input_file_without_inputs_is_refused(tmp_path, content):
  path = tmp_path / 'in.txt'
  path.write_text(content)
  with pytest.raises(ValueError, match='holds no input'):
    predict_lib.read_inputs([], str(path))


def test_a_missing_or_folder_input_file_is_one_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    predict_lib.read_inputs([], str(tmp_path / 'absent.txt'))
  with pytest.raises(ValueError, match='is a directory'):
    predict_lib.read_inputs([], str(tmp_path))


def test_a_blank_pair_is_refused():
  assert predict_lib.read_pairs(['a'], ['b']) == ['b']
  with pytest.raises(ValueError, match='--pair number 1 is empty'):
    predict_lib.read_pairs(['a'], [' '])


@pytest.mark.parametrize('line', ['\tsecond', 'first\t', 'first\t  '])
def test_a_tab_pair_with_a_blank_half_is_refused(line):
  fields = ['premise', 'hypothesis']
  with pytest.raises(ValueError, match='text of .* is empty'):
    classification.split_pairs('/tmp/rte', fields, [line])
  firsts, seconds, _ = classification.split_pairs('/tmp/rte', fields, ['a\tb'])
  assert (firsts, seconds) == (['a'], ['b'])


@pytest.mark.parametrize('fields', [None, ['premise', 'hypothesis']])
def test_the_task_refuses_a_blank_text_too(fields):
  with pytest.raises(ValueError, match=r'input 2 is empty \(only whitespace\)'):
    classification.split_pairs('/tmp/run', fields, ['a\tb', '  '])
