"""The six flagged tables of RegimeTables, built from coded rows and their statistics.

Nothing is dropped silently: error rows, missing points, missing repairs, duplicate trials, single
seeds or replicates, rows without per-image results, non-monotone curves and censored intervals
are named in each table's `flags` column. Every row is one repair variant; only the regime
definition looks at a variant's method (its role). Boundaries, regimes and the band are given
once per τ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from analysis.band import band, effective_boundaries
from analysis.boundaries import BELOW, BEYOND, STATUS_NAMES, first_crossings, recovers
from analysis.coding import CodedRows
from analysis.definitions import (
    ACTIVATION,
    BN_RECAL,
    BN_RECOVERABLE,
    BOTH_AT_CHANCE,
    COLLAPSED,
    INTACT,
    NO_REPAIR,
    NO_WINNER,
    NOT_AVAILABLE,
    PAIR,
    RECONSTRUCTION,
    REPAIR_SENSITIVE,
    SINGLE_REPLICATE,
    UNKNOWN,
    is_deterministic,
    join_flags,
    repair_role,
)
from analysis.statistics import BAND_FIELDS, Differences, Statistics


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


class TableBuilder:
    """Turns the coded grid and its statistics into the six flagged tables."""

    def __init__(self, coded: CodedRows, stats: Statistics, taus: tuple[float, ...]) -> None:
        self.coded, self.stats, self.taus = coded, stats, taus
        self.errors = coded.count(coded.failed)
        # ok rows whose r cannot be computed (no top-1, dense top-1 at or below chance)
        self.unusable = coded.count(~coded.valid & ~coded.failed)
        rows = coded.count(np.ones(len(coded.r), bool))
        self.in_grid = rows.sum(axis=(1, 2)) > 0  # [P, S] sparsities of the pair's grid
        self.has_alloc = rows.sum(axis=(1, 3)) > 0  # [P, A]
        self.has_variant = rows.sum(axis=(2, 3)) > 0  # [P, M]
        self.roles = np.array([repair_role(v) for v in coded.variants], dtype=object)
        self.trials = rows.sum(axis=(1, 3))  # [P, A]
        self.error_trials = self.errors.sum(axis=(1, 3))
        self.crossings = [first_crossings(stats.r, coded.grid, tau) for tau in taus]
        self.pair_info = [self._pair_info(p) for p in range(len(coded.pairs))]
        self.keys = coded.pairs.to_dict(orient="records")

    def _pair_info(self, p: int) -> dict:
        """Dense top-1 (mean over replicates), chance, and what limits the pair's intervals."""
        coded, st = self.coded, self.stats
        own = coded.pair == p
        ran = own & ~coded.failed if (own & ~coded.failed).any() else own
        chance = float(np.median(coded.chance[ran]))
        dense = coded.span[ran] + coded.chance[ran]
        flags = []
        spread = _within_replicate_spread(coded.replicate[ran], dense)
        if spread > 1e-12:
            flags.append(f"dense top-1 varies within a replicate (by up to {spread:.4g})")
        if np.ptp(coded.chance[ran]) > 0:
            flags.append("num_classes varies")
        replicate_dense = st.dense[p, : st.pair_replicates[p]]
        mean_dense = (
            float(np.nanmean(replicate_dense))
            if np.isfinite(replicate_dense).any()
            else (float(np.median(dense)))
        )
        if not mean_dense > chance:
            flags.append("dense top-1 missing or at or below chance: r undefined")
        if st.pair_replicates[p] == 1:
            flags.append(
                "single replicate: intervals cover calibration seeds and eval images, not other "
                "training seeds; no winner is named"
            )
        without = int(sum(coded.correct[i] is None for i in np.flatnonzero(own & coded.valid)))
        if without:
            flags.append(
                f"{without} rows without per-image results: their image noise is not in the "
                "intervals"
            )
        return {
            "dense_top1": mean_dense,
            "dense_by_replicate": replicate_dense,
            "chance": chance,
            "flags": flags,
        }

    def _cells(self) -> Iterator[tuple[int, int, int]]:
        """Yield (p, m, a) for every expected curve: the pair ran that allocation and variant."""
        p_, m_, a_, _ = self.coded.shape
        for p in range(p_):
            for a in range(a_):
                if not self.has_alloc[p, a]:
                    continue
                for m in range(m_):
                    if self.has_variant[p, m]:
                        yield p, m, a

    def _key(self, p: int) -> dict:
        return dict(self.keys[p])

    def curves(self) -> pd.DataFrame:
        st, grid, records = self.stats, self.coded.grid, []
        for p, m, a in self._cells():
            variant = self.coded.variants[m]
            for s in np.flatnonzero(self.in_grid[p]):
                n, errors = st.seeds[p, m, a, s], self.errors[p, m, a, s]
                unusable = self.unusable[p, m, a, s]
                family = st.family_seeds[p, m]
                replicates = st.replicates[p, m, a, s]
                flags = join_flags(
                    "missing: only error rows" if n == 0 and errors and not unusable else "",
                    "missing: no rows" if n == 0 and not errors and not unusable else "",
                    f"{errors} error rows excluded" if errors and (n or unusable) else "",
                    f"{unusable} ok rows without a usable r excluded" if unusable else "",
                    "single seed" if n == 1 and not is_deterministic(variant) else "",
                    f"{n} of {family} seeds" if 1 < n < family else "",
                    f"{replicates} of {st.pair_replicates[p]} replicates"
                    if 0 < replicates < st.pair_replicates[p]
                    else "",
                    f"{st.duplicates[p, m, a, s]} duplicate trials averaged"
                    if st.duplicates[p, m, a, s]
                    else "",
                )
                records.append(
                    self._key(p)
                    | {
                        "allocation": self.coded.allocations[a],
                        "repair_variant": variant,
                        "sparsity": grid[s],
                        "r": st.r[p, m, a, s],
                        "r_lo": st.r_lo[p, m, a, s],
                        "r_hi": st.r_hi[p, m, a, s],
                        "top1": st.top1[p, m, a, s],
                        "top1_lo": st.top1_lo[p, m, a, s],
                        "top1_hi": st.top1_hi[p, m, a, s],
                        "at_chance": bool(st.at_chance[p, m, a, s]) if n else None,
                        "replicates": replicates,
                        "seeds": n,
                        "errors": errors,
                        "flags": flags,
                    }
                )
        return pd.DataFrame.from_records(records, columns=_CURVE_COLUMNS)

    def boundaries(self) -> pd.DataFrame:
        st, grid, records = self.stats, self.coded.grid, []
        for p, m, a in self._cells():
            variant = self.coded.variants[m]
            own = grid[self.in_grid[p]]
            missing = own[(st.seeds[p, m, a] == 0)[self.in_grid[p]]]
            n = st.family_seeds[p, m]
            for t, tau in enumerate(self.taus):
                cr = self.crossings[t]
                status = cr.status[p, m, a]
                ci = st.boundary_ci[t, :, p, m, a]
                flags = [
                    f"missing sparsities: {_fmt(missing)}" if len(missing) else "",
                    "single seed: interval covers replicates and images only"
                    if n == 1 and not is_deterministic(variant)
                    else "",
                    "interval reaches below the grid" if ci[0] == -np.inf else "",
                    "interval reaches beyond the grid" if ci[1] == np.inf else "",
                ]
                if cr.non_monotone[p, m, a]:
                    flags.append(
                        "non-monotone: r is below tau at the first grid point and recovers later"
                        if status == BELOW
                        else "non-monotone: r comes back up to tau; the first downward crossing "
                        "is used"
                    )
                crossed = cr.lower[p, m, a] >= 0
                records.append(
                    self._key(p)
                    | {
                        "allocation": self.coded.allocations[a],
                        "repair_variant": variant,
                        "tau": tau,
                        "boundary": cr.boundary[p, m, a],
                        "status": STATUS_NAMES[int(status)],
                        "bracket_lo": grid[cr.lower[p, m, a]] if crossed else np.nan,
                        "bracket_hi": grid[cr.upper[p, m, a]] if crossed else np.nan,
                        "ci_lo": _clip(ci[0], own),
                        "ci_hi": _clip(ci[1], own),
                        "replicates": st.pair_replicates[p],
                        "seeds": n,
                        "non_monotone": bool(cr.non_monotone[p, m, a]),
                        "flags": join_flags(*flags),
                    }
                )
        return pd.DataFrame.from_records(records, columns=_BOUNDARY_COLUMNS)

    def regimes(self) -> pd.DataFrame:
        coded, st, records = self.coded, self.stats, []
        variants = coded.variants
        for p in range(len(coded.pairs)):
            expected = self.has_variant[p]  # variants this pair ran at all
            absent = [name for m, name in enumerate(variants) if not expected[m]]
            for a in np.flatnonzero(self.has_alloc[p]):
                for tau in self.taus:
                    for s in np.flatnonzero(self.in_grid[p]):
                        mean = st.r[p, :, a, s]
                        present = st.seeds[p, :, a, s] > 0
                        ok = recovers(mean, tau)
                        missing = [
                            name
                            for m, name in enumerate(variants)
                            if expected[m] and not present[m]
                        ]
                        # A variant the pair ran but lacks here could recover; one it never ran
                        # is outside its study (named in the flags), as if absent from the store.
                        optimistic = _regime(ok | (expected & ~present), self.roles)
                        pessimistic = _regime(ok & present, self.roles)
                        regime = optimistic if optimistic == pessimistic else UNKNOWN
                        errors = self.errors[p, :, a, s].sum()
                        records.append(
                            self._key(p)
                            | {"allocation": coded.allocations[a], "tau": tau}
                            | {"sparsity": coded.grid[s], "regime": regime}
                            | {f"r_{variants[m]}": mean[m] for m in range(len(variants))}
                            | {
                                "recovering": ", ".join(
                                    variants[m]
                                    for m in range(len(variants))
                                    if ok[m] and present[m]
                                ),
                                "flags": join_flags(
                                    f"missing repairs: {', '.join(missing)}" if missing else "",
                                    f"not run for this dataset/arch: {', '.join(absent)}"
                                    if absent
                                    else "",
                                    "regime depends on missing repairs"
                                    if regime == UNKNOWN
                                    else "",
                                    f"{errors} error rows excluded" if errors else "",
                                ),
                            }
                        )
        return pd.DataFrame.from_records(records)

    def summary(self, regimes: pd.DataFrame) -> pd.DataFrame:
        coded, st, records = self.coded, self.stats, []
        sensitive = regimes.assign(hit=regimes["regime"] == REPAIR_SENSITIVE)
        sensitive = sensitive.groupby([*PAIR, "allocation", "tau"], sort=False)["hit"].sum()
        for p in range(len(coded.pairs)):
            info, key = self.pair_info[p], self._key(p)
            ran = np.flatnonzero(self.has_variant[p])
            for t, tau in enumerate(self.taus):
                cr = self.crossings[t]
                effective = effective_boundaries(cr, coded.grid[self.in_grid[p]])[p]
                edges = np.full_like(effective, np.nan)
                edges[ran] = effective[ran]
                values = band(edges, self.roles)
                for a in np.flatnonzero(self.has_alloc[p]):
                    censored = [
                        coded.variants[m] for m in ran if cr.status[p, m, a] in (BELOW, BEYOND)
                    ]
                    allocation = coded.allocations[a]
                    errors = int(self.error_trials[p, a])
                    bn_variant = _best(edges[:, a], self.roles, BN_RECAL, coded.variants)
                    act_variant = _best(edges[:, a], self.roles, ACTIVATION, coded.variants)
                    rec_variant = _best(edges[:, a], self.roles, RECONSTRUCTION, coded.variants)
                    intervals = {
                        f"{name}_{end}": st.band_ci[name][t, i, p, a]
                        for name in BAND_FIELDS
                        for i, end in enumerate(("lo", "hi"))
                    }
                    records.append(
                        key
                        | {"allocation": allocation, "tau": tau, "dense_top1": info["dense_top1"]}
                        | {"chance": info["chance"], "replicates": st.pair_replicates[p]}
                        | {name: float(values[name][a]) for name in values}
                        | {"bn_recal_variant": bn_variant, "activation_variant": act_variant}
                        | {"reconstruction_variant": rec_variant}
                        | intervals
                        | {
                            "sensitive_points": int(
                                sensitive.get((*key.values(), allocation, tau), 0)
                            ),
                            "trials": int(self.trials[p, a]),
                            "errors": errors,
                            "flags": join_flags(
                                *info["flags"],
                                "no activation-statistic repair in the store"
                                if not act_variant
                                else "",
                                "bn_recal missing: band width unknown"
                                if BN_RECAL not in self.roles[ran]
                                else "",
                                f"boundary outside the grid (edge used): {', '.join(censored)}"
                                if censored
                                else "",
                                f"{errors} error rows" if errors else "",
                            ),
                        }
                    )
        return pd.DataFrame.from_records(records, columns=_SUMMARY_COLUMNS)

    def comparison(self) -> pd.DataFrame:
        """LAMP − ERK per (pair, variant, sparsity)."""
        coded, st, records = self.coded, self.stats, []
        if "erk" not in coded.allocations or "lamp" not in coded.allocations:
            return pd.DataFrame(columns=_COMPARISON_COLUMNS)
        lamp, erk = coded.allocations.index("lamp"), coded.allocations.index("erk")
        for p in range(len(coded.pairs)):
            if not (self.has_alloc[p, lamp] or self.has_alloc[p, erk]):
                continue
            for m in np.flatnonzero(self.has_variant[p]):
                variant = coded.variants[m]
                for s in np.flatnonzero(self.in_grid[p]):
                    n_lamp, n_erk = st.seeds[p, m, lamp, s], st.seeds[p, m, erk, s]
                    records.append(
                        self._key(p)
                        | {"repair_variant": variant, "sparsity": coded.grid[s]}
                        | {"r_erk": st.r[p, m, erk, s], "r_lamp": st.r[p, m, lamp, s]}
                        | _difference(st.lamp_erk, (p, m, s), "erk", "lamp")
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
        return pd.DataFrame.from_records(records, columns=_COMPARISON_COLUMNS)

    def repairs(self) -> pd.DataFrame:
        """variant_b − variant_a per (pair, allocation, sparsity), a before b in display order."""
        coded, st, records = self.coded, self.stats, []
        variants = coded.variants
        for p, a in zip(*np.nonzero(self.has_alloc), strict=True):
            ran = np.flatnonzero(self.has_variant[p])
            for i, m1 in enumerate(ran):
                for m2 in ran[i + 1 :]:
                    for s in np.flatnonzero(self.in_grid[p]):
                        n1, n2 = st.seeds[p, m1, a, s], st.seeds[p, m2, a, s]
                        records.append(
                            self._key(p)
                            | {"allocation": coded.allocations[a], "sparsity": coded.grid[s]}
                            | {"variant_a": variants[m1], "variant_b": variants[m2]}
                            | {"r_a": st.r[p, m1, a, s], "r_b": st.r[p, m2, a, s]}
                            | _difference(st.repairs, (p, a, m1, m2, s), variants[m1], variants[m2])
                            | {
                                "flags": join_flags(
                                    f"missing: {variants[m1]}" if n1 == 0 else "",
                                    f"missing: {variants[m2]}" if n2 == 0 else "",
                                )
                            }
                        )
        return pd.DataFrame.from_records(records, columns=_REPAIR_COLUMNS)


def _within_replicate_spread(replicate: np.ndarray, dense: np.ndarray) -> float:
    """The largest range of dense top-1 among the rows of one replicate (0 if consistent)."""
    frame = pd.DataFrame({"replicate": replicate, "dense": dense}).dropna()
    if frame.empty:
        return 0.0
    ranges = frame.groupby("replicate")["dense"].agg(lambda d: d.max() - d.min())
    return float(ranges.max())


def _clip(value: float, own: np.ndarray) -> float:
    return float(np.clip(value, own.min(), own.max())) if len(own) else np.nan


def _difference(diffs: Differences, index: tuple, name_a: str, name_b: str) -> dict:
    """The columns of one comparison: b − a, its interval, agreement and the winner."""
    diff, lo, hi = diffs.diff[index], diffs.lo[index], diffs.hi[index]
    return {
        "diff": diff,
        "diff_lo": lo,
        "diff_hi": hi,
        "winner": _winner(
            diff,
            lo,
            hi,
            bool(diffs.at_chance[index]),
            int(diffs.replicates[index]),
            name_a,
            name_b,
        ),
        "replicate_agreement": diffs.agreement[index],
        "replicates": int(diffs.replicates[index]),
    }


_DIFFERENCE = ("diff", "diff_lo", "diff_hi", "winner", "replicate_agreement", "replicates")
_CURVE_COLUMNS = [
    *PAIR,
    *("allocation", "repair_variant", "sparsity", "r", "r_lo", "r_hi", "top1", "top1_lo"),
    *("top1_hi", "at_chance", "replicates", "seeds", "errors", "flags"),
]
_BOUNDARY_COLUMNS = [
    *PAIR,
    *("allocation", "repair_variant", "tau", "boundary", "status", "bracket_lo", "bracket_hi"),
    *("ci_lo", "ci_hi", "replicates", "seeds", "non_monotone", "flags"),
]
_SUMMARY_COLUMNS = [
    *PAIR,
    *("allocation", "tau", "dense_top1", "chance", "replicates", "boundary_none"),
    *("boundary_bn_recal", "bn_recal_variant", "boundary_activation", "activation_variant"),
    *("band_lo", "band_lo_lo", "band_lo_hi", "band_hi", "band_hi_lo", "band_hi_hi"),
    *("band_width", "band_width_lo", "band_width_hi"),
    *("boundary_reconstruction", "reconstruction_variant", "band_beyond_reconstruction"),
    *("band_beyond_reconstruction_lo", "band_beyond_reconstruction_hi"),
    *("sensitive_points", "trials", "errors", "flags"),
]
_COMPARISON_COLUMNS = [
    *PAIR,
    *("repair_variant", "sparsity", "r_erk", "r_lamp", *_DIFFERENCE, "seeds", "flags"),
]
_REPAIR_COLUMNS = [
    *PAIR,
    *("allocation", "sparsity", "variant_a", "variant_b", "r_a", "r_b", *_DIFFERENCE, "flags"),
]


def _regime(ok: np.ndarray, roles: np.ndarray) -> str:
    """The regime of one grid point from which variants recover there (ok) and their roles."""
    if ok[roles == NO_REPAIR].any():
        return INTACT
    if ok[roles == BN_RECAL].any():
        return BN_RECOVERABLE
    if ok[(roles == ACTIVATION) | (roles == RECONSTRUCTION)].any():
        return REPAIR_SENSITIVE
    return COLLAPSED


def _best(edges: np.ndarray, roles: np.ndarray, role: str, variants: list[str]) -> str:
    """The variant of a role with the latest boundary ('' if none has one)."""
    found = [(b, variants[m]) for m, b in enumerate(edges) if roles[m] == role and not np.isnan(b)]
    return max(found)[1] if found else ""


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
