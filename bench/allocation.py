"""Cost of the masks for ResNet-50 (ImageNet layout, 1000 classes, 25.5 M prunable weights).

Target (issue 3): <= 2 s per mask set on the 2-core CPU, peak extra memory <= 3x the float32 bytes
of the prunable weights. Run: ``.venv/bin/python bench/allocation.py [--sparsity 0.9] [--runs 5]``.

Time: wall clock of ``compute_masks`` (validation, counts, masks), median of ``--runs`` runs after
one warm-up run, in one process per allocation (erk and lamp).

Memory: tracemalloc cannot see torch's or numpy's C allocations, so the bench reads the kernel's
own accounting of the process. Before each run it records the current resident set (VmRSS) and
resets the peak (writing 5 to /proc/self/clear_refs, Linux); after the run the peak (VmHWM) minus
that baseline is the extra memory the run needed at its worst, the returned masks included. The
child runs with a fixed ``MALLOC_MMAP_THRESHOLD_`` so every large buffer is its own mapping and goes
back to the kernel when freed: then the resident set tracks live memory and memory freed by one
run cannot hide the next run's peak. The ratio is that extra over 4 bytes x prunable weights.

Prints one JSON line per allocation, then the summary line
``{"resnet50_seconds": <worst allocation's median>, "peak_extra_memory_ratio": <worst median>}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ALLOCATIONS = ("erk", "lamp")


def _memory_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = dict(re.findall(r"(VmRSS|VmHWM):\s+(\d+) kB", Path("/proc/self/status").read_text()))
    return int(fields["VmRSS"]), int(fields["VmHWM"])


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(allocation: str, sparsity: float, runs: int) -> dict:
    """Time and measure ``runs`` mask computations in this (fresh) process."""
    import torch

    from sweep.tasks.models import build_model
    from sweep.tasks.prune import compute_masks, prunable_layers

    torch.manual_seed(0)
    model = build_model("resnet50", 1000, 3, 224)
    weights_bytes = 4 * sum(m.weight.numel() for _, m in prunable_layers(model))
    compute_masks(model, allocation, sparsity)  # warm-up: lazy imports, kernel selection
    seconds, cpu_seconds, ratios = [], [], []
    for _ in range(runs):
        gc.collect()
        baseline, _ = _memory_kib()
        _reset_peak()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        masks = compute_masks(model, allocation, sparsity)
        seconds.append(time.perf_counter() - start)
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu_seconds.append(used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime)
        ratios.append((_memory_kib()[1] - baseline) * 1024 / weights_bytes)
        del masks
    return {
        "allocation": allocation,
        "sparsity": sparsity,
        "prunable_weights": weights_bytes // 4,
        "threads": torch.get_num_threads(),
        "seconds_median": statistics.median(seconds),
        "seconds": [round(s, 3) for s in seconds],
        "cpu_seconds_median": statistics.median(cpu_seconds),
        "peak_extra_memory_ratio_median": statistics.median(ratios),
        "peak_extra_memory_ratios": [round(r, 3) for r in ratios],
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", choices=ALLOCATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sparsity, args.runs)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = []
    for allocation in ALLOCATIONS:
        command = [sys.executable, __file__, "--child", allocation]
        command += ["--sparsity", str(args.sparsity), "--runs", str(args.runs)]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        results.append(json.loads(output.stdout.splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    summary = {
        "resnet50_seconds": round(max(r["seconds_median"] for r in results), 3),
        "peak_extra_memory_ratio": round(
            max(r["peak_extra_memory_ratio_median"] for r in results), 3
        ),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
