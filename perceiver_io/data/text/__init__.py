"""Text input pipelines: classification, regression (GLUE, IMDB) and byte MLM.

Why a package: reading sources, the GLUE table, batching and MLM masking change
for different reasons, so each lives in its own module; this file re-exports the
public API, so callers write ``from perceiver_io.data import text`` and
``text.make_text_dataset(...)``.

* `local`: ``tsv:`` / ``csv:`` / ``jsonl:`` / ``aclimdb:`` / ``text:`` sources
  and the TFDS-style split syntax (`parse_split`).
* `text_files`: ``text:`` globs read per process (each takes the lines that
  start in its byte range of the sorted files).
* `line_tables`: TSV and JSONL tables read per process the same way.
* `tfds_source`: ``tfds:<name>`` sources (prepared datasets only, unless
  ``download=True``).
* `glue`: the GLUE task table (`GLUE_TASKS`).
* `pipeline`: `make_text_dataset` (tokenize, batch, shard, resume, pad).
* `mlm`: `mask_bytes_for_mlm` and `make_mlm_dataset`.
* `fields`: how both kinds of source name their fields and map classes to ids.
* `lm`, `lm_sources`, `mirrored`: Perceiver AR's byte-level language-model
  windows (``text:`` globs sliced by bytes, TFDS corpora) and the paper's
  ``random_mirrored`` copy task.

TensorFlow and TFDS are imported inside the functions that build a pipeline:
importing this package costs NumPy only.
"""

from perceiver_io.data.text.fields import UNLABELED
from perceiver_io.data.text.glue import GLUE_TASKS
from perceiver_io.data.text.glue import GlueTask
from perceiver_io.data.text.local import parse_split
from perceiver_io.data.text.local import SplitPart
from perceiver_io.data.text.mlm import IGNORE_LABEL
from perceiver_io.data.text.mlm import make_mlm_dataset
from perceiver_io.data.text.mlm import mask_bytes_for_mlm
from perceiver_io.data.text.pipeline import make_text_dataset
from perceiver_io.data.text.pipeline import parse_source
from perceiver_io.data.text.pipeline import TextDatasetInfo
from perceiver_io.data.text.pipeline import TextStats
from perceiver_io.data.text.tfds_source import local_source_hint

__all__ = [
  'GLUE_TASKS',
  'GlueTask',
  'IGNORE_LABEL',
  'SplitPart',
  'TextDatasetInfo',
  'TextStats',
  'UNLABELED',
  'local_source_hint',
  'make_mlm_dataset',
  'make_text_dataset',
  'mask_bytes_for_mlm',
  'parse_source',
  'parse_split',
]
