r"""Multimodal autoencoding with Perceiver IO: video + audio + label in and
out (paper Sec. 4.3 and App. I; Kinetics-700-2020, Tab. 4).

Model: the official multimodal Perceiver (preset `multimodal_autoencoding`,
~20M params): 16 frames of 224x224 as 4x4 patches (50,176 x 48 channels +
3-D Fourier features, 32 bands), 30,720 audio samples at 48 kHz as patches
of 16 (1,920 x 16 + 1-D Fourier, 192 bands) and the one-hot label (700),
padded to 704 channels; 784 x 512 latents, 8 self-attention layers; one
query per pixel, per audio patch and for the label (padded to 1,026), a
shared 512-wide decoder output and per-modality Linear heads.

Recipe (App. I): batch 1024, learning rate 1e-3, loss 0.03 x L1(video) +
1 x L1(audio) + 1e-4 x CE(label) (`loss.error='l2'`: squared errors), 512
pixel and 512 audio queries decoded per training example, the label masked
for 50 % of the training examples and always at evaluation. The paper does not name the optimizer, schedule
or length: LAMB with a cosine decay (its other experiments) and 100 epochs
are our choices. Evaluation decodes every pixel and audio sample in chunks
(`model.query_chunk_size` pixels, default 6,272 = the colab's 128 chunks),
reports video and audio PSNR (peak 1; video in [0, 1], audio in [-1, 1]),
top-1/top-5, and the trivial baselines (each clip's mean frame, silence,
chance).

Commands:
  python -m experiments.train --config=configs/multimodal_autoencoding.py:cpu \
      --workdir=/tmp/mm_cpu
  python -m experiments.evaluate --workdir=/tmp/mm_cpu
  python -m experiments.predict --workdir=/tmp/mm_cpu clip.mp4 --output=/tmp/mm
  # The imported official checkpoint (HuggingFace folder), no training:
  python -m experiments.evaluate --config=configs/multimodal_autoencoding.py \
      --config.init_from=hf:/ckpt/multimodal-perceiver \
      --config.data.source=/data/kinetics700
  python -m experiments.predict --config=configs/multimodal_autoencoding.py \
      --config.init_from=hf:/ckpt/multimodal-perceiver clip.mp4 --output=/tmp/mm

Data (`data.source`): a folder of clips in class subfolders, a
`path,label` CSV, `tfds:<name>` or `synthetic:<N>[:pitch=F]` (generated
clips: a moving shape and a tone that follows it, its pitch scaled by F;
perceiver_io/data/video), decoded to `num_frames` frames at the model's
size and `sample_rate` audio. Training clips are cut into `data.num_shards`
shards and each process decodes only its own (docs/scaling.md).

Variants (`--config=configs/multimodal_autoencoding.py:<variant>`):
  default      88x compression (784 latents). Paper (Tab. 4): audio PSNR
               26.97, video PSNR 24.37, top-1 10.2 %. Hardware and time
               (estimate, not measured: no accelerator here): a train step
               is 780B FLOPs per example (3x its 260B forward pass; the
               paper's Tab. 17 says 310B; benchmarks/multimodal_step.py),
               so 4.3e19 FLOP for 100 epochs of Kinetics-700's ~545k clips:
               about 4 h of compute on 8 H100s at 40 % of bfloat16 peak;
               decoding 55M clips (100 epochs) is the real limit: decode
               once (`open_source` caches clips) and use many workers
               (`data.num_workers`). On 2 CPU cores a step of batch 1 takes
               10 s (3.8 GiB).
  compress176  392 latents. Paper: audio 25.33, video 24.27, top-1 8.6 %.
  compress352  196 latents. Paper: audio 14.15, video 23.21, top-1 11.5 %.
  heavy_label  the paper's heavier class loss (784 latents): 45 % top-1 at
               20.7 dB video PSNR. The paper gives no weight; 1.0 (10,000x)
               is our choice.
  cpu          a CPU-sized model (8 frames of 32x32, 1,920 audio samples =
               6 kHz, 8 synthetic classes; 16 Fourier bands for both; 64 x
               128 latents, 2 layers) on 4,096 generated clips with tones
               at a tenth of the usual pitch (`synthetic:4096:pitch=0.1`),
               batch 16, AdamW 1e-3, 5,000 steps, squared errors with
               weights 10 / 1 / 0.1. Measured on 2 idle CPU cores (AMD
               EPYC, AVX-512): 9 min 7 s, 1.0 GB peak RSS; on 128 held-out
               clips video PSNR 27.85 dB (each clip's mean frame 19.03,
               mean colour 16.87), audio 23.27 dB (silence 9.86), top-1
               1.000 (chance 0.125); 24.79 / 18.60 dB at 2,500 steps. Why
               not the paper's loss: with L1 the pixels stay at the
               background (L1's optimum is the median pixel, and the shape
               covers a pixel in few clips): 16.64 dB after 4,500 steps.
               At the usual pitch (20-115 cycles per clip) the audio stays
               at silence for 3,000 steps (9.91 dB) while the video learns.
  tiny         the tiny preset (2 frames of 16x16, 64 audio samples, 5
               classes) on 16 generated clips, 2 steps (seconds, tests).
"""

import ml_collections

from configs import common

_LATENTS = {'default': 784, 'compress176': 392, 'compress352': 196}
VARIANTS = (
  'default',
  'compress176',
  'compress352',
  'heavy_label',
  'cpu',
  'tiny',
)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  variant = common.parse_arg(arg, variant='default').variant
  if variant not in VARIANTS:
    raise ValueError(
      f'multimodal_autoencoding variants: {", ".join(VARIANTS)}; got '
      f'{variant!r}.'
    )
  c = common.base_config()
  c.task = 'multimodal_autoencoding'
  c.model.preset = 'multimodal_autoencoding'
  c.model.kwargs = ml_collections.ConfigDict(
    dict(num_latents=_LATENTS.get(variant, 784))
  )
  # Clips: a class-subfolder folder, a path,label CSV, tfds:<name> or
  # synthetic:<N>; eval_source '' = the same source, eval_split.
  c.data.source = '/data/kinetics700'
  c.data.eval_source = ''
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.num_classes = 700
  c.data.sample_rate = 48_000  # audio Hz the clips are resampled to
  c.data.on_bad = 'skip'  # undecodable / silent clips: 'skip' | 'refuse'
  c.data.short = 'pad'  # clips under num_frames: 'pad' | 'refuse'
  c.data.num_workers = 8  # decoding threads
  c.data.image_queries = 512  # pixels decoded per training example
  c.data.audio_queries = 512  # audio patches decoded per training example
  c.data.label_mask_rate = 0.5  # training examples with the label masked
  c.loss = ml_collections.ConfigDict(
    dict(video=0.03, audio=1.0, label=1e-4, error='l1')
  )
  c.batch_size = 1024
  c.eval_batch_size = 8
  c.num_epochs = 100.0
  c.optimizer.name = 'lamb'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = 'constant_cosine'
  c.schedule.constant_fraction = 0.0
  c.log_every_steps = 100
  c.eval_every_steps = 5_000
  c.checkpoint_every_steps = 1_000
  c.best_metric = 'video_psnr'
  c.best_mode = 'max'
  c.max_eval_examples = 1_000
  if variant == 'heavy_label':
    c.loss.label = 1.0
    c.best_metric = 'top1'
  elif variant == 'cpu':
    c.model.kwargs = ml_collections.ConfigDict(
      dict(
        num_frames=8,
        image_size=32,
        audio_per_frame=240,
        samples_per_patch=16,
        num_latents=64,
        latent_channels=128,
        depth=2,
        output_channels=128,
        label_query_channels=64,
        audio_bands=16,
        image_bands=16,
      )
    )
    # Tones at a tenth of the usual pitch (3 to 12 cycles per clip): a
    # smoother waveform that a 64-latent model reconstructs in minutes.
    c.data.source = 'synthetic:4096:pitch=0.1'
    c.data.num_classes = 8
    # Squared errors, and pixels and the label weigh more than in the
    # paper's recipe: with L1 the pixels stayed at the background (the
    # median) for 6,000 steps (docstring).
    c.loss.error = 'l2'
    c.loss.video = 10.0
    c.loss.label = 0.1
    c.data.sample_rate = 6_000  # 1,920 samples over 8 frames at 25 fps
    c.data.num_workers = 2
    c.data.image_queries = 512
    c.data.audio_queries = 120  # all of them
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_train_steps = 5_000
    c.optimizer.name = 'adamw'
    c.optimizer.learning_rate = 1e-3
    c.schedule.constant_fraction = 0.7
    c.log_every_steps = 250
    c.eval_every_steps = 2_500
    c.checkpoint_every_steps = 1_000
    c.max_eval_examples = 128
  elif variant == 'tiny':
    c.model.preset = 'tiny_multimodal_autoencoding'
    c.model.kwargs = ml_collections.ConfigDict()
    c.data.source = 'synthetic:16'
    c.data.num_classes = 5
    c.data.sample_rate = 800  # 64 samples over 2 frames at 25 fps
    c.data.num_workers = 1
    c.data.image_queries = 16
    c.data.audio_queries = 2
    c.batch_size = 4
    c.eval_batch_size = 4
    c.num_train_steps = 2
    c.optimizer.name = 'adamw'
    c.log_every_steps = 1
    c.eval_every_steps = 2
    c.checkpoint_every_steps = 2
    c.max_eval_examples = 4
    c.progress_bar = False
    c.disable_most_optimizations = True
  return c
