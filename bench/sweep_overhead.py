"""What the sweep machinery costs, on a fixed 24-trial slice of the demo grid (full eval set).

Three measurements in one run, each mode a fresh subprocess timed by wall clock (interpreter and
torch import included), each from an empty artefact cache (the decoded eval/calibration caches
are shared: decoding is a one-off preparation step, not what is compared):

- overhead:  the slice through `python -m sweep.launch` (Ray start-up, Tune, store writes) versus
             the same trials in one plain Python loop calling `sweep.trial.run_trial` with the
             same artefact cache and writing the same rows.  -> sweep_over_loop
- naive:     one fresh process per trial that reloads the checkpoint and recomputes dense logits,
             dense statistics and masks (its own empty cache), two processes at a time (the
             sweep's parallelism on 2 cores), on the whole slice, against the sweep on the
             whole slice.  -> naive_over_sweep
- growth:    the sweep on 1/4, 1/2 and all of the slice.  -> seconds_by_fraction; the per-trial
             marginal cost of each step is printed to judge linearity.

Run: `.venv/bin/python bench/sweep_overhead.py [--checkpoints checkpoints]` (needs the demo
checkpoint of replicate 0: `make demo` or `python -m sweep.pretrain --dataset fashion_mnist
--arch resnet20`).
The last line is JSON: {"sweep_over_loop", "naive_over_sweep", "seconds_by_fraction"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

SPARSITIES = [0.88, 0.90, 0.92, 0.94]
REPAIRS = ["none", "bn_recal"]
SEEDS = [0, 1]
FRACTIONS = {  # fraction -> (allocations, sparsities): 6, 12 and 24 trials
    "0.25": (["erk"], SPARSITIES[:2]),
    "0.5": (["erk"], SPARSITIES),
    "1": (["erk", "lamp"], SPARSITIES),
}


def write_grid(path: Path, allocations: list[str], sparsities: list[float]) -> Path:
    grid = {
        "name": path.stem,
        "datasets": ["fashion_mnist"],
        "archs": ["resnet20"],
        "allocations": allocations,
        "sparsities": sparsities,
        "repairs": REPAIRS,
        "seeds": SEEDS,
        "calib_size": 512,
        "eval_limit": None,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }
    path.write_text(yaml.safe_dump(grid))
    return path


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_loop(grid_path: Path, checkpoints: Path, cache: Path, out: Path) -> None:
    """The same trials as the sweep, in one process: run_trial + the store writes it makes."""
    from sweep.grid import expand, load_grid
    from sweep.store import ResultStore
    from sweep.tasks import models
    from sweep.trial import TrialContext, run_in_process

    grid = load_grid(str(grid_path))
    digest = models.read_meta(models.checkpoint_path(checkpoints, "fashion_mnist", "resnet20", 0))
    trials = expand(grid, {("fashion_mnist", "resnet20", 0): digest.sha256})
    context = TrialContext(checkpoints.resolve(), None, cache, grid.name)
    store = ResultStore(out)
    run_in_process(trials, context, store)
    store.compact()


def run_one(trial_json: str, checkpoints: Path, cache: Path) -> None:
    """Naive: a fresh process per trial, nothing shared (its own empty cache)."""
    from sweep.identity import TrialConfig
    from sweep.trial import TrialContext, run_trial

    trial = TrialConfig.from_dict(json.loads(trial_json))
    run_trial(trial, TrialContext(checkpoints.resolve(), None, cache, "naive"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--mode", choices=("bench", "loop", "one"), default="bench")
    parser.add_argument("--grid", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--trial")
    args = parser.parse_args()
    if args.mode == "loop":
        return run_loop(args.grid, args.checkpoints, args.cache, args.out)
    if args.mode == "one":
        return run_one(args.trial, args.checkpoints, args.cache)

    from sweep.grid import expand, load_grid
    from sweep.tasks import data, models

    me = [sys.executable, __file__, "--checkpoints", str(args.checkpoints)]
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    grids = {f: write_grid(work / f"slice{f}.yaml", *spec) for f, spec in FRACTIONS.items()}
    data.eval_set("fashion_mnist", cache_dir=work / "shared")  # decode once for every mode
    for seed in SEEDS:
        data.calibration_set("fashion_mnist", 512, seed, cache_dir=work / "shared")

    def fresh_cache(name: str) -> Path:
        cache = work / name
        subprocess.run(["cp", "-r", str(work / "shared"), str(cache)], check=True)
        return cache

    def sweep(fraction: str) -> float:
        return timed(
            [sys.executable, "-m", "sweep.launch", "--grid", str(grids[fraction]),
             "--out", str(work / f"sweep{fraction}"), "--checkpoints", str(args.checkpoints),
             "--cache-dir", str(fresh_cache(f"cache-sweep{fraction}"))]
        )  # fmt: skip

    seconds = {fraction: sweep(fraction) for fraction in FRACTIONS}
    for fraction, value in seconds.items():
        print(f"sweep {fraction:>4} of the slice: {value:7.1f} s")
    loop = timed(
        [*me, "--mode", "loop", "--grid", str(grids["1"]), "--cache",
         str(fresh_cache("cache-loop")), "--out", str(work / "loop")]
    )  # fmt: skip
    print(f"plain loop, whole slice:   {loop:7.1f} s")

    path = models.checkpoint_path(args.checkpoints, "fashion_mnist", "resnet20", 0)
    digest = models.read_meta(path)
    whole = expand(load_grid(str(grids["1"])), {("fashion_mnist", "resnet20", 0): digest.sha256})

    def naive_trial(i: int) -> float:
        trial = json.dumps(whole[i].to_dict())
        return timed([*me, "--mode", "one", "--trial", trial, "--cache", str(fresh_cache(f"n{i}"))])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        per_trial = sorted(pool.map(naive_trial, range(len(whole))))
    naive = time.perf_counter() - start
    median = per_trial[len(per_trial) // 2]
    print(f"naive, whole slice:        {naive:7.1f} s (median process {median:.1f} s)")

    step1 = (seconds["0.5"] - seconds["0.25"]) / 6
    step2 = (seconds["1"] - seconds["0.5"]) / 12
    print(
        f"marginal s/trial: 6->12 trials {step1:.2f}, 12->24 trials {step2:.2f} "
        f"(ratio {step2 / step1:.2f}; 1.0 = linear)"
    )
    print(json.dumps({
        "sweep_over_loop": round(seconds["1"] / loop, 3),
        "naive_over_sweep": round(naive / seconds["1"], 3),
        "seconds_by_fraction": {k: round(v, 1) for k, v in seconds.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
