"""The parameters of every repair method: frozen dataclasses whose defaults are the defaults.

Torch-free because a trial's identity holds every parameter with its defaults filled in
(`sweep.plan.identity`), and grids are checked before launch. Each dataclass refuses bad values on
construction, so a grid with one fails before any trial runs. What each method does with them:
`sweep.tasks.repair`, `sweep.tasks.reconstruct` (obs_reconstruct), `sweep.tasks.adaprune`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.core.errors import UnknownNameError, UserError

# Chosen on the validation split (docs/results/defaults_val.md, README "Defaults chosen on the
# validation split"): a second recalibration never beat the default there.
RECAL_AFTER_DEFAULT = False

POINT_SETS = ("all", "hidden", "logits")


@dataclass(frozen=True)
class NoParams:
    """Methods without parameters."""


@dataclass(frozen=True)
class MatchParams:
    """recal_after: recalibrate BatchNorm again after the corrections (one more pass).

    points: which repair points get a correction: all, hidden (every point but the logits) or
    logits (the logits only); an ablation of where the correction acts.
    """

    recal_after: bool = RECAL_AFTER_DEFAULT
    points: str = "all"

    def __post_init__(self) -> None:
        if self.points not in POINT_SETS:
            raise UnknownNameError("repair point set", self.points, POINT_SETS)


@dataclass(frozen=True)
class ShrinkParams(MatchParams):
    """tau: how weak (relative to its point) a channel's surviving signal may be before its own
    gain is trusted less than the point's gain (> 0); gain_min, gain_max: hard bounds on every
    gain (0 <= gain_min <= 1 <= gain_max)."""

    tau: float = 0.25
    gain_min: float = 0.0
    gain_max: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tau > 0:
            raise UserError(f"channel_var_shrink tau must be > 0, got {self.tau}")
        if not 0 <= self.gain_min <= 1 <= self.gain_max:
            raise UserError(
                f"channel_var_shrink needs 0 <= gain_min <= 1 <= gain_max, "
                f"got gain_min={self.gain_min}, gain_max={self.gain_max}"
            )


@dataclass(frozen=True)
class LayerwiseParams:
    """recal_after: recalibrate BatchNorm after the refit (docs/architecture.md, "Definitions").
    Off, the BatchNorms keep the dense running statistics, which are the ones the refit targeted:
    a least-squares fit has less output variance than its target, and recalibration rescales that
    shrinkage back up (measured on a random ResNet-20 at 90 %: it undoes the fit in deep layers)."""

    recal_after: bool = True


@dataclass(frozen=True)
class ObsParams(LayerwiseParams):
    """damping: how strongly every masked solve holds the kept weights to their dense values, as
    a fraction of the mean diagonal of the layer's Gram matrix (>= 0, finite; OBC/SparseGPT's
    dampening of H). It keeps the solve stable where inputs are (nearly) collinear; at any value
    a layer ends no worse than plain masking; 0 is plain least squares."""

    damping: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.damping < math.inf:  # NaN fails the comparison too
            raise UserError(f"obs_reconstruct damping must be finite and >= 0, got {self.damping}")


@dataclass(frozen=True)
class AdaPruneParams(LayerwiseParams):
    """iterations: Adam steps per layer (> 0), each on the whole calibration set's gradient;
    lr: Adam's learning rate (> 0), i.e. roughly the largest change of a weight per step;
    recal_after: as obs_reconstruct's.

    The defaults were chosen on the validation split (docs/results/adaprune_val.md): lr 3e-2
    beats the first default 1e-3 at every point tried, as do 1e-2 and 1e-1, while 400 iterations
    add nothing at these rates and cost up to 2.5 times as much."""

    iterations: int = 100
    lr: float = 3e-2

    def __post_init__(self) -> None:
        if not self.iterations > 0:
            raise UserError(f"adaprune iterations must be > 0, got {self.iterations}")
        if not self.lr > 0:
            raise UserError(f"adaprune lr must be > 0, got {self.lr}")
