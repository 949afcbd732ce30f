"""UTF-8 byte tokenizer with the exact ids of the official Perceiver IO release.

Perceiver IO reads raw UTF-8 bytes, so the tokenizer needs no vocabulary file:
six reserved ids come first and byte ``b`` maps to id ``b + 6`` (262 ids in
all). The pretrained language checkpoints (DeepMind's and HuggingFace's
``deepmind/language-perceiver``) were trained with these ids, so they must match
number for number; `tests/test_tokenizer.py` checks this against
``transformers.PerceiverTokenizer``.

Behaviour copied from ``transformers.PerceiverTokenizer`` on purpose:

* ``[CLS] a [SEP]`` for one text and ``[CLS] a [SEP] b [SEP]`` for a pair.
* The literal strings ``[PAD] [BOS] [EOS] [MASK] [CLS] [SEP]`` inside a text
  become their special ids (HF treats them as added tokens). Pass
  ``parse_special_tokens=False`` to keep them as plain bytes, as the original
  DeepMind ``BytesTokenizer`` does.
* Pair truncation is HF's ``'longest_first'``: cut the longer text down to the
  length of the shorter one, then cut both alternately, the second text first.
* ``truncation=None`` with a ``max_length`` and ``padding=False`` truncates
  (HF's implicit rule; with any padding it does not);
  ``truncation=True`` without ``max_length`` truncates to 2048 (the model's
  maximum length), and so does ``padding='max_length'`` without ``max_length``.
* ``decode`` writes special ids as their strings (``[CLS]``...) unless
  ``skip_special_tokens``, and decodes the bytes with invalid UTF-8 replaced by
  U+FFFD.

Deliberate differences: ``bytes`` input is accepted (raw bytes, possibly not
valid UTF-8, as read from data files), ids outside ``[0, 262)`` raise a
`ValueError` instead of an obscure ``chr()`` error, and a ``max_length`` too
short to hold the special tokens raises instead of returning an over-long
sequence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
MASK_ID = 3
CLS_ID = 4
SEP_ID = 5
NUM_SPECIAL_TOKENS = 6
VOCAB_SIZE = 256 + NUM_SPECIAL_TOKENS  # 262
MODEL_MAX_LENGTH = 2048
SPECIAL_TOKENS = ('[PAD]', '[BOS]', '[EOS]', '[MASK]', '[CLS]', '[SEP]')

_SPECIAL_BYTES_TO_ID = {
  t.encode('ascii'): i for i, t in enumerate(SPECIAL_TOKENS)
}
_SPECIAL_PATTERN = re.compile(
  b'|'.join(re.escape(t) for t in _SPECIAL_BYTES_TO_ID)
)
_CLS = np.array([CLS_ID], np.int32)
_SEP = np.array([SEP_ID], np.int32)
_PADDING_CHOICES = (False, True, 'longest', 'max_length', 'do_not_pad')


def _as_bytes(text: Any, what: str) -> bytes:
  """Returns `text` as UTF-8 bytes; bytes-like input is taken as is."""
  if isinstance(text, str):
    try:
      return text.encode('utf-8')
    except UnicodeEncodeError as e:
      raise ValueError(
        f'{what} is a str that cannot be encoded as UTF-8 ({e}); it contains '
        'a lone surrogate. Pass valid text, or the raw bytes as `bytes`.'
      ) from None
  if isinstance(text, (bytes, bytearray, memoryview)):
    return bytes(text)
  raise TypeError(
    f'{what} must be str or bytes, got {type(text).__name__}: {text!r:.80}'
  )


def _truncation_enabled(
  truncation: Any, max_length: int | None, padding: Any
) -> bool:
  """Resolves HF's truncation argument to on/off."""
  if truncation is None:
    # HF: a max_length with neither padding nor truncation implies truncation.
    return max_length is not None and padding is False
  if truncation is True or truncation == 'longest_first':
    return True
  if truncation is False or truncation == 'do_not_truncate':
    return False
  raise ValueError(
    f'truncation={truncation!r} is not supported; use None, True, False, '
    "'longest_first' or 'do_not_truncate'."
  )


def _check_max_length(max_length: int | None) -> None:
  if max_length is None:
    return
  if isinstance(max_length, bool) or not isinstance(
    max_length, (int, np.integer)
  ):
    raise TypeError(f'max_length must be an int or None, got {max_length!r}.')
  if max_length < 1:
    raise ValueError(f'max_length must be >= 1, got {max_length}.')


def longest_first_cut(
  len_a: int, len_b: int, num_to_remove: int
) -> tuple[int, int]:
  """How many tokens HF's 'longest_first' removes from each text of a pair.

  The longer text is cut first until both are equally long; the rest is split
  evenly, with the odd one taken from the second text.

  Args:
    len_a: length of the first text (tokens, without specials).
    len_b: length of the second text.
    num_to_remove: total number of tokens that must go.

  Returns:
    (cut_a, cut_b), how many tokens to drop from the end of each text.
  """
  first = min(abs(len_a - len_b), num_to_remove)
  rest = num_to_remove - first
  if len_a > len_b:
    return first + rest // 2, rest - rest // 2
  return rest // 2, first + rest - rest // 2


class ByteTokenizer:
  """UTF-8 bytes <-> ids; ids identical to HF's `PerceiverTokenizer`."""

  PAD_ID = PAD_ID
  BOS_ID = BOS_ID
  EOS_ID = EOS_ID
  MASK_ID = MASK_ID
  CLS_ID = CLS_ID
  SEP_ID = SEP_ID
  NUM_SPECIAL_TOKENS = NUM_SPECIAL_TOKENS
  VOCAB_SIZE = VOCAB_SIZE
  MODEL_MAX_LENGTH = MODEL_MAX_LENGTH
  SPECIAL_TOKENS = SPECIAL_TOKENS

  def __init__(self, parse_special_tokens: bool = True):
    """Builds the tokenizer.

    Args:
      parse_special_tokens: if True (HF's behaviour), the literal strings
        ``[MASK]``, ``[SEP]``... in a text become their special ids. If False,
        every byte of the text becomes a byte id (the DeepMind behaviour).
    """
    self.parse_special_tokens = bool(parse_special_tokens)

  def __repr__(self) -> str:
    return f'ByteTokenizer(parse_special_tokens={self.parse_special_tokens})'

  # ----------------------------------------------------------------- encoding
  def text_to_ids(self, text: str | bytes) -> list[int]:
    """Ids of a text with no special tokens added, no truncation.

    Args:
      text: a str (encoded as UTF-8) or raw bytes.

    Returns:
      A list of ids, one per byte (special-token strings map to one id each
      when `parse_special_tokens`).
    """
    return self._ids_array(text, 'text').tolist()

  def _ids_array(self, text: str | bytes, what: str) -> np.ndarray:
    """`text_to_ids` as an int32 array (vectorised over the bytes)."""
    data = _as_bytes(text, what)
    if not self.parse_special_tokens or b'[' not in data:
      return np.frombuffer(data, np.uint8).astype(np.int32) + NUM_SPECIAL_TOKENS
    pieces = []
    pos = 0
    for match in _SPECIAL_PATTERN.finditer(data):
      pieces.append(
        np.frombuffer(data[pos : match.start()], np.uint8).astype(np.int32)
        + NUM_SPECIAL_TOKENS
      )
      pieces.append(np.array([_SPECIAL_BYTES_TO_ID[match.group()]], np.int32))
      pos = match.end()
    pieces.append(
      np.frombuffer(data[pos:], np.uint8).astype(np.int32) + NUM_SPECIAL_TOKENS
    )
    return np.concatenate(pieces)

  def num_tokens(
    self,
    text: str | bytes,
    text_pair: str | bytes | None = None,
    add_special_tokens: bool = True,
  ) -> int:
    """Length of the untruncated encoding (what `encode` gives with no limit)."""
    total = 0
    for part, what in ((text, 'text'), (text_pair, 'text_pair')):
      if part is None:
        continue
      data = _as_bytes(part, what)
      total += len(data)
      if self.parse_special_tokens and b'[' in data:
        total -= sum(
          len(m.group()) - 1 for m in _SPECIAL_PATTERN.finditer(data)
        )
    if add_special_tokens:
      total += self.num_special_tokens_to_add(text_pair is not None)
    return total

  def num_special_tokens_to_add(self, pair: bool = False) -> int:
    """2 for one text ([CLS] a [SEP]), 3 for a pair ([CLS] a [SEP] b [SEP])."""
    return 3 if pair else 2

  def _encode_ids(
    self,
    text,
    text_pair,
    add_special_tokens: bool,
    max_length: int | None,
    truncate: bool,
  ) -> tuple[np.ndarray, int]:
    """Builds one sequence; returns (int32 ids, number of text tokens cut)."""
    ids_a = self._ids_array(text, 'text')
    ids_b = (
      None if text_pair is None else self._ids_array(text_pair, 'text_pair')
    )
    num_special = (
      self.num_special_tokens_to_add(ids_b is not None)
      if add_special_tokens
      else 0
    )
    total = len(ids_a) + (0 if ids_b is None else len(ids_b)) + num_special
    num_cut = 0
    if truncate and total > max_length:
      if max_length < num_special:
        raise ValueError(
          f'max_length={max_length} cannot hold the {num_special} special '
          f'tokens of a {"pair" if ids_b is not None else "single text"}; '
          f'use max_length >= {num_special}.'
        )
      num_cut = total - max_length
      if ids_b is None:
        ids_a = ids_a[: len(ids_a) - num_cut]
      else:
        cut_a, cut_b = longest_first_cut(len(ids_a), len(ids_b), num_cut)
        ids_a = ids_a[: len(ids_a) - cut_a]
        ids_b = ids_b[: len(ids_b) - cut_b]
    if not add_special_tokens:
      parts = [ids_a] if ids_b is None else [ids_a, ids_b]
    elif ids_b is None:
      parts = [_CLS, ids_a, _SEP]
    else:
      parts = [_CLS, ids_a, _SEP, ids_b, _SEP]
    return np.concatenate(parts), num_cut

  def encode(
    self,
    text: str | bytes,
    text_pair: str | bytes | None = None,
    *,
    add_special_tokens: bool = True,
    max_length: int | None = None,
    truncation: bool | str | None = None,
    padding: bool | str = False,
  ) -> dict[str, list[int]]:
    """Encodes one text or one pair like ``PerceiverTokenizer.__call__``.

    Args:
      text: the first text (str or raw bytes).
      text_pair: optional second text.
      add_special_tokens: add [CLS]/[SEP] around the text(s).
      max_length: target length (including special tokens).
      truncation: None (truncate iff max_length is given and padding is
        False, as HF), True /
        'longest_first', or False / 'do_not_truncate'.
      padding: False / 'do_not_pad', True / 'longest' (a no-op for one
        sequence) or 'max_length' (pad with [PAD] to max_length, or to 2048
        when max_length is None).

    Returns:
      dict(input_ids=list[int], attention_mask=list[int]).
    """
    _check_max_length(max_length)
    truncate = _truncation_enabled(truncation, max_length, padding)
    if padding not in _PADDING_CHOICES:
      raise ValueError(f'padding={padding!r} is not one of {_PADDING_CHOICES}.')
    limit = MODEL_MAX_LENGTH if max_length is None else int(max_length)
    ids, _ = self._encode_ids(
      text, text_pair, add_special_tokens, limit, truncate
    )
    ids = ids.tolist()
    mask = [1] * len(ids)
    if padding == 'max_length' and len(ids) < limit:
      num_pad = limit - len(ids)
      ids = ids + [PAD_ID] * num_pad
      mask = mask + [0] * num_pad
    return {'input_ids': ids, 'attention_mask': mask}

  def batch_encode(
    self,
    texts: Sequence[str | bytes],
    text_pairs: Sequence[str | bytes] | None = None,
    *,
    max_length: int,
    padding: bool | str = 'max_length',
    truncation: bool | str | None = True,
    add_special_tokens: bool = True,
    return_numpy: bool = True,
  ) -> dict[str, Any]:
    """Encodes a batch to a rectangle, as HF's tokenizer on a list does.

    Args:
      texts: B texts (str or bytes; a NumPy object/bytes array works too).
      text_pairs: None, or B second texts.
      max_length: the length to truncate and (with 'max_length') pad to.
      padding: 'max_length' (length max_length) or True / 'longest' (length of
        the longest row in the batch).
      truncation: see `encode`; if off, every row must fit max_length when
        padding='max_length'.
      add_special_tokens: add [CLS]/[SEP].
      return_numpy: int32 arrays if True, else nested lists.

    Returns:
      dict(input_ids [B, L], attention_mask [B, L], num_truncated [B]), where
      num_truncated counts the text tokens (bytes) cut from each example.
    """
    if isinstance(texts, (str, bytes)):
      raise TypeError(
        'texts must be a sequence of texts, not one str/bytes; '
        'use encode() for a single text.'
      )
    if max_length is None:
      raise ValueError('batch_encode needs max_length (an int).')
    _check_max_length(max_length)
    if padding not in ('max_length', True, 'longest'):
      raise ValueError(
        f'padding={padding!r}: batch_encode pads to a rectangle; use '
        "'max_length' or 'longest'."
      )
    truncate = _truncation_enabled(truncation, max_length, padding)
    texts = list(texts)
    if text_pairs is not None:
      text_pairs = list(text_pairs)
      if len(text_pairs) != len(texts):
        raise ValueError(
          f'{len(texts)} texts but {len(text_pairs)} text_pairs.'
        )
    rows, cuts = [], []
    for i, text in enumerate(texts):
      pair = None if text_pairs is None else text_pairs[i]
      ids, cut = self._encode_ids(
        text, pair, add_special_tokens, max_length, truncate
      )
      rows.append(ids)
      cuts.append(cut)
    longest = max((len(r) for r in rows), default=0)
    if padding == 'max_length':
      if longest > max_length:
        raise ValueError(
          f'a row has {longest} tokens > max_length={max_length} and '
          'truncation is off; pass truncation=True or padding="longest".'
        )
      length = max_length
    else:
      length = longest
    input_ids = np.full((len(rows), length), PAD_ID, np.int32)
    attention_mask = np.zeros((len(rows), length), np.int32)
    for i, ids in enumerate(rows):
      input_ids[i, : len(ids)] = ids
      attention_mask[i, : len(ids)] = 1
    out = {
      'input_ids': input_ids,
      'attention_mask': attention_mask,
      'num_truncated': np.asarray(cuts, np.int32),
    }
    if not return_numpy:
      out = {k: v.tolist() for k, v in out.items()}
    return out

  # ----------------------------------------------------------------- decoding
  @staticmethod
  def _check_ids(ids: Any) -> np.ndarray:
    """Validates ids: a 1-D integer sequence with values in [0, 262)."""
    if isinstance(ids, (str, bytes)):
      raise TypeError(f'ids must be integers, got {type(ids).__name__}.')
    arr = np.asarray(ids)
    if arr.ndim == 0:
      arr = arr.reshape(1)
    if arr.ndim != 1:
      raise ValueError(
        f'ids must be 1-D, got shape {arr.shape}; use batch_decode for a batch.'
      )
    if arr.size and not (
      np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_
    ):
      raise TypeError(f'ids must be integers, got dtype {arr.dtype}.')
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= VOCAB_SIZE))
    if bad.size:
      raise ValueError(
        f'ids must be in [0, {VOCAB_SIZE}); got {arr[bad[:5]].tolist()} at '
        f'positions {bad[:5].tolist()}.'
      )
    return arr

  def convert_ids_to_tokens(self, ids: Any) -> list[str]:
    """HF's tokens: '[CLS]'-style strings for specials, chr(byte) otherwise."""
    return [
      SPECIAL_TOKENS[i]
      if i < NUM_SPECIAL_TOKENS
      else chr(i - NUM_SPECIAL_TOKENS)
      for i in self._check_ids(ids).tolist()
    ]

  def ids_to_bytes(self, ids: Any, skip_special_tokens: bool = False) -> bytes:
    """Raw bytes of ids; specials become their ASCII strings unless skipped."""
    arr = self._check_ids(ids)
    special = arr < NUM_SPECIAL_TOKENS
    if not special.any():
      return (arr - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes()
    pieces = []
    for i in arr.tolist():
      if i >= NUM_SPECIAL_TOKENS:
        pieces.append(bytes((i - NUM_SPECIAL_TOKENS,)))
      elif not skip_special_tokens:
        pieces.append(SPECIAL_TOKENS[i].encode('ascii'))
    return b''.join(pieces)

  def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
    """Ids -> text like HF: invalid UTF-8 becomes U+FFFD.

    Args:
      ids: a 1-D sequence of ints in [0, 262) (list, NumPy or JAX array).
      skip_special_tokens: drop ids 0..5 (PAD included) instead of writing
        them as '[PAD]', '[CLS]', ...

    Returns:
      The decoded string.
    """
    return self.ids_to_bytes(ids, skip_special_tokens).decode(
      'utf-8', errors='replace'
    )

  def batch_decode(
    self, batch_ids: Any, skip_special_tokens: bool = False
  ) -> list[str]:
    """`decode` on each row of a [B, L] array or a list of id lists."""
    return [self.decode(row, skip_special_tokens) for row in batch_ids]
