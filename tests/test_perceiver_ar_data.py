"""Perceiver AR data: byte windows, splits, padding, sharding, copy task.

Every expected value is re-derived here from the stream with plain slicing
(not from the module's own helpers), so a wrong offset, pad side or shard
fails.
"""

import os

import numpy as np
import pytest

from configs import common
from perceiver_io.data.text import lm
from perceiver_io.data.text import lm_sources
from perceiver_io.data.text import mirrored

FIXTURE = os.path.join(common.FIXTURES, 'tinyshakespeare.txt')


@pytest.fixture(scope='module')
def stream():
  return lm_sources.read_text_stream(FIXTURE, 'train')


def test_fixture_is_the_start_of_tiny_shakespeare():
  with open(FIXTURE, 'rb') as f:
    data = f.read()
  assert data.startswith(b'First Citizen:\nBefore we proceed any further')
  assert 5_000 < len(data) < 10_000


def test_stream_is_bytes_plus_six_ended_by_eos(stream):
  with open(FIXTURE, 'rb') as f:
    data = f.read()
  assert len(stream) == len(data) + 1
  assert stream[-1] == lm.EOS_ID
  assert (np.asarray(stream[:-1]) - 6).astype(np.uint8).tobytes() == data
  assert lm.decode_ids(stream) == data


def test_split_slices_are_disjoint_and_cover_the_stream(stream):
  train = lm_sources.read_text_stream(FIXTURE, 'train[:90%]')
  held = lm_sources.read_text_stream(FIXTURE, 'train[90%:]')
  assert len(train) == round(0.9 * len(stream))
  np.testing.assert_array_equal(np.concatenate([train, held]), stream)


def test_split_glob_reads_one_file_per_split(tmp_path):
  (tmp_path / 'train.txt').write_bytes(b'abc')
  (tmp_path / 'validation.txt').write_bytes(b'xyz')
  pattern = str(tmp_path / '{split}.txt')
  held = lm_sources.read_text_stream(pattern, 'validation')
  assert lm.decode_ids(held) == b'xyz'
  with pytest.raises(FileNotFoundError, match='no text files match'):
    lm_sources.read_text_stream(pattern, 'test')


def test_too_short_split_is_one_error(tmp_path):
  (tmp_path / 'a.txt').write_bytes(b'abc')
  with pytest.raises(ValueError, match='at least 2'):
    lm_sources.read_text_stream(str(tmp_path / 'a.txt'), 'train[:1]')


def test_train_rows_are_stream_windows_with_shifted_targets(stream):
  n, m = 48, 16
  windows = lm.TrainWindows(stream, n, m, global_batch=6, seed=3)
  batch = windows.batch(7)
  for row, end in enumerate(windows.ends(7)):
    want = stream[end - n - 1 : end]
    np.testing.assert_array_equal(batch['inputs'][row], want[:-1])
    np.testing.assert_array_equal(batch['targets'][row], want[-m:])
  assert batch['target_weights'].shape == (6, m)
  assert np.all(batch['target_weights'] == 1)


def test_train_batches_are_a_function_of_the_step(stream):
  a = lm.TrainWindows(stream, 32, 8, global_batch=4, seed=0)
  b = lm.TrainWindows(stream, 32, 8, global_batch=4, seed=0)
  np.testing.assert_array_equal(a.batch(5)['inputs'], b.batch(5)['inputs'])
  assert not np.array_equal(a.batch(5)['inputs'], a.batch(6)['inputs'])
  other_seed = lm.TrainWindows(stream, 32, 8, global_batch=4, seed=1)
  assert not np.array_equal(a.batch(5)['inputs'], other_seed.batch(5)['inputs'])


@pytest.mark.parametrize('count', [2, 4])
def test_processes_read_disjoint_rows_of_the_same_global_batch(stream, count):
  whole = lm.TrainWindows(stream, 32, 8, global_batch=8, seed=2).batch(3)
  parts = [
    lm.TrainWindows(
      stream, 32, 8, 8, seed=2, process_index=p, process_count=count
    ).batch(3)
    for p in range(count)
  ]
  for key in ('inputs', 'targets', 'target_weights'):
    np.testing.assert_array_equal(
      np.concatenate([p[key] for p in parts]), whole[key]
    )
  with pytest.raises(ValueError, match='divisible'):
    lm.TrainWindows(stream, 32, 8, 6, process_index=0, process_count=4)


def test_rows_shorter_than_the_context_are_padded_at_the_start():
  tokens = np.arange(10, 20, dtype=np.int32)  # 10 tokens, N + 1 = 17.
  batch = lm.TrainWindows(tokens, 16, 12, global_batch=2).batch(0)
  row = batch['inputs'][0]
  np.testing.assert_array_equal(row[:7], np.zeros(7))
  np.testing.assert_array_equal(row[7:], tokens[:-1])
  np.testing.assert_array_equal(batch['targets'][0], [0, 0, *tokens])
  # Latents on padding (the last pad predicts the first token): no loss.
  np.testing.assert_array_equal(batch['target_weights'][0], [0] * 3 + [1] * 9)


def test_eval_windows_score_every_target_once_with_long_context(stream):
  n, m = 40, 16
  windows = lm.eval_windows(stream, n, m)
  scored = windows['targets'][windows['target_weights'] > 0]
  # Every byte after the first, in order, exactly once.
  np.testing.assert_array_equal(scored, stream[1:])
  for k in range(3, len(windows['inputs'])):
    last = min((k + 1) * m, len(stream) - 1)  # The row's last target.
    np.testing.assert_array_equal(windows['inputs'][k], stream[last - n : last])


def test_eval_batches_pad_the_last_batch_and_shard(stream):
  windows = lm.eval_windows(stream[:200], 32, 16)
  total = len(windows['inputs'])
  got = list(lm.batches(windows, 4))
  assert sum(int(b['weight'].sum()) for b in got) == total
  assert got[-1]['weight'][-1] == 0
  assert got[-1]['target_weights'][-1].sum() == 0
  halves = [list(lm.batches(windows, 4, p, 2)) for p in range(2)]
  for whole, a, b in zip(got, *halves):
    np.testing.assert_array_equal(
      np.concatenate([a['inputs'], b['inputs']]), whole['inputs']
    )
  assert sum(len(b['weight']) for b in lm.batches(windows, 4, limit=5)) == 8


def test_latents_larger_than_the_context_are_refused(stream):
  with pytest.raises(ValueError, match='num_latents=40 must be in'):
    lm.TrainWindows(stream, 32, 40, 2)


def test_mirrored_rows_are_a_sequence_and_its_reverse():
  batch = mirrored.MirroredTrainRows(16, 32, 8, global_batch=3).batch(0)
  for inputs, targets in zip(batch['inputs'], batch['targets']):
    row = np.concatenate([inputs, targets[-1:]])  # The 33 tokens.
    assert row[0] == lm.BOS_ID
    x = row[1:17]
    assert np.all((x >= 6) & (x < 262))
    np.testing.assert_array_equal(row[17:], x[::-1])
    np.testing.assert_array_equal(targets, row[-8:])
  assert np.all(batch['copied'] == 1)  # M <= L: all latents copy.
  assert np.all(batch['target_weights'] == 1)


def test_mirrored_copied_flag_marks_the_reversed_half_only():
  # M = N: the first half of the targets is random, the second copied.
  batch = mirrored.MirroredTrainRows(4, 8, 8, global_batch=1).batch(0)
  np.testing.assert_array_equal(batch['copied'][0], [0] * 4 + [1] * 4)


def test_mirrored_crops_are_prefixes_ending_in_the_copied_half():
  half, m = 16, 4
  full = mirrored.MirroredTrainRows(half, 32, m, global_batch=8).batch(1)
  crop = mirrored.MirroredTrainRows(half, 32, m, 8, crop=True).batch(1)
  lengths = []
  for k in range(8):
    row = np.concatenate([full['inputs'][k], full['targets'][k][-1:]])
    cut = np.concatenate([crop['inputs'][k], crop['targets'][k][-1:]])
    length = int(np.sum(cut != lm.PAD_ID))
    assert half + 1 + m <= length <= 2 * half + 1
    np.testing.assert_array_equal(cut[-length:], row[:length])  # A prefix.
    assert np.all(cut[:-length] == lm.PAD_ID)  # Padded at the start.
    lengths.append(length)
  assert len(set(lengths)) > 1
  # The latents' targets are all in the copied half.
  assert np.all(crop['copied'] == 1) and np.all(crop['target_weights'] == 1)


def test_mirrored_rows_depend_on_step_and_shard_by_process():
  whole = mirrored.MirroredTrainRows(8, 16, 4, 4, seed=1).batch(2)
  again = mirrored.MirroredTrainRows(8, 16, 4, 4, seed=1).batch(2)
  np.testing.assert_array_equal(whole['inputs'], again['inputs'])
  later = mirrored.MirroredTrainRows(8, 16, 4, 4, seed=1).batch(3)
  assert not np.array_equal(whole['inputs'], later['inputs'])
  parts = [
    mirrored.MirroredTrainRows(8, 16, 4, 4, 1, p, 2).batch(2) for p in (0, 1)
  ]
  np.testing.assert_array_equal(
    np.concatenate([p['inputs'] for p in parts]), whole['inputs']
  )


def test_mirrored_eval_rows_are_held_out_and_padded():
  train = mirrored.MirroredTrainRows(8, 16, 4, 4).batch(0)
  evals = list(mirrored.mirrored_eval_batches(8, 16, 4, 6, 4))
  assert [int(b['weight'].sum()) for b in evals] == [4, 2]
  assert not np.array_equal(evals[0]['inputs'], train['inputs'])
  assert evals[1]['target_weights'][2:].sum() == 0


def test_mirrored_length_must_match_the_context():
  with pytest.raises(ValueError, match='max_context must be 32'):
    mirrored.MirroredTrainRows(16, 64, 8, 2)


def test_paper_length_row_is_generated():
  rng = np.random.default_rng(0)
  row = mirrored.mirrored_row(rng, 65_536)
  assert len(row) == 131_073
  np.testing.assert_array_equal(row[65_537:], row[1:65_537][::-1])


def test_unknown_source_kind_is_one_error():
  with pytest.raises(ValueError, match='Perceiver AR reads text:GLOB'):
    lm_sources.source_kind('csv:/data/x.csv')
  assert lm_sources.source_kind('random_mirrored') == ('random_mirrored', '')


def test_unprepared_tfds_corpus_is_one_line_naming_local_text(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    lm_sources.tfds_documents('pg19', 'train', data_dir=str(tmp_path))
  message = str(e.value)
  assert '\n' not in message
  assert 'not prepared' in message and 'text:' in message
