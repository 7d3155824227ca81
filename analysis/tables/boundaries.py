"""The boundaries table: where each curve's mean r first falls below each τ, with its interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.boundaries import BELOW, STATUS_NAMES
from analysis.definitions import PAIR, is_deterministic, join_flags
from analysis.tables.inputs import TableInputs

BOUNDARY_COLUMNS = [
    *PAIR,
    *("allocation", "repair_variant", "tau", "boundary", "status", "bracket_lo", "bracket_hi"),
    *("ci_lo", "ci_hi", "replicates", "seeds", "non_monotone", "flags"),
]


def boundaries_table(inputs: TableInputs) -> pd.DataFrame:
    """One row per expected curve (pair, variant, allocation) and τ."""
    records = [
        _boundary(inputs, (p, m, a), t)
        for p, m, a in inputs.cells()
        for t in range(len(inputs.taus))
    ]
    return pd.DataFrame.from_records(records, columns=BOUNDARY_COLUMNS)


def _boundary(inputs: TableInputs, curve: tuple[int, int, int], t: int) -> dict:
    st, grid, cr = inputs.stats, inputs.coded.grid, inputs.crossings[t]
    p, m, a = curve
    own = grid[inputs.in_grid[p]]  # the pair's grid: the interval is clipped to it
    ci = st.boundary_ci[t, :, p, m, a]
    crossed = cr.lower[curve] >= 0
    return inputs.key(p) | {
        "allocation": inputs.coded.allocations[a],
        "repair_variant": inputs.coded.variants[m],
        "tau": inputs.taus[t],
        "boundary": cr.boundary[curve],
        "status": STATUS_NAMES[int(cr.status[curve])],
        "bracket_lo": grid[cr.lower[curve]] if crossed else np.nan,
        "bracket_hi": grid[cr.upper[curve]] if crossed else np.nan,
        "ci_lo": _clip(ci[0], own),
        "ci_hi": _clip(ci[1], own),
        "replicates": st.pair_replicates[p],
        "seeds": st.family_seeds[p, m],
        "non_monotone": bool(cr.non_monotone[curve]),
        "flags": _boundary_flags(inputs, curve, t),
    }


def _boundary_flags(inputs: TableInputs, curve: tuple[int, int, int], t: int) -> str:
    """Missing sparsities, a single seed, a censored interval, a non-monotone curve."""
    st, cr = inputs.stats, inputs.crossings[t]
    p, m, a = curve
    own = inputs.in_grid[p]
    missing = inputs.coded.grid[own][(st.seeds[p, m, a] == 0)[own]]
    ci = st.boundary_ci[t, :, p, m, a]
    flags = [
        f"missing sparsities: {_fmt(missing)}" if len(missing) else "",
        "single seed: interval covers replicates and images only"
        if st.family_seeds[p, m] == 1 and not is_deterministic(inputs.coded.variants[m])
        else "",
        "interval reaches below the grid" if ci[0] == -np.inf else "",
        "interval reaches beyond the grid" if ci[1] == np.inf else "",
    ]
    if cr.non_monotone[curve]:
        flags.append(
            "non-monotone: r is below tau at the first grid point and recovers later"
            if cr.status[curve] == BELOW
            else "non-monotone: r comes back up to tau; the first downward crossing is used"
        )
    return join_flags(*flags)


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _clip(value: float, own: np.ndarray) -> float:
    return float(np.clip(value, own.min(), own.max())) if len(own) else np.nan
