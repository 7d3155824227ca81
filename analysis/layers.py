"""Per-layer density profiles at one sparsity, read straight from the store with a filter.

Why not `read_results`: the per-layer list columns of a million rows are ~60 M strings, far too
many to materialise in pandas for the few dozen rows a profile needs. A filtered Arrow scan keeps
the decoding in C++ and hands pandas only the matching rows. Densities depend on (checkpoint,
allocation, sparsity) only, so any ok row of a point will do; the latest one is taken (the
store's own rule, `latest_per_key`).
"""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds

from sweep.results.schema import PARTITION_COLUMNS, STATUS_OK
from sweep.results.store import StoreScan, latest_per_key

TOLERANCE = 1e-6
_KEYS = [*PARTITION_COLUMNS, "allocation"]


def read_layer_densities(scan: StoreScan, sparsity: float) -> pd.DataFrame:
    """One row per (dataset, arch, allocation, layer): layer index, layer name, kept fraction.

    `scan` is the store as the analysis opened it, so damaged files stay out of this read too."""
    point = (
        (ds.field("sparsity") > sparsity - TOLERANCE)
        & (ds.field("sparsity") < sparsity + TOLERANCE)
        & (ds.field("status") == STATUS_OK)
    )
    table = scan.dataset.to_table(
        columns=[*_KEYS, "finished_at", "layer_names", "layer_density"], filter=point
    )
    chosen = latest_per_key(table, _KEYS).to_pylist()  # sorted by _KEYS
    records = [
        {key: row[key] for key in _KEYS} | {"layer": i, "layer_name": name, "density": density}
        for row in chosen
        if row["layer_names"] and row["layer_density"]
        for i, (name, density) in enumerate(
            zip(row["layer_names"], row["layer_density"], strict=True)
        )
    ]
    return pd.DataFrame.from_records(records, columns=[*_KEYS, "layer", "layer_name", "density"])
