"""`python -m analysis.report RESULTS`: one self-contained HTML page of the sweep's regimes.

Why one file with plotly.js inlined once: the report must open anywhere, offline, and be mailed
or archived as a single artefact. Every figure is drawn from aggregated tables (figures.py), so
the page stays a few MB whatever the number of trials.
"""

from __future__ import annotations

import argparse
import html
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis import figures
from analysis.bootstrap import DEFAULT_CONFIDENCE
from analysis.cli import add_store_arguments
from analysis.definitions import (
    ALLOCATION_ORDER,
    DEFAULT_TAUS,
    PAIR,
    AnalysisInputError,
    RegimeTables,
    check_taus,
)
from analysis.intervals import check_confidence
from analysis.layers import density_profiles
from analysis.loading import Results, load_results
from analysis.markdown import interval_text
from analysis.regimes import regime_table
from sweep.core.arguments import ArgumentParser
from sweep.core.atomic import atomic_write
from sweep.core.errors import cli_main
from sweep.results.schema import STATUS_OK

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
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
POINT = [*PAIR, "allocation", "repair_variant", "sparsity"]
REPAIR_VERDICT = ("allocation", "sparsity", "variant_a", "variant_b", "diff", "diff_lo", "diff_hi")
REPAIR_VERDICT += ("winner", "replicate_agreement")


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


def fidelity_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean agreement and top-1 per grid point (ok rows only): the scatter's points."""
    ok = frame[(frame["status"] == STATUS_OK) & frame["agreement"].notna() & frame["top1"].notna()]
    points = ok.groupby(POINT, sort=False, observed=True)[["agreement", "top1"]].mean()
    return points.reset_index()


def _versions() -> str:
    def known(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    names = ("numpy", "pandas", "pyarrow", "plotly", "prune-sweep")
    return ", ".join([f"python {platform.python_version()}", *map(known, names)])


def _values(frame: pd.DataFrame, column: str) -> str:
    values = frame[column].dropna().unique()
    return ", ".join(sorted(map(str, values))) or "n/a"


def provenance(
    results: Results, tables: RegimeTables, density_sparsity: float
) -> list[tuple[str, str]]:
    """What the report was made from: grid, trials, failures, skipped files, versions, dates."""
    frame = results.frame
    ok = frame["status"] == STATUS_OK
    errors = frame.loc[~ok, "error"].fillna("(no message)").value_counts().head(5)
    failures = "; ".join(f"{count} × {message}" for message, count in errors.items())
    finished = frame["finished_at"].dropna()
    grid = sorted(tables.curves["sparsity"].unique())
    return [
        ("result store", str(results.root.resolve())),
        (
            "skipped damaged files",
            "; ".join(f"{path}: {reason}" for path, reason in results.skipped) or "none",
        ),
        ("report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("grid", _values(frame, "grid")),
        ("trials", f"{len(frame)} ({int(ok.sum())} ok, {int((~ok).sum())} failed)"),
        ("failures (most common)", failures or "none"),
        ("datasets", _values(frame, "dataset")),
        ("architectures", _values(frame, "arch")),
        ("allocations", _values(frame, "allocation")),
        ("repair variants", ", ".join(dict.fromkeys(tables.curves["repair_variant"]))),
        ("sparsities", ", ".join(f"{s:g}" for s in grid)),
        ("seeds per point (max)", str(int(tables.curves["seeds"].max()))),
        ("replicates per point (max)", str(int(tables.curves["replicates"].max()))),
        ("dense checkpoints", str(frame["checkpoint_sha256"].nunique())),
        ("eval split", _values(frame, "eval_split")),
        ("eval precision", _values(frame, "eval_precision")),
        (
            "trials finished",
            f"{finished.min():%Y-%m-%d %H:%M} to {finished.max():%Y-%m-%d %H:%M} UTC"
            if len(finished)
            else "n/a",
        ),
        ("tau", ", ".join(f"{t:g}" for t in tables.taus)),
        ("intervals", interval_text(tables)),
        ("density profile sparsity", f"{density_sparsity:g}"),
        ("torch (trials)", _values(frame, "torch_version")),
        ("torchvision (trials)", _values(frame, "torchvision_version")),
        ("ray (trials)", _values(frame, "ray_version")),
        ("prune-sweep (trials)", _values(frame, "prune_sweep_version")),
        ("report environment", _versions()),
    ]


def _table_html(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for column in shown.select_dtypes("float").columns:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    table = shown.to_html(index=False, escape=True, border=0, classes="data", na_rep="")
    return f'<div class="wide">{table}</div>'


def _figure_html(fig, div_id: str) -> str:
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        config=PLOT_CONFIG,
        div_id=div_id,
        default_width="100%",
        validate=False,
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 2rem 3rem; color: #222; }
h1 { margin-top: 1.5rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
p.how { max-width: 60rem; color: #444; }
table.data { border-collapse: collapse; font-size: 0.8rem; }
table.data td, table.data th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
div.wide { overflow-x: auto; } table.data td:last-child { min-width: 20rem; }
table.prov th { text-align: left; padding-right: 1.5rem; vertical-align: top; }
details { margin: 0.5rem 0; } nav a { margin-right: 1rem; }
"""


def render_page(sections: list[tuple[str, str, str, str]]) -> str:
    """sections: (anchor, title, explanation, body html) -> the whole page, plotly.js inlined."""
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _, _ in sections)
    body = "\n".join(
        f'<section id="{a}"><h2>{html.escape(t)}</h2><p class="how">{html.escape(how)}</p>\n'
        f"{content}</section>"
        for a, t, how, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>prune-sweep regime report</title>"
        f"<style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body>'
        "<h1>prune-sweep: recoverable-regime report</h1>"
        f"<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def build_sections(
    results: Results, tables: RegimeTables, density_sparsity: float
) -> list[tuple[str, str, str, str]]:
    tau = f"{tables.tau:g}"
    chance_rule = (
        "both arms at chance: the lower end of each arm's top-1 interval is at or below chance "
        "(1 / classes; the interval already holds the eval images' noise)"
    )
    profiles = density_profiles(results.scan, density_sparsity)
    order = {name: i for i, name in enumerate(ALLOCATION_ORDER)}
    profiles = profiles.sort_values(
        [*PAIR, "allocation", "layer"], key=lambda c: c.map(order) if c.name == "allocation" else c
    )
    sections = [
        (
            "regime-map",
            "Regime map",
            f"Each cell is one (dataset, arch, allocation) at one sparsity; colour = regime with "
            f"tau = {tau}: intact (no repair needed), bn_recoverable (BN recalibration recovers), "
            "repair_sensitive (only a repair beyond BN recalibration recovers: activation "
            "statistics or weight reconstruction), collapsed (nothing "
            "does), unknown (a missing repair could change it). Markers: where each repair's mean "
            "r crosses tau, with its interval. Other taus: the summary table and the "
            "boundary against tau panel. Hover for the numbers.",
            _figure_html(figures.regime_map(tables), "regime-map-plot"),
        ),
        (
            "summary",
            "Repair-sensitive band",
            "Per (dataset, arch, allocation, tau): boundaries in sparsity, the band from where BN "
            "recalibration fails to where the best activation-statistic repair fails with the "
            "interval of each end and of its width, where weight reconstruction "
            "(obs_reconstruct, adaprune) fails and how much of the band lies beyond it, and "
            "flags.",
            _table_html(tables.summary),
        ),
        (
            "accuracy",
            "Accuracy against sparsity",
            "Mean top-1 over replicates and calibration seeds per repair variant with its "
            "interval (dotted: a method's non-default variant); "
            f"background = regime at tau = {tau}; dashed line = the top-1 at which r = {tau} "
            "(at the replicates' mean dense top-1).",
            _figure_html(figures.accuracy_panels(tables), "accuracy-plot"),
        ),
    ]
    if not tables.comparison.empty:
        sections.append(
            (
                "lamp-erk",
                "LAMP − ERK",
                "Difference in mean r, paired: the same replicates left out and the same eval "
                "images resampled for both arms. Blue: LAMP better, red: ERK better. A winner "
                "(L / E) is named only where the interval excludes 0; = no winner (the "
                f"interval contains 0); grey 0: {chance_rule}; 1: fewer than 2 replicates have "
                "both arms (no winner named). Hover for the interval and the "
                "fraction of replicates whose own difference has the same sign.",
                _figure_html(figures.difference_map(tables), "lamp-erk-plot"),
            )
        )
    sections.append(
        (
            "tau",
            "Boundary against tau",
            "Where each repair variant's mean r first falls below tau, for every tau analysed, "
            "with its interval; one panel per (dataset, arch, allocation).",
            _figure_html(figures.boundary_against_tau(tables), "tau-plot"),
        )
    )
    # The full table (with r of each arm and flags) is in the regime CLI's output; here the
    # verdicts only, which keeps a large sweep's page within its size budget.
    repairs = tables.repairs[[*PAIR, *REPAIR_VERDICT]]
    if not repairs.empty:
        sections.append(
            (
                "repairs",
                "Repair against repair",
                "variant_b - variant_a in mean r per (dataset, arch, allocation, sparsity), "
                f"paired like LAMP - ERK; a winner only outside the noise ({chance_rule}: "
                "no winner either; nor with fewer than 2 replicates).",
                f"<details><summary>{len(repairs)} comparisons</summary>"
                f"{_table_html(repairs)}</details>",
            )
        )
    if not profiles.empty:
        sections.append(
            (
                "density",
                "Per-layer density",
                f"Kept fraction of each prunable layer at sparsity {density_sparsity:g}.",
                _figure_html(figures.density_profiles(profiles, density_sparsity), "density-plot"),
            )
        )
    points = fidelity_points(results.frame)
    if not points.empty:
        sections.append(
            (
                "fidelity",
                "Label-free fidelity against top-1",
                "One point per grid point (means over seeds). Agreement with the dense model "
                "needs no labels: the tighter the relation, the better a user without labels "
                "can judge recovery.",
                _figure_html(figures.fidelity_scatter(points), "fidelity-plot"),
            )
        )
    boundaries = tables.boundaries
    sections.append(
        (
            "boundaries",
            "Boundaries",
            "Where each repair variant's mean r crosses each tau, with the bracketing grid points, "
            "the interval and flags.",
            f"<details><summary>{len(boundaries)} boundaries</summary>"
            f"{_table_html(boundaries)}</details>",
        )
    )
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in provenance(results, tables, density_sparsity)
    )
    sections.append(("provenance", "Provenance", "", f'<table class="prov">{rows}</table>'))
    return sections


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
