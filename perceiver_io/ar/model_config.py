"""The Perceiver AR model config: a JSON-able dict with checked values.

Token ids follow the project's byte tokenizer (perceiver_io/tokenizer.py):
PAD 0, BOS 1, EOS 2, three more reserved ids, then the 256 bytes at +6, so
the default vocabulary is 262. (The official code reserves 0/1/2 for
PAD/EOS/SOS and shifts bytes by 3; an imported official checkpoint keeps
its own vocabulary size and ids.) PAD is never a data token: rows are
right-aligned and PAD fills the start of rows shorter than the context.
"""

from typing import Any, Dict

from perceiver_io import tokenizer

PAD_ID = tokenizer.PAD_ID
BOS_ID = tokenizer.BOS_ID
EOS_ID = tokenizer.EOS_ID
FAMILY = 'perceiver_ar'

POSITIONS = ('rotary', 'absolute', 'learned')
DROPOUT_MODES = ('official', 'safe')

DEFAULTS = {
  'family': FAMILY,
  'vocab_size': 262,
  # N: tokens the model reads; M: the last M of them are the latents.
  'max_context': 1024,
  'num_latents': 256,
  # D (latent width); the input width D_in defaults to D.
  'num_channels': 512,
  'input_channels': None,
  'num_heads': 8,
  'num_cross_attend_heads': None,  # None: num_heads
  'num_self_attend_layers': 6,
  'widening_factor': 4,
  'cross_attend_widening_factor': 4,
  # 'rotary' (official default), 'absolute' (frozen sinusoid table) or
  # 'learned' (trained table); tables have max_context + 1 rows, row 0 PAD.
  'position': 'rotary',
  'rotary_fraction': 0.5,  # of each head's channels (official experiment)
  'max_wavelength': None,  # None: max_context (official configs)
  'dropout_rate': 0.0,
  'cross_attend_dropout_rate': 0.0,
  # 'safe' drops only prefix inputs (never a latent's own position), so no
  # latent can see the future; 'official' drops any input, as the released
  # code does, which leaks (reference section 6.1.3).
  'cross_attend_dropout_mode': 'safe',
  'z_loss': 0.0,  # official: 1e-4
  'dtype': 'float32',
  'attention_impl': 'xla',
  'kernel_options': None,
}


def _check(cfg: Dict[str, Any]) -> None:
  def positive(key):
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f'{key} must be a positive integer; got {value!r}.')

  for key in (
    'vocab_size',
    'max_context',
    'num_latents',
    'num_channels',
    'input_channels',
    'num_heads',
    'num_cross_attend_heads',
    'num_self_attend_layers',
    'widening_factor',
    'cross_attend_widening_factor',
  ):
    positive(key)
  if cfg['num_latents'] > cfg['max_context']:
    raise ValueError(
      f'num_latents ({cfg["num_latents"]}) must be at most max_context '
      f'({cfg["max_context"]}).'
    )
  for width, heads in (
    ('num_channels', 'num_heads'),
    ('input_channels', 'num_cross_attend_heads'),
  ):
    if cfg[width] % cfg[heads]:
      raise ValueError(
        f'{width}={cfg[width]} must be divisible by {heads}={cfg[heads]}.'
      )
  if cfg['position'] not in POSITIONS:
    raise ValueError(
      f'position must be one of {", ".join(POSITIONS)}; '
      f'got {cfg["position"]!r}.'
    )
  if not 0.0 < cfg['rotary_fraction'] <= 1.0:
    raise ValueError(
      f'rotary_fraction must be in (0, 1]; got {cfg["rotary_fraction"]!r}.'
    )
  if cfg['max_wavelength'] < cfg['max_context']:
    raise ValueError(
      f'max_wavelength ({cfg["max_wavelength"]}) must be at least '
      f'max_context ({cfg["max_context"]}).'
    )
  for key in ('dropout_rate', 'cross_attend_dropout_rate'):
    if not 0.0 <= cfg[key] < 1.0:
      raise ValueError(f'{key} must be in [0, 1); got {cfg[key]!r}.')
  if cfg['cross_attend_dropout_mode'] not in DROPOUT_MODES:
    raise ValueError(
      f'cross_attend_dropout_mode must be one of '
      f'{", ".join(DROPOUT_MODES)}; got {cfg["cross_attend_dropout_mode"]!r}.'
    )
  if cfg['z_loss'] < 0:
    raise ValueError(f'z_loss must be >= 0; got {cfg["z_loss"]!r}.')


def config(**kwargs) -> Dict[str, Any]:
  """A complete, checked model config: DEFAULTS updated by `kwargs`.

  Keys not in DEFAULTS are refused (one line naming the valid keys), as
  are values out of range; `None` defaults are filled in, so the result
  records the model exactly.
  """
  unknown = sorted(set(kwargs) - set(DEFAULTS) - {'name'})
  if unknown:
    raise ValueError(
      f'unknown Perceiver AR config keys {unknown}; valid keys: '
      f'{", ".join(sorted(DEFAULTS))}.'
    )
  cfg = dict(DEFAULTS)
  cfg.update(kwargs)
  if cfg['family'] != FAMILY:
    raise ValueError(f'family must be {FAMILY!r}; got {cfg["family"]!r}.')
  if cfg['input_channels'] is None:
    cfg['input_channels'] = cfg['num_channels']
  if cfg['num_cross_attend_heads'] is None:
    cfg['num_cross_attend_heads'] = cfg['num_heads']
  if cfg['max_wavelength'] is None:
    cfg['max_wavelength'] = cfg['max_context']
  _check(cfg)
  return cfg
