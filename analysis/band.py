"""The repair-sensitive band from per-variant boundaries, vectorised over any leading axes.

Why its own module: the band of the mean curves (tables/summary.py) and the band of every
version its interval needs (statistics.py) must be one computation, or the interval would not
belong to the value.
"""

from __future__ import annotations

import warnings

import numpy as np

from analysis.boundaries import BELOW, BEYOND, Crossings
from analysis.definitions import ACTIVATION, BN_RECAL, NO_REPAIR, RECONSTRUCTION


def effective_boundaries(crossings: Crossings, own_grid: np.ndarray) -> np.ndarray:
    """Boundaries with 'below the grid' taken as the first grid point and 'beyond' as the last:
    the band width is then what the grid can show. NaN where a curve has no data."""
    out = crossings.boundary.copy()
    if len(own_grid):
        out[crossings.status == BELOW] = own_grid[0]
        out[crossings.status == BEYOND] = own_grid[-1]
    return out


def role_edge(edges: np.ndarray, roles: np.ndarray, role: str) -> np.ndarray:
    """edges [..., M, A] -> [..., A]: the latest boundary among the variants of one role (the
    role's best variant), NaN where none of them has one."""
    own = edges[..., roles == role, :]
    if own.shape[-2] == 0:
        return np.full(edges.shape[:-2] + edges.shape[-1:], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no variant has a boundary
        return np.nanmax(own, axis=-2)


def band(edges: np.ndarray, roles: np.ndarray) -> dict[str, np.ndarray]:
    """From where none and BN recalibration stop recovering (the later of the two) to where the
    best activation-statistic variant stops; and how much of it lies beyond where the best
    weight reconstruction stops (NaN without one). edges [..., M, A] -> arrays [..., A]."""
    none_edge = role_edge(edges, roles, NO_REPAIR)
    bn_edge = role_edge(edges, roles, BN_RECAL)
    act_edge = role_edge(edges, roles, ACTIVATION)
    rec_edge = role_edge(edges, roles, RECONSTRUCTION)
    low = np.where(np.isnan(bn_edge), np.nan, np.fmax(none_edge, bn_edge))
    with np.errstate(invalid="ignore"):
        width = np.where(np.isnan(act_edge + low), np.nan, np.maximum(0.0, act_edge - low))
        inside = width > 0
        beyond = np.where(
            np.isnan(width + rec_edge), np.nan, np.maximum(0.0, act_edge - np.fmax(low, rec_edge))
        )
    return {
        "boundary_none": none_edge,
        "boundary_bn_recal": bn_edge,
        "boundary_activation": act_edge,
        "boundary_reconstruction": rec_edge,
        "band_lo": np.where(inside, low, np.nan),
        "band_hi": np.where(inside, act_edge, np.nan),
        "band_width": width,
        "band_beyond_reconstruction": beyond,
    }
