"""Runner inputs that were accepted and then failed late, or were silently
ignored: every config variant's own consistency (flow tile overlap, where
the number of classes lives), the documented flow commands on a `cpu`
workdir, GLUE's best-of-grid summary, ImageNet's tiny batch, compute options
(`query_chunk_size`, float16 on the CPU), and one clear error for a
non-image, a non-config file, an unprepared MLM corpus, a checkpoint of
another size and a checkpoint folder passed as a workdir.
"""

import json
import os
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest
from PIL import Image

from configs import glue_bytes
from configs import imagenet
from configs import imdb_bytes
from configs import mlm_bytes
from configs import multimodal_autoencoding
from configs import optical_flow
from configs import perceiver_ar
from configs import quickstart
from experiments import cli
from experiments import eval_lib
from experiments.workdir import init_from as init_from_lib
from experiments import input_pipeline
from experiments import models
from experiments import predict_lib
from experiments import tasks
from experiments import train_lib
from experiments import workdir as workdir_lib
from experiments.tasks import flow_full_frame
from perceiver_io import checkpoints
from perceiver_io import presets
from perceiver_io.flow import formats as flow_formats
from perceiver_io.flow import synthetic
from tests.helpers import fake_glue_run
from tests.helpers import override_config as _override

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every config module and the arguments of each of its variants.
VARIANTS = {
  quickstart: ['', 'tiny'],
  imagenet: [
    'fourier',
    'learned',
    'conv',
    'tiny',
    'fourier,tiny',
    'learned,tiny',
    'conv,tiny',
  ],
  imdb_bytes: ['default', 'full', 'scratch', 'tiny'],
  glue_bytes: [t for task in glue_bytes.TASKS for t in (task, task + ',tiny')],
  mlm_bytes: ['default', 'tiny'],
  optical_flow: ['default', 'cpu', 'tiny'],
  multimodal_autoencoding: list(multimodal_autoencoding.VARIANTS),
  perceiver_ar: list(perceiver_ar.VARIANTS),
}


def _all_configs():
  for module, args in VARIANTS.items():
    for arg in args:
      yield f'{module.__name__.split(".")[-1]}:{arg}', module.get_config(arg)


def test_the_variant_table_lists_every_config_module():
  modules = {
    name[:-3]
    for name in os.listdir(os.path.join(REPO, 'configs'))
    if name.endswith('.py') and name not in ('__init__.py', 'common.py')
  }
  assert modules == {m.__name__.split('.')[-1] for m in VARIANTS}


# ---------------------------------------------------------------------------
# 1. Flow: the tile overlap fits the tiles of every variant; a cpu workdir
#    evaluates tiled and predicts without --config.
# ---------------------------------------------------------------------------


def test_every_variant_tile_overlap_fits_its_model_tiles():
  checked = []
  for name, config in _all_configs():
    models.model_config(config)  # Every variant builds its model config.
    if 'eval_tile_overlap' not in config:
      continue
    task = tasks.get(config)
    flow_full_frame.check_tile_overlap(
      config.eval_tile_overlap, task.train_size
    )
    checked.append(name)
  assert checked == [
    'optical_flow:default',
    'optical_flow:cpu',
    'optical_flow:tiny',
  ]


def test_a_too_large_tile_overlap_is_refused_before_training():
  config = _override(optical_flow.get_config('cpu'), eval_tile_overlap=20)
  task = tasks.get(config)
  with pytest.raises(
    ValueError,
    match=r'eval_tile_overlap=20 must be in '
    r'\[0, 16\).*24x16',
  ):
    task.data_info()
  assert flow_full_frame.check_tile_overlap(15, (16, 24)) == 15
  with pytest.raises(ValueError, match='must be in'):
    flow_full_frame.check_tile_overlap(-1, (16, 24))


def _save_png(path, array):
  Image.fromarray(np.asarray(array, np.uint8)).save(path)
  return str(path)


@pytest.fixture(scope='module')
def flow_cpu_run(tmp_path_factory):
  """The cpu variant as configured (tiles, overlap), for 2 steps of 2."""
  root = tmp_path_factory.mktemp('flow_cpu')
  config = _override(
    optical_flow.get_config('cpu'),
    num_train_steps=2,
    batch_size=2,
    eval_batch_size=2,
    data__num_eval_examples=2,
    log_every_steps=1,
    eval_every_steps=2,
    checkpoint_every_steps=2,
    progress_bar=False,
    disable_most_optimizations=True,
  )
  workdir = str(root / 'run')
  train_lib.train_and_evaluate(config, workdir)
  pair = synthetic.sample_at(
    3,
    0,
    30,
    50,
    synthetic.SyntheticFlowConfig(
      max_translation=3, background_max_translation=1
    ),
  )
  scene = root / 'sintel' / 'training' / 'clean' / 'scene'
  os.makedirs(scene)
  frames = [
    _save_png(scene / 'frame_0001.png', pair['frame1']),
    _save_png(scene / 'frame_0002.png', pair['frame2']),
  ]
  os.makedirs(root / 'sintel' / 'training' / 'flow' / 'scene')
  flow_formats.write_flo(
    root / 'sintel' / 'training' / 'flow' / 'scene' / 'frame_0001.flo',
    pair['flow'],
  )
  return workdir, root, frames


@pytest.mark.slow
def test_flow_cpu_workdir_evaluates_tiled_and_predicts_without_config(
  flow_cpu_run, tmp_path
):
  workdir, root, frames = flow_cpu_run
  # evaluate --workdir --config=configs/optical_flow.py:cpu
  #     --config.data.eval_source=sintel:...
  config = _override(
    optical_flow.get_config('cpu'),
    data__eval_source=f'sintel:{root / "sintel"}',
  )
  metrics = eval_lib.evaluate_workdir(workdir, config=config)['metrics']
  assert metrics['num_examples'] == 1
  assert np.isfinite(metrics['sintel_clean_epe'])
  # predict --workdir f1.png f2.png --output=... (the workdir's own config).
  out = str(tmp_path / 'flow.flo')
  lines = predict_lib.predict_lines(workdir, frames, output=out)
  assert flow_formats.read_flo(out).shape == (30, 50, 2)
  assert os.path.exists(str(tmp_path / 'flow.png'))
  assert any('tile(s) of 24x16' in line for line in lines)


@pytest.mark.slow
def test_documented_flow_predict_command_runs_from_a_cpu_workdir(
  flow_cpu_run, tmp_path, subprocess_env, python_executable
):
  workdir, _, frames = flow_cpu_run
  out = str(tmp_path / 'flow.flo')
  proc = subprocess.run(
    [
      python_executable,
      '-m',
      'experiments.predict',
      f'--workdir={workdir}',
      *frames,
      f'--output={out}',
    ],
    cwd=REPO,
    env=subprocess_env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f'wrote {out}' in proc.stdout
  assert flow_formats.read_flo(out).shape == (30, 50, 2)


# ---------------------------------------------------------------------------
# 2. GLUE summary: the best run of a grid per task, not the grid's mean.
# ---------------------------------------------------------------------------


def test_glue_summary_takes_the_best_run_per_task_and_split(tmp_path):
  root = str(tmp_path)
  for name, score in (
    ('cola_lr1e-4', 0.30),
    ('cola_lr2e-5', 0.50),
    ('cola_lr5e-5', 0.10),
  ):
    fake_glue_run(root, 'cola', [{'step': 9, 'eval_score': score}], name=name)
  for name, matched, mismatched in (
    ('mnli_a', 0.80, 0.60),
    ('mnli_b', 0.70, 0.72),
  ):
    fake_glue_run(
      root,
      'mnli',
      [
        {'step': 5, 'eval_score': matched},
        {'step': 5, 'split': 'validation_mismatched', 'eval_score': mismatched},
      ],
      eval_split='validation_matched',
      name=name,
    )
  summary = eval_lib.glue_summary(root)
  assert summary['scores']['cola'] == pytest.approx(50.0)
  # Best matched (a: 80) and best mismatched (b: 72), averaged.
  assert summary['scores']['mnli'] == pytest.approx(76.0)
  assert summary['average'] == pytest.approx((50.0 + 76.0) / 2)
  best = {(r['task'], r['split']): r for r in summary['rows']}
  assert len(summary['rows']) == 3 and len(summary['all_rows']) == 7
  assert best['cola', 'validation']['workdir'].endswith('cola_lr2e-5')
  assert best['cola', 'validation']['runs'] == 3
  assert best['mnli', 'validation_mismatched']['workdir'].endswith('mnli_b')


# ---------------------------------------------------------------------------
# 3. ImageNet tiny honours batch=N.
# ---------------------------------------------------------------------------


def test_imagenet_batch_argument_is_honoured_by_tiny_variants():
  for arg, batch in (
    ('tiny', 8),
    ('tiny,batch=4', 4),
    ('conv,tiny,batch=4', 4),
    ('fourier', 1024),
    ('learned,batch=256', 256),
  ):
    config = imagenet.get_config(arg)
    assert config.batch_size == batch, arg
    assert config.optimizer.learning_rate == pytest.approx(
      imagenet.BASE_LEARNING_RATE * batch / 256
    ), arg
  with pytest.raises(ValueError, match='batch must be >= 1'):
    imagenet.get_config('tiny,batch=-2')


# ---------------------------------------------------------------------------
# 4. A non-image to a digits workdir; a non-config file as --config.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def quickstart_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('quickstart') / 'run')
  train_lib.train_and_evaluate(
    _override(quickstart.get_config('tiny'), predict_examples=0), workdir
  )
  return workdir


@pytest.mark.slow
def test_predicting_a_non_image_with_a_digits_workdir_is_one_clear_error(
  quickstart_workdir, tmp_path
):
  readme = os.path.join(REPO, 'README.md')
  with pytest.raises(
    ValueError,
    match=r'README.md is not an image file '
    r'Pillow can read.*PNG, JPEG.*--digits=a:b',
  ):
    predict_lib.predict_lines(quickstart_workdir, [readme])
  with pytest.raises(FileNotFoundError, match='not found'):
    predict_lib.predict_lines(quickstart_workdir, [str(tmp_path)])


@pytest.mark.parametrize(
  'value, message',
  [
    ('README.md', r"README.md' is not a Python module"),
    ('configs/common.py', r"common.py' defines no get_config"),
    ('BROKEN', r'is not valid Python \(line 1'),
  ],
)
def test_a_file_that_is_not_a_config_is_one_clear_error(
  value, message, tmp_path, capsys
):
  if value == 'BROKEN':
    value = str(tmp_path / 'broken.py')
    with open(value, 'w') as f:
      f.write('def get_config(:\n')
  else:
    value = os.path.join(REPO, value)
  with pytest.raises(SystemExit) as exit_info:
    cli.check_overrides_or_exit(
      ['train', f'--config={value}', '--workdir=/tmp/unused']
    )
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: ')
  assert 'get_config(arg' in err
  assert re.search(message, err), err


# ---------------------------------------------------------------------------
# 5. model.query_chunk_size reaches the model.
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_query_chunk_size_is_a_config_field_that_reaches_the_decoder():
  config = optical_flow.get_config('tiny')
  assert cli.field_error(config, 'model.query_chunk_size') is None
  plain_model, _ = models.build(config)
  assert 'query_chunk_size' not in plain_model.config  # 0 = off.
  chunked = _override(
    optical_flow.get_config('tiny'), model__query_chunk_size=64
  )
  model, description = models.build(chunked)
  assert model.config['query_chunk_size'] == 64
  assert description['perceiver']['query_chunk_size'] == 64
  task = tasks.get(chunked)
  frames = (
    np.random.default_rng(0)
    .uniform(-1, 1, task.example_batch()['image'].shape)
    .astype(np.float32)
  )
  variables = plain_model.init(jax.random.PRNGKey(0), frames)
  assert model.bind(variables).decoder.query_chunk_size == 64
  # 16x24 = 384 queries in 6 chunks: the same flow.
  np.testing.assert_allclose(
    model.apply(variables, frames),
    plain_model.apply(variables, frames),
    rtol=1e-5,
    atol=1e-6,
  )
  with pytest.raises(ValueError, match=r'query_chunk_size=-1; use 0'):
    models.build(
      _override(optical_flow.get_config('tiny'), model__query_chunk_size=-1)
    )


def test_a_workdir_saved_before_query_chunk_size_existed_still_loads(
  quickstart_workdir, tmp_path
):
  old = str(tmp_path / 'old')
  shutil.copytree(quickstart_workdir, old)
  path = os.path.join(old, 'config.json')
  saved = json.load(open(path))
  del saved['model']['query_chunk_size']
  workdir_lib.write_json_atomic(path, saved)
  assert workdir_lib.load_workdir(old).step == 3


# ---------------------------------------------------------------------------
# 6. The number of classes lives in data.num_classes only.
# ---------------------------------------------------------------------------


def test_classifier_size_is_set_only_by_data_num_classes(capsys):
  for name, config in _all_configs():
    assert 'num_classes' not in config.model.kwargs, name
  # Image classification too (its data.num_classes was ignored).
  hundred = _override(
    imagenet.get_config('fourier,tiny'), data__num_classes=100
  )
  _, description = models.build(hundred, tasks.get(hundred).num_outputs())
  assert description['perceiver']['decoder']['num_classes'] == 100
  # Every variant's task accepts the model its config builds (a label
  # modality sized by the preset instead of data.num_classes did not).
  for name, config in _all_configs():
    task = tasks.get(config)
    if name.startswith('multimodal_autoencoding'):
      assert task.shapes['num_classes'] == config.data.num_classes, name
  three = _override(imdb_bytes.get_config('tiny'), data__num_classes=3)
  _, description = models.build(three, tasks.get(three).num_outputs())
  assert description['perceiver']['decoder']['num_classes'] == 3
  with pytest.raises(SystemExit):
    cli.check_overrides_or_exit(
      [
        'train',
        '--config=' + os.path.join(REPO, 'configs', 'imdb_bytes.py'),
        '--config.model.kwargs.num_classes=3',
      ]
    )
  err = capsys.readouterr().err
  assert "unknown config field 'model.kwargs.num_classes'" in err
  assert 'Did you mean data.num_classes?' in err


# ---------------------------------------------------------------------------
# 7. float16 on the CPU is refused up front.
# ---------------------------------------------------------------------------


def test_float16_on_the_cpu_is_refused_before_anything_runs(tmp_path):
  config = _override(quickstart.get_config('tiny'), model__dtype='float16')
  with pytest.raises(
    ValueError,
    match=r"dtype='float16' does not run on the "
    r'CPU.*use bfloat16',
  ):
    train_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
  assert models.check_dtype('float16', 'gpu') == 'float16'
  assert models.check_dtype('bfloat16', 'cpu') == 'bfloat16'
  with pytest.raises(
    ValueError,
    match=r'choose one of float32, bfloat16 '
    r'\(float16: GPU only\)',
  ):
    models.check_dtype('fp8', 'cpu')


# ---------------------------------------------------------------------------
# 8. An unprepared TFDS corpus for MLM suggests a text: source.
# ---------------------------------------------------------------------------


def test_unprepared_tfds_corpus_for_mlm_suggests_plain_text_files(tmp_path):
  config = _override(
    mlm_bytes.get_config('tiny'),
    data__source='tfds:c4/en',
    data__train_split='train',
    data__data_dir=str(tmp_path),
  )
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.MlmTrainStream(config, 0)
  message = str(error.value)
  assert "'c4/en' is not prepared" in message
  assert "source='text:/data/*.txt'" in message
  assert 'label_field' not in message


# ---------------------------------------------------------------------------
# 9. A checkpoint of another model size: a bounded error.
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_checkpoint_of_another_size_gets_a_short_error(tmp_path):
  small = presets.get_config('tiny_imagenet_fourier')
  model = presets.build('tiny_imagenet_fourier')
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3)))
  path = checkpoints.save(str(tmp_path / 'small'), variables, small)
  wider = presets.get_config(
    'tiny_imagenet_fourier', latent_channels=40, num_latents=12
  )
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(wider, f)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.load(path)
  message = str(error.value)
  mismatches = [
    int(w)
    for w, nxt in zip(message.split(), message.split()[1:])
    if nxt == 'shape'
  ]
  assert mismatches and mismatches[0] > 10
  assert f'and {mismatches[0] - 5} more' in message
  assert message.count(' vs model ') == 5
  assert re.search(
    r'params/decoder/\S+: file \(\d+(, \d+)*\) vs model '
    r'\(\d+(, \d+)*\)',
    message,
  ), message
  assert 'another model size' in message
  assert len(message) < 1500


# ---------------------------------------------------------------------------
# 10. A checkpoint folder passed as a workdir.
# ---------------------------------------------------------------------------


def test_a_checkpoint_folder_is_not_taken_for_a_workdir(
  quickstart_workdir, tmp_path
):
  import transformers  # pylint: disable=g-import-not-at-top

  variables = workdir_lib.load_workdir(quickstart_workdir).variables
  model_json = json.load(open(os.path.join(quickstart_workdir, 'model.json')))
  converted = checkpoints.save(
    str(tmp_path / 'converted'), variables, model_json['perceiver']
  )
  for call in (
    lambda: predict_lib.predict_lines(converted, ['x.png']),
    lambda: init_from_lib.load_init_from(f'workdir:{converted}'),
  ):
    with pytest.raises(
      ValueError,
      match=(
        f'{converted} is a perceiver_io checkpoint .*not a training workdir; '
        f'.*--config.init_from=dir:{converted}'
      ),
    ):
      call()
  hf_dir = str(tmp_path / 'hf')
  transformers.PerceiverConfig().save_pretrained(hf_dir)
  with pytest.raises(
    ValueError,
    match=(
      f'{hf_dir} is a HuggingFace checkpoint .*--config.init_from=hf:{hf_dir}'
    ),
  ):
    predict_lib.predict_lines(hf_dir, ['some text'])
  with open(os.path.join(tmp_path, 'config.json'), 'w') as f:
    json.dump({'learning_rate': 1.0}, f)
  with pytest.raises(ValueError, match='not an experiment config'):
    workdir_lib.load_config(str(tmp_path))
