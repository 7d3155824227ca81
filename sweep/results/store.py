"""The Parquet result store: one file per finished trial, hive-partitioned by dataset and arch.

Why one file per trial: the driver (a Tune callback, the only writer) can make every row durable the
moment its trial ends by writing a temporary file and renaming it into place (sweep.core.atomic), so
a killed driver never leaves a partial file, and a rerun sees exactly the rows that landed.
Temporary files start with '.', which pyarrow, pandas and DuckDB globs all skip. `compact()` merges
a partition's small files into one after a sweep; readers keep the latest row per trial key, so a
compaction interrupted between its rename and its deletes loses and duplicates nothing.

Files that are not ours still turn up (a file truncated by a full disk, a stray `*.parquet` copied
in): every reader first checks each file's footer (`survey`), reads only the files of this
schema, names the damaged ones instead of crashing on them, and refuses a store written with an
older trial-key schema until `python -m sweep.upgrade` has rewritten it.
"""

from __future__ import annotations

import shlex
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sweep.core.atomic import atomic_write
from sweep.core.errors import UserError
from sweep.plan.identity import KEY_SCHEMA
from sweep.results.schema import FILE_SCHEMA, PARTITION_COLUMNS, RESULT_SCHEMA, STATUS_OK

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


def _write_table(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


_MERGE_BATCH = 512  # files read at once while merging: bounds the memory of a compaction
_READERS = 4


def _merge_latest(paths: Sequence[Path], target: Path) -> None:
    """Write the latest row of every trial key in `paths` to `target`, a batch of files at a time.

    Two passes, so memory stays flat however many files a sweep left: first the keys and times
    of every row (which row of which file wins), then the winning rows, streamed to one file.
    Reading all files as one table instead holds a chunk per file: 22,000 one-row files took
    3.7 GB.
    """
    columns: dict[str, list] = {"trial_key": [], "finished_at": [], "file": [], "row": []}
    with ThreadPoolExecutor(_READERS) as pool:  # pyarrow reads without the GIL
        all_stamps = list(pool.map(_read_stamps, paths))
    for number, stamps in enumerate(all_stamps):
        columns["trial_key"] += stamps["trial_key"].to_pylist()
        columns["finished_at"] += stamps["finished_at"].to_pylist()
        columns["file"] += [number] * stamps.num_rows
        columns["row"] += range(stamps.num_rows)
    types = {"finished_at": FILE_SCHEMA.field("finished_at").type}
    winners = latest_per_key(
        pa.table({name: pa.array(values, types.get(name)) for name, values in columns.items()})
    )
    keep: dict[int, list[int]] = {}
    for number, row in zip(winners["file"].to_pylist(), winners["row"].to_pylist(), strict=True):
        keep.setdefault(number, []).append(row)

    def winning_rows(number: int) -> pa.Table:
        return pq.read_table(paths[number], schema=FILE_SCHEMA).take(sorted(keep[number]))

    files = sorted(keep)
    with pq.ParquetWriter(target, FILE_SCHEMA) as writer, ThreadPoolExecutor(_READERS) as pool:
        for start in range(0, len(files), _MERGE_BATCH):
            batch = list(pool.map(winning_rows, files[start : start + _MERGE_BATCH]))
            writer.write_table(pa.concat_tables(batch).combine_chunks())


def _read_stamps(path: Path) -> pa.Table:
    return pq.read_table(path, columns=["trial_key", "finished_at"])


class ResultStore:
    """A result store rooted at a directory (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def write(self, row: dict) -> Path:
        """Make one finished trial's row durable; returns the file written."""
        table = _file_table([row])
        stamp = int(pd.Timestamp(row["finished_at"]).value // 1000)
        path = _partition_dir(self.root, row) / f"{row['trial_key']}-{stamp}.parquet"
        _write_table(table, path)
        return path

    def write_many(self, rows: Iterable[dict]) -> list[Path]:
        """Write many rows as one file per partition (bulk imports, synthetic stores)."""
        by_partition: dict[Path, list[dict]] = {}
        for row in rows:
            by_partition.setdefault(_partition_dir(self.root, row), []).append(row)
        written = []
        for directory, part_rows in by_partition.items():
            path = directory / f"part-{uuid.uuid4().hex}.parquet"
            _write_table(_file_table(part_rows), path)
            written.append(path)
        return written

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed writer left behind (call only as the single writer)."""
        stale = list(self.root.rglob(".*.tmp")) if self.root.is_dir() else []
        for path in stale:
            path.unlink()
        return len(stale)

    def files(self) -> list[Path]:
        """Every `*.parquet` file under the root (temporaries excluded), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*.parquet") if not p.name.startswith("."))

    def survey(self) -> StoreFiles:
        """Sort the files by their footers: this schema, an older key schema, or damaged."""
        usable, legacy, damaged = [], [], []
        for path in self.files():
            kind, reason = _classify(path)
            if kind == _USABLE:
                usable.append(path)
            elif kind == _LEGACY:
                legacy.append(path)
            else:
                damaged.append((path, reason))
        return StoreFiles(tuple(usable), tuple(legacy), tuple(damaged))

    def damaged_files(self) -> list[tuple[Path, str]]:
        """(file, one-line reason) of every file no reader can use: the launcher refuses these."""
        return list(self.survey().damaged)

    def legacy_files(self) -> list[Path]:
        """Files of an older trial-key schema, which `python -m sweep.upgrade` rewrites."""
        return list(self.survey().legacy)

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The latest row per trial key (ordered by finished_at) as a DataFrame."""
        return read_results(self.root, columns)

    def finished_keys(self, files: StoreFiles | None = None) -> set[str]:
        """Trial keys whose latest row is ok: a rerun skips these and retries the rest.

        Only files of this schema count: older-schema rows are sweep.upgrade's to translate, and
        damaged files (named on stderr) hold no row a reader could trust. `files`: a survey the
        caller already made (each survey reads every file's footer)."""
        files = files or self.survey()
        if not files.usable:
            return set()
        frame = _scan(self.root, files, print_skipped).read(["trial_key", "status"])
        return set(frame.loc[frame["status"] == STATUS_OK, "trial_key"])

    def compact(self) -> int:
        """Merge each partition's readable files into one; returns how many files were removed.

        Damaged and older-schema files are left where they are: merging would lose or retype them.
        """
        by_directory: dict[Path, list[Path]] = {}
        for path in self.survey().usable:
            by_directory.setdefault(path.parent, []).append(path)
        removed = 0
        for directory, old in sorted(by_directory.items()):
            if len(old) < 2:
                continue
            merged = directory / f"part-{uuid.uuid4().hex}.parquet"
            atomic_write(merged, lambda tmp, old=old: _merge_latest(old, tmp))
            for path in old:
                path.unlink()
                removed += 1
        return removed


@dataclass(frozen=True)
class StoreFiles:
    """A store's Parquet files sorted by what their footers say (computed per call, never cached:
    a running sweep adds files)."""

    usable: tuple[Path, ...]  # this version's schema
    legacy: tuple[Path, ...]  # an older trial-key schema: sweep.upgrade rewrites these
    damaged: tuple[tuple[Path, str], ...]  # (file, one-line reason)


_USABLE, _LEGACY, _DAMAGED = "usable", "legacy", "damaged"
# Columns that trial-key schema 2 added; a file lacking exactly these is a schema-1 file.
_KEY_SCHEMA_2_COLUMNS = frozenset(
    {"key_schema", "repair_variant", "replicate", "eval_split", "predictions", "correct"}
)
# Columns added since: a file of an older key schema may lack them too.
_LATER_COLUMNS = frozenset({"eval_precision", "dense_correct"})
_PARQUET_MAGIC = b"PAR1"


def _classify(path: Path) -> tuple[str, str]:
    """(kind, reason) of one file from its footer alone: cheap enough for every file, every read."""
    try:
        footer = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as error:
        return _DAMAGED, _unreadable_reason(path, error)
    schema = footer.schema
    found = {field.name: field.type for field in schema.to_arrow_schema()}
    wrong = [
        f"{field.name} is {found[field.name]}, expected {field.type}"
        for field in FILE_SCHEMA
        if field.name in found and not found[field.name].equals(field.type)
    ]
    missing = [name for name in FILE_SCHEMA.names if name not in found]
    if wrong:
        return _DAMAGED, f"not a prune-sweep result file (column {'; '.join(wrong)})"
    if _KEY_SCHEMA_2_COLUMNS <= set(missing) <= _KEY_SCHEMA_2_COLUMNS | _LATER_COLUMNS:
        return _LEGACY, ""
    if set(missing) <= _LATER_COLUMNS and _oldest_key_schema(footer) < KEY_SCHEMA:
        return _LEGACY, ""
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        return _DAMAGED, f"not a prune-sweep result file (missing columns {shown})"
    return _USABLE, ""


def _oldest_key_schema(footer: pq.FileMetaData) -> int:
    """The smallest `key_schema` of a file's rows, from its footer's column statistics."""
    lows = []
    for group in range(footer.num_row_groups):
        row_group = footer.row_group(group)
        columns = (row_group.column(i) for i in range(row_group.num_columns))
        stats = next(c for c in columns if c.path_in_schema == "key_schema").statistics
        if stats is None or not stats.has_min_max:
            return 0  # no statistics: cannot tell, so it is upgraded (which rewrites it as is)
        lows.append(stats.min)
    return min(lows, default=KEY_SCHEMA)


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why a footer could not be read, in one line: a cut-off Parquet file or something else."""
    detail = " ".join(str(error).split())
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_PARQUET_MAGIC))
    except OSError:
        head = b""
    if head == _PARQUET_MAGIC:
        return f"truncated or corrupt Parquet file ({detail})"
    return f"not a Parquet file ({detail})"


def skip_line(path: Path, reason: str) -> str:
    return f"skipped damaged file {path}: {reason}"


def print_skipped(path: Path, reason: str) -> None:
    """The default report of a damaged file: one line on stderr, so nothing is lost silently."""
    print(skip_line(path, reason), file=sys.stderr)


@dataclass(frozen=True)
class StoreScan:
    """One look at a store: its readable files as a pyarrow dataset, and the files left out."""

    root: Path
    dataset: ds.Dataset
    skipped: tuple[tuple[Path, str], ...]

    def read(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,  # noqa: A002 - pyarrow's own name for it
    ) -> pd.DataFrame:
        """One row per trial key (the latest); `filter` is pushed down to the scan."""
        wanted = list(columns) if columns is not None else RESULT_SCHEMA.names
        unknown = [name for name in wanted if name not in RESULT_SCHEMA.names]
        if unknown:
            raise StoreError(f"unknown result columns {unknown}; expected of {RESULT_SCHEMA.names}")
        needed = list(dict.fromkeys([*wanted, "trial_key", "finished_at"]))
        table = self.dataset.to_table(columns=needed, filter=filter)
        if pc.count_distinct(table["trial_key"]).as_py() != table.num_rows:
            table = latest_per_key(table)
        return table.select(wanted).to_pandas()


def latest_per_key(table: pa.Table, keys: Sequence[str] = ("trial_key",)) -> pa.Table:
    """Keep the row with the latest finished_at of every key (the trial key unless `keys` names
    other columns), sorted by the key: one rule for every reader of the store."""
    order = table.sort_by([*((name, "ascending") for name in keys), ("finished_at", "ascending")])
    if order.num_rows < 2:
        return order
    n = order.num_rows
    changed = [pc.not_equal(order[name].slice(0, n - 1), order[name].slice(1)) for name in keys]
    last_of_key = changed[0]
    for other in changed[1:]:
        last_of_key = pc.or_(last_of_key, other)
    keep = pa.concat_arrays([last_of_key.combine_chunks(), pa.array([True])])
    return order.filter(keep)


def open_store(
    path: Path | str, on_damaged: Callable[[Path, str], None] = print_skipped
) -> StoreScan:
    """Check a store's files and open the readable ones; `on_damaged` hears of each one skipped.

    Raises StoreError for a missing or empty store, a store written with an older trial-key schema
    (it needs `python -m sweep.upgrade`), or one without a single readable result file.
    """
    root = Path(path)
    if not root.is_dir():
        raise StoreError(
            f"result store {str(root)!r} does not exist (expected a directory of Parquet files)"
        )
    store = ResultStore(root)
    files = store.survey()
    if not (files.usable or files.legacy or files.damaged):
        raise StoreError(f"result store {str(root)!r} holds no Parquet files")
    if files.legacy:
        raise StoreError(
            f"result store {str(root)!r} was written by an older prune-sweep (trial-key schema "
            f"before {KEY_SCHEMA}); "
            f"upgrade it with python -m sweep.upgrade {shlex.quote(str(root))} (a backup is kept)"
        )
    if not files.usable:
        first, reason = files.damaged[0]
        raise StoreError(
            f"{str(root)!r} is not a prune-sweep result store: none of its {len(files.damaged)} "
            f"Parquet files is readable ({first}: {reason})"
        )
    return _scan(root, files, on_damaged)


def _scan(root: Path, files: StoreFiles, on_damaged: Callable[[Path, str], None]) -> StoreScan:
    """The usable files as one dataset; each damaged file is reported and left out."""
    for damaged, reason in files.damaged:
        on_damaged(damaged, reason)
    dataset = ds.dataset(
        [str(p) for p in files.usable],
        format="parquet",
        partitioning=_PARTITIONING,
        partition_base_dir=str(root),
        schema=RESULT_SCHEMA,
    )
    return StoreScan(root=root, dataset=dataset, skipped=files.damaged)


def read_results(
    path: Path | str,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,  # noqa: A002 - pyarrow's own name for it
) -> pd.DataFrame:
    """Read a result store as a DataFrame with one row per trial key (the latest).

    `filter` is a pyarrow expression pushed down to the scan (e.g. one sparsity only), so large
    list columns of rows that are not wanted never reach pandas. Files other than `*.parquet`
    (a report, notes) are ignored; damaged Parquet files are skipped and named on stderr. Raises
    StoreError as `open_store` does.
    """
    return open_store(path).read(columns, filter)
