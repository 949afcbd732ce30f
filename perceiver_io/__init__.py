"""perceiver_io: Perceiver IO in JAX/Flax, faithful to the official model.

Import is light: no TensorFlow, no torch. Typical use:

  from perceiver_io import presets
  model = presets.build('imagenet_fourier')
  variables = model.init(jax.random.PRNGKey(0), images)
  logits = model.apply(variables, images)

or import a published checkpoint with `perceiver_io.checkpoints.from_hf(...)`.
"""

from perceiver_io import presets
from perceiver_io.model import build_model
from perceiver_io.model import PerceiverIO

__version__ = '0.1.0'

__all__ = ['PerceiverIO', 'build_model', 'presets', '__version__']
