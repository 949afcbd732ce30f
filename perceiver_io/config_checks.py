"""Checks of the model's config dicts, shared by the model and its parts.

Why: a config key that no module reads would otherwise be ignored silently
(a misspelt `num_latent` trains the default size); every section is checked
against the fields of the module it configures.
"""

import dataclasses


def check_keys(section, cfg, cls, extra=(), exclude=()):
  """Unknown keys in a config section -> ValueError listing the valid ones."""
  valid = (
    ({f.name for f in dataclasses.fields(cls)} | set(extra))
    - {'parent', 'name', 'dtype', 'param_dtype'}
    - set(exclude)
  )
  unknown = sorted(set(cfg) - valid)
  if unknown:
    raise ValueError(
      f'unknown {section} config keys {unknown}; valid keys '
      f'are {sorted(valid)}.'
    )
