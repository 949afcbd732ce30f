"""Shared config vocabulary, so every family has the same fields.

Why: the runner (`experiments/train_lib.py`) reads one fixed set of field
names; each family module only changes values. Keeping the defaults in one
place means a new family is a few lines, and a typo in an override fails
(the configs are locked by the launcher) with the names that do exist.

`parse_arg('tiny,task=cola')` turns the text after `:` in
`--config=configs/x.py:<arg>` into typed fields (big_vision habit).
"""

import os
from typing import Any, Dict

import ml_collections

# A few KB of hand-written examples (configs/fixtures/, shipped with the
# package) for the tiny variants, so that each runs offline on a fresh clone
# without a TFDS download.
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def parse_arg(arg: str, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses 'a,b=1,c=x' into a ConfigDict with typed values.

  Args:
    arg: comma-separated items; a bare name sets a boolean default to True,
      or, if the first item and no boolean default has that name, sets the
      first field of `defaults` (e.g. the variant or task name).
    **defaults: field name -> default value; the type of the default decides
      how a value is parsed (bool: true/false/1/0, int, float, str).

  Returns:
    A ConfigDict with one field per default.

  Raises:
    ValueError: an unknown field or a badly typed value, naming valid fields.
  """
  result = dict(defaults)
  first_field = next(iter(defaults)) if defaults else None
  items = [item.strip() for item in (arg or '').split(',') if item.strip()]
  for i, item in enumerate(items):
    if '=' in item:
      key, value = item.split('=', 1)
    elif isinstance(defaults.get(item), bool):
      key, value = item, 'true'
    elif i == 0 and first_field is not None:
      key, value = first_field, item
    else:
      raise ValueError(
        f'config argument {item!r} is not one of the fields '
        f'{sorted(defaults)} (write field=value).'
      )
    key = key.strip()
    if key not in defaults:
      raise ValueError(
        f'unknown config argument {key!r}; valid arguments: {sorted(defaults)}.'
      )
    result[key] = _parse_value(key, value.strip(), defaults[key])
  return ml_collections.ConfigDict(result)


def _parse_value(key: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    lowered = text.lower()
    if lowered not in ('true', 'false', '1', '0'):
      raise ValueError(f'config argument {key}={text!r} must be true/false.')
    return lowered in ('true', '1')
  try:
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
  except ValueError:
    raise ValueError(
      f'config argument {key}={text!r} must be a {type(default).__name__}.'
    ) from None
  return text


def base_config() -> ml_collections.ConfigDict:
  """All fields the runner reads, with neutral defaults (one comment each)."""
  c = ml_collections.ConfigDict()
  # A module of experiments/tasks/: 'classification' | 'regression'
  # (STS-B) | 'mlm' (masked bytes) | 'image_classification' | 'optical_flow'.
  c.task = 'classification'
  c.glue_task = ''  # GLUE task name (evaluate summary)
  c.seed = 0  # initialisation, data order, masks, dropout
  # Model: a perceiver_io preset plus its keyword arguments.
  c.model = ml_collections.ConfigDict()
  c.model.preset = 'tiny_text_classification'  # perceiver_io.presets name
  c.model.kwargs = ml_collections.ConfigDict()
  c.model.dtype = 'float32'  # compute dtype; params stay float32
  c.model.remat = False  # rematerialise latent layers
  # What a rematerialised layer keeps: 'nothing', 'dots' (every matrix
  # product's output) or 'dots_no_batch' (the weight products' only).
  c.model.remat_policy = 'nothing'
  # Run the latent stack as nn.scan over stacked parameters: compiles one
  # layer instead of all; another parameter layout (fixed for a workdir).
  c.model.scan_layers = False
  # Decode output queries in chunks of this many (bounded memory for large
  # query sets: flow's one query per pixel); 0 = all at once.
  c.model.query_chunk_size = 0
  # Kernels (perceiver_io/kernels/): 'auto' = the fastest of the backend
  # (CPU: custom-gradient kernels; GPU: XLA's fused attention), 'cudnn'
  # (GPU, bf16: cuDNN flash attention where it applies; as 'auto'
  # elsewhere), 'xla' (the library's default: plain autodiff), 'einsum'.
  c.model.attention_impl = 'auto'
  c.model.dropout_rate = 0.0  # encoder dropout (official: 0)
  c.model.in_channels = 0  # image channels; 0 = the preset's (3)
  # '' = the preset's own decoder; 'tanh_mlp' = decoder output of
  # head_hidden channels -> tanh -> Dense(num_classes) (paper Table 13).
  c.model.head = ''
  c.model.head_hidden = 0  # 0 = the latent width
  # Start from pretrained weights: '' | 'hf:<dir or hub id>' |
  # 'haiku:<pickle>' | 'workdir:<dir>'. Missing/mismatched params are
  # initialised fresh and logged.
  c.init_from = ''
  # Data.
  c.data = ml_collections.ConfigDict()
  # 'digits' or <kind>:<name or path>, kind in tfds, csv, tsv, jsonl,
  # aclimdb (MLM: also text); a path may hold {split}.
  c.data.source = 'digits'
  c.data.train_split = 'train'  # TFDS-style, e.g. 'train[:90%]'
  c.data.eval_split = 'test'  # the split evaluated
  c.data.text_fields = 'text'  # comma-separated columns (pairs: 2)
  c.data.label_field = 'label'  # label column
  c.data.label_names = ''  # comma-separated; '' = from the data
  # TSV/CSV without a header: set False and name columns by index, e.g.
  # CoLA: text_fields='3', label_field='1'.
  c.data.has_header = True
  c.data.num_classes = 2  # classifier outputs
  c.data.max_length = 2048  # bytes incl. [CLS]/[SEP]
  c.data.image_size = 8  # image side in pixels
  c.data.mask_rate = 0.15  # MLM only (whole words, 80/10/10)
  c.data.docs_per_example = 10  # MLM only: documents joined per crop
  c.data.data_dir = ''  # TFDS data_dir ('' = default)
  # Tables: training rows are cut into this many shards; each process reads
  # only its shards, and any process count dividing it trains on the same
  # batches. 0 = the largest divisor of gcd(batch_size, 64) that fits.
  c.data.num_shards = 0
  # Batch and duration (one of num_train_steps / num_epochs; steps wins if
  # > 0).
  c.batch_size = 32  # global, over all devices and hosts
  # The device mesh, data x fsdp (-1 = the rest of the devices): the batch
  # is split over both axes; parameters and optimizer moments over 'fsdp'
  # by a rule per parameter (experiments/partition_rules.py). data=-1,
  # fsdp=1 is pure data parallelism (everything replicated).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  # With fsdp > 1: arrays of fewer elements stay replicated (0: the rules
  # alone decide).
  c.shard_params_min_size = 0
  c.eval_batch_size = 64  # global, for evaluation
  c.num_train_steps = -1  # the run's length if > 0
  c.num_epochs = 1.0  # the run's length if num_train_steps <= 0
  c.label_smoothing = 0.0  # classification targets: (1-s) one-hot + s/C
  # Optimizer (experiments/optim.py).
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adamw'  # 'adamw' | 'lamb' | 'adam' | 'sgd'
  c.optimizer.learning_rate = 1e-3  # peak (the schedule scales it)
  c.optimizer.weight_decay = 0.0  # decoupled, as in AdamW / LAMB
  c.optimizer.b1 = 0.9  # decay of the first moment (Adam family)
  c.optimizer.b2 = 0.999  # decay of the second moment (Adam family)
  c.optimizer.eps = 1e-6  # added to the second moment's root
  c.optimizer.grad_clip_norm = 1.0  # 0 = no clipping
  c.optimizer.accumulate_steps = 1  # gradient accumulation (MultiSteps)
  c.optimizer.decay_pos_embs = True  # official: position embeddings decay
  c.schedule = ml_collections.ConfigDict()
  # 'constant' | 'constant_cosine' (official) | 'warmup_cosine' |
  # 'warmup_linear' | 'warmup_constant'.
  c.schedule.name = 'constant'
  c.schedule.warmup_steps = 0  # linear warmup (warmup_* schedules)
  c.schedule.constant_fraction = 0.5  # constant_cosine only
  c.schedule.decay_steps = -1  # -1 = the whole run
  c.schedule.end_value = 0.0  # learning rate at the end of the decay
  # Loop.
  c.log_every_steps = 50  # steps per log line and metrics.jsonl record
  c.eval_every_steps = 500  # also evaluates at the end
  c.checkpoint_every_steps = 500  # also saves at the end
  c.keep_checkpoints = 2  # latest N, plus the best one
  # Eval metrics beyond the task's default (comma list from
  # experiments.metrics.GLUE_METRICS keys' values, e.g. 'f1,accuracy'); with a
  # list, 'score' (their mean) is reported too.
  c.eval_metrics = ''
  c.best_metric = 'accuracy'  # eval metric that picks 'best'
  c.best_mode = 'max'  # 'max' or 'min': the best best_metric value
  c.max_eval_examples = -1  # -1 = the whole eval split
  c.progress_bar = True  # tqdm bars (only when stderr is a terminal)
  c.predict_examples = 0  # print N test predictions at the end
  # Refuse a workdir that holds another run's checkpoints (another model,
  # or settings a resume may not change: workdir.RESUMABLE_FIELDS)
  # unless True; the old run is moved aside, never deleted.
  c.overwrite = False
  c.disable_most_optimizations = False  # faster compiles (tests)
  # Where compiled steps are kept so that a restart loads them: 'auto' =
  # JAX_COMPILATION_CACHE_DIR if set, else WORKDIR/compilation_cache; a
  # path; '' = off (experiments/compile_cache.py).
  c.compilation_cache = 'auto'
  return c


def as_dict(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return config.to_dict()
