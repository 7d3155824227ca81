"""Each pair's dense top-1 and chance, and what limits its intervals (the summary's flags)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.coding import CodedRows
from analysis.statistics import Statistics


@dataclass(frozen=True)
class PairFacts:
    dense_top1: float  # mean over replicates
    chance: float
    flags: list[str]


def pair_facts(coded: CodedRows, stats: Statistics, p: int) -> PairFacts:
    """Dense top-1 (mean over replicates), chance, and what limits the pair's intervals."""
    own = coded.pair == p
    ran = own & ~coded.failed if (own & ~coded.failed).any() else own
    chance = float(np.median(coded.chance[ran]))
    dense = coded.span[ran] + coded.chance[ran]
    replicate_dense = stats.dense[p, : stats.pair_replicates[p]]
    mean_dense = (
        float(np.nanmean(replicate_dense))
        if np.isfinite(replicate_dense).any()
        else (float(np.median(dense)))
    )
    flags = []
    spread = _within_replicate_spread(coded.replicate[ran], dense)
    if spread > 1e-12:
        flags.append(f"dense top-1 varies within a replicate (by up to {spread:.4g})")
    if np.ptp(coded.chance[ran]) > 0:
        flags.append("num_classes varies")
    if not mean_dense > chance:
        flags.append("dense top-1 missing or at or below chance: r undefined")
    if stats.pair_replicates[p] == 1:
        flags.append(
            "single replicate: intervals cover calibration seeds and eval images, not other "
            "training seeds; no winner is named"
        )
    without = int(sum(coded.correct[i] is None for i in np.flatnonzero(own & coded.valid)))
    if without:
        flags.append(
            f"{without} rows without per-image results: their image noise is not in the intervals"
        )
    return PairFacts(mean_dense, chance, flags)


def _within_replicate_spread(replicate: np.ndarray, dense: np.ndarray) -> float:
    """The largest range of dense top-1 among the rows of one replicate (0 if consistent)."""
    frame = pd.DataFrame({"replicate": replicate, "dense": dense}).dropna()
    if frame.empty:
        return 0.0
    ranges = frame.groupby("replicate")["dense"].agg(lambda d: d.max() - d.min())
    return float(ranges.max())
