"""The report's sections, in page order: what each shows, how to read it, and its figure or table.

Every figure is drawn from the aggregated tables (figures.py), so the page stays a few MB
whatever the number of trials; a section without data (no LAMP and ERK, no per-layer densities)
is left out.
"""

from __future__ import annotations

import html

import pandas as pd

from analysis import figures
from analysis.definitions import ALLOCATION_ORDER, PAIR, RegimeTables
from analysis.layers import read_layer_densities
from analysis.loading import Results
from analysis.page import Section, figure_html, table_html
from analysis.provenance import report_provenance
from sweep.results.schema import STATUS_OK

POINT = [*PAIR, "allocation", "repair_variant", "sparsity"]
REPAIR_VERDICT = ("allocation", "sparsity", "variant_a", "variant_b", "diff", "diff_lo", "diff_hi")
REPAIR_VERDICT += ("winner", "replicate_agreement")
CHANCE_RULE = (
    "both arms at chance: the lower end of each arm's top-1 interval is at or below chance "
    "(1 / classes; the interval already holds the eval images' noise)"
)


def build_sections(
    results: Results, tables: RegimeTables, density_sparsity: float
) -> list[Section]:
    """Every section the store has data for, in page order, provenance last."""
    sections = [
        _regime_map(tables),
        _summary(tables),
        _accuracy(tables),
        _lamp_erk(tables),
        _boundary_against_tau(tables),
        _repairs(tables),
        _layer_density(results, density_sparsity),
        _fidelity(results),
        _boundaries(tables),
        _provenance(results, tables, density_sparsity),
    ]
    return [section for section in sections if section is not None]


def fidelity_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean agreement and top-1 per grid point (ok rows only): the scatter's points."""
    ok = frame[(frame["status"] == STATUS_OK) & frame["agreement"].notna() & frame["top1"].notna()]
    points = ok.groupby(POINT, sort=False, observed=True)[["agreement", "top1"]].mean()
    return points.reset_index()


def _regime_map(tables: RegimeTables) -> Section:
    return (
        "regime-map",
        "Regime map",
        f"Each cell is one (dataset, arch, allocation) at one sparsity; colour = regime with "
        f"tau = {tables.tau:g}: intact (no repair needed), bn_recoverable (BN recalibration "
        "recovers), repair_sensitive (only a repair beyond BN recalibration recovers: activation "
        "statistics or weight reconstruction), collapsed (nothing "
        "does), unknown (a missing repair could change it). Markers: where each repair's mean "
        "r crosses tau, with its interval. Other taus: the summary table and the "
        "boundary against tau panel. Hover for the numbers.",
        figure_html(figures.regime_map(tables), "regime-map-plot"),
    )


def _summary(tables: RegimeTables) -> Section:
    return (
        "summary",
        "Repair-sensitive band",
        "Per (dataset, arch, allocation, tau): boundaries in sparsity, the band from where BN "
        "recalibration fails to where the best activation-statistic repair fails with the "
        "interval of each end and of its width, where weight reconstruction "
        "(obs_reconstruct, adaprune) fails and how much of the band lies beyond it, and "
        "flags.",
        table_html(tables.summary),
    )


def _accuracy(tables: RegimeTables) -> Section:
    tau = f"{tables.tau:g}"
    return (
        "accuracy",
        "Accuracy against sparsity",
        "Mean top-1 over replicates and calibration seeds per repair variant with its "
        "interval (dotted: a method's non-default variant); "
        f"background = regime at tau = {tau}; dashed line = the top-1 at which r = {tau} "
        "(at the replicates' mean dense top-1).",
        figure_html(figures.accuracy_panels(tables), "accuracy-plot"),
    )


def _lamp_erk(tables: RegimeTables) -> Section | None:
    if tables.comparison.empty:
        return None
    return (
        "lamp-erk",
        "LAMP − ERK",
        "Difference in mean r, paired: the same replicates left out and the same eval "
        "images resampled for both arms. Blue: LAMP better, red: ERK better. A winner "
        "(L / E) is named only where the interval excludes 0; = no winner (the "
        f"interval contains 0); grey 0: {CHANCE_RULE}; 1: fewer than 2 replicates have "
        "both arms (no winner named). Hover for the interval and the "
        "fraction of replicates whose own difference has the same sign.",
        figure_html(figures.difference_map(tables), "lamp-erk-plot"),
    )


def _boundary_against_tau(tables: RegimeTables) -> Section:
    return (
        "tau",
        "Boundary against tau",
        "Where each repair variant's mean r first falls below tau, for every tau analysed, "
        "with its interval; one panel per (dataset, arch, allocation).",
        figure_html(figures.boundary_against_tau(tables), "tau-plot"),
    )


def _repairs(tables: RegimeTables) -> Section | None:
    # The full table (with r of each arm and flags) is in the regime CLI's output; here the
    # verdicts only, which keeps a large sweep's page within its size budget.
    repairs = tables.repairs[[*PAIR, *REPAIR_VERDICT]]
    if repairs.empty:
        return None
    return (
        "repairs",
        "Repair against repair",
        "variant_b - variant_a in mean r per (dataset, arch, allocation, sparsity), "
        f"paired like LAMP - ERK; a winner only outside the noise ({CHANCE_RULE}: "
        "no winner either; nor with fewer than 2 replicates).",
        f"<details><summary>{len(repairs)} comparisons</summary>{table_html(repairs)}</details>",
    )


def _layer_density(results: Results, density_sparsity: float) -> Section | None:
    profiles = read_layer_densities(results.scan, density_sparsity)
    if profiles.empty:
        return None
    order = {name: i for i, name in enumerate(ALLOCATION_ORDER)}
    profiles = profiles.sort_values(
        [*PAIR, "allocation", "layer"], key=lambda c: c.map(order) if c.name == "allocation" else c
    )
    return (
        "density",
        "Per-layer density",
        f"Kept fraction of each prunable layer at sparsity {density_sparsity:g}.",
        figure_html(figures.layer_density_lines(profiles, density_sparsity), "density-plot"),
    )


def _fidelity(results: Results) -> Section | None:
    points = fidelity_points(results.frame)
    if points.empty:
        return None
    return (
        "fidelity",
        "Label-free fidelity against top-1",
        "One point per grid point (means over seeds). Agreement with the dense model "
        "needs no labels: the tighter the relation, the better a user without labels "
        "can judge recovery.",
        figure_html(figures.fidelity_scatter(points), "fidelity-plot"),
    )


def _boundaries(tables: RegimeTables) -> Section:
    boundaries = tables.boundaries
    return (
        "boundaries",
        "Boundaries",
        "Where each repair variant's mean r crosses each tau, with the bracketing grid points, "
        "the interval and flags.",
        f"<details><summary>{len(boundaries)} boundaries</summary>"
        f"{table_html(boundaries)}</details>",
    )


def _provenance(results: Results, tables: RegimeTables, density_sparsity: float) -> Section:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in report_provenance(results, tables, density_sparsity)
    )
    return ("provenance", "Provenance", "", f'<table class="prov">{rows}</table>')
