"""Point means and the intervals of everything the tables report (method: intervals.py).

Per (dataset, arch) pair the valid rows become cells [variant, allocation, replicate, seed,
sparsity] (duplicate trials of a cell averaged). A point's mean is the mean over its (replicate,
seed) cells; a deterministic variant (`none`, no calibration draw) stands for every seed of its
replicate. Rows are then summed per (point, cluster): the clusters are the replicates (a pair
with one replicate: its calibration seeds). From those sums come, for every point, the mean on
all data, the mean with each cluster left out (the jackknife) and the mean on each resample of
the eval images, shared by all clusters or drawn per cluster (bootstrap.py), with each row's
own replicate's dense top-1 recomputed on the same resampled images (`dense_correct`), so r's
denominator moves with its numerator. Curves, the band and every paired difference are computed
on all these versions at once, and intervals.t_interval turns each into an interval: one method
for all of them, and a difference is paired (same clusters left out, same images). A boundary's
interval inverts the same intervals of the curve (intervals.crossing_interval): every sparsity
where the interpolated curve's interval contains τ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.band import band, effective_boundaries
from analysis.bootstrap import accumulate, cluster_orders, image_weights, resampled, unpack
from analysis.boundaries import first_crossings
from analysis.coding import CodedRows
from analysis.definitions import is_deterministic, repair_role
from analysis.intervals import Stacked, crossing_interval, t_interval

BAND_FIELDS = ("band_lo", "band_hi", "band_width", "band_beyond_reconstruction")
NON_NEGATIVE = ("band_width", "band_beyond_reconstruction")  # widths: never below 0


@dataclass
class Differences:
    """Paired differences (arm b − arm a) in mean r, over any cell shape."""

    diff: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    agreement: np.ndarray  # fraction of replicates whose own difference has diff's sign
    replicates: np.ndarray  # replicates with both arms
    at_chance: np.ndarray  # both arms within noise of chance (definitions.py)

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> Differences:
        nan = np.full(shape, np.nan)
        return cls(nan, nan.copy(), nan.copy(), nan.copy(), np.zeros(shape, int), nan < 0)

    def fill(self, index: tuple, other: Differences) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name)[index] = getattr(other, name)


@dataclass
class Statistics:
    """Everything per [pair, variant, allocation, sparsity] (P, M, A, S) and per τ (T)."""

    r: np.ndarray  # mean r
    r_lo: np.ndarray
    r_hi: np.ndarray
    top1: np.ndarray  # mean top-1
    top1_lo: np.ndarray
    top1_hi: np.ndarray
    at_chance: np.ndarray  # the top-1 interval reaches chance (definitions.py)
    seeds: np.ndarray  # most calibration seeds any replicate has at the point
    replicates: np.ndarray  # replicates with a value at the point
    duplicates: np.ndarray  # extra trials at a (point, replicate, seed), averaged
    family_seeds: np.ndarray  # [P, M] most seeds the variant has anywhere in the pair
    pair_replicates: np.ndarray  # [P] replicates of the pair
    dense: np.ndarray  # [P, R_max] dense top-1 of each replicate (NaN where none)
    boundary_ci: np.ndarray  # [T, 2, P, M, A], ±inf = censored by the grid
    band_ci: dict[str, np.ndarray]  # BAND_FIELDS -> [T, 2, P, A]
    lamp_erk: Differences  # [P, M, S]: LAMP − ERK
    repairs: Differences  # [P, A, M, M, S]: variant m2 − variant m1


def _differences(
    stat: Stacked,
    rep_a: np.ndarray,
    rep_b: np.ndarray,
    chance_a: np.ndarray,
    chance_b: np.ndarray,
    confidence: float,
) -> Differences:
    """b − a from the stacked difference: point, paired interval, replicate sign agreement
    (rep_*: [R, ...] per-replicate means over seeds), both at chance."""
    interval = t_interval(stat, confidence)
    diff = stat.point
    per_replicate = rep_b - rep_a
    both = ~np.isnan(per_replicate)
    agree = both & (np.sign(per_replicate) == np.sign(diff)[None])
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = agree.sum(axis=0) / both.sum(axis=0)
    return Differences(
        diff, interval.lo, interval.hi, agreement, both.sum(axis=0), chance_a & chance_b
    )


class _Pair:
    """The cells of one (dataset, arch) pair, summed per (point, cluster), and every version of
    the point means the intervals need (intervals.Stacked, [1 + K + 2B, M, A, S])."""

    def __init__(self, coded: CodedRows, p: int, resamples: int, rng_seed: int) -> None:
        _, m_, a_, s_ = coded.shape
        rows = np.flatnonzero(coded.valid & (coded.pair == coded.pair.dtype.type(p)))
        r_, n_ = len(coded.replicates[p]), max(int(coded.seeds[p]), 1)
        self.shape = (m_, a_, r_, n_, s_)
        # Clusters: the replicates; with one replicate, its seed slots.
        self.by_replicate = r_ >= 2
        self.clusters = r_ if self.by_replicate else n_
        deterministic = np.array([is_deterministic(v) for v in coded.variants], bool)
        shares = self._count_cells(coded, rows, deterministic)
        entry, cluster, weight = self._entries(coded, rows, deterministic, shares)
        point = (coded.variant[rows] * a_ + coded.alloc[rows]) * s_ + coded.spars[rows]
        point = point.astype(np.int64)
        group = point[entry] * self.clusters + cluster  # (point, cluster)
        r, top1 = coded.r[rows], coded.top1[rows]
        jack_r, jack_top1 = self._means(entry, group, weight, r, top1)
        replicate, chance, span = coded.replicate[rows], coded.chance[rows], coded.span[rows]
        self.rep_r = self._replicate_means(replicate, point, entry, weight, r)
        shared_r, own_r, shared_top1, own_top1 = self._images(
            coded, p, rows, entry, group, weight, top1, chance, span, resamples, rng_seed
        )
        self.r_stack = self._stacked(self.r, jack_r, shared_r, own_r, resamples)
        self.top1_stack = self._stacked(self.top1, jack_top1, shared_top1, own_top1, resamples)
        self.chance = float(np.median(chance)) if rows.size else np.nan
        self.dense = np.full(r_, np.nan)
        for k in range(r_):
            own = replicate == k
            self.dense[k] = np.median(span[own] + chance[own]) if own.any() else np.nan

    def _count_cells(
        self, coded: CodedRows, rows: np.ndarray, deterministic: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Count the rows of each cell [M, A, R, N, S]: duplicates, seeds, replicates and which
        cells are present (a deterministic variant's one row fills every seed of its replicate).
        Returns, per row, the rows in its cell and the seeds present at its (point, replicate)."""
        m_, a_, r_, n_, s_ = self.shape
        variant, alloc, spars = coded.variant[rows], coded.alloc[rows], coded.spars[rows]
        replicate, seed = coded.replicate[rows], coded.seed[rows]
        cell = (variant * a_ + alloc) * r_ + replicate
        cell = ((cell * n_ + seed) * s_ + spars).astype(np.int64)
        counts = np.bincount(cell, minlength=int(np.prod(self.shape)))
        raw_present = (counts > 0).reshape(self.shape)
        self.duplicates = (counts - (counts > 0)).reshape(self.shape).sum(axis=(2, 3))
        self.seeds = raw_present.sum(axis=3).max(axis=2)  # [M, A, S]
        self.replicates = raw_present.any(axis=3).sum(axis=2)
        self.family_seeds = raw_present.sum(axis=3).max(axis=(1, 2, 3))  # [M]
        present = raw_present.copy()
        present[deterministic] = raw_present[deterministic].any(axis=3, keepdims=True)
        self.present = present
        seeds_present = raw_present.sum(axis=3)[variant, alloc, replicate, spars].astype(float)
        return counts[cell].astype(float), seeds_present

    def _entries(
        self,
        coded: CodedRows,
        rows: np.ndarray,
        deterministic: np.ndarray,
        shares: tuple[np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entries (row, cluster, weight): each present seed slot of a point has weight 1 in all,
        split over the rows that fill it (duplicates; a deterministic variant's seeds)."""
        n_ = self.shape[3]
        dup, seeds_present = shares
        spread = deterministic[coded.variant[rows]]
        if self.by_replicate:
            entry = np.arange(len(rows))
            cluster = coded.replicate[rows]
            weight = np.where(spread, n_ / (seeds_present * dup), 1.0 / dup)
        else:
            plain, fills = np.flatnonzero(~spread), np.flatnonzero(spread)
            entry = np.r_[plain, np.repeat(fills, n_)]
            cluster = np.r_[coded.seed[rows][plain], np.tile(np.arange(n_), len(fills))]
            weight = np.r_[1.0 / dup[plain], np.repeat(1.0 / (seeds_present * dup)[fills], n_)]
        return entry.astype(np.int64), cluster.astype(np.int64), weight

    def _means(
        self,
        entry: np.ndarray,
        group: np.ndarray,
        weight: np.ndarray,
        r: np.ndarray,
        top1: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Point means of r and top-1 on all clusters (self.r, self.top1, with the slots per
        (point, cluster) in self.count) and with each cluster left out: ([K, M, A, S] × 2)."""
        m_, a_, _, _, s_ = self.shape
        k_, points = self.clusters, m_ * a_ * s_
        present = self.present
        slots = present.sum(axis=3) if self.by_replicate else present[:, :, 0]  # [M, A, K, S]
        self.count = np.moveaxis(slots, 2, 3).reshape(points, k_).astype(float)

        def sums(per_row: np.ndarray) -> np.ndarray:
            values = weight * per_row[entry]
            return np.bincount(group, values, minlength=points * k_).reshape(points, k_)

        sum_r, sum_top1 = sums(r), sums(top1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = self.count.sum(axis=1)
            self.r = (sum_r.sum(axis=1) / total).reshape(m_, a_, s_)
            self.top1 = (sum_top1.sum(axis=1) / total).reshape(m_, a_, s_)
            left = total[:, None] - self.count
            jack_r = ((sum_r.sum(axis=1)[:, None] - sum_r) / left).T.reshape(k_, m_, a_, s_)
            jack_top1 = ((sum_top1.sum(axis=1)[:, None] - sum_top1) / left).T
        return jack_r, jack_top1.reshape(k_, m_, a_, s_)

    def _replicate_means(
        self,
        replicate: np.ndarray,
        point: np.ndarray,
        entry: np.ndarray,
        weight: np.ndarray,
        r: np.ndarray,
    ) -> np.ndarray:
        """Each replicate's mean r over its seeds [R, M, A, S] (for sign agreement)."""
        m_, a_, r_, _, s_ = self.shape
        with np.errstate(invalid="ignore", divide="ignore"):
            per_rep = np.moveaxis(self.present.sum(axis=3), 2, 0).astype(float)  # [R, M, A, S]
            rep_sum = np.bincount(
                (point[entry] * r_ + replicate[entry]),
                weight * r[entry],
                minlength=m_ * a_ * s_ * r_,
            ).reshape(m_, a_, s_, r_)
            return np.moveaxis(rep_sum, 3, 0) / per_rep

    def _stacked(
        self,
        point_value: np.ndarray,
        jack: np.ndarray,
        shared: np.ndarray,
        own: np.ndarray,
        resamples: int,
    ) -> Stacked:
        """The point, jackknife and image-resampled versions stacked for intervals.t_interval."""
        m_, a_, _, _, s_ = self.shape
        k_ = self.clusters
        cluster_present = (self.count > 0).T.reshape(k_, m_, a_, s_)
        values = np.concatenate(
            [point_value[None], jack, shared.reshape(-1, m_, a_, s_), own.reshape(-1, m_, a_, s_)]
        )
        return Stacked(values, cluster_present, k_, resamples)

    def _images(self, coded, p, rows, entry, group, weight, top1, chance, span, resamples, seed):
        """Point means of r and top-1 on B shared and B per-cluster resamples of the eval
        images: ([B, points] × 4), each row's r with its own dense top-1 on the same images."""
        points = self.r.size
        n_images = int(coded.eval_size[p])
        correct, dense_bits = coded.correct[rows], coded.dense_correct[rows]
        moving = any(b is not None for b in correct) or any(b is not None for b in dense_bits)
        if n_images <= 0 or not rows.size or not moving:
            with np.errstate(invalid="ignore"):
                flat_r = np.broadcast_to(self.r.reshape(1, -1), (resamples, points))
                flat_top1 = np.broadcast_to(self.top1.reshape(1, -1), (resamples, points))
            return flat_r, flat_r, flat_top1, flat_top1
        dense_code, dense_chance, dense_sums = _dense_checkpoints(
            dense_bits, span, chance, n_images
        )
        u_ = len(dense_sums)
        # Columns: (point, cluster, dense checkpoint), sorted, so a group is a run of columns.
        key = group * u_ + dense_code[entry]
        columns, column = np.unique(key, return_inverse=True)
        column = column.ravel()
        sums = accumulate(correct[entry], top1[entry], column, weight, len(columns), n_images)
        column_weight = np.bincount(column, weight, minlength=len(columns))
        column_dense = columns % u_
        weights = image_weights(n_images, resamples, seed)
        both = resampled(np.concatenate([sums, dense_sums]), weights)
        accuracy, dense = both[:, : len(columns)], both[:, len(columns) :][:, column_dense]
        c = dense_chance[column_dense]
        with np.errstate(invalid="ignore", divide="ignore"):
            margin = dense - c
            r = np.where(margin > 0, (accuracy - c * column_weight) / margin, np.nan)
        column_group = columns // u_
        shared_r, own_r = self._cluster_means(r, column_group, resamples, seed)
        shared_top1, own_top1 = self._cluster_means(accuracy, column_group, resamples, seed)
        return shared_r, own_r, shared_top1, own_top1

    def _cluster_means(
        self, per_column: np.ndarray, column_group: np.ndarray, resamples: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resampled column values summed per (point, cluster), then the point means with all
        clusters on the shared resamples and with each cluster on its own: ([B, points] × 2)."""
        m_, a_, _, _, s_ = self.shape
        k_, points = self.clusters, m_ * a_ * s_
        starts = np.flatnonzero(np.r_[True, column_group[1:] != column_group[:-1]])
        grouped = np.zeros((resamples, points * k_))
        grouped[:, column_group[starts]] = np.add.reduceat(per_column, starts, axis=1)
        grouped = grouped.reshape(resamples, points, k_)
        orders = cluster_orders(k_, resamples, seed)
        own = np.stack([grouped[orders[k], :, k] for k in range(k_)], axis=-1)
        total = self.count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return grouped.sum(axis=2) / total, own.sum(axis=2) / total


def _dense_checkpoints(
    dense_bits: np.ndarray, span: np.ndarray, chance: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows' dense checkpoints: one per distinct dense_correct (or dense top-1 without it)
    and chance. Returns each row's checkpoint, each checkpoint's chance and its per-image
    correctness [U, images] (its top-1 on every image where the bits are missing)."""
    dense_key = np.array(
        [
            bits if bits is not None else ("top1", d)
            for bits, d in zip(dense_bits, span + chance, strict=True)
        ],
        dtype=object,
    )
    keys = pd.Series(list(zip(dense_key, chance, strict=True)), dtype=object)
    dense_code, _ = pd.factorize(keys)
    dense_ids, first = np.unique(dense_code, return_index=True)
    dense_code = np.searchsorted(dense_ids, dense_code)
    dense_sums = np.empty((len(dense_ids), n_images), np.float32)
    for u, i in enumerate(first):
        if dense_bits[i] is not None:
            dense_sums[u] = unpack([dense_bits[i]], n_images)[0]
        else:
            dense_sums[u] = span[i] + chance[i]
    return dense_code, chance[first], dense_sums


def statistics(
    coded: CodedRows, taus: tuple[float, ...], resamples: int, confidence: float, rng_seed: int
) -> Statistics:
    """Point means and every interval, one pair at a time."""
    out = _unfilled(coded, len(taus))
    roles = np.array([repair_role(v) for v in coded.variants], dtype=object)
    lamp_erk = "lamp" in coded.allocations and "erk" in coded.allocations
    for p in range(coded.shape[0]):
        pair = _Pair(coded, p, resamples, rng_seed)
        _fill_points(out, p, pair, confidence)
        _fill_crossings(out, p, pair, coded.grid, taus, roles, confidence)
        if lamp_erk:
            lamp, erk = coded.allocations.index("lamp"), coded.allocations.index("erk")
            _fill_lamp_erk(out, p, pair, lamp, erk, confidence)
        _fill_repairs(out, p, pair, confidence)
    return out


def _unfilled(coded: CodedRows, t_: int) -> Statistics:
    """Statistics of the right shapes: NaN (no value), zero counts, no differences."""
    p_, m_, a_, s_ = coded.shape
    shape = (p_, m_, a_, s_)
    return Statistics(
        *(np.full(shape, np.nan) for _ in range(6)),
        at_chance=np.zeros(shape, bool),
        seeds=np.zeros(shape, int),
        replicates=np.zeros(shape, int),
        duplicates=np.zeros(shape, int),
        family_seeds=np.zeros((p_, m_), int),
        pair_replicates=np.array([len(r) for r in coded.replicates]),
        dense=np.full((p_, max([len(r) for r in coded.replicates] + [1])), np.nan),
        boundary_ci=np.full((t_, 2, p_, m_, a_), np.nan),
        band_ci={name: np.full((t_, 2, p_, a_), np.nan) for name in BAND_FIELDS},
        lamp_erk=Differences.empty((p_, m_, s_)),
        repairs=Differences.empty((p_, a_, m_, m_, s_)),
    )


def _fill_points(out: Statistics, p: int, pair: _Pair, confidence: float) -> None:
    """The pair's point means of r and top-1, their intervals, counts and dense top-1."""
    out.r[p], out.top1[p] = pair.r, pair.top1
    r_interval = t_interval(pair.r_stack, confidence)
    out.r_lo[p], out.r_hi[p] = r_interval.lo, r_interval.hi
    top1_interval = t_interval(pair.top1_stack, confidence)
    out.top1_lo[p] = np.clip(top1_interval.lo, 0.0, 1.0)
    out.top1_hi[p] = np.clip(top1_interval.hi, 0.0, 1.0)
    with np.errstate(invalid="ignore"):
        out.at_chance[p] = out.top1_lo[p] <= pair.chance
    out.seeds[p], out.replicates[p], out.duplicates[p] = (
        pair.seeds,
        pair.replicates,
        pair.duplicates,
    )
    out.family_seeds[p] = pair.family_seeds
    out.dense[p, : len(pair.dense)] = pair.dense


def _fill_crossings(
    out: Statistics,
    p: int,
    pair: _Pair,
    grid: np.ndarray,
    taus: tuple[float, ...],
    roles: np.ndarray,
    confidence: float,
) -> None:
    """Per τ: each curve's boundary interval and the intervals of the band's ends and widths."""
    own_grid = grid[(pair.present.any(axis=(0, 1, 2, 3)))]
    curve_present = pair.r_stack.present.any(axis=-1)  # [K, M, A]
    for t, tau in enumerate(taus):
        lo, hi = crossing_interval(pair.r_stack, grid, tau, confidence)
        out.boundary_ci[t, 0, p], out.boundary_ci[t, 1, p] = lo, hi
        crossings = first_crossings(pair.r_stack.values, grid, tau)
        edges = band(effective_boundaries(crossings, own_grid), roles)
        present = curve_present.any(axis=1)  # [K, A]
        for name in BAND_FIELDS:
            interval = t_interval(pair.r_stack.derive(edges[name], present), confidence)
            lo = np.maximum(interval.lo, 0.0) if name in NON_NEGATIVE else interval.lo
            out.band_ci[name][t, 0, p], out.band_ci[name][t, 1, p] = lo, interval.hi


def _fill_lamp_erk(
    out: Statistics, p: int, pair: _Pair, lamp: int, erk: int, confidence: float
) -> None:
    """LAMP − ERK per (variant, sparsity), paired."""
    values, present, chance = pair.r_stack.values, pair.r_stack.present, out.at_chance[p]
    stat = pair.r_stack.derive(
        values[:, :, lamp] - values[:, :, erk], present[:, :, lamp] | present[:, :, erk]
    )
    out.lamp_erk.fill(
        (p,),
        _differences(
            stat,
            pair.rep_r[:, :, erk],
            pair.rep_r[:, :, lamp],
            chance[:, erk],
            chance[:, lamp],
            confidence,
        ),
    )


def _fill_repairs(out: Statistics, p: int, pair: _Pair, confidence: float) -> None:
    """Every pair of variants, per allocation: [M(a), M(b), S]."""
    values, present = pair.r_stack.values, pair.r_stack.present
    for a in range(values.shape[2]):
        arm, seen = values[:, :, a], present[:, :, a]  # [L, M, S], [K, M, S]
        stat = pair.r_stack.derive(
            arm[:, None, :, :] - arm[:, :, None, :], seen[:, None] | seen[:, :, None]
        )
        per_rep = pair.rep_r[:, :, a]
        chance = out.at_chance[p][:, a]
        out.repairs.fill(
            (p, a),
            _differences(
                stat,
                per_rep[:, :, None],
                per_rep[:, None, :],
                chance[:, None],
                chance[None, :],
                confidence,
            ),
        )
