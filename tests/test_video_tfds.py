"""tfds:NAME sources on a prepared dataset (perceiver_io.data.video).

A tiny TFDS builder with the features of `ucf101` (video frames and a class
label, no audio) is prepared in a temporary data dir; its clips must be the
frames that the window picks (re-derived here), with silent audio only when
asked for, cached after the first read, and shared out per process.
"""

import pytest

from perceiver_io.data import video
from tests import video_helpers

SHAPE = dict(num_frames=8, size=16, audio_samples=8 * 1920)
# Preparing a dataset imports TensorFlow: ~13 s on 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  import tensorflow_datasets as tfds

  class TinyVideos(tfds.core.GeneratorBasedBuilder):
    """20 numbered frames per clip at 32x32, labels a/b/c."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            'video': tfds.features.Video(shape=(None, 32, 32, 3)),
            'label': tfds.features.ClassLabel(names=['a', 'b', 'c']),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {
        'train': self._generate_examples(5),
        'test': self._generate_examples(2),
      }

    def _generate_examples(self, count):
      for i in range(count):
        frames = video_helpers.numbered_frames(20 if i else 6)
        yield i, {'video': frames, 'label': i % 3}

  root = tmp_path_factory.mktemp('tfds')
  TinyVideos(data_dir=str(root)).download_and_prepare()
  return root


def test_a_prepared_tfds_dataset_gives_windowed_clips(
  data_dir, tmp_path, monkeypatch, caplog
):
  monkeypatch.setenv('TFDS_DATA_DIR', str(data_dir))
  options = dict(SHAPE, cache_dir=str(tmp_path), no_audio='silence')
  source = video.open_source('tfds:tiny_videos', **options)
  assert len(source) == 5 and source.label_names == ['a', 'b', 'c']
  assert sorted(source.labels) == [0, 0, 1, 1, 2]
  clips = [source[i] for i in range(len(source))]
  for clip in clips:
    assert clip['video'].shape == (8, 16, 16, 3) and not clip['audio'].any()
  numbers = [tuple(video_helpers.frame_numbers(c['video'])) for c in clips]
  # 20 frames (0.8 s): the middle 8 frames at 25 fps start at frame 6;
  # 6 frames are padded with the last.
  assert numbers.count(tuple(range(6, 14))) == 4
  assert numbers.count((0, 1, 2, 3, 4, 5, 5, 5)) == 1
  assert '5 without audio given silence, 1 short padded' in source.summary
  again = video.open_source('tfds:tiny_videos', **options)
  assert '0 decoded, 5 read from the cache' in again.summary
  shares = [
    video.open_source(
      'tfds:tiny_videos', process_index=p, process_count=2, **options
    ).keys
    for p in range(2)
  ]
  assert len(set(shares[0]) | set(shares[1])) == 5
  assert not set(shares[0]) & set(shares[1])
  test = video.open_source('tfds:tiny_videos', split='test', **options)
  assert len(test) == 2


def test_tfds_without_audio_needs_silence_asked_for(
  data_dir, tmp_path, monkeypatch
):
  monkeypatch.setenv('TFDS_DATA_DIR', str(data_dir))
  with pytest.raises(ValueError) as error:
    video.open_source('tfds:tiny_videos', cache_dir=str(tmp_path))
  assert str(error.value) == (
    'tfds:tiny_videos: has no audio (no TFDS video dataset has sound); pass '
    "no_audio='silence' to train on its video and labels with silent "
    'audio, or use a folder of clips with sound.'
  )
