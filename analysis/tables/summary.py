"""The summary table: per pair, allocation and τ, where each kind of repair stops recovering and
the repair-sensitive band between them, with intervals and the pair's flags."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.band import band, effective_boundaries
from analysis.boundaries import BELOW, BEYOND
from analysis.definitions import (
    ACTIVATION,
    BN_RECAL,
    PAIR,
    RECONSTRUCTION,
    REPAIR_SENSITIVE,
    join_flags,
)
from analysis.statistics import BAND_FIELDS
from analysis.tables.inputs import TableInputs
from analysis.tables.pair_facts import PairFacts, pair_facts

SUMMARY_COLUMNS = [
    *PAIR,
    *("allocation", "tau", "dense_top1", "chance", "replicates", "boundary_none"),
    *("boundary_bn_recal", "bn_recal_variant", "boundary_activation", "activation_variant"),
    *("band_lo", "band_lo_lo", "band_lo_hi", "band_hi", "band_hi_lo", "band_hi_hi"),
    *("band_width", "band_width_lo", "band_width_hi"),
    *("boundary_reconstruction", "reconstruction_variant", "band_beyond_reconstruction"),
    *("band_beyond_reconstruction_lo", "band_beyond_reconstruction_hi"),
    *("sensitive_points", "trials", "errors", "flags"),
]
# The column naming each kind of repair's best variant (the latest boundary of the kind).
BEST_VARIANT_COLUMNS = {
    BN_RECAL: "bn_recal_variant",
    ACTIVATION: "activation_variant",
    RECONSTRUCTION: "reconstruction_variant",
}


@dataclass(frozen=True)
class _PairBand:
    """One pair at one τ: its facts, each variant's effective boundary per allocation ([M, A],
    NaN for a variant it never ran) and the band computed from them."""

    p: int
    t: int
    facts: PairFacts
    edges: np.ndarray
    values: dict[str, np.ndarray]


def summary_table(inputs: TableInputs, regimes: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, τ, allocation the pair ran); `regimes` gives the sensitive points."""
    sensitive = regimes.assign(hit=regimes["regime"] == REPAIR_SENSITIVE)
    sensitive = sensitive.groupby([*PAIR, "allocation", "tau"], sort=False)["hit"].sum()
    records = []
    for p in range(len(inputs.coded.pairs)):
        facts = pair_facts(inputs.coded, inputs.stats, p)
        for t in range(len(inputs.taus)):
            at = _pair_band(inputs, p, t, facts)
            allocations = np.flatnonzero(inputs.has_alloc[p])
            records += [_summary_row(inputs, at, a, sensitive) for a in allocations]
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


def _pair_band(inputs: TableInputs, p: int, t: int, facts: PairFacts) -> _PairBand:
    ran = np.flatnonzero(inputs.has_variant[p])
    own_grid = inputs.coded.grid[inputs.in_grid[p]]
    effective = effective_boundaries(inputs.crossings[t], own_grid)[p]
    edges = np.full_like(effective, np.nan)
    edges[ran] = effective[ran]
    return _PairBand(p, t, facts, edges, band(edges, inputs.roles))


def _summary_row(inputs: TableInputs, at: _PairBand, a: int, sensitive: pd.Series) -> dict:
    st, variants, roles = inputs.stats, inputs.coded.variants, inputs.roles
    key, tau, allocation = inputs.key(at.p), inputs.taus[at.t], inputs.coded.allocations[a]
    best = {role: _best(at.edges[:, a], roles, role, variants) for role in BEST_VARIANT_COLUMNS}
    return (
        key
        | {"allocation": allocation, "tau": tau, "dense_top1": at.facts.dense_top1}
        | {"chance": at.facts.chance, "replicates": st.pair_replicates[at.p]}
        | {name: float(at.values[name][a]) for name in at.values}
        | {column: best[role] for role, column in BEST_VARIANT_COLUMNS.items()}
        | {
            f"{name}_{end}": st.band_ci[name][at.t, i, at.p, a]
            for name in BAND_FIELDS
            for i, end in enumerate(("lo", "hi"))
        }
        | {
            "sensitive_points": int(sensitive.get((*key.values(), allocation, tau), 0)),
            "trials": int(inputs.trials[at.p, a]),
            "errors": int(inputs.error_trials[at.p, a]),
            "flags": _summary_flags(inputs, at, a, has_activation=bool(best[ACTIVATION])),
        }
    )


def _summary_flags(inputs: TableInputs, at: _PairBand, a: int, has_activation: bool) -> str:
    """The pair's own flags, then what is missing or censored in this allocation's band."""
    ran = np.flatnonzero(inputs.has_variant[at.p])
    status = inputs.crossings[at.t].status
    censored = [inputs.coded.variants[m] for m in ran if status[at.p, m, a] in (BELOW, BEYOND)]
    errors = int(inputs.error_trials[at.p, a])
    return join_flags(
        *at.facts.flags,
        "no activation-statistic repair in the store" if not has_activation else "",
        "bn_recal missing: band width unknown" if BN_RECAL not in inputs.roles[ran] else "",
        f"boundary outside the grid (edge used): {', '.join(censored)}" if censored else "",
        f"{errors} error rows" if errors else "",
    )


def _best(edges: np.ndarray, roles: np.ndarray, role: str, variants: list[str]) -> str:
    """The variant of a role with the latest boundary ('' if none has one)."""
    found = [(b, variants[m]) for m, b in enumerate(edges) if roles[m] == role and not np.isnan(b)]
    return max(found)[1] if found else ""
