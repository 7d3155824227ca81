"""One cell: load → prune once → for each of its points: repair → evaluate → one outcome.

Plain Python on plain inputs, so the same function runs inside a Ray Tune trial, in a benchmark
loop, or in a notebook. A cell (sweep.plan.cells) is every grid point of one pruned model: the
checkpoint, the masks, the pruned weights, the eval images and the dense eval logits are the
same for all of them, so they are built once per cell. Within a worker process they stay on the
device across cells: the dense model and the eval images (a per-process memo) and each
calibration set's batches. What other workers share (dense logits, dense calibration
statistics, masks, the eval cache) comes from the node-local ArtifactCache, keyed by content.
"""

from __future__ import annotations

import copy
import dataclasses
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

import sweep
from sweep.plan.cells import Cell, group_cells
from sweep.plan.identity import TrialConfig
from sweep.results.rows import build_row
from sweep.results.store import ResultStore
from sweep.run.node_cache import ArtifactCache
from sweep.tasks import data, evaluate, models, prune, repair


@dataclass(frozen=True)
class TrialContext:
    """Where a trial finds its inputs; the same for every trial of a sweep."""

    checkpoint_dir: Path
    data_root: Path | None
    cache_dir: Path | None  # None: each node's own default_cache_dir()
    grid: str


@dataclass
class _Stopwatch:
    seconds: dict[str, float]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _ray() -> Any | None:
    """The Ray module when this process runs inside Ray; trials never import Ray themselves."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def trial_device() -> tuple[torch.device, list[str]]:
    """(device, Ray GPU ids). Inside Ray: cuda:0 only when Ray assigned this trial a GPU (it sets
    CUDA_VISIBLE_DEVICES). Outside Ray (a notebook, a loop): cuda:0 whenever CUDA is there."""
    ray = _ray()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()] if ray else []
    wants_cuda = bool(gpu_ids) if ray else True
    use_cuda = wants_cuda and torch.cuda.is_available()
    return torch.device("cuda:0" if use_cuda else "cpu"), gpu_ids


def _ray_node() -> tuple[str, str | None, str | None]:
    """(node IP, node id, Ray version) of this trial's Ray node; loopback and None outside Ray."""
    ray = _ray()
    if ray is None:
        return "127.0.0.1", None, None
    return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id(), ray.__version__


@dataclass(frozen=True)
class Placement:
    """Where a trial ran: recorded in every row so GPU pinning and node loss can be audited."""

    node: str
    node_ip: str
    node_id: str | None
    gpu_ids: list[str]
    device: str
    ray_version: str | None

    @classmethod
    def here(cls, device: torch.device, gpu_ids: list[str]) -> Placement:
        node_ip, node_id, ray_version = _ray_node()
        return cls(socket.gethostname(), node_ip, node_id, gpu_ids, str(device), ray_version)


def load_dense(
    config: TrialConfig, context: TrialContext, device: torch.device
) -> tuple[torch.nn.Module, Any]:
    """The dense checkpoint on `device`, loaded once per worker process."""
    path = models.checkpoint_path(
        context.checkpoint_dir, config.dataset, config.arch, config.replicate
    )

    def load() -> tuple[torch.nn.Module, Any]:
        model, meta = models.load_checkpoint(
            path, arch=config.arch, dataset=config.dataset, replicate=config.replicate
        )
        return model.to(device).eval(), meta

    return ArtifactCache(context.cache_dir).memo("dense_model", f"{path}@{device}", load)


@dataclass(frozen=True)
class DeviceCalibration:
    """A calibration set's normalised batches, moved to the device once per worker and reused by
    every point that draws it; `key` is the calibration set's content key."""

    key: str
    batches: tuple[torch.Tensor, ...]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)


@dataclass(frozen=True)
class DenseEval:
    """The dense checkpoint on a cell's eval images: what every point is compared against."""

    logits: torch.Tensor  # float32, on the CPU
    top1: float
    correct: bytes  # per image, packed as the store's `correct` column

    @classmethod
    def of(cls, logits: torch.Tensor, labels: np.ndarray) -> DenseEval:
        correct = (logits.argmax(1) == torch.as_tensor(labels)).numpy()
        return cls(logits, float(correct.mean()), np.packbits(correct).tobytes())


@dataclass(frozen=True)
class Pruning:
    """A cell's masks and what the store records about them (one per checkpoint, allocation
    and sparsity). Cached as a plain dict (`to_state`), which loads with weights_only=True."""

    masks: dict[str, torch.Tensor]
    achieved_sparsity: float
    layer_names: list[str]
    layer_density: list[float]
    forced_dense: list[str]

    @classmethod
    def of(cls, report: prune.PruneReport) -> Pruning:
        return cls(
            masks=report.masks,
            achieved_sparsity=report.achieved_sparsity,
            layer_names=[layer.name for layer in report.layers],
            layer_density=[layer.density for layer in report.layers],
            forced_dense=list(report.forced_dense),
        )

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CellInputs:
    """What a cell's points share: the dense model, its eval results, the pruned model."""

    dense: torch.nn.Module
    meta: models.CheckpointMeta
    eval_set: data.EvalSet
    dense_eval: DenseEval
    pruned: torch.nn.Module
    pruning: Pruning
    device: torch.device
    placement: Placement


@dataclass(frozen=True)
class PointOutcome:
    """One point of a cell: its measurements (store columns), or the error it ended with."""

    config: TrialConfig
    measurements: dict[str, Any] | None
    error: str | None
    attempts: int

    @property
    def ok(self) -> bool:
        return self.error is None


STAGES = ("load", "prune", "repair", "eval")


def load_cell(
    head: TrialConfig, context: TrialContext, cache: ArtifactCache, device: torch.device
) -> tuple[torch.nn.Module, models.CheckpointMeta, data.EvalSet, DenseEval]:
    """Dense model, eval set and dense eval results of a cell, each computed once per node."""
    dense, meta = load_dense(head, context, device)
    if meta.sha256 != head.checkpoint_sha256:
        raise RuntimeError(
            f"checkpoint {head.dataset}/{head.arch} changed since the sweep started "
            f"(sha256 {meta.sha256[:12]} != {str(head.checkpoint_sha256)[:12]})"
        )
    eval_set = data.eval_set(
        head.dataset, context.data_root, context.cache_dir, limit=head.eval_limit,
        split=head.eval_split,
    )  # fmt: skip
    precision = head.eval_precision  # as planned, on any device: it is part of the key
    logits = cache.get_or_create(
        "dense_logits",
        f"{meta.sha256[:24]}-{eval_set.key[:24]}-{precision}",
        lambda: {"logits": _dense_logits(dense, eval_set, device, precision)},
    )["logits"]
    return dense, meta, eval_set, DenseEval.of(logits, eval_set.labels)


def prune_cell(
    head: TrialConfig, dense: torch.nn.Module, sha256: str, cache: ArtifactCache
) -> tuple[torch.nn.Module, Pruning]:
    """A pruned copy of the dense model; masks shared per (checkpoint, allocation, sparsity)."""
    state = cache.get_or_create(
        "masks",
        f"{sha256[:24]}-{head.allocation}-{head.sparsity:.6f}",
        lambda: Pruning.of(
            prune.prune(copy.deepcopy(dense), head.allocation, head.sparsity)
        ).to_state(),
    )
    pruning = Pruning(**state)
    model = copy.deepcopy(dense)
    prune.apply_masks(model, pruning.masks)
    return model, pruning


def calibration_for(
    config: TrialConfig, inputs: CellInputs, context: TrialContext, cache: ArtifactCache
) -> tuple[DeviceCalibration | None, repair.DenseStats | None]:
    """The point's calibration batches on the device and, where its repair matches the dense
    model's statistics, those statistics: both shared by every point that draws this set."""
    method = repair.REPAIR_METHODS[config.repair]
    if not method.uses_calibration:
        return None, None

    def to_device() -> DeviceCalibration:
        images = data.calibration_set(
            config.dataset, config.calib_size, config.seed, context.data_root, context.cache_dir
        )
        batches = repair.calibration_batches(images, inputs.device)
        return DeviceCalibration(images.key, tuple(batches))

    calibration = cache.memo(
        "calibration",
        f"{config.dataset}-{config.calib_size}-{config.seed}@{inputs.device}",
        to_device,
    )
    if not (method.needs_dense and not method.needs_dense_model):
        return calibration, None
    state = cache.get_or_create(
        "dense_stats",
        f"{inputs.meta.sha256[:24]}-{calibration.key[:24]}",
        lambda: repair.dense_statistics(inputs.dense, calibration).to_state(),
    )
    return calibration, repair.DenseStats.from_state(state)


def run_point(
    config: TrialConfig, inputs: CellInputs, context: TrialContext, cache: ArtifactCache
) -> tuple[dict[str, Any], dict[str, float]]:
    """Repair and evaluate one point of a loaded, pruned cell: (measurements, stage seconds)."""
    watch = _Stopwatch({})
    with watch.stage("load"):
        calibration, dense_stats = calibration_for(config, inputs, context, cache)
    with watch.stage("repair"):
        repaired = repair.repair(
            inputs.pruned,
            config.repair,
            calibration,
            dense=inputs.dense,
            dense_stats=dense_stats,
            masks=inputs.pruning.masks,
            **config.repair_params,
        )
    with watch.stage("eval"):
        evaluation = evaluate.evaluate_per_image(
            repaired,
            inputs.eval_set,
            dense_logits=inputs.dense_eval.logits,
            device=inputs.device,
            precision=config.eval_precision,
        )
    return _measurements(inputs, evaluation, repair.repair_param_count(repaired)), watch.seconds


def _measurements(
    inputs: CellInputs, evaluation: evaluate.Evaluation, extra_params: int
) -> dict[str, Any]:
    """A point's store columns, less the stage times (see run_cell)."""
    return {
        "num_classes": inputs.meta.num_classes,
        "achieved_sparsity": inputs.pruning.achieved_sparsity,
        "eval_size": len(inputs.eval_set),
        "dense_top1": inputs.dense_eval.top1,
        **evaluation.metrics.to_dict(),
        "predictions": evaluation.predictions,
        "correct": evaluation.packed_correct(),
        "dense_correct": inputs.dense_eval.correct,
        "repair_extra_params": extra_params,
        "layer_names": inputs.pruning.layer_names,
        "layer_density": inputs.pruning.layer_density,
        "forced_dense": inputs.pruning.forced_dense,
        **dataclasses.asdict(inputs.placement),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "prune_sweep_version": sweep.__version__,
    }


def run_cell(cell: Cell, context: TrialContext, retries: int = 0) -> Iterator[PointOutcome]:
    """Load and prune once, then yield each point's outcome as soon as it is measured.

    A failing load or prune raises (the whole cell is retried by its caller). A point that raises
    is retried here up to `retries` times and then yields an error outcome, so one bad repair
    never costs its neighbours. The cell's shared load and prune time is split evenly over its
    points, so the rows' stage times add up to the work done.
    """
    watch = _Stopwatch({})
    device, gpu_ids = trial_device()
    cache = ArtifactCache(context.cache_dir)
    with watch.stage("load"):
        dense, meta, eval_set, dense_eval = load_cell(cell.head, context, cache, device)
    with watch.stage("prune"):
        pruned, pruning = prune_cell(cell.head, dense, meta.sha256, cache)
    inputs = CellInputs(
        dense, meta, eval_set, dense_eval, pruned, pruning, device, Placement.here(device, gpu_ids)
    )
    shared = {stage: seconds / len(cell.points) for stage, seconds in watch.seconds.items()}
    for config in cell.points:
        for attempt in range(1, retries + 2):
            try:
                measurements, seconds = run_point(config, inputs, context, cache)
            except Exception as error:  # recorded in the point's error row
                if attempt <= retries:
                    continue
                yield PointOutcome(config, None, f"{type(error).__name__}: {error}", attempt)
                break
            times = {f"seconds_{s}": shared.get(s, 0.0) + seconds.get(s, 0.0) for s in STAGES}
            yield PointOutcome(config, {**measurements, **times}, None, attempt)
            break


def run_trial(config: TrialConfig, context: TrialContext) -> PointOutcome:
    """One grid point by itself (a cell of one point), for notebooks and comparisons."""
    return next(run_cell(Cell((config,)), context))


def _dense_logits(
    dense: torch.nn.Module, eval_set: data.EvalSet, device: torch.device, precision: str
) -> torch.Tensor:
    logits = evaluate.predict_logits(dense, eval_set, device=device, precision=precision)
    return logits.float().cpu()


def outcome_row(outcome: PointOutcome, grid: str, earlier_attempts: int = 0) -> dict[str, Any]:
    """The store row of a point's outcome; `earlier_attempts`: runs of its cell that failed."""
    return build_row(
        outcome.config,
        outcome.measurements,
        grid=grid,
        attempts=earlier_attempts + outcome.attempts,
        error=outcome.error,
    )


def run_in_process(
    trials: list[TrialConfig], context: TrialContext, store: ResultStore, retries: int = 0
) -> None:
    """Run the trials cell by cell in this process, writing each row as the sweep's writer does
    (benchmarks compare the sweep against this loop; notebooks can use it without Ray)."""
    for cell in group_cells(trials):
        for outcome in run_cell(cell, context, retries):
            store.write(outcome_row(outcome, context.grid))
