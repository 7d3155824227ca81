#!/usr/bin/env bash
# GPU check: the demo grid (405 points, 2000 eval images) through the real launcher and through
# the in-process loop (sweep.run.trial.run_in_process), on whatever device is here. Trained demo
# checkpoints from checkpoints/ when all three replicates are there, random weights otherwise.
# On a GPU the launcher packs --gpus-per-trial 0.125 and both runs evaluate in bf16; without one
# both run on CPU (fp32). Prints points/s of both, the ratio launcher / loop, the device's busy
# fraction during each run (GPU utilization, or the CPU busy fraction of the whole machine), the
# stages by repair, bf16 vs fp32 top-1, then one JSON line. Without Ray only the loop runs.
# Everything is written to a temporary work directory, removed at the end (KEEP_WORK=1 keeps it).
# Usage: bench/gpu_check.sh [--checkpoints DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d -t gpu-check-XXXXXX)
if [ "${KEEP_WORK:-0}" = 1 ]; then
    echo "work directory kept: $work"
else
    trap 'rm -rf "$work"' EXIT
fi
"$PY" bench/gpu_check.py all --work "$work" "$@"
