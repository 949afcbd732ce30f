"""The workdir: its layout, its checks, the run's records, and reading it back.

Why one package: a workdir is how a run survives a crash or preemption, how
evaluate and predict find a trained model, and how a GLUE summary reads many
runs. Its layout is written down here and nowhere else:

  config.json         the resolved experiment config
  model.json          what model the checkpoints hold (`models.build`)
  data_info.json      label names, text fields and size of the training data
  checkpoints/<step>/ Orbax steps (`checkpointing.Checkpointer`)
  metrics.jsonl       one JSON object per logged step or evaluation
  tb/                 TensorBoard events
  .lock               who is training in it, while a run does (`lock`)
  checkpoints-corrupt/<step>/  steps that could not be read, moved aside
                      when a run resumed (never deleted)
  replaced-<time>/    a run that `config.overwrite` moved aside (itself a
                      complete workdir)

A workdir holding another model's or another experiment's checkpoints is
refused (`check_workdir`), so a run never resumes on the wrong data or mixes
checkpoints. Two submodules sit below this one: `lock` (one training run
per workdir; standard library only) and `json_files` (atomic writes, reads
that fail in one line). Two build on it and use its file names:
`metric_writer` (the training loop's metrics.jsonl and tb/ writer) and
`init_from` (parsing `config.init_from` once, for fine-tuning and for
evaluating or predicting an imported checkpoint; 'workdir:<dir>' is read
back with `load_workdir`).
"""

import glob
import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import jax
import ml_collections

from experiments import checkpointing
from experiments import models
from experiments.workdir import lock
from experiments.workdir.json_files import append_jsonl
from experiments.workdir.json_files import json_value
from experiments.workdir.json_files import read_json
from experiments.workdir.json_files import write_json_atomic
from perceiver_io import model as model_lib

PyTree = Any
CONFIG_FILE = 'config.json'
MODEL_FILE = 'model.json'
DATA_INFO_FILE = 'data_info.json'
CHECKPOINT_DIR = 'checkpoints'
# Steps that could not be read, moved out of Orbax's sight by a resume.
CORRUPT_CHECKPOINT_DIR = 'checkpoints-corrupt'
METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tb'
# Everything a run writes at the top of its workdir besides checkpoints/;
# `overwrite` moves these aside with the checkpoints.
RUN_FILES = (
  MODEL_FILE,
  CONFIG_FILE,
  DATA_INFO_FILE,
  METRICS_FILE,
  TENSORBOARD_DIR,
)


# ----------------------------------------------------------------------------
# Creating and checking a workdir.
# ----------------------------------------------------------------------------


def make_workdir(workdir: str) -> None:
  """Creates `workdir`, or says in one line why it cannot be used."""
  lock.make(workdir)


def has_checkpoints(workdir: str) -> bool:
  ckpt = os.path.join(workdir, CHECKPOINT_DIR)
  return os.path.isdir(ckpt) and any(
    name.isdigit() for name in os.listdir(ckpt)
  )


def _diff(a: Any, b: Any, prefix: str = '') -> list:
  """Paths where two JSON-like trees differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in sorted(set(a) | set(b)):
      out += _diff(
        a.get(key), b.get(key), f'{prefix}.{key}' if prefix else str(key)
      )
    return out
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    a, b = list(a), list(b)
  return [] if a == b else [f'{prefix}: {a!r} -> {b!r}']


# How the model computes, not what it is: same parameters, same function up
# to rounding. A run may resume with other values (bfloat16 after float32,
# remat to fit a smaller card, cuDNN attention on a GPU). The model's other
# top-level option, `gelu_approximate`, changes the function: not here.
COMPUTE_OPTIONS = (
  'dtype',
  'remat',
  'remat_policy',
  'query_chunk_size',
  'attention_impl',
)

# Config fields a resumed run may change: how long and how often (extending
# a run is a normal thing to do), what and how it evaluates, where data
# already prepared lives, and how the model computes. Any other difference
# means the workdir belongs to another experiment (another task, data,
# optimizer, seed or starting point).
RESUMABLE_FIELDS = (
  'num_train_steps',
  'num_epochs',
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'eval_batch_size',
  'max_eval_examples',
  'eval_metrics',
  'eval_tile_overlap',
  'eval_tile_batch',
  'predict_examples',
  'progress_bar',
  'overwrite',
  'disable_most_optimizations',
  'compilation_cache',
  'shard_params_min_size',
  'mesh.data',
  'mesh.fsdp',
  'best_metric',
  'best_mode',
  'data.eval_split',
  'data.eval_source',
  'data.num_eval_examples',
  'data.class_names',
  'data.num_workers',
  'data.data_dir',
  'data.manual_dir',
) + tuple(f'model.{k}' for k in COMPUTE_OPTIONS)


def _split_compute_options(description: Dict[str, Any]):
  """(description without the perceiver's compute options, those options)."""
  description = json.loads(json.dumps(description))
  perceiver = description.get('perceiver')
  options = {}
  if isinstance(perceiver, dict):
    options = {k: perceiver.pop(k) for k in COMPUTE_OPTIONS if k in perceiver}
  return description, options


def _config_differences(workdir: str, config: Dict[str, Any]) -> list:
  """What differs from the workdir's config.json, beyond RESUMABLE_FIELDS."""
  path = os.path.join(workdir, CONFIG_FILE)
  if config is None or not os.path.exists(path):
    return []
  old = read_json(path)
  return [
    d
    for d in _diff(old, json.loads(json.dumps(config)))
    if d.split(':', 1)[0] not in RESUMABLE_FIELDS
    and _has_field(old, d.split(':', 1)[0])
  ]


def _has_field(tree: Dict[str, Any], dotted: str) -> bool:
  """Whether the stored config has the field: one added to the configs
  after the run started is not a difference (the run used its default)."""
  for key in dotted.split('.'):
    if not isinstance(tree, dict) or key not in tree:
      return False
    tree = tree[key]
  return True


def check_workdir(
  workdir: str,
  description: Dict[str, Any],
  overwrite: bool,
  config: Optional[Dict[str, Any]] = None,
) -> None:
  """Refuses a workdir whose checkpoints belong to another model or run.

  Compute options (`COMPUTE_OPTIONS`) may differ from the stored run's:
  they are logged, not refused. With `config` (the new run's, as a dict),
  it is compared with the workdir's config.json too: fields outside
  `RESUMABLE_FIELDS` must match, so a workdir of another experiment (say
  CoLA's, when this is SST-2 with the same model) is not resumed on the
  wrong data or optimizer.

  Args:
    workdir: the run directory.
    description: JSON model description of this run (models.build).
    overwrite: move the other run aside instead of failing.
    config: the new run's config dict (config.to_dict()).

  Raises:
    ValueError: the workdir holds checkpoints of a different model or run.
  """
  model_file = os.path.join(workdir, MODEL_FILE)
  if has_checkpoints(workdir) and os.path.exists(model_file):
    old, old_options = _split_compute_options(read_json(model_file))
    new, new_options = _split_compute_options(description)
    model_changes = _diff(old, new)
    config_changes = (
      [] if model_changes else _config_differences(workdir, config)
    )
    if not model_changes and not config_changes:
      for change in _diff(old_options, new_options):
        logging.info('Resuming with another compute option (%s).', change)
      return
    what, changes = (
      ('a different model', model_changes)
      if model_changes
      else ('another run (other settings)', config_changes)
    )
    if not overwrite:
      _refuse_layout_change(workdir, old, model_changes)
      raise ValueError(
        f'workdir {workdir} holds checkpoints of {what} '
        f'({len(changes)} difference(s): {"; ".join(changes[:5])}). Use '
        'another --workdir, or pass --config.overwrite=True to move the '
        'old run aside to replaced-<time>/ in it (nothing is deleted).'
      )
    if jax.process_index() == 0:
      aside = move_run_aside(workdir)
      logging.warning('overwrite=True: moved the previous run to %s.', aside)
  elif has_checkpoints(workdir) and not os.path.exists(model_file):
    raise ValueError(
      f'workdir {workdir} has checkpoints but no {MODEL_FILE}; '
      'it was not written by experiments.train. Use another '
      '--workdir.'
    )


def _refuse_layout_change(workdir: str, old, changes: list) -> None:
  """One line for a resume in the other latent-stack parameter layout."""
  if changes and all(c.startswith('perceiver.scan_layers:') for c in changes):
    was = bool(old['perceiver'].get('scan_layers'))
    raise ValueError(
      f'workdir {workdir} holds checkpoints in the '
      f'{("unrolled", "scanned")[was]} parameter layout; resume with '
      f'--config.model.scan_layers={was}, or start a new --workdir with '
      f'--config.init_from=workdir:{workdir} (its weights, other layout).'
    )


def move_run_aside(workdir: str) -> str:
  """Moves checkpoints/ and the run's files into `replaced-<time>/` (itself
  a complete workdir: evaluate and predict still work on it)."""
  stamp = time.strftime('%Y%m%d-%H%M%S')
  aside = os.path.join(workdir, f'replaced-{stamp}')
  n = 1
  while os.path.exists(aside):
    n += 1
    aside = os.path.join(workdir, f'replaced-{stamp}-{n}')
  os.makedirs(aside)
  for name in (CHECKPOINT_DIR, CORRUPT_CHECKPOINT_DIR) + RUN_FILES:
    if os.path.exists(os.path.join(workdir, name)):
      os.rename(os.path.join(workdir, name), os.path.join(aside, name))
  return aside


def open_checkpoints(
  workdir: str, keep: int = 2, best_metric: str = '', best_mode: str = 'max'
) -> checkpointing.Checkpointer:
  """The workdir's checkpoints (latest `keep` + the best by `best_metric`)."""
  return checkpointing.Checkpointer(
    os.path.join(workdir, CHECKPOINT_DIR),
    keep=keep,
    best_metric=best_metric,
    best_mode=best_mode,
  )


# ----------------------------------------------------------------------------
# The run's records.
# ----------------------------------------------------------------------------


def write_records(
  workdir: str,
  config: ml_collections.ConfigDict,
  description: Dict[str, Any],
  train_info: Dict[str, Any],
) -> None:
  """Writes config.json, model.json and data_info.json (process 0 only).

  Called once the run's state exists, so that a start refused for any
  reason leaves the workdir as it was.
  """
  if jax.process_index() != 0:
    return
  write_json_atomic(os.path.join(workdir, CONFIG_FILE), config.to_dict())
  write_json_atomic(os.path.join(workdir, MODEL_FILE), description)
  write_json_atomic(
    os.path.join(workdir, DATA_INFO_FILE),
    {
      'label_names': list(train_info.get('label_names') or []),
      'text_fields': list(train_info.get('text_fields') or []),
      'num_examples': int(train_info['num_examples']),
      'source': config.data.source,
    },
  )


def append_metrics(workdir: str, record: Dict[str, Any]) -> None:
  """Appends one record (with 'step') to metrics.jsonl (process 0 only)."""
  if jax.process_index() == 0:
    append_jsonl(os.path.join(workdir, METRICS_FILE), record)


def read_metrics(workdir: str) -> List[Dict[str, Any]]:
  """Every record of metrics.jsonl, in order ([] if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    lines = f.read().splitlines()
  records = []
  for line_no, line in enumerate(lines, start=1):
    if line.strip():
      record = json_value(line, f'{path}, line {line_no},')
      if not isinstance(record, dict):
        raise ValueError(
          f'{path}, line {line_no}: expected a JSON object, got '
          f'{type(record).__name__}.'
        )
      records.append(record)
  return records


def last_eval_records(workdir: str) -> Dict[str, Dict[str, Any]]:
  """Split -> the last metrics.jsonl line with eval metrics for it.

  Lines written by the training loop carry no 'split' (they are the
  config's eval split, keyed ''); `evaluate` lines name theirs.
  """
  records = {}
  for record in read_metrics(workdir):
    if any(k.startswith('eval_') for k in record):
      records[record.get('split', '')] = record
  return records


def find_runs(root: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
  """(workdir, its config.json as a dict) of every run under `root`."""
  for path in sorted(
    glob.glob(os.path.join(root, '**', CONFIG_FILE), recursive=True)
  ):
    yield os.path.dirname(path), read_json(path)


# ----------------------------------------------------------------------------
# Reading a workdir back (evaluate, predict, init_from=workdir:).
# ----------------------------------------------------------------------------


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The experiment config a training run saved in `workdir`.

  Raises:
    FileNotFoundError: no config.json.
    ValueError: config.json is not an experiment config (e.g. the folder is
      a converted or HuggingFace checkpoint), naming what to pass instead.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} not found: {workdir!r} is not a workdir written by '
      'experiments.train (expected config.json and checkpoints/ in it).'
    )
  try:
    saved = read_json(path)
  except ValueError as e:
    raise ValueError(
      f'{str(e).rstrip(".")}; {workdir!r} is not a '
      'readable workdir of experiments.train.'
    ) from None
  problem = not_a_run_config(saved, workdir)
  if problem:
    raise ValueError(problem)
  try:
    return ml_collections.ConfigDict(saved)
  except (ValueError, AttributeError, TypeError) as e:  # E.g. a dotted key.
    raise ValueError(
      f'{path} is not a usable experiment config ({e}).'
    ) from None


def not_a_run_config(saved: Any, workdir: str) -> Optional[str]:
  """None if `saved` (a config.json) is an experiment config, else why not.

  Why: three kinds of folder hold a config.json. A training workdir's has
  the experiment fields ('task', 'model', 'data'); `perceiver_io.convert` /
  `checkpoints.save` write the model config ('encoder', 'decoder', ...);
  HuggingFace's save_pretrained writes 'model_type'. The last two load as
  pretrained weights (init_from), not as a workdir.
  """
  if (
    isinstance(saved, dict)
    and all(isinstance(saved.get(k), dict) for k in ('model', 'data'))
    and ('task' in saved)
  ):
    return None
  usage = (
    'use --config=configs/<family>.py[:<variant>] '
    '--config.init_from={kind}:{dir} instead of --workdir (or of '
    'init_from=workdir:)'
  )
  if isinstance(saved, dict) and 'encoder' in saved and 'decoder' in saved:
    return (
      f'{workdir} is a perceiver_io checkpoint (perceiver_io.convert / '
      'checkpoints.save output), not a training workdir; '
      + usage.format(kind='dir', dir=workdir)
      + '.'
    )
  if isinstance(saved, dict) and 'model_type' in saved:
    return (
      f'{workdir} is a HuggingFace checkpoint (save_pretrained '
      f'layout, model_type {saved["model_type"]!r}), not a training '
      'workdir; ' + usage.format(kind='hf', dir=workdir) + '.'
    )
  return (
    f'{os.path.join(workdir, CONFIG_FILE)} is not an '
    'experiment config (no task/model/data fields): '
    f'{workdir!r} is not a workdir written by experiments.train.'
  )


def read_data_info(workdir: str) -> Dict[str, Any]:
  """data_info.json ({} for runs written before it existed)."""
  path = os.path.join(workdir, DATA_INFO_FILE)
  info = read_json(path) if os.path.exists(path) else {}
  if not isinstance(info, dict):
    raise ValueError(
      f'{path} holds a JSON {type(info).__name__}, expected an object '
      '(label names, text fields, size of the training data).'
    )
  return info


def choose_step(ckpt: checkpointing.Checkpointer, which: str) -> int:
  """'latest', 'best' or a step number -> an existing checkpoint step."""
  steps = ckpt.all_steps()
  if not steps:
    raise FileNotFoundError(
      f'no checkpoints in {ckpt.directory}; train '
      'first (python -m experiments.train ...).'
    )
  if which in ('', 'latest'):
    return max(steps)
  if which == 'best':
    best = ckpt.best_step()
    return best if best is not None else max(steps)
  if not str(which).isdigit() or int(which) not in steps:
    raise ValueError(
      f'checkpoint step {which!r} not in {ckpt.directory}; '
      f'available: latest, best, {sorted(steps)}.'
    )
  return int(which)


def newest_intact_variables(
  ckpt: checkpointing.Checkpointer, abstract: PyTree
) -> Tuple[int, PyTree]:
  """(step, variables) of the newest step that reads, naming the others.

  Why not refuse: the newest step may be corrupt (a disk fault) or gone
  mid-read (a running training keeps only the latest few); the one before
  is a trained model too. `--checkpoint=N` still reads exactly step N.
  """
  bad = []

  def skip(error: checkpointing.CorruptCheckpointError) -> None:
    bad.append(error.step)
    logging.warning(
      'checkpoint step %d in %s cannot be read (%s); using the newest '
      'step that reads (--checkpoint=N picks one).',
      error.step,
      ckpt.directory,
      error.cause,
    )

  step, state = ckpt.restore_newest_intact(
    lambda s: ckpt.restore_variables(s, abstract), skip
  )
  if step is None:
    raise checkpointing.CorruptCheckpointError(
      f'no checkpoint step in {ckpt.directory} can be read ({bad} are '
      'corrupt or truncated); train again in a new --workdir.'
    )
  return step, state


class Run(NamedTuple):
  """A trained model read back from a workdir (or imported by init_from)."""

  model: Any  # The flax module.
  variables: PyTree  # {'params': ..., other collections}.
  config: ml_collections.ConfigDict
  step: int  # The checkpoint's step (0 for imported checkpoints).
  model_config: Dict[str, Any]  # The perceiver_io config of the model.
  # What the task needs to name its outputs: 'label_names' (config's, else
  # data_info.json's, else '0', '1', ...), 'text_fields' (data_info.json).
  info: Dict[str, Any]


def _model_of(config, saved: Dict[str, Any]):
  """The module that `config` builds if it is the saved one, else the
  saved description's (e.g. evaluating with another config's data)."""
  num_outputs = saved.get('num_outputs') or saved['perceiver'].get(
    'decoder', {}
  ).get('num_classes')
  model, description = models.build(config, num_outputs)
  if json.loads(json.dumps(description)) != saved:
    model = models.build_from_description(saved)
  return model


def _label_names(config, info, saved) -> List[str]:
  names = [n.strip() for n in config.data.label_names.split(',') if n.strip()]
  names = names or list(info.get('label_names') or [])
  count = (
    saved.get('num_outputs')
    or saved['perceiver'].get('decoder', {}).get('num_classes')
    or 0
  )
  return names or [str(i) for i in range(int(count))]


def load_workdir(
  workdir: str,
  which: str = 'latest',
  config: Optional[ml_collections.ConfigDict] = None,
) -> Run:
  """The trained model of `workdir` at checkpoint `which`.

  Only `params` and the other model collections are read, not the
  optimizer state, so a workdir stays usable whatever its optimizer
  settings say.

  Args:
    workdir: a directory written by experiments.train.
    which: 'latest', 'best' or a step number.
    config: use this config (e.g. other eval data) instead of the workdir's
      config.json; the model always comes from the workdir's model.json.
  """
  config = load_config(workdir) if config is None else config
  saved = read_json(os.path.join(workdir, MODEL_FILE))
  model = _model_of(config, saved)
  inputs, kwargs = model_lib.example_inputs(saved['perceiver'])
  shapes = dict(
    jax.eval_shape(
      lambda: model.init(
        jax.random.PRNGKey(0), inputs, deterministic=True, **kwargs
      )
    )
  )
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
    {'params': shapes.pop('params'), 'model_state': shapes},
  )
  ckpt = open_checkpoints(
    workdir,
    keep=1000,
    best_metric=config.best_metric,
    best_mode=config.best_mode,
  )
  try:
    step = choose_step(ckpt, which)
    if which in ('', 'latest'):
      step, state = newest_intact_variables(ckpt, abstract)
    else:
      state = ckpt.restore_variables(step, abstract)
  finally:
    ckpt.close()
  info = read_data_info(workdir)
  info['label_names'] = _label_names(config, info, saved)
  return Run(
    model,
    {'params': state['params'], **state['model_state']},
    config,
    step,
    saved['perceiver'],
    info,
  )
