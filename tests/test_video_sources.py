"""open_source: folders, CSVs, synthetic and TFDS specs; bad input; caching;
per-process shares (perceiver_io.data.video.sources).

Every bad input must end in one line that names the clip or file and says
what would be right, and under `on_bad='skip'` be counted in `summary`.
"""

import logging
import os
import shutil

import numpy as np
import pytest

from perceiver_io.data import video

SHAPE = dict(num_frames=8, size=16, audio_samples=8 * 1920)
NAMES = video.label_names()


def _write(path, index, audio=True):
  clip = video.synthetic_clip(
    index, num_frames=10, size=16, audio_samples=10 * 1920
  )
  video.write_clip(str(path), clip['video'], clip['audio'] if audio else None)
  return clip['label']


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """7 good clips in class folders (2 of them test clips) and a CSV."""
  root = tmp_path_factory.mktemp('videos')
  rows = ['path,label,split']
  for split, indices in (('train', range(5)), ('test', range(5, 7))):
    for i in indices:
      label = NAMES[video.synthetic_clip(i, size=8, num_frames=1)['label']]
      relative = f'{split}/{label}/c{i}.mp4'
      _write(root / relative, i)
      rows.append(f'{relative},{label},{split}')
  (root / 'clips.csv').write_text('\n'.join(rows) + '\n')
  return root


def _open(spec, tmp_path, **kwargs):
  kwargs = {
    **SHAPE,
    'workers': 1,
    'cache_dir': str(tmp_path / 'cache'),
    **kwargs,
  }
  return video.open_source(str(spec), **kwargs)


def test_folder_and_csv_give_the_same_clips(folder, tmp_path):
  by_folder = _open(folder, tmp_path)
  by_csv = _open(folder / 'clips.csv', tmp_path)
  assert len(by_folder) == 5
  assert by_folder.keys == [os.path.normpath(k) for k in by_csv.keys]
  assert by_folder.labels == by_csv.labels
  for i in range(len(by_folder)):
    a, b = by_folder[i], by_csv[i]
    np.testing.assert_array_equal(a['video'], b['video'])
    assert a['video'].shape == (8, 16, 16, 3) and a['audio'].shape == (15360,)
    assert a['label'] == by_folder.label_names.index(
      os.path.basename(os.path.dirname(by_folder.keys[i]))
    )
  test = _open(folder, tmp_path, split='test')
  assert len(test) == 2 and not set(test.keys) & set(by_folder.keys)
  # Both splits index the classes of both split folders the same way.
  assert test.label_names == by_folder.label_names
  assert '5 clips of 5' in by_folder.summary and 'none bad' in by_folder.summary


def test_the_second_open_reads_the_cache_and_edits_decode_again(
  folder, tmp_path
):
  work = tmp_path / 'copy'
  shutil.copytree(folder / 'train', work)
  calls = []
  first = _open(work, tmp_path, workers=2, progress=lambda *a: calls.append(a))
  assert '5 decoded, 0 read from the cache' in first.summary
  assert sorted(calls) == [(n, 5) for n in range(1, 6)]
  again = _open(work, tmp_path)
  assert '0 decoded, 5 read from the cache' in again.summary
  for i in range(len(first)):
    np.testing.assert_array_equal(first[i]['video'], again[i]['video'])
    np.testing.assert_array_equal(first[i]['audio'], again[i]['audio'])
  edited = first.keys[0]
  os.utime(edited, ns=(1, 1))
  assert '1 decoded, 4 read' in _open(work, tmp_path).summary


def test_process_shares_are_disjoint_and_cover_the_split(folder, tmp_path):
  whole = _open(folder / 'clips.csv', tmp_path)
  for spec in (folder / 'clips.csv', 'synthetic:7'):
    everything = _open(spec, tmp_path).keys
    shares = [
      _open(spec, tmp_path / str(p), process_index=p, process_count=3).keys
      for p in range(3)
    ]
    assert sorted(sum(shares, [])) == sorted(everything)
    assert sum(len(s) for s in shares) == len(set(sum(shares, [])))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
  # Each process decoded only its share.
  share = _open(
    folder / 'clips.csv', tmp_path / 'p', process_index=1, process_count=2
  )
  assert f'{len(share)} decoded' in share.summary and len(share) < len(whole)
  with pytest.raises(ValueError, match='process_index=2 with process_count=2'):
    _open('synthetic:4', tmp_path, process_index=2, process_count=2)


def test_synthetic_spec_holds_out_its_test_clips():
  train = video.open_source('synthetic:6', **SHAPE)
  test = video.open_source('synthetic:6', split='test', **SHAPE)
  assert not set(train.keys) & set(test.keys)
  clip = video.synthetic_clip(2, **SHAPE)
  np.testing.assert_array_equal(train[2]['video'], clip['video'])
  assert train[2]['label'] == clip['label'] == train.labels[2]
  assert train.label_names == NAMES and train.num_classes == 8
  # :pitch=F scales the tone (zero crossings) and nothing else.
  low = video.open_source('synthetic:6:pitch=0.1', **SHAPE)
  np.testing.assert_array_equal(low[2]['video'], clip['video'])
  crossings = lambda a: np.sum(np.diff(np.sign(a)) != 0)
  assert crossings(low[2]['audio']) < crossings(clip['audio']) / 5


@pytest.fixture()
def bad_folder(folder, tmp_path):
  """Two good clips, one without audio, one corrupt, one truncated, one
  short (4 frames at 25 fps)."""
  root = tmp_path / 'bad'
  shutil.copytree(folder / 'train', root)
  keep = sorted(root.glob('*/*.mp4'))[:2]
  for path in sorted(root.glob('*/*.mp4'))[2:]:
    path.unlink()
  _write(root / 'disc_up' / 'silent.mp4', 1, audio=False)
  (root / 'disc_up' / 'garbage.mp4').write_bytes(b'not a video' * 50)
  data = keep[0].read_bytes()
  (root / 'disc_up' / 'truncated.mp4').write_bytes(data[: len(data) // 2])
  clip = video.synthetic_clip(3, num_frames=4, size=16, audio_samples=4 * 1920)
  video.write_clip(
    str(root / 'disc_up' / 'short.mp4'), clip['video'], clip['audio']
  )
  return root


def test_bad_clips_are_skipped_counted_and_named(bad_folder, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    source = _open(bad_folder, tmp_path)
  assert len(source) == 3  # Two good ones and the padded short one.
  assert (
    '3 clips of 6' in source.summary
    and '1 short padded' in source.summary
    and '1 skipped no audio' in source.summary
    and '2 skipped undecodable' in source.summary
  ), source.summary
  lines = [r.getMessage() for r in caplog.records]
  for name in ('silent', 'garbage', 'truncated', 'short'):
    [line] = [l for l in lines if f'{name}.mp4' in l]
    assert '\n' not in line
  assert any('has no audio track' in l and '(skipped)' in l for l in lines)
  assert any(
    'short.mp4: 4 frames leave 4' in l and 'padded' in l for l in lines
  )
  silence = _open(bad_folder, tmp_path, no_audio='silence')
  [silent] = [i for i, k in enumerate(silence.keys) if 'silent' in k]
  assert not silence[silent]['audio'].any()
  assert '1 without audio given silence' in silence.summary


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({}, r'(garbage|truncated)\.mp4: cannot be decoded'),
    ({'no_audio': 'silence', 'short': 'pad'}, r'(garbage|truncated)\.mp4'),
    ({'short': 'refuse'}, r'\.mp4: '),
  ],
)
def test_on_bad_refuse_stops_at_the_first_bad_clip(
  bad_folder, tmp_path, kwargs, match
):
  with pytest.raises(video.ClipError, match=match) as error:
    _open(bad_folder, tmp_path, on_bad='refuse', **kwargs)
  assert '\n' not in str(error.value)


def test_a_clip_without_audio_is_refused_by_name(bad_folder, tmp_path):
  only = tmp_path / 'only' / 'disc_up'
  only.mkdir(parents=True)
  shutil.copy(bad_folder / 'disc_up' / 'silent.mp4', only)
  with pytest.raises(
    video.ClipError, match="silent.mp4: has no audio track.*no_audio='silence'"
  ):
    _open(only.parent, tmp_path, on_bad='refuse')
  with pytest.raises(ValueError, match='none of its 1 clips can be used'):
    _open(only.parent, tmp_path)


def test_empty_folder_csv_and_unknown_labels_are_one_line(folder, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='no clips found.*has no class folders'):
    _open(empty, tmp_path)
  (empty / 'cats').mkdir()
  (empty / 'cats' / 'notes.txt').write_text('x')
  with pytest.raises(
    ValueError, match=r'empty: no clips found; expected <class>/<clip>'
  ):
    _open(empty, tmp_path)
  header_only = tmp_path / 'header.csv'
  header_only.write_text('path,label\n')
  with pytest.raises(ValueError, match='header.csv lists no clips'):
    _open(header_only, tmp_path)
  with pytest.raises(
    ValueError, match=r"label 'disc_\w+' is not one of the 2 classes"
  ):
    _open(
      folder / 'clips.csv',
      tmp_path,
      label_names=['square_right', 'square_left'],
    )
  with pytest.raises(ValueError, match=r"label 'disc_\w+' is not one of the 2"):
    _open(folder, tmp_path, label_names=['square_right', 'square_left'])
  with pytest.raises(
    ValueError, match="no rows of split 'validation'; its splits are"
  ):
    _open(folder / 'clips.csv', tmp_path, split='validation')
  classes = len(os.listdir(folder / 'train'))
  with pytest.raises(
    ValueError, match=f'has {classes} classes but num_classes=1; set'
  ):
    _open(folder / 'train', tmp_path, num_classes=1)


@pytest.mark.parametrize(
  'spec,error,match',
  [
    (
      'kinetics',
      ValueError,
      "unknown clip source 'kinetics'; expected synthetic:N",
    ),
    ('/no/such/dir', FileNotFoundError, 'is not a folder nor a .csv file'),
    ('synthetic:0', ValueError, 'expected synthetic:N with N >= 1'),
    ('synthetic:4:pitch=x', ValueError, 'synthetic:N:pitch=F with a pitch'),
    ('synthetic:4:pitch=0', ValueError, 'synthetic:N:pitch=F with a pitch'),
    ('synthetic:4', ValueError, 'synthetic clips have 1 to 8 classes'),
  ],
)
def test_unknown_specs_are_one_line(spec, error, match, tmp_path):
  kwargs = {'num_classes': 9} if spec == 'synthetic:4' else {}
  with pytest.raises(error, match=match) as raised:
    _open(spec, tmp_path, **kwargs)
  assert '\n' not in str(raised.value)


def test_an_unprepared_tfds_dataset_names_the_build_command(
  tmp_path, monkeypatch
):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  with pytest.raises(ValueError) as error:
    _open('tfds:ucf101:ucf101_1', tmp_path)
  assert str(error.value) == (
    f'tfds:ucf101/ucf101_1 is not prepared in {tmp_path}/tfds (nothing is '
    'downloaded at run time); prepare it once with `tfds build '
    f'ucf101/ucf101_1 --data_dir={tmp_path}/tfds` on a machine with '
    'network, or use a folder of clips.'
  )


def test_other_sample_rates_are_resampled_and_logged_once(tmp_path, caplog):
  for i in range(2):
    clip = video.synthetic_clip(i, num_frames=10, size=16, audio_samples=17640)
    video.write_clip(
      str(tmp_path / 'cd' / 'any' / f'{i}.mp4'),
      clip['video'],
      clip['audio'],
      sample_rate=44100,
    )
  with caplog.at_level(logging.INFO):
    source = _open(tmp_path / 'cd', tmp_path)
  lines = [r.getMessage() for r in caplog.records if '44100' in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith(
    'audio of 2 clip(s) resampled from 44100 Hz to 48000 Hz'
  )
  assert source[0]['audio'].shape == (15360,)
