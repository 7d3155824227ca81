"""The Parquet result store: atomic per-trial files, typed schema, latest-row reader."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from analysis.synthetic import make_row
from sweep.schema import COLUMN_DOCS, FILE_SCHEMA, RESULT_SCHEMA
from sweep.store import ResultStore, StoreError, read_results

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(key: str, status: str = "ok", minutes: int = 0, **overrides) -> dict:
    row = make_row(status=status, **overrides)
    row.update(trial_key=key, finished_at=T0 + timedelta(minutes=minutes))
    return row


def test_one_file_per_trial_in_hive_partitions(tmp_path: Path):
    store = ResultStore(tmp_path)
    path = store.write(_row("k1", dataset="cifar10", arch="resnet18"))
    assert path.parent == tmp_path / "dataset=cifar10" / "arch=resnet18"
    assert pq.read_schema(path) == FILE_SCHEMA
    assert list(tmp_path.rglob(".*")) == []  # no temporary file left behind


def test_reader_returns_typed_columns_and_partition_keys(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write(_row("k1", sparsity=0.9, top1=0.42))
    frame = read_results(tmp_path)
    assert list(frame.columns) == RESULT_SCHEMA.names
    row = frame.iloc[0]
    assert row["dataset"] == "cifar10" and row["arch"] == "resnet18"
    assert row["sparsity"] == 0.9 and row["top1"] == pytest.approx(0.42)
    assert list(row["layer_density"]) == pytest.approx(list(row["layer_density"]))
    assert isinstance(row["layer_names"][0], str)
    assert isinstance(row["finished_at"], pd.Timestamp)


def test_latest_row_per_key_wins_and_only_ok_keys_count_as_finished(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write(_row("a", status="error", minutes=0))
    store.write(_row("a", status="ok", minutes=1))
    store.write(_row("b", status="ok", minutes=0))
    store.write(_row("b", status="error", minutes=2))
    frame = read_results(tmp_path, ["trial_key", "status"]).set_index("trial_key")
    assert frame.loc["a", "status"] == "ok" and frame.loc["b", "status"] == "error"
    assert store.finished_keys() == {"a"}


def test_a_row_with_a_wrong_type_or_field_is_refused_and_nothing_written(tmp_path: Path):
    store = ResultStore(tmp_path)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        store.write({**_row("k"), "top1": "high"})
    bad = _row("k")
    bad["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        store.write(bad)
    assert list(tmp_path.rglob("*")) == []


def test_temporary_and_foreign_files_are_ignored(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write(_row("k1"))
    partition = next(tmp_path.rglob("arch=*"))
    (partition / ".k2-1.parquet.abc.tmp").write_bytes(b"half a file")
    (tmp_path / "notes.txt").write_text("not parquet")
    assert list(read_results(tmp_path, ["trial_key"])["trial_key"]) == ["k1"]


def test_compaction_keeps_the_latest_row_per_key(tmp_path: Path):
    store = ResultStore(tmp_path)
    for i in range(5):
        store.write(_row(f"k{i}", minutes=i))
    store.write(_row("k0", status="error", minutes=10))
    before = read_results(tmp_path).sort_values("trial_key").reset_index(drop=True)
    assert store.compact() == 6
    assert len(store.files()) == 1
    after = read_results(tmp_path).sort_values("trial_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_filter_is_pushed_down(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write_many([_row(f"k{i}", sparsity=0.9 + i / 100) for i in range(4)])
    frame = read_results(tmp_path, ["sparsity"], filter=ds.field("sparsity") > 0.915)
    assert sorted(frame["sparsity"]) == [0.92, 0.93]


def test_readable_as_is_by_pyarrow_pandas_and_duckdb(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write(_row("k1", dataset="cifar10"))
    store.write(_row("k2", dataset="cifar100", num_classes=100))
    assert pd.read_parquet(tmp_path).shape[0] == 2
    assert ds.dataset(tmp_path, partitioning="hive").to_table().num_rows == 2
    glob = str(tmp_path / "**" / "*.parquet")
    got = duckdb.sql(
        f"select dataset, count(*) from read_parquet('{glob}', hive_partitioning=true) "
        "group by dataset order by dataset"
    ).fetchall()
    assert got == [("cifar10", 1), ("cifar100", 1)]


@pytest.mark.parametrize("case", ["missing", "empty", "other_schema"])
def test_bad_stores_give_a_clear_error(tmp_path: Path, case: str):
    root = tmp_path / "store"
    if case != "missing":
        root.mkdir()
    if case == "other_schema":
        pq.write_table(pa.table({"x": [1]}), root / "part.parquet")
    with pytest.raises(StoreError, match=str(root)):
        read_results(root)


def test_readme_documents_every_column():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.M))
    assert set(COLUMN_DOCS) <= documented


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path: Path):
    store = ResultStore(tmp_path)
    kept = store.write(_row("k1"))
    stale = kept.parent / ".k2-5.parquet.0123.tmp"
    stale.write_bytes(b"PAR1 half")
    assert store.remove_stale_temporaries() == 1
    assert not stale.exists() and kept.exists()
