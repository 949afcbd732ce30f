"""Bad input as a property: checkpoints (Haiku pickles, HF folders, ours).

Valid checkpoints of a tiny model hold random arrays: ours is written with
`checkpoints.save`; the Haiku pickle and the HF folder are written here
with the official parameter names (the inverse of the importers' renaming,
spelt out below, so the importers are checked against it rather than
against themselves). Damaged copies must load as the right shapes or raise
one line of `CheckpointError` naming the file.
"""

import functools
import json
import os
import pickle
import re
import shutil

import flax
from hypothesis import strategies as st
import numpy as np
import pytest
import transformers

from perceiver_io import checkpoints
from perceiver_io import presets
from perceiver_io.model import abstract_variables
from perceiver_io.model import build_model
from tests import property_helpers as ph

PRESET = 'tiny_text_classification'
_ERRORS = (checkpoints.CheckpointError,)

# Our block-internal path -> (HF name, Haiku name); leaves follow.
_SUB = {
  'query_norm': ('attention.self.layernorm1', 'layer_norm'),
  'attention_norm': ('attention.self.layernorm1', 'layer_norm'),
  'kv_norm': ('attention.self.layernorm2', 'layer_norm_1'),
  'attention/query': ('attention.self.query', 'attention/linear'),
  'attention/key': ('attention.self.key', 'attention/linear_1'),
  'attention/value': ('attention.self.value', 'attention/linear_2'),
  'attention/output': ('attention.output.dense', 'attention/linear_3'),
  'mlp/dense1': ('mlp.dense1', 'mlp/linear'),
  'mlp/dense2': ('mlp.dense2', 'mlp/linear_1'),
}
_HAIKU_LEAF = {'kernel': 'w', 'bias': 'b', 'scale': 'scale'}


def _random_variables(model, seed=0):
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(abstract_variables(model))
  return {
    k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in flat.items()
  }


def _block(rest):
  """'mlp_norm/scale' etc. -> (our sub-module, leaf)."""
  *sub, leaf = rest
  return '/'.join(sub), leaf


def _haiku_name(key):
  """Our flat key -> (Haiku module, parameter name)."""
  path = '/'.join(key[1:])
  fixed = {
    'preprocessor/embed/embedding': ('embed', 'embeddings'),
    'preprocessor/position_embeddings': (
      'trainable_position_encoding',
      'pos_embs',
    ),
    'encoder/latents': (
      'perceiver_encoder/~/trainable_position_encoding',
      'pos_embs',
    ),
    'decoder/basic/query/trainable/embeddings': (
      'classification_decoder/~/basic_decoder/~/trainable_position_encoding',
      'pos_embs',
    ),
  }
  if path in fixed:
    return fixed[path]
  m = re.match(r'decoder/basic/decoder/output/(\w+)$', path)
  if m:
    return 'classification_decoder/~/basic_decoder/output', _HAIKU_LEAF[m[1]]
  m = re.match(
    r'(encoder/cross_attend|encoder/self_attend_(\d+)|'
    r'decoder/basic/decoder/cross_attend)/(.+)$',
    path,
  )
  sub, leaf = _block(m[3].split('/'))
  cross = 'cross_attend' in m[1]
  if m[1] == 'encoder/cross_attend':
    prefix = 'perceiver_encoder/~/cross_attention/'
  elif cross:
    prefix = 'classification_decoder/~/basic_decoder/cross_attention/'
  else:
    n = int(m[2])
    prefix = f'perceiver_encoder/~/self_attention{f"_{n}" if n else ""}/'
  if sub == 'mlp_norm':
    name = 'layer_norm_2' if cross else 'layer_norm_1'
  else:
    name = _SUB[sub][1]
  is_norm = sub.endswith('norm')
  return prefix + name, 'offset' if is_norm and leaf == 'bias' else (
    _HAIKU_LEAF[leaf]
  )


def _hf_name(key, value):
  """Our flat key and array -> (HF state-dict name, array in HF layout)."""
  path = '/'.join(key[1:])
  fixed = {
    'encoder/latents': 'embeddings.latents',
    'preprocessor/embed/embedding': 'input_preprocessor.embeddings.weight',
    'preprocessor/position_embeddings': (
      'input_preprocessor.position_embeddings.weight'
    ),
    'decoder/basic/query/trainable/embeddings': (
      'decoder.decoder.output_position_encodings.position_embeddings'
    ),
  }
  if path in fixed:
    return 'perceiver.' + fixed[path], value
  m = re.match(
    r'(encoder/cross_attend|encoder/self_attend_(\d+)|'
    r'decoder/basic/decoder/cross_attend|decoder/basic/decoder/output)'
    r'(?:/(.+))?/(\w+)$',
    path,
  )
  prefix = {
    'encoder/cross_attend': 'encoder.cross_attention.',
    'decoder/basic/decoder/cross_attend': (
      'decoder.decoder.decoding_cross_attention.'
    ),
    'decoder/basic/decoder/output': 'decoder.decoder.final_layer.',
  }.get(m[1], f'encoder.self_attends.{m[2]}.')
  sub = '' if m[3] is None else _SUB.get(m[3], ('layernorm',))[0] + '.'
  leaf = {'kernel': 'weight', 'scale': 'weight'}.get(m[4], m[4])
  if m[4] == 'kernel':  # C order: safetensors writes the raw buffer.
    value = np.ascontiguousarray(value.T)
  return 'perceiver.' + prefix + sub + leaf, value


def _assert_same(variables, flat):
  got = flax.traverse_util.flatten_dict(variables)
  assert set(got) == set(flat)
  for k, v in flat.items():
    np.testing.assert_array_equal(got[k], v)


def _check_shapes(variables, flat):
  got = flax.traverse_util.flatten_dict(variables)
  assert {k: np.shape(v) for k, v in got.items()} == {
    k: v.shape for k, v in flat.items()
  }


# ----------------------------------------------------------------- templates
@pytest.fixture(autouse=True, scope='module')
def _templates_made():
  """Writing the templates (seconds) belongs to setup, not to an example."""
  _templates()


@functools.lru_cache(maxsize=None)
def _templates():
  """(folder, our flat variables, HF flat variables) made once per run."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  folder = os.path.join(ph.make_session_dir(), 'templates')
  model = presets.build(PRESET)
  flat = _random_variables(model)
  variables = flax.traverse_util.unflatten_dict(flat)
  checkpoints.save(os.path.join(folder, 'native'), variables, model.config)
  haiku = {}
  for key, value in flat.items():
    module, name = _haiku_name(key)
    haiku.setdefault(module, {})[name] = value
  with open(os.path.join(folder, 'haiku.pickle'), 'wb') as f:
    pickle.dump(haiku, f)
  hf_config = transformers.PerceiverConfig(
    num_latents=4,
    d_latents=16,
    d_model=8,
    num_blocks=1,
    num_self_attends_per_block=2,
    num_self_attention_heads=2,
    num_cross_attention_heads=1,
    vocab_size=20,
    max_position_embeddings=6,
    num_labels=3,
    architectures=['PerceiverForSequenceClassification'],
  )
  hf_dir = os.path.join(folder, 'hf')
  hf_config.save_pretrained(hf_dir)
  with open(os.path.join(hf_dir, 'config.json')) as f:
    our_config = checkpoints.hf.config_from_hf(json.load(f))
  hf_flat = _random_variables(build_model(our_config), seed=1)
  save_file(
    dict(_hf_name(k, v) for k, v in hf_flat.items()),
    os.path.join(hf_dir, 'model.safetensors'),
  )
  return folder, flat, hf_flat


def _files(root):
  return sorted(
    os.path.relpath(os.path.join(d, n), root)
    for d, _, names in os.walk(root)
    for n in names
  )


_ODD_VALUES = st.sampled_from(
  [None, 'x', -1, 0, 2**40, 1e308, float('inf'), [], {}, [1, 2], True]
)


@st.composite
def _odd_config(draw, valid: bytes):
  """The config with one field's value replaced by a wrong type or a huge
  number, or the whole of it by another JSON type."""
  config = json.loads(valid)
  if draw(st.booleans()):
    return json.dumps(draw(_ODD_VALUES)).encode()
  paths = []

  def walk(node, path):
    if isinstance(node, dict):
      for k, v in node.items():
        paths.append(path + (k,))
        walk(v, path + (k,))

  walk(config, ())
  path = draw(st.sampled_from(paths))
  node = config
  for k in path[:-1]:
    node = node[k]
  node[path[-1]] = draw(_ODD_VALUES)
  return json.dumps(config).encode()


@st.composite
def _folder_case(draw, kind):
  """(relative file, mutation) of one file of a template checkpoint."""
  folder = os.path.join(_templates()[0], kind)
  name = draw(st.sampled_from(_files(folder)))
  with open(os.path.join(folder, name), 'rb') as f:
    valid = f.read()
  extra = {'deleted': st.just(None)}
  if name.endswith('config.json'):
    extra['odd_config'] = _odd_config(valid)
  return name, draw(ph.mutated(valid, extra))


def _damaged_copy(kind, name, data, into):
  target = os.path.join(into, kind)
  shutil.copytree(os.path.join(_templates()[0], kind), target)
  if data is None:
    os.remove(os.path.join(target, name))
  else:
    ph.write_bytes(os.path.join(target, name), data)
  return target, os.path.join(target, name)


def _native_body(example):
  name, (mutation, data) = example
  with ph.scratch_dir() as scratch:
    target, path = _damaged_copy('native', name, data, scratch)
    result = ph.outcome(
      'checkpoint ours (Orbax)',
      mutation,
      lambda: checkpoints.load(target),
      [target],
      _ERRORS,
    )
  flat = _templates()[1]
  if result is None:
    assert mutation != 'valid'
    return
  _, variables, _ = result
  _assert_same(variables, flat)  # META.json's checksum catches the rest.


test_native, test_native_many = ph.twin_tests(
  _native_body, _folder_case('native'), fast=6, slow=80
)


def _hf_body(example):
  name, (mutation, data) = example
  with ph.scratch_dir() as scratch:
    target, path = _damaged_copy('hf', name, data, scratch)
    result = ph.outcome(
      'checkpoint HF folder',
      mutation,
      lambda: checkpoints.from_hf(target),
      [target],
      _ERRORS,
    )
  hf_flat = _templates()[2]
  if result is None:
    assert mutation != 'valid'
    return
  _, variables, _ = result
  _check_shapes(variables, hf_flat)
  if mutation == 'valid':
    _assert_same(variables, hf_flat)


test_hf_folder, test_hf_folder_many = ph.twin_tests(
  _hf_body, _folder_case('hf'), fast=10, slow=100
)


@st.composite
def _haiku_case(draw):
  with open(os.path.join(_templates()[0], 'haiku.pickle'), 'rb') as f:
    valid = f.read()
  foreign = st.sampled_from(
    [
      pickle.dumps([1, 2]),
      pickle.dumps({'embed': [1, 2]}),
      pickle.dumps({'embed': {'embeddings': 'text'}}),
      pickle.dumps({'embed': {'embeddings': np.array(['a'])}}),
      pickle.dumps({'params': {'no_such_module': {'w': np.zeros(2)}}}),
      pickle.dumps({1: {'w': np.zeros(2)}}),
      b'cos\nsystem\n(S"true"\ntR.',  # Calls os.system when unpickled.
    ]
  )
  return draw(ph.mutated(valid, {'foreign': foreign}))


def _haiku_body(example):
  mutation, data = example
  with ph.scratch_dir() as scratch:
    path = ph.write_bytes(os.path.join(scratch, 'ckpt.pickle'), data)
    result = ph.outcome(
      'checkpoint Haiku pickle',
      mutation,
      lambda: checkpoints.from_haiku(path, PRESET),
      [path],
      _ERRORS,
    )
  flat = _templates()[1]
  if result is None:
    assert mutation != 'valid'
    return
  _, variables, _ = result
  _check_shapes(variables, flat)
  if mutation == 'valid':
    _assert_same(variables, flat)


test_haiku_pickle, test_haiku_pickle_many = ph.twin_tests(
  _haiku_body, _haiku_case(), fast=15, slow=150
)
