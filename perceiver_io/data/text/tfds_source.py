"""TFDS text sources (``tfds:<name>``): prepared builders, fields, classes, shards.

Why this module exists: TFDS is the convenient source when a dataset is
already prepared, but on an offline machine an unprepared one must fail at
once, with an error that names the local-file source to use instead
(`local_source_hint`), not after a download attempt. The check is cheap
(`builder.is_prepared()`); ``download=True`` allows preparing it.

TFDS files are read in their stored order (already shuffled when TFDS
prepared them); each process reads its own part of the split
(``tfds.even_splits``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perceiver_io.data.text.fields import _as_tuple
from perceiver_io.data.text.fields import _class_map
from perceiver_io.data.text.fields import UNLABELED
from perceiver_io.data.text.glue import GLUE_TASKS

_TFDS_DEFAULT_FIELDS = {'imdb_reviews': (('text',), 'label')}
_TFDS_DEFAULT_FIELDS.update(
  {t.tfds_name: (t.text_fields, 'label') for t in GLUE_TASKS.values()}
)


def local_source_hint(name: str, task: str = 'classification') -> str:
  """The local-file source to suggest when TFDS `name` cannot be used.

  MLM reads unlabelled documents, so it gets the plain-text source rather
  than a labelled table. The runner rewrites the hint into command-line flags.

  Args:
    name: the TFDS name, e.g. 'imdb_reviews' or 'glue/mrpc'.
    task: 'mlm', or a table task ('classification' / 'regression').

  Returns:
    A phrase naming the source string and field arguments to pass instead.
  """
  if task == 'mlm':
    return (
      "source='text:/data/*.txt' (plain text files, one document a line), "
      "or a 'csv:', 'tsv:' or 'jsonl:' file with text_field=... (no labels)"
    )
  if name == 'imdb_reviews':
    return (
      "source='aclimdb:/path/to/aclImdb' (the extracted aclImdb_v1.tar.gz) or "
      "source='csv:/path/{split}.csv' with text_fields=('text',), label_field='label'"
    )
  if name.startswith('glue/'):
    task = GLUE_TASKS.get(name.split('/', 1)[1])
    fields = task.text_fields if task else ('sentence',)
    return (
      f"source='tsv:/path/to/glue_data/<TASK>/{{split}}.tsv' (GLUE TSV; e.g. split="
      f"'dev') with text_fields={fields!r}, label_field='label' (columns are "
      'guessed for the usual GLUE headers)'
    )
  return (
    "source='csv:/path/{split}.csv', 'tsv:...' or 'jsonl:...' with text_fields=... "
    'and label_field=...'
  )


def _tfds_builder(
  name: str, data_dir: str | None, download: bool, task: str = 'classification'
):
  """A prepared TFDS builder, or one clear error; downloads only if asked.

  `task` ('mlm' or a table task) picks the local alternative the error names.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError, unknown config, ...
    first_line = (
      str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    )
    raise ValueError(
      f'unknown TFDS dataset {name!r} ({first_line}); check the name, or '
      f'pass a local file: {local_source_hint(name, task)}.'
    ) from None
  if not builder.is_prepared():
    if download:
      builder.download_and_prepare()
    else:
      raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared in the TFDS data dir '
        f'{str(builder.data_dir_root)!r} and download=False '
        '(offline). Either prepare it there (download=True, or `tfds build` on a '
        f'machine with network, then copy the folder), or pass a local file: '
        f'{local_source_hint(name, task)}.'
      )
  return builder


def _tfds_count(builder, split) -> int:
  """Examples in a TFDS split (from its metadata, else by counting)."""
  try:
    return int(builder.info.splits[split].num_examples)
  except Exception:  # pylint: disable=broad-except  (e.g. mocked metadata)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def _tfds_fields(builder, name, text_fields, label_field, task):
  features = builder.info.features
  default = _TFDS_DEFAULT_FIELDS.get(name)
  if text_fields is None:
    if default is None:
      raise ValueError(
        f'pass text_fields for TFDS dataset {name!r}; its features are '
        f'{list(features.keys())}.'
      )
    text_fields = default[0]
  if label_field is None:
    label_field = (
      False if task == 'mlm' else (default[1] if default else 'label')
    )
  for field in tuple(text_fields) + (
    (label_field,) if label_field is not False else ()
  ):
    if field not in features:
      raise ValueError(
        f'TFDS dataset {name!r} has no feature {field!r}; it has '
        f'{list(features.keys())}.'
      )
  return _as_tuple(text_fields), label_field


def _tfds_classes(builder, label_field, classes):
  feature = builder.info.features[label_field]
  names = tuple(getattr(feature, 'names', None) or ())
  if classes is not None:
    _, given, _ = _class_map(classes)
    if names and len(given) != len(names):
      raise ValueError(
        f'classes has {len(given)} names but the TFDS label has '
        f'{len(names)}: {names}.'
      )
    names = given
  return (names or None), (len(names) if names else None)


def _tfds_even_splits(split: str, process_count: int) -> list[Any]:
  if process_count == 1:
    return [split]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return list(tfds.even_splits(split, n=process_count))


def _tfds_raw(
  tf, builder, split, text_fields, label_field, pair, regression, index_offset
):
  """A TFDS split as dicts text_a / text_b / label / index, in file order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  ds = builder.as_dataset(
    split=split,
    shuffle_files=False,
    read_config=tfds.ReadConfig(interleave_cycle_length=1),
  )
  label_dtype = tf.float32 if regression else tf.int64

  def convert(index, ex):
    label = (
      tf.cast(ex[label_field], label_dtype)
      if label_field is not False
      else tf.constant(UNLABELED, label_dtype)
    )
    return {
      'text_a': ex[text_fields[0]],
      'text_b': ex[text_fields[1]] if pair else tf.constant(b''),
      'label': label,
      'index': index + index_offset,
    }

  return ds.enumerate().map(convert)
