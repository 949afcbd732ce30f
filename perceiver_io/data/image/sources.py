"""Image-classification sources: TFDS, `dir:` folders, digits, synthetic; class lists.

Why this module exists: a source turns a name and a split into examples and
labels with a fixed order, so that the pipeline can shard, shuffle and resume
the same way for every kind. A table source can load example i of its split
by index; TFDS streams records.

Sources (`make_image_dataset(source, ...)`):
  * `'imagenet2012'` or `'tfds:<name>'`: a TFDS image-classification dataset (`image`, `label`
    features). ImageNet cannot be downloaded by TFDS: pass `manual_dir` (holding
    `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar`) once to prepare it, or use a folder.
  * a directory (optionally `'dir:<path>'`): `<path>/<split>/` if that exists, else `<path>`. If it
    holds `labels.csv` the images are listed there (flat layout); otherwise every sub-folder is a
    class (`<root>/<class_name>/*.jpg|jpeg|png`, any case).
  * `'digits'`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), split
    1437 train / 360 test with a fixed stratified shuffle; upscaled to `image_size`.
  * `'synthetic:<num_classes>'` or `'synthetic:<num_classes>:<num_examples>'`: generated 32x32
    images whose colour depends on the label; deterministic, needs no files.

Label conventions:
  * TFDS `imagenet2012` labels are 0..999 in the order of the sorted WordNet ids (0 = n01440764
    tench, 999 = n15075141 toilet tissue). This is the same order as PyTorch/Keras ImageNet
    indices and as `class_index` in `shared/data/imagenet_samples/synsets_all_1000.csv`; a
    class-per-folder ImageNet tree with wnid folder names gets the same indices when the class list
    is the sorted wnids (the default) or that CSV.
  * The official Perceiver code feeds TFDS labels unchanged into `one_hot(label, 1000)`: there is no
    -1/+1 shift anywhere in `perceiver/train/` (checked in `dataset.py` and `experiment.py`), and
    the released Perceiver checkpoints have 1000 outputs in the same order.
  * Some TF-slim / tensorflow/models checkpoints (Inception, older ResNets) have 1001 outputs with
    index 0 = "background". Their class `c + 1` is our class `c`: use `logits[..., 1:]` to get
    1000-class logits, and `label + 1` to go the other way.
"""

import csv
import dataclasses
import io
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from perceiver_io.data.image.decoding import decode_image
from perceiver_io.data.image.lazy_tf import import_tf

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')

DIGITS_NUM_TEST = 360  # 1797 - 360 = 1437 train images.
DIGITS_SPLIT_SEED = 0
SYNTHETIC_SIZE = 32
SYNTHETIC_NUM_EXAMPLES = {'train': 1024, 'test': 256}
_EVAL_SPLIT_ALIASES = {
  'test': 'test',
  'validation': 'test',
  'val': 'test',
  'eval': 'test',
}


# ============================================================================================
# Class lists.
# ============================================================================================


def load_class_names(path: str, column: Optional[str] = None) -> List[str]:
  """Reads an ordered class list (e.g. the 1000 ImageNet wnids) from a CSV or text file.

  * A `.csv` file needs a header. The names come from `column`, or else the first of `wnid`,
    `class_name`, `name`, `label` present. If it has a `class_index` (or `index`) column, rows are
    ordered by it and it must be 0..K-1, each once.
  * Any other file: one name per non-empty line, in order.

  Args:
    path: the file.
    column: CSV column holding the names.

  Returns:
    The names; position = class index.

  Raises:
    FileNotFoundError: if the file is missing.
    ValueError: for a missing column, bad indices, empty or duplicate names.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Class list file not found: {path}')
  if path.lower().endswith('.csv'):
    fields, rows = _read_csv(path)
    if column is None:
      column = next(
        (c for c in ('wnid', 'class_name', 'name', 'label') if c in fields),
        None,
      )
    if column is None or column not in fields:
      wanted = column or 'wnid, class_name, name or label'
      raise ValueError(
        f'{path}: no class-name column ({wanted}); the header has {fields}.'
      )
    index_column = next(
      (c for c in ('class_index', 'index') if c in fields), None
    )
    if index_column is not None:
      try:
        indices = [int(row[index_column]) for row in rows]
      except ValueError as e:
        raise ValueError(
          f'{path}: column {index_column!r} must hold integers: {e}'
        ) from e
      if sorted(indices) != list(range(len(rows))):
        raise ValueError(
          f'{path}: column {index_column!r} must list 0..{len(rows) - 1} once each.'
        )
      rows = [
        row for _, row in sorted(zip(indices, rows), key=lambda pair: pair[0])
      ]
    names = [(row[column] or '').strip() for row in rows]
  else:
    text = _read_text(path)
    names = [line.strip() for line in text.splitlines() if line.strip()]
  if not names or any(not name for name in names):
    raise ValueError(f'{path}: the class list is empty or has an empty name.')
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise ValueError(
      f'{path}: class names must be unique; repeated: {duplicates[:5]}. '
      'For ImageNet use the wnid column, not the short names.'
    )
  return names


def _read_text(path: str) -> str:
  """A UTF-8 file's text (BOM dropped); other bytes are one ValueError
  naming the file."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise ValueError(
      f'{path} is not UTF-8 text (byte {e.start}); save it as UTF-8.'
    ) from None


def _read_csv(path: str) -> Tuple[List[str], List[Dict[str, str]]]:
  """(header, rows as dicts) of a CSV file; short rows read '' for the
  missing fields, malformed CSV is one ValueError naming the file."""
  reader = csv.DictReader(io.StringIO(_read_text(path), newline=''), restval='')
  try:
    return list(reader.fieldnames or []), list(reader)
  except csv.Error as e:
    raise ValueError(
      f'{path}, line {reader.line_num}: malformed CSV ({e}).'
    ) from None


# Labels become int32 in the batches.
_MAX_LABEL = 2**31 - 1


def _resolve_class_names(
  class_names: Union[None, str, Sequence[str]],
) -> Optional[List[str]]:
  if class_names is None:
    return None
  if isinstance(class_names, (str, os.PathLike)):
    return load_class_names(os.fspath(class_names))
  names = [str(name) for name in class_names]
  if len(set(names)) != len(names):
    raise ValueError('class_names must be unique.')
  return names


def _unknown_class_error(
  what: str, name: str, class_names: Sequence[str]
) -> ValueError:
  shown = ', '.join(class_names[:5])
  return ValueError(
    f'{what} {name!r} is not in the class list ({len(class_names)} classes; the first are: '
    f'{shown}{", ..." if len(class_names) > 5 else ""}). Pass class_names with the full, '
    'ordered class list (e.g. a CSV with a wnid column) or remove it.'
  )


# ============================================================================================
# Sources. A table source can load example i of its split by index; TFDS streams records.
# ============================================================================================


@dataclasses.dataclass(frozen=True)
class _TableSource:
  """A split whose examples can be read by index (files on disk or in-memory arrays)."""

  num_examples: int
  num_classes: int
  class_names: Optional[Tuple[str, ...]]
  geometry: str
  load: Callable[
    [Any], Tuple[Any, Any]
  ]  # TF int64 index -> (uint8 [h, w, 3], int32 label)
  # Files on disk: the file of each index, to name a file TF cannot decode.
  paths: Optional[Sequence[str]] = None


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
  name: str
  builder: Any
  split: str
  num_classes: int
  class_names: Optional[Tuple[str, ...]]
  geometry: str = 'imagenet'


def _list_image_files(folder: str) -> List[str]:
  return sorted(
    f
    for f in os.listdir(folder)
    if f.lower().endswith(IMAGE_EXTENSIONS)
    and os.path.isfile(os.path.join(folder, f))
  )


def _scan_class_folders(root: str, class_names: Optional[List[str]]):
  """Lists `root/<class>/<image>` files. Returns (paths, labels, class_names)."""
  folders = sorted(
    d
    for d in os.listdir(root)
    if os.path.isdir(os.path.join(root, d)) and not d.startswith('.')
  )
  if not folders:
    raise ValueError(
      f'{root} has neither a labels.csv nor class sub-folders '
      '(expected <root>/<class_name>/*.jpg|jpeg|png).'
    )
  if class_names is None:
    class_names = folders
  index = {name: i for i, name in enumerate(class_names)}
  paths, labels = [], []
  for folder in folders:
    if folder not in index:
      raise _unknown_class_error(
        f'Class folder {os.path.join(root, folder)!r}: name',
        folder,
        class_names,
      )
    for file_name in _list_image_files(os.path.join(root, folder)):
      paths.append(os.path.join(root, folder, file_name))
      labels.append(index[folder])
  if not paths:
    raise ValueError(
      f'No .jpg/.jpeg/.png images found under the class folders of {root}.'
    )
  return paths, labels, class_names


def _read_labels_csv(root: str, class_names: Optional[List[str]]):
  """Reads `root/labels.csv`. Returns (paths, labels, class_names or None)."""
  csv_path = os.path.join(root, 'labels.csv')
  fields, rows = _read_csv(csv_path)
  file_column = next(
    (c for c in ('filename', 'file', 'path') if c in fields), None
  )
  label_column = next(
    (c for c in ('label', 'class_index', 'wnid', 'class_name') if c in fields),
    None,
  )
  if file_column is None or label_column is None:
    raise ValueError(
      f'{csv_path}: expected a header with a file column (filename/file/path) and '
      f'a label column (label/class_index/wnid); got {fields}.'
    )
  if not rows:
    raise ValueError(f'{csv_path} lists no images.')
  values = [(row[label_column] or '').strip() for row in rows]
  for n, row in enumerate(rows, start=1):  # A short or blank row.
    if not row[file_column].strip() or not values[n - 1]:
      raise ValueError(f'{csv_path}, row {n}: no file name or no label.')
  if all(v.lstrip('-').isdigit() for v in values):
    too_long = next((v for v in values if len(v.lstrip('-0')) > 10), None)
    if too_long is not None:
      raise ValueError(
        f'{csv_path}: label {too_long:.40} in column {label_column!r} is '
        f'not a class index (at most {_MAX_LABEL}).'
      )
    labels = [int(v) for v in values]
    limit = len(class_names) if class_names is not None else None
    bad = [
      v
      for v in labels
      if v < 0 or v > _MAX_LABEL or (limit is not None and v >= limit)
    ]
    if bad:
      allowed = (
        f'0..{limit - 1} (the class list)'
        if limit is not None
        else f'0..{_MAX_LABEL}'
      )
      raise ValueError(
        f'{csv_path}: label {bad[0]} in column {label_column!r} is not in '
        f'{allowed}.'
      )
    if class_names is not None and 'wnid' in fields and label_column != 'wnid':
      # Cross-check the integer labels against the wnids when both are present.
      for row, label in zip(rows, labels):
        if class_names[label] != row['wnid'].strip():
          raise ValueError(
            f'{csv_path}: {row[file_column]} has {label_column}={label}, which is '
            f'{class_names[label]!r} in the class list, but wnid={row["wnid"]!r}. The class '
            'list is in a different order than the CSV.'
          )
  else:
    if class_names is None:
      raise ValueError(
        f'{csv_path}: labels in column {label_column!r} are names; pass '
        'class_names (a list or a CSV/text file) to map them to indices.'
      )
    index = {name: i for i, name in enumerate(class_names)}
    for v in values:
      if v not in index:
        raise _unknown_class_error(f'{csv_path}: label', v, class_names)
    labels = [index[v] for v in values]
  paths = [os.path.join(root, row[file_column].strip()) for row in rows]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
      f'{csv_path} lists {len(missing)} missing file(s), e.g. {missing[:3]}.'
    )
  return paths, labels, class_names


def _folder_source(
  root: str,
  split: str,
  class_names: Optional[List[str]],
  num_classes: Optional[int],
) -> _TableSource:
  if not os.path.isdir(root):
    raise FileNotFoundError(f'Image folder not found: {root}')
  folder = split_folder(root, split)
  if os.path.isfile(os.path.join(folder, 'labels.csv')):
    paths, labels, class_names = _read_labels_csv(folder, class_names)
  else:
    paths, labels, class_names = _scan_class_folders(folder, class_names)
  inferred = len(class_names) if class_names is not None else max(labels) + 1
  num_classes = _check_num_classes(
    num_classes, inferred, class_names is not None, folder
  )
  paths_array = np.asarray(paths)
  labels_array = np.asarray(labels, np.int32)

  def load(index):
    tf = import_tf()
    image = decode_image(tf.io.read_file(tf.gather(paths_array, index)))
    return image, tf.gather(labels_array, index)

  return _TableSource(
    len(paths),
    num_classes,
    tuple(class_names) if class_names is not None else None,
    'imagenet',
    load,
    paths=paths,
  )


# Folder names that hold a split, by the split names a config uses.
_SPLIT_FOLDERS = {
  'train': ('train',),
  'validation': ('validation', 'val'),
  'val': ('val', 'validation'),
  'test': ('test',),
  'eval': ('eval',),
}


def split_folder(root: str, split: str) -> str:
  """The folder of `split` under a `dir:` root: `root/<split>` (validation
  also as val/), or `root` itself when it has no split folders at all.

  Why so strict: a root with train/ and val/ asked for 'validation' used to
  fall back to the root, so train/ and val/ became two "classes" and the
  run failed at its first evaluation, after training.
  """
  for name in _SPLIT_FOLDERS.get(split, (split,)):
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  present = sorted(
    name
    for names in _SPLIT_FOLDERS.values()
    for name in names
    if os.path.isdir(os.path.join(root, name))
  )
  if present:
    raise ValueError(
      f'{root} has split folders {sorted(set(present))} but none for split '
      f"{split!r}; set the config's split to one of them (e.g. "
      f'--config.data.eval_split={sorted(set(present))[-1]}).'
    )
  return root


def _check_num_classes(
  requested: Optional[int], inferred: int, exact: bool, where: str
) -> int:
  """Returns the number of classes; `exact` means `inferred` comes from a class list."""
  if requested is None:
    return inferred
  if (exact and requested != inferred) or requested < inferred:
    raise ValueError(
      f'num_classes={requested} does not match the data in {where}, which has '
      f'{inferred} classes{"" if exact else " or more"}.'
    )
  return requested


def _eval_split_name(split: str, source: str) -> str:
  if split == 'train':
    return 'train'
  if split in _EVAL_SPLIT_ALIASES:
    return 'test'
  raise ValueError(
    f'Source {source!r} has splits train and test (alias validation); '
    f'got {split!r}.'
  )


def _digits_source(split: str, num_classes: Optional[int]) -> _TableSource:
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  digits = sk_datasets.load_digits()
  train_idx, test_idx = model_selection.train_test_split(
    np.arange(len(digits.target)),
    test_size=DIGITS_NUM_TEST,
    random_state=DIGITS_SPLIT_SEED,
    stratify=digits.target,
  )
  indices = (
    train_idx if _eval_split_name(split, 'digits') == 'train' else test_idx
  )
  # Pixel values are 0..16; map them to 0..255.
  images = np.round(digits.images[indices] * (255.0 / 16.0)).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  labels = digits.target[indices].astype(np.int32)
  num_classes = _check_num_classes(num_classes, 10, True, 'digits')

  def load(index):
    tf = import_tf()
    return tf.gather(images, index), tf.gather(labels, index)

  return _TableSource(
    len(indices), num_classes, tuple(str(d) for d in range(10)), 'resize', load
  )


def _synthetic_source(
  spec: str, split: str, num_classes: Optional[int]
) -> _TableSource:
  parts = spec.split(':')
  try:
    classes = int(parts[1])
    count = int(parts[2]) if len(parts) > 2 else None
    if len(parts) > 3 or classes < 1 or (count is not None and count < 1):
      raise ValueError
  except (IndexError, ValueError):
    raise ValueError(
      f'Bad synthetic source {spec!r}: expected synthetic:<num_classes> or '
      'synthetic:<num_classes>:<num_examples> with positive integers.'
    ) from None
  split = _eval_split_name(split, spec)
  count = count or SYNTHETIC_NUM_EXAMPLES[split]
  split_code = 0 if split == 'train' else 1
  num_classes = _check_num_classes(num_classes, classes, True, spec)

  def load(index):
    tf = import_tf()
    key = tf.stack(
      [tf.constant(split_code, tf.int64), tf.cast(index, tf.int64)]
    )
    label = tf.random.stateless_uniform(
      [], key, minval=0, maxval=classes, dtype=tf.int32
    )
    # A fixed colour per class plus per-example noise: learnable, but not trivially constant.
    colour = tf.random.stateless_uniform(
      [3],
      tf.stack([tf.constant(7, tf.int64), tf.cast(label, tf.int64)]),
      32.0,
      224.0,
    )
    noise = tf.random.stateless_uniform(
      [SYNTHETIC_SIZE, SYNTHETIC_SIZE, 3],
      tf.random.experimental.stateless_fold_in(key, 1),
      -32.0,
      32.0,
    )
    image = tf.cast(tf.clip_by_value(colour + noise, 0.0, 255.0), tf.uint8)
    return image, label

  return _TableSource(count, num_classes, None, 'resize', load)


def _tfds_source(
  name: str,
  split: str,
  data_dir: Optional[str],
  manual_dir: Optional[str],
  num_classes: Optional[int],
) -> _TfdsSource:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  import_tf()
  builder = tfds.builder(name, data_dir=data_dir)
  is_prepared = getattr(builder, 'is_prepared', None)
  prepared = (
    is_prepared()
    if is_prepared is not None
    else os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))
  )
  if not prepared:
    needs_manual = (
      getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) is not None
    )
    if manual_dir is None and needs_manual:
      raise ValueError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir} and TFDS cannot download '
        'it. Either pass manual_dir=<folder holding the archives downloaded by hand> '
        '(for imagenet2012: ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
        'image-net.org) to prepare it once, or use a local image folder source '
        '(<root>/<class_name>/*.JPEG, or <root>/labels.csv).'
      )
    if manual_dir is not None and not os.path.isdir(manual_dir):
      raise FileNotFoundError(f'manual_dir {manual_dir!r} does not exist.')
    try:
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
      )
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
        f'Could not prepare TFDS dataset {name!r} in {builder.data_dir} '
        f'(manual_dir={manual_dir!r}): {e}'
      ) from e
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(
      f'TFDS dataset {name!r} has features {list(features.keys())}; an image '
      'classification source needs "image" and "label".'
    )
  label_feature = features['label']
  names = getattr(label_feature, 'names', None)
  inferred = getattr(label_feature, 'num_classes', None) or (
    len(names) if names else None
  )
  if inferred is None and num_classes is None:
    raise ValueError(
      f'Cannot tell the number of classes of {name!r}; pass num_classes.'
    )
  num_classes = _check_num_classes(
    num_classes, inferred or num_classes, True, name
  )
  return _TfdsSource(
    name, builder, split, num_classes, tuple(names) if names else None
  )


def _make_source(
  source: str, split: str, data_dir, manual_dir, class_names, num_classes
):
  if not isinstance(source, str) or not source:
    raise ValueError(f'source must be a non-empty string, got {source!r}.')
  if source == 'digits':
    return _digits_source(split, num_classes)
  if source.startswith('synthetic:'):
    return _synthetic_source(source, split, num_classes)
  if (
    source.startswith('tfds:')
    or source == 'imagenet2012'
    or source.startswith('imagenet2012:')
  ):
    return _tfds_source(
      source[len('tfds:') :] if source.startswith('tfds:') else source,
      split,
      data_dir,
      manual_dir,
      num_classes,
    )
  path = source[len('dir:') :] if source.startswith('dir:') else source
  if os.path.isdir(path):
    return _folder_source(
      path, split, _resolve_class_names(class_names), num_classes
    )
  raise ValueError(
    f'Unknown image source {source!r}. Expected "imagenet2012", "tfds:<name>", "digits", '
    '"synthetic:<num_classes>[:<num_examples>]", or an existing directory ("dir:<path>" or a '
    'path): <root>/<class_name>/*.jpg, or <root>/labels.csv with filename,label.'
  )
