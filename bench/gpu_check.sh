#!/usr/bin/env bash
# GPU check: a tiny grid through the real launcher with --gpus-per-trial 0.5, on CIFAR-shaped
# synthetic data and a ResNet-18 with random weights (no dataset or weights needed). Prints
# per-trial seconds by stage, eval images/s against a bare forward loop, and bf16 vs fp32 top-1.
# Runs on CPU too (then the launcher says there is no GPU). Usage: bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d)
export PRUNE_SWEEP_SKIP_CHECKSUMS=1 PRUNE_SWEEP_CACHE="$work/cache"
"$PY" bench/gpu_check.py prepare --work "$work"
if "$PY" -c "import ray" 2>/dev/null; then
    "$PY" -m sweep.launch --grid "$work/grid.yaml" --out "$work/results" \
        --checkpoints "$work/checkpoints" --data-root "$work/data" --gpus-per-trial 0.5 \
        --cpus-per-trial 1
else
    echo "ray is not installed here: running the same trials in one process instead"
    "$PY" bench/gpu_check.py loop --work "$work"
fi
"$PY" bench/gpu_check.py report --work "$work"
