"""Workdir checks and pretrained weights, without training: a workdir of
another model or run is refused (or moved aside whole with overwrite),
compute options may change on resume; pretrained weights merge under a new
head or fail with one error naming the arrays; `init_from` specs.
"""

import json
import os

import numpy as np
import pytest

from experiments.workdir import init_from as init_from_lib
from experiments import models
from experiments import workdir as workdir_lib


def test_workdir_of_another_model_is_refused_then_moved_aside(tmp_path):
  workdir = str(tmp_path)
  (tmp_path / 'checkpoints' / '5').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '5' / 'data').write_text('precious')
  old = {'perceiver': {'encoder': {'num_latents': 8}}, 'head': ''}
  workdir_lib.write_json_atomic(str(tmp_path / 'model.json'), old)
  workdir_lib.check_workdir(workdir, old, overwrite=False)  # Same: fine.
  new = {'perceiver': {'encoder': {'num_latents': 16}}, 'head': ''}
  with pytest.raises(ValueError, match='num_latents: 8 -> 16.*overwrite'):
    workdir_lib.check_workdir(workdir, new, overwrite=False)
  assert (tmp_path / 'checkpoints' / '5' / 'data').exists()
  (tmp_path / 'metrics.jsonl').write_text('{"step": 5}\n')
  (tmp_path / 'config.json').write_text('{"seed": 0}')
  workdir_lib.check_workdir(workdir, new, overwrite=True)
  moved = [p for p in os.listdir(workdir) if p.startswith('replaced-')]
  assert len(moved) == 1
  # The whole run moved: a complete workdir (evaluate/predict work on it),
  # and the new run starts with no old metrics or config.
  aside = tmp_path / moved[0]
  assert (aside / 'checkpoints' / '5' / 'data').read_text() == 'precious'
  assert json.loads((aside / 'model.json').read_text()) == old
  assert (aside / 'metrics.jsonl').read_text() == '{"step": 5}\n'
  assert (aside / 'config.json').exists()
  assert sorted(os.listdir(workdir)) == moved


def test_workdir_of_another_run_with_the_same_model_is_refused(tmp_path):
  """Same model, other task data or optimizer: not resumed on the wrong
  data; fields a resume may change (duration, eval, compute) pass."""
  workdir = str(tmp_path)
  (tmp_path / 'checkpoints' / '5').mkdir(parents=True)
  model = {'perceiver': {'encoder': {'num_latents': 8}}, 'head': ''}
  workdir_lib.write_json_atomic(str(tmp_path / 'model.json'), model)
  old = {
    'glue_task': 'cola',
    'data': {'source': 'tsv:cola/{split}.tsv', 'eval_split': 'dev'},
    'optimizer': {'name': 'lamb'},
    'num_train_steps': 100,
    'model': {'dtype': 'float32'},
  }
  workdir_lib.write_json_atomic(str(tmp_path / 'config.json'), old)
  longer = json.loads(json.dumps(old))
  longer.update(num_train_steps=200, eval_every_steps=7)
  longer['data']['eval_split'] = 'test'
  longer['model']['dtype'] = 'bfloat16'
  workdir_lib.check_workdir(workdir, model, False, longer)  # Fine.
  newer = json.loads(json.dumps(old))
  newer['data']['field_added_later'] = 3  # Not in the run's config.json.
  workdir_lib.check_workdir(workdir, model, False, newer)  # Fine too.
  sst2 = json.loads(json.dumps(old))
  sst2.update(glue_task='sst2')
  sst2['data']['source'] = 'tsv:sst2/{split}.tsv'
  with pytest.raises(
    ValueError,
    match=r'another run.*2 difference.*'
    r"data.source: 'tsv:cola/\{split\}.tsv' -> "
    r"'tsv:sst2/\{split\}.tsv'.*glue_task.*overwrite",
  ):
    workdir_lib.check_workdir(workdir, model, False, sst2)
  assert (tmp_path / 'checkpoints' / '5').is_dir()
  workdir_lib.check_workdir(workdir, model, True, sst2)
  assert not (tmp_path / 'checkpoints').exists()


def test_workdir_resumes_with_other_compute_options(tmp_path):
  # bfloat16, remat or cuDNN attention on resume: same parameters, same
  # model; a changed architecture is still refused.
  (tmp_path / 'checkpoints' / '5').mkdir(parents=True)
  old = {
    'perceiver': {
      'encoder': {'num_latents': 8},
      'dtype': 'float32',
      'remat': False,
      'attention_impl': 'auto',
    },
    'head': '',
  }
  workdir_lib.write_json_atomic(str(tmp_path / 'model.json'), old)
  new = {
    'perceiver': {
      'encoder': {'num_latents': 8},
      'dtype': 'bfloat16',
      'remat': True,
      'attention_impl': 'cudnn',
      'query_chunk_size': 4096,
    },
    'head': '',
  }
  workdir_lib.check_workdir(str(tmp_path), new, overwrite=False)
  new['perceiver']['encoder']['num_latents'] = 16
  with pytest.raises(ValueError, match='num_latents: 8 -> 16'):
    workdir_lib.check_workdir(str(tmp_path), new, overwrite=False)


def test_merge_pretrained_nests_under_the_tanh_head_and_reports_new():
  fresh = {
    'params': {
      'perceiver': {
        'encoder': {'w': np.zeros((2, 2))},
        'decoder': {'w': np.zeros((3,))},
      },
      'head': {'kernel': np.zeros((3, 2))},
    }
  }
  pretrained = {
    'params': {
      'encoder': {'w': np.ones((2, 2))},
      'decoder': {'w': np.ones((5,))},
      'extra': np.ones(1),
    }
  }
  merged, new, unused = models.merge_pretrained(fresh, pretrained)
  np.testing.assert_array_equal(
    merged['params']['perceiver']['encoder']['w'], np.ones((2, 2))
  )
  np.testing.assert_array_equal(
    merged['params']['perceiver']['decoder']['w'], np.zeros(3)
  )
  assert sorted(new) == ['params/head/kernel', 'params/perceiver/decoder/w']
  assert sorted(unused) == [
    'params/perceiver/decoder/w',
    'params/perceiver/extra',
  ]


def test_merge_pretrained_refuses_a_checkpoint_of_another_size():
  """A body that does not fit was silently re-initialised (training from
  scratch with exit code 0); now one error names the arrays and shapes."""
  fresh = {
    'params': {
      'encoder': {'latents': np.zeros((8, 48)), 'w': np.zeros((48, 48))},
      'decoder': {'w': np.zeros((3,))},
    },
    'batch_stats': {'preprocessor': {'mean': np.zeros(4)}},
  }
  pretrained = {
    'params': {
      'encoder': {'latents': np.ones((8, 64)), 'w': np.ones((48, 48))},
      'decoder': {'w': np.ones((3,))},
    },
    'batch_stats': {'preprocessor': {'mean': np.ones(4)}},
  }
  with pytest.raises(
    ValueError,
    match=r'1 of 3 preprocessor/encoder arrays '
    r'differ \(params/encoder/latents: checkpoint \(8, 64\) '
    r'vs model \(8, 48\)\).*config.model.preset',
  ):
    models.merge_pretrained(fresh, pretrained)
  del pretrained['batch_stats']
  pretrained['params']['encoder']['latents'] = np.ones((8, 48))
  with pytest.raises(
    ValueError,
    match='batch_stats/preprocessor/mean '
    r'\(4,\) \(not in the checkpoint\)',
  ):
    models.merge_pretrained(fresh, pretrained)


def test_init_from_rejects_unknown_kinds():
  with pytest.raises(ValueError, match='hf:<dir or hub id>'):
    init_from_lib.load_init_from('s3://bucket/x')
