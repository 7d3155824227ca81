"""Result rows as integer codes on the analysis grid.

Why: every later step is array arithmetic over [pair, variant, allocation, replicate, seed,
sparsity]; factorising the string columns once keeps a million-row table out of pandas group-bys.
A pair (dataset, arch) is the unit of comparison: all its rows must come from one eval split and
one eval-set size, or no two of them measure the same thing (refused here, before any work).
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
    replicate: np.ndarray  # index of the row's replicate among its pair's replicates
    seed: np.ndarray  # index of the row's seed among the seeds of its (pair, replicate)
    top1: np.ndarray  # top-1, NaN for rows that do not count
    span: np.ndarray  # dense_top1 of the row's replicate − chance (r's denominator)
    chance: np.ndarray
    r: np.ndarray  # normalised accuracy, NaN for rows that do not count
    valid: np.ndarray  # ok rows with a finite r
    failed: np.ndarray  # rows with status error
    correct: np.ndarray  # packed per-image bits per row (object: bytes or None)
    replicates: list[list[int]]  # [P] replicate ids (training seeds) of each pair, ascending
    seeds: np.ndarray  # [P] most seeds any replicate of the pair has
    eval_size: np.ndarray  # [P] eval images of the pair's rows (0 if unknown)

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
    eval_size = _check_eval_sets(frame, pair_codes, pairs, ok)
    replicate_ids = frame["replicate"].fillna(0).to_numpy(np.int64)
    replicate, replicates = _ranks(pair_codes, replicate_ids, len(pairs))
    seed, _ = _ranks(
        pair_codes * (replicate_ids.max(initial=0) + 1) + replicate_ids,
        frame["seed"].fillna(0).to_numpy(np.int64),
        None,
    )
    seeds = np.zeros(len(pairs), np.int64)
    np.maximum.at(seeds, pair_codes[valid], seed[valid] + 1)
    return CodedRows(
        pairs=pairs,
        allocations=allocations,
        variants=variants,
        grid=grid,
        pair=pair_codes,
        alloc=alloc,
        variant=variant,
        spars=spars,
        replicate=replicate,
        seed=seed,
        top1=np.where(valid, frame["top1"].to_numpy(float), np.nan),
        span=span,
        chance=chance,
        r=np.where(valid, r, np.nan),
        valid=valid,
        failed=~ok,
        correct=frame["correct"].to_numpy(object),
        replicates=replicates,
        seeds=seeds,
        eval_size=eval_size,
    )


def _ranks(
    group: np.ndarray, values: np.ndarray, groups: int | None
) -> tuple[np.ndarray, list[list[int]]]:
    """Per row the index of its value among the distinct values of its group, ascending; and
    (when `groups` is given) those values per group."""
    combos, inverse = np.unique(np.stack([group, values]), axis=1, return_inverse=True)
    first = np.searchsorted(combos[0], combos[0], side="left")
    rank = (np.arange(combos.shape[1]) - first)[inverse.ravel()]
    if groups is None:
        return rank, []
    return rank, [combos[1, combos[0] == g].tolist() for g in range(groups)]


def _check_eval_sets(
    frame: pd.DataFrame, pair: np.ndarray, pairs: pd.DataFrame, ok: np.ndarray
) -> np.ndarray:
    """Eval images per pair; refuses a pair whose ok rows mix eval splits, eval-set sizes or eval
    precisions (fp32 on CPU against bf16 on a GPU).

    A row without an eval split predates the column and was evaluated on the test split (the
    loader fills in a missing eval precision, see `row_eval_precision`)."""
    split = frame["eval_split"].fillna("test").astype(str).to_numpy()
    size = frame["eval_size"].to_numpy(float)
    precision = frame["eval_precision"].astype(str).to_numpy()
    sizes = np.zeros(len(pairs), np.int64)
    for p in np.unique(pair[ok]):
        own = ok & (pair == p)
        name = f"{pairs['dataset'][p]} / {pairs['arch'][p]}"
        checks = (
            ("eval splits", split[own]),
            ("eval-set sizes", [f"{v:g}" for v in size[own]]),
            ("eval precisions", precision[own]),
        )
        for what, values in checks:
            present = sorted({str(v) for v in values})
            if len(present) > 1:
                raise AnalysisInputError(
                    f"the rows of {name} mix {what} ({', '.join(present)}); rows evaluated on "
                    "different images or in different arithmetic are never pooled or compared: "
                    "analyse one per store"
                )
        finite = size[own][np.isfinite(size[own])]
        sizes[p] = int(finite[0]) if len(finite) else 0
    return sizes
