"""Result rows as integer codes on the analysis grid.

Why: every later step is array arithmetic over [pair, repair, allocation, seed, sparsity];
factorising the string columns once keeps a million-row table out of pandas group-bys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.definitions import (
    ALLOCATION_ORDER,
    COLUMNS,
    REPAIR_ORDER,
    SPARSITY_DECIMALS,
    AnalysisInputError,
)
from sweep.schema import STATUS_OK


def _codes(values: pd.Series, preferred: Sequence[str] = ()) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a string column, labels in the preferred order, then alphabetical."""
    codes, uniques = pd.factorize(values.astype(str))
    present = set(uniques)
    labels = [v for v in preferred if v in present] + sorted(present - set(preferred))
    position = np.array([labels.index(v) for v in uniques], dtype=np.int64)
    return position[codes], labels


@dataclass
class CodedRows:
    """The rows of a result frame as integer codes on the analysis grid."""

    pairs: pd.DataFrame  # [P] dataset, arch
    allocations: list[str]  # [A]
    repairs: list[str]  # [M]
    grid: np.ndarray  # [S] every sparsity in the table, ascending
    pair: np.ndarray  # per row codes ...
    alloc: np.ndarray
    repair: np.ndarray
    spars: np.ndarray
    r: np.ndarray  # normalised accuracy, NaN for rows that do not count
    valid: np.ndarray  # ok rows with a finite r
    failed: np.ndarray  # rows with status error

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.pairs), len(self.repairs), len(self.allocations), len(self.grid)

    def count(self, mask: np.ndarray) -> np.ndarray:
        """Rows under mask per [pair, repair, allocation, sparsity]."""
        p, m, a, s = self.shape
        flat = ((self.pair * m + self.repair) * a + self.alloc) * s + self.spars
        return np.bincount(flat[mask], minlength=p * m * a * s).reshape(p, m, a, s)


def code_rows(frame: pd.DataFrame) -> CodedRows:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise AnalysisInputError(f"result table lacks columns {missing}")
    dataset, datasets = _codes(frame["dataset"])
    arch, archs = _codes(frame["arch"])
    pair_ids, pair_codes = np.unique(dataset * len(archs) + arch, return_inverse=True)
    pairs = pd.DataFrame(
        {"dataset": [datasets[i // len(archs)] for i in pair_ids]}
        | {"arch": [archs[i % len(archs)] for i in pair_ids]}
    )
    alloc, allocations = _codes(frame["allocation"], ALLOCATION_ORDER)
    repair, repairs = _codes(frame["repair"], REPAIR_ORDER)
    sparsity = np.round(frame["sparsity"].to_numpy(float), SPARSITY_DECIMALS)
    grid, spars = np.unique(sparsity, return_inverse=True)
    chance = 1.0 / frame["num_classes"].to_numpy(float)
    span = frame["dense_top1"].to_numpy(float) - chance
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(span > 0, (frame["top1"].to_numpy(float) - chance) / span, np.nan)
    ok = frame["status"].eq(STATUS_OK).to_numpy(bool, na_value=False)
    valid = ok & np.isfinite(r)
    return CodedRows(
        pairs=pairs,
        allocations=allocations,
        repairs=repairs,
        grid=grid,
        pair=pair_codes,
        alloc=alloc,
        repair=repair,
        spars=spars,
        r=np.where(valid, r, np.nan),
        valid=valid,
        failed=~ok,
    )


def seed_ranks(coded: CodedRows, seed: np.ndarray, families: int) -> tuple[np.ndarray, np.ndarray]:
    """Per valid row the seed's index within its (pair, repair) family; seeds per family."""
    family = (coded.pair * coded.shape[1] + coded.repair)[coded.valid]
    seed_codes, seed_values = pd.factorize(seed[coded.valid])
    combos, inverse = np.unique(family * max(len(seed_values), 1) + seed_codes, return_inverse=True)
    combo_family = combos // max(len(seed_values), 1)
    rank = np.arange(len(combos)) - np.searchsorted(combo_family, combo_family, side="left")
    return rank[inverse], np.bincount(combo_family, minlength=families)
