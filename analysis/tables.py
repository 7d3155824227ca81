"""The five flagged tables of RegimeTables, built from coded rows and their statistics.

Nothing is dropped silently: error rows, missing points, missing repairs, duplicate trials, single
seeds, non-monotone curves and censored intervals are named in each table's `flags` column.
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
    BN_RECAL,
    BN_RECOVERABLE,
    COLLAPSED,
    DETERMINISTIC_REPAIRS,
    INTACT,
    NO_REPAIR,
    PAIR,
    REPAIR_SENSITIVE,
    UNKNOWN,
    join_flags,
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
        self.has_repair = rows.sum(axis=(2, 3)) > 0  # [P, M]
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
        """Yield (p, m, a) for every expected curve: the pair ran that allocation and repair."""
        p_, m_, a_, _ = self.coded.shape
        for p in range(p_):
            for a in range(a_):
                if not self.has_alloc[p, a]:
                    continue
                for m in range(m_):
                    if self.has_repair[p, m]:
                        yield p, m, a

    def _key(self, p: int) -> dict:
        return dict(self.keys[p])

    def curves(self) -> pd.DataFrame:
        st, grid, records = self.stats, self.coded.grid, []
        for p, m, a in self._cells():
            repair = self.coded.repairs[m]
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
                    "single seed" if n == 1 and repair not in DETERMINISTIC_REPAIRS else "",
                    f"{n} of {family} seeds" if 1 < n < family else "",
                    f"{st.duplicates[p, m, a, s]} duplicate trials averaged"
                    if st.duplicates[p, m, a, s]
                    else "",
                )
                records.append(
                    self._key(p)
                    | {
                        "allocation": self.coded.allocations[a],
                        "repair": repair,
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
            repair = self.coded.repairs[m]
            status = cr.status[p, m, a]
            own = grid[self.in_grid[p]]
            missing = own[(st.seeds[p, m, a] == 0)[self.in_grid[p]]]
            ci = st.boundary_ci[:, p, m, a]
            n = st.family_seeds[p, m]
            flags = [
                f"missing sparsities: {_fmt(missing)}" if len(missing) else "",
                "single seed: interval degenerate"
                if n == 1 and repair not in DETERMINISTIC_REPAIRS
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
                    "repair": repair,
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
        repairs = coded.repairs
        activation = [i for i, name in enumerate(repairs) if name not in (NO_REPAIR, BN_RECAL)]
        for p in range(len(coded.pairs)):
            expected = self.has_repair[p]  # repairs this pair ran at all
            absent = [name for m, name in enumerate(repairs) if not expected[m]]
            for a in np.flatnonzero(self.has_alloc[p]):
                for s in np.flatnonzero(self.in_grid[p]):
                    mean = st.mean[p, :, a, s]
                    present = st.seeds[p, :, a, s] > 0
                    ok = recovers(mean, self.tau)
                    missing = [
                        name for m, name in enumerate(repairs) if expected[m] and not present[m]
                    ]
                    # A repair the pair ran but lacks here could recover; one it never ran is
                    # outside its study (named in the flags), as if absent from the store.
                    optimistic = _regime(ok | (expected & ~present), activation, repairs)
                    pessimistic = _regime(ok & present, activation, repairs)
                    regime = optimistic if optimistic == pessimistic else UNKNOWN
                    records.append(
                        self._key(p)
                        | {"allocation": coded.allocations[a], "sparsity": coded.grid[s]}
                        | {"regime": regime}
                        | {f"r_{repairs[m]}": mean[m] for m in range(len(repairs))}
                        | {
                            "recovering": ", ".join(
                                repairs[m] for m in range(len(repairs)) if ok[m] and present[m]
                            ),
                            "flags": join_flags(
                                f"missing repairs: {', '.join(missing)}" if missing else "",
                                f"not run for this dataset/arch: {', '.join(absent)}"
                                if absent
                                else "",
                                "regime depends on missing repairs" if regime == UNKNOWN else "",
                                f"{self.errors[p, :, a, s].sum()} error rows excluded"
                                if self.errors[p, :, a, s].sum()
                                else "",
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
            for a in np.flatnonzero(self.has_alloc[p]):
                edges = {
                    name: effective[m, a]
                    for m, name in enumerate(coded.repairs)
                    if self.has_repair[p, m]
                }
                censored = [
                    name
                    for m, name in enumerate(coded.repairs)
                    if self.has_repair[p, m] and cr.status[p, m, a] in (BELOW, BEYOND)
                ]
                band = _band(edges)
                allocation = coded.allocations[a]
                errors = int(self.error_trials[p, a])
                records.append(
                    key
                    | {"allocation": allocation, "dense_top1": info["dense_top1"]}
                    | {"chance": info["chance"]}
                    | {
                        "boundary_none": edges.get(NO_REPAIR, np.nan),
                        "boundary_bn_recal": edges.get(BN_RECAL, np.nan),
                    }
                    | band
                    | {
                        "sensitive_points": int(sensitive.get((*key.values(), allocation), 0)),
                        "trials": int(self.trials[p, a]),
                        "errors": errors,
                        "flags": join_flags(
                            *info["flags"],
                            "no activation-statistic repair in the store"
                            if not band["activation_repair"]
                            else "",
                            "bn_recal missing: band width unknown" if BN_RECAL not in edges else "",
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
            for m in np.flatnonzero(self.has_repair[p]):
                repair = coded.repairs[m]
                for s in np.flatnonzero(self.in_grid[p]):
                    n_lamp, n_erk = st.seeds[p, m, lamp, s], st.seeds[p, m, erk, s]
                    diff = st.diff[p, m, s]
                    lo, hi = st.diff_ci[:, p, m, s]
                    records.append(
                        self._key(p)
                        | {
                            "repair": repair,
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
                                if min(n_lamp, n_erk) == 1 and repair not in DETERMINISTIC_REPAIRS
                                else "",
                            ),
                        }
                    )
        return pd.DataFrame.from_records(records, columns=_COMPARISON_COLUMNS)


_CURVE_COLUMNS = [
    *PAIR,
    *("allocation", "repair", "sparsity", "r", "r_lo", "r_hi", "top1", "recovers"),
    *("seeds", "errors", "flags"),
]
_BOUNDARY_COLUMNS = [
    *PAIR,
    *("allocation", "repair", "boundary", "status", "bracket_lo", "bracket_hi"),
    *("ci_lo", "ci_hi", "seeds", "non_monotone", "flags"),
]
_SUMMARY_COLUMNS = [
    *PAIR,
    *("allocation", "dense_top1", "chance", "boundary_none", "boundary_bn_recal"),
    *("boundary_activation", "activation_repair", "band_lo", "band_hi", "band_width"),
    *("sensitive_points", "trials", "errors", "flags"),
]
_COMPARISON_COLUMNS = [
    *PAIR,
    *("repair", "sparsity", "r_erk", "r_lamp", "diff", "diff_lo", "diff_hi", "winner"),
    *("seeds", "flags"),
]


def _regime(ok: np.ndarray, activation: list[int], repairs: list[str]) -> str:
    def recovered(name: str) -> bool:
        return name in repairs and bool(ok[repairs.index(name)])

    if recovered(NO_REPAIR):
        return INTACT
    if recovered(BN_RECAL):
        return BN_RECOVERABLE
    if any(ok[m] for m in activation):
        return REPAIR_SENSITIVE
    return COLLAPSED


def _effective_boundaries(crossings: Crossings, pair: int, own_grid: np.ndarray) -> np.ndarray:
    """[repair, allocation] boundaries of a pair, 'below the grid' taken as its first grid point
    and 'beyond' as its last: the band width is then what the grid can show."""
    out = crossings.boundary[pair].copy()
    status = crossings.status[pair]
    if len(own_grid):
        out[status == BELOW] = own_grid[0]
        out[status == BEYOND] = own_grid[-1]
    return out


def _band(edges: dict[str, float]) -> dict:
    """The repair-sensitive band: from where none and bn_recal stop recovering (the later of the
    two) to where the best activation-statistic repair stops."""
    acts = [(b, name) for name, b in edges.items() if name not in (NO_REPAIR, BN_RECAL)]
    acts = [(b, name) for b, name in acts if not np.isnan(b)]
    act_edge, act_name = max(acts) if acts else (np.nan, "")
    bn_edge = edges.get(BN_RECAL, np.nan)
    low = np.nan if np.isnan(bn_edge) else float(np.fmax(edges.get(NO_REPAIR, np.nan), bn_edge))
    width = max(0.0, act_edge - low) if not np.isnan(act_edge + low) else np.nan
    return {
        "boundary_activation": act_edge,
        "activation_repair": act_name,
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
