"""Dense-model activation statistics at the repair points: computed once, reused by every trial.

A `DenseStats` holds only strings and float64 numpy arrays, so it pickles cheaply (Ray object
store, disk cache). Its `.key` is a content key over the dense weights, the calibration set and the
repair-point set: two sweeps that agree on those share it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sweep.core.errors import UserError
from sweep.tasks.repair_passes import (
    Moments,
    calibration_batches,
    calibration_key,
    channel_moments,
    staged_pass,
    tensors_digest,
)
from sweep.tasks.repair_points import repair_points, stage_plan


@dataclass(frozen=True)
class DenseStats:
    """Per-channel mean/variance of the dense model at each repair point on a calibration set."""

    key: str
    calibration_key: str
    points: tuple[str, ...]
    moments: dict[str, Moments]

    def to_state(self) -> dict:
        """Plain strings and tensors: loadable with torch.load(weights_only=True) from a cache."""
        return {
            "key": self.key,
            "calibration_key": self.calibration_key,
            "points": list(self.points),
            "moments": {
                name: {"mean": torch.from_numpy(m.mean), "var": torch.from_numpy(m.var)}
                for name, m in self.moments.items()
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> DenseStats:
        return cls(
            key=state["key"],
            calibration_key=state["calibration_key"],
            points=tuple(state["points"]),
            moments={
                name: Moments(mean=m["mean"].numpy(), var=m["var"].numpy())
                for name, m in state["moments"].items()
            },
        )


def state_digest(model: nn.Module) -> str:
    """sha256 over a model's state_dict (names, dtypes, shapes, values) in key order."""
    state = model.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(tensors_digest([state[name]]).encode())
    return digest.hexdigest()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _select_points(model: nn.Module, points: Sequence[str] | None) -> tuple[str, ...]:
    known = tuple(point.name for point in repair_points(model))
    if points is None:
        return known
    unknown = [p for p in points if p not in known]
    if unknown:
        raise UserError(
            f"unknown repair point {unknown[0]!r}; expected some of: {', '.join(known)}"
        )
    return tuple(p for p in known if p in points)


def dense_statistics_from_batches(
    dense: nn.Module,
    batches: Sequence[torch.Tensor],
    cal_key: str,
    points: Sequence[str] | None = None,
) -> DenseStats:
    """`dense_statistics` on already materialised batches (one staged pass of the dense model)."""
    chosen = _select_points(dense, points)
    key_text = json.dumps(
        {"model": state_digest(dense), "calibration": cal_key, "points": chosen}, sort_keys=True
    )
    moments: dict[str, Moments] = {}

    def record(point: str, chunks: list[torch.Tensor]) -> list[torch.Tensor]:
        if point in chosen:
            moments[point] = channel_moments(chunks)
        return chunks

    was_training = dense.training
    dense.eval()
    try:
        with torch.inference_mode():
            staged_pass(stage_plan(dense), batches, record)
    finally:
        dense.train(was_training)
    return DenseStats(
        key=hashlib.sha256(key_text.encode()).hexdigest(),
        calibration_key=cal_key,
        points=chosen,
        moments=moments,
    )


def dense_statistics(
    dense: nn.Module, calibration: object, points: Sequence[str] | None = None
) -> DenseStats:
    """Measure the dense model's per-channel statistics at its repair points (all by default)."""
    batches = calibration_batches(calibration, model_device(dense))
    return dense_statistics_from_batches(
        dense, batches, calibration_key(calibration, batches), points
    )
