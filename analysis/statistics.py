"""Point means and hierarchical bootstrap intervals of everything the tables report.

Per (dataset, arch) pair the valid rows become cells [variant, allocation, replicate, seed,
sparsity] (duplicate trials of a cell averaged). A point's mean is the mean over its (replicate,
seed) cells; a deterministic variant (`none`, no calibration draw) stands for every seed of its
replicate. Each resample (bootstrap.py) recomputes every row's top-1 on resampled images, then
every point's mean under resampled replicate and seed weights: curves, τ crossings, the band and
all paired differences come from the same resamples, so their intervals belong together.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from analysis.band import band, effective_boundaries
from analysis.bootstrap import (
    image_weights,
    interval_probs,
    quantiles,
    replicate_seed_weights,
    resampled_accuracy,
)
from analysis.boundaries import first_crossings
from analysis.coding import CodedRows
from analysis.definitions import chance_margin, is_deterministic, repair_role

BAND_FIELDS = ("band_lo", "band_hi", "band_width", "band_beyond_reconstruction")


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
    at_chance: np.ndarray  # the lower end of the top-1 interval is within noise of chance
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


def _point_means(values: np.ndarray, present: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, values, 0.0).sum(axis=axes) / present.sum(axis=axes)


def _spread(values: np.ndarray, present: np.ndarray, deterministic: np.ndarray) -> np.ndarray:
    """A deterministic variant's value at every seed of its replicate.

    values [..., M, A, R, n, S]; present [M, A, R, n, S] (where a row is); deterministic [M]."""
    if not deterministic.any():
        return values
    own = np.where(present[deterministic], values[..., deterministic, :, :, :, :], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # replicates without the variant
        mean = np.nanmean(own, axis=-2, keepdims=True)
    out = values.copy()
    out[..., deterministic, :, :, :, :] = np.broadcast_to(mean, own.shape)
    return out


def _differences(boot_a, boot_b, point_a, point_b, rep_a, rep_b, chance_a, chance_b, probs):
    """b − a: point difference, paired interval, replicate sign agreement, both at chance.

    boot_*: [B, ...]; point_*: [...]; rep_*: [R, ...] per-replicate means over seeds."""
    diff = point_b - point_a
    lo, hi = quantiles(np.moveaxis(boot_b - boot_a, 0, -1), probs)
    per_replicate = rep_b - rep_a
    both = ~np.isnan(per_replicate)
    agree = both & (np.sign(per_replicate) == np.sign(diff)[None])
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = agree.sum(axis=0) / both.sum(axis=0)
    return Differences(diff, lo, hi, agreement, both.sum(axis=0), chance_a & chance_b)


class _Pair:
    """The cells of one (dataset, arch) pair and their resampled means."""

    def __init__(self, coded: CodedRows, p: int, resamples: int, rng_seed: int) -> None:
        _, m_, a_, s_ = coded.shape
        rows = np.flatnonzero(coded.valid & (coded.pair == coded.pair.dtype.type(p)))
        r_, n_ = len(coded.replicates[p]), max(int(coded.seeds[p]), 1)
        self.shape = (m_, a_, r_, n_, s_)
        cell = (coded.variant[rows] * a_ + coded.alloc[rows]) * r_ + coded.replicate[rows]
        cell = ((cell * n_ + coded.seed[rows]) * s_ + coded.spars[rows]).astype(np.int64)
        size = int(np.prod(self.shape))
        counts = np.bincount(cell, minlength=size)
        raw_present = (counts > 0).reshape(self.shape)
        self.duplicates = (counts - (counts > 0)).reshape(self.shape).sum(axis=(2, 3))
        self.seeds = raw_present.sum(axis=3).max(axis=2)  # [M, A, S]
        self.replicates = raw_present.any(axis=3).sum(axis=2)
        self.family_seeds = raw_present.sum(axis=3).max(axis=(1, 2, 3))  # [M]
        deterministic = np.array([is_deterministic(v) for v in coded.variants])

        order = np.argsort(cell, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(cell[order]) != 0]) if rows.size else order

        def cells(per_row: np.ndarray) -> np.ndarray:
            """[..., rows] -> [..., M, A, R, n, S] means per cell (NaN where empty), with a
            deterministic variant's value spread over the seeds."""
            lead = per_row.shape[:-1]
            sums = np.zeros((*lead, size))
            if rows.size:
                sums[..., cell[order][starts]] = np.add.reduceat(per_row[..., order], starts, -1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (sums / counts).reshape(*lead, *self.shape)
            return _spread(means, raw_present, deterministic)

        chance, span = coded.chance[rows], coded.span[rows]
        present = raw_present.copy()
        present[deterministic] = raw_present[deterministic].any(axis=3, keepdims=True)
        top1, r = cells(coded.top1[rows]), cells(coded.r[rows])
        self.present = present
        self.top1, self.r = _point_means(top1, present, (2, 3)), _point_means(r, present, (2, 3))
        self.rep_r = np.moveaxis(_point_means(r, present, (3,)), 2, 0)  # [R, M, A, S]
        # Image level: every row's top-1 on each resample of the pair's eval images.
        n_images = int(coded.eval_size[p])
        if n_images > 0 and rows.size:
            images = image_weights(n_images, resamples, rng_seed)
            accuracy = resampled_accuracy(coded.correct[rows], coded.top1[rows], images)
        else:
            accuracy = np.repeat(coded.top1[rows][None], resamples, axis=0)
        boot_top1, boot_r = cells(accuracy), cells((accuracy - chance) / span)
        # Replicate and seed levels: weights [B, R, n] contracted with the cells.
        weights = replicate_seed_weights(r_, n_, resamples, rng_seed)
        mass = np.einsum("brn,marns->bmas", weights, present.astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.boot_top1 = np.einsum("brn,bmarns->bmas", weights, np.nan_to_num(boot_top1))
            self.boot_r = np.einsum("brn,bmarns->bmas", weights, np.nan_to_num(boot_r))
            self.boot_top1, self.boot_r = self.boot_top1 / mass, self.boot_r / mass
        self.chance = float(np.median(chance)) if rows.size else np.nan
        self.dense = np.full(r_, np.nan)
        for k in range(r_):
            own = coded.replicate[rows] == k
            self.dense[k] = np.median(span[own] + chance[own]) if own.any() else np.nan


def statistics(
    coded: CodedRows, taus: tuple[float, ...], resamples: int, confidence: float, rng_seed: int
) -> Statistics:
    """Point means and every bootstrap quantity, one pair at a time."""
    p_, m_, a_, s_ = coded.shape
    t_ = len(taus)
    probs = interval_probs(confidence)
    shape = (p_, m_, a_, s_)
    out = Statistics(
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
    roles = np.array([repair_role(v) for v in coded.variants], dtype=object)
    lamp_erk = "lamp" in coded.allocations and "erk" in coded.allocations
    for p in range(p_):
        pair = _Pair(coded, p, resamples, rng_seed)
        out.r[p], out.top1[p] = pair.r, pair.top1
        (out.r_lo[p], out.r_hi[p]) = quantiles(np.moveaxis(pair.boot_r, 0, -1), probs)
        (out.top1_lo[p], out.top1_hi[p]) = quantiles(np.moveaxis(pair.boot_top1, 0, -1), probs)
        margin = (
            pair.chance
            if coded.eval_size[p] == 0
            else chance_margin(pair.chance, coded.eval_size[p])
        )
        out.at_chance[p] = out.top1_lo[p] < margin
        out.seeds[p], out.replicates[p], out.duplicates[p] = (
            pair.seeds,
            pair.replicates,
            pair.duplicates,
        )
        out.family_seeds[p] = pair.family_seeds
        out.dense[p, : len(pair.dense)] = pair.dense
        own_grid = coded.grid[(pair.present.any(axis=(0, 1, 2, 3)))]
        for t, tau in enumerate(taus):
            crossings = first_crossings(pair.boot_r, coded.grid, tau)  # [B, M, A]
            out.boundary_ci[t, :, p] = quantiles(
                np.moveaxis(crossings.censored(coded.grid), 0, -1), probs
            )
            edges = band(effective_boundaries(crossings, own_grid), roles)
            for name in BAND_FIELDS:
                out.band_ci[name][t, :, p] = quantiles(np.moveaxis(edges[name], 0, -1), probs)
        rep = pair.rep_r
        chance_arm = out.at_chance[p]
        if lamp_erk:
            lamp, erk = coded.allocations.index("lamp"), coded.allocations.index("erk")
            out.lamp_erk.fill(
                (p,),
                _differences(
                    pair.boot_r[:, :, erk],
                    pair.boot_r[:, :, lamp],
                    pair.r[:, erk],
                    pair.r[:, lamp],
                    rep[:, :, erk],
                    rep[:, :, lamp],
                    chance_arm[:, erk],
                    chance_arm[:, lamp],
                    probs,
                ),
            )
        # Every pair of variants, per allocation: [A, M(a), M(b), S].
        boot = np.moveaxis(pair.boot_r, 2, 1)  # [B, A, M, S]
        point, per_rep = np.moveaxis(pair.r, 1, 0), np.moveaxis(rep, 2, 1)
        arms = np.moveaxis(chance_arm, 1, 0)
        out.repairs.fill(
            (p,),
            _differences(
                boot[:, :, :, None],
                boot[:, :, None, :],
                point[:, :, None],
                point[:, None, :],
                per_rep[:, :, :, None],
                per_rep[:, :, None, :],
                arms[:, :, None],
                arms[:, None, :],
                probs,
            ),
        )
    return out
