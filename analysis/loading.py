"""What every analysis reads: one look at a store, damaged files named, variants selected.

Why one place: the regime table, the Markdown document and the HTML report must agree on which
rows they analysed and which files they left out, and must refuse the same bad inputs (an unknown
variant, a store whose trials all failed) with the same one-line message before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.definitions import COLUMNS, AnalysisInputError, variant_order
from sweep.results.schema import STATUS_OK, row_eval_precision
from sweep.results.store import StoreScan, open_store


@dataclass(frozen=True)
class Results:
    """The rows an analysis works on, and the store scan they came from."""

    root: Path
    frame: pd.DataFrame
    scan: StoreScan  # its dataset (read again for per-layer columns) and the skipped files

    @property
    def skipped(self) -> tuple[tuple[Path, str], ...]:
        return self.scan.skipped


def select_variants(frame: pd.DataFrame, wanted: Sequence[str]) -> pd.DataFrame:
    """Only the rows of the named repair variants (all when none are named)."""
    if not wanted:
        return frame
    present = variant_order(set(frame["repair_variant"].dropna()))
    unknown = [name for name in wanted if name not in present]
    if unknown:
        raise AnalysisInputError(
            f"unknown repair variant {unknown[0]!r} in --repair; expected one of: "
            + ", ".join(present)
        )
    return frame[frame["repair_variant"].isin(list(wanted))].reset_index(drop=True)


def load_results(
    path: Path | str, extra_columns: Sequence[str] = (), repairs: Sequence[str] = ()
) -> Results:
    """Read the columns the analysis needs (per-layer lists stay on disk), keep the `repairs`
    variants (all if empty) and refuse a selection without a single ok row.

    Damaged files are skipped with one line each on stderr (sweep.results.store.open_store)."""
    scan = open_store(path)
    columns = list(dict.fromkeys([*COLUMNS, "error", *extra_columns]))
    frame = select_variants(scan.read(columns), repairs)
    frame["eval_precision"] = [
        row_eval_precision(precision if isinstance(precision, str) else None, device)
        for precision, device in zip(frame["eval_precision"], frame["device"], strict=True)
    ]
    ok = frame["status"].eq(STATUS_OK)
    if not ok.any():
        errors = frame["error"].fillna("(no message)").value_counts()
        common = f"; most common error: {errors.index[0]}" if len(errors) else ""
        chosen = " of the selected repair variants" if repairs else ""
        raise AnalysisInputError(
            f"result store {str(path)!r} has no ok rows{chosen} ({len(frame)} error rows{common})"
        )
    return Results(root=Path(path), frame=frame, scan=scan)
