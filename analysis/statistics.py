"""Mean r per point over seeds, bootstrap intervals, boundary intervals and LAMP − ERK.

Each (pair, repair variant) "family" becomes a dense [allocation, seed, sparsity] block; families
with the same seed count are bootstrapped together by one matrix product (bootstrap.py), and the
crossing of τ is recomputed on every resampled curve (boundaries.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.bootstrap import interval_probs, quantiles, resample_counts, resampled_means
from analysis.boundaries import first_crossings
from analysis.coding import CodedRows, seed_ranks


@dataclass
class SeedStatistics:
    """Per [pair, variant, allocation, sparsity] point statistics and bootstrap intervals."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    seeds: np.ndarray  # seeds with a value at the point
    duplicates: np.ndarray  # extra trials at a (point, seed), averaged
    family_seeds: np.ndarray  # [pair, variant] seeds of the family
    boundary_ci: np.ndarray  # [2, pair, variant, allocation], ±inf = censored by the grid
    diff: np.ndarray  # [pair, variant, sparsity] LAMP − ERK (NaN without both)
    diff_ci: np.ndarray  # [2, pair, variant, sparsity]


@dataclass
class _Blocks:
    """Sum and count of r per (family, allocation, seed, sparsity) cell, family after family.

    Family f's cells are one contiguous [A, n_f, S] block at `offset[f]`: duplicates of a cell
    (several trials of one point and seed) add up in it and are averaged later."""

    sums: np.ndarray
    counts: np.ndarray
    offset: np.ndarray
    seeds: np.ndarray  # n_f per family


def _blocks(coded: CodedRows, seed: np.ndarray) -> _Blocks:
    _, m, a, s = coded.shape
    families = coded.shape[0] * m
    rank, n_family = seed_ranks(coded, seed, families)
    family = (coded.pair * m + coded.variant)[coded.valid]
    block = a * n_family * s
    offset = np.concatenate([[0], np.cumsum(block)[:-1]])
    flat = offset[family] + ((coded.alloc[coded.valid] * n_family[family]) + rank) * s
    flat = flat + coded.spars[coded.valid]
    total = int(block.sum())
    return _Blocks(
        sums=np.bincount(flat, weights=coded.r[coded.valid], minlength=total),
        counts=np.bincount(flat, minlength=total),
        offset=offset,
        seeds=n_family,
    )


def seed_statistics(
    coded: CodedRows, seed: np.ndarray, tau: float, resamples: int, confidence: float, rng_seed: int
) -> SeedStatistics:
    """Point means and every bootstrap quantity, one seed-count bucket of families at a time."""
    p, m, a, s = coded.shape
    families = p * m
    blocks = _blocks(coded, seed)
    mean, lo, hi = (np.full((families, a, s), np.nan) for _ in range(3))
    seeds, duplicates = np.zeros((families, a, s), int), np.zeros((families, a, s), int)
    boundary_ci = np.full((2, families, a), np.nan)
    diff, diff_ci = np.full((families, s), np.nan), np.full((2, families, s), np.nan)
    probs = interval_probs(confidence)
    paired = "erk" in coded.allocations and "lamp" in coded.allocations
    for n in np.unique(blocks.seeds[blocks.seeds > 0]):
        members = np.flatnonzero(blocks.seeds == n)
        cells = blocks.offset[members][:, None] + np.arange(a * n * s)
        count = blocks.counts[cells].reshape(len(members), a, n, s)
        present = count > 0
        seeds[members] = present.sum(axis=2)
        duplicates[members] = (count - present).sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = blocks.sums[cells].reshape(len(members), a, n, s) / count
            mean[members] = np.where(present, values, 0.0).sum(axis=2) / seeds[members]
        weights = resample_counts(int(n), resamples, rng_seed)
        boot = resampled_means(np.moveaxis(values, 2, 0), weights)  # [G, A, S, B]
        lo[members], hi[members] = quantiles(boot, probs)
        crossings = first_crossings(np.swapaxes(boot, -1, -2), coded.grid, tau)
        boundary_ci[:, members] = quantiles(crossings.censored(coded.grid), probs)
        if paired:  # same resampled seeds for both allocations: a paired difference
            lamp, erk = coded.allocations.index("lamp"), coded.allocations.index("erk")
            diff[members] = mean[members, lamp] - mean[members, erk]
            diff_ci[:, members] = quantiles(boot[:, lamp] - boot[:, erk], probs)
    shape = (p, m, a, s)
    return SeedStatistics(
        mean=mean.reshape(shape),
        lo=lo.reshape(shape),
        hi=hi.reshape(shape),
        seeds=seeds.reshape(shape),
        duplicates=duplicates.reshape(shape),
        family_seeds=blocks.seeds.reshape(p, m),
        boundary_ci=boundary_ci.reshape(2, p, m, a),
        diff=diff.reshape(p, m, s),
        diff_ci=diff_ci.reshape(2, p, m, s),
    )
