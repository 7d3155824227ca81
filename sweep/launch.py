"""`python -m sweep.launch`: run a grid on Ray Tune, one Parquet row per finished trial.

Preflight first (names, data, checkpoints; nothing written on failure), then Ray, optional dense
training as Ray tasks, then the missing grid points grouped into cells (every point of one pruned
model), one Tune trial per cell or per chunk of cells of one checkpoint. Rerunning the same command
resumes: trials whose key already has an `ok` row are skipped, errored ones run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our store is the log
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")

from sweep.core.arguments import ArgumentParser  # noqa: E402
from sweep.core.errors import UserError, cli_main  # noqa: E402
from sweep.core.plugins import load_plugins  # noqa: E402
from sweep.plan.cells import (  # noqa: E402
    MAX_TRIALS,
    cells_per_trial,
    check_cells_per_trial,
    chunk_cells,
    group_cells,
)
from sweep.plan.device_fit import check_local_gpu  # noqa: E402
from sweep.plan.grid import NAMED_GRIDS, Grid, load_grid, validate  # noqa: E402
from sweep.plan.identity import EVAL_PRECISIONS  # noqa: E402
from sweep.plan.preflight import Plan, make_plan, refresh_store, require_runnable  # noqa: E402
from sweep.results.store import ResultStore  # noqa: E402
from sweep.run.node_cache import default_cache_dir  # noqa: E402
from sweep.run.trial import TrialContext  # noqa: E402
from sweep.tasks.data import DEFAULT_DATA_ROOT  # noqa: E402
from sweep.upgrade import upgrade_store  # noqa: E402

DEFAULT_RETRIES = 2
# Error types with which Ray reports a worker or node that went away (not a failing point).
LOST_TO_RAY = (
    "ActorUnavailableError", "ActorDiedError", "RayActorError", "NodeDiedError",
    "WorkerCrashedError", "OwnerDiedError",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
        "--cells-per-trial",
        type=int,
        help=(
            "cells (every point of one pruned model) run by one Tune trial; default: 1, or as "
            f"many as keep a large grid at {MAX_TRIALS} trials"
        ),
    )
    parser.add_argument(
        "--eval-precision",
        choices=("auto", *EVAL_PRECISIONS),
        default="auto",
        help=(
            "arithmetic of the eval passes, part of every trial's key; auto: bf16 autocast when "
            "trials get GPUs (a local CUDA device, or --address with --gpus-per-trial), else fp32"
        ),
    )
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
    parser.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets first (see python -m sweep.data)",
    )
    return parser


def print_plan(plan: Plan, fmt: str) -> None:
    summary = plan.summary()
    if fmt == "json":
        print(json.dumps(summary, indent=2))
        return
    print(
        f"grid {summary['grid']}: {summary['trials']} trials in {summary['cells']} cells, "
        f"{summary['done']} done, {summary['todo']} to run"
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
    for text in missing["damaged_store_files"]:
        print(f"damaged store file: {text}")
    if summary["legacy_store_files"]:
        print(
            f"{summary['legacy_store_files']} store file(s) of an older trial-key schema: a launch "
            "upgrades them first (their finished trials count as done above)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    options = LaunchOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(LaunchOptions)}
    )
    if args.dry_run:
        options.check()
        load_plugins()
        grid = load_grid(args.grid)
        out = options.out or default_out(grid)
        plan = make_plan(
            grid, ResultStore(out), options.checkpoints, options.data_root, options.precision(grid)
        )
        print_plan(plan, args.format)
        return 0
    return run_grid(args.grid, options).exit_code


@dataclass
class LaunchOptions:
    """How to run a grid; the CLI's flags, and the keyword arguments of `run_grid`."""

    out: Path | None = None
    address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    restart: bool = False
    pretrain: str = "never"
    checkpoints: Path = Path("checkpoints")
    data_root: Path | None = None
    cache_dir: Path | None = None
    retries: int = DEFAULT_RETRIES
    download: bool = False
    cells_per_trial: int | None = None
    eval_precision: str = "auto"

    def requested_gpus(self, grid: Grid) -> float:
        """GPUs per trial as asked for: the flag, else the grid's resources."""
        if self.gpus_per_trial is not None:
            return self.gpus_per_trial
        return grid.resources.get("gpus_per_trial", 0.0)

    def precision(self, grid: Grid) -> str:
        """The trials' eval precision, decided before planning since it is part of every key."""
        if self.eval_precision != "auto":
            return self.eval_precision
        if self.requested_gpus(grid) > 0 and (self.address is not None or _local_cuda()):
            return "bf16"
        return "fp32"

    def check(self) -> None:
        """Bad values, each named, before anything else happens."""
        for name in ("gpus_per_trial", "cpus_per_trial"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserError(f"--{name.replace('_', '-')} {value} must not be negative")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserError(f"--max-concurrent {self.max_concurrent} must be at least 1")
        if self.retries < 0:
            raise UserError(f"--retries {self.retries} must not be negative")
        if self.pretrain not in ("auto", "never"):
            raise UserError(f"--pretrain {self.pretrain!r}; expected auto or never")
        if self.eval_precision not in ("auto", *EVAL_PRECISIONS):
            expected = ", ".join(("auto", *EVAL_PRECISIONS))
            raise UserError(f"--eval-precision {self.eval_precision!r}; expected one of {expected}")
        check_cells_per_trial(self.cells_per_trial)


def _local_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class ResultSummary:
    """What a `run_grid` call did; `exit_code` is the CLI's (0 ok, 1 failed or unfinished)."""

    grid: str
    out: Path
    trials: int
    already_done: int
    written: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    unfinished: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.unfinished else 0


def default_out(grid: Grid) -> Path:
    return Path("results") / grid.name


def run_grid(
    grid: Grid | str, options: LaunchOptions | None = None, **kwargs: object
) -> ResultSummary:
    """Run a grid (a `Grid`, a named grid or a YAML path) and return what happened.

    The notebook API and the CLI's body alike: `run_grid("demo", out=Path("results/demo"))`.
    Keyword arguments are `LaunchOptions` fields. Bad input raises UserError before any work.
    """
    options = dataclasses.replace(options or LaunchOptions(), **kwargs)
    options.check()
    load_plugins()
    if isinstance(grid, str):
        grid = load_grid(grid)
    else:
        validate(grid)
    out = options.out or default_out(grid)
    if options.download:
        _download_missing(grid, options.data_root)
    if options.address is None:
        check_local_gpu(grid, options.requested_gpus(grid))
    precision = options.precision(grid)
    plan = make_plan(grid, ResultStore(out), options.checkpoints, options.data_root, precision)
    require_runnable(plan, pretrain=options.pretrain == "auto")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out.parent / f".{out.name}.lock"):
        if options.restart and out.exists():
            moved = out.with_name(f"{out.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            out.rename(moved)
            print(f"--restart: previous results moved to {moved}")
        store = ResultStore(out)
        if plan.legacy_files and not options.restart:
            report = upgrade_store(store)
            print(
                f"upgraded {report.rows} rows of an older trial-key schema to today's keys "
                f"(old files kept in {report.backup})"
            )
        plan = refresh_store(plan, store)
        require_runnable(plan, pretrain=options.pretrain == "auto")
        store.remove_stale_temporaries()
        return _run_sweep(options, grid, plan, out)


def _download_missing(grid: Grid, data_root: Path | None) -> None:
    from sweep.tasks import data

    for name in grid.datasets:
        if data.find_data(name, data_root) is None:
            print(f"downloading {name} …")
            data.download(name, data_root)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One driver per store: a second launch on the same --out fails fast instead of racing."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another sweep is writing to this store (lock {path})") from None
        yield


def _run_sweep(options: LaunchOptions, grid: Grid, plan: Plan, out: Path) -> ResultSummary:
    import ray

    from sweep.run import engine

    if not plan.missing_checkpoints and not plan.todo:  # nothing to do: no need for Ray
        print(f"grid {grid.name}: all {len(plan.trials)} trials already done; results in {out}")
        return ResultSummary(grid.name, out, len(plan.trials), plan.done, written=0)
    started = time.monotonic()
    started_ray, dashboard = engine.connect(options.address)
    try:
        summary = _run_on_ray(options, grid, plan, out, started, dashboard)
        lost = [label for label, message in summary.failed if message.startswith(LOST_TO_RAY)]
        if lost:
            # Tune can give up on a trial whose worker vanished with its node before the retry
            # starts; those points did not fail, they were lost: run them once more, as a rerun
            # of the same command would.
            print(f"{len(lost)} point(s) were lost with a worker or node; running them again")
            plan = refresh_store(plan, ResultStore(out))
            summary = _run_on_ray(options, grid, plan, out, started, dashboard)
        return summary
    finally:
        if started_ray:
            ray.shutdown()


def _run_on_ray(
    options: LaunchOptions,
    grid: Grid,
    plan: Plan,
    out: Path,
    started: float,
    dashboard: str | None,
) -> ResultSummary:
    from sweep.run import engine  # Ray and Tune load only when a sweep really runs

    print(f"results: {out.resolve()}")
    print(f"ray dashboard: {dashboard or 'not available'}")
    gpus = engine.effective_gpus(options.requested_gpus(grid), joining=options.address is not None)
    cpus = options.cpus_per_trial or grid.resources.get("cpus_per_trial", 1.0)
    if plan.missing_checkpoints:
        engine.pretrain(plan.missing_checkpoints, options.checkpoints, options.data_root, gpus=gpus)
        plan = make_plan(
            grid, ResultStore(out), options.checkpoints, options.data_root, options.precision(grid)
        )
        require_runnable(plan, pretrain=False)
    todo = plan.todo
    cells = group_cells(todo)
    chunks = chunk_cells(cells, cells_per_trial(len(cells), options.cells_per_trial))
    print(
        f"grid {grid.name}: {len(plan.trials)} trials, {plan.done} already done, "
        f"{len(todo)} to run in {len(cells)} cells on {len(chunks)} Tune trials "
        f"({cpus:g} CPU, {gpus:g} GPU per trial)"
    )
    if not todo:
        return ResultSummary(grid.name, out, len(plan.trials), plan.done, written=0)
    # Paths are made absolute here: cluster nodes hold the repository at the same path, but a
    # worker's working directory is not the driver's. The cache stays node-local: unless given,
    # each node resolves its own default.
    cache_dir = options.cache_dir.resolve() if options.cache_dir else None
    if options.address is None:
        cache_dir = cache_dir or default_cache_dir()
        engine.prepare_eval_caches(grid, options.data_root, cache_dir)
    context = TrialContext(
        checkpoint_dir=options.checkpoints.resolve(),
        data_root=(options.data_root or DEFAULT_DATA_ROOT).resolve(),
        cache_dir=cache_dir,
        grid=grid.name,
    )
    store = ResultStore(out)
    writer = engine.run_cells(
        chunks,
        context,
        store,
        cpus=cpus,
        gpus=gpus,
        max_concurrent=options.max_concurrent,
        retries=options.retries,
        tune_dir=out.parent / f".{out.name}.tune",
    )
    store.compact()
    minutes = (time.monotonic() - started) / 60
    print(f"finished {writer.written} trials in {minutes:.1f} min; results in {out}")
    failed = [(config.describe(), message) for config, message in writer.failed]
    if failed:
        print(f"{len(failed)} trial(s) failed:", file=sys.stderr)
        for label, message in failed:
            print(f"  {label}: {message}", file=sys.stderr)
    unfinished = len(todo) - writer.written - len(writer.failed)
    if unfinished:
        print(
            f"{unfinished} trial(s) did not finish (interrupted?); rerun to resume", file=sys.stderr
        )
    return ResultSummary(
        grid.name, out, len(plan.trials), plan.done, writer.written, failed, unfinished
    )


if __name__ == "__main__":
    sys.exit(main())
