r"""Bytes of parameters + optimizer state per device, for any preset and mesh.

  python -m benchmarks.state_memory --preset=language_mlm \
      --meshes=8x1,4x2,2x4,1x8 --optimizer=lamb

Why abstract: the 201M language model's state does not fit 8 simulated CPU
devices' worth of memory on a laptop, and the question (what does each
device hold under a given data x fsdp shape) is one of shapes alone. The
train state comes from `jax.eval_shape` (no array is allocated), laid out
by the runner's own rules (`experiments.partition_rules`, the same code
the runner logs its 'memory:' line with). Prints one Markdown table.
"""

import argparse
import functools
import os
import sys
from typing import Dict, List

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.sharding import PartitionSpec  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import optim  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import partition_rules  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from perceiver_io import model as model_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def abstract_train_state(preset: str, optimizer: str = 'lamb'):
  """The runner's train state of `preset` (params, optimizer moments,
  model state) as ShapeDtypeStructs."""
  config = common.base_config()
  config.model.preset = preset
  config.optimizer.name = optimizer
  model, _ = models.build(config)
  variables = model_lib.abstract_variables(model)
  tx, _ = optim.make_optimizer(config, variables['params'], 1000)
  return jax.eval_shape(functools.partial(train_lib.new_state, tx), variables)


def state_bytes(
  abstract_state, data: int, fsdp: int, min_size: int = 0
) -> Dict[str, int]:
  """{'per_device': bytes each device holds, 'total': bytes of one copy,
  'unsplit': arrays whose rule wanted a split fsdp does not divide}."""
  specs, unsplit = partition_rules.state_specs(abstract_state, fsdp, min_size)
  sizes = {sharding.DATA_AXIS: data, sharding.FSDP_AXIS: fsdp}
  whole = jax.tree_util.tree_map(lambda _: PartitionSpec(), specs)
  return {
    'per_device': partition_rules.bytes_per_device(
      abstract_state, specs, sizes
    ),
    'total': partition_rules.bytes_per_device(abstract_state, whole, sizes),
    'unsplit': len(unsplit),
  }


def parse_meshes(text: str) -> List[tuple]:
  try:
    meshes = [tuple(int(n) for n in m.split('x')) for m in text.split(',')]
  except ValueError:
    meshes = []
  if not meshes or any(len(m) != 2 or min(m) < 1 for m in meshes):
    raise ValueError(
      f'--meshes={text!r}: give data x fsdp shapes such as 8x1,4x2,2x4,1x8.'
    )
  return meshes


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--preset', default='language_mlm')
  p.add_argument('--meshes', default='8x1,4x2,2x4,1x8')
  p.add_argument('--optimizer', default='lamb')
  args = p.parse_args(argv)
  try:
    meshes = parse_meshes(args.meshes)
  except ValueError as e:
    p.error(str(e))
  state = abstract_train_state(args.preset, args.optimizer)
  params = sum(x.size for x in jax.tree_util.tree_leaves(state['params']))
  print(
    f'{args.preset}: {params / 1e6:.1f}M parameters, optimizer '
    f'{args.optimizer}, float32 state\n'
  )
  print('| mesh (data x fsdp) | per device | of one full copy | unsplit |')
  print('| --- | --- | --- | --- |')
  for data, fsdp in meshes:
    b = state_bytes(state, data, fsdp)
    print(
      f'| {data}x{fsdp} | {sharding.format_bytes(b["per_device"])} | '
      f'{b["per_device"] / b["total"]:.3f} | {b["unsplit"]} |'
    )


if __name__ == '__main__':
  main()
