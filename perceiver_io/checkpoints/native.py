"""Our own checkpoint format: Orbax-saved variables plus the model config.

Layout of a checkpoint directory:

  config.json       the model config (reloads without knowing the preset)
  variables/        Orbax StandardCheckpointer (params, batch_stats)
  META.json         format version and library version

Saving writes into a temporary sibling directory and renames it into place,
so a crash or a failure never leaves a half-written checkpoint and never
touches an existing one (saving over an existing directory needs
`overwrite=True`, and even then the old one is only replaced after the new one
is complete).
"""

import hashlib
import json
import os
import shutil
import tempfile

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from perceiver_io.checkpoints.common import build_from_file
from perceiver_io.checkpoints.common import check_and_unflatten
from perceiver_io.checkpoints.common import CheckpointError
from perceiver_io.checkpoints.common import one_line
from perceiver_io.checkpoints.common import read_json_file

FORMAT_VERSION = 1


def save(directory: str, variables, config, overwrite: bool = False) -> str:
  """Saves `variables` and `config` to `directory`; returns its path."""
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and not overwrite:
    raise CheckpointError(
      f'{directory} already exists; pass overwrite=True '
      f'(--overwrite) to replace it, or choose a new path.'
    )
  if os.path.exists(directory) and not _replaceable(directory):
    # Overwriting replaces the whole directory: only ever one of ours (or an
    # empty one), never a folder of other runs that `--out` named by mistake.
    raise CheckpointError(
      f'{directory} exists and is not a perceiver_io checkpoint (no '
      f'config.json and variables/), so overwrite would delete what it '
      f'holds; choose a new path (e.g. {directory}/<name>).'
    )
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.tmp_ckpt_', dir=parent)
  try:
    with open(os.path.join(tmp, 'config.json'), 'w') as f:
      json.dump(config, f, indent=2, sort_keys=True)
    state = jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables))
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, 'variables'), state)
    ckptr.wait_until_finished()
    from perceiver_io import __version__  # pylint: disable=g-import-not-at-top

    with open(os.path.join(tmp, 'META.json'), 'w') as f:
      json.dump(
        {
          'format_version': FORMAT_VERSION,
          'perceiver_io_version': __version__,
          'variables_sha256': _digest(state),
        },
        f,
      )
    if os.path.exists(directory):
      # A fresh name each time: a '.old' left by an interrupted overwrite
      # must not stop this one.
      old = tempfile.mkdtemp(prefix='.old_ckpt_', dir=parent)
      os.replace(directory, old)
      os.replace(tmp, directory)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory


def _replaceable(directory: str) -> bool:
  """May `save(..., overwrite=True)` replace this path: one of our
  checkpoints, or an empty directory."""
  return is_checkpoint(directory) or (
    os.path.isdir(directory) and not os.listdir(directory)
  )


def is_checkpoint(directory: str) -> bool:
  return os.path.isfile(
    os.path.join(directory, 'config.json')
  ) and os.path.isdir(os.path.join(directory, 'variables'))


def load(directory: str, **overrides):
  """`(model, variables, config)` from a directory written by `save`."""
  if not is_checkpoint(directory):
    raise CheckpointError(
      f'{directory} is not a perceiver_io checkpoint '
      f'(expected config.json and variables/).'
    )
  config_file = os.path.join(directory, 'config.json')
  config = read_json_file(config_file, 'the model config')
  if isinstance(config, dict):
    config.update(overrides)
  model, abstract = build_from_file(config, config_file)
  try:
    restored = ocp.StandardCheckpointer().restore(
      os.path.join(directory, 'variables')
    )
    flat = {
      k: np.asarray(v)
      for k, v in flax.traverse_util.flatten_dict(restored).items()
    }
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
      f'cannot read {directory}/variables ({one_line(e)}); the '
      f'checkpoint is corrupt or truncated.'
    ) from e
  _verify(directory, flat)
  variables = check_and_unflatten(model, flat, directory, abstract)
  return model, variables, model.config


def _digest(state) -> str:
  """SHA-256 of every variable's path, dtype, shape and bytes.

  Why: Orbax stores raw array bytes without a checksum, so a flipped byte
  on disk would load as silently different weights.
  """
  digest = hashlib.sha256()
  flat = flax.traverse_util.flatten_dict(state)
  for key in sorted(flat, key=lambda k: tuple(map(str, k))):
    value = np.ascontiguousarray(flat[key])
    digest.update(
      repr((tuple(map(str, key)), value.dtype.str, value.shape)).encode()
    )
    digest.update(value.tobytes())
  return digest.hexdigest()


def _verify(directory: str, flat) -> None:
  """Checks the variables against META.json's checksum (checkpoints saved
  without one load unchecked)."""
  meta_file = os.path.join(directory, 'META.json')
  if not os.path.exists(meta_file):
    return
  meta = read_json_file(meta_file, 'the checkpoint metadata')
  want = meta.get('variables_sha256') if isinstance(meta, dict) else None
  if want is None:
    return
  if _digest(flax.traverse_util.unflatten_dict(flat)) != want:
    raise CheckpointError(
      f'{directory}/variables does not match the checksum in META.json: '
      'the checkpoint is corrupt (changed on disk since it was saved).'
    )
