"""Names and definitions shared by the analysis modules (docs/architecture.md, "Definitions").

chance = 1 / num_classes; r = (top1 − chance) / (dense − chance), with `dense` the dense top-1 of
the row's own replicate (each row's `dense_top1`, measured on the same eval images); a repair
*recovers* at a sparsity if its mean r is ≥ τ, the mean taken over every (replicate, calibration
seed) cell of the point. Several τ are analysed at once (DEFAULT_TAUS); boundaries, bands and
regimes are given per τ. Regime of a grid sparsity: `intact` (none recovers),
`bn_recoverable` (bn_recal does, none does not), `repair_sensitive` (only a repair beyond BN
recalibration does: an activation-statistic repair or a weight reconstruction), `collapsed`
(nothing does); `unknown` when a missing repair could change that answer. The repair-sensitive
band runs from where BN recalibration stops to where the best activation-statistic repair stops;
where the store has weight reconstructions (obs_reconstruct, adaprune), the part of the band
beyond their boundary too: the band survives them only where that part is wider than zero.

The unit of every table is a repair *variant* (sweep/plan/variants.py: the method plus its
non-default parameters), so two settings of one method are two curves, never one average; which
role a variant plays in the regime definition, and the display order of methods and allocations,
are its method's catalog entry's (sweep/catalog/repairs.py, sweep/catalog/allocations.py).

Intervals (intervals.py): θ̂ ± t_ν·sqrt(v_rep + v_img), v_rep the delete-one-replicate jackknife
variance, v_img the shared eval images' effect from bootstrap resamples of the images, ν by
Satterthwaite; one method for means, r, boundaries, the band and every paired difference.

Winners. Every comparison (LAMP − ERK per variant and sparsity; variant b − variant a per
allocation and sparsity) is a paired difference in mean r with such an interval (statistics.py).
It names a winner only where that interval excludes zero (else NO_WINNER); never where both arms
are *at chance* (BOTH_AT_CHANCE); and never where fewer than two replicates (dense checkpoints)
have both arms (SINGLE_REPLICATE): a verdict must hold for another checkpoint, and one cannot say
how another would do. An arm is at chance when the lower end of its top-1 interval is at or below
chance (1 / num_classes): the data cannot tell it from guessing. One margin only: the interval
already holds the eval set's sampling noise (and the replicates' spread), so nothing is added to
chance (an earlier version also added 2 binomial standard errors, counting the noise twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.repairs import ACTIVATION, BN_RECAL, NO_REPAIR, RECONSTRUCTION, REPAIRS  # noqa: F401 - roles re-exported
from sweep.core.errors import UserError
from sweep.plan.variants import variant_method

DEFAULT_TAUS = (0.5, 0.7, 0.9)
NO_WINNER, BOTH_AT_CHANCE, NOT_AVAILABLE = "no winner", "both at chance", "n/a"
SINGLE_REPLICATE = "single replicate"  # no verdict: fewer than 2 replicates have both arms
PAIRED_TABLES = ("comparison", "repairs")  # the tables that state verdicts
ALLOCATION_ORDER = tuple(ALLOCATIONS)  # the catalog's display order
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
    "replicate",
    "seed",
    "status",
    "num_classes",
    "eval_split",
    "eval_size",
    "eval_precision",
    "device",
    "dense_top1",
    "top1",
    "correct",
    "checkpoint_sha256",
    "dense_correct",
)
SPARSITY_DECIMALS = 6
PAIR = ["dataset", "arch"]


class AnalysisInputError(UserError):
    """An analysis argument or a result table that cannot be analysed."""


def _default() -> str:
    return ",".join(f"{t:g}" for t in DEFAULT_TAUS)


def check_taus(taus: float | str | Sequence[float]) -> tuple[float, ...]:
    """τ values in (0, 1), from a number, a list, or a comma-separated string ('0.5,0.7').

    Duplicates are dropped, the order given is kept: the first τ is the one the regime map of the
    report shows."""
    if isinstance(taus, str):
        parts = [part.strip() for part in taus.split(",")]
        values = []
        for part in parts:
            try:
                values.append(float(part))
            except ValueError:
                raise AnalysisInputError(
                    f"tau {part!r} is not a number; expected comma-separated values in (0, 1), "
                    f"e.g. {_default()}"
                ) from None
    else:
        values = [float(t) for t in (taus if isinstance(taus, Sequence) else [taus])]
    if not values:
        raise AnalysisInputError(f"no tau given; expected values in (0, 1), e.g. {_default()}")
    for tau in values:
        if not 0.0 < tau < 1.0:  # NaN fails this too
            raise AnalysisInputError(f"tau {tau:g} is outside (0, 1); the default is {_default()}")
    return tuple(dict.fromkeys(values))


def check_paired_verdicts(frame: pd.DataFrame) -> None:
    """Refuses to state paired verdicts (the comparison and repairs tables on their own) for a
    store where a dataset/arch has a single replicate: no verdict can be named there."""
    ok = frame[frame["status"] == "ok"]
    replicates = ok["replicate"].fillna(0).groupby([ok[c] for c in PAIR], sort=True).nunique()
    single = replicates[replicates < 2]
    if len(single):
        dataset, arch = single.index[0]
        raise AnalysisInputError(
            f"paired verdicts need at least 2 replicates (dense checkpoints) per dataset/arch; "
            f"{dataset} / {arch} has 1, so its comparisons name no winner "
            "('single replicate'): add replicates to the grid, or read its intervals in --table "
            "curves"
        )


def repair_role(variant: str) -> str:
    """The variant's part in the regime definition: its method's catalog role; ACTIVATION for a
    method the catalog lacks (a plugin's, in a store read without the plugin)."""
    method = variant_method(variant)
    return REPAIRS[method].role if method in REPAIRS else ACTIVATION


def is_deterministic(variant: str) -> bool:
    """Whether the method draws no calibration set: one row per point is its design, not a
    weakness."""
    method = variant_method(variant)
    return method in REPAIRS and not REPAIRS[method].uses_calibration


def variant_order(variants: list[str] | set[str]) -> list[str]:
    """Variants in display order: by method (the catalog's order, then the methods it lacks
    alphabetically), each method's default first."""
    methods = tuple(REPAIRS)

    def key(variant: str) -> tuple:
        method = variant_method(variant)
        rank = methods.index(method) if method in methods else len(methods)
        return rank, method, variant != method, variant

    return sorted(variants, key=key)


def join_flags(*parts: object) -> str:
    return "; ".join(str(p) for p in parts if p)


@dataclass(frozen=True)
class RegimeTables:
    """The reduced results. One DataFrame per question, each with a `flags` column; every mean
    comes with its interval (intervals.py).

    curves:     (dataset, arch, allocation, repair_variant, sparsity) mean r and top-1, intervals
    boundaries: (dataset, arch, allocation, repair_variant, tau) the τ crossing, bracket, interval
    regimes:    (dataset, arch, allocation, tau, sparsity) the regime and r of every variant
    summary:    (dataset, arch, allocation, tau) dense top-1, chance, the repair-sensitive band
    comparison: (dataset, arch, repair_variant, sparsity) LAMP − ERK in r, interval, winner
    repairs:    (dataset, arch, allocation, sparsity, variant_a, variant_b) b − a in r, winner
    """

    taus: tuple[float, ...]
    confidence: float
    resamples: int
    curves: pd.DataFrame
    boundaries: pd.DataFrame
    regimes: pd.DataFrame
    summary: pd.DataFrame
    comparison: pd.DataFrame
    repairs: pd.DataFrame

    TABLES = ("summary", "boundaries", "regimes", "comparison", "repairs", "curves")

    @property
    def tau(self) -> float:
        """The first τ: the one a single-τ view (the report's regime map) shows."""
        return self.taus[0]

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)
