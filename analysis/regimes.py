"""Reduce a result store to recovery curves, τ boundaries, regimes and the LAMP − ERK comparison.

`regime_table(frame, tau)` is the API (used by the report and `make demo`);
`python -m analysis.regimes RESULTS` the CLI. Definitions: analysis/definitions.py.
Pipeline: coding.py (rows -> integer codes) -> statistics.py (means, bootstrap over seeds,
boundary intervals) -> tables.py (flagged tables) -> render.py (table / csv / json).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from analysis.coding import code_rows
from analysis.definitions import (
    COLUMNS,
    DEFAULT_TAU,
    AnalysisInputError,
    RegimeTables,
    check_tau,
)
from analysis.render import FORMATS, render
from analysis.statistics import seed_statistics
from analysis.tables import TableBuilder
from sweep.errors import cli_main
from sweep.store import read_results

__all__ = ["AnalysisInputError", "RegimeTables", "load_results", "main", "regime_table"]


def load_results(path: Path | str, extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The columns the analysis needs (per-layer lists stay on disk)."""
    return read_results(path, columns=list(dict.fromkeys([*COLUMNS, *extra_columns])))


def regime_table(
    frame: pd.DataFrame,
    tau: float = DEFAULT_TAU,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> RegimeTables:
    """Reduce a result frame (read_results with at least COLUMNS) to the regime tables."""
    tau = check_tau(tau)
    if frame.empty:
        raise AnalysisInputError("the result table has no rows")
    coded = code_rows(frame)
    stats = seed_statistics(coded, frame["seed"].to_numpy(), tau, resamples, confidence, seed)
    build = TableBuilder(frame, coded, stats, tau)
    regimes = build.regimes()
    return RegimeTables(
        tau=tau,
        confidence=confidence,
        resamples=resamples,
        curves=build.curves(),
        boundaries=build.boundaries(),
        regimes=regimes,
        summary=build.summary(regimes),
        comparison=build.comparison(),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.regimes",
        description=(
            "Reduce a prune-sweep result store to regime boundaries. Normalised accuracy "
            "r = (top1 - chance) / (dense_top1 - chance); a repair recovers at a sparsity when its "
            "mean r over seeds is >= tau. Prints, per (dataset, arch, allocation), where each "
            "repair's r crosses tau (interpolated, with the bracketing grid points and a bootstrap "
            "interval over seeds), the regime of every grid sparsity (intact, bn_recoverable, "
            "repair_sensitive, collapsed, or unknown when a repair is missing), the width of the "
            "repair-sensitive band, and LAMP - ERK per sparsity. Anything excluded or missing is "
            "named in a flags column."
        ),
    )
    parser.add_argument("results", type=Path, help="result store directory (Parquet, hive)")
    parser.add_argument(
        "--tau", type=float, default=DEFAULT_TAU, help="recovery threshold on r, in (0, 1)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table: overview for a terminal; csv: one table (--table, default regimes); "
        "json: every table (or --table) with flags as lists",
    )
    parser.add_argument(
        "--table",
        choices=RegimeTables.TABLES,
        help="print only this table: summary (band per dataset/arch/allocation), boundaries, "
        "regimes (one row per grid sparsity), comparison (LAMP - ERK), curves (mean r per point)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> None:
        tables = regime_table(load_results(args.results), check_tau(args.tau))
        sys.stdout.write(render(tables, args.format, args.table))

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
