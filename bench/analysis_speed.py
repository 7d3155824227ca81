"""Benchmark: regime table and HTML report from a large synthetic store with per-image results.

Targets (issue 6, on a 2-core machine): regime table <= 10 s, report <= 30 s and <= 10 MB.
Both timings include reading the store, as a user running the CLI would pay it. Every row
carries its per-image correctness and its dense checkpoint's; the intervals resample the eval
images of every (point, replicate) sum of rows (bits summed per column: rows x images, then a
[resamples, images] @ [images, points x replicates] product per dataset/arch), so the cost grows
with rows x eval images: the default store is 3 replicates x the paper-like grid, 100 k rows of
2000 eval images each. The store is written in the real schema through
ResultStore.write_many (one file per partition chunk); generation is not timed. The last line
printed is a JSON object.

    .venv/bin/python bench/analysis_speed.py [--rows 100000] [--eval-size 2000] [--repeats 3]
        [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, only bench/ is on sys.path: put this checkout first, so that its own packages
# are measured whatever the environment has installed, and the tests, where the synthetic store
# generator lives (a test fixture).
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

from synthetic_store import SyntheticGrid  # noqa: E402

from analysis.loading import load_results  # noqa: E402
from analysis.regimes import regime_table  # noqa: E402
from analysis.report import write_report  # noqa: E402

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagenette", "imagenet100")
ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121")
ALLOCATIONS = ("erk", "lamp", "uniform", "global")
REPAIRS = ("none", "bn_recal", "layer_var", "channel_var", "channel_var_shrink")


REPLICATES = 3


def grid_for(rows: int, eval_size: int) -> SyntheticGrid:
    """The paper-like grid, 3 replicates, as many seeds as it takes to reach `rows` ('none' has
    one per replicate)."""
    points = len(DATASETS) * len(ARCHS) * len(ALLOCATIONS) * 12 * REPLICATES
    seeds = max(1, math.ceil((rows / points - 1) / (len(REPAIRS) - 1)))
    return SyntheticGrid(
        datasets=DATASETS,
        archs=ARCHS,
        allocations=ALLOCATIONS,
        repairs=REPAIRS,
        seeds=seeds,
        error_rate=0.002,
        replicates=REPLICATES,
        eval_size=eval_size,
    )


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time over repeats, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="approximate store size")
    parser.add_argument("--eval-size", type=int, default=2000, help="eval images per row")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--store", type=Path, help="reuse or create the store here (kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        store = args.store or Path(tmp) / "results"
        grid = grid_for(args.rows, args.eval_size)
        if store.exists():
            print(f"reusing store {store}")
        else:
            start = time.perf_counter()
            written = grid.write(store)
            print(f"generated {written} rows in {time.perf_counter() - start:.1f} s ({store})")
        rows = len(load_results(store).frame)
        regimes_s, tables = timed(lambda: regime_table(load_results(store).frame), args.repeats)
        cells = len(tables.regimes)
        print(f"regime table: {regimes_s:.2f} s (median of {args.repeats}), {cells} cells")
        report = Path(tmp) / "report.html"
        report_s, _ = timed(lambda: write_report(store, report), args.repeats)
        report_mb = report.stat().st_size / 1e6
        print(f"report: {report_s:.2f} s (median of {args.repeats}), {report_mb:.2f} MB")
        print(
            json.dumps(
                {
                    "rows": rows,
                    "eval_size": args.eval_size,
                    "regimes_seconds": round(regimes_s, 2),
                    "report_seconds": round(report_s, 2),
                    "report_mb": round(report_mb, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
