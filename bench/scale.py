"""Does the driver stay flat on a large grid? A stress grid of trivial points through the launcher.

Writes a random-weight ResNet-20 checkpoint for Fashion-MNIST (replicate 0) into a temporary work
directory and runs two grids on it, each through `python -m sweep.launch` in a subprocess with its
own --out, --checkpoints and --cache-dir (nothing of the user's is read or written):

- the stress grid: 4 allocations (erk, lamp, uniform, global) × 500 sparsities (0.500 … 0.999)
  × repairs `none` and `bn_recal` × 10 calibration seeds (`none` draws no calibration set and
  runs once per point), 32 calibration and 32 eval images: 4 × 500 × (1 + 10) = 22,000 points in
  2000 cells. Measured: the time from starting the launcher to the first row file in the store
  (polled every 0.1 s), points/s in each quarter of the points (from the rows' `finished_at`,
  which the driver stamps as it writes each row; quarter 1 starts at the first row), the ratio
  last / first quarter, the driver's peak RSS (VmHWM of the launcher process, polled: all of its
  threads, none of Ray's processes) and the total wall time.
- `--dry-run` of a ≥100k-point grid (4 allocations × 1000 sparsities × (`none` + `bn_recal` × 25
  seeds) = 104,000 points): wall time and peak RSS of that subprocess (exact, from wait4).

Run: `.venv/bin/python bench/scale.py` (about 10 minutes on 2 idle cores). Smoke test in about a
minute: `--sparsities 10 --seeds 2` (120 points). The last line is one JSON object with every
number. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from launcher_env import launcher_env

from sweep.core import paths

ROOT = Path(__file__).resolve().parent.parent
ALLOCATIONS = ["erk", "lamp", "uniform", "global"]
PAIR = ("fashion_mnist", "resnet20")
# Lines of the launcher's output that date the steps before the first row (seen within 0.1 s).
MARKERS = {"ray started": "Started a local Ray instance", "cells planned": " Tune trials ("}


def write_checkpoint(checkpoints: Path) -> None:
    """A random-weight ResNet-20 with a valid sidecar (as tests/conftest.py writes them)."""
    import torch

    from sweep.tasks import models
    from sweep.tasks.datasets.holdout import holdout

    torch.manual_seed(0)
    model = models.build_model("resnet20", num_classes=10, in_channels=1, image_size=28)
    meta = models.CheckpointMeta(
        arch="resnet20", dataset="fashion_mnist", num_classes=10, in_channels=1, image_size=28,
        seed=0, held_out=holdout("fashion_mnist", 60000).record(),
    )  # fmt: skip
    models.save_checkpoint(model, paths.checkpoint_file(checkpoints, *PAIR, 0), meta)


def sparsity_values(count: int, start: float, stop: float) -> list[float]:
    """`count` evenly spaced sparsities from start to stop (0.001 apart for the defaults)."""
    if count == 1:
        return [start]
    values = [round(start + i * (stop - start) / (count - 1), 6) for i in range(count)]
    if len(set(values)) != count:
        raise SystemExit(f"{count} sparsities between {start} and {stop} do not stay distinct")
    return values


def write_grid(path: Path, name: str, sparsities: list[float], seeds: int, images: int) -> Path:
    grid = {
        "name": name,
        "datasets": [PAIR[0]],
        "archs": [PAIR[1]],
        "allocations": ALLOCATIONS,
        "sparsities": sparsities,
        "repairs": ["none", "bn_recal"],
        "seeds": list(range(seeds)),
        "replicates": [0],
        "calib_size": images,
        "eval_limit": images,
    }
    path.write_text(yaml.safe_dump(grid, default_flow_style=None))
    return path


def expected_points(grid_path: Path) -> int:
    from sweep.plan.grid import expand, load_grid

    return len(expand(load_grid(str(grid_path)), {}))


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in bytes; {} once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def row_files(out: Path) -> int:
    """Row files in the store: `*.parquet`, temporaries (names starting with '.') excluded."""
    count = 0
    for _, _, names in os.walk(out):
        count += sum(1 for n in names if n.endswith(".parquet") and not n.startswith("."))
    return count


def launch(
    grid: Path, work: Path, total: int, extra: list[str], progress_every: float = 30.0
) -> dict:
    """Run the launcher on `grid`; watch its RSS and the store; the measurements as a dict."""
    out, log = work / "results", work / "launch.log"
    command = [
        sys.executable, "-m", "sweep.launch", "--grid", str(grid), "--store", str(out),
        "--checkpoints", str(work / "checkpoints"), "--cache-dir", str(work / "cache"), *extra,
    ]  # fmt: skip
    print("$ " + " ".join(command), flush=True)
    wall_start = time.time()
    start = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=launcher_env(), stdout=handle, stderr=subprocess.STDOUT
        )
    first_row = None
    marks: dict[str, float] = {}  # when the launcher's log first showed each MARKERS line
    peak = last_rss = 0
    rss_samples: list[tuple[float, int]] = []  # (seconds since start, RSS) every ~1 s
    next_print = progress_every
    max_rows = 0
    loads: list[float] = []  # 1-minute load average, every ~10 s after the first row
    while process.poll() is None:
        now = time.monotonic() - start
        status = proc_status(process.pid)
        peak = max(peak, status.get("VmHWM", 0))
        last_rss = status.get("VmRSS", last_rss)
        if first_row is None:
            text = log.read_text(errors="replace")
            for name, marker in MARKERS.items():
                if name not in marks and marker in text:
                    marks[name] = now
            if out.is_dir() and row_files(out):
                first_row = now
                steps = ", ".join(f"{name} {t:.1f} s" for name, t in marks.items())
                print(f"first row after {first_row:.1f} s ({steps})", flush=True)
            time.sleep(0.1)
            continue
        rss_samples.append((now, last_rss))
        if len(rss_samples) % 10 == 1:
            loads.append(float(load_now().split()[0]))
        if now >= next_print:
            max_rows = max(max_rows, row_files(out))
            print(
                f"  {now:6.0f} s: {max_rows}/{total} rows, driver RSS {last_rss / 2**20:.0f} MiB "
                f"(peak {peak / 2**20:.0f} MiB)",
                flush=True,
            )
            next_print += progress_every
        time.sleep(1.0)
    wall = time.monotonic() - start
    if process.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"the launcher exited with {process.returncode}; log: {log}")
    return {
        "wall_start": wall_start,
        "wall_s": wall,
        "first_row_s": first_row,
        "marks": marks,
        "peak_rss": peak,
        "rss_samples": rss_samples,
        "loads": loads,
    }


def quarters(finished: list[float], start: float) -> dict:
    """points/s in each quarter of the points by finishing order (quarter 1 from the first row)."""
    finished = sorted(finished)
    n = len(finished)
    cuts = [0, n // 4, n // 2, 3 * n // 4, n - 1]
    rates = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        span = finished[b] - finished[a]
        rates.append((b - a) / span if span > 0 else float("inf"))
    return {
        "first_row_from_rows_s": finished[0] - start,
        "last_row_s": finished[-1] - start,
        "points_per_s_by_quarter": rates,
        "points_per_s_overall": (n - 1) / (finished[-1] - finished[0]) if n > 1 else None,
    }


def dry_run(grid: Path, work: Path) -> dict:
    """`--dry-run --format json` of a grid: wall time and peak RSS (wait4: this process only)."""
    command = [
        sys.executable, "-m", "sweep.launch", "--grid", str(grid), "--store",
        str(work / "dry-results"), "--checkpoints", str(work / "checkpoints"), "--dry-run",
        "--format", "json",
    ]  # fmt: skip
    print("$ " + " ".join(command), flush=True)
    start = time.monotonic()
    with open(work / "dry-run.json", "w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=launcher_env(), stdout=handle)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    if process.returncode != 0:
        raise SystemExit(f"--dry-run exited with {process.returncode}")
    summary = json.loads((work / "dry-run.json").read_text())
    return {
        "points": summary["trials"],
        "cells": summary.get("cells"),
        "seconds": seconds,
        "peak_rss": usage.ru_maxrss * 1024,
    }


def load_now() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=int, default=500, help="sparsities (0.5 … 0.999)")
    parser.add_argument("--seeds", type=int, default=10, help="calibration seeds of bn_recal")
    parser.add_argument("--images", type=int, default=32, help="calibration and eval images")
    parser.add_argument(
        "--dry-run-sparsities", type=int, default=1000, help="sparsities of the dry-run grid"
    )
    parser.add_argument("--dry-run-seeds", type=int, default=25, help="seeds of the dry-run grid")
    parser.add_argument("--skip-run", action="store_true", help="only the --dry-run timing")
    parser.add_argument("--skip-dry-run", action="store_true", help="only the stress run")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "launch_args", nargs="*", help="after --: extra launcher flags (e.g. --max-concurrent 2)"
    )
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="sweep-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PRUNE_SWEEP_CACHE"] = str(work / "cache")  # nothing defaults to ~/.cache
    print(f"work directory {work}; load average {load_now()}", flush=True)
    result: dict = {"load_average_start": load_now()}
    try:
        write_checkpoint(work / "checkpoints")
        if not args.skip_dry_run:
            dry_grid = write_grid(
                work / "dry.yaml", "scale_dry",
                sparsity_values(args.dry_run_sparsities, 0.0, 0.999), args.dry_run_seeds,
                args.images,
            )  # fmt: skip
            dry = dry_run(dry_grid, work)
            print(
                f"--dry-run of {dry['points']} points ({dry['cells']} cells): "
                f"{dry['seconds']:.1f} s, peak RSS {dry['peak_rss'] / 2**30:.2f} GiB",
                flush=True,
            )
            result |= {
                "dry_run_points": dry["points"],
                "dry_run_cells": dry["cells"],
                "dry_run_s": round(dry["seconds"], 2),
                "dry_run_peak_rss_gib": round(dry["peak_rss"] / 2**30, 3),
            }
        if not args.skip_run:
            sparsities = sparsity_values(args.sparsities, 0.5, 0.999)
            grid = write_grid(work / "stress.yaml", "scale", sparsities, args.seeds, args.images)
            total = expected_points(grid)
            print(
                f"stress grid: {len(ALLOCATIONS)} allocations × {len(sparsities)} sparsities × "
                f"(none + bn_recal × {args.seeds} seeds) = {total} points, "
                f"{args.images} calibration / eval images",
                flush=True,
            )
            run = launch(grid, work, total, args.launch_args)
            result |= summarise(run, work / "results", total)
        result["load_average_end"] = load_now()
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


def summarise(run: dict, out: Path, total: int) -> dict:
    """Print the stress run's numbers; return them for the JSON line."""
    from sweep.results.store import read_results

    frame = read_results(out, columns=["trial_key", "status", "finished_at"])
    ok = int((frame["status"] == "ok").sum())
    finished = [t.timestamp() for t in frame["finished_at"]]
    q = quarters(finished, run["wall_start"])
    rates = q["points_per_s_by_quarter"]
    last_over_first = rates[3] / rates[0]
    print(f"rows: {len(frame)} of {total} points ({ok} ok)")
    steps = ", ".join(f"{name} at {t:.1f} s" for name, t in run["marks"].items())
    print(
        f"time to the first row: {run['first_row_s']:.1f} s after starting the launcher ({steps})"
    )
    print(
        "points/s by quarter of the points: "
        + ", ".join(f"{r:.1f}" for r in rates)
        + f" (last / first {last_over_first:.2f}; overall {q['points_per_s_overall']:.1f})"
    )
    print(f"driver peak RSS: {run['peak_rss'] / 2**30:.2f} GiB")
    print(f"wall time: {run['wall_s']:.1f} s (last row at {q['last_row_s']:.1f} s)")
    loads = run["loads"] or [float(load_now().split()[0])]
    load_range = [min(loads), sum(loads) / len(loads), max(loads)]
    print(
        "1-minute load average during the run (min / mean / max): "
        + " / ".join(f"{v:.2f}" for v in load_range)
    )
    samples = [rss for _, rss in run["rss_samples"]]  # about one a second
    chunks = [samples[len(samples) * i // 4 : len(samples) * (i + 1) // 4] for i in range(4)]
    rss_quarters = [max(chunk, default=0) / 2**20 for chunk in chunks]
    print(
        "driver RSS, max in each quarter of the run after the first row (MiB): "
        + ", ".join(f"{r:.0f}" for r in rss_quarters)
    )
    return {
        "points": total,
        "rows": len(frame),
        "ok": ok,
        "first_row_s": round(run["first_row_s"], 2),
        "first_row_steps_s": {name: round(t, 2) for name, t in run["marks"].items()},
        "points_per_s_by_quarter": [round(r, 2) for r in rates],
        "last_over_first_quarter": round(last_over_first, 3),
        "points_per_s_overall": round(q["points_per_s_overall"], 2),
        "driver_peak_rss_gib": round(run["peak_rss"] / 2**30, 3),
        "driver_rss_mib_by_quarter_of_run": [round(r) for r in rss_quarters],
        "wall_s": round(run["wall_s"], 1),
        "load_1min_during_run_min_mean_max": [round(v, 2) for v in load_range],
    }


if __name__ == "__main__":
    main()
