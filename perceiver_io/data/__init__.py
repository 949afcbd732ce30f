"""Input pipelines (tf.data / TFDS / local files).

Each submodule imports TensorFlow lazily, inside the functions that build a
pipeline, so that `import perceiver_io` and model code never pull TF in (a GPU
machine may have JAX but no TF). Import the submodule you need, e.g.
`from perceiver_io.data import text`.
"""
