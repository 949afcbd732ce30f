"""ImageNet experiments (configs/imagenet.py, tasks/image_classification.py):
one-step train / evaluate / predict of each tiny variant on generated images, the
official recipe's numbers, MixUp/CutMix + smoothing inside the step, importing
a tiny HuggingFace checkpoint and evaluating it on a folder with the one
documented command (checked against the HF model run in torch), and bad
input (unknown class folder, unmappable folders) refused before anything is
written.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import imagenet
from experiments import eval_lib
from experiments import models
from experiments import optim
from experiments import predict_lib
from experiments import steps
from experiments import tasks
from experiments import train_lib
from tests.helpers import override_config as _override

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save_image(path, size, seed):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('img') / 'photo.jpg')
  _save_image(path, (45, 60), 0)
  return path


# ---------------------------------------------------------------------------
# The recipe.
# ---------------------------------------------------------------------------


def test_paper_configs_carry_the_official_recipe():
  for variant, preset in (
    ('fourier', 'imagenet_fourier'),
    ('learned', 'imagenet_learned'),
    ('conv', 'imagenet_conv'),
  ):
    c = imagenet.get_config(variant)
    assert c.model.preset == preset and c.task == 'image_classification'
    assert c.optimizer.name == 'lamb' and c.optimizer.grad_clip_norm == 10.0
    assert c.optimizer.weight_decay == 0.1 and c.optimizer.decay_pos_embs
    assert c.optimizer.learning_rate == pytest.approx(2e-3)  # 5e-4 x 1024/256
    assert (
      c.schedule.name,
      c.schedule.constant_fraction,
      c.schedule.warmup_steps,
    ) == ('constant_cosine', 0.5, 0)
    assert c.num_epochs == 110 and c.batch_size == 1024
    assert c.label_smoothing == 0.1 and c.data.mixup_alpha == 0.2
    assert c.data.cutmix and (
      c.data.randaugment_layers,
      c.data.randaugment_magnitude,
    ) == (4, 5.0)
  # 110 epochs of the TFDS train split at batch 1024.
  assert (
    steps.total_steps(imagenet.get_config('fourier'), imagenet.NUM_TRAIN_IMAGES)
    == 137_626
  )
  assert imagenet.get_config('conv,batch=256').optimizer.learning_rate == (
    pytest.approx(5e-4)
  )
  with pytest.raises(ValueError, match='fourier, learned, conv'):
    imagenet.get_config('resnet')


def test_schedule_is_flat_for_half_then_cosine_to_zero():
  c = imagenet.get_config('fourier')
  total = 1000
  schedule = optim.make_schedule(c.schedule, 2e-3, total)
  for step in (0, 499):
    assert float(schedule(step)) == pytest.approx(2e-3)
  for step in (500, 625, 750, 999):
    t = (step - 500) / 500
    assert float(schedule(step)) == pytest.approx(
      2e-3 * 0.5 * (1 + math.cos(math.pi * t)), rel=1e-5, abs=1e-9
    )


def test_conv_weight_decay_skips_batchnorm_layernorm_and_biases():
  c = imagenet.get_config('conv,tiny')
  task = tasks.get(c)
  model, _ = models.build(c, task.num_outputs())
  params = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), task.example_batch()['image'])
  )['params']
  flat = {
    '/'.join(str(getattr(k, 'key', k)) for k in path): v
    for path, v in jax.tree_util.tree_flatten_with_path(
      optim.weight_decay_mask(params)
    )[0]
  }
  bn = [k for k in flat if 'batchnorm' in k]
  assert bn and not any(flat[k] for k in bn)
  assert not any(v for k, v in flat.items() if k.endswith('/bias'))
  assert not any(v for k, v in flat.items() if 'norm' in k)
  assert flat['encoder/latents']  # position embeddings are decayed
  assert any(v for k, v in flat.items() if k.endswith('kernel'))


def test_train_transform_mixes_then_smooths_labels():
  c = imagenet.get_config('fourier,tiny')
  task = tasks.get(c)
  batch_size, k = 8, task.num_classes
  images = np.random.default_rng(0).normal(size=(batch_size, 16, 16, 3))
  labels = np.arange(batch_size) % k
  batch = {
    'image': images.astype(np.float32),
    'label': labels.astype(np.int32),
    'weight': np.ones(batch_size, np.float32),
  }
  out = jax.jit(task.train_transform)(batch, jax.random.PRNGKey(3))
  targets = np.asarray(out['targets'], np.float64)
  mixed = np.asarray(out['image'], np.float64)
  np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
  assert targets.min() >= 0.1 / k - 1e-7  # smoothing after mixing
  for i in range(batch_size):
    j = batch_size - 1 - i  # the official pairing partner
    # Undo the smoothing; the remaining weight on the own label is the
    # fraction of example i's pixels in the mixed image.
    own = (targets[i, labels[i]] - 0.1 / k) / 0.9
    if labels[i] == labels[j]:
      continue
    if i < batch_size // 2:  # MixUp rows: a global blend with ratio `own`.
      expected = own * images[i] + (1 - own) * images[j]
      np.testing.assert_allclose(mixed[i], expected, atol=1e-4)
    else:  # CutMix rows: pixels come from i or j; own = fraction from i.
      from_i = np.all(np.isclose(mixed[i], images[i], atol=1e-6), -1)
      from_j = np.all(np.isclose(mixed[i], images[j], atol=1e-6), -1)
      assert np.all(from_i | from_j)
      assert own == pytest.approx(from_i.mean(), abs=1e-6)


# ---------------------------------------------------------------------------
# One-step runs of each tiny variant.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def class_csv(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('classes') / 'classes.csv')
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['class_index', 'wnid', 'name'])
    for i in range(10):
      writer.writerow([i, f'n{i:08d}', f'thing number {i}'])
  return path


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['fourier', 'learned', 'conv'])
def test_tiny_variant_trains_evaluates_and_predicts(
  variant, tmp_path, image_file, class_csv
):
  workdir = str(tmp_path / variant)
  config = _override(imagenet.get_config(f'{variant},tiny'), num_train_steps=1)
  result = train_lib.train_and_evaluate(config, workdir)
  assert result['step'] == 1
  metrics = result['eval']
  assert metrics['num_examples'] == 16
  assert 0 <= metrics['top1'] <= metrics['top5'] <= 1
  assert np.isfinite(metrics['loss'])
  state = result['state']
  if variant == 'conv':  # BatchNorm statistics were updated by the step.
    stats = jax.device_get(state['model_state']['batch_stats'])
    means = [
      v
      for k, v in jax.tree_util.tree_flatten_with_path(stats)[0]
      if 'mean' in str(k)
    ]
    assert means and all(np.any(m != 0) for m in means)
  else:
    assert not state['model_state']
  records = [
    json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  assert any('eval_top5' in r for r in records)

  again = eval_lib.evaluate_workdir(workdir)
  assert again['metrics']['top1'] == pytest.approx(metrics['top1'])
  assert again['metrics']['loss'] == pytest.approx(metrics['loss'], rel=1e-5)

  lines = predict_lib.predict_lines(
    workdir, [image_file], top_k=5, class_names=class_csv
  )
  assert lines[1] == image_file
  ranked = [
    re.match(r'  (\d)\. (\S+)  thing number (\d)  \[(\d)\]$', line)
    for line in lines[2:]
  ]
  assert len(ranked) == 5 and all(ranked)
  probs = [float(m.group(2)) for m in ranked]
  assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-3
  assert all(m.group(3) == m.group(4) for m in ranked)


# ---------------------------------------------------------------------------
# Importing a HuggingFace checkpoint and evaluating it on a folder.
# ---------------------------------------------------------------------------

HF_CLASSES = ('n01440764', 'n01443537', 'n01484850')


@pytest.fixture(scope='module')
def hf_fourier(tmp_path_factory):
  """A tiny randomised PerceiverForImageClassificationFourier, saved."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from tests import hf_fixtures  # pylint: disable=g-import-not-at-top

  cfg = transformers.PerceiverConfig(
    num_labels=3,
    d_model=261,
    id2label={i: f'hf name {i}' for i in range(3)},
    label2id={f'hf name {i}': i for i in range(3)},
    **hf_fixtures.ENC,
  )
  model = hf_fixtures.randomise(
    transformers.PerceiverForImageClassificationFourier(cfg), seed=1
  )
  with torch.no_grad():  # Spread the logits: no near-ties in the top-k.
    model.perceiver.decoder.decoder.final_layer.weight.mul_(30.0)
  path = str(tmp_path_factory.mktemp('hf') / 'vision-perceiver-tiny')
  model.save_pretrained(path)
  return model, path


@pytest.fixture(scope='module')
def val_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('val')
  for c, wnid in enumerate(HF_CLASSES):
    os.makedirs(root / wnid)
    for i in range(2):
      _save_image(
        str(root / wnid / f'img{i}.JPEG'), (230 + 20 * i, 300), 10 * c + i
      )
  return str(root)


def _hf_reference(model, folder):
  """Top-1 / top-5 / mean CE of the HF model on our NumPy preprocessing."""
  import torch  # pylint: disable=g-import-not-at-top
  from perceiver_io.data import image as image_data  # pylint: disable=g-import-not-at-top

  images, labels = [], []
  for c, wnid in enumerate(HF_CLASSES):
    for name in sorted(os.listdir(os.path.join(folder, wnid))):
      images.append(
        image_data.eval_preprocess_numpy(
          image_data.load_image_numpy(os.path.join(folder, wnid, name)), 224
        )
      )
      labels.append(c)
  x = torch.tensor(np.stack(images).transpose(0, 3, 1, 2))
  with torch.no_grad():
    logits = model(inputs=x).logits.numpy().astype(np.float64)
  labels = np.asarray(labels)
  log_probs = (
    logits
    - np.log(
      np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
    )
    - logits.max(-1, keepdims=True)
  )
  order = np.argsort(-logits, -1)
  return {
    'top1': float(np.mean(order[:, 0] == labels)),
    'top5': 1.0,  # 3 classes: the label is always in the top 5.
    'loss': float(-np.mean(log_probs[np.arange(len(labels)), labels])),
  }


@pytest.mark.slow
def test_documented_command_evaluates_an_imported_hf_checkpoint_on_a_folder(
  hf_fourier, val_folder, subprocess_env
):
  model, path = hf_fourier
  expected = _hf_reference(model, val_folder)
  command = [
    sys.executable,
    '-m',
    'experiments.evaluate',
    '--config=configs/imagenet.py:fourier',
    f'--config.init_from=hf:{path}',
    f'--config.data.eval_source=dir:{val_folder}',
    '--config.eval_batch_size=4',
  ]
  run = subprocess.run(
    command,
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  table = dict(re.findall(r'\| (\w+) \| ([\d.]+) \|', run.stdout))
  assert int(table['num_examples']) == 6
  assert float(table['top1']) == pytest.approx(expected['top1'], abs=1e-4)
  assert float(table['top5']) == pytest.approx(expected['top5'], abs=1e-4)
  assert float(table['loss']) == pytest.approx(expected['loss'], rel=2e-3)


@pytest.mark.slow
def test_predict_with_an_imported_checkpoint_names_its_classes(
  hf_fourier, image_file, tmp_path
):
  model, path = hf_fourier
  config = _override(imagenet.get_config('fourier'), init_from=f'hf:{path}')
  lines = predict_lib.predict_pretrained(config, [image_file], top_k=0)
  assert lines[1] == image_file and len(lines) == 5  # 3 classes, not 5
  assert {line.split('  ')[2] for line in lines[2:]} == {
    'hf name 0',
    'hf name 1',
    'hf name 2',
  }
  # A class-list file of the wrong length is refused.
  bad = tmp_path / 'two.txt'
  bad.write_text('a\nb\n')
  with pytest.raises(
    ValueError, match='names 2 classes but the model predicts 3'
  ):
    predict_lib.predict_pretrained(config, [image_file], class_names=str(bad))


# ---------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------


def test_unknown_class_folder_is_refused_before_anything_is_written(
  tmp_path, val_folder
):
  classes = tmp_path / 'classes.txt'
  classes.write_text('\n'.join(HF_CLASSES[:2]) + '\n')  # lacks the third
  workdir = tmp_path / 'run'
  config = _override(
    imagenet.get_config('fourier,tiny'),
    data__source=f'dir:{val_folder}',
    data__class_names=str(classes),
  )
  with pytest.raises(
    ValueError, match=f"'{HF_CLASSES[2]}' is not in the class list"
  ):
    train_lib.train_and_evaluate(config, str(workdir))
  assert not os.path.exists(workdir / 'config.json')
  assert not os.path.exists(workdir / 'checkpoints')


def test_folders_that_cannot_map_to_the_model_classes_are_refused(
  tmp_path, val_folder
):
  # 3 class folders, a 10-class model and no class list: the order is unknown.
  config = _override(
    imagenet.get_config('fourier,tiny'),
    data__source=f'dir:{val_folder}',
    batch_size=2,
  )
  with pytest.raises(ValueError, match='class_names'):
    train_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
