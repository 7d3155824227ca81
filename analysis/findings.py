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

from analysis.definitions import BOTH_AT_CHANCE, NO_WINNER, SINGLE_REPLICATE

PERCENT = 100.0


def band_findings(summary: pd.DataFrame, tau: float) -> list[str]:
    """One sentence per allocation on the band at `tau`, and whether it survives weight
    reconstruction where the store has one."""
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
            f"{row.sensitive_points} grid point(s) (tau = {tau:g})"
            + _reconstruction_clause(row)
            + "."
        )
    return lines


def _reconstruction_clause(row) -> str:
    """', and weight reconstruction (…) …' on whether the band survives it ('' without one)."""
    if not row.reconstruction_variant or pd.isna(row.band_beyond_reconstruction):
        return ""
    beyond = (
        f"{row.band_beyond_reconstruction:.3f} [{row.band_beyond_reconstruction_lo:.3f}, "
        f"{row.band_beyond_reconstruction_hi:.3f}]"
    )
    if row.band_beyond_reconstruction_lo > 0:
        verdict = f"the band survives it: {beyond} of it lies beyond"
    elif row.band_beyond_reconstruction_hi > 0:
        verdict = f"whether the band survives it is inside the noise ({beyond} beyond it)"
    else:
        verdict = f"the band does not survive it ({beyond} beyond it)"
    return (
        f"; weight reconstruction ({row.reconstruction_variant}) stops at "
        f"{row.boundary_reconstruction:.3f}: {verdict}"
    )


def allocation_findings(comparison: pd.DataFrame) -> list[str]:
    """Per variant: at which sparsities LAMP or ERK wins, and whether the preference flips; then,
    with several variants, whether the preferred allocation depends on the repair."""
    lines, sides_of = [], {}
    for variant, rows in comparison.groupby("repair_variant", sort=False):
        won = {
            side: [f"{s:g}" for s in rows.loc[rows["winner"] == side, "sparsity"]]
            for side in ("lamp", "erk")
        }
        undecided = int((rows["winner"] == NO_WINNER).sum())
        at_chance = int((rows["winner"] == BOTH_AT_CHANCE).sum())
        single = int((rows["winner"] == SINGLE_REPLICATE).sum())
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
            + f"; no winner at {undecided} point(s), both at chance at {at_chance}"
            + (f", no verdict from a single replicate at {single}" if single else "")
            + "."
        )
        sides_of[variant] = {side.upper() for side, points in won.items() if points}
    if len(sides_of) > 1:
        lines.append(_preference_by_repair(sides_of))
    return lines


def _preference_by_repair(sides_of: dict[str, set[str]]) -> str:
    """Whether the repairs disagree on which allocation ever wins (from the per-variant
    winners, each named only where its paired interval excludes zero)."""
    sides = set().union(*sides_of.values())
    if not sides:
        return "LAMP against ERK: no allocation wins under any repair."

    def under(side: str) -> str:
        return ", ".join(v for v, won in sides_of.items() if side in won)

    undecided = [v for v, won in sides_of.items() if not won]
    rest = f"; no allocation wins under {', '.join(undecided)}" if undecided else ""
    if len(sides) == 1:
        (side,) = sides
        return f"LAMP against ERK: only {side} ever wins, under {under(side)}{rest}."
    return (
        "LAMP against ERK: the preferred allocation depends on the repair "
        f"(LAMP wins under {under('LAMP')}; ERK under {under('ERK')}{rest})."
    )


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
