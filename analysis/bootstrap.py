"""Vectorised hierarchical bootstrap: replicates, calibration draws within each, eval images.

Why three levels: a verdict must hold for another dense checkpoint (replicate), another
calibration draw (seed) and another eval set (images), and the three move results by very
different amounts (training seeds the most). One resample draws the pair's replicates with
replacement, then for every drawn replicate its seeds with replacement, then the eval images
with replacement. The draws are shared by every allocation, repair variant and sparsity of a
(dataset, arch) pair, so a resampled curve stays coherent across sparsity (a boundary can be
recomputed on it) and every difference between two arms is paired: same replicates, same
calibration draws, same images.

Everything is a matrix product: the image level is multinomial weights [B, N] @ per-image
correctness [N, rows] (`resampled_accuracy`), the replicate and seed levels are weights
[B, replicate, seed] (`replicate_seed_weights`) that statistics.py contracts with the cell
values. Each weight matrix depends only on (seed, sizes), so a group's interval does not change
when other groups are added to the store.
"""

from __future__ import annotations

import functools

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
IMAGE_LEVEL, REPLICATE_LEVEL, SEED_LEVEL = 1, 2, 3  # keep the levels' random streams apart
# Rows unpacked per matrix product: [ROW_CHUNK, N] float32 of correctness at a time.
ROW_CHUNK = 1024


def resample_counts(
    n: int, resamples: int, seed: int | list[int], dtype: type = float
) -> np.ndarray:
    """[resamples, n] multiplicities of a bootstrap over n units (each row sums to n).

    With one unit (or none) there is nothing to resample: all-ones rows."""
    if n <= 1:
        return np.ones((resamples, max(n, 1)), dtype=dtype)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    flat = (draws + np.arange(resamples)[:, None] * n).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(dtype)


@functools.lru_cache(maxsize=4)
def image_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """[B, N] float32 multiplicities of the eval images (exact: counts stay far below 2**24).

    Cached (read-only): the pairs of a store mostly share one eval-set size, and drawing the
    weights costs more than the product for a small pair."""
    weights = resample_counts(n_images, resamples, [seed, IMAGE_LEVEL, n_images], np.float32)
    weights.flags.writeable = False
    return weights


def replicate_seed_weights(replicates: int, seeds: int, resamples: int, seed: int) -> np.ndarray:
    """[B, R, n] weight of each (replicate, seed) cell in each resample.

    R slots each draw a replicate; each slot then draws n seeds with replacement (a multinomial
    over the replicate's seed slots). A cell's weight sums its multiplicities over the slots
    that drew its replicate, so a replicate drawn twice counts twice, each time with its own
    seed draw."""
    if replicates <= 1:
        picked = np.zeros((resamples, 1), np.int64)
    else:
        rng = np.random.default_rng([seed, REPLICATE_LEVEL, replicates])
        picked = rng.integers(0, replicates, size=(resamples, replicates))
    slots = picked.shape[1]
    per_slot = resample_counts(seeds, resamples * slots, [seed, SEED_LEVEL, replicates, seeds])
    per_slot = per_slot.reshape(resamples, slots, max(seeds, 1))
    weights = np.zeros((resamples, replicates, max(seeds, 1)))
    index = (np.arange(resamples)[:, None] * replicates + picked).ravel()
    np.add.at(weights.reshape(-1, max(seeds, 1)), index, per_slot.reshape(-1, max(seeds, 1)))
    return weights


def resampled_accuracy(correct: np.ndarray, top1: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, rows] top-1 of each row on each resample of the eval images.

    correct: per row the packed per-image bits (numpy.packbits, big-endian) or None; a row
    without them (a store written before they were recorded) keeps its top-1 in every resample:
    its image-level noise is then not in the interval. weights: image_weights [B, N]."""
    resamples, n_images = weights.shape
    out = np.repeat(top1[None, :].astype(float), resamples, axis=0)
    has_bits = np.flatnonzero([bits is not None for bits in correct])
    for start in range(0, len(has_bits), ROW_CHUNK):
        rows = has_bits[start : start + ROW_CHUNK]
        packed = np.frombuffer(b"".join(correct[rows]), np.uint8).reshape(len(rows), -1)
        bits = np.unpackbits(packed, axis=1, count=n_images).astype(np.float32)
        out[:, rows] = (weights @ bits.T) / n_images
    return out


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
