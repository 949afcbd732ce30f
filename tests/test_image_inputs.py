"""Bad and unusual image inputs: corrupt files in folders, truncated flow frames, 16-bit PNGs,
grayscale flow frames, and evaluation progress. Every fixture is generated into tmp_path."""

import os

import numpy as np
from PIL import Image
import pytest

from perceiver_io.data import image as image_lib


def _jpeg(path, seed=0, size=(40, 50)):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
  return str(path)


def _class_folders(root, per_class=5):
  for c in ('a', 'b'):
    os.makedirs(root / c, exist_ok=True)
    for i in range(per_class):
      _jpeg(root / c / f'img{i}.jpg', seed=10 * ord(c) + i)


def _drain(iterator, limit=50):
  count = 0
  for _ in iterator:
    count += 1
    if count >= limit:
      break
  return count


# ----------------------------------------------------------- A: corrupt files in a folder --


@pytest.mark.parametrize('train', [False, True])
def test_corrupt_jpeg_in_folder_is_one_error_naming_it(tmp_path, train):
  _class_folders(tmp_path)
  bad = tmp_path / 'b' / 'img3.jpg'
  data = bad.read_bytes()
  bad.write_bytes(data[:len(data) // 2])  # Truncated: valid header, broken body.
  iterator, _ = image_lib.make_image_dataset(
      f'dir:{tmp_path}', 'train', batch_size=2, train=train, image_size=16, randaugment=None)
  with pytest.raises(image_lib.ImageDecodeError) as info:
    _drain(iterator)
  message = str(info.value)
  assert str(bad) in message and '1 image file(s)' in message
  assert 'jpeg' in message.lower() and 'function_node' not in message


def test_text_file_named_jpg_is_named(tmp_path):
  _class_folders(tmp_path)
  bad = tmp_path / 'a' / 'notes.jpg'
  bad.write_text('not an image at all')
  iterator, _ = image_lib.make_image_dataset(
      f'dir:{tmp_path}', 'train', batch_size=3, train=False, image_size=16)
  with pytest.raises(ValueError, match='notes.jpg') as info:
    _drain(iterator)
  assert 'Unknown image file format' in str(info.value)


def test_clean_folder_and_resumed_stream_are_unchanged(tmp_path):
  _class_folders(tmp_path)
  it, info = image_lib.make_image_dataset(f'dir:{tmp_path}', 'train', batch_size=3, train=False,
                                          image_size=16)
  assert _drain(it) == info['num_batches'] == 4
  # A bad file met only after resuming is still named (the stream offset is accounted for).
  (tmp_path / 'b' / 'img4.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
  it, _ = image_lib.make_image_dataset(f'dir:{tmp_path}', 'train', batch_size=2, train=True,
                                       image_size=16, randaugment=None, start_batch=7)
  with pytest.raises(image_lib.ImageDecodeError, match='img4.jpg'):
    _drain(it)


def test_undecodable_image_checks_one_file(tmp_path):
  good = _jpeg(tmp_path / 'good.jpg')
  (tmp_path / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 20)
  assert image_lib.undecodable_image(good) is None
  assert image_lib.undecodable_image(str(tmp_path / 'bad.png'))
