"""Where a normalised-accuracy curve stops recovering: the first downward crossing of τ.

Vectorised over any number of leading axes so the same code finds the boundary of every mean
curve and of every version of it an interval needs (replicates left out, images resampled).
Missing points (NaN) are skipped: a crossing that spans a gap is interpolated between the valid
points around it (the caller flags the gap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# r within this of τ counts as reaching τ: r is a ratio of accuracies and float noise in it
# must not decide whether a point recovers.
TAU_TOLERANCE = 1e-9

NO_DATA, BELOW, CROSSING, ON_GRID, BEYOND = range(5)
STATUS_NAMES = {
    NO_DATA: "no data",
    BELOW: "below the grid",
    CROSSING: "crossing",
    ON_GRID: "on grid point",
    BEYOND: "beyond the grid",
}


def recovers(r: np.ndarray, tau: float) -> np.ndarray:
    """r ≥ τ (with float tolerance); NaN never recovers, so callers must track missing points."""
    with np.errstate(invalid="ignore"):
        return r >= tau - TAU_TOLERANCE


@dataclass(frozen=True)
class Crossings:
    """Per curve: status code, boundary sparsity (NaN unless crossed), bracket indices (-1 if none)
    and whether r comes back up to τ after being below it (a non-monotone curve)."""

    status: np.ndarray
    boundary: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    non_monotone: np.ndarray

    def censored(self, grid: np.ndarray) -> np.ndarray:
        """Boundary with 'below' as -inf and 'beyond' as +inf."""
        out = self.boundary.copy()
        out[self.status == BELOW] = -np.inf
        out[self.status == BEYOND] = np.inf
        return out


def first_crossings(values: np.ndarray, grid: np.ndarray, tau: float) -> Crossings:
    """values [..., S] over the ascending sparsity grid [S] -> the first downward τ crossing."""
    size = values.shape[-1]
    valid = ~np.isnan(values)
    above = recovers(values, tau)
    below = valid & ~above
    index = np.broadcast_to(np.arange(size), values.shape)
    last_valid = np.maximum.accumulate(np.where(valid, index, -1), axis=-1)
    previous = np.concatenate([np.full((*values.shape[:-1], 1), -1), last_valid[..., :-1]], -1)
    has_previous = previous >= 0
    safe_previous = np.maximum(previous, 0)
    previous_above = has_previous & np.take_along_axis(above, safe_previous, -1)
    previous_below = has_previous & np.take_along_axis(below, safe_previous, -1)
    down = below & previous_above
    up = above & previous_below

    first = np.argmax(valid, axis=-1)
    starts_below = np.take_along_axis(below, first[..., None], -1)[..., 0]
    has_down = down.any(axis=-1)
    upper = np.argmax(down, axis=-1)
    lower = np.take_along_axis(previous, upper[..., None], -1)[..., 0]

    take = np.maximum(lower, 0)[..., None]
    v_lo = np.take_along_axis(values, take, -1)[..., 0]
    v_hi = np.take_along_axis(values, upper[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.clip((v_lo - tau) / (v_lo - v_hi), 0.0, 1.0)
    on_grid = np.abs(v_lo - tau) <= TAU_TOLERANCE
    fraction = np.where(on_grid, 0.0, fraction)
    boundary = grid[np.maximum(lower, 0)] + fraction * (grid[upper] - grid[np.maximum(lower, 0)])

    status = np.full(values.shape[:-1], BEYOND)
    crossed = has_down & ~starts_below
    status = np.where(crossed, np.where(on_grid, ON_GRID, CROSSING), status)
    status = np.where(starts_below, BELOW, status)
    status = np.where(valid.any(axis=-1), status, NO_DATA)
    crossed = (status == CROSSING) | (status == ON_GRID)
    return Crossings(
        status=status,
        boundary=np.where(crossed, boundary, np.nan),
        lower=np.where(crossed, lower, -1),
        upper=np.where(crossed, upper, -1),
        non_monotone=up.any(axis=-1),
    )
