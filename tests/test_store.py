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
from synthetic_store import DAMAGE_KINDS, damage, make_row, write_key_schema_1

from sweep.plan.identity import KEY_SCHEMA
from sweep.results.legacy import upgrade_store
from sweep.results.schema import COLUMN_DOCS, FILE_SCHEMA, RESULT_SCHEMA
from sweep.results.store import ResultStore, StoreError, open_store, read_results

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


# --- damaged files and stores of trial-key schema 1 ---------------------------------------------

REASONS = {
    "truncated": "truncated or corrupt Parquet file (",
    "not_parquet": "not a Parquet file (",
    "foreign_schema": "not a prune-sweep result file (missing columns trial_key, key_schema",
}


def _store_with_rows(root: Path, count: int = 3) -> ResultStore:
    store = ResultStore(root)
    for i in range(count):
        store.write(_row(f"k{i}", minutes=i, sparsity=0.9 + i / 100))
    return store


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_a_damaged_file_is_named_skipped_and_left_alone(tmp_path: Path, kind: str, capsys):
    store = _store_with_rows(tmp_path)
    bad = damage(tmp_path, kind)
    before = bad.read_bytes()
    (reported,) = store.damaged_files()
    assert reported[0] == bad and reported[1].startswith(REASONS[kind])
    assert "\n" not in reported[1] and store.legacy_files() == []
    frame = read_results(tmp_path, ["trial_key"])
    assert sorted(frame["trial_key"]) == ["k0", "k1", "k2"]
    assert capsys.readouterr().err == f"skipped damaged file {bad}: {reported[1]}\n"
    assert store.compact() == 3  # the three good files merged into one, the bad one untouched
    assert bad.read_bytes() == before
    assert len(store.files()) == 2 and store.damaged_files() == [reported]
    assert sorted(open_store(tmp_path).read(["trial_key"])["trial_key"]) == ["k0", "k1", "k2"]


def test_a_column_of_the_wrong_type_makes_a_file_damaged(tmp_path: Path):
    _store_with_rows(tmp_path, 1)
    table = pq.read_table(ResultStore(tmp_path).files()[0])
    column = table.schema.get_field_index("sparsity")
    retyped = table.set_column(column, "sparsity", pa.array(["0.9"]))
    pq.write_table(retyped, tmp_path / "dataset=cifar10" / "arch=resnet18" / "retyped.parquet")
    ((path, reason),) = ResultStore(tmp_path).damaged_files()
    assert path.name == "retyped.parquet" and "sparsity is string, expected double" in reason


def test_a_store_of_only_damaged_files_is_refused_in_one_line(tmp_path: Path):
    _store_with_rows(tmp_path, 1)
    bad = damage(tmp_path, "not_parquet")
    for path in ResultStore(tmp_path).files():
        if path != bad:
            path.unlink()
    with pytest.raises(StoreError, match="none of its 1 Parquet files is readable") as error:
        read_results(tmp_path)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)


def test_a_key_schema_1_store_is_not_damaged_but_must_be_upgraded(tmp_path: Path):
    root = write_key_schema_1(tmp_path / "old", [_row("k1"), _row("k2", dataset="cifar100")])
    store = ResultStore(root)
    assert store.damaged_files() == []
    assert store.legacy_files() == store.files() and len(store.files()) == 2
    with pytest.raises(StoreError) as error:
        read_results(root)
    assert str(error.value) == (
        f"result store {str(root)!r} was written by an older prune-sweep (trial-key schema "
        f"before {KEY_SCHEMA}); upgrade it with python -m sweep.upgrade {root} (a backup is kept)"
    )
    assert store.compact() == 0 and len(store.files()) == 2
    assert store.finished_keys() == set()  # schema-1 rows are sweep.upgrade's to translate
    store.write(_row("k3"))
    assert store.finished_keys() == {"k3"}


def test_writes_go_through_one_atomic_helper(tmp_path: Path, monkeypatch):
    import sweep.core.atomic
    import sweep.results.store

    calls = []
    real = sweep.core.atomic.atomic_write

    def spy(target, write):
        calls.append(Path(target))
        return real(target, write)

    monkeypatch.setattr(sweep.results.store, "atomic_write", spy)
    store = ResultStore(tmp_path)
    written = [store.write(_row("a")), *store.write_many([_row("b"), _row("c", minutes=1)])]
    store.compact()
    assert calls[:2] == written and len(calls) == 3


def test_a_key_schema_2_file_is_upgraded_to_a_key_that_holds_its_eval_precision(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.write(_row("new", minutes=1))
    # Written before eval_precision and dense_correct were columns, on a GPU.
    later = {"eval_precision", "dense_correct"}
    old = _row("old", device="cuda:0") | {"key_schema": 2}
    fields = [f for f in FILE_SCHEMA if f.name not in later]
    directory = tmp_path / "dataset=cifar10" / "arch=resnet18"
    pq.write_table(
        pa.table({f.name: [old[f.name]] for f in fields}, schema=pa.schema(fields)),
        directory / "part-old.parquet",
    )
    survey = store.survey()
    assert len(survey.usable) == 1 and len(survey.legacy) == 1 and not survey.damaged
    with pytest.raises(StoreError, match="python -m sweep.upgrade"):
        read_results(tmp_path)

    report = upgrade_store(store)
    assert report.rows == 1 and not store.legacy_files()
    frame = read_results(tmp_path)
    upgraded = frame[frame["trial_key"] != "new"].iloc[0]
    assert upgraded["key_schema"] == KEY_SCHEMA and upgraded["eval_precision"] == "bf16"
    assert upgraded["trial_key"] != "old" and upgraded["top1"] == old["top1"]
    assert upgraded["dense_correct"] is None  # not recorded before key schema 3


def test_a_file_of_todays_key_schema_without_a_column_is_damaged(tmp_path: Path):
    row = _row("k")
    fields = [f for f in FILE_SCHEMA if f.name != "dense_correct"]
    path = tmp_path / "dataset=cifar10" / "arch=resnet18" / "part.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(
        pa.table({f.name: [row[f.name]] for f in fields}, schema=pa.schema(fields)), path
    )
    assert [reason for _, reason in ResultStore(tmp_path).damaged_files()] == [
        "not a prune-sweep result file (missing columns dense_correct)"
    ]
