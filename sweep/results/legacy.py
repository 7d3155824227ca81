"""Rows of an older trial-key schema: read under today's keys, and rewritten in place.

Every old row is rebuilt from its own columns into a canonical `TrialConfig`, so it gets today's
key and variant name; measurements, status and times are kept. Two old rows that were one trial
spelled two ways become two rows with one key, and readers keep the later one. The old files are
copied to a backup folder first and removed only after the upgraded rows are on disk. The
launcher runs this itself before resuming such a store; `python -m sweep.upgrade` runs it alone.

- Key schema 1 (prune-sweep 0.1.0 before canonical identities) hashed a repair's parameters as
  the grid spelled them, kept `calib_size` in the key of `none`, and had no `key_schema` or
  `repair_variant` columns. What such a row does not record is filled in as documented: it
  evaluated the test split of the one checkpoint of its (dataset, arch) — replicate 0; an error
  row's missing `repair_params` are the method's defaults; per-image results were not kept (null).
- Key schema 2 did not key the eval precision: it is taken from the row's `eval_precision`
  column, or, for rows written before that column, from its `device` (bf16 on CUDA, else fp32).

Both: `eval_limit` comes from the row's `eval_size` (an error row has none, so it is taken as the
whole split; error rows are rerun by a resumed sweep anyway). The dense per-image correctness
(`dense_correct`) was not recorded before key schema 3 and stays null: the analysis asks for
the rows to be rerun.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sweep.results.rows import ROW_COLUMNS, config_of_row, identity_columns
from sweep.results.schema import PARTITION_COLUMNS, STATUS_OK, row_eval_precision
from sweep.results.store import ResultStore

BACKUP_SUFFIX = ".key-schema-backup"


def _partition_values(root: Path, path: Path) -> dict[str, str]:
    parts = dict(p.split("=", 1) for p in path.relative_to(root).parent.parts if "=" in p)
    return {name: parts[name] for name in PARTITION_COLUMNS}


def upgraded_row(old: dict[str, Any]) -> dict[str, Any]:
    """An older row with today's columns and identity (key, canonical params, variant)."""
    precision = row_eval_precision(old.get("eval_precision"), old["device"])
    config = config_of_row(
        old,
        replicate=old.get("replicate") or 0,
        eval_split=old.get("eval_split") or "test",
        eval_precision=precision,
    )
    kept = {name: old[name] for name in ROW_COLUMNS if name in old}
    return {**dict.fromkeys(ROW_COLUMNS), **kept, **identity_columns(config)}


def legacy_rows(store: ResultStore, paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every row of the older-schema files `paths`, upgraded (reads files, writes nothing)."""
    rows = []
    for path in paths:
        partition = _partition_values(store.root, path)
        for old in pq.read_table(path).to_pylist():
            rows.append(upgraded_row({**old, **partition}))
    return rows


def legacy_finished_keys(store: ResultStore, paths: Sequence[Path]) -> set[str]:
    """Today's keys of the older rows that finished ok: what a resumed sweep must not redo."""
    return {row["trial_key"] for row in legacy_rows(store, paths) if row["status"] == STATUS_OK}


@dataclass(frozen=True)
class UpgradeReport:
    rows: int
    files: int
    backup: Path | None


def upgrade_store(store: ResultStore) -> UpgradeReport:
    """Rewrite the older files of `store` in today's schema, keeping a backup of them."""
    old_files = store.legacy_files()
    if not old_files:
        return UpgradeReport(0, 0, None)
    rows = legacy_rows(store, old_files)
    backup = store.root.with_name(store.root.name + BACKUP_SUFFIX)
    if backup.exists():
        backup = backup.with_name(f"{backup.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    for path in old_files:
        target = backup / path.relative_to(store.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    store.write_many(rows)
    for path in old_files:
        path.unlink()
    return UpgradeReport(len(rows), len(old_files), backup)
