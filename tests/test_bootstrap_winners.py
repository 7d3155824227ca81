"""Replicate-aware statistics on hand-built stores: winners only outside the noise, 'both at
chance' (one margin), no verdict from a single replicate, replicate sign agreement, r against
each replicate's own dense top-1 (moving with it when images are resampled), τ lists, and stores
that mix eval sets or whose per-image results do not match their rows.

Per-image results are built explicitly where a test needs to know them (`correct=`), or follow
the synthetic generator (`synthetic_store` module docstring)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_store import curve_rows, make_row

from analysis import figures
from analysis.intervals import t_quantile
from analysis.loading import load_results
from analysis.regimes import main, regime_table
from analysis.report import main as report_main
from sweep.results.store import ResultStore

GRID = [0.90, 0.92]


def write(tmp_path: Path, rows: list[dict]) -> Path:
    root = tmp_path / "results"
    ResultStore(root).write_many(rows)
    return root


def analyse(tmp_path: Path, rows: list[dict], tau: float | str = 0.5):
    return regime_table(load_results(write(tmp_path, rows)).frame, tau)


def arms(r_lamp: dict[int, list[float]], r_erk: dict[int, list[float]], **fields) -> list[dict]:
    """bn_recal rows of LAMP and ERK per replicate: {replicate: r per seed}, same r at each
    sparsity of GRID."""
    rows = []
    for allocation, per_replicate in (("lamp", r_lamp), ("erk", r_erk)):
        for replicate, by_seed in per_replicate.items():
            rows += curve_rows(
                [[r] * len(GRID) for r in by_seed],
                GRID,
                repair="bn_recal",
                allocation=allocation,
                replicate=replicate,
                **fields,
            )
    return rows


def nested_arms(base: float, extra: float, images: int = 2000, replicates: int = 4) -> list[dict]:
    """ERK right on random images, as many as base · images shifted by ±0.5 or ±0.25 points per
    replicate (the replicates vary; their mean is exactly base), LAMP on those plus exactly
    round(extra · the others) more: LAMP is better on every replicate and every image, by the
    same amount everywhere."""
    rng = np.random.default_rng(5)
    shifts = (0.005, -0.005, 0.0025, -0.0025)  # sum 0 over every 4 replicates
    rows = []
    for replicate in range(replicates):
        for seed in range(2):
            order = rng.permutation(images)
            right = round((base + shifts[replicate % 4]) * images)
            erk = np.zeros(images, bool)
            erk[order[:right]] = True
            lamp = erk.copy()
            lamp[order[right : right + round(extra * (images - right))]] = True
            for allocation, correct in (("erk", erk), ("lamp", lamp)):
                rows.append(
                    make_row(
                        allocation=allocation,
                        repair="bn_recal",
                        replicate=replicate,
                        seed=seed,
                        eval_size=images,
                        correct=correct,
                        top1=float(correct.mean()),
                        num_classes=10,
                        dense_top1=0.9,
                    )
                )
    return rows


def test_arms_that_differ_only_by_replicate_noise_have_no_winner(tmp_path):
    # Each replicate moves LAMP up and ERK down by the same amount, or the reverse: per-replicate
    # differences ±0.1, ±0.06, ±0.02, mean 0. Large next to the image noise, and no true effect.
    shifts = [0.05, -0.05, 0.03, -0.03, 0.01, -0.01]
    lamp = {k: [0.6 + d, 0.6 + d] for k, d in enumerate(shifts)}
    erk = {k: [0.6 - d, 0.6 - d] for k, d in enumerate(shifts)}
    tables = analyse(tmp_path, arms(lamp, erk))
    comparison = tables.comparison
    assert set(comparison["winner"]) == {"no winner"}
    assert (comparison["diff_lo"] < 0).all() and (comparison["diff_hi"] > 0).all()
    assert (comparison["replicates"] == 6).all()
    letters = {cell for row in figures.difference_map(tables)["data"][0]["text"] for cell in row}
    assert letters == {"="}  # the report's map: no L, no E


def test_an_arm_better_on_every_replicate_and_image_wins(tmp_path):
    comparison = analyse(tmp_path, nested_arms(0.5, 0.1)).comparison
    assert set(comparison["winner"]) == {"lamp"}
    assert (comparison["diff_lo"] > 0).all()
    assert (comparison["replicate_agreement"] == 1.0).all()


def test_both_arms_at_chance_name_no_winner_even_when_the_interval_excludes_zero(tmp_path):
    # Chance is 0.1 (10 classes). ERK 0.100 (replicates 0.095 to 0.105), LAMP 0.1045 and right
    # wherever ERK is: the paired interval excludes 0, but both arms' top-1 intervals reach
    # chance.
    tables = analyse(tmp_path, nested_arms(0.1, 0.005))
    comparison = tables.comparison
    assert (comparison["diff_lo"] > 0).all()
    assert set(comparison["winner"]) == {"both at chance"}
    assert tables.curves["at_chance"].all()
    assert (tables.curves["top1_lo"] <= 0.1).all()
    fig = figures.difference_map(tables)
    assert {cell for row in fig["data"][0]["text"] for cell in row} == {"0"}
    assert all(v is None for row in fig["data"][0]["z"] for v in row)  # no difference colour


def test_replicate_sign_agreement_averages_each_replicate_over_its_seeds(tmp_path):
    # LAMP − ERK per seed: replicate 0 (+0.3, -0.1) -> +0.1; 1 (+0.2, +0.2) -> +0.2;
    # 2 (-0.1, -0.1) -> -0.1; 3 (0.0, +0.2) -> +0.1. Mean +0.075 > 0: 3 of 4 replicates agree
    # (per seed it would be 5 of 8).
    per_seed = {0: [0.3, -0.1], 1: [0.2, 0.2], 2: [-0.1, -0.1], 3: [0.0, 0.2]}
    lamp = {k: [0.5 + d for d in ds] for k, ds in per_seed.items()}
    erk = {k: [0.5, 0.5] for k in per_seed}
    comparison = analyse(tmp_path, arms(lamp, erk, images=False)).comparison
    for row in comparison.itertuples():
        assert row.diff == pytest.approx(0.075)
        assert row.replicate_agreement == pytest.approx(0.75)
        assert row.replicates == 4


def test_r_uses_each_replicates_own_dense_top1(tmp_path):
    # Replicate 0: dense 0.9, top-1 0.5 -> r = 0.4 / 0.8 = 0.5. Replicate 1: dense 0.7,
    # top-1 0.5 -> r = 0.4 / 0.6 = 2/3. Mean r 7/12; a pooled dense (0.8) would give 4/7.
    rows = [
        make_row(replicate=0, dense_top1=0.9, top1=0.5, num_classes=10, images=False),
        make_row(replicate=1, dense_top1=0.7, top1=0.5, num_classes=10, images=False),
    ]
    tables = analyse(tmp_path, rows)
    point = tables.curves.iloc[0]
    assert point["r"] == pytest.approx(7 / 12)
    assert point["top1"] == pytest.approx(0.5) and point["replicates"] == 2
    # Without per-image results only the replicates vary: the interval is the textbook
    # t-interval over the two replicate means, 7/12 ± t(0.975, 1 df) · s / √2, s = (1/6) / √2.
    half = t_quantile(0.975, 1.0) * (1 / 6) / 2**0.5 / 2**0.5
    assert (point["r_lo"], point["r_hi"]) == (
        pytest.approx(7 / 12 - half),
        pytest.approx(7 / 12 + half),
    )
    summary = tables.summary.iloc[0]
    assert summary["dense_top1"] == pytest.approx(0.8) and summary["replicates"] == 2
    assert "dense top-1 varies" not in summary["flags"]


def test_a_tau_list_gives_one_boundary_per_tau_in_the_table_and_the_markdown(tmp_path, capsys):
    # r 0.95, 0.8, 0.6, 0.2: crosses 0.9 between 0.90 and 0.92, 0.7 and 0.5 later.
    rows = curve_rows([[0.95, 0.8, 0.6, 0.2]], [0.90, 0.92, 0.94, 0.96], images=False)
    root = write(tmp_path, rows)
    assert (
        main([str(root), "--format", "csv", "--table", "boundaries", "--tau", "0.5,0.7,0.9"]) == 0
    )
    boundaries = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert boundaries["tau"].tolist() == [0.5, 0.7, 0.9]
    expected = [0.94 + 0.1 / 0.4 * 0.02, 0.92 + 0.1 / 0.2 * 0.02, 0.90 + 0.05 / 0.15 * 0.02]
    np.testing.assert_allclose(boundaries["boundary"], expected, rtol=1e-5)  # CSV: 6 digits
    out = tmp_path / "results.md"
    assert (
        main([str(root), "--format", "markdown", "--tau", "0.5,0.7,0.9", "--output", str(out)]) == 0
    )
    text = out.read_text(encoding="utf-8")
    section = text[text.index("### Boundary against tau") :].splitlines()
    header = next(line for line in section if line.startswith("| allocation"))
    assert header.count("tau = ") == 3
    row = next(line for line in section if line.startswith("| erk"))
    for value in expected:
        assert f"{value:.4f}" in row


BAD_EVAL_SETS = [
    ({"eval_split": "val"}, "mix eval splits (test, val)"),
    ({"eval_size": 1000}, "mix eval-set sizes (1000, 2000)"),
    ({"eval_precision": "bf16", "device": "cuda:0"}, "mix eval precisions (bf16, fp32)"),
    # A row written before the column: its CUDA device says it was evaluated in bf16.
    ({"eval_precision": None, "device": "cuda:0"}, "mix eval precisions (bf16, fp32)"),
]


@pytest.mark.parametrize(("other", "message"), BAD_EVAL_SETS)
@pytest.mark.parametrize("cli", ["regimes", "report"])
def test_rows_of_different_eval_sets_are_refused_in_one_line(tmp_path, capsys, other, message, cli):
    rows = curve_rows([[0.9, 0.7]], GRID) + [make_row(sparsity=0.9, seed=1, **other)]
    root = write(tmp_path, rows)
    out = tmp_path / "out"
    status = (
        main([str(root), "--format", "markdown", "--output", str(out)])
        if cli == "regimes"
        else report_main([str(root), "-o", str(out)])
    )
    assert status == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: the rows of cifar10 / resnet18 ")
    assert message in captured.err and captured.err.count("\n") == 1, captured.err
    assert not out.exists() and captured.out == ""
