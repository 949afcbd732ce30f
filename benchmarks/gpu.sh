#!/usr/bin/env bash
# GPU benchmark (H100/H200): ours fp32 + bf16 vs HF transformers fp32 / TF32 /
# bf16 autocast on the issue's workloads, with our model FLOPs utilisation.
# Finishes within 8 minutes (a 420 s budget inside, a hard 475 s limit here).
# Needs JAX with CUDA, torch, transformers, flax, optax, psutil; imports no
# TensorFlow and no ml_collections.
#
# Usage: benchmarks/gpu.sh [RESULTS_DIR] [extra gpu_bench.py flags]
#        (without RESULTS_DIR: a new benchmarks/results/gpu/run-<UTC time>/,
#        or benchmarks/results/smoke with --smoke; never the committed files)
#        benchmarks/gpu.sh /tmp/smoke --smoke   # tiny sizes, CPU is fine
# Writes RESULTS_DIR/gpu.json and RESULTS_DIR/gpu.md. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT=
if [[ $# -gt 0 && "$1" != --* ]]; then OUT="$1"; shift; fi  # Else: flags only.
"$PY" - <<'PY'
import importlib.util, sys
missing = [m for m in ('jax', 'flax', 'optax', 'torch', 'transformers',
                       'psutil') if importlib.util.find_spec(m) is None]
if missing:
  sys.exit(f'gpu.sh: missing Python packages {missing}; install them first.')
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  2>/dev/null || echo "gpu.sh: nvidia-smi not found (fine with --smoke)"
if [[ -z "$OUT" && " $* " == *" --smoke "* ]]; then
  OUT=benchmarks/results/smoke
elif [[ -z "$OUT" ]]; then
  OUT=benchmarks/results/gpu/run-$(date -u +%Y%m%d-%H%M%S)
fi
exec timeout --signal=KILL 475 "$PY" -m benchmarks.gpu_bench --out "$OUT" "$@"
