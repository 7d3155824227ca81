"""The Parquet result store: one file per finished trial, hive-partitioned by dataset and arch.

Why one file per trial: the driver (a Tune callback, the only writer) can make every row durable
the moment its trial ends by writing a temporary file and renaming it into place, so a killed
driver never leaves a partial file, and a rerun sees exactly the rows that landed. Temporary
files start with '.', which pyarrow, pandas and DuckDB globs all skip. `compact()` merges a
partition's small files into one after a sweep; readers keep the latest row per trial key, so a
compaction interrupted between its rename and its deletes loses and duplicates nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sweep.errors import UserError
from sweep.schema import FILE_SCHEMA, PARTITION_COLUMNS, RESULT_SCHEMA, STATUS_OK

_PARTITIONING = ds.partitioning(
    pa.schema([pa.field(name, pa.string()) for name in PARTITION_COLUMNS]), flavor="hive"
)


class StoreError(UserError):
    """A path that is not a readable prune-sweep result store."""


def _partition_dir(root: Path, row: dict) -> Path:
    return root.joinpath(*(f"{name}={row[name]}" for name in PARTITION_COLUMNS))


def _file_table(rows: Sequence[dict]) -> pa.Table:
    """Rows as a table of exactly FILE_SCHEMA; a missing, extra or ill-typed field raises."""
    expected = set(FILE_SCHEMA.names) | set(PARTITION_COLUMNS)
    for row in rows:
        if set(row) != expected:
            missing, extra = expected - set(row), set(row) - expected
            raise ValueError(f"row fields differ: missing {sorted(missing)}, extra {sorted(extra)}")
    columns = {name: [row[name] for row in rows] for name in FILE_SCHEMA.names}
    return pa.table(columns, schema=FILE_SCHEMA)


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ResultStore:
    """A result store rooted at a directory (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def write(self, row: dict) -> Path:
        """Make one finished trial's row durable; returns the file written."""
        table = _file_table([row])
        stamp = int(pd.Timestamp(row["finished_at"]).value // 1000)
        path = _partition_dir(self.root, row) / f"{row['trial_key']}-{stamp}.parquet"
        _write_atomically(table, path)
        return path

    def write_many(self, rows: Iterable[dict]) -> list[Path]:
        """Write many rows as one file per partition (bulk imports, synthetic stores)."""
        by_partition: dict[Path, list[dict]] = {}
        for row in rows:
            by_partition.setdefault(_partition_dir(self.root, row), []).append(row)
        written = []
        for directory, part_rows in by_partition.items():
            path = directory / f"part-{uuid.uuid4().hex}.parquet"
            _write_atomically(_file_table(part_rows), path)
            written.append(path)
        return written

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed writer left behind (call only as the single writer)."""
        stale = list(self.root.rglob(".*.tmp")) if self.root.is_dir() else []
        for path in stale:
            path.unlink()
        return len(stale)

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.parquet") if not p.name.startswith("."))

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The latest row per trial key (ordered by finished_at) as a DataFrame."""
        return read_results(self.root, columns)

    def finished_keys(self) -> set[str]:
        """Trial keys whose latest row is ok: a rerun skips these and retries the rest."""
        if not self.files():
            return set()
        frame = self.read(["trial_key", "status", "finished_at"])
        return set(frame.loc[frame["status"] == STATUS_OK, "trial_key"])

    def compact(self) -> int:
        """Merge each partition's files into one; returns how many files were removed."""
        removed = 0
        for directory in sorted({path.parent for path in self.files()}):
            old = sorted(directory.glob("*.parquet"))
            if len(old) < 2:
                continue
            table = pq.ParquetDataset(old, schema=FILE_SCHEMA).read()
            merged = directory / f"part-{uuid.uuid4().hex}.parquet"
            _write_atomically(_latest_per_key(table), merged)
            for path in old:
                path.unlink()
                removed += 1
        return removed


def _latest_per_key(table: pa.Table) -> pa.Table:
    """Keep the row with the latest finished_at of every trial key."""
    order = table.sort_by([("trial_key", "ascending"), ("finished_at", "ascending")])
    keys = order.column("trial_key")
    if len(keys) < 2:
        return order
    last_of_key = pc.not_equal(keys.slice(0, len(keys) - 1), keys.slice(1))
    keep = pa.concat_arrays([last_of_key.combine_chunks(), pa.array([True])])
    return order.filter(keep)


def read_results(
    path: Path | str,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,  # noqa: A002 - pyarrow's own name for it
) -> pd.DataFrame:
    """Read a result store as a DataFrame with one row per trial key (the latest).

    `filter` is a pyarrow expression pushed down to the scan (e.g. one sparsity only), so large
    list columns of rows that are not wanted never reach pandas. Files other than `*.parquet`
    (a report, notes) are ignored. Raises StoreError for a missing or empty store, or one written
    with another schema.
    """
    root = Path(path)
    if not root.is_dir():
        raise StoreError(
            f"result store {str(root)!r} does not exist (expected a directory of Parquet files)"
        )
    files = [str(p) for p in ResultStore(root).files()]
    if not files:
        raise StoreError(f"result store {str(root)!r} holds no Parquet files")
    found = pq.read_schema(files[0]).names
    missing = [name for name in FILE_SCHEMA.names if name not in found]
    if missing:
        raise StoreError(
            f"{str(root)!r} is not a prune-sweep result store of this version: "
            f"missing columns {', '.join(missing)}"
        )
    wanted = list(columns) if columns is not None else RESULT_SCHEMA.names
    unknown = [name for name in wanted if name not in RESULT_SCHEMA.names]
    if unknown:
        raise StoreError(f"unknown result columns {unknown}; expected of {RESULT_SCHEMA.names}")
    needed = list(dict.fromkeys([*wanted, "trial_key", "finished_at"]))
    dataset = ds.dataset(
        files,
        format="parquet",
        partitioning=_PARTITIONING,
        partition_base_dir=str(root),
        schema=RESULT_SCHEMA,
    )
    table = dataset.to_table(columns=needed, filter=filter)
    if pc.count_distinct(table["trial_key"]).as_py() != table.num_rows:
        table = _latest_per_key(table)
    return table.select(wanted).to_pandas()
