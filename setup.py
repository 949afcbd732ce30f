"""perceiver_io: Perceiver IO in JAX/Flax.

Install for use:          pip install -e .
With the data pipelines:  pip install -e ".[data]"   (TensorFlow + TFDS,
                          PyAV for video)
For the tests:            pip install -e ".[test]"   (adds torch 2.13.0 +
                          transformers for the parity tests)
"""

from setuptools import find_packages
from setuptools import setup

CORE = [
  'jax>=0.4.35',
  'flax>=0.10.0',
  'optax>=0.2.3',
  'orbax-checkpoint>=0.9.0',
  'chex>=0.1.87',
  'numpy>=1.26',
  'safetensors>=0.4',
  'ml_collections>=0.1.1',
  'absl-py>=2.0',
  'tqdm>=4.66',
  'tensorboardX>=2.6',
  'pillow>=10.0',
  'opencv-python-headless>=4.10',  # 16-bit PNGs (KITTI flow), which Pillow cannot read.
  'scikit-learn>=1.3',  # Bundled digits data set for the quickstart.
  'huggingface_hub>=0.23',  # hf:<hub id> downloads (used only when online).
]
DATA = [
  'tensorflow-cpu>=2.16; platform_machine=="x86_64"',
  'tensorflow>=2.16; platform_machine!="x86_64"',
  'tensorflow-datasets>=4.9.4',
  'importlib_resources>=6.0',  # Needed by TFDS >= 4.9.10 with recent etils.
  # Video + audio decoding and writing (perceiver_io/data/video): its
  # wheels bundle ffmpeg; decord cannot write files and was last released
  # in 2021 (perceiver_io/data/video/decoding.py).
  'av>=14',
]
TEST = DATA + [
  'pytest>=8.0',
  'hypothesis>=6.100',  # Property tests of the readers of user files.
  'torch==2.13.0',  # CPU wheel on the project machines; parity reference.
  'transformers>=4.40',
  'matplotlib>=3.8',  # benchmarks.scaling's plot, tested end to end.
  # The tree's shape (tests/test_code_quality.py): the formatter is pinned
  # to a minor version, since its output may change between them.
  'ruff>=0.17,<0.18',
  'import-linter>=2.17',
]
BENCH = [
  'matplotlib>=3.8',
  'psutil>=5.9',
  'torch==2.13.0',
  'transformers>=4.40',
]

setup(
  name='perceiver_io',
  version='0.1.0',
  description='Perceiver IO in JAX/Flax: faithful to the paper, fast, '
  'easy to extend.',
  long_description=open('README.md', encoding='utf-8').read(),
  long_description_content_type='text/markdown',
  python_requires='>=3.10',
  packages=find_packages(
    include=['perceiver_io', 'perceiver_io.*', 'experiments', 'configs']
  ),
  # The tiny variants' offline data (configs/common.py FIXTURES).
  package_data={
    'configs': ['fixtures/*.csv', 'fixtures/*.txt', 'fixtures/glue/*/*.tsv']
  },
  install_requires=CORE,
  extras_require={
    'data': DATA,
    'test': TEST,
    'bench': BENCH,
  },
  license='Apache-2.0',
)
