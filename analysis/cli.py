"""Arguments shared by the analysis CLIs, and a parser whose usage errors are one line.

Why: a bad --format or a missing store must read like every other bad input of the project
(`error: …` on one line, exit 2; sweep.core.errors.cli_main), not like argparse's usage dump.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.bootstrap import DEFAULT_CONFIDENCE
from analysis.definitions import DEFAULT_TAUS


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """RESULTS, --tau, --repair and --confidence: what every analysis CLI reads, how it selects
    rows and how wide its intervals are."""
    parser.add_argument(
        "results", metavar="STORE", type=Path, help="result store directory (Parquet, hive)"
    )
    parser.add_argument(
        "--tau",
        default=",".join(f"{t:g}" for t in DEFAULT_TAUS),
        metavar="TAUS",
        help="recovery thresholds on r, comma-separated, each in (0, 1); boundaries and regimes "
        "are given for each (default: %(default)s; the first is the one the regime map shows)",
    )
    parser.add_argument(
        "--repair",
        action="append",
        default=[],
        metavar="VARIANT",
        help="analyse only this repair variant (repeatable; a variant is the method plus its "
        "non-default parameters, e.g. bn_recal or 'channel_var_shrink[tau=0.5]'); "
        "default: every variant in the store",
    )
    parser.add_argument(
        "--confidence",
        default=DEFAULT_CONFIDENCE,
        type=str,
        metavar="LEVEL",
        help="confidence level of every interval, in (0.5, 1) (default: %(default)s)",
    )
