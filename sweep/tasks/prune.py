"""Unstructured magnitude pruning of a model under one of the allocations of `sweep.catalog`.

The allocation (how the global budget is spread over layers) is the independent variable of the
study, so it is computed exactly and reproducibly: see :mod:`sweep.tasks.allocations` for the
definitions and rounding, :mod:`sweep.tasks.ranking` for the tie rule. Everything is validated
before any work, and :func:`allocate` / :func:`compute_masks` never modify the model, so the sweep
can cache masks per (checkpoint, allocation, sparsity) and apply them with :func:`apply_masks`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from sweep.catalog.allocations import ALLOCATIONS
from sweep.core.errors import UserError
from sweep.tasks import ranking
from sweep.tasks.allocations import Allocation, allocate_counts

__all__ = [
    "LayerReport",
    "PruneReport",
    "allocate",
    "apply_masks",
    "check_sparsity",
    "compute_masks",
    "prunable_layers",
    "prune",
]


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: tuple[int, ...]
    numel: int
    kept: int
    density: float

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "numel": self.numel,
            "kept": self.kept,
            "density": self.density,
        }


@dataclass
class PruneReport:
    """What a pruning did; ``to_dict`` is the JSON of ``python -m sweep.allocation``."""

    allocation: str
    requested_sparsity: float
    achieved_sparsity: float
    layers: list[LayerReport]
    forced_dense: list[str]  # layers ERK's capping made dense (always empty for other allocations)
    masks: dict[str, torch.Tensor] = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "allocation": self.allocation,
            "requested_sparsity": self.requested_sparsity,
            "achieved_sparsity": self.achieved_sparsity,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear (stem, 1x1 projections, classifier), in ``named_modules()`` order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]


def check_sparsity(sparsity: object) -> float:
    """The sparsity as a float; UserError unless it is a real number with 0 <= S < 1."""
    valid = isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool)
    if not valid or not 0.0 <= float(sparsity) < 1.0:  # NaN fails the comparison too
        raise UserError(
            f"sparsity {sparsity!r} is not allowed; expected a number in [0, 1) "
            "(the fraction of prunable weights set to zero)"
        )
    return float(sparsity)


def _checked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = prunable_layers(model)
    if sum(module.weight.numel() for _, module in layers) == 0:
        raise UserError(
            f"model {type(model).__name__} has no prunable weights; expected at least one "
            "Conv2d or Linear layer with weights"
        )
    for name, module in layers:
        if not ranking.all_finite(module.weight):
            raise UserError(
                f"layer {name!r} has non-finite weights (NaN or inf); expected finite weights "
                "to rank by magnitude"
            )
    return layers


def _plan(
    model: nn.Module, allocation: str, sparsity: float
) -> tuple[list[tuple[str, nn.Module]], Allocation]:
    """Validate everything first, then compute the counts."""
    allocation = ALLOCATIONS[allocation].name
    sparsity = check_sparsity(sparsity)
    layers = _checked_layers(model)
    weights = [module.weight for _, module in layers]
    return layers, allocate_counts(allocation, weights, sparsity)


def allocate(model: nn.Module, allocation: str, sparsity: float) -> dict[str, int]:
    """Kept weights per prunable layer (``named_modules()`` order); the model is not modified."""
    layers, plan = _plan(model, allocation, sparsity)
    return {name: count for (name, _), count in zip(layers, plan.counts, strict=True)}


def _masks(layers: list[tuple[str, nn.Module]], plan: Allocation) -> dict[str, torch.Tensor]:
    jobs = [(module.weight, count) for (_, module), count in zip(layers, plan.counts, strict=True)]
    masks = ranking.ordered_map(lambda job: ranking.keep_largest(*job), jobs)
    return {name: mask for (name, _), mask in zip(layers, masks, strict=True)}


def compute_masks(model: nn.Module, allocation: str, sparsity: float) -> dict[str, torch.Tensor]:
    """Bool keep-masks (CPU, weight shapes) per prunable layer; the model is not modified."""
    layers, plan = _plan(model, allocation, sparsity)
    return _masks(layers, plan)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place; the masks must cover exactly the prunable layers."""
    layers = prunable_layers(model)
    names = [name for name, _ in layers]
    if set(masks) != set(names):
        odd = sorted(set(masks) ^ set(names))
        raise UserError(
            f"masks do not fit the model: layer {odd[0]!r} is in one but not the other; "
            f"expected masks for exactly the prunable layers {names[:3]}…"
        )
    for name, module in layers:
        if masks[name].shape != module.weight.shape or masks[name].dtype != torch.bool:
            raise UserError(
                f"mask of layer {name!r} is {masks[name].dtype} {list(masks[name].shape)}; "
                f"expected torch.bool {list(module.weight.shape)}"
            )
    with torch.no_grad():
        for name, module in layers:
            module.weight.masked_fill_(~masks[name].to(module.weight.device), 0.0)


def prune(model: nn.Module, allocation: str, sparsity: float) -> PruneReport:
    """Compute the masks, zero the pruned weights in place, and report what was kept."""
    layers, plan = _plan(model, allocation, sparsity)
    masks = _masks(layers, plan)
    apply_masks(model, masks)
    reports = [
        LayerReport(
            name,
            tuple(module.weight.shape),
            module.weight.numel(),
            count,
            count / module.weight.numel() if module.weight.numel() else 1.0,
        )
        for (name, module), count in zip(layers, plan.counts, strict=True)
    ]  # an empty layer lost nothing: density 1
    numel = sum(layer.numel for layer in reports)
    return PruneReport(
        allocation=allocation,
        requested_sparsity=float(sparsity),
        achieved_sparsity=1.0 - sum(plan.counts) / numel,
        layers=reports,
        forced_dense=[layers[i][0] for i in plan.forced_dense],
        masks=masks,
    )
