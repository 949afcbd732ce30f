"""The GPU benchmark's results as a table: ratios to the reference and MFU.

Why: the GPU targets are throughput against the reference's best setting
and our model FLOPs utilisation, so each (workload, mode) row sets ours per
precision against the reference's fastest and the card's peak; runs on fresh
machines of one kind merge into one table that says which run measured what.
"""

from benchmarks import runner
from benchmarks.gpu_bench_items import COMPILED

TERA = 1e12
# name fragment -> peak dense FLOP/s (bf16, tf32, fp32); see gpu_bench's docstring.
PEAK_FLOPS = (
  ('H100 PCIe', (756.5 * TERA, 378.0 * TERA, 51.2 * TERA)),
  ('H100 NVL', (835.5 * TERA, 417.5 * TERA, 60.0 * TERA)),
  ('H100', (989.4 * TERA, 494.7 * TERA, 66.9 * TERA)),
  ('H200', (989.4 * TERA, 494.7 * TERA, 66.9 * TERA)),
)


def peak_flops(device_name):
  """(bf16, tf32, fp32) peak dense FLOP/s for a card name, or None."""
  for fragment, peaks in PEAK_FLOPS:
    if fragment.lower() in (device_name or '').lower():
      return peaks
  return None


def fill_flops(results, flops_table):
  """Our results without an XLA count take the CPU count (count_flops.py)."""
  from benchmarks.count_flops import flops_key  # pylint: disable=g-import-not-at-top

  for r in results:
    if r['impl'] != 'ours' or r.get('status') != 'ok' or r.get('flops'):
      continue
    key = flops_key(r['workload'].split('@')[0], r['batch'], r['mode'])
    if key in flops_table:
      r['flops'] = flops_table[key]
      r['flops_source'] = 'count_flops.py (CPU lowering)'


def summarise(doc):
  """Per (workload, mode): ours per precision, the reference's best, MFU."""
  peaks = peak_flops(doc['device_name'])
  rows = []
  keys = []
  for r in doc['results']:
    if (r['workload'], r['mode']) not in keys:
      keys.append((r['workload'], r['mode']))
  for workload, mode in keys:
    sel = [
      r
      for r in doc['results']
      if (r['workload'], r['mode']) == (workload, mode)
      and r.get('status') == 'ok'
    ]
    ours = {r['precision']: r for r in sel if r['impl'] == 'ours'}
    ref = {r['precision']: r for r in sel if r['impl'] == 'hf'}
    batch = sel[0]['batch'] if sel else None
    row = {'workload': workload, 'mode': mode, 'batch': batch}
    if any('run' in r for r in sel):  # A merged document: which run gave what.
      row['runs'] = {
        impl: sorted({r['run'] + 1 for r in sel if r['impl'] == impl})
        for impl in ('ours', 'hf')
      }
    for prec, r in ours.items():
      row[f'ours_{prec}_s'] = r['median_s']
      flops = r.get('flops')
      if flops and peaks:
        peak = peaks[0] if prec.startswith('bf16') else peaks[1]
        row[f'ours_{prec}_mfu'] = flops / r['median_s'] / peak
      if flops:
        row[f'ours_{prec}_tflops_per_s'] = flops / r['median_s'] / TERA
    for prec, r in ref.items():
      row[f'ref_{prec}_s'] = r['median_s']
    if ref:
      best_prec = min(ref, key=lambda p: ref[p]['median_s'])
      row['ref_best'] = best_prec
      row['ref_best_s'] = ref[best_prec]['median_s']
    if ours:
      best = min(ours, key=lambda p: ours[p]['median_s'])
      row['ours_best'] = best
      row['ours_best_s'] = ours[best]['median_s']
      row['ours_best_mfu'] = row.get(f'ours_{best}_mfu')
    if ours and ref:
      row['throughput_ratio_best'] = row['ref_best_s'] / row['ours_best_s']
      ours_bf16 = [p for p in ours if p.startswith('bf16')]
      if ours_bf16 and 'bf16_autocast' in ref:
        fastest = min(ours[p]['median_s'] for p in ours_bf16)
        row['throughput_ratio_bf16'] = (
          ref['bf16_autocast']['median_s'] / fastest
        )
      if 'fp32' in ours and 'fp32' in ref:
        row['throughput_ratio_fp32'] = (
          ref['fp32']['median_s'] / ours['fp32']['median_s']
        )
    rows.append(row)
  return rows


def to_markdown(doc):
  def pct(x):
    return '-' if x is None else f'{100 * x:.1f}%'

  def ratio(x):
    return '-' if x is None else f'{x:.2f}x'

  lines = [
    f'{doc["device_name"]} ({doc["date"]}); versions '
    f'{doc["versions"]}; budget {doc["settings"]["budget_s"]} s, total '
    f'{doc["elapsed_s"]:.0f} s.',
    '',
    'Throughput ratio = reference time / our time (> 1: ours faster); '
    '"best" compares each side\'s fastest setting. MFU = XLA-counted '
    'model FLOPs / step time / peak (bf16 dense; TF32 for fp32).',
    '',
  ]
  compiled = any(f'ref_bf16_autocast{COMPILED}_s' in r for r in doc['summary'])
  header = (
    [
      'workload',
      'mode',
      'batch',
      'ours bf16',
      'ours bf16 cuDNN',
      'ours fp32',
      'ref bf16 autocast',
    ]
    + (['ref bf16 autocast + torch.compile'] if compiled else [])
    + ['ref tf32', 'ref fp32', 'ratio best', 'ratio bf16', 'ours best MFU']
  )
  rows = []
  for r in doc['summary']:
    rows.append(
      [
        r['workload'],
        r['mode'],
        r['batch'],
        runner.fmt_seconds(r.get('ours_bf16_s')),
        runner.fmt_seconds(r.get('ours_bf16_cudnn_s')),
        runner.fmt_seconds(r.get('ours_fp32_s')),
        runner.fmt_seconds(r.get('ref_bf16_autocast_s')),
      ]
      + (
        [runner.fmt_seconds(r.get(f'ref_bf16_autocast{COMPILED}_s'))]
        if compiled
        else []
      )
      + [
        runner.fmt_seconds(r.get('ref_tf32_s')),
        runner.fmt_seconds(r.get('ref_fp32_s')),
        ratio(r.get('throughput_ratio_best')),
        ratio(r.get('throughput_ratio_bf16')),
        pct(r.get('ours_best_mfu')),
      ]
    )
  if doc.get('runs'):  # Merged: say which run measured each side.
    header.append('runs (ours / ref)')
    for row, r in zip(rows, doc['summary']):
      runs = r.get('runs', {})
      row.append(
        ' / '.join(
          ','.join(map(str, runs.get(i) or ['-'])) for i in ('ours', 'hf')
        )
      )
    lines.insert(
      1,
      'Merged from runs: '
      + '; '.join(
        f'{i + 1}: {run["date"]}, {run["elapsed_s"]:.0f} s'
        for i, run in enumerate(doc['runs'])
      )
      + ' (each a fresh machine of '
      'the same kind; a row whose two sides come from different runs '
      'compares across machines).',
    )
  text = '\n'.join(lines) + '\n' + runner.markdown_table(header, rows)
  bad = [r for r in doc['results'] if r.get('status') != 'ok']
  if bad:
    text += '\nNot measured:\n' + ''.join(
      f'- {r["impl"]} {r["workload"]} {r["mode"]} {r.get("precision")}: '
      f'{r["status"]} {r.get("reason") or r.get("error") or ""}\n'
      for r in bad
    )
  imported = sorted(
    {
      m
      for r in doc['results']
      for m in ('tensorflow', 'ml_collections')
      if r.get(f'imported_{m}')
    }
  )
  text += (
    '\nImported TensorFlow / ml_collections: '
    f'{", ".join(imported) if imported else "neither"}.\n'
  )
  return text


def merge_docs(docs):
  """One document from several runs; a later run's measured item replaces an
  earlier one's (a skipped or failed one does not), so each row's
  ours/reference pair comes from one run wherever the later run re-measured
  the reference too."""
  names = sorted({d['device_name'] for d in docs})
  if len(names) != 1:
    raise ValueError(f'runs on different cards cannot be merged: {names}.')
  by_key = {}
  for i, d in enumerate(docs):
    for r in d['results']:
      key = (r['impl'], r['workload'], r['mode'], r.get('precision'))
      if key not in by_key or r.get('status') == 'ok':  # Not by a skip.
        by_key[key] = {**r, 'run': i}
  return {
    'device_name': names[0],
    'date': ' + '.join(d['date'] for d in docs),
    'machine': docs[-1]['machine'],
    'versions': docs[-1]['versions'],
    'settings': {
      'budget_s': ' + '.join(str(d['settings']['budget_s']) for d in docs)
    },
    'runs': [
      {k: d.get(k) for k in ('date', 'elapsed_s', 'settings')} for d in docs
    ],
    'elapsed_s': sum(d['elapsed_s'] for d in docs),
    'results': list(by_key.values()),
  }
