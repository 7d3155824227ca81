"""The paired-difference tables: LAMP − ERK (comparison) and every repair against every other
(repairs), each with its interval, replicate agreement and a winner only outside the noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.definitions import (
    BOTH_AT_CHANCE,
    NO_WINNER,
    NOT_AVAILABLE,
    PAIR,
    SINGLE_REPLICATE,
    is_deterministic,
    join_flags,
)
from analysis.statistics import Differences
from analysis.tables.inputs import TableInputs

_DIFFERENCE = ("diff", "diff_lo", "diff_hi", "winner", "replicate_agreement", "replicates")
COMPARISON_COLUMNS = [
    *PAIR,
    *("repair_variant", "sparsity", "r_erk", "r_lamp", *_DIFFERENCE, "seeds", "flags"),
]
REPAIR_COLUMNS = [
    *PAIR,
    *("allocation", "sparsity", "variant_a", "variant_b", "r_a", "r_b", *_DIFFERENCE, "flags"),
]


def comparison_table(inputs: TableInputs) -> pd.DataFrame:
    """LAMP − ERK per (pair, variant, sparsity); empty unless the store has both allocations."""
    allocations = inputs.coded.allocations
    if "erk" not in allocations or "lamp" not in allocations:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    lamp, erk = allocations.index("lamp"), allocations.index("erk")
    records = [
        _lamp_erk(inputs, (p, m, s), lamp, erk)
        for p in range(len(inputs.coded.pairs))
        if inputs.has_alloc[p, lamp] or inputs.has_alloc[p, erk]
        for m in np.flatnonzero(inputs.has_variant[p])
        for s in np.flatnonzero(inputs.in_grid[p])
    ]
    return pd.DataFrame.from_records(records, columns=COMPARISON_COLUMNS)


def _lamp_erk(inputs: TableInputs, point: tuple[int, int, int], lamp: int, erk: int) -> dict:
    st, (p, m, s) = inputs.stats, point
    variant = inputs.coded.variants[m]
    n_lamp, n_erk = st.seeds[p, m, lamp, s], st.seeds[p, m, erk, s]
    return (
        inputs.key(p)
        | {"repair_variant": variant, "sparsity": inputs.coded.grid[s]}
        | {"r_erk": st.r[p, m, erk, s], "r_lamp": st.r[p, m, lamp, s]}
        | _difference(st.lamp_erk, point, "erk", "lamp")
        | {
            "seeds": min(n_lamp, n_erk),
            "flags": join_flags(
                "missing: lamp" if n_lamp == 0 else "",
                "missing: erk" if n_erk == 0 else "",
                "single seed and replicate: images only"
                if min(n_lamp, n_erk) == 1
                and st.pair_replicates[p] == 1
                and not is_deterministic(variant)
                else "",
            ),
        }
    )


def repairs_table(inputs: TableInputs) -> pd.DataFrame:
    """variant_b − variant_a per (pair, allocation, sparsity), a before b in display order."""
    records = []
    for p, a in zip(*np.nonzero(inputs.has_alloc), strict=True):
        ran = np.flatnonzero(inputs.has_variant[p])
        records += [
            _repair_pair(inputs, (p, a, m1, m2, s))
            for i, m1 in enumerate(ran)
            for m2 in ran[i + 1 :]
            for s in np.flatnonzero(inputs.in_grid[p])
        ]
    return pd.DataFrame.from_records(records, columns=REPAIR_COLUMNS)


def _repair_pair(inputs: TableInputs, at: tuple[int, int, int, int, int]) -> dict:
    st, variants, (p, a, m1, m2, s) = inputs.stats, inputs.coded.variants, at
    return (
        inputs.key(p)
        | {"allocation": inputs.coded.allocations[a], "sparsity": inputs.coded.grid[s]}
        | {"variant_a": variants[m1], "variant_b": variants[m2]}
        | {"r_a": st.r[p, m1, a, s], "r_b": st.r[p, m2, a, s]}
        | _difference(st.repairs, at, variants[m1], variants[m2])
        | {
            "flags": join_flags(
                f"missing: {variants[m1]}" if st.seeds[p, m1, a, s] == 0 else "",
                f"missing: {variants[m2]}" if st.seeds[p, m2, a, s] == 0 else "",
            )
        }
    )


def _difference(diffs: Differences, index: tuple, name_a: str, name_b: str) -> dict:
    """The columns of one comparison: b − a, its interval, agreement and the winner."""
    diff, lo, hi = diffs.diff[index], diffs.lo[index], diffs.hi[index]
    replicates = int(diffs.replicates[index])
    at_chance = bool(diffs.at_chance[index])
    return {
        "diff": diff,
        "diff_lo": lo,
        "diff_hi": hi,
        "winner": _winner(diff, lo, hi, at_chance, replicates, name_a, name_b),
        "replicate_agreement": diffs.agreement[index],
        "replicates": replicates,
    }


def _winner(
    diff: float, lo: float, hi: float, at_chance: bool, replicates: int, name_a: str, name_b: str
) -> str:
    """b's or a's name only where the paired interval excludes 0, not both arms are at chance,
    and at least 2 replicates have both arms (definitions.py)."""
    if np.isnan(diff):
        return NOT_AVAILABLE
    if at_chance:
        return BOTH_AT_CHANCE
    if replicates < 2:
        return SINGLE_REPLICATE
    if lo > 0:
        return name_b
    if hi < 0:
        return name_a
    return NO_WINNER
