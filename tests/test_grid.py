"""Grids: the named grids' sizes, expansion rules, trial keys, and grid-file validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.core.errors import UnknownNameError, UserError
from sweep.plan.grid import NAMED_GRIDS, TrialConfig, expand, load_grid, sparsity_range


def test_study_sparsities_are_the_twelve_points_from_90_to_95_5_percent():
    points = sparsity_range(0.90, 0.955, 0.005)
    assert len(points) == 12
    assert points[0] == 0.9 and points[-1] == 0.955
    assert points[1] == 0.905


@pytest.mark.parametrize(
    ("name", "trials"),
    [
        ("demo", 405),
        ("paper", 4536),
        ("validation", 3528),
        ("full", 8064),
        ("baselines", 1176),
    ],
)
def test_named_grid_sizes_follow_the_seed_rule(name, trials):
    assert len(expand(load_grid(name), {})) == trials


def test_each_replicate_gets_every_point_and_seeded_repairs_run_once_per_seed():
    trials = expand(load_grid("demo"), {})
    point = [t for t in trials if t.allocation == "erk" and t.sparsity == 0.9]
    by_repair = {
        r: sorted((t.replicate, t.seed) for t in point if t.repair == r)
        for r in {t.repair for t in point}
    }
    seeded = [(r, s) for r in (0, 1, 2) for s in (0, 1)]
    assert by_repair == {
        "none": [(0, 0), (1, 0), (2, 0)],
        "bn_recal": seeded,
        "channel_var_shrink": seeded,
    }


def test_replicates_take_their_own_checkpoint_digest():
    digests = {("fashion_mnist", "resnet20", r): f"{r}" * 64 for r in (0, 1, 2)}
    trials = expand(load_grid("demo"), digests)
    assert {(t.replicate, t.checkpoint_sha256) for t in trials} == {
        (r, f"{r}" * 64) for r in (0, 1, 2)
    }
    assert {t.eval_split for t in trials} == {"test"}


def test_trial_key_is_content_addressed():
    first = expand(load_grid("demo"), {("fashion_mnist", "resnet20", 0): "a" * 64})[0]
    again = TrialConfig.from_dict(first.to_dict())
    assert again.key == first.key and len(first.key) == 64
    changed = TrialConfig.from_dict({**first.to_dict(), "checkpoint_sha256": "b" * 64})
    assert changed.key != first.key
    digests = {("fashion_mnist", "resnet20", r): f"{r}" * 64 for r in (0, 1, 2)}
    keys = [t.key for t in expand(load_grid("demo"), digests)]
    assert len(set(keys)) == len(keys)


def test_key_needs_a_checkpoint_digest():
    trial = expand(load_grid("demo"), {})[0]
    with pytest.raises(ValueError, match="checkpoint digest"):
        _ = trial.key


def test_grid_file_round_trip(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk, lamp]\n"
        "sparsities: {start: 0.9, stop: 0.92, step: 0.01}\n"
        "repairs: [none, {method: bn_recal}]\nseeds: [0, 1]\ncalib_size: 64\neval_limit: 100\n"
    )
    grid = load_grid(str(path))
    assert grid.name == "tiny"
    assert grid.sparsities == (0.9, 0.91, 0.92)
    assert len(expand(grid, {})) == 2 * 3 * (1 + 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "datasets: [mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\n",
            "unknown dataset 'mnist'",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet19]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\n",
            "unknown arch 'resnet19'",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erkk]\nsparsities: [0.9]\n"
            "repairs: [none]\n",
            "unknown allocation 'erkk'",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [1.0]\n"
            "repairs: [none]\n",
            "sparsity 1.0 is outside",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [bn_recall]\n",
            "bn_recall",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\ncolour: red\n",
            "unknown field",
        ),
        ("datasets: fashion_mnist\n", "must be a non-empty list"),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\nreplicates: []\n",
            "'replicates' must be a non-empty list; got \\[\\]",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\nreplicates: [0, -1]\n",
            "replicate -1 must be a non-negative integer",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\nreplicates: [0, one]\n",
            "replicates must be an integer; got 'one'",
        ),
        (
            "datasets: [fashion_mnist]\narchs: [resnet20]\nallocations: [erk]\nsparsities: [0.9]\n"
            "repairs: [none]\neval_split: train\n",
            "unknown eval_split 'train'; expected one of: test, val",
        ),
    ],
)
def test_bad_grid_files_name_the_bad_value(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_grid(str(path))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("datasets: [fashion_mnist\narchs: [resnet20]\n", "line 2, column 6"),
        ("datasets: [a, b]\n  archs: x\n", "line 2, column 3"),
        ("repairs: {method: none\n", "line 2, column 1"),
    ],
)
def test_a_malformed_grid_file_is_one_line_with_line_and_column(tmp_path: Path, text, where):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_grid(str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and where in message
    assert "expected" in message


def test_every_problem_is_reported_at_once(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "datasets: [mnist]\narchs: [resnet19]\nallocations: [erk]\nsparsities: [0.9]\n"
        "repairs: [none]\n"
    )
    with pytest.raises(UserError) as caught:
        load_grid(str(path))
    assert "mnist" in str(caught.value) and "resnet19" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_grid_name_lists_the_named_grids():
    with pytest.raises(UnknownNameError) as caught:
        load_grid("fulll")
    assert all(name in str(caught.value) for name in NAMED_GRIDS)
