"""Per-host reading of file-per-row and file-per-many-rows text sources:
aclImdb folders (a file per review) and MLM ``text:`` globs (a document
per line, files cut by bytes), with 4 processes simulated in one Python
process (process_index=i, process_count=4).

What each process read is observed at the file: the paths `open` is
called with (aclImdb) and the byte intervals returned by every read
(``text:``). Expected documents come from reading every file whole with
``bytes.splitlines`` (the definition of a document), never from the
per-process reader.
"""

import os
from unittest import mock

import numpy as np
import pytest

from configs import common
from experiments import host_data
from perceiver_io import tokenizer as tokenizer_lib
from perceiver_io.data import text as text_lib
from perceiver_io.data.text import mlm
from perceiver_io.data.text import text_files
from tests.text_data_helpers import Opened
from tests.text_data_helpers import write

P = 4


# ------------------------------------------------------------------ aclImdb
@pytest.fixture(scope='module')
def aclimdb(tmp_path_factory):
  """aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt; ids 0..n-1 so that
  name order (10 before 2) is not row order (id, then neg before pos)."""
  root = tmp_path_factory.mktemp('acl') / 'aclImdb'
  reviews = {}
  for split, n in (('train', 23), ('test', 10)):
    for i in range(n):
      label = 'pos' if i % 3 else 'neg'
      path = root / split / label / f'{i}_{7 if i % 3 else 2}.txt'
      write(str(path), f'{split} {label} review {i}')
      reviews.setdefault(split, []).append((i, label == 'pos', str(path)))
    # Same id in both folders: neg sorts first.
    path = root / split / 'pos' / '1_9.txt'
    write(str(path), f'{split} pos twin 1')
    reviews[split].append((1, True, str(path)))
  for i in range(9):  # A split with invalid UTF-8 in reviews 2 and 7.
    body = b'bad \xff' if i in (2, 7) else f'ok {i}'.encode()
    write(
      str(root / 'extra' / ('pos' if i % 2 else 'neg') / f'{i}_1.txt'), body
    )
  return root, {s: sorted(r) for s, r in reviews.items()}


def _acl_config(root):
  c = common.base_config()
  with c.unlocked():
    c.task = 'classification'
    c.data.source = f'aclimdb:{root}'
    c.data.max_length = 40
    c.batch_size = 8
    c.seed = 3
  return c


def _texts(table):
  tok = tokenizer_lib.ByteTokenizer()
  return [tok.decode(r, skip_special_tokens=True) for r in table['input_ids']]


@pytest.mark.parametrize('split, train', [('train', True), ('test', False)])
def test_aclimdb_each_process_opens_only_its_rows(aclimdb, split, train):
  root, reviews = aclimdb
  config = _acl_config(root)
  with Opened(root) as one:
    whole, _ = host_data.load_process_table(
      config, split, 'classification', train, 0, 1
    )
  # One process: every review once, in (id, label) order, as before.
  expected = []
  for _, pos, path in reviews[split]:
    with open(path) as f:
      expected.append((f.read(), int(pos)))
  assert list(zip(_texts(whole), whole['label'].tolist())) == expected
  assert sorted(one.paths) == sorted(p for *_, p in reviews[split])
  tables, opened = [], []
  for i in range(P):
    with Opened(root) as seen:
      table, _ = host_data.load_process_table(
        config, split, 'classification', train, i, P
      )
    tables.append(table)
    opened.append(seen.paths)
    # It opened exactly the files of the rows it holds.
    rows = [p for _, _, p in reviews[split] if open(p).read() in _texts(table)]
    assert sorted(seen.paths) == sorted(rows)
  files = [p for paths in opened for p in paths]
  assert len(files) == len(set(files))  # Disjoint, each file opened once.
  assert sorted(files) == sorted(p for *_, p in reviews[split])
  for key, value in whole.items():  # Blocks in process order = one process.
    np.testing.assert_array_equal(
      np.concatenate([t[key] for t in tables]), value
    )


def test_aclimdb_stats_count_the_rows_a_process_read(aclimdb):
  root, _ = aclimdb
  make = lambda i, n: text_lib.make_text_dataset(
    f'aclimdb:{root}',
    'extra',
    max_length=8,
    batch_size=2,
    repeat=False,
    process_index=i,
    process_count=n,
  )[1]
  one = make(0, 1).stats
  assert (one.num_examples, one.num_invalid_utf8) == (9, 2)
  invalid, opened = 0, []
  for i in range(P):
    with Opened(root) as seen:
      info = make(i, P)
    assert info.stats.num_examples == info.num_examples_per_process[i]
    invalid += info.stats.num_invalid_utf8
    opened += seen.paths
  assert invalid == 2 and len(opened) == len(set(opened)) == 9


# ----------------------------------------------------------- text: globs
def _corpus(root):
  """Several small files, an empty one and one large file that every
  process's byte range cuts; \\n, \\r\\n, a lone \\r, blank lines."""
  rng = np.random.default_rng(5)
  words = lambda n: ' '.join(
    f'w{int(x)}' for x in rng.integers(0, 999, max(n, 1))
  )
  big = ''.join(
    words(int(rng.integers(1, 30))) + ('\r\n' if k % 7 == 3 else '\n')
    for k in range(150)
  )
  files = {
    'a.txt': 'first doc\n\n  \nsecond doc',
    'b.txt': '',
    'c.txt': 'cr\rline\r\nthird\n',
    'm_big.txt': big,
    'z.txt': 'last one\n',
  }
  for name, body in files.items():
    write(str(root / name), body)
  return sorted(str(root / n) for n in files)


def _documents(paths):
  """The definition: non-empty lines of every file read whole, in order."""
  docs = []
  for path in paths:
    with open(path, 'rb') as f:
      docs += [line for line in f.read().splitlines() if line.strip()]
  return docs


def test_text_glob_processes_read_only_their_byte_ranges(tmp_path):
  paths = _corpus(tmp_path)
  pattern = f'{tmp_path}/*.txt'
  expected = _documents(paths)
  with Opened(tmp_path) as one:
    assert text_files.read_documents(pattern) == expected
  sizes = [os.path.getsize(p) for p in paths]
  whole = [(p, 0, n) for p, n in zip(paths, sizes) if n]
  assert one.spans == whole  # Each file read once, whole.
  offsets = np.cumsum([0, *sizes])
  total = int(offsets[-1])
  got, straddled = [], 0
  for i in range(P):
    with Opened(tmp_path) as seen:
      docs = text_files.read_documents(pattern, i, P)
    got.append(docs)
    start, stop = total * i // P, total * (i + 1) // P
    for path, lo, hi in seen.spans:
      k = paths.index(path)
      first, last = start - offsets[k], stop - offsets[k]
      with open(path, 'rb') as f:
        data = f.read()
      # Past the range only to the end of the line holding its last byte.
      end = data.find(b'\n', max(last - 1, 0))
      limit = max(last, len(data) if end < 0 else end + 1)
      assert first - 1 <= lo and hi <= limit, (i, path, lo, hi)
      straddled += hi > last
  # Concatenated in process order: every document once, in file order.
  assert sum(got, []) == expected
  assert all(got) and straddled >= 2  # Lines cross the range ends.


def test_mlm_text_split_slices_with_gathered_counts(tmp_path):
  paths = _corpus(tmp_path / 'train')
  source = f'text:{tmp_path}/{{split}}/*.txt'
  split = 'train[3:-40]+train[:2]'
  docs = _documents(paths)
  expected = docs[3:-40] + docs[:2]
  local = []  # What each process would send: its own counts only.
  for i in range(P):
    mlm.text_documents(
      source[5:], split, i, P, lambda c: local.append(c) or np.stack([c] * P)
    )
  gathered = np.stack(local)
  tokenized, batches = [], set()
  for i in range(P):
    encoded = []
    original = tokenizer_lib.ByteTokenizer.batch_encode

    def batch_encode(tok, texts, *a, **k):
      encoded.extend(t for t in texts if t)  # pylint: disable=cell-var-from-loop
      return original(tok, texts, *a, **k)

    with mock.patch.object(
      tokenizer_lib.ByteTokenizer, 'batch_encode', batch_encode
    ):
      ds, info = text_lib.make_mlm_dataset(
        source,
        split,
        max_length=256,
        batch_size=4,
        repeat=False,
        docs_per_example=1,
        process_index=i,
        process_count=P,
        gather_counts=lambda c: gathered,
      )
      batches.add(len(list(ds.as_numpy_iterator())))
    assert info.num_examples == len(expected)
    assert len(encoded) == info.num_examples_per_process[i]
    tokenized += encoded
  assert len(batches) == 1  # Every process yields the same batch count.
  assert sorted(tokenized) == sorted(expected)  # Each document once.
  with pytest.raises(ValueError, match='expected \\(4, 1\\)'):
    mlm.text_documents(source[5:], split, 0, P, lambda c: c[None])


def test_a_sliced_mlm_split_of_one_file_is_shared_evenly(tmp_path):
  # The last 10 % of one file lies in the last process's byte range: a
  # sliced split is read whole so that every process gets its block.
  path = tmp_path / 'corpus.txt'
  path.write_text(''.join(f'document {i} of the corpus\n' for i in range(200)))
  for split, each in (('train[:90%]', 45), ('train[90%:]', 5)):
    for p in range(4):
      _, info = mlm.make_mlm_dataset(
        f'text:{path}',
        split,
        max_length=32,
        batch_size=2,
        docs_per_example=1,
        process_index=p,
        process_count=4,
        repeat=False,
      )
      assert info.num_examples_per_process == (each,) * 4
