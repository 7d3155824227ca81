"""`python -m analysis.report RESULTS`: one self-contained HTML page of the sweep's regimes.

Why one file with plotly.js inlined once: the report must open anywhere, offline, and be mailed
or archived as a single artefact. The steps: the regime tables (regimes.py), the page's sections
(sections.py: figures, tables and provenance.py's facts), and the HTML around them (page.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.bootstrap import DEFAULT_CONFIDENCE
from analysis.cli import add_store_arguments
from analysis.definitions import DEFAULT_TAUS, AnalysisInputError, check_taus
from analysis.intervals import check_confidence
from analysis.loading import load_results
from analysis.page import render_page
from analysis.regimes import regime_table
from analysis.sections import build_sections
from sweep.core.arguments import ArgumentParser
from sweep.core.atomic import atomic_write
from sweep.core.errors import cli_main

EXTRA_COLUMNS = (
    "agreement",
    "grid",
    "error",
    "checkpoint_sha256",
    "torch_version",
    "torchvision_version",
    "ray_version",
    "prune_sweep_version",
    "finished_at",
)


def default_output(results: Path | str) -> Path:
    """Next to the store, never inside it (the store reads every file under its root)."""
    root = Path(results).resolve()
    return root.with_name(f"{root.name}-report.html")


def _check_output(results: Path, out: Path) -> None:
    if out.resolve().is_relative_to(results.resolve()):
        raise AnalysisInputError(
            f"output {str(out)!r} is inside the result store {str(results)!r}, which would then "
            "fail to read; write the report elsewhere (default: next to the store)"
        )


def choose_density_sparsity(grid: Sequence[float], wanted: float | None) -> float:
    """The requested sparsity if the grid has it, else the middle of the grid."""
    grid = sorted(set(grid))
    if wanted is None:
        return grid[(len(grid) - 1) // 2]
    for s in grid:
        if abs(s - wanted) < 1e-6:
            return s
    raise AnalysisInputError(
        f"density sparsity {wanted!r} is not a grid point; expected one of: "
        + ", ".join(f"{s:g}" for s in grid)
    )


def write_report(
    results_path: Path | str,
    out_path: Path | str | None = None,
    tau: float | str | Sequence[float] = DEFAULT_TAUS,
    density_sparsity: float | None = None,
    repairs: Sequence[str] = (),
    confidence: float | str = DEFAULT_CONFIDENCE,
) -> Path:
    """Read the store (only the `repairs` variants if given), analyse it for every τ in `tau`
    with intervals at `confidence`, and write the HTML report; returns the report's path."""
    root = Path(results_path)
    out = Path(out_path) if out_path is not None else default_output(root)
    taus = check_taus(tau)
    confidence = check_confidence(confidence)
    _check_output(root, out)
    results = load_results(root, EXTRA_COLUMNS, repairs)
    tables = regime_table(results.frame, taus, confidence=confidence)
    sparsity = choose_density_sparsity(tables.curves["sparsity"], density_sparsity)
    page = render_page(build_sections(results, tables, sparsity))
    return atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m analysis.report",
        description=(
            "Write one self-contained HTML report (plotly.js inlined, opens offline) of a "
            "prune-sweep result store: regime map, accuracy against sparsity per repair variant "
            "with interval bands and regime shading, LAMP - ERK map (winners only "
            "outside the noise), boundary against tau, repair against repair, per-layer density "
            "profiles, agreement against top-1, and provenance (damaged files in the store are "
            "skipped, named on stderr and listed there)."
        ),
    )
    add_store_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="report path (default: RESULTS-report.html next to the store directory)",
    )
    parser.add_argument(
        "--density-sparsity",
        type=float,
        help="grid sparsity of the per-layer density profiles (default: middle of the grid)",
    )
    return parser


def run(args: argparse.Namespace) -> None:
    path = write_report(
        args.results, args.output, args.tau, args.density_sparsity, args.repair, args.confidence
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
