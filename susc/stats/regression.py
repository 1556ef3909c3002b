r"""A slope through the origin when both variables carry Monte-Carlo error.

Comparing two estimators of the same numbers (a finite difference against a covariance, one seed
against another) is a regression y ≈ b x in which x is as noisy as y. The ordinary weighted slope
Σ w x y / Σ w x² is then biased toward 0 (regression dilution: with a median |x|/σ_x of 2 it
reads about 0.8 for b = 1, and less as the signal weakens). `origin_slope` maximises the
errors-in-variables likelihood instead,

    χ²(b) = Σ_i (y_i − b x_i)² / (σ_{y,i}² + b² σ_{x,i}²),

and reports the k-sigma profile interval {b : χ²(b) − χ²_min ≤ k²}. When χ²_min exceeds its degrees
of freedom the errors are too small (batch-means errors of short chains usually are);
``inflate=True`` scales them by the Birge ratio √(χ²_min/(n − 1)) first.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["OriginSlope", "origin_slope"]


class OriginSlope(NamedTuple):
    """``slope`` with its k-sigma interval ``[lo, hi]``, ``chi2_min`` (raw errors), ``dof``, the
    ``birge`` ratio √(χ²_min/dof) and whether the interval used errors scaled by it (``inflated``)."""
    slope: float
    lo: float
    hi: float
    chi2_min: float
    dof: int
    birge: float
    inflated: bool


def _arrays(x, sx, y, sy):
    out = [np.asarray(a, np.float64).ravel() for a in (x, sx, y, sy)]
    if len({a.size for a in out}) != 1:
        raise ValueError(f"x, sx, y, sy must have the same number of entries, got {[a.size for a in out]}")
    if np.any(out[1] < 0) or np.any(out[3] < 0) or np.any(out[1] + out[3] <= 0):
        raise ValueError("sx and sy must be non-negative and not both zero for any point")
    return out


def _chi2(b, x, sx, y, sy):
    """χ²(b) for an array of slopes ``b`` (vectorized over them)."""
    b = np.asarray(b, np.float64)[..., None]
    return np.sum((y - b * x) ** 2 / (sy ** 2 + b ** 2 * sx ** 2), axis=-1)


def origin_slope(x, sx, y, sy, *, k: float = 4.0, inflate: bool = False,
                 bounds: tuple[float, float] | None = None) -> OriginSlope:
    """Errors-in-variables slope of y ≈ b x through the origin and its k-sigma profile interval.

    Args:
        x, sx, y, sy: values and standard errors (any shapes, flattened; equal sizes).
        k: the interval is {b : χ²(b) − χ²_min ≤ k²}.
        inflate: scale all errors by the Birge ratio √(χ²_min / (n − 1)) when it exceeds 1.
        bounds: the slopes searched (default: ±(10 r + 10), r = median|y| / median|x|).

    Returns:
        `OriginSlope`; ``lo``/``hi`` are ±inf when the interval reaches the search bounds.
    """
    x, sx, y, sy = _arrays(x, sx, y, sy)
    if x.size < 2:
        raise ValueError("need at least 2 points for a slope and its interval")
    if bounds is None:
        scale = np.median(np.abs(y)) / max(np.median(np.abs(x)), 1e-300)
        bounds = (-10 * scale - 10, 10 * scale + 10)
    grid = np.linspace(bounds[0], bounds[1], 20001)
    c = _chi2(grid, x, sx, y, sy)
    i = int(np.argmin(c))
    lo_b, hi_b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    fine = np.linspace(lo_b, hi_b, 2001)
    cf = _chi2(fine, x, sx, y, sy)
    b, cmin = float(fine[np.argmin(cf)]), float(cf.min())
    dof = x.size - 1
    birge = float(np.sqrt(cmin / dof))
    inflated = bool(inflate and birge > 1.0)
    f2 = birge ** 2 if inflated else 1.0
    inside = grid[(c - cmin) / f2 <= k ** 2]
    lo = float(inside.min()) if inside.min() > grid[0] else -np.inf
    hi = float(inside.max()) if inside.max() < grid[-1] else np.inf
    return OriginSlope(b, lo, hi, cmin, dof, birge, inflated)
