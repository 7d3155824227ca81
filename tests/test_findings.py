"""The findings a results document states first: band, allocation flips, replicate vs calibration
variation, computed from the tables and the rows (hand-built inputs with known answers)."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic_store import SyntheticGrid

from analysis import findings
from analysis.definitions import BOTH_AT_CHANCE, NO_WINNER
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


def test_a_preference_that_changes_side_is_called_a_flip():
    comparison = pd.DataFrame(
        {
            "repair_variant": ["bn_recal"] * 4 + ["none"] * 2,
            "sparsity": [0.8, 0.9, 0.94, 0.96, 0.9, 0.94],
            "winner": ["erk", NO_WINNER, "lamp", "lamp", BOTH_AT_CHANCE, BOTH_AT_CHANCE],
        }
    )
    bn, none = findings.allocation_findings(comparison)
    assert bn.startswith("bn_recal: the preference flips with sparsity")
    assert "LAMP wins at 0.94, 0.96" in bn and "ERK wins at 0.8" in bn
    assert "no winner at 1 point(s)" in bn
    assert (
        none == "none: no allocation wins anywhere; no winner at 0 point(s), both at chance at 2."
    )


def test_the_results_document_states_the_findings(tmp_path):
    root = tmp_path / "results"
    SyntheticGrid(
        datasets=("fashion_mnist",), archs=("resnet20",), allocations=("erk", "lamp"),
        sparsities=(0.85, 0.9, 0.94, 0.98), repairs=("none", "bn_recal", "channel_var_shrink"),
        seeds=2, replicates=3,
    ).write(root)  # fmt: skip
    out = tmp_path / "results.md"
    assert main([str(root), "--format", "markdown", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    found = text[text.index("### Findings") : text.index("### Top-1 %")]
    for allocation in ("erk", "lamp"):
        assert f"- {allocation}: " in found
    for variant in ("none", "bn_recal", "channel_var_shrink"):
        assert f"- {variant}: " in found
    assert "between replicates: median" in found
    assert "### LAMP − ERK" in text
