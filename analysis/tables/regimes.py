"""The regimes table: the regime of every grid point, per τ, from which repairs recover there."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.boundaries import recovers
from analysis.definitions import (
    ACTIVATION,
    BN_RECAL,
    BN_RECOVERABLE,
    COLLAPSED,
    INTACT,
    NO_REPAIR,
    RECONSTRUCTION,
    REPAIR_SENSITIVE,
    UNKNOWN,
    join_flags,
)
from analysis.tables.inputs import TableInputs


def regimes_table(inputs: TableInputs) -> pd.DataFrame:
    """One row per (pair, allocation it ran, τ, sparsity of its grid)."""
    records = [
        _regime_point(inputs, p, a, tau, s)
        for p in range(len(inputs.coded.pairs))
        for a in np.flatnonzero(inputs.has_alloc[p])
        for tau in inputs.taus
        for s in np.flatnonzero(inputs.in_grid[p])
    ]
    return pd.DataFrame.from_records(records)


def _regime_point(inputs: TableInputs, p: int, a: int, tau: float, s: int) -> dict:
    variants, st = inputs.coded.variants, inputs.stats
    mean, present = st.r[p, :, a, s], st.seeds[p, :, a, s] > 0
    ok = recovers(mean, tau)
    # A variant the pair ran but lacks here could recover; one it never ran is outside its
    # study (named in the flags), as if absent from the store.
    optimistic = _regime(ok | (inputs.has_variant[p] & ~present), inputs.roles)
    pessimistic = _regime(ok & present, inputs.roles)
    regime = optimistic if optimistic == pessimistic else UNKNOWN
    return (
        inputs.key(p)
        | {"allocation": inputs.coded.allocations[a], "tau": tau}
        | {"sparsity": inputs.coded.grid[s], "regime": regime}
        | {f"r_{variants[m]}": mean[m] for m in range(len(variants))}
        | {
            "recovering": ", ".join(
                variants[m] for m in range(len(variants)) if ok[m] and present[m]
            ),
            "flags": _regime_flags(inputs, (p, a, s), present, regime),
        }
    )


def _regime_flags(
    inputs: TableInputs, point: tuple[int, int, int], present: np.ndarray, regime: str
) -> str:
    """Repairs missing at the point or never run by the pair, and the error rows excluded."""
    variants = inputs.coded.variants
    p, a, s = point
    expected = inputs.has_variant[p]  # variants this pair ran at all
    missing = [name for m, name in enumerate(variants) if expected[m] and not present[m]]
    absent = [name for m, name in enumerate(variants) if not expected[m]]
    errors = inputs.errors[p, :, a, s].sum()
    return join_flags(
        f"missing repairs: {', '.join(missing)}" if missing else "",
        f"not run for this dataset/arch: {', '.join(absent)}" if absent else "",
        "regime depends on missing repairs" if regime == UNKNOWN else "",
        f"{errors} error rows excluded" if errors else "",
    )


def _regime(ok: np.ndarray, roles: np.ndarray) -> str:
    """The regime of one grid point from which variants recover there (ok) and their roles."""
    if ok[roles == NO_REPAIR].any():
        return INTACT
    if ok[roles == BN_RECAL].any():
        return BN_RECOVERABLE
    if ok[(roles == ACTIVATION) | (roles == RECONSTRUCTION)].any():
        return REPAIR_SENSITIVE
    return COLLAPSED
