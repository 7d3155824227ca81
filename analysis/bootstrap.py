"""The eval-image level of the intervals: bootstrap resamples of the images as matrix products.

Every row of a (dataset, arch) pair is evaluated on the same eval images, and the store keeps each
row's per-image correctness (`correct`) and its dense checkpoint's (`dense_correct`). A resample
of the images is a multinomial weight vector over them; the resampled top-1 of anything that is a
weighted sum of rows (a point's mean over its replicates and seeds, one replicate's part of it) is
that weight vector times the weighted sum of the rows' bits. So the rows are first summed into
columns (`accumulate`: one column per point × cluster × dense checkpoint, [C, N]), then one
product [B, N] @ [N, C] gives every column on every resample: the cost is columns × images ×
resamples, not rows × images × resamples.

Two versions of each resample (intervals.py): *shared*, one weight vector for every cluster
(replicate), as the eval set really is shared; and *own*, every cluster with a resample of its
own. The own version is the shared one with the resample index permuted per cluster
(`cluster_orders`): no second product, and each cluster's own variance is the same in both, so
their difference is the shared images' effect alone, with little Monte-Carlo noise. The weights
depend only on (seed, sizes), so a pair's interval does not change when other pairs are added.
"""

from __future__ import annotations

import functools

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
IMAGE_LEVEL, CLUSTER_LEVEL = 1, 2  # keep the levels' random streams apart
# Entries unpacked per block: [ROW_CHUNK, N] float32 of correctness at a time.
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


@functools.lru_cache(maxsize=16)
def cluster_orders(clusters: int, resamples: int, seed: int) -> np.ndarray:
    """[K, B]: cluster k's own resample b is shared resample orders[k, b] (a permutation per
    cluster, so each cluster's resamples are the shared ones, independent across clusters).
    Cached (read-only)."""
    rng = np.random.default_rng([seed, CLUSTER_LEVEL, clusters, resamples])
    orders = np.stack([rng.permutation(resamples) for _ in range(clusters)])
    orders.flags.writeable = False
    return orders


def unpack(packed: list[bytes], n_images: int) -> np.ndarray:
    """Packed per-image bits (numpy.packbits, big-endian) -> [len, N] float32 of 0/1."""
    flat = np.frombuffer(b"".join(packed), np.uint8).reshape(len(packed), -1)
    return np.unpackbits(flat, axis=1, count=n_images).astype(np.float32)


def accumulate(
    packed: np.ndarray,
    constant: np.ndarray,
    column: np.ndarray,
    weight: np.ndarray,
    columns: int,
    n_images: int,
) -> np.ndarray:
    """[C, N] float32: per column the weighted sum of its entries' per-image correctness.

    One entry per (row, column) with a weight; packed[i] is the entry's bits, or None for a row
    without per-image results, which adds weight · constant[i] (its top-1) on every image: it
    keeps its top-1 in every resample."""
    out = np.zeros((columns, n_images), np.float32)
    has_bits = np.array([bits is not None for bits in packed], bool)
    flat = np.flatnonzero(~has_bits)
    if flat.size:
        np.add.at(out, (column[flat],), (weight[flat] * constant[flat])[:, None].astype(np.float32))
    entries = np.flatnonzero(has_bits)
    entries = entries[np.argsort(column[entries], kind="stable")]
    for start in range(0, len(entries), ROW_CHUNK):
        block = entries[start : start + ROW_CHUNK]
        bits = unpack(list(packed[block]), n_images) * weight[block, None].astype(np.float32)
        cols = column[block]
        starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        out[cols[starts]] += np.add.reduceat(bits, starts, axis=0)
    return out


def resampled(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, C] float64: each column's weighted mean over the images on each resample."""
    return (weights @ np.ascontiguousarray(sums.T)).astype(float) / weights.shape[1]
