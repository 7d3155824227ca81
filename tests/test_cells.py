"""Cells, the unit a sweep schedules: grouping, chunking, and a restarted trial that runs only
the points whose rows have not landed (real Ray, a worker process that really dies)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import ray
from support import needs_fashion_mnist, write_grid

from sweep import launch
from sweep.core.errors import UserError
from sweep.core.plugins import PLUGINS_ENV
from sweep.plan.cells import (
    MAX_TRIALS,
    Cell,
    cell_of,
    cells_per_trial,
    chunk_cells,
    decode_chunk,
    encode_chunk,
    group_cells,
)
from sweep.plan.device_fit import check_fits, resident_bytes
from sweep.plan.grid import DEMO, PAPER, expand
from sweep.results.store import read_results

PLUGIN = Path(__file__).parent / "plugins" / "crash_cell.py"


def _demo_points(replicates: tuple[int, ...] = (0, 1, 2)) -> list:
    digests = {("fashion_mnist", "resnet20", r): f"{r:064x}" for r in replicates}
    return expand(replace(DEMO, replicates=replicates), digests)


def test_the_demo_grid_is_81_cells_of_5_points_each_of_one_pruned_model():
    points = _demo_points()
    cells = group_cells(points)
    assert len(points) == 405 and len(cells) == 3 * 3 * 9
    assert {len(cell.points) for cell in cells} == {5}  # none + 2 repairs × 2 seeds
    assert sorted(p.key for c in cells for p in c.points) == sorted(p.key for p in points)
    for cell in cells:
        assert len({cell_of(p) for p in cell.points}) == 1
    # Cells of one checkpoint are next to each other, so a chunk never spans two checkpoints.
    replicates = [cell.head.replicate for cell in cells]
    assert replicates == sorted(replicates)


def test_a_cell_refuses_points_of_two_pruned_models():
    points = _demo_points((0,))
    other = next(p for p in points if p.sparsity != points[0].sparsity)
    with pytest.raises(ValueError, match="one pruned model"):
        Cell((points[0], other))


def test_chunks_hold_cells_of_one_checkpoint_and_at_most_the_asked_number():
    cells = group_cells(_demo_points())
    chunks = chunk_cells(cells, 4)
    assert [c for chunk in chunks for c in chunk] == cells
    assert all(len(chunk) <= 4 for chunk in chunks)
    assert all(len({c.head.replicate for c in chunk}) == 1 for chunk in chunks)
    assert len(chunks) == 3 * 7  # 27 cells per checkpoint: 6 chunks of 4 and one of 3


def test_a_large_grid_is_packed_to_at_most_max_trials_trials():
    assert cells_per_trial(81, None) == 1
    assert cells_per_trial(81, 5) == 5
    per = cells_per_trial(22_000, None)
    assert per * MAX_TRIALS >= 22_000 and (per - 1) * MAX_TRIALS < 22_000


def test_a_chunk_travels_as_bytes_and_comes_back_with_the_same_keys():
    chunk = tuple(group_cells(_demo_points((0,)))[:3])
    blob = encode_chunk(chunk)
    assert isinstance(blob, bytes)
    back = decode_chunk(blob)
    assert [[p.key for p in c.points] for c in back] == [[p.key for p in c.points] for c in chunk]


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "two"])
def test_a_bad_cells_per_trial_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys, value: str
):
    grid = write_grid(tmp_path / "g.yaml")
    out = tmp_path / "out"
    code = launch.main(
        ["--grid", str(grid), "--store", str(out), "--cells-per-trial", value, "--dry-run"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "cells-per-trial" in err and value in err
    assert not out.exists()


def test_a_cell_that_cannot_fit_its_gpu_share_is_refused_up_front():
    grid = replace(PAPER, pairs=(("imagenette", "resnet50"),))
    weights = {("imagenette", "resnet50"): 25_557_032}
    need = resident_bytes(grid, "imagenette", weights[("imagenette", "resnet50")])
    # 3925 eval images of 3x224x224 uint8 + 1024 float32 calibration images + 3 weight copies
    assert need == 3925 * 150_528 + 1024 * 150_528 * 4 + 3 * 25_557_032 * 4
    card = 24 * 2**30
    check_fits(grid, 0.5, card, "A10G", weights)  # 12 GiB: fits
    with pytest.raises(UserError) as error:
        check_fits(grid, 0.05, card, "A10G", weights)
    text = str(error.value)
    assert "imagenette/resnet50" in text and "--gpus-per-trial 0.05" in text and "1.20 GiB" in text


@pytest.fixture
def crash_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(PLUGINS_ENV, str(PLUGIN))
    monkeypatch.setenv("PRUNE_SWEEP_TEST_MARKERS", str(markers))
    ray.init(num_cpus=1, include_dashboard=False)
    yield markers
    ray.shutdown()


@needs_fashion_mnist
def test_a_restarted_trial_runs_only_the_cells_whose_rows_have_not_landed(
    crash_ray: Path, tmp_path: Path, checkpoint_dir: Path
):
    # One trial, two cells: at 0.5 both points land; at 0.9 `crash_if_sparse` kills the worker
    # once. Tune restarts the trial; the restart must skip the first cell.
    grid = write_grid(
        tmp_path / "g.yaml", allocations=["erk"], sparsities=[0.5, 0.9],
        repairs=["log_run", "crash_if_sparse"],
    )  # fmt: skip
    out = tmp_path / "out"
    code = launch.main(
        ["--grid", str(grid), "--store", str(out), "--checkpoints", str(checkpoint_dir),
         "--cache-dir", str(tmp_path / "cache"), "--cells-per-trial", "2", "--retries", "1"]
    )  # fmt: skip
    assert code == 0
    assert (crash_ray / "crashed").exists()
    frame = read_results(out)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    attempts = frame.groupby("sparsity")["attempts"].agg(set).to_dict()
    assert attempts == {0.5: {1}, 0.9: {2}}
    runs = (crash_ray / "runs.log").read_text().split()
    # log_run ran once in the first cell and twice in the second (before and after the crash).
    assert len(runs) == 3 and sum(float(d) > 0.4 for d in runs) == 1
