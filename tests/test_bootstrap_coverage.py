"""Coverage of the hierarchical bootstrap's paired LAMP − ERK interval, on stores of known truth.

How it is measured: 200 independent synthetic stores, each a fresh draw of everything the
bootstrap claims to cover: 10 replicates (a shared effect N(0, 0.04) on both arms' accuracy plus
an arm-specific one N(0, 0.04): the true difference varies across training seeds), 3 calibration
seeds per replicate (N(0, 0.01) each), and a fresh eval set of 1000 images whose per-image
correctness comes from the synthetic generator (`grid_row`: an image is right where its
difficulty plus replicate, seed and row noise falls below the row's accuracy; images shared by
both arms). The truth is the population mean difference in r, E[acc(lamp)] − E[acc(erk)] over the
replicate and seed distributions, with acc() the generator's exact expected accuracy over eval
sets (`expected_accuracy`), divided by dense − chance. Each store's 90 % interval comes from
`analysis.statistics.statistics` on the coded rows, the code the comparison table reports.
Measured when written: 0.875 of 200 intervals covered the truth (nominal 0.90); the test
accepts [0.85, 0.95].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from synthetic_store import expected_accuracy, grid_row

from analysis.coding import code_rows
from analysis.statistics import statistics

STORES, REPLICATES, SEEDS, IMAGES = 200, 10, 3, 1000
BASE = {"erk": 0.50, "lamp": 0.53}
SHARED, ARM, SEED = 0.04, 0.04, 0.01
DENSE, CHANCE, NOMINAL = 0.9, 0.1, 0.90


def simulated_store(k: int) -> pd.DataFrame:
    rng = np.random.default_rng([7, k])
    rows = []
    for replicate in range(REPLICATES):
        shared = rng.normal(0.0, SHARED)
        for allocation, base in BASE.items():
            arm = base + shared + rng.normal(0.0, ARM)
            for seed in range(SEEDS):
                rows.append(
                    grid_row(
                        arm + rng.normal(0.0, SEED),
                        eval_seed=k,  # every store is evaluated on its own draw of images
                        dataset="cifar10",
                        allocation=allocation,
                        repair="bn_recal",
                        seed=seed,
                        replicate=replicate,
                        eval_size=IMAGES,
                        dense_top1=DENSE,
                    )
                )
    return pd.DataFrame(rows)


def true_difference() -> float:
    """E over replicates and seeds of the expected accuracy, LAMP − ERK, in r."""
    draws = np.random.default_rng(0).standard_normal((100_000, 3))
    spread = draws @ np.array([SHARED, ARM, SEED])
    lamp, erk = (expected_accuracy(BASE[a] + spread).mean() for a in ("lamp", "erk"))
    return float((lamp - erk) / (DENSE - CHANCE))


def test_paired_interval_covers_the_true_difference_at_its_nominal_level():
    truth = true_difference()
    covered = []
    for k in range(STORES):
        diffs = statistics(code_rows(simulated_store(k)), (0.5,), 1000, NOMINAL, 0).lamp_erk
        lo, hi = diffs.lo.item(), diffs.hi.item()
        covered.append(lo <= truth <= hi)
    coverage = float(np.mean(covered))
    assert 0.85 <= coverage <= 0.95, coverage
