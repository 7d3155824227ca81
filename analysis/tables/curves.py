"""The curves table: mean r and top-1 with their intervals at every expected point."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.definitions import PAIR, is_deterministic, join_flags
from analysis.tables.inputs import TableInputs

CURVE_COLUMNS = [
    *PAIR,
    *("allocation", "repair_variant", "sparsity", "r", "r_lo", "r_hi", "top1", "top1_lo"),
    *("top1_hi", "at_chance", "replicates", "seeds", "errors", "flags"),
]


def curves_table(inputs: TableInputs) -> pd.DataFrame:
    """One row per (pair, variant, allocation) the pair ran and sparsity of its grid."""
    records = [
        _curve_point(inputs, (p, m, a, s))
        for p, m, a in inputs.cells()
        for s in np.flatnonzero(inputs.in_grid[p])
    ]
    return pd.DataFrame.from_records(records, columns=CURVE_COLUMNS)


def _curve_point(inputs: TableInputs, at: tuple[int, int, int, int]) -> dict:
    st, n = inputs.stats, inputs.stats.seeds[at]
    p, m, a, s = at
    return inputs.key(p) | {
        "allocation": inputs.coded.allocations[a],
        "repair_variant": inputs.coded.variants[m],
        "sparsity": inputs.coded.grid[s],
        "r": st.r[at],
        "r_lo": st.r_lo[at],
        "r_hi": st.r_hi[at],
        "top1": st.top1[at],
        "top1_lo": st.top1_lo[at],
        "top1_hi": st.top1_hi[at],
        "at_chance": bool(st.at_chance[at]) if n else None,
        "replicates": st.replicates[at],
        "seeds": n,
        "errors": inputs.errors[at],
        "flags": _curve_flags(inputs, at),
    }


def _curve_flags(inputs: TableInputs, at: tuple[int, int, int, int]) -> str:
    """What is excluded, missing, thin or averaged at one point."""
    st, p, m = inputs.stats, at[0], at[1]
    n, errors, unusable = st.seeds[at], inputs.errors[at], inputs.unusable[at]
    family, replicates, duplicates = st.family_seeds[p, m], st.replicates[at], st.duplicates[at]
    return join_flags(
        "missing: only error rows" if n == 0 and errors and not unusable else "",
        "missing: no rows" if n == 0 and not errors and not unusable else "",
        f"{errors} error rows excluded" if errors and (n or unusable) else "",
        f"{unusable} ok rows without a usable r excluded" if unusable else "",
        "single seed" if n == 1 and not is_deterministic(inputs.coded.variants[m]) else "",
        f"{n} of {family} seeds" if 1 < n < family else "",
        f"{replicates} of {st.pair_replicates[p]} replicates"
        if 0 < replicates < st.pair_replicates[p]
        else "",
        f"{duplicates} duplicate trials averaged" if duplicates else "",
    )
