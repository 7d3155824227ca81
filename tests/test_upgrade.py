"""A store written by prune-sweep before canonical keys (key schema 1) stays usable.

`tests/fixtures/legacy_store_v1/` was written by `python -m sweep.launch --grid
tests/fixtures/legacy_store_v1.yaml` at commit 96411d7, on a ResNet-18 checkpoint that
`_legacy_checkpoint` rebuilds byte for byte (seeded weights, saved under its final name). Its
grid spells `channel_var_shrink` twice (bare and with `recal_after: false`), so the old store
holds 8 rows for 6 trials.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from support import needs_fashion_mnist

from sweep import launch, upgrade
from sweep.plan.identity import KEY_SCHEMA
from sweep.results.store import ResultStore, StoreError, read_results
from sweep.tasks import models
from sweep.tasks.datasets.holdout import holdout

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_STORE = FIXTURES / "legacy_store_v1"
LEGACY_GRID = FIXTURES / "legacy_store_v1.yaml"


def _legacy_checkpoint(root: Path) -> str:
    """The fixture's dense checkpoint, rebuilt: same seed, same file name, same bytes."""
    torch.manual_seed(0)
    model = models.build_model("resnet18", num_classes=10, in_channels=1, image_size=28)
    then = root / "fashion_mnist" / "resnet18.pt"
    then.parent.mkdir(parents=True)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, then)
    path = then.rename(models.checkpoint_path(root, "fashion_mnist", "resnet18", 0))
    meta = models.CheckpointMeta(
        arch="resnet18", dataset="fashion_mnist", num_classes=10, in_channels=1, image_size=28,
        sha256=models.file_sha256(path), seed=0, held_out=holdout("fashion_mnist", 60000).record(),
    )  # fmt: skip
    models.sidecar_path(path).write_text(json.dumps(dataclasses.asdict(meta)))
    return meta.sha256


@pytest.fixture
def legacy(tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the legacy store, the checkpoint folder it was made with)."""
    store = tmp_path / "legacy"
    shutil.copytree(LEGACY_STORE, store)
    sha = _legacy_checkpoint(tmp_path / "checkpoints")
    old = pq.read_table(next(store.rglob("*.parquet"))).column("checkpoint_sha256").to_pylist()
    assert set(old) == {sha}, "the rebuilt checkpoint differs from the fixture's"
    return store, tmp_path / "checkpoints"


def _old_rows() -> pd.DataFrame:
    return pq.read_table(next(LEGACY_STORE.rglob("*.parquet"))).to_pandas()


def test_the_fixture_is_small_and_of_key_schema_1():
    files = list(LEGACY_STORE.rglob("*"))
    assert sum(p.stat().st_size for p in files if p.is_file()) < 100_000
    assert "key_schema" not in pq.read_schema(next(LEGACY_STORE.rglob("*.parquet"))).names
    assert len(_old_rows()) == 8


def test_the_analysis_names_the_upgrade_command_for_an_old_store(legacy):
    store, _ = legacy
    with pytest.raises(StoreError, match="python -m sweep.upgrade"):
        read_results(store)


def test_upgrade_maps_both_spellings_to_one_key_and_keeps_every_measurement(legacy, capsys):
    store, _ = legacy
    assert upgrade.main([str(store), "--dry-run"]) == 0
    assert "would upgrade 8 rows (6 trials)" in capsys.readouterr().out
    assert ResultStore(store).legacy_files()  # a dry run writes nothing

    assert upgrade.main([str(store)]) == 0
    frame = read_results(store)
    assert len(frame) == 6 and frame["trial_key"].is_unique
    assert set(frame["key_schema"]) == {KEY_SCHEMA}
    assert sorted(frame["repair_variant"].unique()) == ["bn_recal", "channel_var_shrink", "none"]
    old = _old_rows()
    for column in ("top1", "nll", "kl", "agreement"):
        assert set(frame[column]) <= set(old[column])
    backup = store.with_name(store.name + upgrade.BACKUP_SUFFIX)
    assert len(list(backup.rglob("*.parquet"))) == 1
    assert upgrade.main([str(store)]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out


def test_a_dry_run_counts_the_old_rows_as_done(legacy, tmp_path: Path, capsys):
    store, checkpoints = legacy
    code = launch.main(
        ["--grid", str(LEGACY_GRID), "--store", str(store), "--checkpoints", str(checkpoints),
         "--dry-run", "--format", "json"]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["trials"] == 6 and summary["done"] == 6
    assert summary["legacy_store_files"] == 1


@needs_fashion_mnist
def test_resuming_an_old_store_runs_only_the_new_trials(legacy, tmp_path: Path, capsys):
    store, checkpoints = legacy
    grid = yaml.safe_load(LEGACY_GRID.read_text()) | {"sparsities": [0.5, 0.7, 0.9]}
    grid_file = tmp_path / "legacy.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    code = launch.main(
        ["--grid", str(grid_file), "--store", str(store), "--checkpoints", str(checkpoints),
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    assert "upgraded 8 rows" in output
    assert "9 trials, 6 already done, 3 to run" in output
    frame = read_results(store)
    assert len(frame) == 9 and set(frame["status"]) == {"ok"}
    assert sorted(frame.loc[frame["sparsity"] == 0.7, "repair_variant"]) == [
        "bn_recal", "channel_var_shrink", "none",
    ]  # fmt: skip
    old_finished = set(_old_rows()["finished_at"])
    assert frame.loc[frame["sparsity"] != 0.7, "finished_at"].isin(old_finished).all()


def _damaged_only(root: Path) -> None:
    bad = root / "dataset=fashion_mnist" / "arch=resnet20" / "part-0.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 and then the disk filled up")


def _other_files(root: Path) -> None:
    root.mkdir()
    (root / "notes.txt").write_text("not a result store\n")


NOT_A_STORE = {
    "missing folder": (lambda root: None, "does not exist"),
    "a folder of other files": (_other_files, "is not a prune-sweep result store"),
    "only damaged files": (_damaged_only, "(all 1 Parquet files are damaged)"),
}


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("case", sorted(NOT_A_STORE))
def test_a_folder_that_is_not_a_store_exits_2_in_one_line_and_is_left_alone(
    case: str, dry_run: bool, tmp_path: Path, capsys
):
    root = tmp_path / "store"
    make, message = NOT_A_STORE[case]
    make(root)
    before = sorted(tmp_path.rglob("*"))
    code = upgrade.main([str(root), *(["--dry-run"] if dry_run else [])])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and len(lines) == 1
    assert message in lines[0] and str(root) in lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # no backup, nothing moved
