"""The HTML report: one self-contained file, valid figures built from aggregates, provenance,
and clear errors on bad input. (Rendering in a real browser: test_report_browser.py.)"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs
from synthetic_store import (
    DAMAGE_KINDS,
    SyntheticGrid,
    damage,
    layer_names,
    make_row,
    unusable_store,
)

from analysis import figures
from analysis.layers import read_layer_densities
from analysis.loading import load_results
from analysis.regimes import AnalysisInputError, regime_table
from analysis.report import (
    EXTRA_COLUMNS,
    choose_density_sparsity,
    default_output,
    main,
    write_report,
)
from analysis.sections import fidelity_points
from sweep.results.store import open_store

REPO = Path(__file__).resolve().parents[1]
GRID = SyntheticGrid(
    datasets=("cifar10", "cifar100"),
    archs=("resnet20",),
    allocations=("erk", "lamp"),
    sparsities=(0.9, 0.92, 0.94, 0.96),
    repairs=("none", "bn_recal", "channel_var_shrink"),
    seeds=3,
    error_rate=0.05,
    replicates=3,  # winners need replicates: a single one names none
)
PLOT_DIV = re.compile(r'<div id="[^"]+" class="plotly-graph-div"')


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "results"
    GRID.write(root)
    return root


@pytest.fixture(scope="module")
def report(store: Path) -> str:
    return write_report(store, store.parent / "report.html").read_text(encoding="utf-8")


def test_report_is_one_self_contained_page(report):
    plotly_js = get_plotlyjs()
    assert report.count(plotly_js[:120]) == 1  # plotly.js inlined exactly once
    page = report.replace(plotly_js, "")  # the bundle itself names a CDN for geo maps only
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)
    assert "https://" not in page
    assert len(PLOT_DIV.findall(report)) == 6
    anchors = ("regime-map", "accuracy", "lamp-erk", "tau", "repairs", "density", "fidelity")
    for anchor in (*anchors, "provenance"):
        assert f'<section id="{anchor}">' in report
    assert len(report.encode()) < 10e6


def test_provenance_counts_trials_and_failures(store, report):
    frame = load_results(store).frame
    failed = int((frame["status"] != "ok").sum())
    assert failed > 0
    assert f"{len(frame)} ({len(frame) - failed} ok, {failed} failed)" in report
    assert "RuntimeError: synthetic failure" in report
    for label in ("grid", "torch (trials)", "ray (trials)", "report environment", "plotly"):
        assert label in report


@pytest.fixture(scope="module")
def parts(store):
    results = load_results(store, EXTRA_COLUMNS)
    return results, regime_table(results.frame)


def test_every_figure_is_valid_plotly(parts):
    results, tables = parts
    built = [
        figures.regime_map(tables),
        figures.accuracy_panels(tables),
        figures.difference_map(tables),
        figures.boundary_against_tau(tables),
        figures.layer_density_lines(read_layer_densities(results.scan, 0.92), 0.92),
        figures.fidelity_scatter(fidelity_points(results.frame)),
    ]
    for fig in built:
        go.Figure(fig)  # raises on any unknown or ill-typed property


def test_regime_map_has_a_cell_per_grid_point_and_boundary_markers(parts):
    _, tables = parts
    fig = figures.regime_map(tables)
    heatmap, markers = fig["data"][0], fig["data"][1:]
    assert len(heatmap["y"]) == 4  # (dataset, arch, allocation) rows
    assert heatmap["x"] == list(GRID.sparsities)
    assert all(len(row) == 4 for row in heatmap["z"])
    first = tables.boundaries[tables.boundaries["tau"] == tables.taus[0]]
    assert sum(len(trace["x"]) for trace in markers) == first["boundary"].notna().sum()


def test_accuracy_panels_band_and_line_per_repair_and_regime_shading(parts):
    _, tables = parts
    fig = figures.accuracy_panels(tables)
    panels = 2 * 2  # (dataset, arch) rows x allocations
    assert len(fig["data"]) == panels * 3 * 2  # band + mean line per repair
    shapes = fig["layout"]["shapes"]
    assert sum(s["type"] == "line" for s in shapes) == panels  # the tau line
    assert all(
        s["fillcolor"] in figures.REGIME_COLOURS.values() for s in shapes if s["type"] == "rect"
    )
    # Trace points are aggregates: never more than one per grid sparsity.
    assert max(len(t["x"]) for t in fig["data"] if t.get("mode")) <= len(GRID.sparsities)


def test_boundary_against_tau_has_a_panel_per_allocation_and_a_line_per_variant(parts):
    _, tables = parts
    fig = figures.boundary_against_tau(tables)
    panels = 2 * 2  # (dataset, arch) x allocation
    assert len(fig["data"]) == panels * 3  # one line per repair variant
    assert sum(1 for key in fig["layout"] if key.startswith("xaxis")) == panels
    for trace in fig["data"]:
        assert trace["x"] == [0.5, 0.7, 0.9]  # every default tau, one boundary each
        shown = [
            (y, up, down) for y, up, down in zip(trace["y"], *_errors(trace), strict=True) if y
        ]
        assert all(up >= 0 and down >= 0 for _, up, down in shown)


def _errors(trace: dict) -> tuple[list, list]:
    return trace["error_y"]["array"], trace["error_y"]["arrayminus"]


def test_difference_map_greys_cells_at_chance_and_explains_every_mark(parts):
    _, tables = parts
    fig = figures.difference_map(tables)
    heatmap, chance, *legend = fig["data"]
    comparison = tables.comparison
    winners = set(comparison["winner"])
    assert {"both at chance", "no winner"} <= winners  # the synthetic grid has both kinds
    # Cells at chance carry no colour of a difference, only the grey layer and the letter 0.
    for y, row in enumerate(heatmap["text"]):
        for x, letter in enumerate(row):
            at_chance = letter == figures.WINNER_MARKS["both at chance"][0]
            assert (heatmap["z"][y][x] is None) == (at_chance or letter == "")
            assert (chance["z"][y][x] is not None) == at_chance
    assert [t["name"] for t in legend] == [text for _, text in figures.WINNER_MARKS.values()]


def test_layer_densities_read_one_row_per_allocation(store):
    profiles = read_layer_densities(open_store(store), 0.94)
    per_curve = profiles.groupby(["dataset", "arch", "allocation"]).size()
    assert len(per_curve) == 4 and (per_curve == len(layer_names("resnet20"))).all()
    assert profiles["density"].between(0, 1).all()


def test_density_sparsity_defaults_to_the_middle_and_must_be_on_the_grid():
    assert choose_density_sparsity([0.9, 0.92, 0.94, 0.96], None) == 0.92
    assert choose_density_sparsity([0.9, 0.92], 0.9200000001) == 0.92
    with pytest.raises(AnalysisInputError, match="0.9, 0.92"):
        choose_density_sparsity([0.9, 0.92], 0.91)


def test_without_lamp_there_is_no_difference_map(tmp_path):
    root = tmp_path / "erk-only"
    SyntheticGrid(datasets=("cifar10",), archs=("resnet20",), allocations=("erk",), seeds=2).write(
        root
    )
    page = write_report(root, tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(PLOT_DIV.findall(page)) == 5 and 'id="lamp-erk"' not in page


def test_cli_writes_next_to_the_store_by_default(store, capsys):
    assert main([str(store), "--tau", "0.6", "--density-sparsity", "0.94"]) == 0
    expected = default_output(store)
    assert expected.parent == store.resolve().parent and expected.exists()
    assert str(expected) in capsys.readouterr().out


# (store kind or None for the good store, extra arguments, what the one line must say)
BAD_INPUTS = [
    ("missing", [], "does not exist"),
    ("empty", [], "no Parquet files"),
    ("foreign", [], "not a prune-sweep result store"),
    ("only_errors", [], "has no ok rows"),
    ("key_schema_1", [], "upgrade it with python -m sweep.upgrade"),
    (None, ["--tau", "0"], "tau 0 is outside (0, 1)"),
    (None, ["--tau", "0.5,abc"], "tau 'abc' is not a number"),
    (None, ["--density-sparsity", "0.5"], "not a grid point"),
    (None, ["--density-sparsity", "half"], "invalid float value: 'half'"),
    (None, ["--repair", "layer_var"], "unknown repair variant 'layer_var'"),
    (None, ["--confidence", "1"], "confidence 1 is outside (0.5, 1)"),
    ("dense_missing", [], "have per-image results but no dense_correct"),
    ("dense_differs", [], "carry 2 different dense_correct"),
    ("dense_count", [], "the per-image results do not match the rows"),
    ("dense_length", [], "the per-image results do not match the rows"),
]


@pytest.mark.parametrize(("kind", "extra", "message"), BAD_INPUTS)
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, store, capsys, kind, extra, message):
    root = (
        store
        if kind is None
        else unusable_store(tmp_path, kind, [make_row(sparsity=s) for s in GRID.sparsities])
    )
    out = tmp_path / "r.html"
    assert main([str(root), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not out.exists()


def test_cli_refuses_an_output_inside_the_store(store, capsys):
    assert main([str(store), "-o", str(store / "report.html")]) == 2
    assert "inside the result store" in capsys.readouterr().err
    assert not (store / "report.html").exists()


def test_two_variants_of_one_method_are_two_curves_in_every_figure(tmp_path):
    root = tmp_path / "variants"
    shrink_half = ("channel_var_shrink", {"tau": 0.5})
    grid = SyntheticGrid(
        datasets=("cifar10",),
        archs=("resnet20",),
        sparsities=(0.9, 0.92, 0.94, 0.96),
        repairs=("none", "bn_recal", "channel_var_shrink", shrink_half),
        seeds=2,
    )
    grid.write(root)
    results = load_results(root, EXTRA_COLUMNS)
    tables = regime_table(results.frame)
    variants = ["none", "bn_recal", "channel_var_shrink", "channel_var_shrink[tau=0.5]"]
    lines = [t for t in figures.accuracy_panels(tables)["data"] if t.get("mode")]
    assert [t["name"] for t in lines] == variants * 2  # per allocation panel
    assert [t["line"].get("dash") for t in lines[:4]] == [None, None, None, "dot"]
    fidelity = figures.fidelity_scatter(fidelity_points(results.frame))["data"]
    assert [t["name"] for t in fidelity] == variants
    hover = figures.regime_map(tables)["data"][0]["customdata"][0][0]
    assert all(f"r {name} = " in hover for name in variants)
    page = write_report(root, tmp_path / "variants.html").read_text(encoding="utf-8")
    assert "none, bn_recal, channel_var_shrink, channel_var_shrink[tau=0.5]" in page


def test_damaged_files_are_skipped_named_on_stderr_and_in_the_provenance(tmp_path):
    root = tmp_path / "damaged"
    SyntheticGrid(datasets=("cifar10",), archs=("resnet20",), seeds=2).write(root)
    bad = [damage(root, kind) for kind in DAMAGE_KINDS]
    out = tmp_path / "damaged.html"
    result = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(root), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    skipped = result.stderr.splitlines()
    assert sorted(line.split(": ")[0] for line in skipped) == sorted(
        f"skipped damaged file {path}" for path in bad
    )
    page = out.read_text(encoding="utf-8")
    provenance = page[page.index('<section id="provenance">') :]
    assert "<th>skipped damaged files</th>" in provenance
    for path in bad:
        assert html.escape(str(path)) in provenance
    assert "not a Parquet file (" in provenance and "truncated or corrupt Parquet" in provenance


def test_module_runs_as_a_program(store, tmp_path):
    out = tmp_path / "cli.html"
    result = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(store), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.exists() and str(out) in result.stdout
