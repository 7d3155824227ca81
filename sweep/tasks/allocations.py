"""Allocations: how many weights each prunable layer keeps at a global sparsity S.

Every allocation returns exact integer counts whose sum is K = round((1 - S) * N) (Python's
``round`` of the float product, N = all prunable weights); the masks then keep the largest |w| of
each layer (see :mod:`sweep.tasks.ranking` for the one ranking and tie rule).

- ``erk``: density_l = eps * raw_l with raw_l = sum(shape) / prod(shape) (Evci et al., 2020);
  layers whose density would exceed 1 go dense (all layers tied at the largest raw score at once),
  leave the budget, and eps is solved again until no density exceeds 1.
- ``uniform``: every layer at density 1 - S.
- ``uniform_plus`` (Gale, Elsen & Hooker, 2019; LAMP's baseline): the first layer, when it is a
  conv (the stem of every zoo model), stays dense; the last layer (every zoo model's classifier)
  keeps at least ceil(n / 5) weights (at most 80 % sparse); every other layer shares one density.
  The classifier shares it too unless that would keep fewer than ceil(n / 5); then it keeps exactly
  that many and the other layers share what is left. Decided in integers, from shapes only. A
  sparsity that leaves less than the dense first layer plus that classifier floor cannot be
  allocated: UserError.
- ``global``: one |w| threshold over all layers (global top-K of |w|).
- ``lamp``: global top-K of LAMP scores (Lee et al., 2021). The largest weight of every non-zero
  layer scores exactly 1 and every other weight at most 1/2, so with K >= number of layers no layer
  is emptied; with K < number of layers the K kept weights are the largest weights of the first K
  layers in ``named_modules()`` order (ties go to the earlier layer) and the rest are emptied.

Fractional quotas (erk, uniform, uniform_plus) become integers by the largest-remainder rule:
every layer gets the floor of its quota, and the units still missing go one each to the largest
remainders, ties to the earlier layer. Ties in a global top-K never make it keep more than K: they
go to the earlier layer, then to the larger weight.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.registry import Implementations
from sweep.core.errors import UserError
from sweep.tasks import ranking


@dataclass(frozen=True)
class Allocation:
    """Kept count per layer (layer order) and the indices of layers ERK forced dense."""

    counts: tuple[int, ...]
    forced_dense: tuple[int, ...] = ()


def kept_total(numel: int, sparsity: float) -> int:
    """K = round((1 - S) * N): the exact number of weights every allocation keeps."""
    return round((1.0 - sparsity) * numel)


def largest_remainder(
    quotas: Sequence[float | Fraction], caps: Sequence[int], total: int
) -> list[int]:
    """Integers summing to ``total``, each the floor or ceiling of its quota (<= its cap).

    Floors first; the missing units go one each to the largest remainders, ties to the earlier
    index. Quotas must lie in [0, cap] and sum to ``total`` up to float rounding.
    """
    counts = [min(math.floor(q), cap) for q, cap in zip(quotas, caps, strict=True)]
    missing = total - sum(counts)
    order = sorted(
        (i for i, cap in enumerate(caps) if counts[i] < cap),
        key=lambda i: (-(quotas[i] - counts[i]), i),
    )
    if not 0 <= missing <= len(order):
        raise ArithmeticError(f"quotas {list(quotas)} cannot be rounded to total {total}")
    for i in order[:missing]:
        counts[i] += 1
    return counts


def erk_raw_score(shape: Sequence[int]) -> float:
    """(n_out + n_in + k_h + k_w) / (n_out * n_in * k_h * k_w); a Linear has no kernel terms."""
    size = math.prod(shape)
    return sum(shape) / size if size else 0.0


def erk(weights: Sequence[torch.Tensor], sparsity: float, total: int) -> Allocation:
    """ERK counts with iterative capping (depends on shapes only, never on values).

    Raw scores equal in value are equal floats (one correctly rounded division of the same
    ratio), so a tie at the maximum is an exact float tie.
    """
    numels = [w.numel() for w in weights]
    raw = [erk_raw_score(tuple(w.shape)) for w in weights]
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(raw)) if i not in dense and numels[i]]
        budget = total - sum(numels[i] for i in dense)
        weighted = math.fsum(raw[i] * numels[i] for i in free)
        eps = budget / weighted if weighted else 0.0
        top = max((raw[i] for i in free), default=0.0)
        if not free or eps * top <= 1.0:
            break
        dense.update(i for i in free if raw[i] == top)
    quotas = [
        float(numels[i]) if i in dense else min(eps * raw[i] * numels[i], numels[i])
        for i in range(len(raw))
    ]
    return Allocation(tuple(largest_remainder(quotas, numels, total)), tuple(sorted(dense)))


def uniform(weights: Sequence[torch.Tensor], sparsity: float, total: int) -> Allocation:
    """Density 1 - S in every layer, rounded by largest remainder to the exact total."""
    numels = [w.numel() for w in weights]
    quotas = [(1.0 - sparsity) * n for n in numels]
    return Allocation(tuple(largest_remainder(quotas, numels, total)))


def _shared_density(numels: Sequence[int], layers: Sequence[int], budget: int) -> dict[int, int]:
    """``budget`` spread over ``layers`` at one density: exact quotas budget * n / (their total),
    rounded by largest remainder."""
    pool = sum(numels[i] for i in layers)
    quotas = [Fraction(budget * numels[i], pool) if pool else Fraction(0) for i in layers]
    counts = largest_remainder(quotas, [numels[i] for i in layers], budget)
    return dict(zip(layers, counts, strict=True))


def uniform_plus(weights: Sequence[torch.Tensor], sparsity: float, total: int) -> Allocation:
    """Uniform+ counts: a dense first conv, a classifier at most 80 % sparse, one shared density."""
    numels = [w.numel() for w in weights]
    first = 0 if weights[0].dim() == 4 else None
    last = len(weights) - 1 if len(weights) - 1 != first else None
    floor = -(-numels[last] // 5) if last is not None else 0  # ceil(n / 5), in integers
    dense = numels[first] if first is not None else 0
    if total < dense + floor:
        raise UserError(
            f"sparsity {sparsity!r} is not allowed for uniform_plus on this model: it keeps "
            f"{total} weights, but the dense first conv ({dense}) and the classifier at 20 % "
            f"density ({floor}) need {dense + floor}; expected a lower sparsity"
        )
    counts = dict.fromkeys(range(len(weights)), 0)
    if first is not None:
        counts[first] = dense
    shared = [i for i in range(len(weights)) if i not in (first, last)]
    budget = total - dense
    if last is not None:
        pool = sum(numels[i] for i in shared) + numels[last]
        if budget * numels[last] >= floor * pool:  # its shared quota keeps at least the floor
            shared.append(last)
        else:
            counts[last] = floor
            budget -= floor
    counts.update(_shared_density(numels, shared, budget))
    return Allocation(tuple(counts.values()))


def global_magnitude(weights: Sequence[torch.Tensor], sparsity: float, total: int) -> Allocation:
    """Counts of the global top-K |w| (one threshold over all layers)."""
    wide = any(w.dtype == torch.float64 for w in weights)
    dtype = np.dtype(np.float64 if wide else np.float32)
    scores = functools.partial(ranking.top_magnitudes, dtype=dtype)
    return Allocation(tuple(ranking.top_k_counts(weights, total, scores)))


def lamp(weights: Sequence[torch.Tensor], sparsity: float, total: int) -> Allocation:
    """Counts of the global top-K LAMP scores."""
    return Allocation(tuple(ranking.top_k_counts(weights, total, ranking.top_lamp_scores)))


Allocator = Callable[[Sequence[torch.Tensor], float, int], Allocation]

# The allocator (weights in layer order, sparsity, K) of each catalog allocation.
ALLOCATORS: Implementations[Allocator] = Implementations(
    ALLOCATIONS,
    {
        "erk": erk,
        "lamp": lamp,
        "uniform": uniform,
        "uniform_plus": uniform_plus,
        "global": global_magnitude,
    },
)


def allocate_counts(name: str, weights: Sequence[torch.Tensor], sparsity: float) -> Allocation:
    """Counts for a validated allocation name and sparsity; weights in layer order."""
    total = kept_total(sum(w.numel() for w in weights), sparsity)
    return ALLOCATORS[name](weights, sparsity, total)
