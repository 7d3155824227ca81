"""Names and definitions shared by the analysis modules (ARCHITECTURE.md, "Regimes").

chance = 1 / num_classes; r = (top1 − chance) / (dense − chance); a repair *recovers* at a
sparsity if its mean r over seeds is ≥ τ. Regime of a grid sparsity: `intact` (none recovers),
`bn_recoverable` (bn_recal does, none does not), `repair_sensitive` (only an activation-statistic
repair, i.e. any other method, does), `collapsed` (nothing does); `unknown` when a missing repair
could change that answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sweep.errors import UserError

DEFAULT_TAU = 0.5
NO_REPAIR, BN_RECAL = "none", "bn_recal"
# Display order; names not listed follow alphabetically.
REPAIR_ORDER = (NO_REPAIR, BN_RECAL, "layer_var", "channel_var", "channel_var_shrink")
ALLOCATION_ORDER = ("erk", "lamp", "uniform", "global")
# Repairs that take no calibration draw: one row per point is their design, not a weakness.
DETERMINISTIC_REPAIRS = (NO_REPAIR,)
INTACT, BN_RECOVERABLE, REPAIR_SENSITIVE, COLLAPSED, UNKNOWN = (
    "intact",
    "bn_recoverable",
    "repair_sensitive",
    "collapsed",
    "unknown",
)
REGIMES = (INTACT, BN_RECOVERABLE, REPAIR_SENSITIVE, COLLAPSED, UNKNOWN)
COLUMNS = (
    "dataset",
    "arch",
    "allocation",
    "sparsity",
    "repair",
    "seed",
    "status",
    "num_classes",
    "dense_top1",
    "top1",
)
SPARSITY_DECIMALS = 6
PAIR = ["dataset", "arch"]


class AnalysisInputError(UserError):
    """An analysis argument or a result table that cannot be analysed."""


def check_tau(tau: float) -> float:
    if not 0.0 < tau < 1.0:
        raise AnalysisInputError(f"tau {tau!r} is outside (0, 1); the default is {DEFAULT_TAU}")
    return float(tau)


def join_flags(*parts: object) -> str:
    return "; ".join(str(p) for p in parts if p)


@dataclass(frozen=True)
class RegimeTables:
    """The reduced results. One DataFrame per question, each with a `flags` column.

    curves:     (dataset, arch, allocation, repair, sparsity) mean r, its interval, seeds, errors
    boundaries: (dataset, arch, allocation, repair) the τ crossing, its bracket and interval
    regimes:    (dataset, arch, allocation, sparsity) the regime and r of every repair
    summary:    (dataset, arch, allocation) dense top-1, chance, the repair-sensitive band
    comparison: (dataset, arch, repair, sparsity) LAMP − ERK in r, its interval, the winner
    """

    tau: float
    confidence: float
    resamples: int
    curves: pd.DataFrame
    boundaries: pd.DataFrame
    regimes: pd.DataFrame
    summary: pd.DataFrame
    comparison: pd.DataFrame

    TABLES = ("summary", "boundaries", "regimes", "comparison", "curves")

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)
