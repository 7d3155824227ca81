"""Text, CSV and JSON renderings of RegimeTables for the `analysis.regimes` CLI.

Why three: the text view is for reading at a terminal (regime map as letters), CSV for one table
into a spreadsheet, JSON for programs (every table, flags as lists, NaN as null).
"""

from __future__ import annotations

import io
import json

import pandas as pd

from analysis.definitions import (
    BOTH_AT_CHANCE,
    NO_WINNER,
    NOT_AVAILABLE,
    PAIR,
    REGIMES,
    SINGLE_REPLICATE,
    RegimeTables,
)
from analysis.intervals import interval_text

FORMATS = ("table", "csv", "json")
REGIME_LETTERS = {regime: regime[0].upper() for regime in REGIMES} | {"unknown": "?"}
WINNER_LETTERS = {
    "lamp": "L",
    "erk": "E",
    NO_WINNER: "=",
    BOTH_AT_CHANCE: "0",
    SINGLE_REPLICATE: "1",
    NOT_AVAILABLE: ".",
}


def _records(frame: pd.DataFrame) -> list[dict]:
    records = json.loads(frame.to_json(orient="records", double_precision=10))
    for record in records:
        if "flags" in record:
            record["flags"] = [f for f in (record["flags"] or "").split("; ") if f]
    return records


def to_json(tables: RegimeTables, names: tuple[str, ...]) -> str:
    document = {
        "taus": list(tables.taus),
        "confidence": tables.confidence,
        "resamples": tables.resamples,
    }
    document |= {name: _records(tables.table(name)) for name in names}
    return json.dumps(document, indent=1) + "\n"


def to_csv(tables: RegimeTables, name: str) -> str:
    buffer = io.StringIO()
    tables.table(name).to_csv(buffer, index=False, float_format="%.6g")
    return buffer.getvalue()


def _letter_map(frame: pd.DataFrame, rows: list[str], column: str, letters: dict) -> str:
    if frame.empty:
        return "(none)\n"
    grid = frame.assign(cell=frame[column].map(letters)).pivot_table(
        index=rows, columns="sparsity", values="cell", aggfunc="first", sort=False
    )
    grid.columns = [f"{s:g}" for s in grid.columns]
    return grid.fillna(" ").to_string() + "\n"


def to_text(tables: RegimeTables) -> str:
    """Summary, regime map, boundaries and the LAMP − ERK winners, for a terminal."""
    pd_options = {"display.width": 200, "display.max_colwidth": 90, "display.max_rows": 10_000}
    legend = ", ".join(f"{letter} {name}" for name, letter in REGIME_LETTERS.items())
    winners = ", ".join(f"{letter} {name}" for name, letter in WINNER_LETTERS.items())
    with pd.option_context(*(item for pair in pd_options.items() for item in pair)):
        parts = [
            f"tau = {', '.join(f'{t:g}' for t in tables.taus)}; intervals: "
            f"{interval_text(tables.confidence, tables.resamples)}\n",
            "\n== Summary: repair-sensitive band per (dataset, arch, allocation) ==\n",
            tables.summary.to_string(index=False, float_format="{:.4g}".format) + "\n",
            f"\n== Regime map ({legend}) ==\n",
            _letter_map(tables.regimes, [*PAIR, "allocation", "tau"], "regime", REGIME_LETTERS),
            "\n== Boundaries: where mean r crosses each tau ==\n",
            tables.boundaries.to_string(index=False, float_format="{:.4g}".format) + "\n",
            f"\n== LAMP - ERK winner per sparsity ({winners}) ==\n",
            _letter_map(tables.comparison, [*PAIR, "repair_variant"], "winner", WINNER_LETTERS),
        ]
    return "".join(parts)


def render(tables: RegimeTables, fmt: str, table: str | None) -> str:
    if fmt == "json":
        return to_json(tables, (table,) if table else RegimeTables.TABLES)
    if fmt == "csv":
        return to_csv(tables, table or "regimes")
    if table:
        return tables.table(table).to_string(index=False, float_format="{:.4g}".format) + "\n"
    return to_text(tables)
