r"""ImageNet classification with Perceiver IO: the official recipe (paper Sec. 4.5).

Three models (paper Table 7, "config A", trained from scratch on ImageNet):

  variant   preset             inputs                                 top-1
  fourier   imagenet_fourier   pixels + 2-D Fourier features (261 ch)  79.0
  learned   imagenet_learned   conv1x1 + learned positions (512 ch)    72.7
  conv      imagenet_conv      conv+BN+maxpool (56x56) + Fourier       82.1

Recipe (deepmind-research perceiver/train/, reference section 4): LAMB
(Adam b1 0.9, b2 0.999, eps 1e-6, then weight decay 0.1 on everything but
biases and LayerNorm/BatchNorm parameters (position embeddings are decayed),
then the trust ratio), gradients clipped to global norm 10; learning rate
5e-4 x batch / 256 (2e-3 at batch 1024), flat for half the run then cosine
to 0, no warmup; 110 epochs of the 1,281,167 training images at batch 1024
(137,626 steps); softmax cross-entropy on labels mixed by MixUp (Beta 0.2,
first half of the batch) and CutMix (second half), then smoothed by 0.1;
Inception-style crop + flip, RandAugment (4 layers, magnitude 5), bicubic
resize to 224, ImageNet mean/std. Evaluation: centre crop 224/256 of the
shorter side, bicubic resize, mean/std; top-1 and top-5 on the 50,000
validation images. The conv variant carries BatchNorm statistics
(momentum 0.9) in the model state. No EMA, dropout or mixed precision, as
officially.

Commands:
  # Train (ImageNet prepared once by TFDS from the two archives in
  # MANUAL_DIR, or a class-per-folder copy: --config.data.source=dir:/data/imagenet
  # with train/ and val/ sub-folders and --config.data.eval_split=val):
  python -m experiments.train --config=configs/imagenet.py:fourier \
      --workdir=/ckpt/in1k_fourier --config.data.manual_dir=/data/imagenet_tars
  python -m experiments.evaluate --workdir=/ckpt/in1k_fourier --checkpoint=best
  python -m experiments.predict --workdir=/ckpt/in1k_fourier cat.jpg
  # Import an official checkpoint and evaluate it on a validation folder
  # (one command; the model, its input size and its HF quirks come from the
  # checkpoint; class folders named by wnid need the class list, a CSV with
  # columns class_index,wnid,name for the 1000 ILSVRC-2012 classes in
  # sorted-wnid order, which is not in this repository):
  python -m experiments.evaluate --config=configs/imagenet.py:fourier \
      --config.init_from=hf:deepmind/vision-perceiver-fourier \
      --config.data.eval_source=dir:/data/imagenet/val \
      --config.data.class_names=/data/synsets_all_1000.csv
  #   (also hf:deepmind/vision-perceiver-{learned,conv} with :learned / :conv,
  #   or the DeepMind pickle: --config.init_from=haiku:imagenet_conv_preprocessing.pystate)
  python -m experiments.predict --config=configs/imagenet.py:conv \
      --config.init_from=hf:deepmind/vision-perceiver-conv \
      --class_names=/data/synsets_all_1000.csv cat.jpg

Variants (`--config=configs/imagenet.py:<variant>[,tiny][,batch=N]`):
  fourier | learned | conv   the paper runs above. `batch=N` sets the global
                             batch (default 1024) and scales the learning
                             rate by N/256 (overriding --config.batch_size
                             alone does not).
  <variant>,tiny (or tiny)   the tiny preset (2 shared blocks of 1 layer) on
                             generated 32x32 images, 2 steps of batch 8 or
                             `batch=N` (tests; seconds on a CPU).

Hardware and wall time (estimates, not measured here: no accelerator was
available to this project when these configs were written):
  * The paper trained at batch 1024 on 64 TPUv3 cores and reports (Table 8)
    4.85 / 4.14 / 5.58 train steps/s for fourier / learned / conv, i.e.
    137,626 steps take about 7.9 h / 9.2 h / 6.9 h there.
  * By FLOPs (paper Table 7: 407B / 407B / 369B FLOPs per forward pass,
    multiplies and adds counted separately), a training step costs about
    3 x forward = 1.2 TFLOP per image, 1.7e20 FLOP for the whole run: about
    15 h on 8 H100s at 40 % of their dense bfloat16 peak
    (`--config.model.dtype=bfloat16`, with `--config.model.attention_impl=cudnn`
    for cuDNN's flash attention in the latent layers), 2-3x that in float32.
    Memory: the Fourier model's cross-attention over 50,176 pixels needs
    about 0.5 GB of activations per image in float32; use
    `--config.model.remat=True` or gradient accumulation
    (`optimizer.accumulate_steps`) on 40-80 GB GPUs.
  * Input: ~3,000 JPEG decodes + RandAugment per second are needed at those
    step rates; plan for 32+ CPU cores per 8 accelerators.
Expected metric: eval top-1 79.0 / 72.7 / 82.1 % (paper Table 7); top-5 is
not reported in the paper.
"""

import ml_collections

from configs import common

PRESETS = {
  'fourier': 'imagenet_fourier',
  'learned': 'imagenet_learned',
  'conv': 'imagenet_conv',
}
NUM_TRAIN_IMAGES = 1_281_167
BASE_LEARNING_RATE = 5e-4  # per 256 examples


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  # batch=0: the variant's own batch (1024, or 8 for tiny), so that an
  # explicit batch=N is honoured by tiny runs too.
  args = common.parse_arg(arg, variant='fourier', tiny=False, batch=0)
  variant = args.variant
  tiny = args.tiny or variant == 'tiny'
  if variant == 'tiny':
    variant = 'fourier'
  if variant not in PRESETS:
    raise ValueError(
      f'imagenet variants: fourier, learned, conv (each with '
      f'",tiny"), or tiny; got {args.variant!r}.'
    )
  if int(args.batch) < 0:
    raise ValueError(
      f"batch must be >= 1 (or 0 for the variant's default), got {args.batch}."
    )
  batch = int(args.batch) or (8 if tiny else 1024)
  c = common.base_config()
  c.task = 'image_classification'
  c.model.preset = PRESETS[variant]
  # No num_classes here: the classifier's size is data.num_classes.
  c.model.kwargs = ml_collections.ConfigDict()
  # Data (experiments/tasks/image_classification.py reads these).
  c.data.source = 'imagenet2012'
  c.data.eval_source = ''  # '' = data.source
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.num_classes = 1000
  c.data.image_size = 224  # documentation; the model decides
  c.data.class_names = ''  # CSV/text class list (folders, names)
  c.data.manual_dir = ''  # TFDS imagenet2012 archives
  c.data.geometry = ''  # '' = auto ('imagenet' for photos)
  c.data.randaugment_layers = 4  # 0 = off
  c.data.randaugment_magnitude = 5.0
  c.data.mixup_alpha = 0.2  # 0 = off
  c.data.cutmix = True
  # Duration and batch.
  c.batch_size = batch
  c.eval_batch_size = 1024
  c.num_epochs = 110.0
  c.label_smoothing = 0.1
  # Optimizer: the official LAMB chain.
  c.optimizer.name = 'lamb'
  c.optimizer.learning_rate = BASE_LEARNING_RATE * batch / 256
  c.optimizer.weight_decay = 0.1
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.grad_clip_norm = 10.0
  c.optimizer.decay_pos_embs = True
  c.schedule.name = 'constant_cosine'
  c.schedule.constant_fraction = 0.5
  c.schedule.warmup_steps = 0
  c.schedule.end_value = 0.0
  c.log_every_steps = 100
  c.eval_every_steps = 6_250  # about every 5 epochs at batch 1024
  c.checkpoint_every_steps = 1_250
  c.best_metric = 'top1'
  c.best_mode = 'max'
  if tiny:
    c.model.preset = 'tiny_' + PRESETS[variant]
    # Two blocks sharing one latent layer: weight sharing, fast to compile.
    c.model.kwargs = ml_collections.ConfigDict({'blocks': 2, 'per_block': 1})
    c.data.source = 'synthetic:10:64'
    c.data.num_classes = 10
    c.data.image_size = 32 if variant == 'conv' else 16
    c.eval_batch_size = 8
    c.num_train_steps = 2
    c.optimizer.learning_rate = BASE_LEARNING_RATE * batch / 256
    c.log_every_steps = 1
    c.eval_every_steps = 2
    c.checkpoint_every_steps = 2
    c.max_eval_examples = 16
    c.progress_bar = False
    c.disable_most_optimizations = True
  return c
