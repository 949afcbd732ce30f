"""Import of HuggingFace `Perceiver*` checkpoints (`save_pretrained` dirs).

A directory with `config.json` and `model.safetensors` (read with NumPy, no
torch) or `pytorch_model.bin` (needs torch). The model config is derived from
the HF config and the class named in `architectures`; weights are renamed to
our tree (Linear [out, in] -> Dense [in, out], Conv OIHW -> HWIO, LayerNorm
weight -> scale, BatchNorm running stats -> `batch_stats`).

HF-specific behaviour that we reproduce so that `from_hf` gives HF's numbers:
the erf GELU (`hidden_act='gelu'`), the conv preprocessor's symmetric padding
and unpadded max pool (`conv_hf_compat`), and the query residual of the
learned-position image decoder (HF sets it; the official checkpoint does not).
"""

import os
import re
import socket
from typing import Any, Dict, Tuple

import numpy as np

from perceiver_io import presets
from perceiver_io.checkpoints.common import build_from_file
from perceiver_io.checkpoints.common import check_and_unflatten
from perceiver_io.checkpoints.common import CheckpointError
from perceiver_io.checkpoints.common import one_line
from perceiver_io.checkpoints.common import read_json_file

SUPPORTED = (
  'PerceiverForMaskedLM',
  'PerceiverForSequenceClassification',
  'PerceiverForImageClassificationLearned',
  'PerceiverForImageClassificationFourier',
  'PerceiverForImageClassificationConvProcessing',
  'PerceiverForOpticalFlow',
  'PerceiverForMultimodalAutoencoding',
)


def _encoder(c):
  return {
    'num_latents': c['num_latents'],
    'latent_channels': c['d_latents'],
    'num_blocks': c['num_blocks'],
    'num_self_attends_per_block': c['num_self_attends_per_block'],
    'num_cross_attend_heads': c['num_cross_attention_heads'],
    'num_self_attend_heads': c['num_self_attention_heads'],
    'qk_channels': c.get('qk_channels'),
    'v_channels': c.get('v_channels'),
    'cross_attend_widening_factor': c['cross_attention_widening_factor'],
    'self_attend_widening_factor': c['self_attention_widening_factor'],
    'cross_attention_shape_for_attn': c.get(
      'cross_attention_shape_for_attention', 'kv'
    ),
    'use_query_residual': c.get('use_query_residual', True),
  }


def _classifier(c):
  return {
    'type': 'classification',
    'num_classes': _num_labels(c),
    'num_query_channels': c['d_latents'],
    'num_heads': 1,
    'use_query_residual': True,
  }


def _num_labels(c):
  if 'id2label' in c and c['id2label']:
    return len(c['id2label'])
  return c.get('num_labels', 2)


def _fourier(num_bands, res):
  return {
    'type': 'fourier',
    'num_bands': num_bands,
    'max_resolution': list(res),
    'concat_pos': True,
    'sine_only': False,
  }


def config_from_hf(hf: Dict[str, Any]) -> Dict[str, Any]:
  """Our model config for a HuggingFace Perceiver `config.json` dict."""
  if hf.get('model_type') != 'perceiver':
    raise CheckpointError(
      f'config.json is not a Perceiver config '
      f'(model_type={hf.get("model_type")!r}); expected '
      f'"perceiver".'
    )
  archs = hf.get('architectures') or []
  arch = next((a for a in archs if a in SUPPORTED), None)
  if arch is None:
    raise CheckpointError(
      f'unsupported architectures {archs}; from_hf supports {list(SUPPORTED)}.'
    )
  act = hf.get('hidden_act', 'gelu')
  if act not in ('gelu', 'gelu_new', 'gelu_pytorch_tanh'):
    raise CheckpointError(
      f'hidden_act={act!r} is not supported (gelu, '
      f'gelu_new, gelu_pytorch_tanh).'
    )
  text = {
    'type': 'text',
    'vocab_size': hf['vocab_size'],
    'd_model': hf['d_model'],
    'max_seq_len': hf['max_position_embeddings'],
  }
  cfg = {
    'encoder': _encoder(hf),
    'postprocessor': None,
    'gelu_approximate': act != 'gelu',
    'name': f'hf:{arch}',
  }
  if arch == 'PerceiverForMaskedLM':
    cfg['preprocessor'] = text
    cfg['decoder'] = {
      'type': 'basic',
      'query': {
        'type': 'trainable',
        'num_channels': hf['d_model'],
        'index_dims': [hf['max_position_embeddings']],
      },
      'output_index_dims': [hf['max_position_embeddings']],
      'num_heads': 8,
      'qk_channels': 256,
      'v_channels': hf['d_model'],
      'use_query_residual': False,
      'output_channels': None,
    }
    cfg['postprocessor'] = {
      'type': 'embedding_decoder',
      'vocab_size': hf['vocab_size'],
    }
  elif arch == 'PerceiverForSequenceClassification':
    cfg['preprocessor'] = text
    cfg['decoder'] = _classifier(hf)
  elif arch == 'PerceiverForImageClassificationLearned':
    size = hf['image_size']
    cfg['preprocessor'] = {
      'type': 'image',
      'prep_type': 'conv1x1',
      'spatial_downsample': 1,
      'num_channels': 256,
      'in_channels': 3,
      'project_pos_dim': 256,
      'position_encoding': {
        'type': 'trainable',
        'num_channels': 256,
        'index_dims': [size * size],
      },
    }
    cfg['decoder'] = _classifier(hf)
  elif arch == 'PerceiverForImageClassificationFourier':
    cfg['preprocessor'] = {
      'type': 'image',
      'prep_type': 'pixels',
      'spatial_downsample': 1,
      'in_channels': 3,
      'position_encoding': _fourier(64, (224, 224)),
    }
    cfg['decoder'] = _classifier(hf)
  elif arch == 'PerceiverForImageClassificationConvProcessing':
    cfg['preprocessor'] = {
      'type': 'image',
      'prep_type': 'conv',
      'spatial_downsample': 4,
      'num_channels': 64,
      'in_channels': 3,
      'conv_hf_compat': True,
      'position_encoding': _fourier(64, (56, 56)),
    }
    cfg['decoder'] = _classifier(hf)
  elif arch == 'PerceiverForOpticalFlow':
    cfg['preprocessor'] = {
      'type': 'image',
      'prep_type': 'patches',
      'flow_patches': True,
      'spatial_downsample': 1,
      'temporal_downsample': 2,
      'conv_after_patching': True,
      'num_channels': 64,
      'in_channels': 27,
      'position_encoding': _fourier(64, hf['train_size']),
    }
    cfg['decoder'] = {
      'type': 'flow',
      'output_channels': 2,
      'rescale_factor': 100.0,
      'num_heads': 1,
      'use_query_residual': False,
    }
  else:  # PerceiverForMultimodalAutoencoding
    mm = presets.multimodal_autoencoding(
      num_frames=hf['num_frames'],
      image_size=hf['image_size'] * 4,
      audio_per_frame=hf['audio_samples_per_frame'],
      samples_per_patch=hf['samples_per_patch'],
      num_classes=_num_labels(hf),
      num_latents=hf['num_latents'],
      latent_channels=hf['d_latents'],
      depth=hf['num_self_attends_per_block'],
      output_channels=hf['output_num_channels'],
      label_query_channels=hf.get('_label_trainable_num_channels', 1024),
    )
    # HF builds Fourier resolutions from image_size and the decoder grid
    # from output_shape; keep both as HF has them.
    image_dec = mm['decoder']['modalities']['image']
    image_dec['output_index_dims'] = list(hf['output_shape'][1:4])
    cfg['preprocessor'] = mm['preprocessor']
    cfg['decoder'] = mm['decoder']
    cfg['postprocessor'] = mm['postprocessor']
  if arch == 'PerceiverForImageClassificationLearned':
    cfg['decoder']['use_query_residual'] = True
  return cfg


# --------------------------------------------------------------------------
# Weight renaming.
# --------------------------------------------------------------------------

_LAYER_RULES = (  # HF PerceiverLayer suffix -> ours (relative to the block).
  (r'attention\.self\.layernorm1\.', '{q_norm}/'),
  (r'attention\.self\.layernorm2\.', 'kv_norm/'),
  (r'attention\.self\.(query|key|value)\.', r'attention/\1/'),
  (r'attention\.output\.dense\.', 'attention/output/'),
  (r'layernorm\.', 'mlp_norm/'),
  (r'mlp\.(dense[12])\.', r'mlp/\1/'),
)


def _decoder_prefix(arch):
  if arch == 'PerceiverForMaskedLM':
    return 'decoder/decoder'
  if arch in ('PerceiverForOpticalFlow', 'PerceiverForMultimodalAutoencoding'):
    return 'decoder/decoder'
  return 'decoder/basic/decoder'


def _rename(key: str, arch: str) -> Tuple[str, str]:
  """HF state-dict key -> (collection, our '/'-joined path + leaf)."""
  k = key[len('perceiver.') :] if key.startswith('perceiver.') else key
  dec = _decoder_prefix(arch)
  blocks = (
    (r'encoder\.cross_attention\.', 'encoder/cross_attend/', 'query_norm'),
    (
      r'encoder\.self_attends\.(\d+)\.',
      r'encoder/self_attend_\1/',
      'attention_norm',
    ),
    (
      r'decoder\.decoder\.decoding_cross_attention\.',
      dec + '/cross_attend/',
      'query_norm',
    ),
    (
      r'decoder\.decoding_cross_attention\.',
      dec + '/cross_attend/',
      'query_norm',
    ),
  )
  for pat, repl, q_norm in blocks:
    m = re.match(pat, k)
    if m:
      rest = k[m.end() :]
      prefix = m.expand(repl)
      for rp, rr in _LAYER_RULES:
        mm = re.match(rp, rest)
        if mm:
          return 'params', (
            prefix + mm.expand(rr).format(q_norm=q_norm) + rest[mm.end() :]
          )
      return 'params', prefix + rest
  simple = (
    (r'embeddings\.latents$', 'encoder/latents'),
    (
      r'input_preprocessor\.embeddings\.weight$',
      'preprocessor/embed/embedding',
    ),
    (
      r'input_preprocessor\.position_embeddings\.weight$',
      'preprocessor/position_embeddings',
    ),
    (r'input_preprocessor\.convnet_1x1\.', 'preprocessor/conv1x1/'),
    (
      r'input_preprocessor\.position_embeddings\.position_embeddings$',
      'preprocessor/position_encoding/trainable/embeddings',
    ),
    (
      r'input_preprocessor\.positions_projection\.',
      'preprocessor/position_encoding/projection/',
    ),
    (
      r'input_preprocessor\.convnet\.conv\.',
      'preprocessor/conv_downsample/conv/',
    ),
    (
      r'input_preprocessor\.convnet\.batchnorm\.',
      'preprocessor/conv_downsample/batchnorm/',
    ),
    (
      r'input_preprocessor\.conv_after_patches\.',
      'preprocessor/patches_linear/',
    ),
    (r'input_preprocessor\.padding\.(\w+)$', r'preprocessor/\1_padding'),
    (r'input_preprocessor\.mask\.(\w+)$', r'preprocessor/\1_mask_token'),
    (
      r'decoder\.decoder\.output_position_encodings\.position_embeddings$',
      'decoder/basic/query/trainable/embeddings',
    ),
    (
      r'decoder\.output_position_encodings\.position_embeddings$',
      'decoder/query/trainable/embeddings',
    ),
    (r'decoder\.decoder\.final_layer\.', dec + '/output/'),
    (r'decoder\.padding\.(\w+)$', r'decoder/\1_padding'),
    (
      r'decoder\.modalities\.(\w+)\.decoder\.output_position_encodings\.'
      r'position_embeddings$',
      r'decoder/\1_query/trainable/embeddings',
    ),
    (
      r'output_postprocessor\.modalities\.(\w+)\.classifier\.',
      r'postprocessor/\1_postprocessor/linear/',
    ),
    (r'embedding_decoder\.bias$', 'postprocessor/bias'),
  )
  for pat, repl in simple:
    m = re.match(pat, k)
    if m:
      path = m.expand(repl) + k[m.end() :]
      if re.search(r'batchnorm/running_(mean|var)$', path):
        return 'batch_stats', path.replace('running_', '')
      return 'params', path
  raise CheckpointError(
    f'unexpected weight {key!r} in the HuggingFace checkpoint for {arch}.'
  )


def _convert_leaf(path: str, value: np.ndarray):
  """Renames torch leaves (weight/bias) and transposes to Flax layouts."""
  parts = path.split('/')
  leaf = parts[-1]
  module = '/'.join(parts[:-1])
  if leaf == 'weight':
    if value.ndim == 4:  # Conv OIHW -> HWIO.
      return f'{module}/kernel', value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # Linear [out, in] -> [in, out].
      return f'{module}/kernel', value.T
    return f'{module}/scale', value  # LayerNorm / BatchNorm.
  if module.endswith('padding') or module.endswith('mask_token'):
    return path, value
  return path, value


def convert_state_dict(state: Dict[str, np.ndarray], arch: str):
  """HF state dict -> flat {(collection, *path): array} in our layout."""
  flat = {}
  for key, value in state.items():
    if key.endswith('num_batches_tracked'):
      continue
    value = np.asarray(value)
    collection, path = _rename(key, arch)
    if collection == 'params':
      path, value = _convert_leaf(path, value)
    if re.search(r'(_padding|_mask_token)$', path) and value.ndim == 1:
      value = value[None]
    flat[(collection,) + tuple(path.split('/'))] = value
  return flat


# --------------------------------------------------------------------------
# Reading files and the hub.
# --------------------------------------------------------------------------


def _read_state_dict(directory: str) -> Dict[str, np.ndarray]:
  st = os.path.join(directory, 'model.safetensors')
  if os.path.exists(st):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    try:
      return load_file(st)
    except Exception as e:  # Corrupt or truncated file.
      raise CheckpointError(
        f'cannot read {st}: {one_line(e)}. The file is corrupt or '
        f'truncated; download it again.'
      ) from e
  index = os.path.join(directory, 'model.safetensors.index.json')
  if os.path.exists(index):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    try:
      shards = sorted(set(read_json_file(index, 'JSON')['weight_map'].values()))
      if not all(isinstance(shard, str) for shard in shards):
        raise TypeError('shard names must be strings')
    except CheckpointError:
      raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise CheckpointError(
        f'cannot read {index}: {one_line(e)}. It should be JSON '
        f'with a "weight_map" of tensor -> shard file; '
        f'download it again.'
      ) from e
    state = {}
    for shard in shards:
      shard_path = os.path.join(directory, shard)
      if not os.path.exists(shard_path):
        raise CheckpointError(
          f'{shard_path} is missing ({index} lists it); '
          f'download the checkpoint again.'
        )
      try:
        state.update(load_file(shard_path))
      except Exception as e:  # Corrupt or truncated shard.
        raise CheckpointError(
          f'cannot read {shard_path}: {one_line(e)}. The shard is '
          f'corrupt or truncated; download it '
          f'again.'
        ) from e
    return state
  binf = os.path.join(directory, 'pytorch_model.bin')
  if os.path.exists(binf):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise CheckpointError(
        f'{binf} is a torch pickle and needs torch; '
        f'`pip install torch` or save the model with '
        f'safe_serialization=True.'
      ) from e
    try:
      state = torch.load(binf, map_location='cpu', weights_only=True)
    except Exception as e:
      raise CheckpointError(
        f'cannot read {binf}: {one_line(e)}. The file is corrupt or truncated.'
      ) from e
    return {
      k: v.float().numpy() if v.is_floating_point() else v.numpy()
      for k, v in state.items()
    }
  raise CheckpointError(
    f'{directory} has no model.safetensors or '
    f'pytorch_model.bin (expected a save_pretrained '
    f'directory).'
  )


def _online(host='huggingface.co', port=443, timeout=3.0) -> bool:
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False


def download(repo_id: str) -> str:
  """Local snapshot dir of a hub repo; fails at once when offline."""
  alternative = (
    f'Download it on a machine with internet access, e.g. '
    f'`huggingface-cli download {repo_id} --local-dir DIR`, copy '
    f'DIR here and use hf:DIR (init_from, convert --from) or '
    f'from_hf("DIR").'
  )
  try:
    from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CheckpointError(
      f'hub download needs huggingface_hub '
      f'(`pip install huggingface_hub`). {alternative}'
    ) from e
  patterns = ['config.json', '*.safetensors', '*.safetensors.index.json']
  try:  # A cached copy works offline.
    return snapshot_download(
      repo_id, allow_patterns=patterns, local_files_only=True
    )
  except Exception:  # pylint: disable=broad-except
    pass
  if os.environ.get('HF_HUB_OFFLINE') == '1' or not _online():
    raise CheckpointError(
      f'cannot download {repo_id!r}: no network (or '
      f'HF_HUB_OFFLINE=1) and no cached copy. '
      f'{alternative}'
    )
  try:
    return snapshot_download(repo_id, allow_patterns=patterns)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
      f'download of {repo_id!r} failed: {e}. {alternative}'
    ) from e


def _looks_local(spec: str) -> bool:
  """A path, not a hub id ('owner/name'): absolute or relative to '.',
  more than one '/', or an existing file."""
  return (
    spec.startswith(('/', '.', '~'))
    or spec.count('/') > 1
    or os.path.isfile(spec)
  )


def from_hf(path: str, **overrides):
  """`(model, variables, config)` from a save_pretrained dir or `hf:<id>`.

  `path` is a local directory, `hf:<dir>` or `hf:<hub id>` (downloaded with
  huggingface_hub when online). `overrides` set top-level model options
  (dtype, remat, query_chunk_size, attention_impl).
  """
  if path.startswith('hf:'):
    path = os.path.expanduser(path[3:].strip())
    if not os.path.isdir(path):
      if _looks_local(path):
        raise CheckpointError(
          f'{path} '
          + (
            'is a file; pass the directory that holds it'
            if os.path.isfile(path)
            else 'does not exist'
          )
          + ' (expected a save_pretrained directory with config.json and '
          'model.safetensors, or a hub id such as '
          'deepmind/language-perceiver).'
        )
      path = download(path)
  if not os.path.isdir(path):
    raise CheckpointError(
      f'{path!r} is not a directory; from_hf expects a '
      f'save_pretrained directory (config.json + '
      f'model.safetensors) or "hf:<hub id>".'
    )
  cfg_file = os.path.join(path, 'config.json')
  if not os.path.exists(cfg_file):
    raise CheckpointError(
      f'{path} has no config.json (expected a save_pretrained directory).'
    )
  hf_config = read_json_file(cfg_file, 'a transformers config.json')
  if not isinstance(hf_config, dict):
    raise CheckpointError(
      f'{cfg_file} holds a JSON {type(hf_config).__name__}, expected an '
      'object (a transformers config.json).'
    )
  try:
    config = config_from_hf(hf_config)
  except KeyError as e:
    raise CheckpointError(
      f'{cfg_file} lacks {e} (architectures '
      f'{hf_config.get("architectures")!r:.200}); is it a transformers '
      f'Perceiver config.json as save_pretrained writes it?'
    ) from e
  except CheckpointError as e:
    raise CheckpointError(f'{cfg_file}: {e}') from None
  except (TypeError, ValueError, AttributeError, IndexError) as e:
    raise CheckpointError(
      f'{cfg_file} has a field of the wrong type ({type(e).__name__}: '
      f'{one_line(e)}); is it a transformers Perceiver config.json?'
    ) from None
  config.update(overrides)
  model, abstract = build_from_file(config, cfg_file)
  arch = config['name'][3:]
  try:
    flat = convert_state_dict(_read_state_dict(path), arch)
  except CheckpointError as e:
    message = str(e)
    raise CheckpointError(
      message if path in message else f'{path}: {message}'
    ) from None
  variables = check_and_unflatten(model, flat, f'{path}', abstract)
  return model, variables, model.config
