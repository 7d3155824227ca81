"""Label-free repair of a pruned model: the torch implementation of each `sweep.catalog` method.

Every method sees only calibration images (an iterable of float [N, C, H, W] batches: a batch with
labels is refused). The activation-statistic methods first recalibrate BatchNorm, then, in one
staged forward pass, fit a `ChannelAffine` at each repair point in forward order so the pruned
model's statistics there move to the dense model's (points: `sweep.tasks.repair_points`). Cost per
repair, counted by `count_calibration_passes`: `none` 0 passes, `bn_recal` 1, the activation
methods 2 (+1 with `recal_after`), plus 1 dense pass when no cached `DenseStats` is given. The
layer-wise methods `obs_reconstruct` (`sweep.tasks.reconstruct`) and `adaprune`
(`sweep.tasks.adaprune`) refit the surviving weights against the dense model itself: one dense
pass keeping every layer's output (where they fit in memory, else the dense prefix reruns beside
each pruned one), one pruned-prefix pass per prunable layer, then 1 BatchNorm recalibration pass.

`repair` works on a deep copy and returns it in eval mode, on the pruned model's device.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sweep.catalog.registry import Implementations
from sweep.catalog.repair_parameters import (
    AdaPruneParams,
    MatchParams,
    NoParams,
    ObsParams,
    ShrinkParams,
)
from sweep.catalog.repairs import REPAIRS, RepairInfo, repair_params
from sweep.core.errors import UserError
from sweep.tasks.adaprune import adaprune
from sweep.tasks.bn_recal import bn_recalibrate, require_batchnorm
from sweep.tasks.dense_stats import (
    DenseStats,
    dense_statistics,
    dense_statistics_from_batches,
    model_device,
)
from sweep.tasks.prune import apply_masks
from sweep.tasks.reconstruct import obs_reconstruct
from sweep.tasks.repair_passes import (
    Moments,
    calibration_batches,
    calibration_key,
    channel_moments,
    count_calibration_passes,
    staged_pass,
)
from sweep.tasks.repair_points import (
    ChannelAffine,
    attach_repair_points,
    has_repair_points,
    load_repaired_state,
    repair_param_count,
    repair_points,
    stage_plan,
)

__all__ = [
    "REPAIR_METHODS",
    "ChannelAffine",
    "DenseStats",
    "Moments",
    "RepairMethod",
    "attach_repair_points",
    "channel_affine",
    "bn_recalibrate",
    "count_calibration_passes",
    "dense_statistics",
    "has_repair_points",
    "layer_affine",
    "load_repaired_state",
    "register_repair",
    "repair",
    "repair_param_count",
    "repair_points",
    "shrink_affine",
]

Affine = tuple[np.ndarray, np.ndarray]


def _mean_matching(pruned: Moments, dense: Moments, gain: np.ndarray) -> Affine:
    """Scale by `gain`, then shift so the corrected mean is the dense mean exactly."""
    gain = np.broadcast_to(np.asarray(gain, dtype=np.float64), pruned.mean.shape)
    return gain.copy(), np.broadcast_to(dense.mean - gain * pruned.mean, gain.shape).copy()


def _layer_gain(pruned: Moments, dense: Moments) -> float:
    """Pooled dense std / pooled pruned std over all channels of a point (1 if it is silent)."""
    p_var, d_var = pruned.pooled()[1], dense.pooled()[1]
    return float(np.sqrt(d_var / p_var)) if p_var > 0 else 1.0


def layer_affine(pruned: Moments, dense: Moments, params: MatchParams) -> Affine:
    """One scale and one shift per point: pooled std ratio and pooled mean over all channels."""
    gain = _layer_gain(pruned, dense)
    shape = pruned.mean.shape
    return np.full(shape, gain), np.full(shape, dense.pooled()[0] - gain * pruned.pooled()[0])


def channel_affine(pruned: Moments, dense: Moments, params: MatchParams) -> Affine:
    """Per channel: gain = dense std / pruned std (1 for a constant channel), mean matched."""
    p_std = pruned.std
    gain = np.divide(dense.std, p_std, out=np.ones_like(p_std), where=p_std > 0)
    return _mean_matching(pruned, dense, gain)


def shrink_affine(pruned: Moments, dense: Moments, params: ShrinkParams) -> Affine:
    """Per channel, gain shrunk toward the point's gain where the channel's signal is weak.

    James-Stein-like: each channel's raw gain g_c = dense std / pruned std is pulled toward the
    point's pooled gain G (layer_var's) by how much of its signal survived relative to the point,
    r_c = G / g_c = (pruned std / dense std) * G:
        gain_c = G + lam_c * (g_c - G),  lam_c = r_c^2 / (r_c^2 + tau^2)
               = G * (1 + (r_c - r_c^2) / (r_c^2 + tau^2)).
    A channel as strong as its point (r_c ~ 1) keeps nearly its own gain; as r_c -> 0 (silenced)
    the gain falls back to G instead of exploding, so it stays finite and the channel becomes the
    dense mean plus G times what is left. The blend never exceeds G * (1 + 1/(2 tau)) roughly;
    [gain_min, gain_max] is a hard bound on top (for a point whose pooled std itself collapses).
    Means are matched exactly; a dense channel with zero std gets gain 0 (its raw gain).

    Shrinking toward G rather than toward 1 matters at the logits: pruning shrinks all logits
    together (gains 2-8 at 95-98 % sparsity), a systematic effect, not noise to be damped.
    """
    layer_gain = _layer_gain(pruned, dense)
    d_std = dense.std
    r = np.divide(pruned.std, d_std, out=np.zeros_like(d_std), where=d_std > 0) * layer_gain
    gain = layer_gain * (1.0 + (r - r**2) / (r**2 + params.tau**2))
    gain = np.where(d_std > 0, gain, 0.0)
    return _mean_matching(pruned, dense, np.clip(gain, params.gain_min, params.gain_max))


Rule = Callable[[Moments, Moments, typing.Any], Affine]


def _match_statistics(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    stats: DenseStats,
    params: MatchParams,
    rule: Rule,
) -> None:
    names = [point.name for point in repair_points(model)]
    chosen = {
        "all": names,
        "hidden": names[:-1],
        "logits": names[-1:],  # the last point of every plan is the logits
    }[params.points]
    attach_repair_points(model, chosen)
    bn_recalibrate(model, batches)

    def correct(point: str, chunks: list[torch.Tensor]) -> list[torch.Tensor]:
        if point not in chosen:
            return chunks
        affine = model.get_submodule(point)
        assert isinstance(affine, ChannelAffine)
        affine.set(*rule(channel_moments(chunks), stats.moments[point], params))
        return [affine(chunk) for chunk in chunks]

    with torch.no_grad():
        staged_pass(stage_plan(model), batches, correct)
    if params.recal_after:
        bn_recalibrate(model, batches)


def _none(model: nn.Module, batches, stats, params: NoParams) -> None:
    """Measures nothing, corrects nothing: the pruned model keeps the dense BatchNorm statistics."""


def _bn_recal(model: nn.Module, batches, stats, params: NoParams) -> None:
    """Measures every BatchNorm's input mean/variance on the calibration images (cumulative
    average); the correction acts inside the BatchNorms (their running statistics)."""
    bn_recalibrate(model, batches)


def _layer_var(model: nn.Module, batches, stats, params: MatchParams) -> None:
    """After bn_recal, measures the mean and std over all channels of each repair point (residual
    block outputs, logits; DenseNet classifier input, logits) and corrects each point with one
    scale and one shift so they match the dense model's."""
    _match_statistics(model, batches, stats, params, layer_affine)


def _channel_var(model: nn.Module, batches, stats, params: MatchParams) -> None:
    """After bn_recal, measures per-channel mean and std at each repair point and corrects each
    channel with its own affine so both match the dense model's exactly (naive gains)."""
    _match_statistics(model, batches, stats, params, channel_affine)


def _channel_var_shrink(model: nn.Module, batches, stats, params: ShrinkParams) -> None:
    """As channel_var, but each channel's gain is shrunk toward its point's pooled gain where the
    channel's pruned std is small relative to its dense std (more than the point's is), and
    bounded to [gain_min, gain_max] (rule: `shrink_affine`); means still match."""
    _match_statistics(model, batches, stats, params, shrink_affine)


@dataclass(frozen=True)
class RepairMethod:
    """The torch implementation of the catalog's repair `name` (`REPAIRS[name]`: its parameter
    defaults, whether it draws a calibration set, its role).

    params: the catalog entry's parameter dataclass, whose instance `apply` gets; needs_dense: the
    method compares with the dense model (dense= or dense_stats=); needs_dense_model: it needs the
    dense model itself (its layer outputs), and `apply` gets it in place of the statistics;
    recalibrates_bn: refused up front on a model without BatchNorm; takes_masks: `apply` takes
    the pruning step's keep-masks as `masks=` (None when not given)."""

    name: str
    params: type
    apply: Callable[..., None]
    needs_dense: bool
    needs_dense_model: bool = False
    recalibrates_bn: bool = False
    takes_masks: bool = False

    @property
    def uses_calibration(self) -> bool:
        return REPAIRS[self.name].uses_calibration

    @property
    def doc(self) -> str:
        return " ".join((self.apply.__doc__ or "").split())


REPAIR_METHODS: Implementations[RepairMethod] = Implementations(
    REPAIRS,
    {
        method.name: method
        for method in (
            RepairMethod("none", NoParams, _none, needs_dense=False),
            RepairMethod("bn_recal", NoParams, _bn_recal, needs_dense=False, recalibrates_bn=True),
            RepairMethod(
                "layer_var", MatchParams, _layer_var, needs_dense=True, recalibrates_bn=True
            ),
            RepairMethod(
                "channel_var", MatchParams, _channel_var, needs_dense=True, recalibrates_bn=True
            ),
            RepairMethod(
                "channel_var_shrink",
                ShrinkParams,
                _channel_var_shrink,
                needs_dense=True,
                recalibrates_bn=True,
            ),
            RepairMethod(
                "obs_reconstruct",
                ObsParams,
                obs_reconstruct,
                needs_dense=True,
                needs_dense_model=True,
                recalibrates_bn=True,
                takes_masks=True,
            ),
            RepairMethod(
                "adaprune",
                AdaPruneParams,
                adaprune,
                needs_dense=True,
                needs_dense_model=True,
                recalibrates_bn=True,
                takes_masks=True,
            ),
        )
    },
)


def register_repair(method: RepairMethod) -> None:
    """Add a plugin's method (see sweep.core.plugins) to the catalog, as an activation-statistic
    method that draws a calibration set, unless the plugin added its own entry to `REPAIRS`
    first (another role, or no calibration draw); then add its implementation. A name already
    implemented, or parameters other than its catalog entry's, are a UserError."""
    if method.name not in REPAIRS:
        REPAIRS.register(method.name, RepairInfo(method.name, method.params))
    elif REPAIRS[method.name].params is not method.params:
        raise UserError(
            f"repair method {method.name!r} takes {method.params.__name__}, but its catalog "
            f"entry takes {REPAIRS[method.name].params.__name__}"
        )
    REPAIR_METHODS.register(method.name, method)


def _check_same_architecture(dense: nn.Module, pruned: nn.Module) -> None:
    def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
        state = model.state_dict()
        return {k: tuple(v.shape) for k, v in state.items() if not has_repair_points({k: v})}

    dense_shapes, pruned_shapes = shapes(dense), shapes(pruned)
    if dense_shapes != pruned_shapes:
        differing = sorted(set(dense_shapes.items()) ^ set(pruned_shapes.items()))
        name, _ = differing[0]
        raise UserError(
            f"dense model ({type(dense).__name__}) does not match the pruned model "
            f"({type(pruned).__name__}): parameter {name!r} is "
            f"{dense_shapes.get(name, 'missing')} in the dense model and "
            f"{pruned_shapes.get(name, 'missing')} in the pruned one"
        )


def _dense_stats_for(
    method: str,
    pruned: nn.Module,
    batches: Sequence[torch.Tensor],
    cal_key: str,
    dense: nn.Module | None,
    dense_stats: DenseStats | None,
) -> DenseStats:
    if dense is not None:
        _check_same_architecture(dense, pruned)
    if dense_stats is None:
        assert dense is not None
        return dense_statistics_from_batches(dense, batches, cal_key)
    if not isinstance(dense_stats, DenseStats):
        raise UserError(f"dense_stats must be a DenseStats, got {type(dense_stats).__name__}")
    if dense_stats.calibration_key != cal_key:
        raise UserError(
            f"dense_stats were measured on calibration set {dense_stats.calibration_key!r}, "
            f"but repair got {cal_key!r}"
        )
    needed = [point.name for point in repair_points(pruned)]
    missing = [point for point in needed if point not in dense_stats.moments]
    if missing:
        raise UserError(f"dense_stats lack repair point {missing[0]!r} needed by {method!r}")
    return dense_stats


def repair(
    pruned: nn.Module,
    method: str,
    calibration: object,
    dense: nn.Module | None = None,
    dense_stats: DenseStats | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    **params: object,
) -> nn.Module:
    """A repaired copy of `pruned` (eval mode): `method` fitted on the calibration images only.

    `dense` (or its cached `dense_statistics`) is needed by the activation-statistic methods; the
    layer-wise methods (obs_reconstruct, adaprune) need `dense` itself. `masks`: the pruning
    step's keep-masks (`PruneReport.masks`, as `prune.apply_masks` takes them), checked and
    applied to the copy before any work; the layer-wise methods refit exactly the kept weights,
    a kept weight that is exactly zero included. Without them they take the non-zero weights as
    kept (a direct call on a pruned model), and such a weight stays zero.
    """
    spec = REPAIR_METHODS[method]
    typed = repair_params(method, **params)
    if spec.needs_dense_model and dense is None:
        raise UserError(
            f"repair method {method!r} fits each layer to the dense model's layer outputs: "
            "pass dense= (the unpruned model; dense_stats= is not enough)"
        )
    if spec.needs_dense and dense is None and dense_stats is None:
        raise UserError(
            f"repair method {method!r} matches the dense model's activations: pass dense= "
            "(the unpruned model) or dense_stats= (from dense_statistics)"
        )
    if spec.recalibrates_bn:
        require_batchnorm(pruned, method)
    model = copy.deepcopy(pruned).eval()
    if masks is not None:
        apply_masks(model, masks)  # a no-op on the model they pruned
    if not spec.uses_calibration:
        return model
    batches = calibration_batches(calibration, model_device(pruned))
    if spec.needs_dense_model:
        assert dense is not None
        _check_same_architecture(dense, model)
        reference: object = dense
    elif spec.needs_dense:
        cal_key = calibration_key(calibration, batches)
        reference = _dense_stats_for(method, model, batches, cal_key, dense, dense_stats)
    else:
        reference = None
    if spec.takes_masks:
        spec.apply(model, batches, reference, typed, masks=masks)
    else:
        spec.apply(model, batches, reference, typed)
    return model
