"""MLM data: the masking statistics (and masking as a function of the rng
only), and the MLM stream that concatenates and crops documents, resumes
and shards.

Expected values are written by hand or come from the HF-verified tokenizer
applied to the hand-written text, never from the pipeline itself.
"""

import numpy as np
import pytest

from perceiver_io.data import text as text_lib
from tests.text_data_helpers import TOK
from tests.text_data_helpers import all_batches as _all_batches
from tests.text_data_helpers import take as _take
from tests.text_data_helpers import write as _write


# ------------------------------------------------------------------- MLM
def _random_word_batch(rng, batch, length):
  rows = []
  for _ in range(batch):
    words = [
      bytes(
        rng.integers(97, 123, rng.integers(1, 12)).astype(np.uint8).tobytes()
      )
      for _ in range(length)
    ]
    rows.append(b' '.join(words)[: rng.integers(length // 2, length)])
  return TOK.batch_encode(rows, max_length=length)


def _words(ids_row, mask_row):
  """Hand-rolled word spans: runs of non-whitespace byte ids with mask 1."""
  spans, start = [], None
  for pos, (i, m) in enumerate(zip(ids_row.tolist(), mask_row.tolist())):
    in_word = m == 1 and i >= 6 and (i - 6) not in b' \t\n\r\x0b\x0c'
    if in_word and start is None:
      start = pos
    if not in_word and start is not None:
      spans.append((start, pos))
      start = None
  if start is not None:
    spans.append((start, len(ids_row)))
  return spans


def test_mask_bytes_for_mlm_statistics():
  rng = np.random.default_rng(0)
  enc = _random_word_batch(rng, 64, 256)
  ids, am = enc['input_ids'], enc['attention_mask']
  out = text_lib.mask_bytes_for_mlm(ids, am, np.random.default_rng(1))
  chosen = out['mlm_weights'] > 0
  real = (am == 1) & (ids >= 6)
  assert 0.14 < chosen.sum() / real.sum() < 0.16
  per_row = chosen.sum(1) / real.sum(1)
  assert np.abs(per_row - 0.15).max() < 0.06  # Within about one word of 15%.
  # Never specials, padding or whitespace.
  assert not chosen[(ids < 6) | (am == 0)].any()
  assert not chosen[ids == ord(' ') + 6].any()
  # Whole words: every word is either fully chosen or not at all.
  for r in range(ids.shape[0]):
    for start, stop in _words(ids[r], am[r]):
      assert chosen[r, start:stop].all() or not chosen[r, start:stop].any()
  # Labels and weights.
  np.testing.assert_array_equal(out['mlm_labels'][chosen], ids[chosen])
  assert (out['mlm_labels'][~chosen] == -100).all()
  np.testing.assert_array_equal(out['input_ids'][~chosen], ids[~chosen])
  # 80 / 10 / 10.
  new = out['input_ids'][chosen]
  masked = np.mean(new == 3)
  kept = np.mean(new == ids[chosen])
  randomised = 1 - masked - kept
  assert (
    0.77 < masked < 0.83 and 0.08 < kept < 0.12 and 0.08 < randomised < 0.12
  )
  assert ((new == 3) | ((new >= 6) & (new < 262))).all()
  assert (
    out['input_ids'].dtype == np.int32
    and out['mlm_weights'].dtype == np.float32
  )


def test_mask_bytes_for_mlm_is_a_function_of_the_rng():
  enc = _random_word_batch(np.random.default_rng(2), 4, 64)
  a = text_lib.mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], 5)
  b = text_lib.mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], 5)
  c = text_lib.mask_bytes_for_mlm(enc['input_ids'], enc['attention_mask'], 6)
  np.testing.assert_array_equal(a['input_ids'], b['input_ids'])
  assert (a['mlm_weights'] != c['mlm_weights']).any()


@pytest.fixture()
def text_docs(tmp_path):
  for f in range(2):
    _write(
      str(tmp_path / f'docs{f}.txt'),
      ''.join(f'doc {f}-{i} has a few words\n\n' for i in range(15)),
    )
  return f'text:{tmp_path}/docs*.txt'


def test_mlm_pipeline_concatenates_and_crops(text_docs):
  ds, info = text_lib.make_mlm_dataset(
    text_docs,
    'train',
    max_length=128,
    batch_size=4,
    repeat=False,
    docs_per_example=2,
  )
  batches = _all_batches(ds)
  assert info.num_examples == 30 and len(batches) == info.num_batches == 4
  b = batches[0]
  original = np.where(b['mlm_weights'] > 0, b['mlm_labels'], b['input_ids'])
  assert TOK.decode(original[0]).startswith(
    '[CLS]doc 0-0 has a few words\ndoc 0-1 has a few words[SEP]'
  )
  assert (
    b['mlm_weights'].sum() > 0
    and (b['mlm_labels'][b['mlm_weights'] == 0] == -100).all()
  )
  np.testing.assert_array_equal(
    batches[-1]['mask'], [1, 1, 1, 0]
  )  # 15 groups, 4 batches.
  assert (batches[-1]['mlm_weights'][3] == 0).all()
  # A short max_length crops a random window of each group of joined documents.
  ds, _ = text_lib.make_mlm_dataset(
    text_docs,
    'train',
    max_length=20,
    batch_size=5,
    repeat=False,
    docs_per_example=3,
    seed=1,
  )
  b = _take(ds, 1)[0]
  docs = [f'doc {f}-{i} has a few words' for f in range(2) for i in range(15)]
  groups = ['\n'.join(docs[3 * g : 3 * g + 3]) for g in range(5)]
  original = np.where(b['mlm_weights'] > 0, b['mlm_labels'], b['input_ids'])
  assert (b['attention_mask'] == 1).all()
  starts = []
  for row, group, cut in zip(original, groups, b['num_truncated']):
    assert row[0] == 4 and row[-1] == 5
    window = TOK.decode(row[1:-1])
    assert len(window) == 18 and window in group
    assert cut == len(group) - 18
    starts.append(group.index(window))
  assert len(set(starts)) > 1  # Random offsets, not always the start.


def test_mlm_resume_and_shards(text_docs):
  make = lambda start, p=0: text_lib.make_mlm_dataset(
    text_docs,
    'train',
    max_length=32,
    batch_size=2,
    repeat=True,
    docs_per_example=2,
    seed=4,
    start_step=start,
    process_index=p,
    process_count=2,
  )[0]
  full = _take(make(0), 9)  # 36 documents from a shard of 15: crosses epochs.
  resumed = _take(make(5), 4)
  for a, b in zip(full[5:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = _take(make(0, p=1), 1)[0]
  assert (other['input_ids'] != full[0]['input_ids']).any()
