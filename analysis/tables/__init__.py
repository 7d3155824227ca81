"""The six flagged tables of RegimeTables, built from coded rows and their statistics.

Nothing is dropped silently: error rows, missing points, missing repairs, duplicate trials, single
seeds or replicates, rows without per-image results, non-monotone curves and censored intervals
are named in each table's `flags` column. Every row is one repair variant; only the regime
definition looks at a variant's method (its role). Boundaries, regimes and the band are given
once per τ. One module per table; inputs.py holds what they all read.
"""

from __future__ import annotations

import pandas as pd

from analysis.coding import CodedRows
from analysis.statistics import Statistics
from analysis.tables.boundaries import boundaries_table
from analysis.tables.curves import curves_table
from analysis.tables.differences import comparison_table, repairs_table
from analysis.tables.inputs import TableInputs
from analysis.tables.regimes import regimes_table
from analysis.tables.summary import summary_table


def flagged_tables(
    coded: CodedRows, stats: Statistics, taus: tuple[float, ...]
) -> dict[str, pd.DataFrame]:
    """Every table of RegimeTables by its field name (the summary counts the regimes' points)."""
    inputs = TableInputs(coded, stats, taus)
    regimes = regimes_table(inputs)
    return {
        "curves": curves_table(inputs),
        "boundaries": boundaries_table(inputs),
        "regimes": regimes,
        "summary": summary_table(inputs, regimes),
        "comparison": comparison_table(inputs),
        "repairs": repairs_table(inputs),
    }
