"""The perceiver_ar task through the runner: train, evaluate, predict.

Metrics are checked against a NumPy re-derivation from the model's logits
on the same windows, and greedy prediction against a plain full-recompute
argmax loop written here, so neither the task's loss nor the decoder is
trusted to check itself.
"""

import logging
import math

import jax
import numpy as np
import pytest

from configs import perceiver_ar as ar_configs
from experiments import eval_lib
from experiments import models
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib
from experiments import workdir as workdir_lib
from perceiver_io.data.text import lm
from tests import helpers


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  """Tiny models: XLA's quick compile (as the tiny configs train)."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory, fast_compiles):
  workdir = str(tmp_path_factory.mktemp('ar_tiny'))
  result = train_lib.train_and_evaluate(ar_configs.get_config('tiny'), workdir)
  return workdir, result, workdir_lib.load_workdir(workdir)


@pytest.fixture(scope='module')
def sharp(tiny_run):
  """The tiny run's model with noise on every weight: after 3 steps its
  logits are nearly uniform, so argmax ties would make greedy decoding
  depend on float round-off; these weights give clear winners."""
  _, _, run = tiny_run
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
    lambda x: x + 0.5 * rng.standard_normal(x.shape).astype(x.dtype),
    run.variables['params'],
  )
  return run._replace(variables={'params': params})


@pytest.fixture(scope='module')
def tiny_task():
  """The tiny config's task (no model needed: inputs are checked first)."""
  return tasks.get(ar_configs.get_config('tiny'))


def _apply(run):
  return jax.jit(lambda v, x: run.model.apply(v, x))


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.slow
def test_eval_metrics_match_a_numpy_rederivation(tiny_run):
  workdir, result, run = tiny_run
  task = tasks.get(run.config, run.model_config)
  batches, count = task.eval_data()
  assert count == 8  # tiny: max_eval_examples.
  nll, hits, tokens = 0.0, 0, 0.0
  apply = _apply(run)
  for batch in batches:
    logits = np.asarray(apply(run.variables, batch['inputs']), np.float64)
    logp = _log_softmax(logits)
    w = batch['target_weights'] * batch['weight'][:, None]
    picked = np.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
    nll -= float(np.sum(picked * w))
    hits += int(np.sum((logits.argmax(-1) == batch['targets']) * w))
    tokens += float(np.sum(w))
  assert tokens == 8 * 16  # 8 windows of M = 16 targets.
  metrics = result['eval']
  assert metrics['tokens'] == tokens
  assert metrics['loss'] == pytest.approx(nll / tokens, rel=1e-4)
  assert metrics['accuracy'] == pytest.approx(hits / tokens, abs=1e-6)
  assert metrics['bits_per_byte'] == pytest.approx(
    metrics['loss'] / math.log(2), rel=1e-6
  )
  assert metrics['perplexity'] == pytest.approx(math.exp(metrics['loss']))
  # evaluate on the workdir gives what training reported.
  evaluated = eval_lib.evaluate_workdir(workdir)['metrics']
  assert evaluated['loss'] == pytest.approx(metrics['loss'], rel=1e-5)


def _greedy_reference(run, prompt: bytes, count: int):
  """Full recompute, argmax of the last latent, one token at a time."""
  n = int(run.model_config['max_context'])
  ids = list(lm.encode_bytes(prompt))
  apply = _apply(run)
  for _ in range(count):
    row = lm.left_pad(np.asarray(ids, np.int32), n)[None]
    logits = np.asarray(apply(run.variables, row))
    ids.append(int(np.argmax(logits[0, -1])))
  return lm.decode_ids(ids[len(prompt) :])


@pytest.mark.slow
def test_greedy_prediction_is_the_argmax_continuation(sharp):
  run = sharp
  task = tasks.get(run.config, run.model_config)
  # Prompts of different lengths, decoded together.
  prompts = ['First Citizen:', 'You are all resolved rather']
  lines = task.predict_lines(
    run.model, run.variables, prompts, max_new_tokens=6, temperature=0.0
  )
  for prompt, line in zip(prompts, lines):
    want = _greedy_reference(run, prompt.encode(), 6)
    assert line == f'{prompt!r} -> {want.decode("utf-8", "replace")!r}'
  assert lines[-1].startswith('# 12 tokens in ')


@pytest.mark.slow
def test_predict_on_a_workdir_streams_one_prompt(tiny_run, capsys):
  workdir, _, _ = tiny_run
  lines = predict_lib.predict_lines(
    workdir,
    ['First Citizen:'],
    max_new_tokens=5,
    temperature=0.7,
    top_k=20,
    top_p=0.9,
    seed=1,
  )
  streamed = capsys.readouterr().out
  # The prompt, its 5 new bytes (as text), then a newline.
  assert streamed.startswith('First Citizen:') and streamed.endswith('\n')
  assert lines[0] == f'# {workdir} (checkpoint step 3)'
  assert lines[1].startswith('# 5 tokens in ') and len(lines) == 2


@pytest.mark.parametrize(
  'options,message',
  [
    (dict(top_p=0.0), r'--top_p=0.0: must be in \(0, 1\]'),
    (dict(top_p=1.5), r'--top_p=1.5: must be in \(0, 1\]'),
    (dict(temperature=-0.1), '--temperature=-0.1: must be >= 0'),
    (dict(max_new_tokens=0), '--max_new_tokens=0: must be >= 1'),
    (dict(top_k=-1), '--top_k=-1: must be >= 0'),
  ],
)
def test_bad_sampling_options_name_the_valid_range(tiny_task, options, message):
  with pytest.raises(ValueError, match=message):
    tiny_task.predict_lines(None, None, ['a'], **options)


def test_empty_prompt_is_refused(tiny_task):
  with pytest.raises(ValueError, match='prompt 1 is empty'):
    tiny_task.predict_lines(None, None, [''])
  with pytest.raises(ValueError, match='--prompt number 2 is empty'):
    predict_lib.read_prompts(['ok', ''])


def test_non_utf8_prompt_is_encoded_as_its_bytes(tiny_task):
  # What Python makes of the command-line bytes b'caf\xe9' (Latin-1).
  argv_text = b'caf\xe9'.decode('utf-8', 'surrogateescape')
  ids = tiny_task.prompt_ids(argv_text)
  assert ids == [c + 6 for c in b'caf\xe9']


def test_long_prompt_keeps_its_last_tokens_with_a_warning(tiny_task, caplog):
  text = 'x' * 10 + 'y' * 64  # N = 64.
  with caplog.at_level(logging.WARNING):
    ids = tiny_task.prompt_ids(text)
  assert ids == [ord('y') + 6] * 64
  assert 'prompt 1 has 74 bytes, more than the model context N=64' in (
    caplog.text
  )


def test_every_variant_makes_a_valid_model_config():
  for variant in ar_configs.VARIANTS:
    config = ar_configs.get_config(variant)
    cfg = models.model_config(config)
    assert cfg['family'] == 'perceiver_ar'
    if 'mirrored' in variant:
      assert 2 * config.data.mirrored_half == cfg['max_context']
  paper = models.model_config(ar_configs.get_config('mirrored_paper'))
  assert (paper['max_context'], paper['num_latents']) == (131_072, 1024)
  with pytest.raises(ValueError, match='perceiver_ar variants'):
    ar_configs.get_config('nope')


def test_task_refuses_other_models_and_mismatched_copy_length():
  config = helpers.override_config(
    ar_configs.get_config('tiny'), model__preset='tiny_text_classification'
  )
  config.unlock()
  config.model.kwargs = {}
  with pytest.raises(ValueError, match='needs a Perceiver AR model'):
    tasks.get(config)
  config = helpers.override_config(
    ar_configs.get_config('tiny_mirrored'), data__mirrored_half=20
  )
  with pytest.raises(ValueError, match='max_context must be 40'):
    tasks.get(config)


def test_copy_task_scores_the_copied_half():
  config = ar_configs.get_config('tiny_mirrored')
  task = tasks.get(config)
  batches, count = task.eval_data()
  assert count == 8
  batch = next(iter(batches))
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((4, 8, 262)).astype(np.float32)
  # The right byte wins at a random half of the positions.
  b, j = np.nonzero(rng.random((4, 8)) < 0.5)
  logits[b, j, batch['targets'][b, j]] += 10.0
  batch['copied'][:, :4] = 0  # Count only the last half as copies.
  out = jax.tree_util.tree_map(np.asarray, task.eval_outputs(logits, batch))
  metrics = task.summarize(out)
  hits = logits.argmax(-1) == batch['targets']
  assert 0 < hits.sum() < hits.size
  assert metrics['accuracy'] == pytest.approx(hits.mean())
  assert metrics['copied_accuracy'] == pytest.approx(hits[:, 4:].mean())
  assert metrics['tokens'] == 4 * 8
  logp = _log_softmax(logits.astype(np.float64))
  nll = -np.take_along_axis(logp, batch['targets'][..., None], -1).mean()
  assert metrics['loss'] == pytest.approx(nll, rel=1e-5)
