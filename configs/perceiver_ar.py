r"""Perceiver AR: long-context autoregressive byte modelling (Hawthorne et al.,
ICML 2022) and the paper's copy task.

The model (`perceiver_io.ar`) reads N inputs; its M latents sit on the last
M positions, cross-attend causally into all N and run a causal latent
self-attention stack; the loss is on the latents only. Official recipe
(google-research/perceiver-ar, reference section 3): Adam (0.9, 0.999,
1e-8), learning rate 3e-4 with linear warmup, gradients clipped to norm 1,
no weight decay, z-loss 1e-4, dropout 0.1.

Commands:
  python -m experiments.train --config=configs/perceiver_ar.py:shakespeare_cpu \
      --workdir=/tmp/ar_shakespeare \
      --config.data.source=text:/data/tinyshakespeare/input.txt
  python -m experiments.evaluate --workdir=/tmp/ar_shakespeare
  python -m experiments.predict --workdir=/tmp/ar_shakespeare \
      --prompt="ROMEO:" --max_new_tokens=300 --temperature=0.8 --top_k=40
  python -m experiments.train --config=configs/perceiver_ar.py:mirrored_cpu \
      --workdir=/tmp/ar_mirrored

Variants (`--config=configs/perceiver_ar.py:<variant>`):
  text             byte LM on any local text: data.source=text:GLOB (files
                   joined, each ended by EOS), first 90 % of the bytes
                   train, last 10 % evaluate (or a {split} in the glob).
                   N=2048, M=512, 6 layers of 512 channels (22.6M
                   parameters); meant for a GPU (not run here).
  pg19             TFDS pg19 (prepared in data.data_dir; offline it is one
                   error naming text:GLOB), N=4096, M=1024, 12 layers of
                   1024 (165.3M parameters; not run here). The paper
                   (word-level perplexity with SentencePiece 32k, not
                   bytes): test 28.9, validation 45.9 with 974.6M
                   parameters, 60 layers, ~200k steps x batch 2048 on
                   TPUv2/v3.
  wiki40b          TFDS wiki40b/en, as pg19 (no paper number on it).
  mirrored_cpu     the copy task at 2 x 1,024 bytes, N=2048, M=256, 1 layer
                   of 64 channels (0.27M parameters), batch 16: every
                   target is 1,537-2,047 tokens after its source, beyond
                   any window of M tokens. Copied-half accuracy 99.8 % at
                   step 1,500 (chance until step 1,000) in 12 minutes on
                   2 CPU cores shared with other jobs (BUILD_NOTES).
  mirrored_short   the same at 2 x 64, N=128, M=32, 2 layers of 64: targets
                   65-127 tokens after their sources (beyond M): 99.6 %
                   copied-half accuracy at step 1,000 on 2 shared CPU cores
                   (under a minute after a 26 s compile).
  mirrored_paper   the released sweep `random_mirrored_131072`: 2 x 65,536,
                   N=131072, M=1024, 6 layers of 1024, absolute sinusoidal
                   positions (224.0M parameters, as the official sweep),
                   batch 4096, training crops that end in the copied half
                   (the official code; its README names a TPU v3-8). The
                   paper reports it "perfectly" copies over 100k tokens
                   (100 % per secondary sources). Not run here.
  shakespeare_cpu  tiny Shakespeare (first 90 % train, last 10 % validation),
                   N=512, M=128, 4 layers of 192 channels (2.36M
                   parameters), 1,500 steps of batch 16: validation 1.624
                   nats/byte (2.34 bits, accuracy 51.9 %) in 8 min 50 s on
                   2 idle CPU cores (AMD EPYC; 1.841 at step 500, 1.663 at
                   1,000), beside the unigram 3.35 and nanoGPT's 1.47 (A100,
                   3 min) / 1.88 (laptop CPU, 3 min).
  tiny             2 layers of 32 channels on N=64, M=16, 3 steps, on the
                   few KB of tiny Shakespeare shipped in configs/fixtures/
                   (offline; tests, seconds).
  tiny_mirrored    the copy task at 2 x 16 (N=32, M=8), 3 steps (tests).
"""

import ml_collections

from configs import common

VARIANTS = (
  'text',
  'pg19',
  'wiki40b',
  'mirrored_cpu',
  'mirrored_short',
  'mirrored_paper',
  'shakespeare_cpu',
  'tiny',
  'tiny_mirrored',
)

# (max_context N, num_latents M, channels, heads, layers) per variant.
_SIZES = {
  'text': (2048, 512, 512, 8, 6),
  'pg19': (4096, 1024, 1024, 16, 12),
  'wiki40b': (4096, 1024, 1024, 16, 12),
  'mirrored_cpu': (2048, 256, 64, 2, 1),
  'mirrored_short': (128, 32, 64, 2, 2),
  'mirrored_paper': (131072, 1024, 1024, 16, 6),
  'shakespeare_cpu': (512, 128, 192, 6, 4),
  'tiny': (64, 16, 32, 2, 2),
  'tiny_mirrored': (32, 8, 32, 2, 1),
}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant='text')
  variant = args.variant
  if variant not in VARIANTS:
    raise ValueError(
      f'perceiver_ar variants: {", ".join(VARIANTS)}; got {variant!r}.'
    )
  n, m, channels, heads, layers = _SIZES[variant]
  tiny = variant.startswith('tiny')
  mirrored = 'mirrored' in variant
  c = common.base_config()
  c.task = 'perceiver_ar'
  c.model.preset = 'tiny_perceiver_ar' if tiny else 'perceiver_ar'
  c.model.kwargs = ml_collections.ConfigDict(
    dict(
      max_context=n,
      num_latents=m,
      num_channels=channels,
      num_heads=heads,
      num_self_attend_layers=layers,
      # The copy task needs absolute positions (a latent must know where
      # it is to find its mirror); text uses rotary, as the official
      # default.
      position='absolute' if mirrored else 'rotary',
      dropout_rate=0.0 if (tiny or mirrored) else 0.1,
      z_loss=1e-4,
    )
  )
  c.data.source = 'text:/path/to/corpus.txt'
  c.data.train_split = 'train[:90%]'
  c.data.eval_split = 'train[90%:]'
  # random_mirrored: a row is 2 x mirrored_half tokens (= max_context).
  c.data.mirrored_half = n // 2
  c.data.mirrored_eval_rows = 64  # held-out copy-task rows
  # random_mirrored training rows: random prefixes ending in the copied
  # half (official crops), or whole rows.
  c.data.mirrored_crop = True
  c.data.eval_bytes = 1_000_000  # TFDS: bytes of the eval split scored
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_train_steps = 100_000
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = 'warmup_constant'
  c.schedule.warmup_steps = 1000
  c.best_metric = 'loss'
  c.best_mode = 'min'
  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  c.max_eval_examples = -1
  if variant in ('pg19', 'wiki40b'):
    c.data.source = 'tfds:pg19' if variant == 'pg19' else 'tfds:wiki40b/en'
    c.data.train_split = 'train'
    c.data.eval_split = 'validation'
    c.batch_size = 256
    c.num_train_steps = 200_000
    c.max_eval_examples = 2048
  if mirrored:
    c.data.source = 'random_mirrored'
    c.schedule.name = 'warmup_cosine'
  if variant == 'mirrored_paper':
    c.batch_size = 4096
    c.eval_batch_size = 8
    c.num_train_steps = 1_000_000
    c.data.mirrored_eval_rows = 16
  if variant == 'mirrored_cpu':
    c.data.mirrored_crop = False
    c.data.mirrored_eval_rows = 16
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_train_steps = 3000
    c.optimizer.learning_rate = 1e-3
    c.schedule.name = 'warmup_constant'
    c.schedule.warmup_steps = 100
    c.log_every_steps = 50
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 500
  if variant == 'mirrored_short':
    c.data.mirrored_crop = False
    c.batch_size = 16
    c.num_train_steps = 3000
    c.optimizer.learning_rate = 1e-3
    c.schedule.warmup_steps = 100
    c.log_every_steps = 250
    c.eval_every_steps = 250
    c.checkpoint_every_steps = 500
    c.data.mirrored_eval_rows = 32
  if variant == 'shakespeare_cpu':
    c.data.source = 'text:tinyshakespeare/input.txt'
    c.batch_size = 16
    c.num_train_steps = 1500
    c.optimizer.learning_rate = 1e-3
    c.schedule.name = 'warmup_cosine'
    c.schedule.warmup_steps = 100
    c.log_every_steps = 25
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
  if tiny:
    c.data.source = f'text:{common.FIXTURES}/tinyshakespeare.txt'
    if mirrored:
      c.data.source = 'random_mirrored'
      c.data.mirrored_eval_rows = 8
    c.batch_size = 4
    c.eval_batch_size = 4
    c.num_train_steps = 3
    c.schedule.name = 'constant'
    c.schedule.warmup_steps = 0
    c.log_every_steps = 1
    c.eval_every_steps = 3
    c.checkpoint_every_steps = 2
    c.max_eval_examples = 8
    c.progress_bar = False
    c.disable_most_optimizations = True
  return c
