"""Perceiver AR: long-context autoregressive byte modelling and generation.

Why one task for text and the copy task: both are next-token prediction on
rows of N + 1 tokens (`perceiver_io.data.text.lm`), scored on the M latents
only (`perceiver_io.ar.loss`, with the config's z-loss); they differ only
in where rows come from (`data.source`: ``text:GLOB``, ``tfds:pg19``,
``tfds:wiki40b/en`` or ``random_mirrored``). Metrics: the loss in nats per
token (a token is a byte), bits per byte, perplexity, next-token accuracy,
and on the copy task the accuracy on the copied (mirrored) half. Predict
continues prompts with `perceiver_io.ar.generate` and streams the text.
"""

import codecs
import logging
import math
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import input_pipeline
from experiments import metrics
from experiments.tasks import base
from perceiver_io import ar
from perceiver_io.data.text import lm
from perceiver_io.data.text import lm_sources
from perceiver_io.data.text import mirrored


class Task(base.Task):
  """Next-token prediction on the latents of Perceiver AR."""

  eval_unit = 'window'
  predict_args = "--prompt='ROMEO:' --max_new_tokens=200"

  def num_outputs(self) -> Optional[int]:
    return None

  def use_model(self, model_config: Dict[str, Any]) -> None:
    super().use_model(model_config)
    if model_config.get('family') != 'perceiver_ar':
      raise ValueError(
        "task 'perceiver_ar' needs a Perceiver AR model (config.model."
        "preset='perceiver_ar' or 'tiny_perceiver_ar'), not "
        f'{self.config.model.preset!r}.'
      )
    self.n = int(model_config['max_context'])
    self.m = int(model_config['num_latents'])
    self.kind, self.path = lm_sources.source_kind(self.config.data.source)
    if self.kind == 'random_mirrored':
      mirrored.check_half(self.half, self.n, self.m)

  @property
  def half(self) -> int:
    return int(self.config.data.mirrored_half)

  # ------------------------------------------------------------------ data --

  def _process(self):
    return dict(
      process_index=jax.process_index(), process_count=jax.process_count()
    )

  def _stream(self, split: str) -> np.ndarray:
    return lm_sources.read_text_stream(self.path, split)

  def data_info(self):
    data, n, m = self.config.data, self.n, self.m
    if self.config.num_train_steps <= 0:
      raise ValueError(
        'Perceiver AR runs are sized in steps: set config.num_train_steps > 0.'
      )
    if self.kind == 'random_mirrored':
      summary = (
        f'random_mirrored: 2 x {self.half} random bytes per row, N={n}, '
        f'M={m}; eval {int(data.mirrored_eval_rows)} held-out rows'
      )
      return (
        {'num_examples': -1, 'summary': summary},
        {'num_examples': int(data.mirrored_eval_rows)},
      )
    if self.kind == 'text':
      if data.train_split == data.eval_split:
        raise ValueError(
          f'data.eval_split={data.eval_split!r} is the training split; '
          "evaluate on held-out text (e.g. train_split='train[:90%]', "
          "eval_split='train[90%:]')."
        )
      input_pipeline.check_eval_is_not_train(self.config)
      train = len(self._stream(data.train_split))
      held = len(self._stream(data.eval_split))
      windows = math.ceil((held - 1) / m)
      summary = (
        f'byte LM on text:{self.path}: {train:,} train bytes '
        f'[{data.train_split}], {held:,} eval bytes [{data.eval_split}] in '
        f'{windows} windows of N={n} scoring M={m}'
      )
      return (
        {'num_examples': -1, 'summary': summary},
        {'num_examples': windows},
      )
    lm_sources.tfds_documents(
      self.path, data.train_split, data_dir=data.data_dir or None
    )
    summary = f'byte LM on tfds:{self.path} [{data.train_split}], N={n}, M={m}'
    return {'num_examples': -1, 'summary': summary}, {'num_examples': -1}

  def example_batch(self) -> Dict[str, np.ndarray]:
    return {
      'inputs': np.zeros((1, self.n), np.int32),
      'targets': np.zeros((1, self.m), np.int32),
      'target_weights': np.ones((1, self.m), np.float32),
      'weight': np.ones(1, np.float32),
    }

  def train_stream(self, start_step: int):
    c, data = self.config, self.config.data
    if self.kind == 'random_mirrored':
      return mirrored.MirroredTrainRows(
        self.half, self.n, self.m, int(c.batch_size), int(c.seed),
        **self._process(), crop=bool(data.mirrored_crop),
      )  # fmt: skip
    if self.kind == 'text':
      return lm.TrainWindows(
        self._stream(data.train_split),
        self.n,
        self.m,
        int(c.batch_size),
        int(c.seed),
        **self._process(),
      )
    return lm_sources.TfdsTrainWindows(
      self.path,
      data.train_split,
      max_context=self.n,
      num_latents=self.m,
      batch_size=int(c.batch_size) // jax.process_count(),
      start_step=start_step,
      seed=int(c.seed),
      data_dir=data.data_dir or None,
      **self._process(),
    )

  def eval_data(self):
    c, data = self.config, self.config.data
    batch, limit = int(c.eval_batch_size), int(c.max_eval_examples)
    if self.kind == 'random_mirrored':
      count = int(data.mirrored_eval_rows)
      count = min(count, limit) if limit > 0 else count
      rows = mirrored.mirrored_eval_batches(
        self.half, self.n, self.m, count, batch, int(c.seed),
        **self._process(),
      )  # fmt: skip
      return rows, count
    if self.kind == 'text':
      stream = self._stream(data.eval_split)
    else:
      stream = lm_sources.tfds_eval_stream(
        self.path,
        data.eval_split,
        limit_bytes=int(data.eval_bytes),
        data_dir=data.data_dir or None,
      )
    windows = lm.eval_windows(stream, self.n, self.m)
    count = len(windows['inputs'])
    count = min(count, limit) if limit > 0 else count
    return lm.batches(windows, batch, limit=limit, **self._process()), count

  def eval_data_description(self) -> str:
    if self.kind == 'random_mirrored':
      return f'{int(self.config.data.mirrored_eval_rows)} held-out rows'
    return f'split {self.config.data.eval_split} (every byte scored once)'

  # ----------------------------------------------------- traced functions --

  def model_inputs(self, batch):
    return batch['inputs'], {}

  def loss_fn(self, outputs, batch):
    weight = batch['weight'].astype(jnp.float32)
    total, count = ar.loss(
      outputs,
      batch['targets'],
      batch['target_weights'],
      z_loss=float(self.model_config.get('z_loss', 0.0)),
    )
    return total * weight, count * weight

  def eval_outputs(self, outputs, batch):
    weights = batch['target_weights'] * batch['weight'][:, None]
    total, count = ar.loss(outputs, batch['targets'], weights)
    correct = (jnp.argmax(outputs, -1) == batch['targets']) * weights
    out = {
      'loss': total,
      'loss_weight': count,
      'correct': jnp.sum(correct, -1),
      'weight': batch['weight'].astype(jnp.float32),
    }
    if 'copied' in batch:
      out['copied_correct'] = jnp.sum(correct * batch['copied'], -1)
      out['copied_weight'] = jnp.sum(weights * batch['copied'], -1)
    return out

  # ------------------------------------------------------------------ host --

  def summarize(self, gathered):
    result = metrics.loss_summary(gathered)
    keep = gathered['weight'] > 0
    tokens = float(np.sum(gathered['loss_weight'][keep]))
    result['tokens'] = int(tokens)
    result['bits_per_byte'] = result['loss'] / math.log(2.0)
    result['perplexity'] = float(np.exp(min(result['loss'], 50.0)))
    result['accuracy'] = float(
      np.sum(gathered['correct'][keep]) / max(tokens, 1e-9)
    )
    if 'copied_correct' in gathered:
      result['copied_accuracy'] = float(
        np.sum(gathered['copied_correct'][keep])
        / max(float(np.sum(gathered['copied_weight'][keep])), 1e-9)
      )
    return result

  def predict_lines(
    self,
    model,
    variables,
    inputs: Sequence[str],
    *,
    name: str = '',
    pairs: Optional[Sequence[Optional[str]]] = None,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stream=None,
    **unused,
  ) -> List[str]:
    """Continues each prompt; with one prompt the text streams to `stream`
    (stdout) as it is generated, and the lines say how fast it went."""
    base.refuse_pairs(pairs, name)
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    if not inputs:
      raise ValueError('give a prompt: --prompt="..." (or as an argument).')
    prompts = [self.prompt_ids(text, i) for i, text in enumerate(inputs)]
    out = stream if stream is not None else sys.stdout
    printer = StreamPrinter(out) if len(prompts) == 1 else None
    if printer:
      out.write(inputs[0])
      out.flush()
    start = time.perf_counter()
    generated = ar.generate(
      model,
      variables['params'],
      prompts,
      max_new_tokens=int(max_new_tokens),
      rng=jax.random.PRNGKey(int(seed)),
      temperature=float(temperature),
      top_k=int(top_k),
      top_p=float(top_p),
      eos_id=lm.EOS_ID,
      on_token=printer,
    )
    seconds = time.perf_counter() - start
    count = sum(len(g) for g in generated)
    rate = f'{count} tokens in {seconds:.1f} s ({count / seconds:.1f}/s)'
    if printer:
      printer.finish()
      return [f'# {rate}']
    lines = [
      f'{text!r} -> {lm.decode_ids(ids).decode("utf-8", "replace")!r}'
      for text, ids in zip(inputs, generated)
    ]
    return lines + [f'# {rate}']

  def prompt_ids(self, text, index: int = 0) -> List[int]:
    """A prompt's UTF-8 bytes as ids (undecodable bytes from the command
    line are kept as the bytes they were), the last N if longer."""
    data = text if isinstance(text, bytes) else prompt_bytes(text)
    if not data:
      raise ValueError(
        f'prompt {index + 1} is empty: give some text to continue.'
      )
    ids = lm.encode_bytes(data)
    if len(ids) > self.n:
      logging.warning(
        'prompt %d has %d bytes, more than the model context N=%d: the '
        'first %d are dropped.',
        index + 1,
        len(ids),
        self.n,
        len(ids) - self.n,
      )
      ids = ids[-self.n :]
    return [int(i) for i in ids]


def prompt_bytes(text: str) -> bytes:
  """A command-line string as bytes: undecodable bytes (surrogate escapes)
  become the raw bytes again."""
  return text.encode('utf-8', 'surrogateescape')


def check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
  """One line per bad sampling option, with its valid range."""
  if int(max_new_tokens) < 1:
    raise ValueError(f'--max_new_tokens={max_new_tokens}: must be >= 1.')
  if not float(temperature) >= 0.0:
    raise ValueError(
      f'--temperature={temperature}: must be >= 0 (0 = greedy, 1 = the '
      "model's distribution)."
    )
  if not 0.0 < float(top_p) <= 1.0:
    raise ValueError(
      f'--top_p={top_p}: must be in (0, 1] (1 = no nucleus filtering).'
    )
  if int(top_k) < 0:
    raise ValueError(f'--top_k={top_k}: must be >= 0 (0 = no top-k).')


class StreamPrinter:
  """`on_token` callback that writes each new byte as text, decoding UTF-8
  across tokens (a character of several bytes prints once complete)."""

  def __init__(self, out):
    self.out = out
    self.decoder = codecs.getincrementaldecoder('utf-8')('replace')

  def __call__(self, step, tokens):
    del step
    token = int(np.asarray(tokens).reshape(-1)[0])
    if token < 0:  # The row has stopped (EOS).
      return
    self.out.write(self.decoder.decode(lm.decode_ids([token])))
    self.out.flush()

  def finish(self):
    self.out.write(self.decoder.decode(b'', final=True) + '\n')
    self.out.flush()
