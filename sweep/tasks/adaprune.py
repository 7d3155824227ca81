"""AdaPrune (Hubara et al. 2021): a fixed budget of Adam steps per layer on the masked weights.

Layer by layer in forward order (`sweep.tasks.reconstruct.refit_layers`: the same paired passes
and statistics as `obs_reconstruct`), Adam minimises the layer's output error against the dense
layer on the pruned prefix's inputs,

    |W X - T|^2 / (positions * out) = (tr(W H W^T) - 2 tr(W C) + sum |T|^2) / (positions * out),

starting from the pruned weights, with the mask (the pruning step's, else the non-zero weights)
re-applied after every step so pruned weights stay zero. Each step uses the exact
full-calibration-set gradient 2 (W H - C^T) / (positions * out), computed from the layer's Gram
statistics rather than by a backward pass over cached activations: the same objective as the
paper's, without minibatch noise, deterministic given the calibration set, and in the memory of
one Gram matrix. Unlike `obs_reconstruct` it is undamped and stops after `iterations` steps
rather than at the optimum. BatchNorm is recalibrated afterwards (`recal_after`).

Cost: as `obs_reconstruct` (one dense pass, one pruned-prefix pass per layer, the recalibration)
plus `iterations` gradient steps per layer, each out * d^2 multiply-adds in float64; no backward
pass through the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweep.catalog.repair_parameters import AdaPruneParams
from sweep.tasks.bn_recal import bn_recalibrate
from sweep.tasks.reconstruct import LayerStats, Masks, refit_layers


def adam_fit(
    weight: torch.Tensor, mask: torch.Tensor, stats: LayerStats, params: AdaPruneParams
) -> tuple[torch.Tensor, list[float]]:
    """The weight after `params.iterations` masked Adam steps, and the mean squared output error
    before each step and after the last (iterations + 1 values)."""
    scale = 1.0 / max(stats.count * weight.shape[0], 1)
    current = torch.where(mask, weight, 0.0).clone()
    optimizer = torch.optim.Adam([current], lr=params.lr)
    losses = []
    for _ in range(params.iterations):
        error, gradient = stats.squared_error_and_gradient(current)
        losses.append(float(error) * scale)
        current.grad = torch.where(mask, gradient * scale, 0.0)
        optimizer.step()
        with torch.no_grad():
            current.mul_(mask)
    losses.append(float(stats.squared_error_and_gradient(current)[0]) * scale)
    return current, losses


def adaprune_layers(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    dense: nn.Module,
    params: AdaPruneParams,
    masks: Masks | None = None,
) -> dict[str, list[float]]:
    """Refit every prunable layer with `adam_fit` (no BN recalibration), its mask held fixed
    (`refit_layers`: `masks` from the pruning step, else the non-zero weights): per layer, its
    losses."""
    history: dict[str, list[float]] = {}

    def fit(name: str, weight, mask, stats: LayerStats) -> torch.Tensor:
        new, history[name] = adam_fit(weight, mask, stats, params)
        return new

    refit_layers(model, dense, batches, fit, masks)
    return history


def adaprune(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    dense: nn.Module,
    params: AdaPruneParams,
    masks: Masks | None = None,
) -> None:
    """Layer by layer in forward order, a fixed number of Adam steps on each Conv2d/Linear's
    kept weights (mask re-applied after every step: `masks` from the pruning step, else the
    non-zero weights) so its output on the pruned prefix's inputs approaches the dense layer's
    output (Hubara et al. 2021); then recalibrates BatchNorm (recal_after)."""
    adaprune_layers(model, batches, dense, params, masks)
    if params.recal_after:
        bn_recalibrate(model, batches)
