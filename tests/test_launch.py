"""The launcher end to end on a real local Ray with logical GPUs and real Parquet files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from support import needs_fashion_mnist, write_grid

from sweep import launch
from sweep.core.plugins import PLUGINS_ENV
from sweep.plan.grid import expand, load_grid
from sweep.results.store import read_results
from sweep.run.trial import TrialContext, run_trial
from sweep.tasks import models

PLUGIN = Path(__file__).parent / "plugins" / "faulty_repairs.py"


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray for the module: 2 CPUs and 2 logical GPUs (CUDA is absent, pinning is not)."""
    os.environ[PLUGINS_ENV] = str(PLUGIN)
    os.environ["PRUNE_SWEEP_TEST_MARKERS"] = str(tmp_path_factory.mktemp("markers"))
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    del os.environ[PLUGINS_ENV]


def _launch(grid: Path, out: Path, checkpoints: Path, cache: Path, *extra: str) -> int:
    return launch.main(
        ["--grid", str(grid), "--store", str(out), "--checkpoints", str(checkpoints),
         "--cache-dir", str(cache), *extra]
    )  # fmt: skip


@needs_fashion_mnist
def test_tiny_grid_end_to_end_with_fractional_gpus_then_resume(
    local_ray, tmp_path: Path, checkpoint_dir: Path, capsys
):
    grid = write_grid(
        tmp_path / "tiny.yaml", repairs=["none", "bn_recal", "channel_var_shrink"], seeds=[0, 1]
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert _launch(grid, out, checkpoint_dir, cache, "--gpus-per-trial", "0.5") == 0

    frame = read_results(out)
    assert len(frame) == 2 * 2 * (1 + 2 + 2)
    assert set(frame["status"]) == {"ok"}
    assert frame["trial_key"].is_unique
    # Half a GPU per trial: Ray pins each trial to exactly one of the two logical GPUs.
    assert all(len(ids) == 1 and ids[0] in {"0", "1"} for ids in frame["gpu_ids"])
    assert set(frame["device"]) == {"cpu"}  # no CUDA here: pinned, but computed on the CPU
    assert set(frame["eval_precision"]) == {"fp32"}  # bf16 autocast is for CUDA only
    assert (frame["achieved_sparsity"] - frame["sparsity"]).abs().max() < 1e-3
    assert frame["eval_size"].eq(64).all()
    shrink = frame[frame["repair"] == "channel_var_shrink"]
    assert (shrink["repair_extra_params"] > 0).all()
    assert frame.loc[frame["repair"] == "none", "calib_size"].eq(0).all()
    # Shared work ran once per node: one mask set per (allocation, sparsity), one dense-stats
    # per calibration seed, one dense-logits set.
    filled = [line.split("\t")[:2] for line in (cache / "fills.log").read_text().splitlines()]
    fills = [kind for kind, _ in filled]
    assert fills.count("masks") == 4 and fills.count("dense_stats") == 2
    assert fills.count("dense_logits") == 1
    # The eval precision is part of the dense logits' key: bf16 logits never serve fp32 trials.
    assert next(key for kind, key in filled if kind == "dense_logits").endswith("-fp32")

    _assert_rows_equal_in_process_trials(frame, grid, checkpoint_dir, cache)

    capsys.readouterr()
    files_before = sorted(out.rglob("*.parquet"))
    assert _launch(grid, out, checkpoint_dir, cache) == 0
    assert "all 20 trials already done" in capsys.readouterr().out
    assert sorted(out.rglob("*.parquet")) == files_before


METRICS = ("top1", "nll", "agreement", "kl", "dense_top1", "achieved_sparsity")


def _assert_rows_equal_in_process_trials(
    frame: pd.DataFrame, grid: Path, checkpoints: Path, cache: Path
) -> None:
    """A row written through Ray equals the same trial run in this process by the library."""
    sha = models.read_meta(
        models.checkpoint_path(checkpoints, "fashion_mnist", "resnet20", 0)
    ).sha256
    trials = {
        t.key: t for t in expand(load_grid(str(grid)), {("fashion_mnist", "resnet20", 0): sha})
    }
    assert set(frame["trial_key"]) == set(trials)
    context = TrialContext(checkpoints, None, cache, grid="in-process")
    for repair in ("none", "bn_recal", "channel_var_shrink"):
        row = frame[frame["repair"] == repair].iloc[0]
        local = run_trial(trials[row["trial_key"]], context).measurements
        assert local["eval_size"] == row["eval_size"]
        assert local["layer_density"] == pytest.approx(list(row["layer_density"]))
        for metric in METRICS:
            assert local[metric] == pytest.approx(row[metric], rel=1e-4, abs=1e-6), (repair, metric)


@needs_fashion_mnist
def test_each_replicate_runs_on_its_own_checkpoint_and_rows_keep_every_image(
    local_ray, tmp_path: Path, checkpoint_dir: Path
):
    grid = write_grid(
        tmp_path / "reps.yaml", allocations=["erk"], sparsities=[0.9], repairs=["bn_recal"],
        replicates=[0, 1], seeds=[0, 1],
    )  # fmt: skip
    out = tmp_path / "out"
    assert _launch(grid, out, checkpoint_dir, tmp_path / "cache") == 0
    frame = read_results(out).sort_values(["replicate", "seed"])
    assert list(zip(frame["replicate"], frame["seed"], strict=True)) == [
        (0, 0), (0, 1), (1, 0), (1, 1),
    ]  # fmt: skip
    shas = {
        r: models.read_meta(models.checkpoint_path(checkpoint_dir, "fashion_mnist", "resnet20", r))
        for r in (0, 1)
    }
    for _, row in frame.iterrows():
        assert row["checkpoint_sha256"] == shas[row["replicate"]].sha256
        assert row["eval_split"] == "test"
        assert len(row["predictions"]) == row["eval_size"] == 64
        correct = np.unpackbits(np.frombuffer(row["correct"], np.uint8), count=64)
        assert correct.mean() == pytest.approx(row["top1"])
    # Each replicate's dense accuracy is its own; the calibration seed does not change it.
    dense = frame.groupby("replicate")["dense_top1"].agg(["nunique", "first"])
    assert list(dense["nunique"]) == [1, 1]


@needs_fashion_mnist
def test_whole_gpus_per_trial_are_pinned(local_ray, tmp_path: Path, checkpoint_dir: Path):
    grid = write_grid(tmp_path / "g.yaml", allocations=["erk"], sparsities=[0.9], repairs=["none"])
    out = tmp_path / "out"
    assert _launch(grid, out, checkpoint_dir, tmp_path / "c", "--gpus-per-trial", "2") == 0
    assert sorted(read_results(out)["gpu_ids"].iloc[0]) == ["0", "1"]


@needs_fashion_mnist
def test_failing_trial_is_retried_then_recorded_while_the_rest_finish(
    local_ray, tmp_path: Path, checkpoint_dir: Path, capsys
):
    grid = write_grid(
        tmp_path / "faulty.yaml",
        allocations=["erk"],
        sparsities=[0.9],
        repairs=["none", "fail_always", "fail_once"],
    )
    out = tmp_path / "out"
    assert _launch(grid, out, checkpoint_dir, tmp_path / "cache", "--retries", "1") == 1
    frame = read_results(out).set_index("repair")
    assert frame.loc["none", "status"] == "ok"
    assert frame.loc["fail_once", "status"] == "ok"
    assert frame.loc["fail_once", "attempts"] == 2
    failed = frame.loc["fail_always"]
    assert failed["status"] == "error" and failed["attempts"] == 2
    assert "RuntimeError: injected failure" in failed["error"]
    assert "fail_always" in capsys.readouterr().err

    # A rerun retries only the errored trial.
    before = read_results(out).set_index("trial_key")["finished_at"]
    assert _launch(grid, out, checkpoint_dir, tmp_path / "cache", "--retries", "0") == 1
    after = read_results(out).set_index("trial_key")["finished_at"]
    changed = after[after != before.reindex(after.index)].index
    assert list(changed) == [failed["trial_key"]]


def test_dry_run_needs_no_data_checkpoints_or_ray(tmp_path: Path, capsys):
    code = launch.main(
        ["--grid", "paper", "--dry-run", "--format", "json", "--store", str(tmp_path / "out"),
         "--checkpoints", str(tmp_path / "none"), "--data-root", str(tmp_path / "nodata")]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["trials"] == 4536 and summary["done"] == 0
    assert "cifar10" in summary["missing"]["data"]
    assert "cifar10/resnet18 seed 2" in summary["missing"]["checkpoints"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "papr"], "unknown grid 'papr'"),
        (["--grid", "paper"], "data for 'cifar10' is missing"),
        (["--grid", "paper"], "no checkpoint for cifar10/resnet18"),
        (["--grid", "demo", "--gpus-per-trial", "-1"], "--gpus-per-trial -1"),
        (["--grid", "demo", "--max-concurrent", "0"], "--max-concurrent 0"),
    ],
)
def test_preflight_errors_exit_2_and_write_nothing(tmp_path: Path, capsys, args, message):
    out = tmp_path / "out"
    code = launch.main(
        [*args, "--store", str(out), "--checkpoints", str(tmp_path / "none"),
         "--data-root", str(tmp_path / "nodata")]
    )  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@needs_fashion_mnist
def test_a_second_driver_on_the_same_store_is_refused(tmp_path: Path, checkpoint_dir: Path, capsys):
    import fcntl

    grid, out = write_grid(tmp_path / "g.yaml"), tmp_path / "out"
    with open(tmp_path / ".out.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _launch(grid, out, checkpoint_dir, tmp_path / "cache") == 2
    assert "another sweep is writing to this store" in capsys.readouterr().err
    assert not out.exists()
