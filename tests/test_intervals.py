"""The interval method (analysis/intervals.py) piece by piece: t and χ² quantiles, the
between-replicate + shared-image variance split, the degrees of freedom, boundaries by inverting
the curve's intervals, r's denominator moving with its numerator, 'at chance' with one margin,
and independence between pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_store import curve_rows, dense_scores, exactly, make_row

from analysis.bootstrap import cluster_orders, image_weights
from analysis.intervals import (
    Stacked,
    check_confidence,
    chi2_quantile,
    crossing_interval,
    df_inflation,
    t_interval,
    t_quantile,
)
from analysis.loading import load_results
from analysis.regimes import AnalysisInputError, regime_table
from sweep.results.store import ResultStore

# Student t quantiles (R's qt / scipy.stats.t.ppf, 11 digits).
T_975 = {
    **{1: 12.7062047362, 2: 4.30265272975, 3: 3.18244630528, 5: 2.57058183661},
    **{10: 2.22813885196, 30: 2.04227245630, 120: 1.97993040505, np.inf: 1.95996398454},
}


@pytest.mark.parametrize(("df", "expected"), T_975.items())
def test_t_quantiles_match_the_reference_values(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-7)


def test_t_quantiles_at_other_levels_and_between_integer_degrees_of_freedom():
    assert t_quantile(0.95, 1.0) == pytest.approx(6.31375151468, rel=1e-7)
    assert t_quantile(0.995, 3.0) == pytest.approx(5.84090930973, rel=1e-7)
    # Non-integer ν (Satterthwaite): between the neighbours, decreasing in ν.
    values = t_quantile(0.975, np.array([2.0, 2.5, 3.0, 7.5, 1e9]))
    assert (np.diff(values) < 0).all() and values[-1] == pytest.approx(1.959964, rel=1e-6)


def test_chi2_quantiles_match_the_reference_values():
    for df, prob, expected in [(1, 0.25, 0.101531044), (2, 0.25, 0.575364145),
                               (3, 0.25, 1.212532903), (9, 0.25, 5.898825882),
                               (2, 0.975, 7.377758908)]:  # fmt: skip
        assert chi2_quantile(df, prob) == pytest.approx(expected, rel=1e-7)
    np.testing.assert_allclose(df_inflation(np.array([2, 3])), [1 / 0.101531044, 2 / 0.575364145])


@pytest.mark.parametrize("clusters", [2, 3, 5])
def test_the_degrees_of_freedom_keep_the_idealised_pivot_near_nominal(clusters):
    # θ̂ − θ ~ N(0, σ² + v_img), v_rep ~ σ² χ²_{K−1} / (K − 1), v_img known: the coverage of
    # θ̂ ± t_ν √(v_rep + v_img) for every ratio ρ = v_img / σ². Plain Satterthwaite (ν from
    # v_rep itself) drops to 0.92 at 3 replicates and 0.88 at 2 where ρ ≈ 0.1.
    rng = np.random.default_rng(0)
    draws = 200_000
    w = rng.chisquare(clusters - 1, draws) / (clusters - 1)
    z = rng.standard_normal(draws)
    for rho in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
        bound = w * df_inflation(np.full(draws, clusters))
        df = (clusters - 1) * (1 + rho / bound) ** 2
        covered = np.abs(z) * np.sqrt(1 + rho) <= t_quantile(0.975, df) * np.sqrt(w + rho)
        assert 0.94 <= covered.mean() <= 0.975, (clusters, rho, covered.mean())


def _crossed(clusters: int, images: int, sd_image: float, sd_cross: float, seed: int):
    """Per-image values y[k, i] = b_i + e_ki of K clusters on N shared images, and every version
    of θ = their grand mean that t_interval needs."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0, sd_image, images)[None] + rng.normal(0, sd_cross, (clusters, images))
    weights = image_weights(images, 1000, 0).astype(float)  # one draw (cached), fresh data
    per_cluster = weights @ y.T / images  # [B, K]: each cluster's mean on shared resamples
    orders = cluster_orders(clusters, 1000, seed)
    own = np.stack([per_cluster[orders[k], k] for k in range(clusters)], axis=1)
    jack = (y.mean(axis=1).sum() - y.mean(axis=1)) / max(clusters - 1, 1)  # K = 1: unused
    values = np.concatenate([[y.mean()], jack, per_cluster.mean(axis=1), own.mean(axis=1)]).reshape(
        -1, 1
    )
    return Stacked(values, np.ones((clusters, 1), bool), clusters, 1000)


def test_the_image_component_is_the_shared_images_effect_alone():
    # Two-way crossed model: v_img estimates σ_b² / N, not the interaction (σ_e² / (KN), in
    # the jackknife already). Averaged over draws, against the population values.
    images, sd_image, sd_cross = 2000, 0.3, 0.5
    v_img, v_rep = [], []
    for seed in range(40):
        interval = t_interval(_crossed(3, images, sd_image, sd_cross, seed), 0.95)
        v_img.append(interval.v_img.item())
        v_rep.append(interval.v_rep.item())
    assert np.mean(v_img) == pytest.approx(sd_image**2 / images, rel=0.1)
    assert np.mean(v_rep) == pytest.approx(sd_cross**2 / (3 * images), rel=0.25)


def test_a_single_cluster_has_images_only_and_too_few_clusters_no_interval():
    one = _crossed(1, 500, 0.3, 0.5, 0)
    interval = t_interval(one, 0.95)
    assert interval.v_rep.item() == 0 and np.isinf(interval.df.item())
    assert interval.v_img.item() == pytest.approx(np.var(one.shared, ddof=1))
    three = _crossed(3, 500, 0.3, 0.5, 0)
    lonely = Stacked(three.values, np.array([[True], [False], [False]]), 3, 1000)
    assert np.isnan(t_interval(lonely, 0.95).lo.item())


def analyse(tmp_path: Path, rows: list[dict], **options):
    root = tmp_path / "results"
    ResultStore(root).write_many(rows)
    return regime_table(load_results(root).frame, 0.5, **options)


def test_r_s_denominator_moves_with_its_numerator(tmp_path):
    # A pruned model right on exactly the images its dense model gets right: r = 1 on every
    # resample of the images, so its interval is exactly [1, 1]; its top-1 still varies.
    dense = exactly(dense_scores("cifar10", 2000, 0), 0.9)
    row = make_row(repair="none", correct=dense, top1=0.9, dense_top1=0.9)
    assert row["dense_correct"] == row["correct"]
    point = analyse(tmp_path, [row]).curves.iloc[0]
    assert point["r"] == pytest.approx(1.0)
    assert point["r_lo"] == pytest.approx(1.0, abs=1e-12)
    assert point["r_hi"] == pytest.approx(1.0, abs=1e-12)
    assert point["top1_lo"] < 0.89 < 0.91 < point["top1_hi"]  # 2000 images: ± 1.3 points


def test_at_chance_uses_one_margin_the_interval(tmp_path):
    # Top-1 0.114, 0.115, 0.116 over three replicates (no per-image results): the interval
    # 0.115 ± t(0.975, 2) · 0.001 / √3 = [0.1125, 0.1175] clears chance (0.1): not at chance.
    # The old rule also added 2 binomial standard errors (chance + 0.0134 = 0.1134) to the
    # interval's lower end and called it at chance. Another arm's interval reaching 0.1 is.
    rows = []
    for replicate, top1 in enumerate([0.114, 0.115, 0.116]):
        rows.append(make_row(replicate=replicate, top1=top1, images=False, repair="none"))
    for replicate, top1 in enumerate([0.095, 0.105, 0.11]):
        rows.append(
            make_row(replicate=replicate, top1=top1, images=False, repair="none", allocation="lamp")
        )
    curves = analyse(tmp_path, rows).curves.set_index("allocation")
    erk, lamp = curves.loc["erk"], curves.loc["lamp"]
    assert 0.1 < erk["top1_lo"] < 0.1 + 2 * (0.09 / 2000) ** 0.5
    assert not erk["at_chance"]
    assert lamp["top1_lo"] <= 0.1 and lamp["at_chance"]


@pytest.mark.parametrize("confidence", [0.5, 1.0, 1.5, float("nan")])
def test_a_confidence_outside_the_open_interval_is_refused(confidence):
    frame = pd.DataFrame(curve_rows([[0.9, 0.7]], [0.9, 0.92]))
    with pytest.raises(AnalysisInputError, match="outside \\(0.5, 1\\)"):
        regime_table(frame, confidence=confidence)
    assert check_confidence("0.9") == 0.9


def test_a_wider_confidence_gives_wider_intervals(tmp_path):
    rows = []
    for replicate, r in enumerate([0.6, 0.7, 0.75]):
        rows += curve_rows([[0.9, r]], [0.9, 0.92], replicate=replicate, repair="bn_recal")
    frame = pd.DataFrame(rows)
    narrow, wide = (regime_table(frame, 0.5, confidence=c).curves for c in (0.8, 0.99))
    assert ((wide["r_hi"] - wide["r_lo"]) > (narrow["r_hi"] - narrow["r_lo"])).all()


def test_a_pairs_intervals_do_not_depend_on_the_other_pairs_in_the_store(tmp_path):
    def pair(dataset: str) -> list[dict]:
        rows = []
        for replicate in range(3):
            by_seed = [[0.9 - 0.05 * replicate, 0.6 + 0.03 * seed] for seed in range(2)]
            rows += curve_rows(
                by_seed, [0.9, 0.92], dataset=dataset, replicate=replicate, repair="bn_recal"
            )
        return rows

    alone = analyse(tmp_path / "a", pair("cifar10")).curves
    both = analyse(tmp_path / "b", pair("cifar10") + pair("cifar100")).curves
    both = both[both["dataset"] == "cifar10"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, both)


def test_a_boundary_interval_inverts_the_curves_intervals():
    # Three curves on a 4-point grid, no cluster variance (one cluster), image resamples that
    # move each point by ±0.1 (so each point's interval is ±0.1 · z): one crossing 0.5 in the
    # middle, one above 0.5 everywhere, one below everywhere; a fourth without data.
    grid = np.array([0.90, 0.92, 0.94, 0.96])
    curves = np.array(
        [[0.9, 0.7, 0.3, 0.1], [0.9, 0.9, 0.9, 0.9], [0.2, 0.2, 0.1, 0.1], [np.nan] * 4]
    )
    rng = np.random.default_rng(0)
    noise = rng.choice([-0.1, 0.1], size=(1000, 1, 4))  # independent across points
    shared = curves[None] + noise
    values = np.concatenate([curves[None], np.full((1, 4, 4), np.nan), shared, shared])
    stack = Stacked(values, np.ones((1, 4, 4), bool), clusters=1, resamples=1000)
    lo, hi = crossing_interval(stack, grid, 0.5, 0.95)
    # The first curve: at λ of the way from 0.92 to 0.94 the estimate is 0.7 − 0.4λ and its
    # half width 1.96 · 0.1 · √((1 − λ)² + λ²) (independent points): solved numerically here.
    lam = np.linspace(0, 1, 100_001)
    inside = np.abs(0.7 - 0.4 * lam - 0.5) <= 1.959964 * 0.1 * np.sqrt((1 - lam) ** 2 + lam**2)
    assert lo[0] == pytest.approx(0.92 + 0.02 * lam[inside].min(), abs=2e-4)
    assert hi[0] == pytest.approx(0.92 + 0.02 * lam[inside].max(), abs=2e-4)
    assert lo[0] < 0.93 < hi[0]
    assert (lo[1], hi[1]) == (np.inf, np.inf)  # recovers everywhere: beyond the grid
    assert (lo[2], hi[2]) == (-np.inf, -np.inf)  # below the grid
    assert np.isnan(lo[3]) and np.isnan(hi[3])
