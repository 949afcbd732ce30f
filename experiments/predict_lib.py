"""Loading a trained workdir and predicting with it (used by predict/evaluate).

Why: a workdir is self-describing (config.json, model.json, data_info.json,
checkpoints/), so prediction needs only its path. Inputs are turned into
model batches per modality: text -> byte ids (classification, regression,
masked-byte filling), images -> the training resolution. New modalities plug
in by adding an entry to `_INPUT_ADAPTERS`.
"""

import collections
import functools
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from experiments import checkpointing
from experiments import input_pipeline
from experiments import models
from perceiver_io import tokenizer as tokenizer_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The experiment config a training run saved in `workdir`.

  Raises:
    FileNotFoundError: no config.json.
    ValueError: config.json is not an experiment config (e.g. the folder is
      a converted or HuggingFace checkpoint), naming what to pass instead.
  """
  path = os.path.join(workdir, checkpointing.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} not found: {workdir!r} is not a workdir written by '
        'experiments.train (expected config.json and checkpoints/ in it).')
  try:
    saved = checkpointing.read_json(path)
  except ValueError as e:  # json.JSONDecodeError
    raise ValueError(f'{path} is not valid JSON ({e}); {workdir!r} is not a '
                     'readable workdir of experiments.train.') from e
  problem = not_a_run_config(saved, workdir)
  if problem:
    raise ValueError(problem)
  return ml_collections.ConfigDict(saved)


def not_a_run_config(saved: Any, workdir: str) -> Optional[str]:
  """None if `saved` (a config.json) is an experiment config, else why not.

  Why: three kinds of folder hold a config.json. A training workdir's has
  the experiment fields ('task', 'model', 'data'); `perceiver_io.convert` /
  `checkpoints.save` write the model config ('encoder', 'decoder', ...);
  HuggingFace's save_pretrained writes 'model_type'. The last two load as
  pretrained weights (init_from), not as a workdir.
  """
  if isinstance(saved, dict) and all(
      isinstance(saved.get(k), dict) for k in ('model', 'data')) and (
          'task' in saved):
    return None
  usage = ('use --config=configs/<family>.py[:<variant>] '
           '--config.init_from={kind}:{dir} instead of --workdir (or of '
           'init_from=workdir:)')
  if isinstance(saved, dict) and 'encoder' in saved and 'decoder' in saved:
    return (f'{workdir} is a perceiver_io checkpoint (perceiver_io.convert / '
            'checkpoints.save output), not a training workdir; ' +
            usage.format(kind='dir', dir=workdir) + '.')
  if isinstance(saved, dict) and 'model_type' in saved:
    return (f'{workdir} is a HuggingFace checkpoint (save_pretrained '
            f'layout, model_type {saved["model_type"]!r}), not a training '
            'workdir; ' + usage.format(kind='hf', dir=workdir) + '.')
  return (f'{os.path.join(workdir, checkpointing.CONFIG_FILE)} is not an '
          'experiment config (no task/model/data fields): '
          f'{workdir!r} is not a workdir written by experiments.train.')


def label_names(workdir: str, config) -> List[str]:
  names = [n.strip() for n in config.data.label_names.split(',') if n.strip()]
  path = os.path.join(workdir, checkpointing.DATA_INFO_FILE)
  if not names and os.path.exists(path):
    names = list(checkpointing.read_json(path).get('label_names') or [])
  if not names:
    names = [str(i) for i in range(models.num_outputs(config))]
  return names


def pair_fields(workdir: str, config) -> Optional[List[str]]:
  """The two text fields of a model trained on sentence pairs, else None.

  Read from data_info.json (the fields training actually read), else from
  config.data.text_fields, else (text_fields '' = the task's own fields) from
  the GLUE task of config.glue_task.
  """
  path = os.path.join(workdir, checkpointing.DATA_INFO_FILE)
  fields = []
  if os.path.exists(path):
    fields = list(checkpointing.read_json(path).get('text_fields') or [])
  if not fields:
    fields = [f.strip() for f in str(config.data.get('text_fields', '')
                                     ).split(',') if f.strip()]
  if not fields and config.get('glue_task'):
    from perceiver_io.data import text as text_data  # pylint: disable=g-import-not-at-top
    glue = text_data.GLUE_TASKS.get(config.glue_task)
    fields = list(glue.text_fields) if glue is not None else []
  return [str(f) for f in fields] if len(fields) == 2 else None


PAIR_USAGE = ('give each input as its two texts: "FIRST" --pair="SECOND" '
              '(one --pair per text argument, in order), or one argument or '
              '--input_file line FIRST<TAB>SECOND (in bash: '
              "$'FIRST\\tSECOND')")


def split_pairs(workdir: str, config, inputs: Sequence[str],
                pairs: Optional[Sequence[Optional[str]]] = None
                ) -> Tuple[List[str], Optional[List[str]], List[str]]:
  """(first texts, second texts or None, shown names) of the inputs.

  A model trained on pairs gets `[CLS] first [SEP] second [SEP]`; fed one
  text it would silently see another input format, so single texts are
  refused for it (and `--pair` for a single-text model).
  """
  pairs = list(pairs) if pairs is not None else [None] * len(inputs)
  fields = pair_fields(workdir, config)
  if fields is None:
    if any(p is not None for p in pairs):
      raise ValueError(f'{workdir} was trained on single texts, not sentence '
                       'pairs; drop --pair.')
    return list(inputs), None, list(inputs)
  firsts, seconds = [], []
  for text, second in zip(inputs, pairs):
    if second is None:
      parts = text.split('\t')
      if len(parts) != 2:
        shown = text if len(text) <= 60 else text[:57] + '...'
        raise ValueError(
            f'{workdir} was trained on sentence pairs ({fields[0]}, '
            f'{fields[1]}) but {shown!r} is '
            + ('a single text' if len(parts) == 1 else
               f'{len(parts)} tab-separated texts') + f'; {PAIR_USAGE}.')
      text, second = parts
    firsts.append(text)
    seconds.append(second)
  return firsts, seconds, [f'{a} [SEP] {b}' for a, b in zip(firsts, seconds)]


def example_inputs(config) -> Dict[str, np.ndarray]:
  """A one-example batch with the shapes the model was trained on."""
  if config.data.source == 'digits':
    size = int(config.data.image_size)
    return {'image': np.zeros((1, size, size, 1), np.float32)}
  length = int(config.data.max_length)
  return {'input_ids': np.zeros((1, length), np.int32),
          'attention_mask': np.ones((1, length), np.int32)}


def abstract_variables(config, model, example, sharding=None):
  """ShapeDtypeStructs of the checkpointed `params` and `model_state` (the
  training state without its step and optimizer state)."""
  from experiments import train_lib  # pylint: disable=g-import-not-at-top
  variables = dict(jax.eval_shape(functools.partial(
      train_lib.init_variables, model, example, int(config.seed))))
  tree = {'params': variables.pop('params'), 'model_state': variables}
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


def choose_step(ckpt: checkpointing.Checkpointer, which: str) -> int:
  """'latest', 'best' or a step number -> an existing checkpoint step."""
  steps = ckpt.all_steps()
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {ckpt.directory}; train '
                            'first (python -m experiments.train ...).')
  if which in ('', 'latest'):
    return max(steps)
  if which == 'best':
    best = ckpt.best_step()
    return best if best is not None else max(steps)
  if not str(which).isdigit() or int(which) not in steps:
    raise ValueError(f'checkpoint step {which!r} not in {ckpt.directory}; '
                     f'available: latest, best, {sorted(steps)}.')
  return int(which)


def load_workdir(workdir: str, which: str = 'latest',
                 config: Optional[ml_collections.ConfigDict] = None
                 ) -> Tuple[Any, Dict[str, Any], ml_collections.ConfigDict,
                            int]:
  """(model, variables, config, step) of a trained workdir.

  Args:
    workdir: a directory written by experiments.train.
    which: 'latest', 'best' or a step number.
    config: use this config (e.g. other eval data) instead of the workdir's
      config.json; the model always comes from the workdir's model.json.
  """
  config = load_config(workdir) if config is None else config
  model, description = models.build(config)
  saved = checkpointing.read_json(
      os.path.join(workdir, checkpointing.MODEL_FILE))
  if json.loads(json.dumps(description)) != saved:
    model = models.build_from_description(saved)
  ckpt = checkpointing.Checkpointer(workdir, keep=1000,
                                    best_metric=config.best_metric,
                                    best_mode=config.best_mode)
  try:
    step = choose_step(ckpt, which)
    task_object = _task(config, model)
    example = (task_object.example_batch() if task_object is not None
               else example_inputs(config))
    state = ckpt.restore_variables(step,
                                   abstract_variables(config, model, example))
  finally:
    ckpt.close()
  variables = {'params': state['params'], **state['model_state']}
  return model, variables, config, step


def _task(config, model):
  from experiments import train_lib  # pylint: disable=g-import-not-at-top
  return train_lib.get_task(config, getattr(model, 'config', None))


def load_variables_from_workdir(workdir: str):
  """Just the variables (for `init_from=workdir:<dir>`)."""
  return load_workdir(workdir)[1]


# ----------------------------------------------------------------------------
# Inputs -> batches.
# ----------------------------------------------------------------------------


def text_batch(texts: Sequence[str], config,
               pairs: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
  table = input_pipeline.tokenize_texts(list(texts), None if pairs is None
                                        else list(pairs),
                                        int(config.data.max_length), 'inputs')
  table.pop('num_truncated')
  return table


def digits_image(path: str, size: int = 8) -> np.ndarray:
  """An image file -> [size, size, 1] in [0, 1], dark ink on light paper
  inverted to match scikit-learn's digits (bright ink on black)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'image file {path!r} not found (or not a '
                            'file).')
  try:
    with Image.open(path) as opened:
      img = opened.convert('L').resize((size, size), Image.BILINEAR)
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises UnidentifiedImageError, OSError or ValueError by format.
    raise ValueError(f'{path} is not an image file Pillow can read ({e}); '
                     'this digits model takes image files (PNG, JPEG, ...) '
                     'or --digits=a:b.') from e
  x = np.asarray(img, np.float32) / 255.0
  if x.mean() > 0.5:  # Light background: invert.
    x = 1.0 - x
  return x[..., None]


def image_batch(paths: Sequence[str], config) -> Dict[str, np.ndarray]:
  if config.data.source == 'digits':
    images = [digits_image(p, int(config.data.image_size)) for p in paths]
  else:
    from perceiver_io.data import image as image_data  # pylint: disable=g-import-not-at-top
    images = [image_data.eval_preprocess_numpy(
        image_data.load_image_numpy(p), int(config.data.image_size))
              for p in paths]
  return {'image': np.stack(images).astype(np.float32)}


def predict_batch(model, variables, batch) -> np.ndarray:
  """The model's outputs for one batch, as one compiled call.

  Why jit: run eagerly, every op of the forward pass compiled on its own
  (the quickstart's five eval predictions: 130 small compiles, ~4 s on the
  2-core dev machine, against one compile under `jax.jit`).
  """
  return np.asarray(_jitted_forward(model)(variables, batch))


_FORWARDS = collections.OrderedDict()  # id(model) -> (model, jitted forward)


def _jitted_forward(model):
  """The jitted forward of `model`, kept for the last few models so that
  repeated calls with one model reuse its compiled executables (our models
  hold a dict config, so they cannot be jit's hashable static argument)."""
  from experiments import train_lib  # pylint: disable=g-import-not-at-top
  hit = _FORWARDS.get(id(model))
  if hit is None or hit[0] is not model:
    hit = (model, jax.jit(lambda v, b: train_lib.apply_model(
        model, v, b, train=False)[0]))
    _FORWARDS[id(model)] = hit
    while len(_FORWARDS) > 4:
      _FORWARDS.popitem(last=False)
  return hit[1]


def classify(model, variables, batch, names: Sequence[str], top_k: int = 1
             ) -> List[List[Tuple[str, float]]]:
  """Top-k (label, probability) per example."""
  logits = predict_batch(model, variables, batch).astype(np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1)[:, :top_k]
  return [[(names[j] if j < len(names) else str(j), float(p[j])) for j in row]
          for row, p in zip(order, probs)]


def fill_masks(model, variables, texts: Sequence[str], config
               ) -> List[str]:
  """Replaces every [MASK] byte of each text with the model's best byte."""
  tok = tokenizer_lib.ByteTokenizer()
  batch = text_batch(texts, config)
  logits = predict_batch(model, variables, batch)
  out = []
  for ids, mask, row_logits in zip(batch['input_ids'], batch['attention_mask'],
                                   logits):
    ids = ids.copy()
    masked = ids == tokenizer_lib.MASK_ID
    ids[masked] = np.argmax(row_logits[masked], axis=-1)
    out.append(tok.decode(ids[mask.astype(bool)], skip_special_tokens=True))
  return out


def render_digit(image: np.ndarray) -> List[str]:
  """8x8 image in [0, 1] -> ASCII art lines."""
  shades = ' .:-=+*#%@'
  img = np.asarray(image)[..., 0]
  return [''.join(shades[min(int(v * (len(shades) - 1) + 0.5),
                             len(shades) - 1)] * 2 for v in row)
          for row in img]


def print_eval_predictions(result: Dict[str, Any], config, n: int) -> None:
  """Prints the first `n` eval examples' predictions after training."""
  if jax.process_index() != 0 or config.task != 'classification':
    return
  table = result['eval_table']
  n = min(n, len(next(iter(table.values()))))
  state = result['state']
  tree = {'params': state['params'], **state['model_state']}
  if not all(x.is_fully_addressable or x.is_fully_replicated
             for x in jax.tree_util.tree_leaves(tree)):
    print('(predictions skipped: parameters are sharded across processes; '
          'run experiments.predict on the workdir.)')
    return
  variables = jax.device_get(tree)
  tokenizer = tokenizer_lib.ByteTokenizer()
  batch = {k: v[:n] for k, v in table.items() if k != 'label'}
  names = list(result['eval_info'].get('label_names') or []) or [
      str(i) for i in range(int(config.data.num_classes))]
  preds = classify(result['model'], variables, batch, names)
  print(f'Predictions for the first {n} test examples:')
  for i, ((label, prob),) in enumerate(preds):
    true = names[int(table['label'][i])]
    mark = 'correct' if label == true else 'WRONG'
    if 'image' in table:
      art = render_digit(table['image'][i])
      print('\n'.join('    ' + line for line in art))
    else:
      text = tokenizer.decode(table['input_ids'][i], skip_special_tokens=True)
      print(f'  text: {text[:80]!r}')
    print(f'  example {i}: predicted {label} (p={prob:.3f}), true {true} '
          f'[{mark}]')


def _digits_range(spec: str, config) -> Tuple[Dict[str, np.ndarray],
                                               np.ndarray]:
  a, _, b = spec.partition(':')
  try:
    start, stop = int(a or 0), int(b or int(a or 0) + 1)
  except ValueError:
    raise ValueError(f"--digits must look like '0:5', got {spec!r}.") from None
  table, _ = input_pipeline.load_digits_table(config.data.eval_split)
  if not 0 <= start < stop <= len(table['label']):
    raise ValueError(f'--digits {spec!r} is outside the {len(table["label"])} '
                     'test digits.')
  return ({'image': table['image'][start:stop]}, table['label'][start:stop])


def predict_lines(workdir: str, inputs: Sequence[str], which: str = 'latest',
                  top_k: int = 1, digits: str = '', config=None,
                  pairs: Optional[Sequence[Optional[str]]] = None,
                  **options) -> List[str]:
  """Human-readable predictions of a workdir's model for `inputs`.

  Args:
    workdir: a trained workdir.
    inputs: texts (text models) or image paths (image models).
    which: checkpoint: 'latest', 'best' or a step.
    top_k: labels per input (classification).
    digits: digits workdirs: 'a:b' predicts test digits a..b-1.
    config: a config to use instead of the workdir's config.json.
    pairs: text-pair models: the second text of each input (None entries:
      that input holds both, as FIRST<TAB>SECOND). Pair models refuse
      single texts; single-text models refuse pairs.
    **options: passed to a task object's `predict_lines` (e.g.
      class_names, output).

  Returns:
    One or more lines per input.
  """
  model, variables, config, step = load_workdir(workdir, which, config)
  task_object = _task(config, model)
  if pairs is not None and any(p is not None for p in pairs) and (
      task_object is not None or config.task == 'mlm'):
    raise ValueError('--pair is for text models trained on sentence pairs; '
                     f'{workdir} is not one.')
  if task_object is not None:
    task_object.label_names = label_names(workdir, config)
    return [f'# {workdir} (checkpoint step {step})'] + (
        task_object.predict_lines(model, variables, list(inputs),
                                  top_k=top_k, **options))
  is_image = config.data.source == 'digits' or 'image' in example_inputs(
      config)
  lines = [f'# {workdir} (checkpoint step {step})']
  truth = None
  if is_image:
    if digits:
      batch, truth = _digits_range(digits, config)
      names_in = [f'test digit {i}' for i in range(
          int(digits.partition(':')[0] or 0),
          int(digits.partition(':')[0] or 0) + len(truth))]
    else:
      if not inputs:
        raise ValueError('give image files (or --digits=a:b) to predict.')
      batch, names_in = image_batch(inputs, config), list(inputs)
  else:
    if not inputs:
      raise ValueError('give texts as arguments or --input_file=FILE.')
    names_in = list(inputs)
    if config.task != 'mlm':
      texts, seconds, names_in = split_pairs(workdir, config, inputs, pairs)
  if config.task == 'mlm':
    for text, filled in zip(inputs, fill_masks(model, variables, inputs,
                                               config)):
      lines.append(f'{text!r} -> {filled!r}')
    return lines
  if not is_image:
    batch = text_batch(texts, config, seconds)
  if config.task == 'regression':
    scores = predict_batch(model, variables, batch).reshape(-1)
    for name, score in zip(names_in, scores):
      lines.append(f'{score:.3f}\t{name}')
    return lines
  names = label_names(workdir, config)
  results = classify(model, variables, batch, names, top_k=max(top_k, 1))
  for i, (name, result) in enumerate(zip(names_in, results)):
    labels = ', '.join(f'{label} (p={prob:.3f})' for label, prob in result)
    shown = name if len(name) <= 80 else name[:77] + '...'
    extra = f'  [true: {names[int(truth[i])]}]' if truth is not None else ''
    if is_image and digits:
      lines += ['    ' + row for row in render_digit(batch['image'][i])]
    lines.append(f'{labels}\t{shown}{extra}')
  return lines
