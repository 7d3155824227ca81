"""Result rows as integer codes on the analysis grid.

Why: every later step is array arithmetic over [pair, variant, allocation, replicate, seed,
sparsity]; factorising the string columns once keeps a million-row table out of pandas group-bys.
A pair (dataset, arch) is the unit of comparison: all its rows must come from one eval split and
one eval-set size, or no two of them measure the same thing (refused here, before any work). Its
per-image results must match too: every row with per-image correctness needs its dense
checkpoint's (`dense_correct`), the same for every row of one checkpoint and agreeing with the
rows' dense top-1, or resampling the images would move r's numerator against a denominator that
is not its own (refused here as well).
"""

from __future__ import annotations

import math
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
from sweep.results.schema import STATUS_OK


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
    dense_correct: np.ndarray  # the row's dense checkpoint's packed bits (bytes or None)
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
    _check_per_image(frame, pair_codes, pairs, ok, eval_size)
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
        correct=_bits(frame["correct"]),
        dense_correct=_bits(frame["dense_correct"]),
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


def _bits(column: pd.Series) -> np.ndarray:
    """Packed bits per row as bytes, None where the row has none."""
    values = column.to_numpy(object)
    return np.where(_present(values), values, None)


def _present(values: np.ndarray) -> np.ndarray:
    return np.array([v is not None and v is not pd.NA and not _is_nan(v) for v in values], bool)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _check_per_image(
    frame: pd.DataFrame, pair: np.ndarray, pairs: pd.DataFrame, ok: np.ndarray, sizes: np.ndarray
) -> None:
    """Refuses a pair whose per-image results cannot be resampled together (module docstring):
    bits of the wrong length, rows with per-image correctness but no dense_correct, one dense
    checkpoint with two different dense_correct, or a dense_correct whose count of right images
    is not the rows' dense top-1 (within half an image)."""
    correct = frame["correct"].to_numpy(object)
    dense = frame["dense_correct"].to_numpy(object)
    checkpoint = frame["checkpoint_sha256"].astype(str).to_numpy()
    dense_top1 = frame["dense_top1"].to_numpy(float)
    has_correct, has_dense = _present(correct), _present(dense)
    lengths = {
        what: np.array([len(b) if h else -1 for b, h in zip(bits, has, strict=True)])
        for what, bits, has in (
            ("correct", correct, has_correct),
            ("dense_correct", dense, has_dense),
        )
    }
    for p in np.unique(pair[ok]):
        own = ok & (pair == p)
        name = f"{pairs['dataset'][p]} / {pairs['arch'][p]}"
        n_images = int(sizes[p])
        expected = math.ceil(n_images / 8)
        for what, length in lengths.items():
            wrong = own & (length >= 0) & (length != expected)
            if wrong.any():
                raise AnalysisInputError(
                    f"{int(wrong.sum())} rows of {name} have a {what} of "
                    f"{length[np.flatnonzero(wrong)[0]]} bytes, expected {expected} for "
                    f"{n_images} eval images: the per-image results do not match the rows"
                )
        missing = own & has_correct & ~has_dense
        if missing.any():
            raise AnalysisInputError(
                f"{int(missing.sum())} of the {int(own.sum())} ok rows of {name} have per-image "
                "results but no dense_correct (written before it was recorded): r's dense top-1 "
                "could not be resampled with its top-1; re-evaluate those trials with this version "
                "(or analyse rows without per-image results only)"
            )
        with_dense = np.flatnonzero(own & has_dense)
        if not with_dense.size:
            continue
        codes, uniques = pd.factorize(pd.Series(dense[with_dense], dtype=object))
        per_checkpoint = pd.DataFrame({"checkpoint": checkpoint[with_dense], "bits": codes})
        variants = per_checkpoint.groupby("checkpoint")["bits"].nunique()
        if (variants > 1).any():
            sha = str(variants.index[variants > 1][0])
            raise AnalysisInputError(
                f"the rows of {name} from dense checkpoint {sha[:12]} carry "
                f"{int(variants.max())} different dense_correct: one checkpoint evaluated on one "
                "eval set has one per-image result"
            )
        right = np.array(
            [np.unpackbits(np.frombuffer(b, np.uint8), count=n_images).sum() for b in uniques]
        )
        measured = right[codes] / max(n_images, 1)
        claimed = dense_top1[with_dense]
        off = np.abs(measured - claimed) > 0.5 / max(n_images, 1) + 1e-9
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise AnalysisInputError(
                f"dense_correct of {name} (checkpoint {checkpoint[with_dense][i][:12]}) has "
                f"{int(right[codes[i]])} of {n_images} eval images right ({measured[i]:.4f}) but "
                f"its rows say dense top-1 {claimed[i]:.4f}: the per-image results do not match "
                "the rows"
            )
