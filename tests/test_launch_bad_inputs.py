"""Bad input to `python -m sweep.launch`: one line naming the bad value, exit 2, before Ray starts,
and nothing written or moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ray
from support import needs_fashion_mnist, write_grid

from sweep import launch
from sweep.tasks import models


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _checkpoint_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return models.checkpoint_path(target, "fashion_mnist", "resnet20", 0)


def _truncate(path: Path) -> str:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def _not_torch(path: Path) -> str:
    """A text file with a sidecar that vouches for it: only opening it shows it is no torch file."""
    path.write_text("these are not weights\n")
    sidecar = models.sidecar_path(path)
    sidecar.write_text(
        sidecar.read_text().replace(models.read_meta(path).sha256, models.file_sha256(path))
    )
    return str(path)


def _no_sidecar(path: Path) -> str:
    models.sidecar_path(path).unlink()
    return str(models.sidecar_path(path))


def _damaged_store(out: Path) -> str:
    bad = out / "dataset=fashion_mnist" / "arch=resnet20" / "half-written.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 and then the disk filled up")
    return bad.name


CHECKPOINT_DAMAGE = {
    "truncated": _truncate,
    "not a torch file": _not_torch,
    "no sidecar": _no_sidecar,
}


@needs_fashion_mnist
@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_stops_the_launch_before_ray_naming_the_file(
    damage: str, tmp_path: Path, checkpoint_dir: Path, capsys
):
    path = _checkpoint_copy(checkpoint_dir, tmp_path / "ckpt")
    named = CHECKPOINT_DAMAGE[damage](path)
    before = _tree(tmp_path)
    out = tmp_path / "out"
    code = launch.main(
        ["--grid", str(write_grid(tmp_path / "g.yaml")), "--store", str(out),
         "--checkpoints", str(tmp_path / "ckpt")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not ray.is_initialized()
    assert named in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert {k: v for k, v in _tree(tmp_path).items() if k != "g.yaml"} == {
        k: v for k, v in before.items() if k != "g.yaml"
    }


@needs_fashion_mnist
def test_a_damaged_store_file_stops_the_launch_naming_it(tmp_path: Path, checkpoint_dir, capsys):
    out = tmp_path / "out"
    name = _damaged_store(out)
    before = _tree(out)
    code = launch.main(
        ["--grid", str(write_grid(tmp_path / "g.yaml")), "--store", str(out),
         "--checkpoints", str(checkpoint_dir)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not ray.is_initialized()
    assert name in err and len(err.strip().splitlines()) == 1
    assert _tree(out) == before


@needs_fashion_mnist
def test_a_val_split_grid_refuses_a_checkpoint_that_held_out_other_images(
    tmp_path: Path, checkpoint_dir: Path, capsys
):
    path = _checkpoint_copy(checkpoint_dir, tmp_path / "ckpt")
    grid = write_grid(tmp_path / "g.yaml", eval_split="val")
    argv = ["--grid", str(grid), "--checkpoints", str(tmp_path / "ckpt"), "--dry-run"]
    assert launch.main(argv) == 0
    assert "bad checkpoint" not in capsys.readouterr().out  # it held out this copy's val split
    sidecar = models.sidecar_path(path)
    meta = json.loads(sidecar.read_text())
    meta["held_out"]["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert launch.main([*argv[:-1], "--store", str(out)]) == 2
    err = capsys.readouterr().err
    assert "held out another validation split" in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


BAD_GRID_FILES = {
    "unknown repair parameter": (
        {"repairs": [{"method": "channel_var_shrink", "params": {"tua": 0.5}}]},
        "tua",
    ),
    "parameter of the wrong type": (
        {"repairs": [{"method": "channel_var_shrink", "params": {"tau": "big"}}]},
        "tau='big'",
    ),
    "non-positive tau": (
        {"repairs": [{"method": "channel_var_shrink", "params": {"tau": 0}}]},
        "tau",
    ),
    "unknown point set": (
        {"repairs": [{"method": "channel_var", "params": {"points": "most"}}]},
        "'most'",
    ),
    "unknown repair": ({"repairs": ["bn_recall"]}, "bn_recall"),
    "negative sparsity": ({"sparsities": [-0.1]}, "-0.1"),
    "sparsity 1": ({"sparsities": [1.0]}, "1.0"),
    "calib_size 0": ({"calib_size": 0}, "calib_size 0"),
    "eval_limit 0": ({"eval_limit": 0}, "eval_limit 0"),
    "seed not an integer": ({"seeds": [0.5]}, "0.5"),
    "negative resources": ({"resources": {"cpus_per_trial": -1}}, "-1"),
    "unknown resource": ({"resources": {"tpus_per_trial": 1}}, "tpus_per_trial"),
    "unknown dataset": ({"datasets": ["mnist"]}, "mnist"),
    "unknown arch": ({"archs": ["resnet19"]}, "resnet19"),
    "unknown allocation": ({"allocations": ["erkk"]}, "erkk"),
    "empty allocations": ({"allocations": []}, "allocations"),
    "empty replicates": ({"replicates": []}, "replicates"),
    "negative replicate": ({"replicates": [-1]}, "replicate -1"),
    "replicate not an integer": ({"replicates": ["a"]}, "'a'"),
    "unknown eval split": ({"eval_split": "train"}, "eval_split 'train'"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRID_FILES))
def test_a_bad_grid_file_is_one_line_naming_the_value(case: str, tmp_path: Path, capsys):
    fields, named = BAD_GRID_FILES[case]
    out = tmp_path / "out"
    code = launch.main(
        ["--grid", str(write_grid(tmp_path / "g.yaml", **fields)), "--store", str(out),
         "--checkpoints", str(tmp_path / "none")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not ray.is_initialized()


BAD_FLAGS = {
    "unknown grid": (["--grid", "demoo"], "'demoo'"),
    "missing grid file": (["--grid", "nowhere.yaml"], "nowhere.yaml"),
    "negative gpus": (["--grid", "demo", "--gpus-per-trial", "-1"], "--gpus-per-trial -1"),
    "negative cpus": (["--grid", "demo", "--cpus-per-trial", "-2"], "--cpus-per-trial -2"),
    "zero concurrency": (["--grid", "demo", "--max-concurrent", "0"], "--max-concurrent 0"),
    "negative retries": (["--grid", "demo", "--retries", "-1"], "--retries -1"),
    "missing data": (["--grid", "paper", "--data-root", "{tmp}/nodata"], "cifar10"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_a_bad_flag_is_one_line_naming_the_value(case: str, tmp_path: Path, capsys):
    args, named = BAD_FLAGS[case]
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = launch.main([*argv, "--store", str(out), "--checkpoints", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not ray.is_initialized()


def test_a_malformed_grid_file_is_one_line_with_its_position(tmp_path: Path, capsys):
    grid = tmp_path / "broken.yaml"
    grid.write_text("datasets: [fashion_mnist\narchs: [resnet20]\n")
    code = launch.main(["--grid", str(grid), "--store", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "broken.yaml' line 2, column 6" in err


def test_a_store_that_is_a_file_is_one_line_and_the_file_is_left_alone(tmp_path: Path, capsys):
    store = tmp_path / "results.parquet"
    store.write_bytes(b"someone's table")
    before = _tree(tmp_path)
    code = launch.main(
        ["--grid", str(write_grid(tmp_path / "g.yaml")), "--store", str(store),
         "--checkpoints", str(tmp_path / "none")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not ray.is_initialized()
    assert f"--store {store} is a file" in err and len(err.strip().splitlines()) == 1
    assert {k: v for k, v in _tree(tmp_path).items() if k != "g.yaml"} == before  # no lock file


def test_the_old_out_flag_still_names_the_store_with_a_one_line_note(tmp_path: Path, capsys):
    out = tmp_path / "out"
    name = _damaged_store(out)  # the dry run reports it: --out was read as the store
    code = launch.main(
        ["--grid", str(write_grid(tmp_path / "g.yaml")), "--out", str(out),
         "--checkpoints", str(tmp_path / "none"), "--dry-run"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and f"damaged store file: store file {out}" in captured.out
    assert name in captured.out
    assert captured.err.strip().splitlines() == [
        "note: --out is now --store; the old name will go away"
    ]
