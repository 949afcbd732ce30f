"""Unit tests of the experiment runner's pure parts (no training).

Metrics are checked against scikit-learn / SciPy, optimizers against optax's
own `lamb` / `adamw`, schedules against their closed forms, and the data
order against its definition (each epoch a permutation).
"""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import stats as scipy_stats
from sklearn import metrics as sk_metrics

from configs import common
from configs import glue_bytes
from configs import imdb_bytes
from configs import mlm_bytes
from configs import quickstart
from experiments import cli
from experiments import eval_lib
from experiments import init_from as init_from_lib
from experiments import input_pipeline
from experiments import metrics
from experiments import models
from experiments import optim
from experiments import tasks
from experiments import workdir as workdir_lib
from experiments.tasks import classification
from experiments.tasks import mlm
from perceiver_io import build_model
from perceiver_io import presets
from tests.helpers import fake_glue_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ configs --


def test_parse_arg_types_and_errors():
  args = common.parse_arg(
    'cola,lr=2e-5,batch=16,tiny', task='', lr=5e-5, batch=32, tiny=False
  )
  assert (args.task, args.lr, args.batch, args.tiny) == ('cola', 2e-5, 16, True)
  with pytest.raises(ValueError, match='valid arguments'):
    common.parse_arg('lrr=1', task='', lr=5e-5)
  with pytest.raises(ValueError, match='must be a int'):
    common.parse_arg('batch=x', batch=32)


@pytest.mark.parametrize(
  'module,arg',
  [
    (quickstart, ''),
    (quickstart, 'tiny'),
    (imdb_bytes, ''),
    (imdb_bytes, 'full'),
    (imdb_bytes, 'scratch'),
    (imdb_bytes, 'tiny'),
    (mlm_bytes, ''),
    (mlm_bytes, 'tiny'),
  ]
  + [(glue_bytes, task) for task in glue_bytes.TASKS]
  + [(glue_bytes, f'{task},tiny') for task in glue_bytes.TASKS],
)
def test_every_config_builds_a_consistent_model(module, arg):
  config = module.get_config(arg)
  assert module.__doc__ and 'python -m experiments.train' in module.__doc__
  # Same field set as the base config, so overrides mean the same everywhere.
  assert set(config.keys()) == set(common.base_config().keys())
  model, description = models.build(config, tasks.get(config).num_outputs())
  cfg = description['perceiver']
  if config.task == 'mlm':
    assert cfg['decoder']['output_index_dims'] == [config.data.max_length]
  elif config.data.source != 'digits':
    assert config.data.max_length <= cfg['preprocessor']['max_seq_len']
  if module is glue_bytes:
    assert config.optimizer.name == 'lamb'
    assert config.optimizer.weight_decay == 0.01
    assert config.schedule.warmup_steps in (200, 1)
    assert config.model.head == 'tanh_mlp'
    assert config.task == (
      'regression' if config.glue_task == 'stsb' else 'classification'
    )
  assert model is not None


def test_attention_impl_reaches_the_model_and_typos_are_one_error():
  # A GPU run chooses cuDNN attention from the command line
  # (--config.model.attention_impl=cudnn); the stored model config keeps it.
  config = quickstart.get_config('tiny')
  config.model.attention_impl = 'cudnn'
  _, description = models.build(config, 10)
  assert description['perceiver']['attention_impl'] == 'cudnn'
  assert (
    models.model_config(quickstart.get_config('tiny'))['attention_impl']
    == 'auto'
  )
  config.model.attention_impl = 'cuddn'
  with pytest.raises(ValueError, match="attention_impl='cuddn'.*cudnn"):
    models.build(config, 10)


def test_glue_without_task_names_the_tasks():
  with pytest.raises(ValueError, match='cola, sst2, mrpc'):
    glue_bytes.get_config('')


def test_misspelt_field_names_closest_valid_ones():
  config = quickstart.get_config('tiny')
  message = cli.field_error(config, 'optimizer.lerning_rate')
  assert 'optimizer.learning_rate' in message
  message = cli.field_error(config, 'optimiser.learning_rate')
  assert 'optimizer' in message
  assert cli.field_error(config, 'optimizer.learning_rate') is None


def test_misspelt_override_on_the_command_line_exits_with_names(subprocess_env):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/quickstart.py:tiny',
      '--workdir=/nonexistent/x',
      '--config.optimizer.lerning_rate=0.1',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert 'optimizer.learning_rate' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists('/nonexistent/x')


def test_missing_config_file_is_one_clear_error(subprocess_env):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/nope.py',
      '--workdir=/tmp/unused',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert "config file 'configs/nope.py' not found" in proc.stderr


# ---------------------------------------------------------------- optimizer --


def _tiny_conv_params():
  model = build_model(presets.get_config('tiny_imagenet_conv'))
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  )
  return variables['params']


def test_weight_decay_mask_follows_the_official_rule():
  params = _tiny_conv_params()
  flat = {
    tuple(str(k.key) for k in path): decayed
    for path, decayed in jax.tree_util.tree_flatten_with_path(
      optim.weight_decay_mask(params)
    )[0]
  }
  for path, decayed in flat.items():
    is_bias = path[-1] == 'bias'
    in_norm = any(
      name.endswith('_norm') or name == 'batchnorm' for name in path[:-1]
    )
    assert decayed == (not is_bias and not in_norm), path
  assert flat[('encoder', 'latents')]
  assert not flat[('preprocessor', 'conv_downsample', 'batchnorm', 'scale')]
  # Trainable queries / position embeddings: decayed unless asked not to.
  query = ('decoder', 'basic', 'query', 'trainable', 'embeddings')
  assert flat[query]
  no_pos = {
    tuple(str(k.key) for k in path): d
    for path, d in jax.tree_util.tree_flatten_with_path(
      optim.weight_decay_mask(params, decay_pos_embs=False)
    )[0]
  }
  assert not no_pos[query]


def _toy_params():
  rng = np.random.default_rng(0)
  return {
    'dense': {
      'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
      'bias': jnp.asarray(rng.normal(size=(4,)), jnp.float32),
    },
    'mlp_norm': {'scale': jnp.ones((4,), jnp.float32)},
  }


def _optimizer_config(name, lr=0.1, wd=0.01):
  config = common.base_config()
  config.optimizer.name = name
  config.optimizer.learning_rate = lr
  config.optimizer.weight_decay = wd
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.eps = 1e-6
  return config


@pytest.mark.parametrize('name', ['lamb', 'adamw'])
def test_lamb_and_adamw_match_optax_reference(name):
  params = _toy_params()
  config = _optimizer_config(name)
  ours, _ = optim.make_optimizer(config, params, total_steps=10)
  mask = optim.weight_decay_mask(params)
  ref_fn = optax.lamb if name == 'lamb' else optax.adamw
  ref = ref_fn(0.1, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=mask)
  state_a, state_b = ours.init(params), ref.init(params)
  p_a = p_b = params
  rng = np.random.default_rng(1)
  for _ in range(3):
    grads = jax.tree_util.tree_map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
    )
    u_a, state_a = ours.update(grads, state_a, p_a)
    u_b, state_b = ref.update(grads, state_b, p_b)
    p_a, p_b = optax.apply_updates(p_a, u_a), optax.apply_updates(p_b, u_b)
  for a, b in zip(
    jax.tree_util.tree_leaves(p_a), jax.tree_util.tree_leaves(p_b)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_gradient_accumulation_averages_micro_batches():
  params = _toy_params()
  config = _optimizer_config('adam', lr=0.01, wd=0.0)
  single, _ = optim.make_optimizer(config, params, total_steps=4)
  config.optimizer.accumulate_steps = 2
  accum, _ = optim.make_optimizer(config, params, total_steps=4)
  g1 = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 1.0), params)
  g2 = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 3.0), params)
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, g1, g2)
  s = accum.init(params)
  u1, s = accum.update(g1, s, params)
  assert all(
    float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(u1)
  )  # No update on the first call.
  u2, s = accum.update(g2, s, params)
  ref, _ = single.update(mean, single.init(params), params)
  for a, b in zip(
    jax.tree_util.tree_leaves(u2), jax.tree_util.tree_leaves(ref)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_schedules_match_closed_forms():
  sched = ml_collections.ConfigDict(
    dict(
      name='constant_cosine',
      warmup_steps=0,
      constant_fraction=0.5,
      decay_steps=-1,
      end_value=0.0,
    )
  )
  fn = optim.make_schedule(sched, 2e-3, 100)
  assert float(fn(0)) == pytest.approx(2e-3)
  assert float(fn(49)) == pytest.approx(2e-3)
  for t in (50, 60, 75, 99):  # Cosine over the last 50 steps.
    expected = 2e-3 * 0.5 * (1 + math.cos(math.pi * (t - 50) / 50))
    assert float(fn(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
  sched.name = 'warmup_cosine'
  sched.warmup_steps = 10
  fn = optim.make_schedule(sched, 1.0, 110)
  assert float(fn(5)) == pytest.approx(0.5)
  assert float(fn(10)) == pytest.approx(1.0)
  assert float(fn(60)) == pytest.approx(0.5, rel=1e-5)
  sched.name = 'warmup_linear'
  fn = optim.make_schedule(sched, 1.0, 110)
  assert float(fn(5)) == pytest.approx(0.5)
  assert float(fn(60)) == pytest.approx(0.5, rel=1e-5)
  sched.name = 'nope'
  with pytest.raises(ValueError, match='constant_cosine'):
    optim.make_schedule(sched, 1.0, 10)


# ------------------------------------------------------------ losses, metrics --


def test_label_smoothed_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 2, 3])
  s = 0.1
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  targets = np.full((5, 4), s / 4)
  targets[np.arange(5), labels] += 1 - s
  expected = -(targets * log_probs).sum(-1)
  got = classification.classification_loss(
    jnp.asarray(logits), jnp.asarray(labels), s
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mlm_loss_counts_only_masked_positions():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  targets = np.array([[1, 2, 3], [4, 0, 1]])
  weights = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  total, count = mlm.mlm_loss(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights)
  )
  np.testing.assert_allclose(total, (nll * weights).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(count, [2, 1])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_glue_metrics_match_sklearn_and_scipy(seed):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 2, 50)
  pred = np.where(rng.random(50) < 0.7, label, 1 - label)
  assert metrics.accuracy(pred, label) == pytest.approx(
    sk_metrics.accuracy_score(label, pred)
  )
  assert metrics.f1_binary(pred, label) == pytest.approx(
    sk_metrics.f1_score(label, pred)
  )
  assert metrics.matthews_corr(pred, label) == pytest.approx(
    sk_metrics.matthews_corrcoef(label, pred)
  )
  label3, pred3 = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
  assert metrics.matthews_corr(pred3, label3) == pytest.approx(
    sk_metrics.matthews_corrcoef(label3, pred3)
  )
  x = np.round(rng.normal(size=40), 1)  # Rounded: ties for Spearman.
  y = x + rng.normal(size=40)
  assert metrics.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0])
  assert metrics.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0])


def test_summarize_ignores_padding_and_reports_glue_score():
  gathered = {
    'loss': np.array([1.0, 3.0, 100.0]),
    'loss_weight': np.array([1.0, 1.0, 0.0]),
    'weight': np.array([1.0, 1.0, 0.0]),
    'pred': np.array([1, 0, 1]),
    'label': np.array([1, 1, 0]),
    'prob': np.array([0.9, 0.8, 0.7]),
  }
  m = metrics.summarize(gathered, ('f1', 'accuracy'))
  assert m['num_examples'] == 2 and m['loss'] == pytest.approx(2.0)
  assert m['accuracy'] == pytest.approx(0.5)
  assert m['f1'] == pytest.approx(2 / 3)
  assert m['score'] == pytest.approx((0.5 + 2 / 3) / 2)


# --------------------------------------------------------------- data order --


def test_batches_cover_each_epoch_once_and_are_step_indexed():
  n, b = 10, 4
  stream = np.concatenate(
    [input_pipeline.batch_indices(s, b, n, seed=3) for s in range(5)]
  )  # 20 rows = 2 epochs.
  assert sorted(stream[:10]) == list(range(10))
  assert sorted(stream[10:20]) == list(range(10))
  assert not np.array_equal(stream[:10], stream[10:20])
  np.testing.assert_array_equal(
    input_pipeline.batch_indices(3, b, n, 3), stream[12:16]
  )
  assert not np.array_equal(
    input_pipeline.batch_indices(0, b, n, 4), stream[:4]
  )


def test_process_shards_concatenate_to_the_global_batch():
  table = {'x': np.arange(30) * 10, 'label': np.arange(30)}
  full = input_pipeline.train_batch(table, 7, 6, 0)
  halves = [input_pipeline.train_batch(table, 7, 6, 0, i, 2) for i in (0, 1)]
  np.testing.assert_array_equal(
    np.concatenate([h['x'] for h in halves]), full['x']
  )
  with pytest.raises(ValueError, match='divisible'):
    input_pipeline.train_batch(table, 0, 5, 0, 0, 2)


def test_eval_batches_pad_with_zero_weight():
  table = {'x': np.arange(5), 'label': np.arange(5)}
  batches = list(input_pipeline.eval_batches(table, 4))
  assert [list(b['weight']) for b in batches] == [[1, 1, 1, 1], [1, 0, 0, 0]]
  assert list(batches[1]['x'][:1]) == [4]


def test_digits_split_is_the_libraries_stratified_split():
  train, info = input_pipeline.load_digits_table('train')
  test, _ = input_pipeline.load_digits_table('test')
  assert train['image'].shape == (1437, 8, 8, 1)
  assert test['image'].shape == (360, 8, 8, 1)
  assert info['num_classes'] == 10
  assert 0.0 <= train['image'].min() and train['image'].max() <= 1.0
  # Stratified: every class in the test split, 36 +- 1 each.
  counts = np.bincount(test['label'], minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37
  # The same examples, in the same order, as the library's tf.data source.
  from perceiver_io.data import image as image_data  # pylint: disable=g-import-not-at-top

  stream, _ = image_data.make_image_dataset(
    'digits', 'test', batch_size=360, train=False, image_size=8
  )
  batch = next(iter(stream))
  np.testing.assert_array_equal(batch['label'], test['label'])
  grey = batch['image'][..., 0]  # Normalised differently: compare shapes.
  corr = np.corrcoef(grey.reshape(-1), test['image'][..., 0].reshape(-1))[0, 1]
  assert corr > 0.99


# ------------------------------------------------------- workdir, pretrained --


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


# ------------------------------------------------------------- glue summary --


def test_glue_summary_averages_task_scores_without_wnli(tmp_path):
  root = str(tmp_path)
  fake_glue_run(
    root,
    'cola',
    [
      {'step': 10, 'train_loss': 1.0},
      {'step': 10, 'eval_score': 0.2, 'eval_matthews_corr': 0.2},
      {'step': 20, 'eval_score': 0.5, 'eval_matthews_corr': 0.5},
    ],
  )
  fake_glue_run(
    root,
    'mnli',
    [
      {'step': 5, 'eval_score': 0.8, 'eval_accuracy': 0.8},
      {
        'step': 5,
        'split': 'validation_mismatched',
        'eval_score': 0.7,
        'eval_accuracy': 0.7,
      },
    ],
    eval_split='validation_matched',
  )
  fake_glue_run(root, 'wnli', [{'step': 1, 'eval_score': 0.1}])
  summary = eval_lib.glue_summary(root)
  assert summary['scores']['cola'] == pytest.approx(50.0)
  assert summary['scores']['mnli'] == pytest.approx(75.0)
  assert summary['average'] == pytest.approx((50.0 + 75.0) / 2)
  assert 'rte' in summary['missing'] and 'wnli' not in summary['missing']
  table = eval_lib.format_table(summary['rows'], ['task', 'split', 'score'])
  assert '| cola | validation | 50.0000 |' in table


def test_unknown_data_source_lists_the_valid_ones():
  config = quickstart.get_config('tiny')
  config.unlock()
  config.data.source = 'digitz'
  with pytest.raises(ValueError, match=r"\['digits'\].*csv:/data/train.csv"):
    input_pipeline.load_table(config, 'train')
