"""Checkpoint import (HuggingFace, DeepMind Haiku) and our own save/load."""

from perceiver_io.checkpoints.common import CheckpointError
from perceiver_io.checkpoints.haiku import from_haiku
from perceiver_io.checkpoints.hf import from_hf

__all__ = ['CheckpointError', 'from_haiku', 'from_hf']
