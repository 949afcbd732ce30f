"""Presets have the official sizes: parameter counts equal HuggingFace's.

Why: the published checkpoints only load if every preset has exactly the
official shapes. Each full-size preset's parameter count (from shapes only,
`jax.eval_shape`) is compared with the HuggingFace class built with the
matching config on torch's meta device (no memory is allocated), and with
the paper's rounded numbers as a sanity check.
"""

import json

import pytest
import torch
import transformers

from perceiver_io import model as model_lib
from perceiver_io import presets

_IMAGENET = dict(
  num_latents=512,
  d_latents=1024,
  num_blocks=8,
  num_self_attends_per_block=6,
  num_self_attention_heads=8,
  num_cross_attention_heads=1,
  num_labels=1000,
  image_size=224,
)
_LANGUAGE = dict(
  qk_channels=256,
  v_channels=1280,
  d_latents=1280,
  num_latents=256,
  d_model=768,
  num_self_attends_per_block=26,
  num_blocks=1,
  num_self_attention_heads=8,
  num_cross_attention_heads=8,
)

# preset -> (HuggingFace class name, PerceiverConfig kwargs, paper count or
# None, relative tolerance for the paper count).
OFFICIAL = {
  'language_mlm': ('PerceiverForMaskedLM', _LANGUAGE, 201e6, 0.01),
  'text_classification': (
    'PerceiverForSequenceClassification',
    dict(_LANGUAGE, num_labels=2),
    None,
    None,
  ),
  # ImageNet numbers are given to 0.1M: allow half a unit of rounding.
  'imagenet_fourier': (
    'PerceiverForImageClassificationFourier',
    dict(_IMAGENET, d_model=261),
    48.4e6,
    0.05e6 / 48.4e6,
  ),
  'imagenet_learned': (
    'PerceiverForImageClassificationLearned',
    dict(_IMAGENET, d_model=512),
    62.3e6,
    0.05e6 / 62.3e6,
  ),
  'imagenet_conv': (
    'PerceiverForImageClassificationConvProcessing',
    dict(_IMAGENET, d_model=322),
    48.6e6,
    0.05e6 / 48.6e6,
  ),
  'optical_flow': (
    'PerceiverForOpticalFlow',
    dict(
      num_latents=2048,
      d_latents=512,
      num_blocks=1,
      num_self_attends_per_block=24,
      num_self_attention_heads=16,
      num_cross_attention_heads=1,
      d_model=322,
      train_size=[368, 496],
    ),
    None,
    None,
  ),
  # The reference says 20.0M; ours and HF's are 19.86M: within 1%.
  'multimodal_autoencoding': (
    'PerceiverForMultimodalAutoencoding',
    dict(
      num_latents=784,
      d_latents=512,
      num_blocks=1,
      num_self_attends_per_block=8,
      num_self_attention_heads=8,
      num_cross_attention_heads=1,
      d_model=704,
      num_labels=700,
    ),
    20.0e6,
    0.01,
  ),
}


def hf_param_count(class_name, config_kwargs):
  cls = getattr(transformers, class_name)
  with torch.device('meta'):
    hf_model = cls(transformers.PerceiverConfig(**config_kwargs))
  return sum(p.numel() for p in hf_model.parameters())


def our_param_count(name):
  variables = model_lib.abstract_variables(presets.build(name))
  return presets.count_params(variables['params'])


def test_every_full_size_preset_is_covered():
  full = [
    n
    for n in presets.names()
    if not n.startswith('tiny_') and presets.family(n) == 'perceiver_io'
  ]
  assert sorted(full) == sorted(OFFICIAL)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_param_count_matches_huggingface(name):
  class_name, hf_config, paper, rel_tol = OFFICIAL[name]
  ours = our_param_count(name)
  theirs = hf_param_count(class_name, hf_config)
  print(f'{name}: ours {ours:,d}, HuggingFace {theirs:,d}')
  assert ours == theirs
  if paper is not None:
    assert abs(ours - paper) <= rel_tol * paper, (ours, paper)


def test_unknown_preset_lists_known_names():
  with pytest.raises(ValueError) as info:
    presets.get_config('imagenet_fourir')
  message = str(info.value)
  assert "'imagenet_fourir'" in message
  for name in presets.names():
    assert name in message
  assert 'Did you mean' in message and "'imagenet_fourier'" in message
  with pytest.raises(ValueError, match='Known presets'):
    presets.build('no_such_model')


def test_configs_are_fresh_and_json_serialisable():
  for name in presets.names():
    cfg = presets.get_config(name)
    assert cfg['name'] == name
    assert json.loads(json.dumps(cfg)) == cfg
  cfg = presets.get_config('language_mlm')
  cfg['encoder']['num_latents'] = 1
  assert presets.get_config('language_mlm')['encoder']['num_latents'] == 256


def test_preset_arguments_override_sizes():
  cfg = presets.get_config('imagenet_fourier', num_classes=10, image_size=32)
  assert cfg['decoder']['num_classes'] == 10
  assert cfg['preprocessor']['position_encoding']['max_resolution'] == [32, 32]
