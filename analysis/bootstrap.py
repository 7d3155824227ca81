"""Vectorised bootstrap over seeds.

Why over seeds, and paired: a seed is one calibration draw, shared by every sparsity and
allocation of a repair. Resampling seed *identities* (not points) keeps a resampled curve
coherent across sparsity, so a boundary can be recomputed on each resample, and makes LAMP − ERK
a paired difference. One resample is a vector of multiplicities over the seeds; all resamples of
all groups with the same seed count are one matrix product, never a Python loop per resample.
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


def resample_counts(n_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n_seeds] multiplicities of a bootstrap over n seeds (each row sums to n).

    Depends only on (seed, n_seeds), so a group's interval does not change when other groups are
    added to the store. With one seed there is nothing to resample: a single all-ones row.
    """
    if n_seeds <= 1:
        return np.ones((1, max(n_seeds, 1)))
    rng = np.random.default_rng([seed, n_seeds])
    draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    flat = (draws + np.arange(resamples)[:, None] * n_seeds).ravel()
    counts = np.bincount(flat, minlength=resamples * n_seeds)
    return counts.reshape(resamples, n_seeds).astype(float)


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means over the seed axis (axis 0 of values, NaN = no row) for every resample.

    values: [n_seeds, *rest]; counts: [resamples, n_seeds] -> [*rest, resamples]. A resample that
    drew only seeds without a value at some cell gives NaN there.
    """
    present = ~np.isnan(values)
    flat_values = np.where(present, values, 0.0).reshape(values.shape[0], -1)
    flat_present = present.reshape(values.shape[0], -1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ flat_values) / (counts @ flat_present)
    return means.T.reshape(*values.shape[1:], counts.shape[0])


def quantiles(samples: np.ndarray, probs: tuple[float, ...]) -> np.ndarray:
    """Inverted-CDF quantiles over the last axis, ignoring NaN and tolerating ±inf.

    Returns [len(probs), *samples.shape[:-1]]; NaN where a row has no finite-or-infinite sample.
    No interpolation, so a censored sample (±inf) is never averaged with a finite one.
    """
    ordered = np.sort(samples, axis=-1)  # NaN sorts last
    valid = (~np.isnan(samples)).sum(axis=-1)
    out = []
    for prob in probs:
        rank = np.clip(np.ceil(prob * valid).astype(int) - 1, 0, samples.shape[-1] - 1)
        picked = np.take_along_axis(ordered, rank[..., None], axis=-1)[..., 0]
        out.append(np.where(valid > 0, picked, np.nan))
    return np.stack(out)


def interval_probs(confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    return tail, 1.0 - tail
