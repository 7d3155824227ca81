"""One grid point: load → prune → repair → evaluate → one typed `TrialResult`.

Plain Python on plain inputs, so the same function runs inside a Ray Tune trial, in a benchmark
loop, or in a notebook. Everything that other trials share (dense logits, dense calibration
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

import torch
import torchvision

import sweep
from sweep.cache import ArtifactCache
from sweep.identity import TrialConfig
from sweep.rows import build_row
from sweep.store import ResultStore
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


@dataclass
class Loaded:
    """What the load stage hands on: the dense model and the shared artefacts of this trial."""

    dense: torch.nn.Module
    meta: models.CheckpointMeta
    eval_set: data.EvalSet
    dense_eval: dict[str, Any]
    calibration: data.CalibrationSet | None
    dense_stats: repair.DenseStats | None


@dataclass(frozen=True)
class TrialResult:
    """Everything one trial measured; `measurements()` gives its store columns."""

    config: TrialConfig
    num_classes: int
    eval_size: int
    dense_top1: float
    pruning: dict[str, Any]
    evaluation: evaluate.Evaluation
    repair_extra_params: int
    seconds: dict[str, float]
    placement: Placement

    def measurements(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "achieved_sparsity": self.pruning["achieved_sparsity"],
            "eval_size": self.eval_size,
            "eval_precision": self.evaluation.precision,
            "dense_top1": self.dense_top1,
            **self.evaluation.metrics.to_dict(),
            "predictions": self.evaluation.predictions.tolist(),
            "correct": self.evaluation.packed_correct(),
            "repair_extra_params": self.repair_extra_params,
            "layer_names": self.pruning["layer_names"],
            "layer_density": self.pruning["layer_density"],
            "forced_dense": self.pruning["forced_dense"],
            **{f"seconds_{stage}": self.seconds[stage] for stage in STAGES},
            **dataclasses.asdict(self.placement),
            "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__,
            "prune_sweep_version": sweep.__version__,
        }


STAGES = ("load", "prune", "repair", "eval")


def load_stage(
    config: TrialConfig, context: TrialContext, cache: ArtifactCache, device: torch.device
) -> Loaded:
    """Dense model, eval set, dense eval logits and (if the repair needs them) calibration data
    and dense statistics: each computed once per node and shared through the cache."""
    dense, meta = load_dense(config, context, device)
    if meta.sha256 != config.checkpoint_sha256:
        raise RuntimeError(
            f"checkpoint {config.dataset}/{config.arch} changed since the sweep started "
            f"(sha256 {meta.sha256[:12]} != {str(config.checkpoint_sha256)[:12]})"
        )
    eval_set = data.eval_set(
        config.dataset,
        context.data_root,
        context.cache_dir,
        limit=config.eval_limit,
        split=config.eval_split,
    )
    dense_eval = cache.get_or_create(
        "dense_logits",
        f"{meta.sha256[:24]}-{eval_set.key[:24]}-{evaluate.eval_precision(device)}",
        lambda: _dense_eval(dense, eval_set, device),
    )
    method = repair.get_repair(config.repair)
    calibration = dense_stats = None
    if method.uses_calibration:
        calibration = data.calibration_set(
            config.dataset, config.calib_size, config.seed, context.data_root, context.cache_dir
        )
    if method.needs_dense and not method.needs_dense_model:
        state = cache.get_or_create(
            "dense_stats",
            f"{meta.sha256[:24]}-{calibration.key[:24]}",
            lambda: repair.dense_statistics(dense, calibration).to_state(),
        )
        dense_stats = repair.DenseStats.from_state(state)
    return Loaded(dense, meta, eval_set, dense_eval, calibration, dense_stats)


def prune_stage(
    config: TrialConfig, loaded: Loaded, cache: ArtifactCache
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A pruned copy of the dense model; masks shared per (checkpoint, allocation, sparsity)."""
    pruning = cache.get_or_create(
        "masks",
        f"{loaded.meta.sha256[:24]}-{config.allocation}-{config.sparsity:.6f}",
        lambda: _masks_and_report(loaded.dense, config),
    )
    model = copy.deepcopy(loaded.dense)
    prune.apply_masks(model, pruning["masks"])
    return model, pruning


def repair_stage(config: TrialConfig, pruned: torch.nn.Module, loaded: Loaded) -> torch.nn.Module:
    return repair.repair(
        pruned,
        config.repair,
        loaded.calibration,
        dense=loaded.dense,
        dense_stats=loaded.dense_stats,
        **config.repair_params,
    )


def evaluate_stage(
    model: torch.nn.Module, loaded: Loaded, device: torch.device
) -> evaluate.Evaluation:
    return evaluate.evaluate_per_image(
        model, loaded.eval_set, dense_logits=loaded.dense_eval["logits"], device=device
    )


def run_trial(config: TrialConfig, context: TrialContext) -> TrialResult:
    """Run one trial: load → prune → repair → evaluate, each stage timed."""
    watch = _Stopwatch({})
    device, gpu_ids = trial_device()
    cache = ArtifactCache(context.cache_dir)
    with watch.stage("load"):
        loaded = load_stage(config, context, cache, device)
    with watch.stage("prune"):
        pruned, pruning = prune_stage(config, loaded, cache)
    with watch.stage("repair"):
        repaired = repair_stage(config, pruned, loaded)
    with watch.stage("eval"):
        evaluation = evaluate_stage(repaired, loaded, device)
    return TrialResult(
        config=config,
        num_classes=loaded.meta.num_classes,
        eval_size=len(loaded.eval_set),
        dense_top1=float(loaded.dense_eval["top1"]),
        pruning=pruning,
        evaluation=evaluation,
        repair_extra_params=repair.repair_param_count(repaired),
        seconds=dict(watch.seconds),
        placement=Placement.here(device, gpu_ids),
    )


def _dense_eval(dense: torch.nn.Module, eval_set: Any, device: torch.device) -> dict[str, Any]:
    logits = evaluate.predict_logits(dense, eval_set, device=device).float().cpu()
    labels = torch.as_tensor(eval_set.labels)
    return {"logits": logits, "top1": (logits.argmax(1) == labels).float().mean()}


def _masks_and_report(dense: torch.nn.Module, config: TrialConfig) -> dict[str, Any]:
    report = prune.prune(copy.deepcopy(dense), config.allocation, config.sparsity)
    return {
        "masks": report.masks,
        "achieved_sparsity": report.achieved_sparsity,
        "layer_names": [layer.name for layer in report.layers],
        "layer_density": [layer.density for layer in report.layers],
        "forced_dense": list(report.forced_dense),
    }


def run_in_process(trials: list[TrialConfig], context: TrialContext, store: ResultStore) -> None:
    """Run trials one after another in this process, writing each row as the sweep's writer
    does (benchmarks compare the sweep against this loop; notebooks can use it without Ray)."""
    for config in trials:
        measurements = run_trial(config, context).measurements()
        store.write(build_row(config, measurements, grid=context.grid, attempts=1))
