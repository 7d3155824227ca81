"""Magnitude ranking kernels behind the allocations: exact, deterministic, CPU-only.

One ranking rule everywhere, so that a per-layer count fully determines a mask and a global top-K
agrees with the per-layer masks it implies: weights are ranked by |w| descending, ties go to the
*earlier* weight (lower flat index inside a layer, earlier layer in ``named_modules()`` order
across layers). It is the order of a stable descending sort on |w|; it is computed in numpy on the
CPU, from magnitudes widened to float32 (float64 weights stay float64), which is exact for every
float format, so masks are bit-identical on any device and in any run.

Costs: a mask needs one O(n) selection per layer (``np.partition``), never a sort. A global top-K
(LAMP scores, global |w|) sorts only the top of each layer, as deep as the threshold requires (see
:func:`top_k_counts`), with numpy's SIMD value sort and no index arrays. Layers run on
``torch.get_num_threads()`` threads (numpy releases the GIL), in order, at most that many at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``map`` on torch's thread count, results in input order, at most one batch in flight.

    Bounding the in-flight work keeps per-layer temporaries (and results a consumer drops early)
    from piling up, which ``Executor.map`` would do by submitting everything at once.
    """
    workers = max(1, torch.get_num_threads())
    if workers == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _as_numpy(weight: torch.Tensor, dtype: np.dtype | None) -> np.ndarray:
    """Flat CPU numpy view (a copy only where device or dtype differ); float64 stays float64."""
    if dtype is None:
        dtype = np.dtype(np.float64 if weight.dtype == torch.float64 else np.float32)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    return weight.detach().to(device="cpu", dtype=torch_dtype).reshape(-1).numpy()


def all_finite(weight: torch.Tensor) -> bool:
    """Whether every weight is finite (numpy: many times faster than torch here)."""
    return bool(np.isfinite(_as_numpy(weight, None)).all())


def magnitudes(weight: torch.Tensor, dtype: np.dtype | None = None) -> np.ndarray:
    """Flat |w| as a fresh numpy array on the CPU (float32, or float64 for float64 weights)."""
    return np.abs(_as_numpy(weight, dtype))


def keep_largest(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask (weight's shape, CPU) of the ``count`` largest |w|; ties keep the lower index."""
    numel = weight.numel()
    if count >= numel:
        return torch.ones(weight.shape, dtype=torch.bool)
    if count <= 0:
        return torch.zeros(weight.shape, dtype=torch.bool)
    magnitude = magnitudes(weight)
    cut = np.partition(magnitude, numel - count)[numel - count]  # the count-th largest |w|
    keep = magnitude > cut
    missing = count - int(np.count_nonzero(keep))
    keep[np.flatnonzero(magnitude == cut)[:missing]] = True
    return torch.from_numpy(keep).reshape(weight.shape)


def top_magnitudes(weight: torch.Tensor, depth: int, dtype: np.dtype | None = None) -> np.ndarray:
    """The ``depth`` largest |w| of a layer, ascending: its global-magnitude scores."""
    magnitude = magnitudes(weight, dtype)
    if depth < magnitude.size:  # copy: a view would keep the whole partitioned layer alive
        magnitude = np.partition(magnitude, magnitude.size - depth)[magnitude.size - depth :].copy()
    magnitude.sort()
    return magnitude


def top_lamp_scores(weight: torch.Tensor, depth: int) -> np.ndarray:
    """LAMP scores of the ``depth`` largest weights of a layer, ascending (float64).

    Position i of the ascending |w| order scores w_i^2 / sum_{j >= i} w_j^2 (Lee et al., 2021),
    so the largest weight scores 1. The sum runs over larger weights only, so the top ``depth``
    scores need only the top ``depth`` weights, bit for bit (the suffix sums run sequentially from
    the largest weight down). Squares of float32 values are exact in float64; correctly rounded
    addition and division are monotone, so the scores are non-decreasing and can be searched.
    Tied magnitudes take consecutive positions; which of them is which does not change the
    scores. A layer of zeros scores 0 everywhere (0/0 has no meaning).
    """
    ascending = top_magnitudes(weight, depth)
    squares = np.square(ascending, dtype=np.float64)
    del ascending
    if squares.size == 0 or squares[-1] == 0.0:
        return np.zeros_like(squares)
    suffix = np.cumsum(squares[::-1])[::-1]
    np.divide(squares, suffix, out=squares)
    return squares


def _from_bits(bits: int, dtype: np.dtype) -> np.generic:
    unsigned = np.uint64 if np.dtype(dtype).itemsize == 8 else np.uint32
    return np.array([bits], dtype=unsigned).view(dtype)[0]


def _to_bits(value: np.generic) -> int:
    unsigned = np.uint64 if value.dtype.itemsize == 8 else np.uint32
    return int(np.array([value]).view(unsigned)[0])


def _count_at_least(arrays: list[np.ndarray], value: np.generic) -> int:
    return sum(a.size - int(np.searchsorted(a, value, "left")) for a in arrays)


def kth_largest(arrays: list[np.ndarray], k: int) -> np.generic:
    """The k-th largest entry of ascending non-negative arrays (1 <= k <= total), exactly.

    Bisection on the bit pattern: for non-negative IEEE floats integer order is value order, so at
    most 64 steps of one ``searchsorted`` per array find the largest value v with >= k entries >= v.
    """
    dtype = arrays[0].dtype
    low, high = 0, max(_to_bits(a[-1]) for a in arrays if a.size)
    while low < high:
        middle = (low + high + 1) // 2
        if _count_at_least(arrays, _from_bits(middle, dtype)) >= k:
            low = middle
        else:
            high = middle - 1
    return _from_bits(low, dtype)


def top_k_counts(
    weights: Sequence[torch.Tensor],
    k: int,
    top_scores: Callable[[torch.Tensor, int], np.ndarray],
) -> list[int]:
    """Per-layer counts of the global top-k scores; ``top_scores(w, d)`` gives a layer's d best.

    A layer's scores must be non-decreasing in |w| (true of |w| and of LAMP), so its share of the
    top-k is a suffix of its ascending order, and ties at the threshold go to the earlier layer,
    then to the larger weight. Only the top of each layer is scored: first about twice the uniform
    share, then, for a layer whose lowest scored entry still reaches the current k-th largest,
    four times as deep, until every layer's unscored rest lies strictly below it. Then the rest
    cannot change the top-k, so the result is exact, and at high sparsity the work and memory are
    a fraction of a full sort of every layer.
    """
    sizes = [w.numel() for w in weights]
    if k <= 0:
        return [0] * len(sizes)
    if k >= sum(sizes):
        return sizes
    share = min(1.0, 2.0 * k / sum(sizes))
    depths = [min(n, math.ceil(share * n) + 1) for n in sizes]
    scores = list(ordered_map(lambda i: top_scores(weights[i], depths[i]), range(len(sizes))))
    while True:
        cut = kth_largest(scores, k)
        short = [i for i, n in enumerate(sizes) if depths[i] < n and scores[i][0] >= cut]
        if not short:
            break
        for i in short:
            depths[i] = min(sizes[i], 4 * depths[i])
        deeper = ordered_map(lambda i: top_scores(weights[i], depths[i]), short)
        for i, array in zip(short, deeper, strict=True):
            scores[i] = array
    above = [a.size - int(np.searchsorted(a, cut, "right")) for a in scores]
    left = k - sum(above)
    counts = []
    for array, count in zip(scores, above, strict=True):
        ties = int(np.searchsorted(array, cut, "right") - np.searchsorted(array, cut, "left"))
        share_of_ties = min(ties, left)
        left -= share_of_ties
        counts.append(count + share_of_ties)
    return counts
