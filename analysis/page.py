"""The report's HTML: one page with plotly.js inlined once, its tables and its figures."""

from __future__ import annotations

import html

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis.figures import Figure

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
# (anchor, title, explanation, body html): one section of the page.
Section = tuple[str, str, str, str]

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


def table_html(frame: pd.DataFrame) -> str:
    """A scrollable table, floats to 4 significant digits and NaN left blank."""
    shown = frame.copy()
    for column in shown.select_dtypes("float").columns:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    table = shown.to_html(index=False, escape=True, border=0, classes="data", na_rep="")
    return f'<div class="wide">{table}</div>'


def figure_html(fig: Figure, div_id: str) -> str:
    """A figure's div without plotly.js, which the page carries once."""
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        config=PLOT_CONFIG,
        div_id=div_id,
        default_width="100%",
        validate=False,
    )


def render_page(sections: list[Section]) -> str:
    """The whole page, plotly.js inlined, with a link to every section."""
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
