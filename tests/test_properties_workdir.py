"""Bad input as a property: the workdir's JSON files.

config.json, data_info.json and metrics.jsonl are written by the project's
own writers (`write_json_atomic`, `append_jsonl`), then damaged or not. The
readers (`load_config`, `read_data_info`, `read_metrics`) must give back
what was written, or one line naming the file.
"""

import json
import os

from hypothesis import strategies as st

from experiments import workdir as workdir_lib
from tests import property_helpers as ph

_KEY = st.text(
  st.characters(whitelist_categories=('Ll', 'Nd'), max_codepoint=127),
  min_size=1,
  max_size=6,
)
_LEAF = (
  st.none()
  | st.booleans()
  | st.integers(-(2**40), 2**40)
  | st.floats(allow_nan=False, allow_infinity=False)
  | st.text(max_size=8)
)
_TREE = st.recursive(
  _LEAF,
  lambda inner: (
    st.lists(inner, max_size=3) | st.dictionaries(_KEY, inner, max_size=3)
  ),
  max_leaves=8,
)
_OBJECT = st.dictionaries(_KEY, _TREE, max_size=4)


@st.composite
def _odd_json(draw):
  """Well-formed JSON that no workdir file holds: other types, dotted or
  reserved keys, huge numbers, deep nesting."""
  choice = draw(st.integers(0, 4))
  if choice == 0:
    return json.dumps(draw(_TREE)).encode()
  if choice == 1:
    key = draw(st.sampled_from(['a.b', '__class__', '', 'lock']))
    return json.dumps(
      {'task': 't', 'model': {key: 1}, 'data': {}, key: 2}
    ).encode()
  if choice == 2:
    return b'{"task": "t", "model": {}, "data": {"n": %s}}' % (
      draw(st.sampled_from([b'1' * 5000, b'1e999', b'-1e400']))
    )
  if choice == 3:
    return b'[' * draw(st.sampled_from([100, 100000]))
  return b'\xef\xbb\xbf' + json.dumps(draw(_OBJECT)).encode()


_EXTRA = {'odd_json': _odd_json()}


@st.composite
def _config_case(draw):
  config = {
    'task': draw(st.text(max_size=6)),
    'model': draw(_OBJECT),
    'data': draw(_OBJECT),
    **draw(_OBJECT),
  }
  with ph.scratch_dir() as folder:  # The project's writer makes the bytes.
    path = os.path.join(folder, 'config.json')
    workdir_lib.write_json_atomic(path, config)
    with open(path, 'rb') as f:
      valid = f.read()
  return config, draw(ph.mutated(valid, _EXTRA))


def _config_body(example):
  written, (mutation, data) = example
  with ph.scratch_dir() as workdir:
    path = ph.write_bytes(os.path.join(workdir, 'config.json'), data)
    config = ph.outcome(
      'workdir config.json',
      mutation,
      lambda: workdir_lib.load_config(workdir),
      [path, workdir],
    )
  if config is None:
    assert mutation != 'valid'
    return
  assert {'task', 'model', 'data'} <= set(config.keys())
  if mutation == 'valid':
    assert json.loads(config.to_json()) == json.loads(json.dumps(written))


test_config_json, test_config_json_many = ph.twin_tests(
  _config_body, _config_case()
)


@st.composite
def _data_info_case(draw):
  info = draw(_OBJECT)
  with ph.scratch_dir() as folder:
    path = os.path.join(folder, 'data_info.json')
    workdir_lib.write_json_atomic(path, info)
    with open(path, 'rb') as f:
      valid = f.read()
  return info, draw(ph.mutated(valid, _EXTRA))


def _data_info_body(example):
  written, (mutation, data) = example
  with ph.scratch_dir() as workdir:
    path = ph.write_bytes(os.path.join(workdir, 'data_info.json'), data)
    info = ph.outcome(
      'workdir data_info.json',
      mutation,
      lambda: workdir_lib.read_data_info(workdir),
      [path],
    )
  if info is None:
    assert mutation != 'valid'
    return
  assert isinstance(info, dict)
  if mutation == 'valid':
    assert info == json.loads(json.dumps(written))


test_data_info_json, test_data_info_json_many = ph.twin_tests(
  _data_info_body, _data_info_case()
)


@st.composite
def _metrics_case(draw):
  records = draw(st.lists(_OBJECT, max_size=4))
  with ph.scratch_dir() as folder:
    path = os.path.join(folder, 'metrics.jsonl')
    open(path, 'wb').close()
    for record in records:
      workdir_lib.append_jsonl(path, record)
    with open(path, 'rb') as f:
      valid = f.read()
  return records, draw(ph.mutated(valid, _EXTRA))


def _metrics_body(example):
  written, (mutation, data) = example
  with ph.scratch_dir() as workdir:
    path = ph.write_bytes(os.path.join(workdir, 'metrics.jsonl'), data)
    records = ph.outcome(
      'workdir metrics.jsonl',
      mutation,
      lambda: workdir_lib.read_metrics(workdir),
      [path],
    )
  if records is None:
    assert mutation != 'valid'
    return
  assert all(isinstance(r, dict) for r in records)
  if mutation == 'valid':
    assert records == json.loads(json.dumps(written))


test_metrics_jsonl, test_metrics_jsonl_many = ph.twin_tests(
  _metrics_body, _metrics_case()
)
