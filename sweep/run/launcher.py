"""A launch from start to end: plan and check once, take the store, run the cells on Ray.

The stages, each a function below, hand typed results along (`Grid` → `Plan` → `ResultSummary`):

1. `prepare`: options checked, grid loaded and validated, missing data downloaded (with
   --download), the GPU share checked, the plan made and checked (nothing written so far);
2. `_take_store` (under the store's lock): --restart moves the old store aside, rows of an older
   key schema are upgraded, and the plan's view of the store is refreshed;
3. `_run_sweep`: Ray connected, missing checkpoints trained (the plan verifies just those), eval
   caches warmed, the cells run on Tune; points Ray lost with a worker or node run once more.
"""

from __future__ import annotations

import dataclasses
import fcntl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sweep.core import paths
from sweep.core.errors import UserError
from sweep.core.paths import default_cache_dir
from sweep.core.plugins import load_plugins
from sweep.plan.cells import cells_per_trial, chunk_cells, group_cells
from sweep.plan.device_fit import check_local_gpu
from sweep.plan.grid import Grid, load_grid, validate
from sweep.plan.options import LaunchOptions
from sweep.plan.preflight import (
    Plan,
    add_trained_checkpoints,
    make_plan,
    refresh_store,
    require_runnable,
)
from sweep.results.legacy import upgrade_store
from sweep.results.store import ResultStore
from sweep.run.trial import TrialContext

# Error types with which Ray reports a worker or node that went away (not a failing point).
LOST_TO_RAY = (
    "ActorUnavailableError", "ActorDiedError", "RayActorError", "NodeDiedError",
    "WorkerCrashedError", "OwnerDiedError",
)  # fmt: skip


@dataclass(frozen=True)
class ResultSummary:
    """What a `run_grid` call did; `exit_code` is the CLI's (0 ok, 1 failed or unfinished)."""

    grid: str
    store: Path
    trials: int
    already_done: int
    written: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    unfinished: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.unfinished else 0


def run_grid(
    grid: Grid | str, options: LaunchOptions | None = None, **kwargs: object
) -> ResultSummary:
    """Run a grid (a `Grid`, a named grid or a YAML path) and return what happened.

    The notebook API and the CLI's body alike: `run_grid("demo", store=Path("results/demo"))`.
    Keyword arguments are `LaunchOptions` fields. Bad input raises UserError before any work.
    """
    options = dataclasses.replace(options or LaunchOptions(), **kwargs)
    plan = prepare(grid, options, dry_run=False)
    store = options.store_for(plan.grid)
    store.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(store.parent / f".{store.name}.lock"):
        plan = _take_store(plan, options, store)
        return _run_sweep(options, plan, store)


def prepare(grid: Grid | str, options: LaunchOptions, dry_run: bool) -> Plan:
    """Every check that needs no Ray, done once; a dry run stops here and reports what it found."""
    options.check()
    load_plugins()
    if isinstance(grid, str):
        grid = load_grid(grid)
    else:
        validate(grid)
    if options.download and not dry_run:
        _download_missing(grid, options.data_root)
    if options.address is None:
        check_local_gpu(grid, options.requested_gpus(grid))
    plan = make_plan(
        grid,
        ResultStore(options.store_for(grid)),
        options.checkpoints,
        options.data_root,
        options.precision(grid),
    )
    if not dry_run:
        require_runnable(plan, pretrain=options.pretrain == "auto")
    return plan


def _download_missing(grid: Grid, data_root: Path | None) -> None:
    from sweep.tasks import data

    for name in grid.datasets:
        if data.find_data(name, data_root) is None:
            print(f"downloading {name} …")
            data.download(name, data_root)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One driver per store: a second launch on the same store fails fast instead of racing."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another sweep is writing to this store (lock {path})") from None
        yield


def _take_store(plan: Plan, options: LaunchOptions, root: Path) -> Plan:
    """Move the old store aside (--restart) or upgrade its older rows, then read it again."""
    if options.restart and root.exists():
        moved = root.with_name(f"{root.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        root.rename(moved)
        print(f"--restart: previous results moved to {moved}")
    store = ResultStore(root)
    if plan.legacy_files and not options.restart:
        report = upgrade_store(store)
        print(
            f"upgraded {report.rows} rows of an older trial-key schema to today's keys "
            f"(old files kept in {report.backup})"
        )
    store.remove_stale_temporaries()
    return refresh_store(plan, store)


def _run_sweep(options: LaunchOptions, plan: Plan, root: Path) -> ResultSummary:
    import ray

    from sweep.run import engine  # Ray and Tune load only when a sweep really runs

    if not plan.missing_checkpoints and not plan.todo:  # nothing to do: no need for Ray
        print(
            f"grid {plan.grid.name}: all {len(plan.trials)} trials already done; results in {root}"
        )
        return ResultSummary(plan.grid.name, root, len(plan.trials), plan.done, written=0)
    started = time.monotonic()
    started_ray, dashboard = engine.connect(options.address)
    try:
        print(f"results: {root.resolve()}")
        print(f"ray dashboard: {dashboard or 'not available'}")
        summary = _run_on_ray(options, plan, root, started)
        lost = [label for label, message in summary.failed if message.startswith(LOST_TO_RAY)]
        if lost:
            # Tune can give up on a trial whose worker vanished with its node before the retry
            # starts; those points did not fail, they were lost: run them once more, as a rerun
            # of the same command would.
            print(f"{len(lost)} point(s) were lost with a worker or node; running them again")
            plan = refresh_store(plan, ResultStore(root))
            summary = _run_on_ray(options, plan, root, started)
        return summary
    finally:
        if started_ray:
            ray.shutdown()


def _run_on_ray(options: LaunchOptions, plan: Plan, root: Path, started: float) -> ResultSummary:
    from sweep.run import engine

    grid = plan.grid
    gpus = engine.effective_gpus(options.requested_gpus(grid), joining=options.address is not None)
    cpus = options.cpus_per_trial or grid.resources.get("cpus_per_trial", 1.0)
    if plan.missing_checkpoints:
        engine.pretrain(plan.missing_checkpoints, options.checkpoints, options.data_root, gpus=gpus)
        plan = add_trained_checkpoints(plan)
    todo = plan.todo
    cells = group_cells(todo)
    chunks = chunk_cells(cells, cells_per_trial(len(cells), options.cells_per_trial))
    print(
        f"grid {grid.name}: {len(plan.trials)} trials, {plan.done} already done, "
        f"{len(todo)} to run in {len(cells)} cells on {len(chunks)} Tune trials "
        f"({cpus:g} CPU, {gpus:g} GPU per trial)"
    )
    if not todo:
        return ResultSummary(grid.name, root, len(plan.trials), plan.done, written=0)
    store = ResultStore(root)
    writer = engine.run_cells(
        chunks,
        _trial_context(options, grid),
        store,
        cpus=cpus,
        gpus=gpus,
        max_concurrent=options.max_concurrent,
        retries=options.retries,
        tune_dir=root.parent / f".{root.name}.tune",
    )
    store.compact()
    minutes = (time.monotonic() - started) / 60
    print(f"finished {writer.written} trials in {minutes:.1f} min; results in {root}")
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
        grid.name, root, len(plan.trials), plan.done, writer.written, failed, unfinished
    )


def _trial_context(options: LaunchOptions, grid: Grid) -> TrialContext:
    """What every trial needs to find its inputs, warming the local eval caches on the way.

    Paths are made absolute here: cluster nodes hold the repository at the same path, but a
    worker's working directory is not the driver's. The cache stays node-local: unless given,
    each node resolves its own default.
    """
    from sweep.run import engine

    cache_dir = options.cache_dir.resolve() if options.cache_dir else None
    if options.address is None:
        cache_dir = cache_dir or default_cache_dir()
        engine.prepare_eval_caches(grid, options.data_root, cache_dir)
    return TrialContext(
        checkpoint_dir=options.checkpoints.resolve(),
        data_root=(options.data_root or paths.DATA_ROOT).resolve(),
        cache_dir=cache_dir,
        grid=grid.name,
    )
