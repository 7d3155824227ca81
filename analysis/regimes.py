"""Reduce a result store to recovery curves, τ boundaries, regimes and the LAMP − ERK comparison.

`regime_table(frame, tau)` is the API (used by the report and `make demo`);
`python -m analysis.regimes RESULTS` the CLI, whose `--format markdown` writes the results
document of a store (markdown.py). Definitions: analysis/definitions.py.
Pipeline: loading.py (store -> rows) -> coding.py (rows -> integer codes) -> statistics.py
(means and intervals: intervals.py, with eval-image resampling in bootstrap.py) -> tables/
(flagged tables, one module each) -> render.py (table / csv / json) or markdown.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from analysis.cli import add_store_arguments
from analysis.coding import code_rows
from analysis.definitions import (
    DEFAULT_TAUS,
    PAIRED_TABLES,
    AnalysisInputError,
    RegimeTables,
    check_paired_verdicts,
    check_taus,
)
from analysis.intervals import check_confidence
from analysis.loading import load_results
from analysis.markdown import MARKDOWN_COLUMNS, markdown_document
from analysis.render import FORMATS, render
from analysis.statistics import statistics
from analysis.tables import flagged_tables
from sweep.core.arguments import ArgumentParser, add_renamed_flag
from sweep.core.atomic import atomic_write
from sweep.core.errors import cli_main

__all__ = ["AnalysisInputError", "RegimeTables", "build_parser", "main", "regime_table"]
MARKDOWN = "markdown"


def regime_table(
    frame: pd.DataFrame,
    tau: float | str | Sequence[float] = DEFAULT_TAUS,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> RegimeTables:
    """Reduce a result frame (read_results with at least COLUMNS) to the regime tables, with
    boundaries, regimes and bands for every τ in `tau` (one value, a list, or '0.5,0.7')."""
    taus = check_taus(tau)
    confidence = check_confidence(confidence)
    if frame.empty:
        raise AnalysisInputError("the result table has no rows")
    coded = code_rows(frame)
    stats = statistics(coded, taus, resamples, confidence, seed)
    return RegimeTables(
        taus=taus,
        confidence=confidence,
        resamples=resamples,
        **flagged_tables(coded, stats, taus),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m analysis.regimes",
        description=(
            "Reduce a prune-sweep result store to regime boundaries. Normalised accuracy "
            "r = (top1 - chance) / (dense_top1 - chance), with the dense top-1 of the row's own "
            "replicate; a repair variant recovers at a sparsity when its mean r over replicates "
            "and calibration seeds is >= tau. Prints, per (dataset, arch, allocation) and tau, "
            "where each repair variant's r crosses tau (interpolated, with the bracketing grid "
            "points and a t-interval whose variance adds the replicates' spread and the shared "
            "eval images' noise), the regime of every grid sparsity (intact, bn_recoverable, "
            "repair_sensitive, collapsed, or unknown when a repair is missing), the "
            "repair-sensitive band, LAMP - ERK per sparsity and every pair of repair variants "
            "(a winner only where the paired interval excludes 0, not both arms are at "
            "chance, and at least 2 replicates have both arms). Anything excluded or missing "
            "is named in a flags column; damaged files in the store are skipped and named on "
            "stderr."
        ),
    )
    add_store_arguments(parser)
    parser.add_argument(
        "--format",
        choices=(*FORMATS, MARKDOWN),
        default="table",
        help="table: overview for a terminal; csv: one table (--table, default regimes); "
        "json: every table (or --table) with flags as lists; markdown: the complete results "
        "document of the store (provenance, top-1 per sparsity x allocation x repair variant "
        "with intervals, boundaries, regimes)",
    )
    parser.add_argument(
        "--table",
        choices=RegimeTables.TABLES,
        help="print only this table (not with markdown): summary (band per dataset/arch/"
        "allocation/tau), boundaries, regimes (one row per tau and grid sparsity), comparison "
        "(LAMP - ERK), repairs (variant b - variant a), curves (mean r and top-1 per point)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write to this file instead of stdout (atomically); with markdown, hand-written "
        "notes below the notes marker of an existing file are kept",
    )
    add_renamed_flag(parser, "--out", "--output")
    return parser


def regenerate_command(args: argparse.Namespace) -> str:
    """The command line that writes the same document again (recorded in the document)."""
    parts = ["python", "-m", "analysis.regimes", str(args.results), "--format", args.format]
    taus = check_taus(args.tau)
    if taus != DEFAULT_TAUS:
        parts += ["--tau", ",".join(f"{t:g}" for t in taus)]
    confidence = check_confidence(args.confidence)
    if confidence != DEFAULT_CONFIDENCE:
        parts += ["--confidence", f"{confidence:g}"]
    for variant in args.repair:
        parts += ["--repair", variant]
    if args.output is not None:
        parts += ["--output", str(args.output)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> None:
    taus = check_taus(args.tau)
    confidence = check_confidence(args.confidence)
    if args.format == MARKDOWN and args.table:
        raise AnalysisInputError("--table selects one table of table/csv/json; markdown has all")
    extra = MARKDOWN_COLUMNS if args.format == MARKDOWN else ()
    results = load_results(args.results, extra, args.repair)
    if args.table in PAIRED_TABLES:
        check_paired_verdicts(results.frame)
    tables = regime_table(results.frame, taus, confidence=confidence)
    if args.format == MARKDOWN:
        text = markdown_document(results, tables, regenerate_command(args))
    else:
        text = render(tables, args.format, args.table)
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write(args.output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"wrote {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
