"""The study's headline findings for one (dataset, arch), stated from the tables with intervals.

Three questions a reader of a results document asks first, answered from what the regime
analysis computed (never typed in):

- the repair-sensitive band: where BN recalibration has stopped recovering and activation
  repair still does, and how wide it is (per allocation, at the first τ);
- whether the preferred allocation flips with sparsity: LAMP − ERK winners per variant, named
  only where the paired interval excludes zero;
- how large replicate variation is next to calibration variation: per cell (allocation, variant,
  sparsity) the standard deviation of top-1 between replicates (each averaged over its
  calibration draws) against the mean standard deviation between calibration draws within a
  replicate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.definitions import BOTH_AT_CHANCE, NO_WINNER

PERCENT = 100.0


def band_findings(summary: pd.DataFrame, tau: float) -> list[str]:
    """One sentence per allocation on the band at `tau`."""
    lines = []
    for row in summary[summary["tau"] == tau].itertuples(index=False):
        if pd.isna(row.band_width):
            lines.append(f"{row.allocation}: no band could be placed at tau = {tau:g}.")
            continue
        lines.append(
            f"{row.allocation}: BN recalibration stops recovering at sparsity "
            f"{row.boundary_bn_recal:.3f}, activation repair ({row.activation_variant}) at "
            f"{row.boundary_activation:.3f}: a band {row.band_width:.3f} wide "
            f"[{row.band_width_lo:.3f}, {row.band_width_hi:.3f}] holding "
            f"{row.sensitive_points} grid point(s) (tau = {tau:g})."
        )
    return lines


def allocation_findings(comparison: pd.DataFrame) -> list[str]:
    """Per variant: at which sparsities LAMP or ERK wins, and whether the preference flips."""
    lines = []
    for variant, rows in comparison.groupby("repair_variant", sort=False):
        won = {
            side: [f"{s:g}" for s in rows.loc[rows["winner"] == side, "sparsity"]]
            for side in ("lamp", "erk")
        }
        undecided = int((rows["winner"] == NO_WINNER).sum())
        at_chance = int((rows["winner"] == BOTH_AT_CHANCE).sum())
        if won["lamp"] and won["erk"]:
            verdict = "the preference flips with sparsity"
        elif won["lamp"] or won["erk"]:
            verdict = f"only {'LAMP' if won['lamp'] else 'ERK'} ever wins"
        else:
            verdict = "no allocation wins anywhere"
        detail = "; ".join(
            f"{side.upper()} wins at {', '.join(points)}" for side, points in won.items() if points
        )
        lines.append(
            f"{variant}: {verdict}"
            + (f" ({detail})" if detail else "")
            + f"; no winner at {undecided} point(s), both at chance at {at_chance}."
        )
    return lines


def variation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (allocation, variant, sparsity) cell with ≥ 2 replicates and ≥ 2 seeds each: top-1
    std between replicates (of their seed means) and mean std between seeds within a replicate."""
    ok = frame[frame["status"] == "ok"]
    cells = []
    for key, rows in ok.groupby(["allocation", "repair_variant", "sparsity"], sort=True):
        per_replicate = rows.groupby("replicate")["top1"]
        if per_replicate.ngroups < 2 or per_replicate.size().min() < 2:
            continue
        cells.append((*key, per_replicate.mean().std(ddof=1), per_replicate.std(ddof=1).mean()))
    columns = ["allocation", "repair_variant", "sparsity", "between_replicates", "between_seeds"]
    return pd.DataFrame(cells, columns=columns)


def variation_findings(frame: pd.DataFrame) -> list[str]:
    table = variation_table(frame)
    if table.empty:
        return ["replicate against calibration variation: needs ≥ 2 replicates with ≥ 2 seeds."]
    ratio = table["between_replicates"] / table["between_seeds"].replace(0.0, np.nan)
    return [
        f"top-1 standard deviation between replicates: median "
        f"{PERCENT * table['between_replicates'].median():.2f} points, max "
        f"{PERCENT * table['between_replicates'].max():.2f} (over {len(table)} cells).",
        f"between calibration draws within a replicate: median "
        f"{PERCENT * table['between_seeds'].median():.2f} points, max "
        f"{PERCENT * table['between_seeds'].max():.2f}.",
        f"replicates vary more than calibration draws in {int((ratio > 1).sum())} of "
        f"{int(ratio.notna().sum())} cells (median ratio {ratio.median():.1f}).",
    ]
