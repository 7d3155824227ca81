"""`python -m sweep.launch`: run a grid on Ray Tune, one Parquet row per finished trial.

Preflight first (names, data, checkpoints; nothing written on failure), then Ray, optional dense
training as Ray tasks, then one Tune trial per missing grid point. Rerunning the same command
resumes: trials whose key already has an `ok` row are skipped, errored ones run again.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our store is the log
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")

from sweep.cache import default_cache_dir  # noqa: E402
from sweep.errors import UserError, cli_main  # noqa: E402
from sweep.grid import NAMED_GRIDS, Grid, TrialConfig, load_grid  # noqa: E402
from sweep.plugins import load_plugins  # noqa: E402
from sweep.preflight import Plan, make_plan, require_runnable  # noqa: E402
from sweep.store import ResultStore  # noqa: E402
from sweep.tasks.data import DEFAULT_DATA_ROOT  # noqa: E402
from sweep.trial import TrialContext  # noqa: E402

DEFAULT_RETRIES = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.launch",
        description=(
            "Run a pruning × label-free repair grid on Ray Tune. Each trial loads a dense "
            "checkpoint, prunes it with the grid's allocation and sparsity, repairs it without "
            "labels and evaluates it; every finished trial becomes one Parquet row under --out. "
            "Running the same command again resumes where it stopped."
        ),
    )
    parser.add_argument(
        "--grid",
        required=True,
        help=f"a named grid ({', '.join(NAMED_GRIDS)}) or a YAML grid file",
    )
    parser.add_argument("--out", type=Path, help="result store directory (default results/<grid>)")
    parser.add_argument(
        "--address",
        help="join an existing Ray cluster ('auto' or HOST:PORT); default: start Ray locally",
    )
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions pack)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run and what is missing; no Ray"
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="--dry-run output"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over in a new store (the old one is moved aside, never deleted)",
    )
    parser.add_argument(
        "--pretrain",
        choices=("auto", "never"),
        default="never",
        help="auto: train missing dense checkpoints first, as Ray tasks",
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=Path("checkpoints"), help="dense checkpoints"
    )
    parser.add_argument("--data-root", type=Path, help="where datasets live (default: ./data)")
    parser.add_argument("--cache-dir", type=Path, help="node-local artefact cache")
    parser.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="retries of a failing trial"
    )
    return parser


def print_plan(plan: Plan, fmt: str) -> None:
    summary = plan.summary()
    if fmt == "json":
        print(json.dumps(summary, indent=2))
        return
    print(
        f"grid {summary['grid']}: {summary['trials']} trials, {summary['done']} done, "
        f"{summary['todo']} to run"
    )
    print(f"  {'dataset':<14} {'arch':<12} {'trials':>7} {'to run':>7}")
    for pair in summary["pairs"]:
        print(f"  {pair['dataset']:<14} {pair['arch']:<12} {pair['trials']:>7} {pair['todo']:>7}")
    missing = summary["missing"]
    for name in missing["data"]:
        print(f"missing data: {name}")
    for name in missing["checkpoints"]:
        print(f"missing checkpoint: {name}")
    for text in missing["bad_checkpoints"]:
        print(f"bad checkpoint: {text}")


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    _check_resources(args)
    load_plugins()
    grid = load_grid(args.grid)
    out = args.out or Path("results") / grid.name
    plan = make_plan(grid, ResultStore(out), args.checkpoints, args.data_root)
    if args.dry_run:
        print_plan(plan, args.format)
        return 0
    require_runnable(plan, pretrain=args.pretrain == "auto")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out.parent / f".{out.name}.lock"):
        if args.restart and out.exists():
            moved = out.with_name(f"{out.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            out.rename(moved)
            print(f"--restart: previous results moved to {moved}")
            plan = make_plan(grid, ResultStore(out), args.checkpoints, args.data_root)
        ResultStore(out).remove_stale_temporaries()
        return _run_sweep(args, grid, plan, out)


def _check_resources(args: argparse.Namespace) -> None:
    for name in ("gpus_per_trial", "cpus_per_trial"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UserError(f"--{name.replace('_', '-')} {value} must not be negative")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent {args.max_concurrent} must be at least 1")
    if args.retries < 0:
        raise UserError(f"--retries {args.retries} must not be negative")


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One driver per store: a second launch on the same --out fails fast instead of racing."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another sweep is writing to this store (lock {path})") from None
        yield


def _run_sweep(args: argparse.Namespace, grid: Grid, plan: Plan, out: Path) -> int:
    import ray

    from sweep import engine

    if not plan.missing_checkpoints and not plan.todo:  # nothing to do: no need for Ray
        print(f"grid {grid.name}: all {len(plan.trials)} trials already done; results in {out}")
        return 0
    started = time.monotonic()
    started_ray, dashboard = engine.connect(args.address)
    try:
        return _run_on_ray(args, grid, plan, out, started, dashboard)
    finally:
        if started_ray:
            ray.shutdown()


def _run_on_ray(
    args: argparse.Namespace,
    grid: Grid,
    plan: Plan,
    out: Path,
    started: float,
    dashboard: str | None,
) -> int:
    from sweep import engine  # Ray and Tune load only when a sweep really runs

    print(f"results: {out.resolve()}")
    print(f"ray dashboard: {dashboard or 'not available'}")
    gpus = engine.effective_gpus(
        args.gpus_per_trial
        if args.gpus_per_trial is not None
        else grid.resources.get("gpus_per_trial", 0.0),
        joining=args.address is not None,
    )
    cpus = args.cpus_per_trial or grid.resources.get("cpus_per_trial", 1.0)
    if plan.missing_checkpoints:
        engine.pretrain(plan.missing_checkpoints, args.checkpoints, args.data_root, gpus=gpus)
        plan = make_plan(grid, ResultStore(out), args.checkpoints, args.data_root)
        require_runnable(plan, pretrain=False)
    todo = plan.todo
    print(
        f"grid {grid.name}: {len(plan.trials)} trials, {plan.done} already done, "
        f"{len(todo)} to run ({cpus:g} CPU, {gpus:g} GPU per trial)"
    )
    if not todo:
        return 0
    # Paths are made absolute here: cluster nodes hold the repository at the same path, but a
    # worker's working directory is not the driver's. The cache stays node-local: unless given,
    # each node resolves its own default.
    cache_dir = args.cache_dir.resolve() if args.cache_dir else None
    if args.address is None:
        cache_dir = cache_dir or default_cache_dir()
        engine.prepare_eval_caches(grid, args.data_root, cache_dir)
    context = TrialContext(
        checkpoint_dir=args.checkpoints.resolve(),
        data_root=(args.data_root or DEFAULT_DATA_ROOT).resolve(),
        cache_dir=cache_dir,
        grid=grid.name,
    )
    store = ResultStore(out)
    writer = engine.run_trials(
        todo,
        context,
        store,
        cpus=cpus,
        gpus=gpus,
        max_concurrent=args.max_concurrent,
        retries=args.retries,
        tune_dir=out.parent / f".{out.name}.tune",
    )
    store.compact()
    minutes = (time.monotonic() - started) / 60
    print(f"finished {writer.written} trials in {minutes:.1f} min; results in {out}")
    if writer.failed:
        print(f"{len(writer.failed)} trial(s) failed:", file=sys.stderr)
        for config, message in writer.failed:
            print(f"  {_describe(config)}: {message}", file=sys.stderr)
        return 1
    missing = len(todo) - writer.written - len(writer.failed)
    if missing:
        print(f"{missing} trial(s) did not finish (interrupted?); rerun to resume", file=sys.stderr)
        return 1
    return 0


def _describe(config: TrialConfig) -> str:
    return (
        f"{config.dataset}/{config.arch} {config.allocation} s={config.sparsity:g} "
        f"{config.repair} seed={config.seed}"
    )


if __name__ == "__main__":
    sys.exit(main())
