"""One grid point: load → prune → repair → evaluate → one result row.

Plain Python on plain inputs, so the same function runs inside a Ray Tune trial, in a benchmark
loop, or in a notebook. Everything that other trials share (dense logits, dense calibration
statistics, masks, the eval cache) comes from the node-local ArtifactCache, keyed by content.
"""

from __future__ import annotations

import copy
import json
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
from sweep.grid import TrialConfig
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
    path = models.checkpoint_path(context.checkpoint_dir, config.dataset, config.arch)

    def load() -> tuple[torch.nn.Module, Any]:
        model, meta = models.load_checkpoint(path, arch=config.arch, dataset=config.dataset)
        return model.to(device).eval(), meta

    return ArtifactCache(context.cache_dir).memo("dense_model", f"{path}@{device}", load)


def run_trial(config: TrialConfig, context: TrialContext) -> dict[str, Any]:
    """Run one trial and return its result row (without status, attempts, grid and time)."""
    watch = _Stopwatch({})
    device, gpu_ids = trial_device()
    cache = ArtifactCache(context.cache_dir)
    method = repair.get_repair(config.repair)

    with watch.stage("load"):
        dense, meta = load_dense(config, context, device)
        if meta.sha256 != config.checkpoint_sha256:
            raise RuntimeError(
                f"checkpoint {config.dataset}/{config.arch} changed since the sweep started "
                f"(sha256 {meta.sha256[:12]} != {str(config.checkpoint_sha256)[:12]})"
            )
        eval_set = data.eval_set(
            config.dataset, context.data_root, context.cache_dir, limit=config.eval_limit
        )
        dense_eval = cache.get_or_create(
            "dense_logits",
            f"{meta.sha256[:24]}-{eval_set.key[:24]}",
            lambda: _dense_eval(dense, eval_set, device),
        )
        calibration = dense_stats = None
        if method.uses_calibration:
            calibration = data.calibration_set(
                config.dataset, config.calib_size, config.seed, context.data_root, context.cache_dir
            )
        if method.needs_dense:
            dense_stats = cache.get_or_create(
                "dense_stats",
                f"{meta.sha256[:24]}-{calibration.key[:24]}",
                lambda: repair.dense_statistics(dense, calibration).to_state(),
            )

    with watch.stage("prune"):
        pruning = cache.get_or_create(
            "masks",
            f"{meta.sha256[:24]}-{config.allocation}-{config.sparsity:.6f}",
            lambda: _masks_and_report(dense, config),
        )
        model = copy.deepcopy(dense)
        prune.apply_masks(model, pruning["masks"])

    with watch.stage("repair"):
        model = repair.repair(
            model,
            config.repair,
            calibration,
            dense_stats=repair.DenseStats.from_state(dense_stats) if dense_stats else None,
            **config.repair_params,
        )

    with watch.stage("eval"):
        metrics = evaluate.evaluate(
            model, eval_set, dense_logits=dense_eval["logits"], device=device
        )

    node_ip, node_id, ray_version = _ray_node()
    return {
        "trial_key": config.key,
        "checkpoint_sha256": meta.sha256,
        "dataset": config.dataset,
        "arch": config.arch,
        "num_classes": meta.num_classes,
        "allocation": config.allocation,
        "sparsity": config.sparsity,
        "achieved_sparsity": pruning["achieved_sparsity"],
        "repair": config.repair,
        "repair_params": json.dumps(config.repair_params, sort_keys=True),
        "seed": config.seed,
        "calib_size": config.calib_size if method.uses_calibration else 0,
        "eval_size": len(eval_set),
        "dense_top1": float(dense_eval["top1"]),
        "top1": metrics.top1,
        "top5": metrics.top5,
        "nll": metrics.nll,
        "agreement": metrics.agreement,
        "kl": metrics.kl,
        "repair_extra_params": repair.repair_param_count(model),
        "layer_names": pruning["layer_names"],
        "layer_density": pruning["layer_density"],
        "forced_dense": pruning["forced_dense"],
        **{
            f"seconds_{stage}": watch.seconds[stage]
            for stage in ("load", "prune", "repair", "eval")
        },
        "node": socket.gethostname(),
        "node_ip": node_ip,
        "node_id": node_id,
        "gpu_ids": gpu_ids,
        "device": str(device),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "ray_version": ray_version,
        "prune_sweep_version": sweep.__version__,
    }


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
