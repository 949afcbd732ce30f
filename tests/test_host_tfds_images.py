"""TFDS image training streams on fixed shards: 1, 2 and 4 processes
(simulated by passing process_index/process_count) with the same shard
count train on the same global batches, image for image (augmentation
included), each process reading only its shards, and a stream resumed at
batch k is the uninterrupted stream from batch k.

The dataset is a real TFDS builder prepared offline by the test (48 noisy
16x16 PNGs whose label is their index), so `tfds.even_splits` cuts real
records; what a shard holds is read back through TFDS itself.
"""

import functools

import numpy as np
import pytest

from perceiver_io.data import image as image_lib

NAME = 'tfds:perceiver_host_test_images'
N = 48  # Examples; 4 shards of 12, 2 of each per global batch of 8.
S = 4
GLOBAL_BATCH = 8
EPOCH = 6  # Global batches per pass over every shard.
STEPS = 8  # Crosses the epoch boundary.


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  import tensorflow_datasets as tfds

  class PerceiverHostTestImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            'image': tfds.features.Image(
              shape=(16, 16, 3), encoding_format='png'
            ),
            'label': tfds.features.ClassLabel(num_classes=N),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i in range(N):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        yield i, {'image': image, 'label': i}

  root = str(tmp_path_factory.mktemp('tfds_images'))
  builder = PerceiverHostTestImages(data_dir=root)
  builder.download_and_prepare()
  # Each shard's labels as TFDS itself cuts and reads it (the reference).
  shards = [
    sorted(int(ex['label']) for ex in tfds.as_numpy(builder.as_dataset(split)))
    for split in tfds.even_splits('train', n=S, drop_remainder=False)
  ]
  return root, shards


def _stream(root, count, index, start_batch=0, **kwargs):
  it, info = image_lib.make_image_dataset(
    NAME,
    'train',
    batch_size=GLOBAL_BATCH // count,
    train=True,
    image_size=8,
    seed=3,
    randaugment=None,
    data_dir=root,
    process_index=index,
    process_count=count,
    num_shards=kwargs.pop('num_shards', S),
    start_batch=start_batch,
    **kwargs,
  )
  return it, info


@pytest.fixture(scope='module')
def parts(prepared):
  """parts(count)[i]: process i of count's first STEPS batches."""
  root, _ = prepared

  @functools.lru_cache(maxsize=None)
  def read(count):
    out = []
    for i in range(count):
      it, info = _stream(root, count, i)
      assert info['num_examples'] == N
      assert info['num_examples_this_process'] == N // count
      out.append([next(it) for _ in range(STEPS)])
    return out

  return read


def _global(per_process, key):
  return [
    np.concatenate([p[step][key] for p in per_process]) for step in range(STEPS)
  ]


@pytest.mark.parametrize('count', [2, 4])
def test_processes_make_the_one_process_batches(parts, count):
  one = parts(1)
  for key in ('label', 'image'):
    for a, b in zip(_global(parts(count), key), _global(one, key)):
      np.testing.assert_array_equal(a, b)


def test_each_process_reads_its_shards_once_per_epoch(prepared, parts):
  _, shards = prepared
  assert sorted(v for s in shards for v in s) == list(range(N))
  for count in (1, 2, 4):
    for i, batches in enumerate(parts(count)):
      seen = np.concatenate([b['label'] for b in batches[:EPOCH]])
      owned = shards[i * S // count : (i + 1) * S // count]
      assert sorted(seen.tolist()) == sorted(v for s in owned for v in s)
  # Every batch draws 2 rows from each shard, in shard order; the next
  # epoch is a fresh order of the same rows.
  shard_of = {v: j for j, s in enumerate(shards) for v in s}
  labels = _global(parts(1), 'label')
  for batch in labels:
    assert [shard_of[v] for v in batch] == [0, 0, 1, 1, 2, 2, 3, 3]
  epoch_two = np.concatenate(labels[EPOCH:])
  assert not np.array_equal(epoch_two, np.concatenate(labels[:2]))
  # Augmentation is keyed by the position: the same images are cropped
  # otherwise in the next epoch.
  images = _global(parts(1), 'image')
  first = {
    v: images[s][r] for s in range(EPOCH) for r, v in enumerate(labels[s])
  }
  again = [
    np.allclose(images[s][r], first[v])
    for s in range(EPOCH, STEPS)
    for r, v in enumerate(labels[s])
  ]
  assert sum(again) < len(again) / 2


def test_resumed_stream_is_the_uninterrupted_one(prepared, parts):
  root, _ = prepared
  k = 3
  it, _ = _stream(root, 2, 1, start_batch=k)
  for expected in parts(2)[1][k:]:
    got = next(it)
    np.testing.assert_array_equal(got['label'], expected['label'])
    np.testing.assert_array_equal(got['image'], expected['image'])


def test_one_shard_is_one_global_shuffle(prepared):
  root, _ = prepared
  it, info = _stream(root, 1, 0, num_shards=1, repeat=False)
  labels = np.concatenate([b['label'] for b in it])
  assert info['num_batches'] == EPOCH
  assert sorted(labels.tolist()) == list(range(N))
  assert not np.array_equal(labels, np.sort(labels))


@pytest.mark.parametrize(
  'count, index, batch, shards, match',
  [
    (1, 0, 64, 4, r'shard 0 of 4 has 12 examples, fewer than its 16'),
    (2, 0, 4, 3, r'num_shards=3 must be a positive multiple'),
    (1, 0, 2, 4, r'at most the global batch 2'),
  ],
)
def test_bad_shards_are_one_clear_error(
  prepared, count, index, batch, shards, match
):
  root, _ = prepared
  with pytest.raises(ValueError, match=match) as error:
    image_lib.make_image_dataset(
      NAME,
      'train',
      batch_size=batch,
      train=True,
      image_size=8,
      data_dir=root,
      process_index=index,
      process_count=count,
      num_shards=shards,
    )
  assert '\n' not in str(error.value)
