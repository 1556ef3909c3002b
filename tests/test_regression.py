"""`susc.stats.origin_slope`: errors-in-variables slope through the origin, against simulation.

Oracle: data simulated with a known slope and known errors in both variables. The naive weighted
slope Σwxy/Σwx² is attenuated (regression dilution); the profile-likelihood slope is not, and its
1-sigma interval covers the truth at the nominal 68% rate.
"""
import numpy as np
import pytest

from susc.stats import origin_slope


def _simulate(rng, b, n=32, snr=1.8):
    x_true = rng.normal(0, 1, n)
    sx = np.abs(x_true).mean() / snr * np.ones(n)
    sy = b * sx
    return x_true + sx * rng.normal(size=n), sx, b * x_true + sy * rng.normal(size=n), sy


def test_origin_slope_is_unbiased_where_the_naive_slope_is_diluted():
    rng = np.random.default_rng(0)
    sims = 300
    ml, naive, cover = np.zeros(sims), np.zeros(sims), 0
    for i in range(sims):
        x, sx, y, sy = _simulate(rng, 1.0)
        r = origin_slope(x, sx, y, sy, k=1.0)
        ml[i] = r.slope
        w = 1 / (sx**2 + sy**2)
        naive[i] = np.sum(w * x * y) / np.sum(w * x**2)
        cover += r.lo <= 1.0 <= r.hi
    se = ml.std(ddof=1) / np.sqrt(sims)
    assert abs(ml.mean() - 1.0) < 4 * se, (ml.mean(), se)
    assert naive.mean() < 1.0 - 8 * naive.std(ddof=1) / np.sqrt(sims)   # diluted: the reason
    p = cover / sims                                                 # nominal 0.683
    assert abs(p - 0.683) < 4 * np.sqrt(0.683 * 0.317 / sims), p


def test_origin_slope_inflates_by_the_birge_ratio_and_checks_inputs():
    rng = np.random.default_rng(1)
    x, sx, y, sy = _simulate(rng, 2.0, n=40)
    raw = origin_slope(x, sx / 3, y, sy / 3)               # errors 3x too small
    inf = origin_slope(x, sx / 3, y, sy / 3, inflate=True)
    assert raw.birge > 2 and inf.inflated and not raw.inflated
    assert inf.lo < raw.lo < raw.slope < raw.hi < inf.hi and raw.slope == inf.slope
    with pytest.raises(ValueError, match="same number"):
        origin_slope(x, sx, y[:-1], sy)
    with pytest.raises(ValueError, match="non-negative"):
        origin_slope(x, -sx, y, sy)
