"""Video + audio clips for multimodal autoencoding (paper Sec. 4.3, App. I).

* `synthetic`: generated clips (moving shapes, tones that follow them, a
  label recoverable from both).

Importing this package costs only NumPy; PyAV and TensorFlow are imported
inside the functions that need them.
"""

from perceiver_io.data.video.synthetic import DIRECTIONS
from perceiver_io.data.video.synthetic import FPS
from perceiver_io.data.video.synthetic import KINDS
from perceiver_io.data.video.synthetic import label_names
from perceiver_io.data.video.synthetic import MAX_CLASSES
from perceiver_io.data.video.synthetic import synthetic_clip

__all__ = [
  'DIRECTIONS',
  'FPS',
  'KINDS',
  'MAX_CLASSES',
  'label_names',
  'synthetic_clip',
]
