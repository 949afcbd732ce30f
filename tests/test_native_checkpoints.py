"""Our checkpoint format and the converter CLI."""

import json
import os

import jax
import numpy as np
import pytest

from perceiver_io import checkpoints
from perceiver_io import convert
from perceiver_io import presets
from perceiver_io.model import example_inputs
from tests import hf_fixtures


def _init(name):
  model = presets.build(name)
  x, kw = example_inputs(model.config, 2)
  return model, model.init(jax.random.PRNGKey(1), x, **kw), x, kw


@pytest.mark.slow
def test_save_load_roundtrip_without_preset(tmp_path):
  model, variables, x, kw = _init('tiny_imagenet_conv')  # Has batch_stats.
  path = checkpoints.save(str(tmp_path / 'ckpt'), variables, model.config)
  model2, variables2, config2 = checkpoints.load(path)
  assert config2 == model.config
  np.testing.assert_array_equal(
    model.apply(variables, x, **kw), model2.apply(variables2, x, **kw)
  )


@pytest.mark.slow
def test_save_never_overwrites_by_default(tmp_path):
  model, variables, _, _ = _init('tiny_text_classification')
  path = checkpoints.save(str(tmp_path / 'ckpt'), variables, model.config)
  before = sorted(os.listdir(path))
  with pytest.raises(checkpoints.CheckpointError, match='already exists'):
    checkpoints.save(path, variables, model.config)
  assert sorted(os.listdir(path)) == before
  checkpoints.save(path, variables, model.config, overwrite=True)
  assert checkpoints.is_checkpoint(path)


def test_overwrite_replaces_only_a_checkpoint(tmp_path):
  """`--out` naming a folder of other runs by mistake must not wipe it."""
  model, variables, _, _ = _init('tiny_text_classification')
  runs = tmp_path / 'runs'
  (runs / 'other_run').mkdir(parents=True)
  (runs / 'other_run' / 'weights.bin').write_text('precious')
  (runs / 'NOTES.txt').write_text('notes')
  with pytest.raises(
    checkpoints.CheckpointError, match='not a perceiver_io checkpoint'
  ):
    checkpoints.save(str(runs), variables, model.config, overwrite=True)
  assert (runs / 'other_run' / 'weights.bin').read_text() == 'precious'
  assert (runs / 'NOTES.txt').read_text() == 'notes'
  a_file = tmp_path / 'file.txt'
  a_file.write_text('keep')
  with pytest.raises(
    checkpoints.CheckpointError, match='not a perceiver_io checkpoint'
  ):
    checkpoints.save(str(a_file), variables, model.config, overwrite=True)
  assert a_file.read_text() == 'keep'
  empty = tmp_path / 'empty'
  empty.mkdir()
  checkpoints.save(str(empty), variables, model.config, overwrite=True)
  assert checkpoints.is_checkpoint(str(empty))


def test_overwrite_survives_a_leftover_from_an_interrupted_one(tmp_path):
  model, variables, _, _ = _init('tiny_text_classification')
  path = checkpoints.save(str(tmp_path / 'ckpt'), variables, model.config)
  os.makedirs(path + '.old/x')  # What an older interrupted overwrite left.
  checkpoints.save(path, variables, model.config, overwrite=True)
  assert checkpoints.is_checkpoint(path)
  assert os.path.isdir(path + '.old/x')  # Not ours to delete.
  assert sorted(os.listdir(tmp_path)) == ['ckpt', 'ckpt.old']


def test_corrupt_checkpoint_is_reported(tmp_path):
  model, variables, _, _ = _init('tiny_text_classification')
  path = checkpoints.save(str(tmp_path / 'ckpt'), variables, model.config)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    f.write('{"preprocessor": ')
  with pytest.raises(checkpoints.CheckpointError, match='corrupt'):
    checkpoints.load(path)


def test_load_into_wrong_config_names_parameters(tmp_path):
  model, variables, _, _ = _init('tiny_text_classification')
  path = checkpoints.save(str(tmp_path / 'ckpt'), variables, model.config)
  cfg = dict(model.config)
  cfg['decoder'] = dict(cfg['decoder'], num_classes=7)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(cfg, f)
  with pytest.raises(
    checkpoints.CheckpointError,
    match=r'shape mismatch.*decoder/basic/decoder/output',
  ):
    checkpoints.load(path)


@pytest.mark.slow
def test_convert_cli_from_hf(tmp_path, capsys):
  hf_model, hf_kwargs, inputs, kwargs = hf_fixtures.build('image_fourier')
  hf_model.save_pretrained(tmp_path / 'hf')
  out = tmp_path / 'ours'
  assert (
    convert.main(['--from', f'hf:{tmp_path / "hf"}', '--out', str(out)]) == 0
  )
  assert 'parameters' in capsys.readouterr().out
  model, variables, _ = checkpoints.load(str(out))
  np.testing.assert_allclose(
    model.apply(variables, inputs, **kwargs),
    hf_fixtures.hf_logits(hf_model, hf_kwargs),
    atol=1e-4,
  )
  # Bad input: nothing written, clear error, exit code 2.
  bad = tmp_path / 'bad'
  assert convert.main(['--from', f'hf:{tmp_path}', '--out', str(bad)]) == 2
  assert 'config.json' in capsys.readouterr().err
  assert not bad.exists()


def test_hf_errors(tmp_path):
  hf_model, _, _, _ = hf_fixtures.build('image_learned')
  hf_model.save_pretrained(tmp_path)
  cfg = json.loads((tmp_path / 'config.json').read_text())
  # Not a Perceiver config.
  (tmp_path / 'config.json').write_text(
    json.dumps(dict(cfg, model_type='bert'))
  )
  with pytest.raises(checkpoints.CheckpointError, match='not a Perceiver'):
    checkpoints.from_hf(str(tmp_path))
  # A shape mismatch names the parameter.
  (tmp_path / 'config.json').write_text(
    json.dumps(dict(cfg, num_labels=3, id2label=None))
  )
  with pytest.raises(checkpoints.CheckpointError, match='decoder/basic'):
    checkpoints.from_hf(str(tmp_path))
  # A truncated weights file.
  (tmp_path / 'config.json').write_text(json.dumps(cfg))
  weights = tmp_path / 'model.safetensors'
  weights.write_bytes(weights.read_bytes()[:1000])
  with pytest.raises(checkpoints.CheckpointError, match='corrupt or truncated'):
    checkpoints.from_hf(str(tmp_path))
  # A config.json without a field the architecture needs.
  (tmp_path / 'config.json').write_text(
    json.dumps({k: v for k, v in cfg.items() if k != 'image_size'})
  )
  with pytest.raises(
    checkpoints.CheckpointError,
    match="lacks 'image_size'.*transformers Perceiver",
  ):
    checkpoints.from_hf(str(tmp_path))


def test_hf_sharded_checkpoint_errors(tmp_path):
  hf_model, _, _, _ = hf_fixtures.build('image_learned')
  hf_model.save_pretrained(tmp_path, max_shard_size='100KB')
  shards = sorted(p for p in os.listdir(tmp_path) if p.endswith('.safetensors'))
  assert len(shards) > 1
  checkpoints.from_hf(str(tmp_path))  # Reads as saved.
  first = tmp_path / shards[0]
  first.write_bytes(first.read_bytes()[:100])
  with pytest.raises(
    checkpoints.CheckpointError, match=f'{shards[0]}.*corrupt or truncated'
  ):
    checkpoints.from_hf(str(tmp_path))
  first.unlink()
  with pytest.raises(
    checkpoints.CheckpointError, match=f'{shards[0]} is missing'
  ):
    checkpoints.from_hf(str(tmp_path))


def test_hf_local_path_typos_are_not_hub_ids(tmp_path):
  """A mistyped local directory is named as such, not 'cannot download'."""
  for spec in (f'hf:{tmp_path}/nope', 'hf:./nope', 'hf:~/nope/x'):
    with pytest.raises(checkpoints.CheckpointError, match='does not exist'):
      checkpoints.from_hf(spec)
  (tmp_path / 'model.safetensors').write_bytes(b'x')
  with pytest.raises(
    checkpoints.CheckpointError, match='is a file; pass the directory'
  ):
    checkpoints.from_hf(f'hf:{tmp_path}/model.safetensors')


def test_hub_download_offline_fails_fast(monkeypatch, tmp_path):
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HF_HOME', str(tmp_path))
  with pytest.raises(
    checkpoints.CheckpointError, match='use hf:DIR.*from_hf\\("DIR"\\)'
  ):
    checkpoints.from_hf('hf:deepmind/language-perceiver')


def test_convert_help():
  with pytest.raises(SystemExit) as e:
    convert.main(['--help'])
  assert e.value.code == 0
