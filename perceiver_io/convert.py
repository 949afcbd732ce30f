"""Convert HuggingFace or DeepMind Haiku checkpoints to our format, and our
checkpoints between the latent stack's layouts (`scan_layers`).

  python -m perceiver_io.convert --from=hf:deepmind/language-perceiver --out=DIR
  python -m perceiver_io.convert --from=hf:/path/to/save_pretrained_dir --out=DIR
  python -m perceiver_io.convert --from=haiku:imagenet_fourier_position_encoding.pystate \
      --preset=imagenet_fourier --out=DIR
  python -m perceiver_io.convert --from=dir:DIR --scan_layers=true --out=DIR2

The output reloads with `perceiver_io.checkpoints.load(DIR)` without knowing the
preset. Nothing is written when the input is invalid, and an existing DIR is
kept unless --overwrite is given.
"""

import argparse
import sys

from perceiver_io import presets


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m perceiver_io.convert',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
    '--from',
    dest='source',
    required=True,
    help='hf:<dir or hub id>, haiku:<pickle file> or dir:<our checkpoint>',
  )
  parser.add_argument('--out', required=True, help='output checkpoint dir')
  parser.add_argument(
    '--preset',
    default=None,
    choices=presets.names(),
    help='architecture of a Haiku checkpoint',
  )
  parser.add_argument(
    '--scan_layers',
    choices=('true', 'false'),
    default=None,
    help='write the latent stack scanned (true) or unrolled (false); '
    "default: HF and Haiku unrolled, our checkpoints' own layout",
  )
  parser.add_argument(
    '--overwrite',
    action='store_true',
    help='replace an existing output directory',
  )
  args = parser.parse_args(argv)
  # Imported here so --help is instant.
  from perceiver_io import checkpoints  # pylint: disable=g-import-not-at-top

  if not args.source.startswith(('hf:', 'haiku:', 'dir:')):
    parser.error('--from must start with hf:, haiku: or dir:')
  source = args.source
  if source.startswith('dir:'):
    source = source[len('dir:') :]
  overrides = {}
  if args.scan_layers is not None:
    overrides['scan_layers'] = args.scan_layers == 'true'
  try:
    _, variables, config = checkpoints.load_any(
      source, args.preset, **overrides
    )
    out = checkpoints.save(
      args.out, variables, config, overwrite=args.overwrite
    )
  except (checkpoints.CheckpointError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  count = presets.count_params(variables['params'])
  print(f'wrote {out} ({config.get("name", "model")}, {count:,} parameters)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
