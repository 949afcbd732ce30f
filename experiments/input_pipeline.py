"""Data for the runner: in-memory tables and step-indexed global batches.

Why this design: the runner must give bit-identical training after a crash
(resume mid-epoch), with 1 or 8 devices, and with 1 or 2 processes. So the
examples of global batch `step` are a pure function of `(seed, step)`: a
fresh permutation per epoch (NumPy `default_rng([seed, epoch])`), laid end to
end, and batch `step` is rows `[step * B, (step + 1) * B)` of that stream.
Each process materialises only its contiguous slice of each global batch
(its own data shard), which `sharding.global_batch` assembles into one
global array. Skipping ahead after a restart costs nothing.

Tables are small enough to hold in memory for every fine-tuning set in this
project (digits, IMDB, GLUE, local CSV/TSV/JSONL files); text is read and
byte-tokenised once by `perceiver_io.data.text` (which counts empty, invalid
and truncated texts). MLM pretraining streams from
`perceiver_io.data.text.make_mlm_dataset` instead (`MlmTrainStream`), which
is also step-indexed through its `start_step`.
"""

import logging
import re
from typing import Any, Dict, Iterator, List, Optional

import jax
import ml_collections
import numpy as np

from perceiver_io import tokenizer as tokenizer_lib
from perceiver_io.data import image as image_data
from perceiver_io.data import text as text_data

Table = Dict[str, np.ndarray]


class TableInfo(dict):
  """Metadata of a loaded table: num_examples, num_classes, label_names."""


# ----------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------


def load_digits_table(split: str) -> tuple:
  """scikit-learn's 8x8 digits as images in [0, 1], shape [N, 8, 8, 1].

  The split is the fixed stratified 1437/360 shuffle that
  `perceiver_io.data.image` uses for its 'digits' source.
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  train_idx, test_idx = model_selection.train_test_split(
    np.arange(len(digits.target)),
    test_size=image_data.DIGITS_NUM_TEST,
    random_state=image_data.DIGITS_SPLIT_SEED,
    stratify=digits.target,
  )
  if split == 'train':
    idx = train_idx
  elif split in ('test', 'validation', 'eval'):
    idx = test_idx
  else:
    raise ValueError(f"digits has splits 'train' and 'test', got {split!r}.")
  images = (digits.images[idx] / 16.0).astype(np.float32)[..., None]
  labels = digits.target[idx].astype(np.int32)
  info = TableInfo(
    num_examples=len(idx),
    num_classes=10,
    label_names=[str(i) for i in range(10)],
  )
  return {'image': images, 'label': labels}, info


def _comma_list(text: str) -> List[str]:
  return [t.strip() for t in str(text).split(',') if t.strip()]


def tokenize_texts(
  texts: List[str],
  pairs: Optional[List[str]],
  max_length: int,
  what: str = 'texts',
) -> Table:
  """Byte ids [N, max_length] + attention masks; logs truncation counts."""
  tok = tokenizer_lib.ByteTokenizer()
  enc = tok.batch_encode(
    texts, pairs, max_length=max_length, padding='max_length', truncation=True
  )
  truncated = int(np.sum(np.asarray(enc['num_truncated']) > 0))
  if truncated:
    logging.info(
      '%s: %d of %d examples truncated to %d bytes.',
      what,
      truncated,
      len(texts),
      max_length,
    )
  return {
    'input_ids': np.asarray(enc['input_ids'], np.int32),
    'attention_mask': np.asarray(enc['attention_mask'], np.int32),
    'num_truncated': np.asarray(enc['num_truncated'], np.int32),
  }


def text_source_kwargs(data: ml_collections.ConfigDict) -> Dict[str, Any]:
  """`perceiver_io.data.text` keyword arguments from `config.data`."""

  def column(name):  # Column indices for header-less files.
    return int(name) if str(name).isdigit() else name

  fields = [column(f) for f in _comma_list(data.text_fields)]
  return dict(
    text_fields=tuple(fields) if fields else None,
    label_field=column(data.label_field) if data.label_field else None,
    data_dir=data.data_dir or None,
    has_header=bool(data.has_header),
  )


def load_text_table(
  config: ml_collections.ConfigDict,
  split: str,
  task: str = 'classification',
  block: int = 0,
  blocks: int = 1,
  stats: bool = True,
) -> tuple:
  """Block `block` of `blocks` of a labelled text split, tokenised, in memory.

  Reads through `perceiver_io.data.text.make_text_dataset` (TFDS, GLUE,
  TSV/CSV/JSONL, aclImdb folders; one ordered pass) and keeps the real rows;
  only the block's rows are tokenised (TFDS: only they are read).
  `task` says how labels are read: 'classification' (class names or ids)
  or 'regression' (numbers). `stats`: count empty/invalid/truncated texts
  over the whole split (one more pass).
  """
  data = config.data
  names = _comma_list(data.label_names)
  if not names and task == 'classification':
    names = glue_local_classes(config)
  try:
    ds, info = text_data.make_text_dataset(
      data.source,
      split,
      max_length=int(data.max_length),
      batch_size=512,
      repeat=False,
      task=task,
      classes=(class_mapping(names) if names else None)
      if task == 'classification'
      else None,
      process_index=block,
      process_count=blocks,
      compute_stats=stats,
      **text_source_kwargs(data),
    )
  except (ValueError, FileNotFoundError) as e:
    raise type(e)(cli_hint(str(e))) from None
  parts = {k: [] for k in ('input_ids', 'attention_mask', 'label')}
  for batch in ds.as_numpy_iterator():
    keep = batch['mask'] > 0
    for k in parts:
      parts[k].append(batch[k][keep])
  table = {k: np.concatenate(v) for k, v in parts.items()}
  stats = info.stats.as_dict() if info.stats is not None else {}
  if stats:
    logging.info(
      '%s [%s]: %d examples, %d empty, %d invalid UTF-8, %d '
      'truncated to %d bytes.',
      data.source,
      split,
      stats['num_examples'],
      stats['num_empty'],
      stats['num_invalid_utf8'],
      stats['num_truncated'],
      int(data.max_length),
    )
  if task == 'classification' and np.any(table['label'] < 0):
    row = int(np.nonzero(table['label'] < 0)[0][0])
    raise ValueError(
      f'{data.source} [{split}] row {row + 1} (1 = the first '
      'data row) is unlabelled; '
      'training and evaluation need labelled splits.'
    )
  label_names = list(info.classes) if info.classes else names
  return table, TableInfo(
    num_examples=int(info.num_examples),
    num_examples_per_process=list(info.num_examples_per_process),
    num_classes=info.num_classes,
    label_names=label_names,
    stats=stats,
    metrics=tuple(info.metrics),
    text_fields=list(info.text_fields),
  )


def glue_local_classes(config) -> List[str]:
  """The GLUE task's class names for a local (non-TFDS) source, else [].

  Why: the original GLUE TSVs label RTE/QNLI/MNLI/WNLI rows with strings
  ('entailment', 'not_entailment', ...) and the GLUE table in
  `perceiver_io.data.text` already knows them in TFDS label order; TFDS
  sources carry their own names.
  """
  task = config.get('glue_task') or ''
  if not task or str(config.data.source).lower().startswith('tfds:'):
    return []
  glue = text_data.GLUE_TASKS.get(task)
  return list(glue.classes) if glue is not None and glue.classes else []


def class_mapping(names: List[str]) -> Dict[str, int]:
  """Label names -> ids, also accepting the ids themselves ('0', '1', ...).

  Why: one task's files come with either (the original GLUE RTE TSV says
  'entailment', the HuggingFace export of the same set says 0), so a class
  list given on the command line must not reject the numeric form.
  """
  mapping = {name: i for i, name in enumerate(names)}
  for i in range(len(names)):
    mapping.setdefault(str(i), i)
  return mapping


# Library (Python keyword) hints -> the launcher's command-line flags.
_CLI_HINTS = (
  (
    r'pass classes=\[\.\.\.\] with the label names \(or task="regression" '
    r'for numbers\)',
    'pass --config.data.label_names=NAME0,NAME1,... (the '
    'label names in class-id order)',
  ),
  (
    r'pass label_field="name" \(or label_field=False for unlabelled data\)',
    'pass --config.data.label_field=NAME',
  ),
  (
    r'pass label_field \(a column index\) or label_field=False for '
    r'unlabelled data',
    'pass --config.data.label_field=INDEX (a column index)',
  ),
  (
    r'pass text_fields \(column indices, e\.g\. \(3,\) for CoLA\) and '
    r'label_field',
    'pass --config.data.text_fields=INDEX[,INDEX] (column '
    'indices, e.g. 3 for CoLA) and --config.data.label_field=INDEX',
  ),
  (
    r'pass text_fields=\("name",\) or \("first", "second"\)',
    'pass --config.data.text_fields=NAME (or FIRST,SECOND for pairs)',
  ),
  (
    r'pass label_field with one of them',
    'pass --config.data.label_field=<one of them>',
  ),
  (
    r'pass text_fields with one of them',
    'pass --config.data.text_fields=<one of them>',
  ),
  # The offline-TFDS alternatives (`text.local_source_hint`).
  (
    r"with text_fields=\(((?:'[^']*'(?:, )?)+),?\), label_field='([^']*)'",
    lambda m: (
      'with --config.data.text_fields='
      + ','.join(re.findall(r"'([^']*)'", m.group(1)))
      + f' --config.data.label_field={m.group(2)}'
    ),
  ),
  (
    r'with text_fields=\.\.\. and label_field=\.\.\.',
    'with --config.data.text_fields=... and --config.data.label_field=...',
  ),
  (r'with text_field=\.\.\.', 'with --config.data.text_fields=...'),
  (r"(?<![\w.])source='", "--config.data.source='"),
  (
    r"\(GLUE TSV; e\.g\. split='dev'\)",
    '(GLUE TSV; e.g. --config.data.eval_split=dev)',
  ),
)


def cli_hint(message: str) -> str:
  """`message` with the library's keyword hints written as CLI flags."""
  for pattern, replacement in _CLI_HINTS:
    message = re.sub(pattern, replacement, message)
  return message


TEXT_KINDS = ('tfds', 'tsv', 'csv', 'jsonl', 'aclimdb')
# Local sources that read one file (or glob) for every split unless their
# path holds '{split}'.
_ONE_FILE_KINDS = ('tsv', 'csv', 'jsonl', 'text')


def check_eval_is_not_train(config: ml_collections.ConfigDict) -> None:
  """Refuses split names that a local source would ignore.

  Why: `csv:/data/train.csv` with train_split 'train' and eval_split 'test'
  read the same file twice (a path without '{split}' has no splits), so
  the run evaluated on its own training rows and reported that as test
  accuracy. Slices of one file ('train[:90%]' / 'train[90%:]') are how to
  split a single file; overlapping slices are logged.
  """
  data = config.data
  kind, _, path = str(data.source).partition(':')
  if kind.lower() not in _ONE_FILE_KINDS or '{split}' in path:
    return
  train = text_data.parse_split(data.train_split)
  evaluation = text_data.parse_split(data.eval_split)
  names = {p.name for p in train} | {p.name for p in evaluation}
  if len(names) > 1:
    raise ValueError(
      f'config.data.source={data.source!r} has no {{split}} in its path, so '
      f'the split names {sorted(names)} all read the same rows: evaluation '
      'would score training data. Put {split} in the path (e.g. '
      f'{kind}:/data/{{split}}.{"txt" if kind == "text" else kind}, one '
      'file per split) or slice the one file, e.g. '
      "--config.data.train_split='train[:90%]' "
      "--config.data.eval_split='train[90%:]'."
    )
  rows = 10_007  # Any size: overlap of the slices is what matters.
  seen = {i for p in train for i in p.indices(rows)}
  if any(i in seen for p in evaluation for i in p.indices(rows)):
    logging.warning(
      'evaluation split %r overlaps training split %r of %s: '
      'eval metrics include training rows.',
      data.eval_split,
      data.train_split,
      data.source,
    )


# In-memory table loaders by source name; text kinds go to load_text_table.
# New modalities (e.g. image folders) plug in here: name -> fn(split).
TABLE_SOURCES = {'digits': load_digits_table}


def load_table(
  config: ml_collections.ConfigDict,
  split: str,
  task: str = 'classification',
  block: int = 0,
  blocks: int = 1,
  stats: bool = True,
) -> tuple:
  """(table, info) for block `block` of `blocks` of `split` of
  `config.data.source` (not MLM): contiguous rows, as the text library cuts
  them; info['num_examples'] counts the whole split and
  info['num_examples_per_process'] every block.

  `task`: 'classification' or 'regression' (how text labels are read).

  Returns:
    table: dict of equal-length arrays. Images: 'image', 'label'. Text
      classification/regression: 'input_ids', 'attention_mask', 'label'.
    info: TableInfo.
  """
  source = config.data.source
  if source in TABLE_SOURCES:
    table, info = TABLE_SOURCES[source](split)
    total = int(info['num_examples'])
    bounds = [total * k // blocks for k in range(blocks + 1)]
    rows = slice(bounds[block], bounds[block + 1])
    info['num_examples_per_process'] = list(np.diff(bounds))
    return {k: v[rows] for k, v in table.items()}, info
  kind = source.split(':', 1)[0].lower() if ':' in source else ''
  if kind not in TEXT_KINDS:
    raise ValueError(
      f'unknown config.data.source {source!r}; use one of '
      f'{sorted(TABLE_SOURCES)} or <kind>:<name or path> with kind in '
      f'{TEXT_KINDS} (e.g. csv:/data/train.csv, tfds:glue/cola; MLM also '
      'text:/data/*.txt).'
    )
  return load_text_table(config, split, task, block, blocks, stats)


# ----------------------------------------------------------------------------
# Step-indexed training batches.
# ----------------------------------------------------------------------------


def batch_indices(
  step: int, global_batch: int, num_examples: int, seed: int, stream=()
) -> np.ndarray:
  """Row indices of global batch `step` (epochs of fresh permutations,
  seeded by (seed, *stream, epoch))."""
  if num_examples < 1:
    raise ValueError('the training table is empty.')
  start = step * global_batch
  first_epoch = start // num_examples
  last_epoch = (start + global_batch - 1) // num_examples
  parts = [
    np.random.default_rng([seed, *stream, e]).permutation(num_examples)
    for e in range(first_epoch, last_epoch + 1)
  ]
  stream = np.concatenate(parts)
  offset = start - first_epoch * num_examples
  return stream[offset : offset + global_batch]


def process_slice(
  global_batch: int, process_index: int, process_count: int
) -> slice:
  """This process's contiguous rows of a global batch."""
  if global_batch % process_count:
    raise ValueError(
      f'batch_size {global_batch} must be divisible by the '
      f'number of processes {process_count}.'
    )
  per = global_batch // process_count
  return slice(process_index * per, (process_index + 1) * per)


def train_batch(
  table: Table,
  step: int,
  global_batch: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Table:
  """This process's rows of global training batch `step` (+ 'weight')."""
  idx = batch_indices(step, global_batch, len(next(iter(table.values()))), seed)
  rows = process_slice(global_batch, process_index, process_count)
  idx = idx[rows]
  batch = {k: v[idx] for k, v in table.items()}
  batch['weight'] = np.ones(len(idx), np.float32)
  return batch


# Seed of evaluation subsets: fixed, not config.seed, so runs with other
# training seeds score the same examples and stay comparable.
EVAL_SUBSET_SEED = 0


def eval_rows(num_examples: int, max_examples: int = -1) -> np.ndarray:
  """Rows of an eval table to score, in table order.

  All rows when `max_examples` <= 0 or covers the table; otherwise a
  seeded random subset of `max_examples` rows. Why not the first rows:
  files are often sorted by label (IMDB's test.csv), and their first rows
  are then a single class. The subset is the same on every run and every
  process (a fixed seed), so multi-process evaluation still shards one
  global order.
  """
  if max_examples <= 0 or max_examples >= num_examples:
    return np.arange(num_examples)
  rng = np.random.default_rng(EVAL_SUBSET_SEED)
  return np.sort(rng.choice(num_examples, max_examples, replace=False))


def eval_batches(
  table: Table,
  global_batch: int,
  process_index: int = 0,
  process_count: int = 1,
  max_examples: int = -1,
) -> Iterator[Table]:
  """Ordered eval batches of `eval_rows`, the last padded with weight-0
  rows."""
  order = eval_rows(len(next(iter(table.values()))), max_examples)
  n = len(order)
  rows = process_slice(global_batch, process_index, process_count)
  for start in range(0, n, global_batch):
    idx = np.arange(start, start + global_batch)
    weight = (idx < n).astype(np.float32)
    idx = order[np.minimum(idx, n - 1)[rows]]
    batch = {k: v[idx] for k, v in table.items()}
    batch['weight'] = weight[rows]
    yield batch


def warn_if_single_class(
  labels: np.ndarray, names: List[str], what: str
) -> bool:
  """Logs a warning if every evaluated label is the same class.

  Why: accuracy on one class measures only how often the model says that
  class (a model that always says 'negative' scores 1.0 on negatives).
  Returns whether it warned.
  """
  classes = np.unique(labels)
  if len(labels) < 2 or len(classes) != 1:
    return False
  label = int(classes[0])
  name = names[label] if 0 <= label < len(names) else str(label)
  logging.warning(
    '%s: all %d evaluated examples have label %s, a single class: its '
    'accuracy only says how often the model predicts that class. Evaluate '
    'on data holding every class (another --config.data.eval_split, or '
    'more --config.max_eval_examples).',
    what,
    len(labels),
    name,
  )
  return True


# ----------------------------------------------------------------------------
# Masked-LM batches: streamed by perceiver_io.data.text.make_mlm_dataset (the
# paper's masking: 15% of bytes, whole words, 80/10/10; documents joined and
# cropped). The stream resumes exactly via `start_step`.
# ----------------------------------------------------------------------------


def _mlm_dataset(
  config,
  split: str,
  *,
  repeat: bool,
  start_step: int,
  batch_size: int,
  num_shards: Optional[int] = None,
):
  data = config.data
  fields = _comma_list(data.text_fields)
  return text_data.make_mlm_dataset(
    data.source,
    split,
    max_length=int(data.max_length),
    batch_size=batch_size,
    repeat=repeat,
    text_field=fields[0] if fields else None,
    docs_per_example=int(data.docs_per_example),
    mask_prob=float(data.mask_rate),
    seed=int(config.seed),
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    data_dir=data.data_dir or None,
    num_shards=num_shards,
  )


def mlm_to_runner(batch: Table) -> Table:
  """Library MLM keys -> the runner's (targets, target_weights, weight)."""
  labels = batch['mlm_labels']
  return {
    'input_ids': batch['input_ids'],
    'attention_mask': batch['attention_mask'],
    'targets': np.where(labels < 0, 0, labels).astype(np.int32),
    'target_weights': batch['mlm_weights'].astype(np.float32),
    'weight': batch['mask'].astype(np.float32),
  }


class MlmTrainStream:
  """Step-indexed MLM training batches (must be read in step order)."""

  def __init__(self, config, start_step: int, num_shards: Optional[int] = None):
    local = int(config.batch_size) // jax.process_count()
    ds, self.info = _mlm_dataset(
      config,
      config.data.train_split,
      repeat=True,
      start_step=start_step,
      batch_size=local,
      num_shards=num_shards,
    )
    self._it = ds.as_numpy_iterator()
    self._next_step = start_step

  def batch(self, step: int) -> Table:
    if step != self._next_step:
      raise ValueError(
        f'MLM stream expected step {self._next_step}, got '
        f'{step}; rebuild the stream with start_step.'
      )
    self._next_step += 1
    return mlm_to_runner(next(self._it))


def mlm_eval_batches(config) -> Iterator[Table]:
  local = int(config.eval_batch_size) // jax.process_count()
  ds, _ = _mlm_dataset(
    config, config.data.eval_split, repeat=False, start_step=0, batch_size=local
  )
  limit = int(config.max_eval_examples)
  seen = 0
  for batch in ds.as_numpy_iterator():
    if 0 < limit <= seen:
      break
    seen += local * jax.process_count()
    yield mlm_to_runner(batch)
