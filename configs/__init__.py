"""Experiment configs: one module per family, `get_config(arg)` -> ConfigDict.

A package so that tests and tools can `import configs.glue_bytes`; the
launchers load them by file path (`--config=configs/glue_bytes.py:cola`).
"""
