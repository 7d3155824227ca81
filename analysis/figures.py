"""Plotly figures of the report, each built from an already aggregated table.

Why aggregated: the report must stay small and fast for a million-row store, so no figure ever
sees trial rows; every trace holds at most one point per grid sparsity (or per layer).
Why plain dicts: a sweep can have ~100 panels and ~1000 traces, and plotly's Python-side
validation of that many objects costs seconds; the tests validate every figure with
`plotly.graph_objects.Figure(fig)` on a small store instead.
Colours are shared: a regime has one colour in the map and in the shaded bands, a repair variant
one colour in every panel (a non-default variant also a dotted line, to tell it from its method's
default at a glance).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from plotly.subplots import make_subplots

from analysis.definitions import (
    BOTH_AT_CHANCE,
    NO_WINNER,
    PAIR,
    REGIMES,
    SINGLE_REPLICATE,
    RegimeTables,
)
from sweep.plan.variants import variant_method

REGIME_COLOURS = {
    "intact": "#2ca02c",
    "bn_recoverable": "#1f77b4",
    "repair_sensitive": "#ff7f0e",
    "collapsed": "#d62728",
    "unknown": "#bdbdbd",
}
# Repair and allocation colours stay clear of the regime colours they are drawn over.
REPAIR_PALETTE = (
    *("#333333", "#7570b3", "#1b9e77", "#e7298a", "#a6761d", "#66a61e", "#e6ab02"),
    *("#17becf", "#8c564b", "#bcbd22"),
)
ALLOCATION_PALETTE = ("#1f3b73", "#c51b7d", "#4d9221", "#8c510a", "#542788")
BOUNDARY_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star", "cross")
CHANCE_COLOUR = "#9e9e9e"
# Cell letters of the LAMP − ERK map, and what each means (its legend).
WINNER_MARKS = {
    "lamp": ("L", "L: LAMP better (interval excludes 0)"),
    "erk": ("E", "E: ERK better (interval excludes 0)"),
    NO_WINNER: ("=", "=: no winner (interval contains 0)"),
    BOTH_AT_CHANCE: ("0", "0, grey: both at chance (no winner named)"),
    SINGLE_REPLICATE: ("1", "1: single replicate with both arms (no winner named)"),
}
PANEL_HEIGHT = 250
DIGITS = 5
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}

Figure = dict  # {"data": [trace dicts], "layout": {...}}: what plotly.io.to_html accepts


def colours(names: Iterable[str], palette: tuple[str, ...]) -> dict[str, str]:
    return {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(names))}


def _label(*parts: object) -> str:
    return " / ".join(str(p) for p in parts)


def _num(value: float | None, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{fmt}}"


def _round(values: Iterable) -> list:
    """Rounded floats with NaN as None: smaller JSON, gaps where a point is missing."""
    return [None if v is None or math.isnan(v) else round(float(v), DIGITS) for v in values]


def _pivot(frame: pd.DataFrame, rows: list[str], values: str) -> pd.DataFrame:
    return frame.pivot_table(
        index=rows, columns="sparsity", values=values, aggfunc="first", sort=False, dropna=False
    )


def _flags(flags: str) -> str:
    return f"<br><i>{flags}</i>" if flags else ""


def _subplots(rows: int, cols: int, titles: list[str], **spacing: float) -> dict:
    """A subplot grid's layout (axis domains, titles) as a plain dict."""
    grid = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **spacing)
    return grid.layout.to_plotly_json()


def _axes(k: int) -> tuple[str, str]:
    """Trace axis references of the k-th subplot (1-based, row-major)."""
    return ("x", "y") if k == 1 else (f"x{k}", f"y{k}")


def _axis(kind: str, k: int) -> str:
    """Layout key of the k-th subplot's x or y axis."""
    return f"{kind}axis" if k == 1 else f"{kind}axis{k}"


def _title(layout: dict, axis: str, text: str) -> None:
    layout.setdefault(axis, {})["title"] = {"text": text}


def at_first_tau(frame: pd.DataFrame, tables: RegimeTables) -> pd.DataFrame:
    """The rows of a per-τ table that belong to the first τ (the one single-τ views show)."""
    return frame[frame["tau"] == tables.tau]


def regime_map(tables: RegimeTables) -> Figure:
    """Rows (dataset, arch, allocation), columns sparsity, colour = regime at the first τ;
    boundaries on top."""
    regimes, rows = at_first_tau(tables.regimes, tables), [*PAIR, "allocation"]
    variants = [c[2:] for c in regimes.columns if c.startswith("r_")]
    codes = regimes.assign(code=regimes["regime"].map({r: i for i, r in enumerate(REGIMES)}))
    z = _pivot(codes, rows, "code")
    markers = _boundary_markers(at_first_tau(tables.boundaries, tables), rows, variants)
    height = max(320, 28 * len(z) + 160)
    # A fixed range: marker padding would otherwise add empty rows above the map.
    yaxis = {"range": [len(z) - 0.5, -0.5], "type": "category", "automargin": True}
    return {
        "data": [_regime_heatmap(regimes, rows, variants, z), *markers],
        "layout": _map_layout(height, yaxis),
    }


def _regime_heatmap(
    regimes: pd.DataFrame, rows: list[str], variants: list[str], z: pd.DataFrame
) -> dict:
    """The map's cells: one colour per regime; hover: r of every variant and the flags."""
    hover = regimes.assign(
        hover=[
            f"<b>{rec['regime']}</b><br>"
            + "<br>".join(f"r {name} = {_num(rec['r_' + name])}" for name in variants)
            + _flags(rec["flags"])
            for rec in regimes.to_dict("records")
        ]
    )
    hover_grid = _pivot(hover, rows, "hover").reindex(index=z.index, columns=z.columns)
    steps = len(REGIMES)
    scale = []
    for i, regime in enumerate(REGIMES):
        scale += [[i / steps, REGIME_COLOURS[regime]], [(i + 1) / steps, REGIME_COLOURS[regime]]]
    return {
        "type": "heatmap",
        "z": [_round(row) for row in z.to_numpy(float)],
        "x": list(z.columns),
        "y": [_label(*key) for key in z.index],
        "customdata": hover_grid.fillna("").to_numpy().tolist(),
        "hovertemplate": "%{y}<br>sparsity %{x}<br>%{customdata}<extra></extra>",
        "colorscale": scale,
        "zmin": -0.5,
        "zmax": steps - 0.5,
        "xgap": 1,
        "ygap": 1,
        "colorbar": {
            "title": {"text": "regime"},
            "tickvals": list(range(steps)),
            "ticktext": list(REGIMES),
            "len": 0.6,
        },
    }


def _boundary_markers(boundaries: pd.DataFrame, rows: list[str], variants: list[str]) -> list[dict]:
    """One marker trace per variant with a boundary: where its mean r crosses τ, with the
    interval as error bars."""
    bounds = boundaries[boundaries["boundary"].notna()]
    traces = []
    for i, variant in enumerate(variants):
        own = bounds[bounds["repair_variant"] == variant]
        if not own.empty:
            symbol = BOUNDARY_SYMBOLS[i % len(BOUNDARY_SYMBOLS)]
            traces.append(_boundary_trace(own, rows, variant, symbol))
    return traces


def _boundary_trace(own: pd.DataFrame, rows: list[str], variant: str, symbol: str) -> dict:
    return {
        "type": "scatter",
        "x": _round(own["boundary"]),
        "y": [_label(*key) for key in own[rows].itertuples(index=False)],
        "mode": "markers",
        "name": f"boundary: {variant}",
        "marker": {
            "symbol": symbol,
            "size": 9,
            "color": "white",
            "line": {"color": "black", "width": 1.5},
        },
        "error_x": {
            "type": "data",
            "symmetric": False,
            "array": _round(own["ci_hi"] - own["boundary"]),
            "arrayminus": _round(own["boundary"] - own["ci_lo"]),
            "color": "black",
            "thickness": 1,
        },
        "customdata": [
            f"{rec['status']}; bracket {_num(rec['bracket_lo'], 'g')} to "
            f"{_num(rec['bracket_hi'], 'g')}; interval {_num(rec['ci_lo'], '.4f')} to "
            f"{_num(rec['ci_hi'], '.4f')}" + _flags(rec["flags"])
            for rec in own.to_dict("records")
        ],
        "hovertemplate": f"{variant} crosses tau at %{{x:.4f}}<br>%{{customdata}}<extra></extra>",
    }


def _map_layout(height: int, yaxis: dict) -> dict:
    """A one-panel map's layout: sparsity across, rows down, the legend above."""
    return {
        "height": height,
        "xaxis": {"title": {"text": "global sparsity"}, "automargin": True},
        "yaxis": yaxis,
        "legend": {"orientation": "h", "y": 1 + 10 / height, "yanchor": "bottom"},
        "margin": MARGIN | {"t": 60},
    }


def _regime_shapes(regimes: pd.DataFrame, xref: str, yref: str) -> list[dict]:
    """Shaded sparsity intervals, one per run of equal regime, edges halfway between points."""
    x = regimes["sparsity"].to_numpy(float)
    if len(x) == 0:
        return []
    half = np.diff(x) / 2 if len(x) > 1 else np.array([0.0025])
    edges = np.concatenate([[x[0] - half[0]], x[:-1] + half, [x[-1] + half[-1]]])
    shapes, names, start = [], regimes["regime"].tolist(), 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            shapes.append(
                {
                    "type": "rect",
                    "xref": xref,
                    "yref": f"{yref} domain",
                    "x0": round(edges[start], DIGITS),
                    "x1": round(edges[i], DIGITS),
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": REGIME_COLOURS[names[start]],
                    "opacity": 0.13,
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
            start = i
    return shapes


def _line_style(variant: str, colour: str) -> dict:
    """Solid for a method's default variant, dotted for the others, in the variant's colour."""
    return {"color": colour, "width": 1.8} | (
        {} if variant == variant_method(variant) else {"dash": "dot"}
    )


def _variant_traces(part: pd.DataFrame, colour: str, axes: tuple[str, str]) -> list[dict]:
    """An interval band (one closed polygon) and the mean line of one variant in one panel."""
    variant = part["repair_variant"].iloc[0]
    x = _round(part["sparsity"])
    ref = {"xaxis": axes[0], "yaxis": axes[1], "legendgroup": variant}
    band = {
        "type": "scatter",
        "x": x + x[::-1],
        "y": _round(100 * part["top1_hi"]) + _round(100 * part["top1_lo"])[::-1],
        "fill": "toself",
        "fillcolor": colour,
        "opacity": 0.2,
        "line": {"width": 0},
        "hoverinfo": "skip",
        "showlegend": False,
        "name": f"{variant} interval",
    }
    custom = np.column_stack(
        [
            *(_round(part[c]) for c in ("r", "r_lo", "r_hi")),
            *(_round(100 * part[c]) for c in ("top1_lo", "top1_hi")),
            part["replicates"],
            part["seeds"],
        ]
    )
    line = {
        "type": "scatter",
        "x": x,
        "y": _round(100 * part["top1"]),
        "mode": "lines+markers",
        "name": variant,
        "line": _line_style(variant, colour),
        "marker": {"size": 4},
        "customdata": custom.tolist(),
        "hovertemplate": f"{variant}<br>sparsity %{{x}}<br>top-1 %{{y:.2f}} % "
        "[%{customdata[3]}, %{customdata[4]}]"
        "<br>r %{customdata[0]} [%{customdata[1]}, %{customdata[2]}]"
        "<br>replicates %{customdata[5]}, seeds %{customdata[6]}<extra></extra>",
    }
    return [band | ref, line | ref]


def accuracy_panels(tables: RegimeTables) -> Figure:
    """Top-1 against sparsity per repair variant with interval bands; one row per (dataset, arch),
    one column per allocation (ERK and LAMP side by side); regimes at the first τ shaded, that τ
    as a dashed line (at the mean dense top-1 of the replicates)."""
    summary = at_first_tau(tables.summary, tables)
    pairs = list(summary[PAIR].drop_duplicates().itertuples(index=False, name=None))
    allocations = list(dict.fromkeys(summary["allocation"]))
    palette = colours(tables.curves["repair_variant"], REPAIR_PALETTE)
    keys = [*PAIR, "allocation"]
    # Curves come ordered by (pair, allocation, variant in display order, sparsity).
    by_key = dict(iter(tables.curves.groupby(keys, sort=False)))
    regimes = at_first_tau(tables.regimes, tables).sort_values("sparsity")
    regimes = dict(iter(regimes.groupby(keys, sort=False)))
    info = summary.set_index(keys)[["dense_top1", "chance"]].to_dict("index")
    layout = _subplots(
        len(pairs),
        len(allocations),
        [_label(*pair, al) for pair in pairs for al in allocations],
        vertical_spacing=min(0.08, 0.35 / max(1, len(pairs))),
        horizontal_spacing=0.05,
    )
    data, shapes, in_legend = [], [], set()
    for k, key in enumerate(((*pair, al) for pair in pairs for al in allocations), start=1):
        if key not in by_key:
            continue
        axes = _axes(k)
        dense, chance = info[key]["dense_top1"], info[key]["chance"]
        for variant, part in by_key[key].groupby("repair_variant", sort=False):
            traces = _variant_traces(part, palette[variant], axes)
            traces[1]["showlegend"] = variant not in in_legend
            in_legend.add(variant)
            data += traces
        shapes += _regime_shapes(regimes.get(key, pd.DataFrame(columns=["sparsity"])), *axes)
        tau_top1 = round(100 * (chance + tables.tau * (dense - chance)), 3)
        shapes.append(
            {
                "type": "line",
                "xref": f"{axes[0]} domain",
                "yref": axes[1],
                "x0": 0,
                "x1": 1,
                "y0": tau_top1,
                "y1": tau_top1,
                "line": {"dash": "dash", "width": 1, "color": "#555"},
            }
        )
    height = PANEL_HEIGHT * len(pairs) + 140
    layout |= {
        "shapes": shapes,
        "height": height,
        "margin": MARGIN | {"t": 80},
        "legend": {"orientation": "h", "y": 1 + 40 / height, "yanchor": "bottom"},
    }
    n = len(allocations)
    for row in range(len(pairs)):
        _title(layout, _axis("y", row * n + 1), "top-1 %")
    for col in range(n):
        _title(layout, _axis("x", (len(pairs) - 1) * n + col + 1), "sparsity")
    return {"data": data, "layout": layout}


def difference_map(tables: RegimeTables) -> Figure:
    """LAMP − ERK in r per (dataset, arch, variant) and sparsity. Letters name the verdict
    (WINNER_MARKS); cells where both arms are at chance are grey, never coloured by a difference
    that is noise."""
    comparison, rows = tables.comparison, [*PAIR, "repair_variant"]
    chance = comparison["winner"] == BOTH_AT_CHANCE
    z = _pivot(comparison.assign(diff=comparison["diff"].where(~chance)), rows, "diff")
    yaxis = {"autorange": "reversed", "type": "category", "automargin": True}
    return {
        "data": [*_difference_heatmaps(comparison, chance, rows, z), *_winner_legend()],
        "layout": _map_layout(max(320, 24 * len(z) + 180), yaxis),
    }


def _difference_heatmaps(
    comparison: pd.DataFrame, chance: pd.Series, rows: list[str], z: pd.DataFrame
) -> list[dict]:
    """The differences coloured blue (LAMP better) to red, and the cells at chance in grey on
    top; both carry the verdict's letter and the hover text."""
    cells = _difference_cells(comparison, chance)

    def shaped(column: str) -> pd.DataFrame:
        return _pivot(cells, rows, column).reindex(index=z.index, columns=z.columns)

    def grid(column: str) -> list:
        return shaped(column).fillna("").to_numpy().tolist()

    values = z.to_numpy(float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    common = {
        "x": list(z.columns),
        "y": [_label(*key) for key in z.index],
        "text": grid("letter"),
        "texttemplate": "%{text}",
        "customdata": grid("hover"),
        "hovertemplate": "%{y}<br>sparsity %{x}<br>%{customdata}<extra></extra>",
        "xgap": 1,
        "ygap": 1,
    }
    heatmap = common | {
        "type": "heatmap",
        "z": [_round(row) for row in values],
        # plotly.js's RdBu runs blue (low) to red (high): reversed, LAMP better (> 0) is blue.
        "colorscale": "RdBu",
        "reversescale": True,
        "zmid": 0,
        "zmin": -bound,
        "zmax": bound,
        "colorbar": {"title": {"text": "LAMP − ERK (r)"}},
    }
    at_chance = common | {
        "type": "heatmap",
        "z": [_round(row) for row in shaped("grey").to_numpy(float)],
        "colorscale": [[0, CHANCE_COLOUR], [1, CHANCE_COLOUR]],
        "showscale": False,
        "name": "both at chance",
    }
    return [heatmap, at_chance]


def _difference_cells(comparison: pd.DataFrame, chance: pd.Series) -> pd.DataFrame:
    """The comparison with each cell's letter, hover text and grey mark (both at chance)."""
    letters = {name: mark for name, (mark, _) in WINNER_MARKS.items()}
    hover = [
        f"LAMP − ERK = {_num(rec['diff'])} [{_num(rec['diff_lo'])}, {_num(rec['diff_hi'])}]"
        f"<br>r erk {_num(rec['r_erk'])}, r lamp {_num(rec['r_lamp'])}"
        f"<br>winner: {rec['winner']}; replicates agreeing: "
        f"{_num(rec['replicate_agreement'], '.0%')} of {rec['replicates']}" + _flags(rec["flags"])
        for rec in comparison.to_dict("records")
    ]
    return comparison.assign(
        letter=comparison["winner"].map(letters).fillna(""),
        hover=hover,
        grey=np.where(chance, 1.0, np.nan),
    )


def _winner_legend() -> list[dict]:
    """Empty traces that put WINNER_MARKS in the legend, each with its cell colour."""
    return [
        {
            "type": "scatter",
            "x": [None],
            "y": [None],
            "mode": "markers",
            "name": text,
            "marker": {"symbol": "square", "size": 12, "color": colour},
            "hoverinfo": "skip",
        }
        for (_, text), colour in zip(
            WINNER_MARKS.values(),
            ("#2166ac", "#b2182b", "#f7f7f7", CHANCE_COLOUR, "#f7f7f7"),
            strict=True,
        )
    ]


def boundary_against_tau(tables: RegimeTables) -> Figure:
    """Boundary (with its interval) against τ; one panel per (dataset, arch, allocation), one
    line per repair variant. A curve that does not cross a τ inside the grid has no point there.
    """
    bounds, keys = tables.boundaries, [*PAIR, "allocation"]
    panels = list(bounds[keys].drop_duplicates().itertuples(index=False, name=None))
    cols = min(2, len(panels)) or 1
    rows = math.ceil(len(panels) / cols) or 1
    layout = _subplots(
        rows,
        cols,
        [_label(*panel) for panel in panels],
        vertical_spacing=min(0.08, 0.35 / rows),
        horizontal_spacing=0.08,
    )
    palette = colours(bounds["repair_variant"], REPAIR_PALETTE)
    data, in_legend = [], set()
    for k, (_, own) in enumerate(bounds.groupby(keys, sort=False), start=1):
        xaxis, yaxis = _axes(k)
        for variant, part in own.groupby("repair_variant", sort=False):
            data.append(
                {
                    "type": "scatter",
                    "xaxis": xaxis,
                    "yaxis": yaxis,
                    "x": _round(part["tau"]),
                    "y": _round(part["boundary"]),
                    "mode": "lines+markers",
                    "name": variant,
                    "legendgroup": variant,
                    "showlegend": variant not in in_legend,
                    "line": _line_style(variant, palette[variant]),
                    "error_y": {
                        "type": "data",
                        "symmetric": False,
                        "array": _round(part["ci_hi"] - part["boundary"]),
                        "arrayminus": _round(part["boundary"] - part["ci_lo"]),
                        "thickness": 1,
                    },
                    "customdata": [
                        f"{rec['status']}; interval {_num(rec['ci_lo'], '.4f')} to "
                        f"{_num(rec['ci_hi'], '.4f')}" + _flags(rec["flags"])
                        for rec in part.to_dict("records")
                    ],
                    "hovertemplate": f"{variant}<br>tau %{{x}}: boundary %{{y:.4f}}"
                    "<br>%{customdata}<extra></extra>",
                }
            )
            in_legend.add(variant)
        _title(layout, _axis("x", k), "tau")
        _title(layout, _axis("y", k), "boundary sparsity")
    height = PANEL_HEIGHT * rows + 140
    layout |= {
        "height": height,
        "margin": MARGIN | {"t": 80},
        "legend": {"orientation": "h", "y": 1 + 40 / height, "yanchor": "bottom"},
    }
    return {"data": data, "layout": layout}


def layer_density_lines(profiles: pd.DataFrame, sparsity: float) -> Figure:
    """Per-layer kept fraction of each allocation at one sparsity, one panel per (dataset, arch)."""
    pairs = list(profiles[PAIR].drop_duplicates().itertuples(index=False, name=None))
    cols = 2 if len(pairs) > 1 else 1
    rows = math.ceil(len(pairs) / cols)
    layout = _subplots(
        rows,
        cols,
        [f"{_label(*pair)} at sparsity {sparsity:g}" for pair in pairs],
        vertical_spacing=min(0.08, 0.35 / max(1, rows)),
    )
    palette = colours(profiles["allocation"], ALLOCATION_PALETTE)
    data = []
    for k, (_, own) in enumerate(profiles.groupby(PAIR, sort=False), start=1):
        xaxis, yaxis = _axes(k)
        _title(layout, _axis("y", k), "kept fraction")
        if k > len(pairs) - cols:
            _title(layout, _axis("x", k), "prunable layer (forward order)")
        for allocation, part in own.groupby("allocation", sort=False):
            data.append(
                {
                    "type": "scatter",
                    "xaxis": xaxis,
                    "yaxis": yaxis,
                    "x": part["layer"].tolist(),
                    "y": _round(part["density"]),
                    "mode": "lines+markers",
                    "name": allocation,
                    "legendgroup": allocation,
                    "showlegend": k == 1,
                    "line": {"color": palette[allocation], "width": 1.5},
                    "marker": {"size": 4},
                    "text": part["layer_name"].tolist(),
                    "hovertemplate": f"{allocation}<br>%{{text}}<br>density %{{y:.4f}}"
                    "<extra></extra>",
                }
            )
    layout |= {"height": PANEL_HEIGHT * rows + 100, "margin": MARGIN}
    return {"data": data, "layout": layout}


def fidelity_scatter(points: pd.DataFrame) -> Figure:
    """Mean agreement with the dense model against mean top-1, one panel per dataset."""
    datasets = list(dict.fromkeys(points["dataset"]))
    cols = min(3, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    titles = []
    for dataset in datasets:
        own = points[points["dataset"] == dataset]
        # Spearman = Pearson on ranks (pandas' own Spearman needs scipy).
        rho = own["agreement"].rank().corr(own["top1"].rank()) if len(own) > 2 else math.nan
        titles.append(f"{dataset} (Spearman ρ = {_num(rho, '.2f')})")
    layout = _subplots(rows, cols, titles)
    palette = colours(points["repair_variant"], REPAIR_PALETTE)
    data = []
    for k, dataset in enumerate(datasets, start=1):
        xaxis, yaxis = _axes(k)
        own = points[points["dataset"] == dataset]
        for variant, part in own.groupby("repair_variant", sort=False):
            where = part[["arch", "allocation", "sparsity"]].itertuples(index=False)
            data.append(
                {
                    "type": "scatter",
                    "xaxis": xaxis,
                    "yaxis": yaxis,
                    "x": _round(part["agreement"] * 100),
                    "y": _round(part["top1"] * 100),
                    "mode": "markers",
                    "name": variant,
                    "legendgroup": variant,
                    "showlegend": k == 1,
                    "marker": {"color": palette[variant], "size": 5, "opacity": 0.7},
                    "text": [f"{_label(a, al)} s={s:g}" for a, al, s in where],
                    "hovertemplate": f"{variant}<br>%{{text}}<br>agreement %{{x:.1f}} %"
                    "<br>top-1 %{y:.1f} %<extra></extra>",
                }
            )
        _title(layout, _axis("x", k), "agreement with dense %")
        _title(layout, _axis("y", k), "top-1 %")
    layout |= {"height": 380 * rows + 80, "margin": MARGIN}
    return {"data": data, "layout": layout}
