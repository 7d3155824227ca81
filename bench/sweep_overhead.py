"""What the sweep machinery costs, on a fixed 24-point slice of the demo grid (full eval set).

The slice: replicate 0 × ERK and LAMP × 4 sparsities × (`none` + `bn_recal` × 2 seeds) = 24
points in 8 cells (a cell: every point of one pruned model, the unit the launcher schedules).
Three measurements in one run, each mode a fresh subprocess timed by wall clock (interpreter and
torch import included), each from an empty artefact cache (the decoded eval/calibration caches
are shared: decoding is a one-off preparation step, not what is compared):

- overhead:  the slice through `python -m sweep.launch` (Ray start-up, Tune, one trial per cell,
             store writes) versus the same points in one plain Python process calling
             `sweep.run.trial.run_in_process` (cell by cell, the same rows into a store of its own,
             the same artefact cache).  -> sweep_over_loop
- naive:     one fresh process per *point* that reloads the checkpoint and recomputes dense
             logits, dense statistics and masks (its own empty cache), two processes at a time
             (the sweep's parallelism on 2 cores), on the whole slice, against the sweep on the
             whole slice.  -> naive_over_sweep
- growth:    the sweep on 1/4, 1/2 and all of the slice (6, 12 and 24 points; 2, 4 and 8 cells).
             -> seconds_by_fraction; the marginal cost per added point is printed to judge
             linearity.

`--repeats N` runs the whole-slice sweep and the loop N times each, alternately, and quotes
medians (every run listed). Uses the trained demo checkpoint of replicate 0 under --checkpoints
(`make demo` or `python -m sweep.pretrain --dataset fashion_mnist --arch resnet20`) when it is
there, else random weights written to the work directory (timing barely depends on the weights;
the printout says which).

Run: `.venv/bin/python bench/sweep_overhead.py [--checkpoints checkpoints] [--repeats 3]`.
The last line is JSON: {"sweep_over_loop", "naive_over_sweep", "seconds_by_fraction", ...}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from launcher_env import launcher_env

from sweep.core import paths

PAIR = ("fashion_mnist", "resnet20")
SPARSITIES = [0.88, 0.90, 0.92, 0.94]
REPAIRS = ["none", "bn_recal"]
SEEDS = [0, 1]
FRACTIONS = {  # fraction -> (allocations, sparsities): 6, 12 and 24 points
    "0.25": (["erk"], SPARSITIES[:2]),
    "0.5": (["erk"], SPARSITIES),
    "1": (["erk", "lamp"], SPARSITIES),
}


def write_grid(
    path: Path, allocations: list[str], sparsities: list[float], eval_limit: int | None
) -> Path:
    grid = {
        "name": path.stem,
        "datasets": [PAIR[0]],
        "archs": [PAIR[1]],
        "allocations": allocations,
        "sparsities": sparsities,
        "repairs": REPAIRS,
        "seeds": SEEDS,
        "calib_size": 512,
        "eval_limit": eval_limit,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }
    path.write_text(yaml.safe_dump(grid))
    return path


def checkpoint_dir(source: Path, work: Path) -> tuple[Path, str]:
    """`source` when it holds the trained replicate 0, else a random-weight one in `work`."""
    from sweep.core.errors import UserError
    from sweep.tasks import models

    path = paths.checkpoint_file(source, *PAIR, 0)
    try:
        models.verify_checkpoint(path, *PAIR, 0)
        return source, f"trained ({path})"
    except UserError as error:
        reason = str(error)
    import torch

    from sweep.tasks.datasets.holdout import holdout

    torch.manual_seed(0)
    model = models.build_model(PAIR[1], num_classes=10, in_channels=1, image_size=28)
    meta = models.CheckpointMeta(
        arch=PAIR[1], dataset=PAIR[0], num_classes=10, in_channels=1, image_size=28, seed=0,
        held_out=holdout(PAIR[0], 60000).record(),
    )  # fmt: skip
    models.save_checkpoint(model, paths.checkpoint_file(work / "checkpoints", *PAIR, 0), meta)
    return work / "checkpoints", f"random weights ({reason})"


def timed(command: list[str]) -> float:
    """Wall seconds of a subprocess; its output is shown only when it fails."""
    env = launcher_env()
    start = time.perf_counter()
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-6000:], file=sys.stderr)
        raise SystemExit(f"exit code {done.returncode}: {' '.join(command)}")
    return seconds


def run_loop(grid_path: Path, checkpoints: Path, cache: Path, out: Path) -> None:
    """The same points as the sweep, in one process: run_in_process (cells) + the store writes."""
    from sweep.plan.grid import expand, load_grid
    from sweep.results.store import ResultStore
    from sweep.run.trial import TrialContext, run_in_process
    from sweep.tasks import models

    grid = load_grid(str(grid_path))
    digest = models.read_meta(paths.checkpoint_file(checkpoints, *PAIR, 0))
    trials = expand(grid, {(*PAIR, 0): digest.sha256})
    context = TrialContext(checkpoints.resolve(), None, cache, grid.name)
    store = ResultStore(out)
    run_in_process(trials, context, store)
    store.compact()  # as the launcher does at its end


def run_one(trial_json: str, checkpoints: Path, cache: Path) -> None:
    """Naive: a fresh process per point, nothing shared (its own empty cache)."""
    from sweep.plan.identity import TrialConfig
    from sweep.run.trial import TrialContext, run_trial

    trial = TrialConfig.from_dict(json.loads(trial_json))
    run_trial(trial, TrialContext(checkpoints.resolve(), None, cache, "naive"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, default=paths.CHECKPOINTS)
    parser.add_argument("--repeats", type=int, default=1, help="whole-slice sweep and loop runs")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive mode")
    parser.add_argument(
        "--eval-limit", type=int, help="eval images (default: all 10k; fewer to try it out)"
    )
    parser.add_argument("--mode", choices=("bench", "loop", "one"), default="bench")
    parser.add_argument("--grid", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--trial")
    args = parser.parse_args()
    if args.mode == "loop":
        return run_loop(args.grid, args.checkpoints, args.cache, args.store)
    if args.mode == "one":
        return run_one(args.trial, args.checkpoints, args.cache)

    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path) -> None:
    from sweep.plan.grid import expand, load_grid
    from sweep.tasks import data, models

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    checkpoints, weights = checkpoint_dir(args.checkpoints.resolve(), work)
    print(f"checkpoint: {weights}; load average {load}", flush=True)
    me = [sys.executable, __file__, "--checkpoints", str(checkpoints)]
    grids = {
        f: write_grid(work / f"slice{f}.yaml", *spec, args.eval_limit)
        for f, spec in FRACTIONS.items()
    }
    data.eval_set(PAIR[0], cache_dir=work / "shared", limit=args.eval_limit)  # decoded once
    for seed in SEEDS:
        data.calibration_set(PAIR[0], 512, seed, cache_dir=work / "shared")
    runs = iter(range(10**6))

    def fresh_cache(name: str) -> Path:
        cache = work / name
        subprocess.run(["cp", "-r", str(work / "shared"), str(cache)], check=True)
        return cache

    def sweep(fraction: str) -> float:
        n = next(runs)
        return timed(
            [sys.executable, "-m", "sweep.launch", "--grid", str(grids[fraction]),
             "--store", str(work / f"sweep{n}"), "--checkpoints", str(checkpoints),
             "--cache-dir", str(fresh_cache(f"cache-sweep{n}"))]
        )  # fmt: skip

    def loop() -> float:
        n = next(runs)
        return timed(
            [*me, "--mode", "loop", "--grid", str(grids["1"]), "--cache",
             str(fresh_cache(f"cache-loop{n}")), "--store", str(work / f"loop{n}")]
        )  # fmt: skip

    seconds = {fraction: sweep(fraction) for fraction in ("0.25", "0.5")}
    whole_sweeps, loops = [], []
    for _ in range(args.repeats):  # alternate, so a change in load hits both alike
        whole_sweeps.append(sweep("1"))
        loops.append(loop())
    seconds["1"] = statistics.median(whole_sweeps)
    loop_s = statistics.median(loops)
    for fraction, value in seconds.items():
        print(f"sweep {fraction:>4} of the slice: {value:7.1f} s")
    if args.repeats > 1:
        print(f"  whole-slice sweeps: {', '.join(f'{s:.1f}' for s in whole_sweeps)} s (median)")
    print(f"plain loop (run_in_process), whole slice: {loop_s:7.1f} s")
    if args.repeats > 1:
        print(f"  loops: {', '.join(f'{s:.1f}' for s in loops)} s (median)")
    ratios = [s / lp for s, lp in zip(whole_sweeps, loops, strict=True)]
    pairs = ", ".join(f"{r:.3f}" for r in ratios)
    print(f"sweep / loop: {seconds['1'] / loop_s:.3f} (median of each; per pair: {pairs})")

    naive = None
    if not args.skip_naive:
        digest = models.read_meta(paths.checkpoint_file(checkpoints, *PAIR, 0))
        whole = expand(load_grid(str(grids["1"])), {(*PAIR, 0): digest.sha256})

        def naive_point(i: int) -> float:
            point = json.dumps(whole[i].to_dict())
            cache = fresh_cache(f"n{i}")
            return timed([*me, "--mode", "one", "--trial", point, "--cache", str(cache)])

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            per_point = sorted(pool.map(naive_point, range(len(whole))))
        naive = time.perf_counter() - start
        median = statistics.median(per_point)
        print(f"naive, whole slice:        {naive:7.1f} s (median process {median:.1f} s)")

    step1 = (seconds["0.5"] - seconds["0.25"]) / 6
    step2 = (seconds["1"] - seconds["0.5"]) / 12
    print(
        f"marginal s/point: 6->12 points {step1:.2f}, 12->24 points {step2:.2f} "
        f"(ratio {step2 / step1:.2f}; 1.0 = linear)"
    )
    print(json.dumps({
        "sweep_over_loop": round(seconds["1"] / loop_s, 3),
        "sweep_over_loop_per_pair": [round(r, 3) for r in ratios],
        "naive_over_sweep": round(naive / seconds["1"], 3) if naive is not None else None,
        "seconds_by_fraction": {k: round(v, 1) for k, v in seconds.items()},
        "loop_s": round(loop_s, 1),
        "weights": weights.split(" ")[0],
        "eval_limit": args.eval_limit,
        "load_average_start": load,
        "load_average_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
