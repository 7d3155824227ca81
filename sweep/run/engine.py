"""The Ray side of a sweep: connect, train missing checkpoints, run cells on Tune."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweep.core.plugins import PLUGINS_ENV, load_plugins
from sweep.plan.cells import Cell, decode_chunk, encode_chunk
from sweep.plan.grid import Grid
from sweep.results.store import ResultStore
from sweep.run.callbacks import POINTS, ProgressLine, StoreWriter
from sweep.run.trial import PointOutcome, TrialContext, run_cell


def connect(address: str | None) -> tuple[bool, str | None]:
    """Start or join Ray unless this process already did; (whether we started it, dashboard URL).

    A local Ray binds its dashboard to 127.0.0.1; joining a cluster keeps the cluster's own.
    """
    if ray.is_initialized():
        return False, None
    env = {PLUGINS_ENV: os.environ[PLUGINS_ENV]} if os.environ.get(PLUGINS_ENV) else {}
    runtime_env = {"env_vars": env} if env else None
    if address is None:
        context = ray.init(dashboard_host="127.0.0.1", runtime_env=runtime_env, log_to_driver=True)
    else:
        context = ray.init(address=address, runtime_env=runtime_env)
    url = getattr(context, "dashboard_url", None)
    return True, f"http://{url}" if url else None


def effective_gpus(requested: float, joining: bool) -> float:
    """GPUs per trial; on a local machine without GPUs, say so once and run on CPU.

    When joining a cluster the request stands: an autoscaler may still add GPU nodes.
    """
    if requested > 0 and not joining and ray.cluster_resources().get("GPU", 0) == 0:
        print(f"no GPU on this machine: trials run on CPU (requested {requested:g} per trial)")
        return 0.0
    return requested


@ray.remote
def _pretrain_task(
    dataset: str, arch: str, seed: int, out: str, data_root: str | None, threads: int
) -> str:
    import torch

    from sweep.tasks.train import train_dense

    torch.set_num_threads(threads)
    meta = train_dense(
        dataset,
        arch,
        out_dir=Path(out),
        data_root=Path(data_root) if data_root else None,
        seed=seed,
    )
    return meta.sha256


def pretrain(
    missing: list[tuple[str, str, int]],
    checkpoint_dir: Path,
    data_root: Path | None,
    gpus: float,
) -> None:
    """Train each missing dense checkpoint (one per replicate seed) as a Ray task.

    With GPUs each task takes one. On CPUs the largest node's cores are shared out so that every
    task runs at once (a fraction of a core each, one thread, when there are more tasks than
    cores): several small models side by side keep every core busy, where one model's threads
    contend, and no task waits for a core while another sits idle at the end.
    """
    per_node_cpus = max(
        int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]
    )
    cpus = 1.0 if gpus > 0 else max(1, per_node_cpus) / max(1, len(missing))
    if cpus >= 1:
        cpus = float(int(cpus))
    threads = max(1, int(cpus))
    print(
        f"training {len(missing)} missing dense checkpoint(s) first "
        f"({cpus:g} CPU, {threads} thread(s) each): "
        + ", ".join(f"{d}/{a} seed {r}" for d, a, r in missing)
    )
    refs = [
        _pretrain_task.options(num_cpus=cpus, num_gpus=1 if gpus > 0 else 0).remote(
            dataset,
            arch,
            replicate,
            str(checkpoint_dir.resolve()),
            str(data_root.resolve()) if data_root else None,
            threads,
        )
        for dataset, arch, replicate in missing
    ]
    ray.get(refs)


def prepare_eval_caches(grid: Grid, data_root: Path | None, cache_dir: Path) -> None:
    """Decode each eval set once, in the driver, before trials on this node want it."""
    from sweep.tasks import data

    for dataset in grid.datasets:
        data.eval_set(dataset, data_root, cache_dir, limit=grid.eval_limit, split=grid.eval_split)


@ray.remote(num_cpus=0)
class PointLedger:
    """The trial keys that have a row in the store from this run, held beside the driver.

    Tune restarts a failed trial (a lost node, a crashed worker) from its beginning; the
    restarted trial asks the ledger and runs only the points whose rows have not landed.
    """

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def add(self, keys: list[str]) -> None:
        self.keys.update(keys)

    def written(self, keys: list[str]) -> list[str]:
        return [key for key in keys if key in self.keys]


def _outcome_payload(outcome: PointOutcome) -> dict:
    return {
        "key": outcome.config.key,
        "measurements": outcome.measurements,
        "error": outcome.error,
        "attempts": outcome.attempts,
    }


def _trainable(
    config: dict,
    chunks: tuple[bytes, ...],
    context: TrialContext,
    retries: int,
    ledger: ray.actor.ActorHandle,
) -> None:
    """One Tune trial: the cells of one chunk, each reported as soon as its points are done."""
    load_plugins()
    cells = decode_chunk(chunks[config["chunk"]])
    written = set(ray.get(ledger.written.remote([p.key for c in cells for p in c.points])))
    for cell in cells:
        todo = tuple(point for point in cell.points if point.key not in written)
        if todo:
            outcomes = run_cell(Cell(todo), context, retries)
            tune.report({POINTS: [_outcome_payload(o) for o in outcomes]})


def run_cells(
    chunks: list[tuple[Cell, ...]],
    context: TrialContext,
    store: ResultStore,
    cpus: float,
    gpus: float,
    max_concurrent: int | None,
    retries: int,
    tune_dir: Path,
) -> StoreWriter:
    """Run the chunks of cells on Tune, one trial each; every finished point is in the store
    when this returns. The param space holds chunk numbers only; the chunks travel once, through
    Ray's object store."""
    here = ray.get_runtime_context().get_node_id()
    ledger = PointLedger.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
    ).remote()
    progress = ProgressLine(total=sum(len(cell.points) for chunk in chunks for cell in chunk))
    writer = StoreWriter(store, context.grid, chunks, ledger, progress)
    encoded = tuple(encode_chunk(chunk) for chunk in chunks)
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable, chunks=encoded, context=context, retries=retries, ledger=ledger
        ),
        {"cpu": cpus, "gpu": gpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"chunk": tune.grid_search(list(range(len(chunks))))},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name="sweep",
            storage_path=str(tune_dir.resolve()),
            failure_config=tune.FailureConfig(max_failures=retries),
            callbacks=[writer, progress],
            verbose=0,
        ),
    )
    # Tune's own result files are off (the store is the record), so its end-of-run lookup of
    # them would warn once per trial.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner.fit()
    return writer


def _trial_name(trial) -> str:
    return f"chunk-{trial.config['chunk']:06d}"
