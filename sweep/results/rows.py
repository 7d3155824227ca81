"""One builder for every store row: a finished trial's and a failed trial's alike.

Torch-free, so the Tune callbacks in the driver, the benchmarks and the store upgrade all build
rows the same way. A row is the trial's identity columns (from its config), its measurements
(absent for an error row) and the bookkeeping the driver adds (status, attempts, grid, time).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from sweep.plan.identity import KEY_SCHEMA, TrialConfig
from sweep.results.schema import FILE_SCHEMA, PARTITION_COLUMNS, STATUS_ERROR, STATUS_OK

_LIST_COLUMNS = {f.name for f in FILE_SCHEMA if str(f.type).startswith("list")}
ROW_COLUMNS = (*PARTITION_COLUMNS, *FILE_SCHEMA.names)
# A row's identity columns are the trial's fields (sweep.plan.identity.TrialConfig), less its
# eval_limit (a row records what was evaluated: eval_size), plus what is derived from them.
_NOT_COLUMNS = frozenset({"eval_limit"})
_TRIAL_FIELDS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name not in _NOT_COLUMNS)
_IDENTITY = {"trial_key", "key_schema", "repair_variant", *_TRIAL_FIELDS}
if not set(ROW_COLUMNS) >= _IDENTITY:  # a field added to TrialConfig needs its column
    raise ImportError(
        f"trial fields without a store column: {sorted(_IDENTITY - set(ROW_COLUMNS))}"
    )
_BOOKKEEPING = {"status", "error", "attempts", "grid", "finished_at"}
MEASUREMENT_COLUMNS = tuple(c for c in ROW_COLUMNS if c not in _IDENTITY | _BOOKKEEPING)


def identity_columns(config: TrialConfig) -> dict[str, Any]:
    """The columns that say which trial a row is: everything its key is made of."""
    return {
        **{name: getattr(config, name) for name in _TRIAL_FIELDS},
        "repair_params": json.dumps(config.repair_params, sort_keys=True),
        "trial_key": config.key,
        "key_schema": KEY_SCHEMA,
        "repair_variant": config.repair_variant,
    }


def config_of_row(row: dict[str, Any], **overrides: Any) -> TrialConfig:
    """The trial a row records (its eval_limit: the images it evaluated); `overrides` stand in
    for what an older row lacks."""
    values = {name: row[name] for name in _TRIAL_FIELDS if name in row}
    values["repair_params"] = json.loads(row["repair_params"] or "{}")
    values["eval_limit"] = row["eval_size"]
    return TrialConfig(**{**values, **overrides})


def build_row(
    config: TrialConfig,
    measurements: dict[str, Any] | None,
    *,
    grid: str,
    attempts: int,
    error: str | None = None,
    finished_at: datetime | None = None,
) -> dict[str, Any]:
    """A complete store row. `measurements` None (with an `error`) makes the error row."""
    if (measurements is None) == (error is None):
        raise ValueError("a row has either measurements (ok) or an error message, not both")
    row: dict[str, Any] = dict.fromkeys(ROW_COLUMNS)
    row.update({name: [] for name in _LIST_COLUMNS})
    if measurements is not None:
        unknown = set(measurements) - set(MEASUREMENT_COLUMNS)
        if unknown:
            raise ValueError(f"measurements hold unknown columns {sorted(unknown)}")
        row.update(measurements)
    row.update(identity_columns(config))
    row.update(
        status=STATUS_OK if error is None else STATUS_ERROR,
        error=error,
        attempts=attempts,
        grid=grid,
        finished_at=finished_at or datetime.now(UTC),
    )
    return row
