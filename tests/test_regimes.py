"""Boundaries, regimes and the LAMP − ERK comparison on hand-built result stores.

Every expected number is worked out in the test from the definitions: r = (top1 − chance) /
(dense − chance) with 10 classes and dense top-1 0.9, so r is what `curve_rows` is given; a
crossing between grid points s_i (r_i ≥ τ) and s_j (r_j < τ) is
s_i + (r_i − τ) / (r_i − r_j) · (s_j − s_i). Tests of exact interval ends build rows without
per-image results (`images=False`, as in a store written before they were kept): their interval
is then the textbook t-interval over the clusters (replicates; a single replicate's calibration
seeds), θ̂ ± t(0.975, K − 1) · s / √K, and a boundary's is that interval mapped through the
crossing (the same bracket).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_store import (
    DAMAGE_KINDS,
    SyntheticGrid,
    curve_rows,
    damage,
    make_row,
    unusable_store,
)

from analysis.bootstrap import (
    accumulate,
    cluster_orders,
    image_weights,
    resample_counts,
    resampled,
)
from analysis.boundaries import first_crossings
from analysis.intervals import t_quantile
from analysis.loading import load_results
from analysis.regimes import AnalysisInputError, main, regime_table
from sweep.core.errors import UserError
from sweep.results.schema import STATUS_ERROR
from sweep.results.store import ResultStore

GRID = [0.90, 0.92, 0.94, 0.96]
REPO = Path(__file__).resolve().parents[1]


def analyse(tmp_path: Path, rows: list[dict], tau: float = 0.5):
    """Write rows as a real store, read them back as the CLI does, and analyse."""
    root = tmp_path / "results"
    ResultStore(root).write_many(rows)
    return regime_table(load_results(root).frame, tau)


def one(frame: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.ones(len(frame), bool)
    for column, value in where.items():
        mask &= frame[column].to_numpy() == value
    assert mask.sum() == 1, f"expected one row for {where}, found {mask.sum()}"
    return frame[mask].iloc[0]


def curve(r: list[float | None], repair: str = "none", **fields: object) -> list[dict]:
    return curve_rows([r], GRID, repair=repair, **fields)


# --- boundaries --------------------------------------------------------------------------------


def test_crossing_between_grid_points_is_interpolated(tmp_path):
    # r 0.7 at 0.92, 0.3 at 0.94: 0.92 + (0.7 - 0.5) / (0.7 - 0.3) * 0.02 = 0.93
    tables = analyse(tmp_path, curve([0.9, 0.7, 0.3, 0.1], images=False))
    b = one(tables.boundaries, repair_variant="none")
    assert b["status"] == "crossing"
    assert b["boundary"] == pytest.approx(0.93)
    assert (b["bracket_lo"], b["bracket_hi"]) == (0.92, 0.94)
    assert b["ci_lo"] == b["ci_hi"] == pytest.approx(0.93)  # deterministic repair: one row
    assert not b["non_monotone"] and b["flags"] == ""


def test_image_level_resampling_widens_the_interval_around_the_same_boundary(tmp_path):
    # The same curve with per-image results: the boundary is the same, its interval now covers
    # the eval set's sampling noise (2000 images: a top-1 standard error of ~1 point).
    tables = analyse(tmp_path, curve([0.9, 0.7, 0.3, 0.1]))
    b = one(tables.boundaries, repair_variant="none")
    assert b["boundary"] == pytest.approx(0.93)
    assert b["ci_lo"] < 0.93 < b["ci_hi"] and b["ci_hi"] - b["ci_lo"] < 0.005


def test_crossing_exactly_on_a_grid_point(tmp_path):
    # r = τ exactly at 0.92 still recovers; it falls below at 0.94, so the boundary is 0.92.
    tables = analyse(tmp_path, curve([0.9, 0.5, 0.2, 0.1]))
    b = one(tables.boundaries, repair_variant="none")
    assert b["status"] == "on grid point"
    assert b["boundary"] == pytest.approx(0.92)
    assert (b["bracket_lo"], b["bracket_hi"]) == (0.92, 0.94)
    assert one(tables.regimes, sparsity=0.92)["recovering"] == "none"


def test_never_crossing_is_beyond_the_grid(tmp_path):
    tables = analyse(tmp_path, curve([0.9, 0.8, 0.7, 0.6]))
    b = one(tables.boundaries, repair_variant="none")
    assert b["status"] == "beyond the grid"
    assert np.isnan(b["boundary"]) and np.isnan(b["bracket_lo"])


def test_below_at_the_first_point_is_below_the_grid(tmp_path):
    tables = analyse(tmp_path, curve([0.4, 0.3, 0.2, 0.1]))
    b = one(tables.boundaries, repair_variant="none")
    assert b["status"] == "below the grid"
    assert np.isnan(b["boundary"])


def test_non_monotone_curve_uses_first_downward_crossing_and_says_so(tmp_path):
    # Down between 0.90 (0.8) and 0.92 (0.4): 0.90 + 0.3 / 0.4 * 0.02 = 0.915; up again at 0.94.
    tables = analyse(tmp_path, curve([0.8, 0.4, 0.6, 0.2]))
    b = one(tables.boundaries, repair_variant="none")
    assert b["boundary"] == pytest.approx(0.915)
    assert b["non_monotone"]
    assert "first downward crossing" in b["flags"]


def test_interval_of_the_boundary_over_seeds_of_a_single_replicate(tmp_path):
    # One replicate: its calibration seeds are the clusters. Seeds (r at 0.90 to 0.96): all 0.9
    # at 0.90 and 0.1 at 0.96; 0.6, 0.8, 0.7 at 0.92, each dropping by 0.4 to 0.94. The mean
    # curve (0.9, 0.7, 0.3, 0.1) crosses 0.5 at 0.93. r at 0.92: s = 0.1, so its interval is
    # 0.7 ± h, h = t(0.975, 2) · 0.1 / √3. The boundary's interval is every sparsity where the
    # interval of the interpolated curve contains 0.5: on [0.92, 0.94] everywhere (0.2 − 0.4λ
    # stays within ±h); on [0.90, 0.92] the curve is 0.9 − 0.2λ with half width hλ, so from
    # λ = 0.4 / (0.2 + h); on [0.94, 0.96] it is 0.3 − 0.2λ with half width h(1 − λ), so up to
    # λ = (h − 0.2) / (h + 0.2).
    seeds = [[0.9, 0.6, 0.2, 0.1], [0.9, 0.8, 0.4, 0.1], [0.9, 0.7, 0.3, 0.1]]
    tables = analyse(tmp_path, curve_rows(seeds, GRID, repair="bn_recal", images=False))
    h = t_quantile(0.975, 2) * 0.1 / 3**0.5
    b = one(tables.boundaries, repair_variant="bn_recal")
    assert b["boundary"] == pytest.approx(0.93)
    expected = (0.90 + 0.02 * 0.4 / (0.2 + h), 0.94 + 0.02 * (h - 0.2) / (h + 0.2))
    assert (b["ci_lo"], b["ci_hi"]) == (
        pytest.approx(expected[0], abs=1e-5),
        pytest.approx(expected[1], abs=1e-5),
    )
    assert b["seeds"] == 3 and b["flags"] == ""
    point = one(tables.curves, repair_variant="bn_recal", sparsity=0.92)
    assert point["r"] == pytest.approx(0.7)
    assert (point["r_lo"], point["r_hi"]) == (pytest.approx(0.7 - h), pytest.approx(0.7 + h))
    assert "single replicate" in one(tables.summary, allocation="erk")["flags"]


def test_a_boundary_interval_that_passes_the_grid_edge_is_censored_there(tmp_path):
    # Three replicates crossing 0.5 at 0.956, 0.945 and beyond 0.96 (r 0.55 there): at 0.96
    # the mean r is 0.45 ± t(0.975, 2) · 0.1 / √3, which contains 0.5, so the boundary may lie
    # beyond the grid: the upper end is 'beyond the grid' (shown as the edge, flagged).
    per_replicate = [[0.9, 0.8, 0.7, 0.45], [0.9, 0.8, 0.55, 0.35], [0.9, 0.8, 0.7, 0.55]]
    rows = []
    for replicate, r in enumerate(per_replicate):
        rows += curve_rows([r], GRID, repair="bn_recal", replicate=replicate, images=False)
    b = one(analyse(tmp_path, rows).boundaries, repair_variant="bn_recal")
    assert b["status"] == "crossing" and GRID[2] < b["boundary"] < GRID[3]
    assert b["ci_hi"] == GRID[-1] and "interval reaches beyond the grid" in b["flags"]
    assert b["ci_lo"] < b["boundary"]


def test_single_seed_gives_a_degenerate_flagged_interval(tmp_path):
    tables = analyse(tmp_path, curve([0.9, 0.7, 0.3, 0.1], repair="bn_recal", images=False))
    b = one(tables.boundaries, repair_variant="bn_recal")
    assert b["ci_lo"] == b["ci_hi"] == pytest.approx(b["boundary"])
    assert "single seed" in b["flags"]
    assert "single seed" in one(tables.curves, sparsity=0.92)["flags"]


def test_missing_sparsity_is_flagged_and_bridged(tmp_path):
    # bn_recal has no row at 0.92 (none does, so 0.92 is on the grid): the crossing spans the gap,
    # 0.90 + (0.9 - 0.5) / (0.9 - 0.3) * 0.04 = 0.92667.
    rows = curve([0.9, 0.8, 0.6, 0.4]) + curve([0.9, None, 0.3, 0.1], repair="bn_recal")
    tables = analyse(tmp_path, rows)
    b = one(tables.boundaries, repair_variant="bn_recal")
    assert b["boundary"] == pytest.approx(0.90 + 0.4 / 0.6 * 0.04)
    assert "missing sparsities: 0.92" in b["flags"]
    point = one(tables.curves, repair_variant="bn_recal", sparsity=0.92)
    assert point["seeds"] == 0 and "missing: no rows" in point["flags"]


# --- regimes -----------------------------------------------------------------------------------

# none, bn_recal and channel_var chosen so that the four grid points fall in the four regimes.
NONE_R = [0.8, 0.3, 0.1, 0.0]  # crosses at 0.90 + 0.3 / 0.5 * 0.02 = 0.912
BN_R = [0.9, 0.7, 0.3, 0.1]  # crosses at 0.92 + 0.2 / 0.4 * 0.02 = 0.93
ACT_R = [0.9, 0.8, 0.6, 0.2]  # crosses at 0.94 + 0.1 / 0.4 * 0.02 = 0.945


def four_regimes(**fields: object) -> list[dict]:
    return (
        curve(NONE_R, **fields)
        + curve(BN_R, repair="bn_recal", **fields)
        + curve(ACT_R, repair="channel_var", **fields)
    )


def test_each_grid_point_gets_its_regime_and_the_band_width(tmp_path):
    tables = analyse(tmp_path, four_regimes())
    assert tables.regimes.sort_values("sparsity")["regime"].tolist() == [
        "intact",
        "bn_recoverable",
        "repair_sensitive",
        "collapsed",
    ]
    s = one(tables.summary, allocation="erk")
    assert s["boundary_none"] == pytest.approx(0.912)
    assert s["boundary_bn_recal"] == pytest.approx(0.93)
    assert s["boundary_activation"] == pytest.approx(0.945)
    assert s["activation_variant"] == "channel_var"
    # The band runs from where bn_recal (later than none) fails to where channel_var fails.
    assert (s["band_lo"], s["band_hi"]) == (pytest.approx(0.93), pytest.approx(0.945))
    assert s["band_width"] == pytest.approx(0.015)
    assert s["sensitive_points"] == 1
    assert s["chance"] == pytest.approx(0.1) and s["dense_top1"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("method", "reconstruction_r", "boundary", "beyond", "regime_at_096"),
    [
        # obs_reconstruct stops at 0.92 + 0.1 / 0.4 * 0.02 = 0.925, before the band [0.93, 0.945]
        # starts: all of the band lies beyond it.
        ("obs_reconstruct", [0.9, 0.6, 0.2, 0.1], 0.925, 0.015, "collapsed"),
        # adaprune recovers to the grid's end (0.96, the edge used): nothing of the band is left,
        # and 0.96, where only adaprune recovers, is repair-sensitive rather than collapsed.
        ("adaprune", [0.9, 0.9, 0.8, 0.6], 0.96, 0.0, "repair_sensitive"),
    ],
)
def test_the_band_beyond_weight_reconstruction(
    tmp_path, method, reconstruction_r, boundary, beyond, regime_at_096
):
    rows = four_regimes() + curve(reconstruction_r, repair=method)
    tables = analyse(tmp_path, rows)
    s = one(tables.summary, allocation="erk")
    assert s["band_width"] == pytest.approx(0.015)  # the band itself is unchanged
    assert s["reconstruction_variant"] == method
    assert s["boundary_reconstruction"] == pytest.approx(boundary)
    assert s["band_beyond_reconstruction"] == pytest.approx(beyond)
    assert one(tables.regimes, sparsity=0.96)["regime"] == regime_at_096


def test_without_a_reconstruction_the_band_beyond_it_is_unknown(tmp_path):
    s = one(analyse(tmp_path, four_regimes()).summary, allocation="erk")
    assert s["reconstruction_variant"] == "" and np.isnan(s["band_beyond_reconstruction"])


def test_a_missing_repair_makes_only_the_points_it_could_change_unknown(tmp_path):
    # channel_var has no row at 0.94 and 0.96: there none and bn_recal fail, so channel_var alone
    # decides between repair_sensitive and collapsed -> unknown. At 0.90 none recovers: intact
    # whatever channel_var does.
    rows = curve(NONE_R) + curve(BN_R, repair="bn_recal")
    rows += curve([0.9, 0.8, None, None], repair="channel_var")
    regimes = analyse(tmp_path, rows).regimes.sort_values("sparsity")
    assert regimes["regime"].tolist() == ["intact", "bn_recoverable", "unknown", "unknown"]
    flags = regimes["flags"].tolist()
    assert flags[0] == "" and "missing repairs: channel_var" in flags[2]


def test_a_repair_the_pair_never_ran_is_named_not_guessed(tmp_path):
    # cifar10 ran none and bn_recal only; cifar100 also ran channel_var.
    rows = curve(NONE_R) + curve(BN_R, repair="bn_recal") + four_regimes(dataset="cifar100")
    tables = analyse(tmp_path, rows)
    s = one(tables.summary, dataset="cifar10")
    assert "no activation-statistic repair" in s["flags"]
    assert np.isnan(s["band_width"])
    # There, 'collapsed' means: none of the repairs it ran recovers.
    last = one(tables.regimes, dataset="cifar10", sparsity=0.96)
    assert last["regime"] == "collapsed"
    assert "not run for this dataset/arch: channel_var" in last["flags"]
    assert one(tables.regimes, dataset="cifar100", sparsity=0.94)["regime"] == "repair_sensitive"


def test_error_rows_are_excluded_counted_and_flagged(tmp_path):
    rows = four_regimes()
    failed = make_row(sparsity=0.92, repair="channel_var", seed=1, status=STATUS_ERROR, top1=None)
    only_failed = make_row(sparsity=0.98, repair="none", status=STATUS_ERROR, top1=None)
    tables = analyse(tmp_path, rows + [failed, only_failed])
    point = one(tables.curves, repair_variant="channel_var", sparsity=0.92)
    assert point["r"] == pytest.approx(0.8) and point["errors"] == 1
    assert "1 error rows excluded" in point["flags"]
    lonely = one(tables.curves, repair_variant="none", sparsity=0.98)
    assert lonely["seeds"] == 0 and "only error rows" in lonely["flags"]
    s = one(tables.summary, allocation="erk")
    assert s["errors"] == 2 and s["trials"] == 14
    # The failed point leaves none unknown at 0.98, so the regime there is unknown.
    assert one(tables.regimes, sparsity=0.98)["regime"] == "unknown"


def test_duplicate_trials_of_one_point_and_variant_are_averaged_and_flagged(tmp_path):
    # Same point, variant and seed, another calibration size: two trial keys, one curve point.
    rows = curve([0.9, 0.7, 0.3, 0.1]) + curve([0.9, 0.5, 0.3, 0.1], calib_size=512)
    point = one(analyse(tmp_path, rows).curves, sparsity=0.92)
    assert point["r"] == pytest.approx(0.6)
    assert "1 duplicate trials averaged" in point["flags"]


# --- repair variants ---------------------------------------------------------------------------

SHRINK = "channel_var_shrink"
TAU_HALF = f"{SHRINK}[tau=0.5]"


def two_shrink_variants(**fields: object) -> list[dict]:
    """none, bn_recal and two settings of channel_var_shrink that stop recovering at different
    sparsities: the default crosses at 0.945 (ACT_R), tau=0.5 at 0.92 + 0.1 / 0.4 * 0.02 = 0.925."""
    return (
        curve(NONE_R, **fields)
        + curve(BN_R, repair="bn_recal", **fields)
        + curve(ACT_R, repair=SHRINK, **fields)
        + curve([0.9, 0.6, 0.2, 0.1], repair=SHRINK, params={"tau": 0.5}, **fields)
    )


def test_two_variants_of_one_method_are_two_curves_never_averaged(tmp_path):
    tables = analyse(tmp_path, two_shrink_variants() + two_shrink_variants(allocation="lamp"))
    point = one(tables.curves, allocation="erk", repair_variant=SHRINK, sparsity=0.92)
    assert point["r"] == pytest.approx(0.8) and point["flags"] == "single seed"
    half = one(tables.curves, allocation="erk", repair_variant=TAU_HALF, sparsity=0.92)
    assert half["r"] == pytest.approx(0.6)
    assert not tables.curves["flags"].str.contains("duplicate").any()
    erk = tables.boundaries[tables.boundaries["allocation"] == "erk"]
    assert one(erk, repair_variant=SHRINK)["boundary"] == pytest.approx(0.945)
    assert one(erk, repair_variant=TAU_HALF)["boundary"] == pytest.approx(0.925)
    assert {f"r_{SHRINK}", f"r_{TAU_HALF}"} <= set(tables.regimes.columns)
    variants = ["none", "bn_recal", SHRINK, TAU_HALF]
    for table, per_variant in [
        (tables.curves, 2 * len(GRID)),
        (tables.boundaries, 2),
        (tables.comparison, len(GRID)),
    ]:
        counts = table["repair_variant"].value_counts()
        assert counts.to_dict() == dict.fromkeys(variants, per_variant)
    diff = one(tables.comparison, repair_variant=TAU_HALF, sparsity=0.92)
    assert diff["diff"] == pytest.approx(0.0) and diff["r_erk"] == pytest.approx(0.6)


def test_a_non_default_activation_variant_counts_as_activation_repair(tmp_path):
    # Only channel_var_shrink[tau=0.5] (method channel_var_shrink) as activation repair: it
    # recovers at 0.92 where bn_recal (r 0.7) also does, and at 0.94 (r 0.6) where bn_recal (0.3)
    # does not, so 0.94 is repair_sensitive and the band runs from 0.93 to its boundary 0.945.
    rows = curve(NONE_R) + curve(BN_R, repair="bn_recal")
    rows += curve(ACT_R, repair=SHRINK, params={"tau": 0.5})
    tables = analyse(tmp_path, rows)
    assert one(tables.regimes, sparsity=0.94)["regime"] == "repair_sensitive"
    s = one(tables.summary, allocation="erk")
    assert s["activation_variant"] == TAU_HALF and s["bn_recal_variant"] == "bn_recal"
    assert (s["band_lo"], s["band_hi"]) == (pytest.approx(0.93), pytest.approx(0.945))


def test_the_best_variant_of_a_method_sets_the_band(tmp_path):
    summary = one(analyse(tmp_path, two_shrink_variants()).summary, allocation="erk")
    assert summary["activation_variant"] == SHRINK
    assert summary["boundary_activation"] == pytest.approx(0.945)


# --- LAMP − ERK --------------------------------------------------------------------------------


# Per replicate (LAMP − ERK) at 0.92, 0.94, 0.96: +0.3 each; -0.1, +0.2, -0.1; -0.4, -0.5, -0.3.
LAMP_R = [[0.7, 0.5, 0.2], [0.8, 0.6, 0.2], [0.9, 0.4, 0.3]]
ERK_R = [[0.4, 0.6, 0.6], [0.5, 0.4, 0.7], [0.6, 0.5, 0.6]]


def test_lamp_minus_erk_paired_over_replicates(tmp_path):
    # 0.92: +0.3 in every replicate -> interval [0.3, 0.3], LAMP wins. 0.94: mean 0, s = 0.1732
    # -> 0 ± t(0.975, 2) · s / √3 contains 0: no winner. 0.96: mean -0.4, s = 0.1 -> ERK.
    rows = []
    for replicate, (lamp, erk) in enumerate(zip(LAMP_R, ERK_R, strict=True)):
        for allocation, r in (("lamp", lamp), ("erk", erk)):
            rows += curve_rows(
                [r], GRID[1:], repair="bn_recal", allocation=allocation, replicate=replicate,
                images=False,
            )  # fmt: skip
    comparison = analyse(tmp_path, rows).comparison.sort_values("sparsity")
    assert comparison["winner"].tolist() == ["lamp", "no winner", "erk"]
    first, middle, last = (row for _, row in comparison.iterrows())
    assert first["diff"] == pytest.approx(0.3)
    assert first["diff_lo"] == pytest.approx(0.3) and first["diff_hi"] == pytest.approx(0.3)
    t = t_quantile(0.975, 2) / 3**0.5
    assert middle["diff"] == pytest.approx(0.0, abs=1e-12)
    assert (middle["diff_lo"], middle["diff_hi"]) == (
        pytest.approx(-t * 0.03**0.5),
        pytest.approx(t * 0.03**0.5),
    )
    assert (last["diff_lo"], last["diff_hi"]) == (
        pytest.approx(-0.4 - t * 0.1),
        pytest.approx(-0.4 + t * 0.1),
    )
    assert (comparison["replicates"] == 3).all()


def test_a_single_replicate_names_no_winner_however_clear_its_seeds_are(tmp_path):
    # The same numbers as three calibration seeds of one checkpoint: intervals over the seeds
    # (flagged), but no verdict: another checkpoint could prefer the other allocation.
    rows = curve_rows(LAMP_R, GRID[1:], repair="bn_recal", allocation="lamp", images=False)
    rows += curve_rows(ERK_R, GRID[1:], repair="bn_recal", allocation="erk", images=False)
    comparison = analyse(tmp_path, rows).comparison.sort_values("sparsity")
    assert comparison["winner"].tolist() == ["single replicate"] * 3
    assert comparison["diff_lo"].iloc[0] == pytest.approx(0.3)  # the interval is still given
    assert (comparison["replicates"] == 1).all()


def test_comparison_flags_a_missing_allocation_point(tmp_path):
    rows = curve([0.9, 0.7, 0.3, 0.1], allocation="lamp")
    rows += curve([0.9, 0.7, None, 0.1], allocation="erk")
    comparison = analyse(tmp_path, rows).comparison
    gap = one(comparison, sparsity=0.94)
    assert gap["winner"] == "n/a" and "missing: erk" in gap["flags"]
    # Equal top-1, one replicate: no verdict either way.
    assert one(comparison, sparsity=0.92)["winner"] == "single replicate"


# --- building blocks ---------------------------------------------------------------------------


def test_vectorised_crossings_match_one_curve_at_a_time():
    rng = np.random.default_rng(0)
    curves = rng.uniform(0, 1, (50, 7))
    curves[rng.uniform(size=curves.shape) < 0.1] = np.nan
    grid = np.linspace(0.9, 0.96, 7)
    batch = first_crossings(curves, grid, 0.5)
    for i, values in enumerate(curves):
        single = first_crossings(values, grid, 0.5)
        assert single.status == batch.status[i]
        np.testing.assert_equal(single.boundary, batch.boundary[i])


def test_resampling_draws_are_multinomials_and_each_cluster_permutes_the_shared_ones():
    counts = resample_counts(5, 200, seed=1)
    assert counts.shape == (200, 5) and (counts.sum(axis=1) == 5).all()
    np.testing.assert_array_equal(counts, resample_counts(5, 200, seed=1))
    orders = cluster_orders(3, 50, seed=2)
    assert orders.shape == (3, 50)
    for order in orders:  # every cluster sees every shared resample once
        np.testing.assert_array_equal(np.sort(order), np.arange(50))
    assert (orders[0] != orders[1]).any()


def test_columns_sum_their_rows_bits_and_resample_as_weighted_means():
    rng = np.random.default_rng(3)
    bits = rng.random((3, 37)) < 0.4
    packed = np.array([np.packbits(b).tobytes() for b in bits] + [None], dtype=object)
    top1 = np.r_[bits.mean(axis=1), 0.25]
    # Entries: rows 0 and 1 into column 0 (weights 0.5 each), row 2 and the row without bits
    # into column 1 (weights 1 and 2).
    column, weight = np.array([0, 0, 1, 1]), np.array([0.5, 0.5, 1.0, 2.0])
    sums = accumulate(packed, top1, column, weight, 2, 37)
    np.testing.assert_allclose(sums[0], 0.5 * bits[0] + 0.5 * bits[1])
    np.testing.assert_allclose(sums[1], bits[2] + 2 * 0.25)
    weights = image_weights(37, 50, seed=0)
    out = resampled(sums, weights)
    np.testing.assert_allclose(out[:, 0], weights @ (0.5 * bits[0] + 0.5 * bits[1]) / 37, rtol=1e-6)
    # The row without bits keeps its top-1 in every resample: 2 · 0.25 on top of row 2's.
    np.testing.assert_allclose(out[:, 1] - weights @ bits[2] / 37, 0.5, rtol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.2, 1.5])
def test_tau_outside_the_open_unit_interval_is_refused(tau):
    frame = pd.DataFrame(curve([0.9, 0.7, 0.3, 0.1]))
    with pytest.raises(AnalysisInputError, match="tau"):
        regime_table(frame, tau)


def test_an_empty_table_is_refused():
    with pytest.raises(UserError, match="no rows"):
        regime_table(pd.DataFrame(curve([0.9, 0.7, 0.3, 0.1])).iloc[:0])


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    rows = four_regimes() + four_regimes(allocation="lamp")
    ResultStore(root).write_many(rows)
    return root


def test_cli_csv_parses_into_the_regime_table(store, capsys):
    assert main([str(store), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"dataset", "arch", "allocation", "sparsity", "regime", "r_none", "flags"} <= set(
        frame.columns
    )
    assert len(frame) == 8 * 3  # one row per default tau
    erk = frame[(frame["allocation"] == "erk") & (frame["tau"] == 0.5)].sort_values("sparsity")
    assert erk["regime"].tolist() == ["intact", "bn_recoverable", "repair_sensitive", "collapsed"]


def test_cli_json_holds_every_table_with_flag_lists(store, capsys):
    assert main([str(store), "--format", "json", "--tau", "0.6"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {
        "taus",
        "confidence",
        "resamples",
        "summary",
        "boundaries",
        "regimes",
        "comparison",
        "repairs",
        "curves",
    }
    assert document["taus"] == [0.6]
    boundary = document["boundaries"][0]
    assert {"boundary", "status", "bracket_lo", "bracket_hi", "ci_lo", "ci_hi"} <= set(boundary)
    assert isinstance(boundary["flags"], list)


def test_cli_table_and_single_table_views(store, capsys):
    assert main([str(store)]) == 0
    text = capsys.readouterr().out
    assert "Regime map" in text and "Boundaries" in text and "LAMP - ERK" in text
    assert main([str(store), "--table", "boundaries", "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(frame) == 6 * 3 and "boundary" in frame.columns  # 6 curves x 3 taus


# (store kind or None for the good store, extra arguments, what the one line must say)
BAD_INPUTS = [
    ("missing", [], "does not exist"),
    ("empty", [], "no Parquet files"),
    ("foreign", [], "not a prune-sweep result store"),
    ("only_errors", [], "no ok rows (12 error rows; most common error: RuntimeError"),
    ("key_schema_1", [], "trial-key schema before 3); upgrade it with python -m sweep.upgrade"),
    (None, ["--tau", "1.5"], "tau 1.5 is outside (0, 1); the default is 0.5,0.7,0.9"),
    (None, ["--tau", "0.5,x"], "tau 'x' is not a number"),
    (None, ["--tau", "0.5,,0.7"], "tau '' is not a number"),
    (None, ["--tau", "nan"], "tau nan is outside (0, 1)"),
    (None, ["--format", "xml"], "invalid choice: 'xml'"),
    (None, ["--repair", "channel_var[tau=0.5]"], "unknown repair variant 'channel_var[tau=0.5]'"),
    (None, ["--format", "markdown", "--table", "curves"], "--table"),
    (None, ["--confidence", "1.5"], "confidence 1.5 is outside (0.5, 1); the default is 0.95"),
    (None, ["--confidence", "0.5"], "confidence 0.5 is outside (0.5, 1)"),
    (None, ["--confidence", "x"], "confidence 'x' is not a number"),
    # The store has one replicate: no verdict can be named, so none is printed on its own.
    (None, ["--table", "comparison"], "paired verdicts need at least 2 replicates"),
    (None, ["--table", "repairs", "--format", "json"], "cifar10 / resnet18 has 1"),
    ("dense_missing", [], "have per-image results but no dense_correct"),
    ("dense_differs", [], "carry 2 different dense_correct"),
    ("dense_count", [], "has 1798 of 2000 eval images right (0.8990) but its rows say dense"),
    ("dense_length", [], "have a dense_correct of 249 bytes, expected 250"),
]


@pytest.mark.parametrize(("kind", "extra", "message"), BAD_INPUTS)
def test_cli_bad_inputs_exit_2_with_one_line_and_write_nothing(
    tmp_path, store, capsys, kind, extra, message
):
    root = store if kind is None else unusable_store(tmp_path, kind, four_regimes())
    out = tmp_path / "out.md"
    assert main([str(root), *extra, "--output", str(out)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: ") and captured.out == ""
    assert not out.exists()


def test_repair_filter_keeps_exactly_the_named_variants(tmp_path, capsys):
    root = tmp_path / "results"
    ResultStore(root).write_many(two_shrink_variants())
    assert main([str(root), "--format", "csv", "--table", "curves", "--repair", TAU_HALF]) == 0
    curves = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(curves["repair_variant"]) == {TAU_HALF}
    argv = [str(root), "--format", "csv", "--repair", "bn_recal", "--repair", SHRINK]
    assert main(argv) == 0
    regimes = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"r_bn_recal", f"r_{SHRINK}"} <= set(regimes.columns)
    assert f"r_{TAU_HALF}" not in regimes.columns and "r_none" not in regimes.columns


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_a_damaged_file_is_skipped_and_named_never_a_traceback(store, kind):
    bad = damage(store, kind)
    result = subprocess.run(
        [sys.executable, "-m", "analysis.regimes", str(store), "--format", "csv"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reason = {
        "truncated": "truncated or corrupt Parquet file (",
        "not_parquet": "not a Parquet file (",
        "foreign_schema": "not a prune-sweep result file (missing columns trial_key",
    }[kind]
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith("skipped damaged file")
    ]
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"skipped damaged file {bad}: {reason}")
    assert "Traceback" not in result.stderr
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 8 * 3  # every good row analysed


# --- the Markdown results document ------------------------------------------------------------


def markdown_table(text: str, heading: str) -> pd.DataFrame:
    """The first Markdown table after `heading`, cells as strings."""
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return pd.DataFrame(rows[2:], columns=rows[0])


@pytest.fixture(scope="module")
def variant_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("markdown") / "results"
    SyntheticGrid(
        datasets=("fashion_mnist",),
        archs=("resnet20",),
        allocations=("erk", "lamp"),
        sparsities=(0.9, 0.92, 0.94, 0.96),
        repairs=("none", "bn_recal", SHRINK, (SHRINK, {"tau": 0.5})),
        seeds=3,
        error_rate=0.05,
    ).write(root)
    return root


def test_markdown_numbers_are_the_stores_and_the_regime_tables(variant_store, tmp_path, capsys):
    out = tmp_path / "results.md"
    assert main([str(variant_store), "--format", "markdown", "--output", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    text = out.read_text(encoding="utf-8")
    frame = load_results(variant_store, ["checkpoint_sha256", "eval_size"]).frame
    tables = regime_table(frame)
    # Top-1: mean over seeds of the ok rows, straight from the store with pandas.
    ok = frame[frame["status"] == "ok"]
    per_seed = ok.groupby(["allocation", "repair_variant", "sparsity", "seed"])["top1"].mean()
    expected = per_seed.groupby(["allocation", "repair_variant", "sparsity"]).mean() * 100
    top1 = markdown_table(text, "### Top-1 %").set_index(["allocation", "repair variant"])
    assert list(top1.index) == [
        (a, v) for a in ("erk", "lamp") for v in ("none", "bn_recal", SHRINK, TAU_HALF)
    ]
    assert list(top1.columns) == [f"{s:g}" for s in sorted(ok["sparsity"].unique())]
    assert len(expected) == top1.size - 1  # one point has only an error row
    for (allocation, variant, sparsity), mean in expected.items():
        cell = top1.loc[(allocation, variant), f"{sparsity:g}"]
        shown = float(cell.split(" [")[0])  # one decimal: a tie at .x5 may round either way
        assert abs(shown - mean) <= 0.05 + 1e-9, (allocation, variant, sparsity)
    # Intervals: the regime table's hierarchical bootstrap interval of top-1, in %.
    dense = tables.summary["dense_top1"].iloc[0]
    point = one(tables.curves, allocation="lamp", repair_variant=TAU_HALF, sparsity=0.94)
    lo, hi = 100 * point["top1_lo"], 100 * point["top1_hi"]
    assert lo < 100 * point["top1"] < hi
    assert top1.loc[("lamp", TAU_HALF), "0.94"].endswith(f"[{lo:.1f}, {hi:.1f}]")
    assert f"Dense top-1 {100 * dense:.2f} %" in text
    # Boundaries and regimes: the regime table's, row for row, one per curve and tau.
    boundaries = markdown_table(text, "### Regime boundaries")
    assert len(boundaries) == len(tables.boundaries) == 8 * 3
    for row, (_, b) in zip(boundaries.itertuples(), tables.boundaries.iterrows(), strict=True):
        assert (row[1], row[2], row[3]) == (b["allocation"], b["repair_variant"], f"{b['tau']:g}")
        assert row[4] == ("—" if np.isnan(b["boundary"]) else f"{b['boundary']:.4f}")
        assert row[5] == b["status"]
    against = markdown_table(text, "### Boundary against tau")
    assert list(against.columns[2:]) == ["tau = 0.5", "tau = 0.7", "tau = 0.9"]
    assert len(against) == 8
    regimes = markdown_table(text, "### Regime per sparsity").set_index("sparsity")
    for r in tables.regimes.itertuples():
        assert regimes.loc[f"{r.sparsity:g}", f"{r.allocation} (tau = {r.tau:g})"] == r.regime
    # Provenance: from the store, and the command that writes it again.
    provenance = dict(markdown_table(text, "# prune-sweep results").iloc[:, :2].values)
    assert provenance["result store"] == f"`{variant_store}`"
    assert provenance["rows"].startswith(f"{len(ok)} ok, {len(frame) - len(ok)} error")
    assert provenance["dense checkpoints (sha256)"] == f"`{frame['checkpoint_sha256'][0][:12]}`"
    assert provenance["eval images"] == "2000" and provenance["calibration seeds"] == "0, 1, 2"
    assert provenance["skipped damaged files"] == "none"
    command = f"python -m analysis.regimes {variant_store} --format markdown --output {out}"
    assert f"    {command}\n" in text


def test_markdown_regeneration_rewrites_the_whole_document(variant_store, tmp_path, capsys):
    out = tmp_path / "results.md"
    assert main([str(variant_store), "--format", "markdown", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "\n## Notes\n\nWritten by hand.\n")
    argv = [str(variant_store), "--format", "markdown", "--output", str(out), "--repair", TAU_HALF]
    assert main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert "Written by hand" not in text
    curves = markdown_table(text, "### Top-1 %")[["allocation", "repair variant"]]
    assert curves.values.tolist() == [["erk", TAU_HALF], ["lamp", TAU_HALF]]
    assert f"--repair '{TAU_HALF}'" in text  # the regenerating command names the selection


def test_module_runs_as_a_program(store):
    result = subprocess.run(
        [sys.executable, "-m", "analysis.regimes", str(store), "--format", "csv", "--tau", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2 and "tau" in result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "analysis.regimes", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    ).stdout
    assert "--tau" in help_text and "repair_sensitive" in help_text


def test_unusable_rows_and_failed_curves_are_named_not_dropped(tmp_path):
    # dense top-1 at chance (0.1 with 10 classes) leaves r undefined; a curve of failures only
    # has no boundary to report.
    rows = curve_rows([[0.9, 0.7]], GRID[:2], dense_top1=0.1, dataset="cifar10")
    rows += [make_row(dataset="svhn", sparsity=s, status=STATUS_ERROR, top1=None) for s in GRID[:2]]
    tables = analyse(tmp_path, rows)
    assert "r undefined" in one(tables.summary, dataset="cifar10")["flags"]
    point = one(tables.curves, dataset="cifar10", sparsity=0.9)
    assert point["seeds"] == 0 and "without a usable r" in point["flags"]
    failed = one(tables.boundaries, dataset="svhn")
    assert failed["status"] == "no data" and "missing sparsities: 0.9, 0.92" in failed["flags"]
    assert set(tables.regimes["regime"]) == {"unknown"}


def test_the_old_out_flag_still_writes_the_document_with_a_one_line_note(
    variant_store: Path, tmp_path: Path, capsys
):
    out = tmp_path / "results.md"
    assert main([str(variant_store), "--format", "markdown", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert out.read_text().startswith("# prune-sweep results")
    assert captured.err == "note: --out is now --output; the old name will go away\n"
