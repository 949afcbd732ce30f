"""TensorFlow for the image input pipeline, imported only when a pipeline runs.

Why: `import perceiver_io` and model code must never pull TensorFlow in (a GPU
machine may have JAX but no TF), and when TF is imported it must not take the
accelerators, which belong to JAX: the pipeline runs on the host.
"""


def import_tf():
  """Imports TensorFlow for the input pipeline and hides accelerators from it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    # The pipeline runs on the host; JAX owns the GPUs/TPUs.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF devices were already initialised by someone else.
    pass
  return tf
