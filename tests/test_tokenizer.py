"""Parity tests: `ByteTokenizer` must give exactly HF `PerceiverTokenizer`'s ids.

The pretrained Perceiver IO language checkpoints only work with the ids they
were trained on, so every case here is checked against transformers' own
implementation (constructed without any file), not against values of ours.
"""

import random

import numpy as np
import pytest
import transformers
from transformers import PerceiverTokenizer

from perceiver_io import tokenizer as tok_lib
from perceiver_io.tokenizer import ByteTokenizer

transformers.logging.set_verbosity_error()

_ASCII = ''.join(chr(i) for i in range(128))
_UNICODE = (
  'éèàçñüößøåÆŒ'  # Accents (2-byte UTF-8).
  '中文字符日本語한국어'  # CJK (3 bytes).
  '😀🎉👍🏽🚀🇫🇷'  # Emoji, modifiers, flags (4 bytes).
  'Ωπλ∑√∞'
  '\u200b\u00a0 \t\n'
)


@pytest.fixture(scope='module')
def hf():
  return PerceiverTokenizer()


@pytest.fixture(scope='module')
def ours():
  return ByteTokenizer()


def _random_text(rng, alphabet, max_len):
  return ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def _random_texts(seed, n=60, max_len=40):
  rng = random.Random(seed)
  texts = ['', ' ', 'a']
  for i in range(n):
    alphabet = (
      _ASCII if i % 3 == 0 else (_UNICODE if i % 3 == 1 else _ASCII + _UNICODE)
    )
    texts.append(_random_text(rng, alphabet, max_len))
  return texts


def _hf_encode(hf, text, pair=None, **kw):
  out = hf(text, pair, **kw)
  return {
    'input_ids': list(out['input_ids']),
    'attention_mask': list(out['attention_mask']),
  }


def test_constants_match_hf(hf):
  assert tok_lib.VOCAB_SIZE == 262 == len(hf.get_vocab())
  assert (
    tok_lib.PAD_ID,
    tok_lib.BOS_ID,
    tok_lib.EOS_ID,
    tok_lib.MASK_ID,
    tok_lib.CLS_ID,
    tok_lib.SEP_ID,
  ) == (
    hf.pad_token_id,
    hf.bos_token_id,
    hf.eos_token_id,
    hf.mask_token_id,
    hf.cls_token_id,
    hf.sep_token_id,
  )
  assert ByteTokenizer.VOCAB_SIZE == 262 and ByteTokenizer.MASK_ID == 3
  assert tok_lib.MODEL_MAX_LENGTH == hf.model_max_length


def test_byte_ids_by_hand(ours):
  # Independent of HF: 'A' is byte 65 -> id 71; 'é' is bytes c3 a9 -> 201, 175.
  assert ours.encode('Aé')['input_ids'] == [4, 71, 201, 175, 5]
  assert ours.encode('a', 'b')['input_ids'] == [4, 103, 5, 104, 5]
  assert ours.encode('')['input_ids'] == [4, 5]


@pytest.mark.parametrize('add_special_tokens', [True, False])
def test_single_and_pair_match_hf(hf, ours, add_special_tokens):
  texts = _random_texts(0)
  pairs = _random_texts(1)
  for a, b in zip(texts, pairs):
    assert ours.encode(a, add_special_tokens=add_special_tokens) == _hf_encode(
      hf, a, add_special_tokens=add_special_tokens
    ), a
    assert ours.encode(
      a, b, add_special_tokens=add_special_tokens
    ) == _hf_encode(hf, a, b, add_special_tokens=add_special_tokens), (a, b)


@pytest.mark.filterwarnings(
  'ignore::UserWarning'
)  # HF: max_length ignored with padding=True.
def test_truncation_and_padding_match_hf(hf, ours):
  rng = random.Random(2)
  texts = _random_texts(3, n=40, max_len=30)
  for a in texts:
    b = rng.choice(texts)
    for max_length in (3, 5, 8, 17, 40, 70):
      for truncation in (True, None, 'longest_first', False):
        for padding in (False, True, 'longest', 'max_length'):
          kw = dict(
            max_length=max_length, truncation=truncation, padding=padding
          )
          assert ours.encode(a, **kw) == _hf_encode(hf, a, **kw), (a, kw)
          assert ours.encode(a, b, **kw) == _hf_encode(hf, a, b, **kw), (
            a,
            b,
            kw,
          )


def test_pair_longest_first_cases_match_hf(hf, ours):
  # Unequal, equal, odd and even surplus, one side empty.
  for la, lb in [
    (10, 2),
    (2, 10),
    (7, 7),
    (8, 7),
    (0, 12),
    (12, 0),
    (1, 1),
    (30, 29),
  ]:
    a, b = 'x' * la, 'y' * lb
    for max_length in range(3, la + lb + 5):
      kw = dict(max_length=max_length, truncation=True)
      assert ours.encode(a, b, **kw) == _hf_encode(hf, a, b, **kw), (
        la,
        lb,
        max_length,
      )


def test_defaults_without_max_length_match_hf(hf, ours):
  long_text = 'ab' * 1500  # 3000 bytes > 2048
  for kw in (
    dict(truncation=True),
    dict(padding='max_length'),
    dict(),
    dict(truncation=True, padding='max_length'),
  ):
    assert ours.encode(long_text, **kw) == _hf_encode(hf, long_text, **kw), kw
    assert ours.encode('short', **kw) == _hf_encode(hf, 'short', **kw), kw


def test_special_token_strings_match_hf(hf, ours):
  for text in [
    'a[MASK]b',
    'x [SEP] y',
    '[PAD][CLS]',
    '[mask] [MAS K]',
    '[[SEP]]',
    'é[BOS]😀[EOS]',
  ]:
    assert ours.encode(text) == _hf_encode(hf, text), text
    assert ours.encode(text, text) == _hf_encode(hf, text, text), text
  raw = ByteTokenizer(parse_special_tokens=False)
  assert raw.encode('a[MASK]')['input_ids'] == [4] + [
    c + 6 for c in b'a[MASK]'
  ] + [5]


def test_batch_encode_matches_hf(hf, ours):
  texts = _random_texts(4, n=30, max_len=50)
  pairs = _random_texts(5, n=30, max_len=50)
  for max_length in (6, 24, 64):
    got = ours.batch_encode(texts, max_length=max_length)
    want = hf(
      texts,
      padding='max_length',
      truncation=True,
      max_length=max_length,
      return_tensors='np',
    )
    assert got['input_ids'].dtype == np.int32 and got['input_ids'].shape == (
      len(texts),
      max_length,
    )
    np.testing.assert_array_equal(got['input_ids'], want['input_ids'])
    np.testing.assert_array_equal(got['attention_mask'], want['attention_mask'])
    full = [len(hf(t)['input_ids']) for t in texts]
    np.testing.assert_array_equal(
      got['num_truncated'], [max(0, n - max_length) for n in full]
    )

    got = ours.batch_encode(texts, pairs, max_length=max_length)
    want = hf(
      texts,
      pairs,
      padding='max_length',
      truncation=True,
      max_length=max_length,
      return_tensors='np',
    )
    np.testing.assert_array_equal(got['input_ids'], want['input_ids'])
    np.testing.assert_array_equal(got['attention_mask'], want['attention_mask'])
    full = [len(hf(a, b)['input_ids']) for a, b in zip(texts, pairs)]
    np.testing.assert_array_equal(
      got['num_truncated'], [max(0, n - max_length) for n in full]
    )

    got = ours.batch_encode(
      texts, pairs, max_length=max_length, padding='longest'
    )
    want = hf(
      texts,
      pairs,
      padding=True,
      truncation=True,
      max_length=max_length,
      return_tensors='np',
    )
    np.testing.assert_array_equal(got['input_ids'], want['input_ids'])
    np.testing.assert_array_equal(got['attention_mask'], want['attention_mask'])

  as_lists = ours.batch_encode(['ab', ''], max_length=4, return_numpy=False)
  assert as_lists['input_ids'] == [[4, 103, 104, 5], [4, 5, 0, 0]]
  assert as_lists['num_truncated'] == [0, 0]


def test_bytes_input(ours):
  for text in _random_texts(6, n=20):
    assert ours.encode(text.encode('utf-8')) == ours.encode(text)
  invalid = b'ok\xff\xfe\xc3'
  assert ours.encode(invalid)['input_ids'] == [4] + [b + 6 for b in invalid] + [
    5
  ]
  got = ours.batch_encode(np.array([invalid, b'x'], dtype=object), max_length=4)
  assert got['input_ids'].tolist() == [[4, 117, 113, 5], [4, 126, 5, 0]]
  assert got['num_truncated'].tolist() == [3, 0]


def test_decode_matches_hf(hf, ours):
  rng = np.random.default_rng(7)
  for trial in range(200):
    n = int(rng.integers(0, 40))
    if trial % 2:
      ids = rng.integers(0, 262, n)  # Mostly invalid UTF-8, specials anywhere.
    else:
      ids = np.concatenate(
        [
          [4],
          np.asarray(
            hf(_random_text(random.Random(trial), _UNICODE + _ASCII, 12))[
              'input_ids'
            ][1:-1]
          ),
          rng.integers(0, 6, 3),
        ]
      ).astype(np.int64)
      if n and len(ids) > 2:
        ids = np.delete(
          ids, int(rng.integers(1, len(ids)))
        )  # Cut a UTF-8 sequence.
    ids = [int(i) for i in ids]
    for skip in (False, True):
      assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(
        ids, skip_special_tokens=skip
      ), (ids, skip)
      assert ours.decode(
        np.asarray(ids, np.int32), skip_special_tokens=skip
      ) == hf.decode(ids, skip_special_tokens=skip)
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)


def test_decode_round_trip_and_replacement(ours):
  for text in _random_texts(8):
    assert (
      ours.decode(ours.encode(text)['input_ids'], skip_special_tokens=True)
      == text
    )
  # Hand-built: a cut 3-byte euro sign (e2 82 ac) gives one U+FFFD.
  assert ours.decode([0xE2 + 6, 0x82 + 6, 4]) == '\ufffd[CLS]'
  assert ours.batch_decode(
    np.array([[4, 103, 5, 0], [4, 104, 5, 0]]), skip_special_tokens=True
  ) == ['a', 'b']


def test_bad_input_errors(ours):
  for bad in (None, 5, ['a'], 1.5):
    with pytest.raises(TypeError, match='str or bytes'):
      ours.encode(bad)
  with pytest.raises(TypeError, match='str or bytes'):
    ours.encode('a', 7)
  with pytest.raises(ValueError, match='lone surrogate'):
    ours.encode('a\ud800')
  for bad_ids in ([262], [-1], [5, 300]):
    with pytest.raises(ValueError, match=r'\[0, 262\)'):
      ours.decode(bad_ids)
  with pytest.raises(TypeError, match='integers'):
    ours.decode([1.5, 7.0])
  with pytest.raises(TypeError, match='integers'):
    ours.decode('abc')
  with pytest.raises(ValueError, match='batch_decode'):
    ours.decode(np.zeros((2, 3), np.int32))
  with pytest.raises(ValueError, match='special'):
    ours.encode('abc', 'def', max_length=2, truncation=True)
  with pytest.raises(ValueError, match='max_length'):
    ours.encode('abc', max_length=0)
  with pytest.raises(ValueError, match='padding'):
    ours.encode('abc', padding='left')
  with pytest.raises(ValueError, match='truncation'):
    ours.encode('abc', truncation='only_second')
  with pytest.raises(ValueError, match='truncation'):
    ours.batch_encode(['abcdef'], max_length=4, truncation=False)
  with pytest.raises(TypeError, match='sequence'):
    ours.batch_encode('abc', max_length=4)
