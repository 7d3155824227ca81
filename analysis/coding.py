"""Result rows as integer codes on the analysis grid.

Why: every later step is array arithmetic over [pair, variant, allocation, seed, sparsity];
factorising the string columns once keeps a million-row table out of pandas group-bys.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.definitions import (
    ALLOCATION_ORDER,
    COLUMNS,
    SPARSITY_DECIMALS,
    AnalysisInputError,
    variant_order,
)
from sweep.schema import STATUS_OK


def _allocation_order(present: Collection[str]) -> list[str]:
    """The known allocations in ALLOCATION_ORDER, then the others alphabetically."""
    return [v for v in ALLOCATION_ORDER if v in present] + sorted(
        set(present) - set(ALLOCATION_ORDER)
    )


def _codes(
    values: pd.Series, order: Callable[[Collection[str]], list[str]] = sorted
) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a string column; labels as `order` sorts the values present."""
    codes, uniques = pd.factorize(values.astype(str))
    labels = list(order(set(uniques)))
    position = np.array([labels.index(v) for v in uniques], dtype=np.int64)
    return position[codes], labels


@dataclass
class CodedRows:
    """The rows of a result frame as integer codes on the analysis grid."""

    pairs: pd.DataFrame  # [P] dataset, arch
    allocations: list[str]  # [A]
    variants: list[str]  # [M] repair variants
    grid: np.ndarray  # [S] every sparsity in the table, ascending
    pair: np.ndarray  # per row codes ...
    alloc: np.ndarray
    variant: np.ndarray
    spars: np.ndarray
    r: np.ndarray  # normalised accuracy, NaN for rows that do not count
    valid: np.ndarray  # ok rows with a finite r
    failed: np.ndarray  # rows with status error

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.pairs), len(self.variants), len(self.allocations), len(self.grid)

    def count(self, mask: np.ndarray) -> np.ndarray:
        """Rows under mask per [pair, variant, allocation, sparsity]."""
        p, m, a, s = self.shape
        flat = ((self.pair * m + self.variant) * a + self.alloc) * s + self.spars
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
    if frame["repair_variant"].isna().any():
        missing = int(frame["repair_variant"].isna().sum())
        raise AnalysisInputError(
            f"{missing} result rows lack a repair_variant; rows written before trial-key schema 2 "
            "need python -m sweep.upgrade"
        )
    alloc, allocations = _codes(frame["allocation"], _allocation_order)
    variant, variants = _codes(frame["repair_variant"], variant_order)
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
        variants=variants,
        grid=grid,
        pair=pair_codes,
        alloc=alloc,
        variant=variant,
        spars=spars,
        r=np.where(valid, r, np.nan),
        valid=valid,
        failed=~ok,
    )


def seed_ranks(coded: CodedRows, seed: np.ndarray, families: int) -> tuple[np.ndarray, np.ndarray]:
    """Per valid row the seed's index within its (pair, variant) family; seeds per family."""
    family = (coded.pair * coded.shape[1] + coded.variant)[coded.valid]
    seed_codes, seed_values = pd.factorize(seed[coded.valid])
    combos, inverse = np.unique(family * max(len(seed_values), 1) + seed_codes, return_inverse=True)
    combo_family = combos // max(len(seed_values), 1)
    rank = np.arange(len(combos)) - np.searchsorted(combo_family, combo_family, side="left")
    return rank[inverse], np.bincount(combo_family, minlength=families)
