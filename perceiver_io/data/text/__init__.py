"""Text input pipelines (being split into modules by concern; see pipeline.py)."""

from perceiver_io.data.text.pipeline import *  # noqa: F401,F403
from perceiver_io.data.text.pipeline import _local_alternative  # noqa: F401
