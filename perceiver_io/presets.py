"""Named model configs with the paper's sizes, plus tiny ones for tests.

`get_config(name, **overrides)` returns a fresh JSON-serialisable dict for
`model.build_model`. Sizes follow the official colabs / HuggingFace converter
(reference sections 5 and 7):

| preset                  | params      | notes                                |
| ----------------------- | ----------- | ------------------------------------ |
| language_mlm            | 201,108,230 | bytes MLM, 26 layers, N=256, D=1280  |
| text_classification     | 206,098,690 | language encoder + 1-query head (2)  |
| imagenet_fourier        |  48,440,627 | pixels + 2D FF (261 ch)              |
| imagenet_learned        |  62,255,848 | conv1x1 + learned pos (512 ch)       |
| imagenet_conv           |  48,646,522 | conv+BN+maxpool + 2D FF (322 ch)     |
| optical_flow            |  41,057,134 | 3x3 patches, 2048x512 latents        |
| multimodal_autoencoding |  19,858,855 | Kinetics video+audio+label           |

The counts are checked against HuggingFace's classes in tests/test_presets.py.
"""

import copy
import difflib
import functools
import inspect
from typing import Any, Dict

VOCAB_SIZE = 262


def _text(d_model=768, max_seq_len=2048):
  return {
    'type': 'text',
    'vocab_size': VOCAB_SIZE,
    'd_model': d_model,
    'max_seq_len': max_seq_len,
  }


def _fourier(num_bands, max_resolution):
  return {
    'type': 'fourier',
    'num_bands': num_bands,
    'max_resolution': list(max_resolution),
    'concat_pos': True,
    'sine_only': False,
  }


def _encoder(
  num_latents,
  latent_channels,
  num_blocks,
  per_block,
  cross_heads,
  self_heads,
  qk=None,
  v=None,
  widening=1,
):
  return {
    'num_latents': num_latents,
    'latent_channels': latent_channels,
    'num_blocks': num_blocks,
    'num_self_attends_per_block': per_block,
    'num_cross_attend_heads': cross_heads,
    'num_self_attend_heads': self_heads,
    'qk_channels': qk,
    'v_channels': v,
    'cross_attend_widening_factor': widening,
    'self_attend_widening_factor': widening,
    'use_query_residual': True,
  }


def _classifier(num_classes, channels, residual=True):
  return {
    'type': 'classification',
    'num_classes': num_classes,
    'num_query_channels': channels,
    'num_heads': 1,
    'use_query_residual': residual,
  }


def language_mlm(
  d_model=768,
  max_seq_len=2048,
  num_latents=256,
  latent_channels=1280,
  depth=26,
  heads=8,
  qk=256,
):
  return {
    'preprocessor': _text(d_model, max_seq_len),
    'encoder': _encoder(
      num_latents,
      latent_channels,
      1,
      depth,
      heads,
      heads,
      qk=qk,
      v=latent_channels,
    ),
    'decoder': {
      'type': 'basic',
      'query': {
        'type': 'trainable',
        'num_channels': d_model,
        'index_dims': [max_seq_len],
      },
      'output_index_dims': [max_seq_len],
      'num_heads': heads,
      'qk_channels': qk,
      'v_channels': d_model,
      'use_query_residual': False,
      'output_channels': None,
    },
    'postprocessor': {'type': 'embedding_decoder', 'vocab_size': VOCAB_SIZE},
  }


def text_classification(
  num_classes=2,
  d_model=768,
  max_seq_len=2048,
  num_latents=256,
  latent_channels=1280,
  depth=26,
  heads=8,
  qk=256,
):
  """The language encoder with a one-query classification decoder."""
  cfg = language_mlm(
    d_model, max_seq_len, num_latents, latent_channels, depth, heads, qk
  )
  cfg['decoder'] = _classifier(num_classes, cfg['encoder']['latent_channels'])
  cfg['postprocessor'] = None
  return cfg


def imagenet_fourier(
  num_classes=1000,
  image_size=224,
  num_bands=64,
  num_latents=512,
  latent_channels=1024,
  blocks=8,
  per_block=6,
  self_heads=8,
):
  return {
    'preprocessor': {
      'type': 'image',
      'prep_type': 'pixels',
      'spatial_downsample': 1,
      'in_channels': 3,
      'position_encoding': _fourier(num_bands, (image_size, image_size)),
    },
    'encoder': _encoder(
      num_latents, latent_channels, blocks, per_block, 1, self_heads
    ),
    'decoder': _classifier(num_classes, latent_channels),
  }


def imagenet_learned(
  num_classes=1000,
  image_size=224,
  channels=256,
  num_latents=512,
  latent_channels=1024,
  blocks=8,
  per_block=6,
  self_heads=8,
  decoder_query_residual=False,
):
  """Official learned-position model: its decoder has no query residual
  (HuggingFace's class sets it; `from_hf` follows the HF config)."""
  return {
    'preprocessor': {
      'type': 'image',
      'prep_type': 'conv1x1',
      'spatial_downsample': 1,
      'num_channels': channels,
      'in_channels': 3,
      'project_pos_dim': channels,
      'position_encoding': {
        'type': 'trainable',
        'num_channels': channels,
        'index_dims': [image_size * image_size],
      },
    },
    'encoder': _encoder(
      num_latents, latent_channels, blocks, per_block, 1, self_heads
    ),
    'decoder': _classifier(
      num_classes, latent_channels, residual=decoder_query_residual
    ),
  }


def imagenet_conv(
  num_classes=1000,
  image_size=224,
  num_bands=64,
  num_latents=512,
  latent_channels=1024,
  blocks=8,
  per_block=6,
  self_heads=8,
  conv_hf_compat=False,
):
  res = image_size // 4
  return {
    'preprocessor': {
      'type': 'image',
      'prep_type': 'conv',
      'spatial_downsample': 4,
      'num_channels': 64,
      'in_channels': 3,
      'conv_hf_compat': conv_hf_compat,
      'position_encoding': _fourier(num_bands, (res, res)),
    },
    'encoder': _encoder(
      num_latents, latent_channels, blocks, per_block, 1, self_heads
    ),
    'decoder': _classifier(num_classes, latent_channels),
  }


def optical_flow(
  train_size=(368, 496),
  num_bands=64,
  num_latents=2048,
  latent_channels=512,
  depth=24,
  self_heads=16,
  channels=64,
):
  return {
    'preprocessor': {
      'type': 'image',
      'prep_type': 'patches',
      'flow_patches': True,
      'spatial_downsample': 1,
      'temporal_downsample': 2,
      'conv_after_patching': True,
      'num_channels': channels,
      'in_channels': 27,
      'position_encoding': _fourier(num_bands, train_size),
    },
    'encoder': _encoder(num_latents, latent_channels, 1, depth, 1, self_heads),
    'decoder': {
      'type': 'flow',
      'output_channels': 2,
      'rescale_factor': 100.0,
      'num_heads': 1,
      'use_query_residual': False,
    },
  }


def multimodal_autoencoding(
  num_frames=16,
  image_size=224,
  audio_per_frame=1920,
  samples_per_patch=16,
  num_classes=700,
  num_latents=784,
  latent_channels=512,
  depth=8,
  output_channels=512,
  label_query_channels=1024,
):
  n_audio = num_frames * audio_per_frame
  patch_res = (num_frames, image_size // 4, image_size // 4)
  audio_pe = _fourier(192, (n_audio,))
  image_pe = _fourier(32, patch_res)
  return {
    'preprocessor': {
      'type': 'multimodal',
      'min_padding_size': 4,
      'mask_probs': {'image': 0.0, 'audio': 0.0, 'label': 1.0},
      'modalities': {
        'audio': {
          'type': 'audio',
          'samples_per_patch': samples_per_patch,
          'position_encoding': audio_pe,
        },
        'image': {
          'type': 'image',
          'prep_type': 'patches',
          'spatial_downsample': 4,
          'temporal_downsample': 1,
          'in_channels': 3,
          'temporal': True,
          'position_encoding': image_pe,
        },
        'label': {'type': 'onehot', 'num_classes': num_classes},
      },
    },
    'encoder': _encoder(num_latents, latent_channels, 1, depth, 1, 8),
    'decoder': {
      'type': 'multimodal',
      'output_channels': output_channels,
      'min_padding_size': 2,
      'num_heads': 1,
      'use_query_residual': False,
      'modalities': {
        'audio': {
          'query': audio_pe,
          'output_index_dims': [n_audio // samples_per_patch],
        },
        'image': {
          'query': image_pe,
          'output_index_dims': [num_frames, image_size, image_size],
        },
        'label': {
          'query': {
            'type': 'trainable',
            'num_channels': label_query_channels,
            'index_dims': [1],
          },
          'output_index_dims': [1],
        },
      },
    },
    'postprocessor': {
      'type': 'multimodal',
      'modalities': {
        'audio': {'type': 'audio', 'samples_per_patch': samples_per_patch},
        'image': {'type': 'projection', 'num_outputs': 3},
        'label': {'type': 'classification', 'num_classes': num_classes},
      },
    },
  }


def perceiver_ar(
  vocab_size=262,
  max_context=4096,
  num_latents=1024,
  num_channels=1024,
  num_heads=16,
  num_self_attend_layers=12,
  position='rotary',
  rotary_fraction=0.5,
  dropout_rate=0.1,
  cross_attend_dropout_rate=0.0,
  cross_attend_dropout_mode='safe',
  z_loss=1e-4,
):
  """Perceiver AR (perceiver_io/ar): the official experiment's widths (D =
  1024, 16 heads of 64, widening 4, rotary on half of each head, dropout
  0.1, z-loss 1e-4) with a 4k context, 1024 latents and 12 layers:
  165,341,446 parameters."""
  sizes = dict(locals())
  from perceiver_io.ar import model_config  # pylint: disable=g-import-not-at-top

  return model_config.config(**sizes)


_TINY_IMAGE = dict(
  num_classes=10,
  blocks=2,
  per_block=2,
  num_latents=8,
  latent_channels=32,
  self_heads=4,
)
_TINY_TEXT = dict(
  d_model=32,
  max_seq_len=64,
  num_latents=8,
  latent_channels=48,
  depth=2,
  heads=4,
  qk=16,
)

PRESETS = {
  'language_mlm': language_mlm,
  'text_classification': text_classification,
  'imagenet_fourier': imagenet_fourier,
  'imagenet_learned': imagenet_learned,
  'imagenet_conv': imagenet_conv,
  'optical_flow': optical_flow,
  'multimodal_autoencoding': multimodal_autoencoding,
  # Tiny sizes for tests and laptop smoke runs (seconds on a CPU).
  'tiny_language_mlm': functools.partial(language_mlm, **_TINY_TEXT),
  'tiny_text_classification': functools.partial(
    text_classification, **_TINY_TEXT
  ),
  'tiny_imagenet_fourier': functools.partial(
    imagenet_fourier,
    image_size=16,
    num_bands=4,
    **_TINY_IMAGE,
  ),
  'tiny_imagenet_learned': functools.partial(
    imagenet_learned,
    image_size=16,
    channels=16,
    **_TINY_IMAGE,
  ),
  'tiny_imagenet_conv': functools.partial(
    imagenet_conv,
    image_size=32,
    num_bands=4,
    **_TINY_IMAGE,
  ),
  'tiny_optical_flow': functools.partial(
    optical_flow,
    train_size=(16, 24),
    num_bands=4,
    num_latents=16,
    latent_channels=32,
    depth=2,
    self_heads=4,
    channels=16,
  ),
  'perceiver_ar': perceiver_ar,
  'tiny_perceiver_ar': functools.partial(
    perceiver_ar,
    max_context=64,
    num_latents=16,
    num_channels=32,
    num_heads=4,
    num_self_attend_layers=2,
    dropout_rate=0.0,
  ),
  'tiny_multimodal_autoencoding': functools.partial(
    multimodal_autoencoding,
    num_frames=2,
    image_size=16,
    audio_per_frame=32,
    samples_per_patch=16,
    num_classes=5,
    num_latents=8,
    latent_channels=32,
    depth=2,
    output_channels=32,
    label_query_channels=24,
  ),
}


def names():
  return sorted(PRESETS)


def family(name: str) -> str:
  """'perceiver_io' or 'perceiver_ar': which model class the preset builds."""
  return get_config(name).get('family', 'perceiver_io')


def register(name: str):
  """Function decorator: `get_config(name, **kwargs)` calls it.

  For models of your own (a new modality: README, "Add a modality"); the
  function returns a model config dict (`model.build_model`). A name is
  registered once.
  """

  def add(fn):
    if name in PRESETS:
      raise ValueError(f'preset {name!r} is already registered.')
    PRESETS[name] = fn
    return fn

  return add


def _preset(name: str):
  if name not in PRESETS:
    close = difflib.get_close_matches(name, PRESETS, n=3)
    hint = f' Did you mean {close}?' if close else ''
    raise ValueError(
      f'unknown preset {name!r}.{hint} Known presets: {", ".join(names())}.'
    )
  return PRESETS[name]


def size_kwargs(name: str) -> Dict[str, Any]:
  """The keyword arguments preset `name` takes, with their defaults.

  Why: they are the model's sizes (sequence length, latents, widths,
  depth, ...); the experiment configs list them so that each one can be
  set from the command line and is recorded with the run.
  """
  signature = inspect.signature(_preset(name))
  return {
    p.name: p.default
    for p in signature.parameters.values()
    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    and p.default is not p.empty
  }


def get_config(name: str, **kwargs) -> Dict[str, Any]:
  """Config dict of a preset; kwargs are the preset function's arguments."""
  fn = _preset(name)
  parameters = inspect.signature(fn).parameters.values()
  if not any(p.kind == p.VAR_KEYWORD for p in parameters):
    valid = sorted(size_kwargs(name))
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
      raise ValueError(
        f'preset {name!r} takes no argument {", ".join(unknown)}; its '
        f'arguments: {", ".join(valid)}.'
      )
  cfg = fn(**kwargs)
  cfg['name'] = name
  return copy.deepcopy(cfg)


def build(name: str, **kwargs):
  from perceiver_io.model import build_model  # pylint: disable=g-import-not-at-top

  return build_model(get_config(name, **kwargs))


def count_params(params) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
