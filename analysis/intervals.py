"""t-type intervals whose variance adds a between-replicate and a shared eval-image component.

Why not a percentile bootstrap over replicates: grids have 2–5 replicates (dense checkpoints), the
unit that varies most, and a percentile bootstrap over three clusters is close to [min, max] of
three means (it covered 0.83 with 3 replicates when checkpoints dominate). A t-interval over
replicate means alone is no fix either: every replicate is evaluated on the same eval images, so
the images' own effect (an image that every checkpoint gets right by luck of the draw) is common
to all replicate means and invisible to their spread (it covered 0.90 when image noise dominates).

The interval of any statistic θ (a mean, r, a boundary, the band, a paired difference) is

    θ̂ ± t_{q, ν} · sqrt(v_rep + v_img)

- v_rep: the delete-one-cluster jackknife variance of θ computed on all images. Clusters are the
  replicates; a pair with one replicate has its calibration seeds as clusters (flagged: its
  intervals do not cover other checkpoints). It holds replicate and nested seed variation and the
  replicate × image interaction (each checkpoint errs on its own images).
- v_img: the eval images' main effect only, from bootstrap resamples of the images: v_shared is the
  variance of θ when one resample of the images is used by every cluster, v_indep the same when
  each cluster uses a resample of its own; v_img = (v_shared − v_indep) · K / (K − 1), clamped at
  0, K the clusters contributing. Under the two-way crossed model (image effect b, cluster ×
  image interaction e, N images) v_shared = σ_b²/N + σ_e²/(KN) and v_indep = (σ_b² + σ_e²)/(KN),
  so v_img = σ_b²/N exactly: the interaction, already in v_rep, is not counted twice. Each
  cluster's own resample is the shared resample with its index permuted (bootstrap.py), so the
  cluster's own variance cancels exactly between v_shared and v_indep and the difference carries
  little Monte-Carlo noise.
- ν: Satterthwaite's, (v⁺ + v_img)² / (v⁺² / (K − 1)), with the image component (estimated from
  thousands of images) taken as exact and v⁺ = v_rep · (K − 1) / χ²_{K−1}(0.25), the upper 75 %
  confidence bound of the between-cluster variance, in the degrees of freedom only. Why: with
  v_rep itself in that formula, an estimate that is small by chance (two of three checkpoints
  alike) makes ν large and t small at once, and the intervals cover 0.92 with 3 replicates and
  0.88 with 2 where the two components are of similar size. With the bound the coverage of the
  idealised pivot stays within 0.943–0.973 at 2 replicates and 0.949–0.963 at 3 for every ratio
  of the components (tests/test_intervals.py); with v_rep = 0, ν = ∞.

A pair with a single cluster (one replicate, one seed) has no v_rep: its interval is v_shared
alone (images only, flagged). A statistic with fewer than two contributing clusters in a pair
that has more has no interval (NaN): one checkpoint cannot say how another would do.

Boundaries (where a curve crosses τ) are a ratio, (r_i − τ) / (r_i − r_j), whose denominator is
noisy where the curve is flat; an interval of the form θ̂ ± t·sd undercovers there (0.89 at 10
replicates in analysis/simulate.py). `crossing_interval` inverts the curve's own intervals
instead (Fieller): the boundary's interval is every sparsity where the interval of the
interpolated curve contains τ, which covers the true crossing at least as often as the curve's
interval covers the curve there.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# t quantiles are interpolated in x = 1/ν on this many grid points over [0, 1] (ν ≥ 1); the
# interpolation error is below 1e-5 of the quantile (tests/test_intervals.py).
_T_GRID = 4097
_CORNISH_FISHER_DF = 50.0  # above this ν the 4-term Cornish–Fisher expansion is exact enough


def check_confidence(confidence: float) -> float:
    """A confidence level in (0.5, 1); raises AnalysisInputError (one line) otherwise."""
    from analysis.definitions import AnalysisInputError

    try:
        value = float(confidence)
    except (TypeError, ValueError):
        raise AnalysisInputError(
            f"confidence {confidence!r} is not a number; expected a value in (0.5, 1), e.g. 0.95"
        ) from None
    if not 0.5 < value < 1.0:  # NaN fails this too
        raise AnalysisInputError(f"confidence {value:g} is outside (0.5, 1); the default is 0.95")
    return value


def _log_beta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    return lgamma(a) + lgamma(b) - lgamma(a + b)


def _beta_fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Continued fraction of the regularised incomplete beta (modified Lentz), vectorised."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, 400):
        m2 = 2.0 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            delta = d * c
            h = h * delta
        if np.all(np.abs(delta - 1.0) < 1e-15):
            break
    return h


def _t_upper_tail(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """P(T > t) for t > 0: I_{ν/(ν+t²)}(ν/2, 1/2) / 2."""
    x = df / (df + t * t)
    a, b = df / 2.0, np.full_like(df, 0.5)
    front = np.exp(a * np.log(x) + b * np.log1p(-x) - _log_beta(a, b))
    direct = x < (a + 1.0) / (a + b + 2.0)
    safe_x = np.where(direct, x, 1.0 - x)
    fa, fb = np.where(direct, a, b), np.where(direct, b, a)
    fraction = front * _beta_fraction(fa, fb, safe_x) / fa
    incomplete = np.where(direct, fraction, 1.0 - fraction)
    return incomplete / 2.0


def _t_density(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    log_norm = lgamma((df + 1) / 2) - lgamma(df / 2) - 0.5 * np.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df))


def _cornish_fisher(z: float, df: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 26.7.5: the t quantile from the normal one, to ν⁻⁴."""
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _hill(two_sided: float, df: np.ndarray) -> np.ndarray:
    """Hill (1970), Algorithm 396: a close start for the t quantile of two-sided probability P."""
    a = 1.0 / (df - 0.5)
    b = 48.0 / (a * a)
    c = ((20700.0 * a / b - 98.0) * a - 16.0) * a + 96.36
    d = ((94.5 / (b + c) - 3.0) / b + 1.0) * np.sqrt(a * math.pi / 2.0) * df
    y = (d * two_sided) ** (2.0 / df)
    x = NormalDist().inv_cdf(0.5 * two_sided)
    asymptotic = (df < 2.1) & (two_sided > 0.5) | (y > 0.05 + a)
    c2 = c + np.where(df < 5, 0.3 * (df - 4.5) * (x + 0.6), 0.0)
    c2 = (((0.05 * d * x - 5.0) * x - 7.0) * x - 2.0) * x + b + c2
    y2 = (((((0.4 * x * x + 6.3) * x * x + 36.0) * x * x + 94.5) / c2 - x * x - 3.0) / b + 1.0) * x
    far = np.expm1(a * y2 * y2)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = (
            (
                1.0 / (((df + 6.0) / (df * y) - 0.089 * d - 0.822) * (df + 2.0) * 3.0)
                + 0.5 / (df + 4.0)
            )
            * y
            - 1.0
        ) * (df + 1.0) / (df + 2.0) + 1.0 / y
    return np.sqrt(df * np.where(asymptotic, far, near))


def _exact_quantiles(prob: float, df: np.ndarray) -> np.ndarray:
    """t quantiles at prob (> 0.5) for ν ≥ 1: Hill's start, then Taylor steps on the exact tail."""
    tail = 1.0 - prob
    q = _hill(2.0 * tail, df)
    q = np.where(df == 1.0, math.tan(math.pi * (prob - 0.5)), q)
    for _ in range(6):
        step = (_t_upper_tail(q, df) - tail) / _t_density(q, df)
        q = q + step * (1.0 + step * q * (df + 1.0) / (2.0 * (q * q + df)))
    return q


@functools.lru_cache(maxsize=8)
def _t_table(prob: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(0.0, 1.0, _T_GRID)  # x = 1/ν
    z = NormalDist().inv_cdf(prob)
    values = np.empty_like(grid)
    values[0] = z
    df = 1.0 / grid[1:]
    large = df >= _CORNISH_FISHER_DF
    values[1:][large] = _cornish_fisher(z, df[large])
    values[1:][~large] = _exact_quantiles(prob, df[~large])
    values.flags.writeable = False
    return grid, values


def t_quantile(prob: float, df: np.ndarray | float) -> np.ndarray:
    """Student-t quantile at prob ∈ (0.5, 1) for any ν ≥ 1 (ν = inf: the normal quantile)."""
    grid, values = _t_table(float(prob))
    with np.errstate(divide="ignore"):
        x = np.clip(1.0 / np.asarray(df, float), 0.0, 1.0)
    return np.interp(x, grid, values)


DF_BOUND = 0.25  # ν uses the between-cluster variance's upper (1 − DF_BOUND) confidence bound


def _lower_gamma(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x) by its series (any x ≥ 0)."""
    if x <= 0:
        return 0.0
    term = total = 1.0 / a
    n = 0
    while abs(term) > 1e-17 * abs(total):
        n += 1
        term *= x / (a + n)
        total += term
    return math.exp(a * math.log(x) - x - math.lgamma(a)) * total


@functools.lru_cache(maxsize=256)
def chi2_quantile(df: int, prob: float) -> float:
    """The prob quantile of χ² with df degrees of freedom (bisection on the exact CDF)."""
    lo, hi = 0.0, max(1.0, df + 20.0 * math.sqrt(2.0 * df))
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if _lower_gamma(df / 2.0, mid / 2.0) < prob:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def df_inflation(clusters: np.ndarray) -> np.ndarray:
    """(K − 1) / χ²_{K−1}(DF_BOUND): v_rep times this is its upper confidence bound."""
    k = np.asarray(clusters, int)
    out = np.full(k.shape, np.nan)
    for value in np.unique(k[k >= 2]):
        out[k == value] = (value - 1) / chi2_quantile(int(value) - 1, DF_BOUND)
    return out


@dataclass(frozen=True)
class Stacked:
    """One statistic in every version the interval needs, stacked on the first axis:
    [0] the estimate on all data, [1 : 1 + K] with cluster k left out, then B shared-image and B
    own-image resamples. `present` [K, ...]: whether cluster k contributes to the statistic."""

    values: np.ndarray
    present: np.ndarray
    clusters: int  # K of the pair
    resamples: int  # B

    @property
    def point(self) -> np.ndarray:
        return self.values[0]

    @property
    def jackknife(self) -> np.ndarray:
        return self.values[1 : 1 + self.clusters]

    @property
    def shared(self) -> np.ndarray:
        return self.values[1 + self.clusters : 1 + self.clusters + self.resamples]

    @property
    def own(self) -> np.ndarray:
        return self.values[1 + self.clusters + self.resamples :]

    def derive(self, values: np.ndarray, present: np.ndarray) -> Stacked:
        return Stacked(values, present, self.clusters, self.resamples)


@dataclass(frozen=True)
class Interval:
    lo: np.ndarray
    hi: np.ndarray
    v_rep: np.ndarray  # between-cluster variance (jackknife)
    v_img: np.ndarray  # shared eval-image variance
    df: np.ndarray  # degrees of freedom (module docstring; inf: normal)
    clusters: np.ndarray  # clusters contributing


def _nanvar(values: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Variance over the first axis, NaN ignored; taken about `center` (shift-invariant), so
    identical values give exactly 0."""
    shifted = values - np.where(np.isfinite(center), center, 0.0)
    if not np.isnan(shifted).any():
        return shifted.var(axis=0, ddof=1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no interval
        return np.nanvar(shifted, axis=0, ddof=1)


def _half_width(
    v_rep: np.ndarray,
    v_shared: np.ndarray,
    v_own: np.ndarray,
    contributing: np.ndarray,
    clusters: int,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(half width, v_img, ν) from the variance parts (module docstring); NaN half width where
    fewer than 2 of several clusters contribute."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if clusters <= 1:
            v_img, df = v_shared, np.full(np.shape(v_shared), np.inf)
            valid = np.ones(np.shape(v_shared), bool)
        else:
            v_img = np.clip(v_shared - v_own, 0.0, None) * contributing / (contributing - 1)
            bound = v_rep * df_inflation(contributing)
            df = np.where(v_rep > 0, (bound + v_img) ** 2 / (bound**2 / (contributing - 1)), np.inf)
            valid = contributing >= 2
        t = t_quantile((1.0 + confidence) / 2.0, np.where(valid, df, np.inf))
        half = np.where(valid, t * np.sqrt(v_rep + v_img), np.nan)
    return half, v_img, df


def t_interval(stat: Stacked, confidence: float) -> Interval:
    """θ̂ ± t_ν √(v_rep + v_img) (module docstring), elementwise over the statistic's shape."""
    point = stat.point
    v_shared, v_own = _nanvar(stat.shared, point), _nanvar(stat.own, point)
    if stat.clusters <= 1:
        v_rep = np.zeros_like(point)
        contributing = np.ones(point.shape, int)
    else:
        jack = stat.jackknife
        use = stat.present & np.isfinite(jack)
        contributing = use.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(use, jack, 0.0).sum(axis=0) / contributing
            spread = np.where(use, (jack - mean) ** 2, 0.0).sum(axis=0)
            v_rep = (contributing - 1) / contributing * spread
    half, v_img, df = _half_width(v_rep, v_shared, v_own, contributing, stat.clusters, confidence)
    return Interval(point - half, point + half, v_rep, v_img, df, contributing)


LAMBDA_STEPS = 32  # samples per grid interval where a boundary interval is sought


def _covariance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Covariance over the first axis (NaN pairs ignored), ddof 1."""
    both = ~(np.isnan(x) | np.isnan(y))
    n = both.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(both, x, 0.0).sum(axis=0) / n
        ym = np.where(both, y, 0.0).sum(axis=0) / n
        products = np.where(both, (x - xm) * (y - ym), 0.0).sum(axis=0)
        return np.where(n > 1, products / (n - 1), np.nan)


def crossing_interval(
    curves: Stacked, grid: np.ndarray, tau: float, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """The interval of where each curve crosses τ, by inverting its pointwise intervals: every
    sparsity s at which the interval of the curve's value, linearly interpolated between its
    valid grid points as the boundary is, contains τ (Fieller's approach to a ratio: r_i − τ over
    r_i − r_j). It covers the true crossing at least as often as the curve's interval covers the
    true r there, however noisy the slope, where θ̂ ± t·sd of the interpolated crossing (a ratio
    with a noisy denominator) does not; as the hull of that set it is conservative where the
    points' intervals vary a lot (few replicates). The interval of the interpolated value at λ
    of the way from grid point i to j is t_interval's, in closed form: its variances are
    quadratic in λ (jackknife and image covariances of points i and j).

    curves: values [1 + K + 2B, ..., S] over the ascending grid [S]. Returns (lo, hi) [...]: an
    end is -inf / +inf where the set reaches the curve's first / last valid point (the boundary
    may lie beyond the grid there); both are -inf (+inf) where the curve is clearly below (above)
    τ everywhere; NaN where the curve has no data or some point of it has no interval."""
    point = curves.values[0]
    valid = ~np.isnan(point)
    left = _segment_starts(valid)
    lam, gap = _gap_to_tau(curves, left, tau, confidence)
    s_l, s_r = grid[left], np.broadcast_to(grid, point.shape)
    where = s_l[..., None] + lam * (s_r - s_l)[..., None]
    gap, where, undefined = _in_sparsity_order(gap, where, valid)
    lo, hi, any_in = _inside_hull(gap, where)
    # Nowhere inside: the curve is clearly above τ (beyond the grid) or below it everywhere.
    first = np.take_along_axis(point, np.argmax(valid, axis=-1)[..., None], -1)[..., 0]
    outside = np.where(first > tau, np.inf, -np.inf)
    lo, hi = np.where(any_in, lo, outside), np.where(any_in, hi, outside)
    # A set narrower than float noise (no variance: one row) is one sparsity.
    with np.errstate(invalid="ignore"):
        point_like = np.isfinite(lo) & np.isfinite(hi) & (hi - lo < 1e-9)
        middle = (lo + hi) / 2.0
    lo, hi = np.where(point_like, middle, lo), np.where(point_like, middle, hi)
    return np.where(undefined, np.nan, lo), np.where(undefined, np.nan, hi)


def _segment_starts(valid: np.ndarray) -> np.ndarray:
    """Where each segment starts: segment j runs from the previous valid point to j (a valid j);
    the first valid point is a segment of its own (left = right)."""
    index = np.broadcast_to(np.arange(valid.shape[-1]), valid.shape)
    last_valid = np.maximum.accumulate(np.where(valid, index, -1), axis=-1)
    previous = np.concatenate([np.full(valid.shape[:-1] + (1,), -1), last_valid[..., :-1]], -1)
    return np.where(previous >= 0, previous, index)


def _ends(array: np.ndarray, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array's values at each segment's left end and at its right end (the point itself)."""
    lead = array.shape[: array.ndim - left.ndim]
    take = np.broadcast_to(left, (*lead, *left.shape))
    return np.take_along_axis(array, take, -1), array


def _gap_to_tau(
    curves: Stacked, left: np.ndarray, tau: float, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Samples λ along each segment, and how far τ lies inside the interval of the value
    interpolated there ([..., S, samples]; ≥ 0: inside)."""
    p_l, p_r = _ends(curves.values[0], left)
    shared_l, shared_r = _ends(curves.shared, left)
    own_l, own_r = _ends(curves.own, left)
    v_sh = (_nanvar(shared_l, p_l), _covariance(shared_l, shared_r), _nanvar(shared_r, p_r))
    v_ow = (_nanvar(own_l, p_l), _covariance(own_l, own_r), _nanvar(own_r, p_r))
    v_jk, contributing = _jackknife_covariances(curves, left)
    lam = _segment_samples(p_l, p_r, tau)
    one = 1.0 - lam

    def quadratic(parts: tuple[np.ndarray, ...]) -> np.ndarray:
        a, b, c = (x[..., None] for x in parts)
        return np.clip(one * one * a + 2.0 * lam * one * b + lam * lam * c, 0.0, None)

    estimate = one * p_l[..., None] + lam * p_r[..., None]
    half, _, _ = _half_width(
        quadratic(v_jk),
        quadratic(v_sh),
        quadratic(v_ow),
        contributing[..., None],
        curves.clusters,
        confidence,
    )
    return lam, half - np.abs(estimate - tau)


def _jackknife_covariances(
    curves: Stacked, left: np.ndarray
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Jackknife (left, left), (left, right), (right, right) covariances of each segment's ends,
    and the clusters contributing to them (none to spread with one cluster)."""
    shape = curves.values.shape[1:]
    if curves.clusters <= 1:
        return (np.zeros(shape),) * 3, np.ones(shape, int)
    jack_l, jack_r = _ends(curves.jackknife, left)
    pres_l, pres_r = _ends(curves.present, left)
    use = (pres_l | pres_r) & np.isfinite(jack_l) & np.isfinite(jack_r)
    contributing = use.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = jack_l - np.where(use, jack_l, 0.0).sum(axis=0) / contributing
        w = jack_r - np.where(use, jack_r, 0.0).sum(axis=0) / contributing
        scale = (contributing - 1) / contributing
        v_jk = tuple(
            scale * np.where(use, a * b, 0.0).sum(axis=0) for a, b in ((u, u), (u, w), (w, w))
        )
    return v_jk, contributing


def _segment_samples(p_l: np.ndarray, p_r: np.ndarray, tau: float) -> np.ndarray:
    """λ on a grid over each segment, plus where the estimate itself crosses τ (sorted)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = (p_l - tau) / (p_l - p_r)
    crossing = np.where((crossing >= 0) & (crossing <= 1), crossing, 0.0)
    steps = np.linspace(0.0, 1.0, LAMBDA_STEPS + 1)
    steps = np.broadcast_to(steps, (*p_l.shape, LAMBDA_STEPS + 1))
    return np.sort(np.concatenate([steps, crossing[..., None]], axis=-1), axis=-1)


def _in_sparsity_order(
    gap: np.ndarray, where: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sequence per curve in sparsity order; samples of invalid grid points repeat the
    previous valid one (before the first: the first), so they change nothing. Also where the
    set is undefined: a valid point without an interval, or no valid point."""
    real = np.repeat(valid, gap.shape[-1], axis=-1)
    gap = gap.reshape(*valid.shape[:-1], -1)
    where = where.reshape(*valid.shape[:-1], -1)
    undefined = (real & np.isnan(gap)).any(axis=-1) | ~valid.any(axis=-1)
    flat = np.broadcast_to(np.arange(gap.shape[-1]), gap.shape)
    fill = np.maximum.accumulate(np.where(real, flat, -1), axis=-1)
    fill = np.where(fill < 0, np.argmax(real, axis=-1)[..., None], fill)
    return np.take_along_axis(gap, fill, -1), np.take_along_axis(where, fill, -1), undefined


def _inside_hull(gap: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first and last sparsity where τ is inside (gap ≥ 0), each interpolated towards the
    sample outside it; ±inf where the set reaches the sequence's end; and whether any is."""
    inside = gap >= -1e-12
    last = gap.shape[-1] - 1
    first_in = np.argmax(inside, axis=-1)
    last_in = last - np.argmax(inside[..., ::-1], axis=-1)

    def at(array: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.take_along_axis(array, np.clip(i, 0, last)[..., None], -1)[..., 0]

    def between(i_out: np.ndarray, i_in: np.ndarray) -> np.ndarray:
        g_out, g_in = at(gap, i_out), at(gap, i_in)
        s_out, s_in = at(where, i_out), at(where, i_in)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(g_in > g_out, g_in / (g_in - g_out), 0.0)
        return s_in + np.clip(fraction, 0.0, 1.0) * (s_out - s_in)

    lo = np.where(first_in == 0, -np.inf, between(first_in - 1, first_in))
    hi = np.where(last_in == last, np.inf, between(last_in + 1, last_in))
    return lo, hi, inside.any(axis=-1)


def interval_text(confidence: float, resamples: int) -> str:
    """How the intervals were made, in one line (the documents and the terminal view)."""
    return (
        f"{confidence:.0%} t-intervals: between-replicate jackknife variance plus the shared "
        f"eval images' variance ({resamples} image resamples), Satterthwaite degrees of freedom; "
        "paired between compared arms (same replicates, seeds and images)"
    )
