"""The findings a results document states first: band, allocation flips, replicate vs calibration
variation, computed from the tables and the rows (hand-built inputs with known answers)."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic_store import SyntheticGrid

from analysis import findings
from analysis.definitions import BOTH_AT_CHANCE, NO_WINNER, SINGLE_REPLICATE
from analysis.regimes import main


def _rows(values: dict[tuple[int, int], float], **fields: object) -> list[dict]:
    return [
        {"status": "ok", "allocation": "erk", "repair_variant": "bn_recal", "sparsity": 0.9,
         "replicate": replicate, "seed": seed, "top1": top1} | fields
        for (replicate, seed), top1 in values.items()
    ]  # fmt: skip


def test_variation_separates_replicates_from_calibration_draws():
    # Replicate means 0.60 and 0.80 (std 0.1414); seed stds 0.0141 and 0.0283 (mean 0.0212).
    frame = pd.DataFrame(
        _rows({(0, 0): 0.59, (0, 1): 0.61, (1, 0): 0.78, (1, 1): 0.82})
        + _rows({(0, 0): 0.5, (1, 0): 0.6}, repair_variant="none")  # one seed: no cell
    )
    table = findings.variation_table(frame)
    assert len(table) == 1
    assert table["between_replicates"].iloc[0] == pytest.approx(0.2 / 2**0.5)
    assert table["between_seeds"].iloc[0] == pytest.approx((0.02 + 0.04) / 2 / 2**0.5)
    lines = findings.variation_findings(frame)
    assert "median 14.14 points" in lines[0] and "median 2.12 points" in lines[1]
    assert "in 1 of 1 cells" in lines[2]


def _band_row(beyond: float, lo: float, hi: float, variant: str = "obs_reconstruct") -> dict:
    return {
        "allocation": "erk", "tau": 0.5, "boundary_bn_recal": 0.92, "boundary_activation": 0.94,
        "activation_variant": "channel_var_shrink", "band_width": 0.02, "band_width_lo": 0.01,
        "band_width_hi": 0.03, "sensitive_points": 1, "reconstruction_variant": variant,
        "boundary_reconstruction": 0.94 - beyond, "band_beyond_reconstruction": beyond,
        "band_beyond_reconstruction_lo": lo, "band_beyond_reconstruction_hi": hi,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("beyond", "lo", "hi", "verdict"),
    [
        (0.01, 0.004, 0.015, "the band survives it: 0.010 [0.004, 0.015] of it lies beyond"),
        (0.005, 0.0, 0.012, "whether the band survives it is inside the noise"),
        (0.0, 0.0, 0.0, "the band does not survive it (0.000 [0.000, 0.000] beyond it)"),
    ],
)
def test_the_band_finding_says_whether_it_survives_weight_reconstruction(beyond, lo, hi, verdict):
    (line,) = findings.band_findings(pd.DataFrame([_band_row(beyond, lo, hi)]), 0.5)
    assert f"weight reconstruction (obs_reconstruct) stops at {0.94 - beyond:.3f}: " in line
    assert verdict in line


def test_without_a_reconstruction_the_band_finding_says_nothing_of_it():
    row = _band_row(float("nan"), float("nan"), float("nan"), variant="")
    (line,) = findings.band_findings(pd.DataFrame([row]), 0.5)
    assert "reconstruction" not in line and line.endswith("(tau = 0.5).")


def test_a_preference_that_changes_side_is_called_a_flip():
    comparison = pd.DataFrame(
        {
            "repair_variant": ["bn_recal"] * 4 + ["none"] * 2,
            "sparsity": [0.8, 0.9, 0.94, 0.96, 0.9, 0.94],
            "winner": ["erk", NO_WINNER, "lamp", "lamp", BOTH_AT_CHANCE, BOTH_AT_CHANCE],
        }
    )
    bn, none, by_repair = findings.allocation_findings(comparison)
    assert by_repair == (
        "LAMP against ERK: the preferred allocation depends on the repair "
        "(LAMP wins under bn_recal; ERK under bn_recal; no allocation wins under none)."
    )
    assert bn.startswith("bn_recal: the preference flips with sparsity")
    assert "LAMP wins at 0.94, 0.96" in bn and "ERK wins at 0.8" in bn
    assert "no winner at 1 point(s)" in bn
    assert (
        none == "none: no allocation wins anywhere; no winner at 0 point(s), both at chance at 2."
    )


def test_cells_without_a_verdict_from_a_single_replicate_are_counted_apart():
    comparison = pd.DataFrame(
        {
            "repair_variant": ["bn_recal"] * 3,
            "sparsity": [0.9, 0.94, 0.96],
            "winner": [SINGLE_REPLICATE, SINGLE_REPLICATE, BOTH_AT_CHANCE],
        }
    )
    (line,) = findings.allocation_findings(comparison)
    assert line == (
        "bn_recal: no allocation wins anywhere; no winner at 0 point(s), both at chance at 1, "
        "no verdict from a single replicate at 2."
    )


@pytest.mark.parametrize(
    ("winners", "statement"),
    [
        (
            {"bn_recal": "lamp", "obs_reconstruct": "erk", "none": BOTH_AT_CHANCE},
            "depends on the repair (LAMP wins under bn_recal; ERK under obs_reconstruct; no "
            "allocation wins under none).",
        ),
        (
            {"bn_recal": "lamp", "obs_reconstruct": "lamp", "none": NO_WINNER},
            "only LAMP ever wins, under bn_recal, obs_reconstruct; no allocation wins under none.",
        ),
        ({"bn_recal": NO_WINNER, "none": BOTH_AT_CHANCE}, "no allocation wins under any repair."),
    ],
)
def test_whether_the_preferred_allocation_depends_on_the_repair(winners, statement):
    comparison = pd.DataFrame(
        {"repair_variant": list(winners), "sparsity": 0.9, "winner": list(winners.values())}
    )
    assert findings.allocation_findings(comparison)[-1].endswith(statement)


def test_the_results_document_states_the_findings(tmp_path):
    root = tmp_path / "results"
    SyntheticGrid(
        datasets=("fashion_mnist",), archs=("resnet20",), allocations=("erk", "lamp"),
        sparsities=(0.85, 0.9, 0.94, 0.98), repairs=("none", "bn_recal", "channel_var_shrink"),
        seeds=2, replicates=3,
    ).write(root)  # fmt: skip
    out = tmp_path / "results.md"
    assert main([str(root), "--format", "markdown", "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    found = text[text.index("### Findings") : text.index("### Top-1 %")]
    for allocation in ("erk", "lamp"):
        assert f"- {allocation}: " in found
    for variant in ("none", "bn_recal", "channel_var_shrink"):
        assert f"- {variant}: " in found
    assert "between replicates: median" in found
    assert "### LAMP − ERK" in text


def test_a_document_of_several_networks_opens_with_their_bands_side_by_side(tmp_path):
    root = tmp_path / "results"
    grid = dict(
        datasets=("fashion_mnist",), allocations=("erk", "lamp"), sparsities=(0.85, 0.9, 0.94),
        repairs=("none", "bn_recal", "channel_var_shrink", "obs_reconstruct"), seeds=1,
        replicates=2,
    )  # fmt: skip
    SyntheticGrid(archs=("resnet20", "vgg16_bn_quarter"), **grid).write(root)
    out = tmp_path / "results.md"
    assert main([str(root), "--format", "markdown", "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    across = text[text.index("## The band across networks") : text.index("## fashion_mnist /")]
    rows = [line for line in across.splitlines() if line.startswith("| fashion_mnist")]
    assert [row.split(" | ")[:2] for row in rows] == [
        [f"| fashion_mnist / {arch}", allocation]
        for arch in ("resnet20", "vgg16_bn_quarter")
        for allocation in ("erk", "lamp")
    ]
    assert "band beyond reconstruction" in across
    single = tmp_path / "single"
    SyntheticGrid(archs=("resnet20",), **grid).write(single)
    assert main([str(single), "--format", "markdown", "--output", str(out)]) == 0
    assert "## The band across networks" not in out.read_text(encoding="utf-8")
