r"""Pooled posterior covariances with Monte-Carlo standard errors, and chain diagnostics.

The estimate pools chains × draws (as devinterp's "stack"):

.. math::

    \widehat{\mathrm{Cov}}[x, y] = \frac{1}{N-1}\sum_{c,d} (x_{cd} - \bar x)(y_{cd} - \bar y)^\top,
    \qquad N = C\cdot D.

Its standard error is by batch means: each chain is cut into B contiguous batches, the covariance is
computed within each of the K = C·B batches, and SE = sd(batch estimates)/√K. Batches much longer
than the autocorrelation time make the batch estimates nearly independent, so the SE accounts for
autocorrelation without modelling it. Stored draws and streaming moments give the same numbers
(`covariance_from_moments`). ESS and R-hat come from `numpyro.diagnostics`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .moments import Moments
from .streaming import pool

__all__ = ["Estimate", "covariance", "covariance_from_moments", "mean_estimate", "ess", "rhat"]


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate: ``value`` and its standard error ``se`` (same shape), from ``n`` draws."""

    value: np.ndarray
    se: np.ndarray
    n: int

    def z(self, truth) -> np.ndarray:
        """(value − truth)/se: a test passes when |z| ≤ k (k ≤ 4)."""
        return (self.value - np.asarray(truth)) / self.se

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype=dtype)


def _batch_moments(x, y, num_batches):
    """Per (chain, batch) counts, means and co-moments of stored draws x [C, D, *sx], y [C, D, *sy]."""
    C, D = x.shape[:2]
    B = int(min(max(num_batches, 1), D))
    edges = (np.arange(B + 1) * D) // B
    cnt, mx, my, cm = [], [], [], []
    for b in range(B):
        xs = x[:, edges[b]:edges[b + 1]].reshape(C, edges[b + 1] - edges[b], -1).astype(np.float64)
        ys = y[:, edges[b]:edges[b + 1]].reshape(C, edges[b + 1] - edges[b], -1).astype(np.float64)
        xm, ym = xs.mean(1), ys.mean(1)
        cnt.append(np.full(C, xs.shape[1], np.float64))
        mx.append(xm)
        my.append(ym)
        cm.append(np.einsum("cdi,cdj->cij", xs - xm[:, None], ys - ym[:, None]))
    return (np.stack(cnt, 1), np.stack(mx, 1), np.stack(my, 1), np.stack(cm, 1))


def _from_batches(count, mean_x, mean_y, comoment, sx, sy) -> Estimate:
    """Pooled covariance and batch-means SE from [C, B, ...] moments (flattened feature axes)."""
    C, B = count.shape
    N, _, _, Ctot = pool(count, mean_x.reshape(C, B, -1), mean_y.reshape(C, B, -1),
                         comoment.reshape(C, B, mean_x[0, 0].size, mean_y[0, 0].size), 2)
    value = Ctot / (N - 1)
    k = count.reshape(-1)
    good = k > 1
    sub = comoment.reshape(C * B, -1)[good] / (k[good, None] - 1)
    se = sub.std(axis=0, ddof=1) / np.sqrt(good.sum()) if good.sum() > 1 else np.full(sub.shape[1], np.nan)
    return Estimate(value.reshape((*sx, *sy)), se.reshape((*sx, *sy)), int(N))


def covariance(x, y=None, *, num_batches: int = 8) -> Estimate:
    """Pooled Cov[x, y] over chains × draws with a batch-means standard error.

    Args:
        x: ``[C, D, *sx]`` draws (e.g. ``result.observables["phi"]`` or ``result.loss``).
        y: ``[C, D, *sy]`` draws; None means y = x.
        num_batches: batches per chain for the standard error (each should span several
            autocorrelation times).

    Returns:
        `Estimate` of shape ``(*sx, *sy)`` (the full cross-covariance).
    """
    x = np.asarray(x)
    y = x if y is None else np.asarray(y)
    if x.ndim < 2 or y.ndim < 2 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must be [chains, draws, ...] with the same leading axes; got {x.shape} and {y.shape}")
    if x.shape[0] * x.shape[1] < 2:
        raise ValueError("need at least 2 draws in total to estimate a covariance")
    return _from_batches(*_batch_moments(x, y, num_batches), x.shape[2:], y.shape[2:])


def covariance_from_moments(m: Moments) -> Estimate:
    """The same estimate as `covariance`, from streaming moments of a pair accumulated by `susc.sample`
    (``accumulate=[("a", "b")]`` → ``result.moments["a|b"]``) or of one observable (its variances)."""
    C, B = m.count.shape
    if m.mean_y is None:  # elementwise variances
        sx = m.mean_x.shape[2:]
        N, _, _, tot = pool(m.count, m.mean_x, None, m.comoment, 2)
        k = m.count.reshape(-1)
        good = k > 1
        sub = m.comoment.reshape(C * B, -1)[good] / (k[good, None] - 1)
        se = sub.std(0, ddof=1) / np.sqrt(good.sum()) if good.sum() > 1 else np.full(sub.shape[1], np.nan)
        return Estimate((tot / (N - 1)).reshape(sx), se.reshape(sx), int(N))
    sx, sy = m.mean_x.shape[2:], m.mean_y.shape[2:]
    return _from_batches(m.count, m.mean_x, m.mean_y, m.comoment, sx, sy)


def mean_estimate(x, *, num_batches: int = 8) -> Estimate:
    """Pooled mean of ``x [C, D, *s]`` with a batch-means standard error."""
    x = np.asarray(x, np.float64)
    C, D = x.shape[:2]
    B = int(min(max(num_batches, 1), D))
    edges = (np.arange(B + 1) * D) // B
    means = np.stack([x[:, edges[b]:edges[b + 1]].mean(1) for b in range(B)], 1).reshape(C * B, *x.shape[2:])
    se = means.std(0, ddof=1) / np.sqrt(C * B) if C * B > 1 else np.full(x.shape[2:], np.nan)
    return Estimate(x.mean((0, 1)), se, C * D)


def _numpyro_diagnostics():
    # numpyro imports tqdm.auto, which warns "IProgress not found" into notebook pages without ipywidgets
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import numpyro.diagnostics
    return numpyro.diagnostics


def ess(x) -> np.ndarray:
    """Effective sample size of ``x [C, D, ...]`` (numpyro.diagnostics, Geyer's initial sequence)."""
    effective_sample_size = _numpyro_diagnostics().effective_sample_size
    return np.asarray(effective_sample_size(np.asarray(x, np.float64)))


def rhat(x) -> np.ndarray:
    """Split Gelman–Rubin R-hat of ``x [C, D, ...]`` (numpyro.diagnostics)."""
    split_gelman_rubin = _numpyro_diagnostics().split_gelman_rubin
    return np.asarray(split_gelman_rubin(np.asarray(x, np.float64)))
