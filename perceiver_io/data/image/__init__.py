"""Image input pipelines (being split into modules by concern; see sources.py)."""

from perceiver_io.data.image.sources import *  # noqa: F401,F403
