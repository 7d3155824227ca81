"""The five flagged tables of RegimeTables, built from coded rows and their statistics.

Nothing is dropped silently: error rows, missing points, missing repairs, duplicate trials, single
seeds, non-monotone curves and censored intervals are named in each table's `flags` column. Every
row is one repair variant; only the regime definition looks at a variant's method (its role).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from analysis.boundaries import (
    BELOW,
    BEYOND,
    STATUS_NAMES,
    Crossings,
    first_crossings,
    recovers,
)
from analysis.coding import CodedRows
from analysis.definitions import (
    ACTIVATION,
    BN_RECAL,
    BN_RECOVERABLE,
    COLLAPSED,
    INTACT,
    NO_REPAIR,
    PAIR,
    REPAIR_SENSITIVE,
    UNKNOWN,
    is_deterministic,
    join_flags,
    repair_role,
)
from analysis.statistics import SeedStatistics


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


class TableBuilder:
    """Turns the coded grid and its statistics into the five flagged tables."""

    def __init__(
        self, frame: pd.DataFrame, coded: CodedRows, stats: SeedStatistics, tau: float
    ) -> None:
        self.coded, self.stats, self.tau = coded, stats, tau
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
        self.crossings = first_crossings(stats.mean, coded.grid, tau)
        self.pair_info = self._pair_info(frame)
        self.keys = coded.pairs.to_dict(orient="records")

    def _pair_info(self, frame: pd.DataFrame) -> list[dict]:
        """Dense top-1 and chance per pair, flagging pairs that mix checkpoints or class counts.

        Taken from rows that ran; a pair whose rows all failed still gets its numbers."""
        values = pd.DataFrame(
            {
                "pair": self.coded.pair,
                "dense": frame["dense_top1"].to_numpy(float),
                "classes": frame["num_classes"].to_numpy(float),
            }
        )
        ran = values[~self.coded.failed].groupby("pair").agg(["min", "max", "median"])
        stats = ran.combine_first(values.groupby("pair").agg(["min", "max", "median"]))
        info = []
        for p in range(len(self.coded.pairs)):
            d, c = stats.loc[p, "dense"], stats.loc[p, "classes"]
            flags = []
            if d["max"] - d["min"] > 1e-12:
                flags.append(f"dense top-1 varies ({d['min']:.4g}..{d['max']:.4g})")
            if c["max"] != c["min"]:
                flags.append("num_classes varies")
            chance = 1.0 / c["median"]
            if not d["median"] > chance:
                flags.append("dense top-1 missing or at or below chance: r undefined")
            info.append({"dense_top1": d["median"], "chance": chance, "flags": flags})
        return info

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
            info = self.pair_info[p]
            for s in np.flatnonzero(self.in_grid[p]):
                n, errors = st.seeds[p, m, a, s], self.errors[p, m, a, s]
                unusable = self.unusable[p, m, a, s]
                family = st.family_seeds[p, m]
                mean = st.mean[p, m, a, s]
                flags = join_flags(
                    "missing: only error rows" if n == 0 and errors and not unusable else "",
                    "missing: no rows" if n == 0 and not errors and not unusable else "",
                    f"{errors} error rows excluded" if errors and (n or unusable) else "",
                    f"{unusable} ok rows without a usable r excluded" if unusable else "",
                    "single seed" if n == 1 and not is_deterministic(variant) else "",
                    f"{n} of {family} seeds" if 1 < n < family else "",
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
                        "r": mean,
                        "r_lo": st.lo[p, m, a, s],
                        "r_hi": st.hi[p, m, a, s],
                        "top1": info["chance"] + mean * (info["dense_top1"] - info["chance"]),
                        "recovers": bool(recovers(np.array(mean), self.tau)) if n else None,
                        "seeds": n,
                        "errors": errors,
                        "flags": flags,
                    }
                )
        return pd.DataFrame.from_records(records, columns=_CURVE_COLUMNS)

    def boundaries(self) -> pd.DataFrame:
        cr, st, grid, records = self.crossings, self.stats, self.coded.grid, []
        for p, m, a in self._cells():
            variant = self.coded.variants[m]
            status = cr.status[p, m, a]
            own = grid[self.in_grid[p]]
            missing = own[(st.seeds[p, m, a] == 0)[self.in_grid[p]]]
            ci = st.boundary_ci[:, p, m, a]
            n = st.family_seeds[p, m]
            flags = [
                f"missing sparsities: {_fmt(missing)}" if len(missing) else "",
                "single seed: interval degenerate"
                if n == 1 and not is_deterministic(variant)
                else "",
                "interval reaches below the grid" if ci[0] == -np.inf else "",
                "interval reaches beyond the grid" if ci[1] == np.inf else "",
            ]
            if cr.non_monotone[p, m, a]:
                flags.append(
                    "non-monotone: r is below tau at the first grid point and recovers later"
                    if status == BELOW
                    else "non-monotone: r comes back up to tau; the first downward crossing is used"
                )
            crossed = cr.lower[p, m, a] >= 0
            records.append(
                self._key(p)
                | {
                    "allocation": self.coded.allocations[a],
                    "repair_variant": variant,
                    "boundary": cr.boundary[p, m, a],
                    "status": STATUS_NAMES[int(status)],
                    "bracket_lo": grid[cr.lower[p, m, a]] if crossed else np.nan,
                    "bracket_hi": grid[cr.upper[p, m, a]] if crossed else np.nan,
                    "ci_lo": np.clip(ci[0], own.min(), own.max()) if len(own) else np.nan,
                    "ci_hi": np.clip(ci[1], own.min(), own.max()) if len(own) else np.nan,
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
                for s in np.flatnonzero(self.in_grid[p]):
                    mean = st.mean[p, :, a, s]
                    present = st.seeds[p, :, a, s] > 0
                    ok = recovers(mean, self.tau)
                    missing = [
                        name for m, name in enumerate(variants) if expected[m] and not present[m]
                    ]
                    # A variant the pair ran but lacks here could recover; one it never ran is
                    # outside its study (named in the flags), as if absent from the store.
                    optimistic = _regime(ok | (expected & ~present), self.roles)
                    pessimistic = _regime(ok & present, self.roles)
                    regime = optimistic if optimistic == pessimistic else UNKNOWN
                    errors = self.errors[p, :, a, s].sum()
                    records.append(
                        self._key(p)
                        | {"allocation": coded.allocations[a], "sparsity": coded.grid[s]}
                        | {"regime": regime}
                        | {f"r_{variants[m]}": mean[m] for m in range(len(variants))}
                        | {
                            "recovering": ", ".join(
                                variants[m] for m in range(len(variants)) if ok[m] and present[m]
                            ),
                            "flags": join_flags(
                                f"missing repairs: {', '.join(missing)}" if missing else "",
                                f"not run for this dataset/arch: {', '.join(absent)}"
                                if absent
                                else "",
                                "regime depends on missing repairs" if regime == UNKNOWN else "",
                                f"{errors} error rows excluded" if errors else "",
                            ),
                        }
                    )
        return pd.DataFrame.from_records(records)

    def summary(self, regimes: pd.DataFrame) -> pd.DataFrame:
        coded, cr, records = self.coded, self.crossings, []
        sensitive = regimes.assign(hit=regimes["regime"] == REPAIR_SENSITIVE)
        sensitive = sensitive.groupby([*PAIR, "allocation"], sort=False)["hit"].sum()
        for p in range(len(coded.pairs)):
            effective = _effective_boundaries(cr, p, coded.grid[self.in_grid[p]])
            info, key = self.pair_info[p], self._key(p)
            ran = np.flatnonzero(self.has_variant[p])
            for a in np.flatnonzero(self.has_alloc[p]):
                edges = {coded.variants[m]: effective[m, a] for m in ran}
                censored = [coded.variants[m] for m in ran if cr.status[p, m, a] in (BELOW, BEYOND)]
                band = _band(edges)
                allocation = coded.allocations[a]
                errors = int(self.error_trials[p, a])
                records.append(
                    key
                    | {"allocation": allocation, "dense_top1": info["dense_top1"]}
                    | {"chance": info["chance"]}
                    | band
                    | {
                        "sensitive_points": int(sensitive.get((*key.values(), allocation), 0)),
                        "trials": int(self.trials[p, a]),
                        "errors": errors,
                        "flags": join_flags(
                            *info["flags"],
                            "no activation-statistic repair in the store"
                            if not band["activation_variant"]
                            else "",
                            "bn_recal missing: band width unknown"
                            if BN_RECAL not in map(repair_role, edges)
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
                    diff = st.diff[p, m, s]
                    lo, hi = st.diff_ci[:, p, m, s]
                    records.append(
                        self._key(p)
                        | {
                            "repair_variant": variant,
                            "sparsity": coded.grid[s],
                            "r_erk": st.mean[p, m, erk, s],
                            "r_lamp": st.mean[p, m, lamp, s],
                            "diff": diff,
                            "diff_lo": lo,
                            "diff_hi": hi,
                            "winner": _winner(diff, lo, hi),
                            "seeds": min(n_lamp, n_erk),
                            "flags": join_flags(
                                "missing: lamp" if n_lamp == 0 else "",
                                "missing: erk" if n_erk == 0 else "",
                                "single seed: interval degenerate"
                                if min(n_lamp, n_erk) == 1 and not is_deterministic(variant)
                                else "",
                            ),
                        }
                    )
        return pd.DataFrame.from_records(records, columns=_COMPARISON_COLUMNS)


_CURVE_COLUMNS = [
    *PAIR,
    *("allocation", "repair_variant", "sparsity", "r", "r_lo", "r_hi", "top1", "recovers"),
    *("seeds", "errors", "flags"),
]
_BOUNDARY_COLUMNS = [
    *PAIR,
    *("allocation", "repair_variant", "boundary", "status", "bracket_lo", "bracket_hi"),
    *("ci_lo", "ci_hi", "seeds", "non_monotone", "flags"),
]
_SUMMARY_COLUMNS = [
    *PAIR,
    *("allocation", "dense_top1", "chance", "boundary_none", "boundary_bn_recal"),
    *("bn_recal_variant", "boundary_activation", "activation_variant"),
    *("band_lo", "band_hi", "band_width", "sensitive_points", "trials", "errors", "flags"),
]
_COMPARISON_COLUMNS = [
    *PAIR,
    *("repair_variant", "sparsity", "r_erk", "r_lamp", "diff", "diff_lo", "diff_hi", "winner"),
    *("seeds", "flags"),
]


def _regime(ok: np.ndarray, roles: np.ndarray) -> str:
    """The regime of one grid point from which variants recover there (ok) and their roles."""
    if ok[roles == NO_REPAIR].any():
        return INTACT
    if ok[roles == BN_RECAL].any():
        return BN_RECOVERABLE
    if ok[roles == ACTIVATION].any():
        return REPAIR_SENSITIVE
    return COLLAPSED


def _effective_boundaries(crossings: Crossings, pair: int, own_grid: np.ndarray) -> np.ndarray:
    """[variant, allocation] boundaries of a pair, 'below the grid' taken as its first grid point
    and 'beyond' as its last: the band width is then what the grid can show."""
    out = crossings.boundary[pair].copy()
    status = crossings.status[pair]
    if len(own_grid):
        out[status == BELOW] = own_grid[0]
        out[status == BEYOND] = own_grid[-1]
    return out


def _best(edges: dict[str, float], role: str) -> tuple[float, str]:
    """The latest boundary among the variants of one role, and that variant ('' if none)."""
    found = [(b, v) for v, b in edges.items() if repair_role(v) == role and not np.isnan(b)]
    return max(found) if found else (np.nan, "")


def _band(edges: dict[str, float]) -> dict:
    """The repair-sensitive band: from where none and BN recalibration stop recovering (the later
    of the two, each at its best variant) to where the best activation-statistic variant stops."""
    none_edge, _ = _best(edges, NO_REPAIR)
    bn_edge, bn_variant = _best(edges, BN_RECAL)
    act_edge, act_variant = _best(edges, ACTIVATION)
    low = np.nan if np.isnan(bn_edge) else float(np.fmax(none_edge, bn_edge))
    width = max(0.0, act_edge - low) if not np.isnan(act_edge + low) else np.nan
    return {
        "boundary_none": none_edge,
        "boundary_bn_recal": bn_edge,
        "bn_recal_variant": bn_variant,
        "boundary_activation": act_edge,
        "activation_variant": act_variant,
        "band_lo": low if width > 0 else np.nan,
        "band_hi": act_edge if width > 0 else np.nan,
        "band_width": width,
    }


def _winner(diff: float, lo: float, hi: float) -> str:
    if np.isnan(diff):
        return "n/a"
    if lo > 0:
        return "lamp"
    if hi < 0:
        return "erk"
    return "tie"
