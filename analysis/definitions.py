"""Names and definitions shared by the analysis modules (ARCHITECTURE.md, "Regimes").

chance = 1 / num_classes; r = (top1 − chance) / (dense − chance); a repair *recovers* at a
sparsity if its mean r over seeds is ≥ τ. Regime of a grid sparsity: `intact` (none recovers),
`bn_recoverable` (bn_recal does, none does not), `repair_sensitive` (only an activation-statistic
repair, i.e. any other method, does), `collapsed` (nothing does); `unknown` when a missing repair
could change that answer.

The unit of every table is a repair *variant* (sweep/variants.py: the method plus its non-default
parameters), so two settings of one method are two curves, never one average; which role a
variant plays in the regime definition goes by its method.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sweep.errors import UserError
from sweep.variants import variant_method

DEFAULT_TAU = 0.5
NO_REPAIR, BN_RECAL, ACTIVATION = "none", "bn_recal", "activation"
# Display order of methods; methods not listed follow alphabetically, variants after their method.
METHOD_ORDER = (NO_REPAIR, BN_RECAL, "layer_var", "channel_var", "channel_var_shrink")
ALLOCATION_ORDER = ("erk", "lamp", "uniform", "global")
# Methods that take no calibration draw: one row per point is their design, not a weakness.
DETERMINISTIC_METHODS = (NO_REPAIR,)
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
    "repair_variant",
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


def repair_role(variant: str) -> str:
    """NO_REPAIR, BN_RECAL or ACTIVATION: the variant's part in the regime definition."""
    method = variant_method(variant)
    return method if method in (NO_REPAIR, BN_RECAL) else ACTIVATION


def is_deterministic(variant: str) -> bool:
    return variant_method(variant) in DETERMINISTIC_METHODS


def variant_order(variants: list[str] | set[str]) -> list[str]:
    """Variants in display order: by method (METHOD_ORDER, then alphabetical), default first."""

    def key(variant: str) -> tuple:
        method = variant_method(variant)
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        return rank, method, variant != method, variant

    return sorted(variants, key=key)


def join_flags(*parts: object) -> str:
    return "; ".join(str(p) for p in parts if p)


@dataclass(frozen=True)
class RegimeTables:
    """The reduced results. One DataFrame per question, each with a `flags` column.

    curves:     (dataset, arch, allocation, repair_variant, sparsity) mean r, its interval, seeds
    boundaries: (dataset, arch, allocation, repair_variant) the τ crossing, bracket and interval
    regimes:    (dataset, arch, allocation, sparsity) the regime and r of every variant
    summary:    (dataset, arch, allocation) dense top-1, chance, the repair-sensitive band
    comparison: (dataset, arch, repair_variant, sparsity) LAMP − ERK in r, interval, winner
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
