"""Video + audio clips for multimodal autoencoding (paper Sec. 4.3, App. I).

* `synthetic`: generated clips (moving shapes, tones that follow them, a
  label recoverable from both).
* `decoding`: one file -> 16 frames at 224x224 and 30,720 samples at 48 kHz
  (PyAV), with one-line `ClipError`s for bad files.
* `listing`: which files make a split, and their labels (class folders, CSV).
* `cache`: decoded clips on disk, decoded in parallel worker processes.
* `sources`: `open_source(spec, ...)` -> a `ClipSource` of one split.
* `tfds_source`: prepared TFDS video datasets.
* `writer`: clips -> mp4 files with an audio track.

Importing this package costs only NumPy; PyAV and TensorFlow are imported
inside the functions that need them.
"""

from perceiver_io.data.video.decoding import ClipError
from perceiver_io.data.video.decoding import decode_clip
from perceiver_io.data.video.decoding import read_clip
from perceiver_io.data.video.clip_source import ClipSource
from perceiver_io.data.video.sources import HELD_OUT_OFFSET
from perceiver_io.data.video.sources import open_source
from perceiver_io.data.video.synthetic import DIRECTIONS
from perceiver_io.data.video.synthetic import FPS
from perceiver_io.data.video.synthetic import KINDS
from perceiver_io.data.video.synthetic import label_names
from perceiver_io.data.video.synthetic import MAX_CLASSES
from perceiver_io.data.video.synthetic import synthetic_clip
from perceiver_io.data.video.writer import write_clip

__all__ = [
  'ClipError',
  'ClipSource',
  'DIRECTIONS',
  'FPS',
  'HELD_OUT_OFFSET',
  'KINDS',
  'MAX_CLASSES',
  'decode_clip',
  'read_clip',
  'label_names',
  'open_source',
  'synthetic_clip',
  'write_clip',
]
