r"""The influence matrix (Bayesian influence function, BIF) from per-sample loss draws.

Conventions (theory.md §1): the localized tempered posterior is
:math:`p(w) \propto \exp\{-n\beta L^\rho_n(w) - \tfrac\gamma2\|w-w^*\|^2\}`, :math:`L^\rho_n = \frac1n\sum_i\rho_i\ell_i`
(only ``nbeta`` = nβ enters). With the per-sample losses as observables,

.. math::

    \mathrm{BIF}(i, j) = -\mathrm{Cov}[\ell_i, \ell_j]
    \qquad\text{(Kreer et al. 2025; no centring),}

so that ∂⟨ℓ_j⟩/∂ρ_i = β·BIF(i, j) with β = nβ/n (β, not nβ). The L-centred version is the per-sample
susceptibility of the query loss, χ_i(ℓ_j) = −Cov[ℓ_i − L_n, ℓ_j] (``centered_by=result.loss`` or
``bif(..., centered=True)``), whose rows sum to zero over a full training set. ``correlation=True``
gives the negated posterior correlation −Corr[ℓ_i, ℓ_j] ∈ [−1, 1].

**Sign against devinterp.** devinterp's ``bif()`` returns the *positive* posterior correlation (or
the positive covariance with ``compute_covariance=True``) and applies no minus sign, so
``susc`` BIF = −(devinterp output). Both pool chains × draws ("stack") and divide by N − 1.

Per-token losses ``[C, D, N, T]`` give the token–token matrix ``[N, N', T, T']``
(``token_mean=True`` averages tokens first: ``[N, N']``). The matrix is one GEMM of the centred draws;
the batch-means standard errors need one covariance per (chain, batch) group, computed as batched
GEMMs ``block_size`` rows at a time, keeping only running sums of the group estimates and their
squares. The value is exact in float64; the standard error's products are formed in the draws'
precision (float32 draws: float32 GEMMs after centring in float64, ~10⁻⁶ relative, far below the
Monte-Carlo error of an error bar).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..sampling.observables import observable
from ..sampling.runner import sample
from ..stats.covariance import Estimate

__all__ = ["influence_matrix", "bif", "BIFResult"]


def _as_losses(x, name, token_mean):
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be per-sample loss draws [chains, draws, N] or per-token "
                         f"[chains, draws, N, T], got shape {x.shape}")
    if token_mean and x.ndim == 4:
        x = x.mean(axis=3)
    return x


def _batch_edges(D, num_batches):
    B = int(min(max(int(num_batches), 1), D))
    return (np.arange(B + 1) * D) // B


def _pooled(A, Bm, correlation):
    """Pooled (co)variance over chains × draws as one float64 GEMM: A [C, D, fa], Bm [C, D, fb]."""
    C, D = A.shape[:2]
    N = C * D
    ac = (A - A.mean((0, 1))).reshape(N, -1)
    bc = (Bm - Bm.mean((0, 1))).reshape(N, -1)
    cov = ac.T @ bc / (N - 1)
    if correlation:
        with np.errstate(invalid="ignore", divide="ignore"):
            cov /= np.outer(np.sqrt((ac ** 2).sum(0) / (N - 1)), np.sqrt((bc ** 2).sum(0) / (N - 1)))
    return cov


def _centred_groups(X, edges, dt):
    """Within-(chain, batch) centred draws ``[G, k, f]`` in ``dt`` and their sd ``[G, f]``; groups of
    fewer than 2 draws are skipped."""
    out, sds = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi - lo < 2:
            continue
        x = X[:, lo:hi] - X[:, lo:hi].mean(1, keepdims=True)             # [C, k, f]
        sds.append(np.sqrt((x ** 2).sum(1) / (hi - lo - 1)))
        out += [(c, x[c].astype(dt), hi - lo - 1) for c in range(X.shape[0])]
    return out, (np.concatenate(sds) if sds else None)


def _batch_se(A, Bm, edges, correlation, rows, dt, symmetric=False):
    """Batch-means SE: sd over the G = C·B (chain, batch) estimates / √G.

    Each group's estimate is a 2-D GEMM of its within-batch centred draws, ``rows`` rows at a time
    so the block stays in cache; only running sums of the estimates and their squares are kept.
    ``symmetric`` (A is Bm): only the upper triangle is computed, then mirrored."""
    ga, sa = _centred_groups(A, edges, dt)
    gb, sb = _centred_groups(Bm, edges, dt)
    G, fa, fb = len(ga), A.shape[2], Bm.shape[2]
    if G < 2:
        return np.full((fa, fb), np.nan)
    aT = [np.ascontiguousarray(x.T) for _, x, _ in ga]                     # [fa, k] each
    se = np.empty((fa, fb))
    for i in range(0, fa, rows):
        r = min(rows, fa - i)
        j0 = i if symmetric else 0                                          # columns j0: of this block
        tot, sq = np.zeros((r, fb - j0), dt), np.zeros((r, fb - j0), dt)
        for g, ((_, xb, k1), xaT) in enumerate(zip(gb, aT)):
            sub = xaT[i:i + r] @ xb[:, j0:]                                 # [r, fb - j0]
            sub /= k1
            if correlation:
                with np.errstate(invalid="ignore", divide="ignore"):
                    sub /= np.outer(sa[g, i:i + r], sb[g, j0:]).astype(dt)
            tot += sub
            sub *= sub
            sq += sub
        tot, sq = tot.astype(np.float64), sq.astype(np.float64)
        se[i:i + r, j0:] = np.sqrt(np.maximum(sq - tot * tot / G, 0.0) / ((G - 1) * G))
    if symmetric:
        upper = np.triu(se)
        se = upper + np.triu(upper, 1).T
    return se


def influence_matrix(losses_a, losses_b=None, *, centered_by=None, correlation: bool = False,
                     token_mean: bool = False, block_size: int = 64, num_batches: int = 8,
                     se: bool = True) -> Estimate:
    """BIF(i, j) = −Cov[ℓ_i, ℓ_j] pooled over chains × draws, with batch-means SE.

    Args:
        losses_a: training-sample losses ``[C, D, N]`` (or per token ``[C, D, N, T]``) at every draw.
        losses_b: query losses ``[C, D, N']`` / ``[C, D, N', T']`` from the same draws; None = losses_a.
        centered_by: ``[C, D]`` loss L at each draw (``result.loss``). Rows become ℓ_i − L, giving the
            per-sample susceptibility χ_i(ℓ_j) = −Cov[ℓ_i − L, ℓ_j] (columns stay uncentred).
        correlation: −Corr[ℓ_i, ℓ_j] instead of −Cov (devinterp's default output, negated).
        token_mean: average per-token losses over tokens first ([N, N'] instead of [N, N', T, T']).
        block_size: rows (samples × tokens) of the standard error computed at once (a block that
            stays in cache; memory ~ 2·block_size·N'·T' on top of the draws).
        num_batches: contiguous batches per chain for the standard error (as `susc.covariance`).
        se: compute the standard error (False: ``se`` is NaN, about half the work).

    Returns:
        `Estimate` with value and se of shape ``[N, N', *T, *T']``. devinterp ``bif()`` = −value.
    """
    a = _as_losses(losses_a, "losses_a", token_mean)
    b = a if losses_b is None else _as_losses(losses_b, "losses_b", token_mean)
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"losses_a {a.shape} and losses_b {b.shape} must come from the same draws "
                         "(same [chains, draws] axes)")
    C, D = a.shape[:2]
    if C * D < 2:
        raise ValueError("need at least 2 draws in total to estimate a covariance")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if centered_by is not None:
        L = np.asarray(centered_by)
        if L.shape != (C, D):
            raise ValueError(f"centered_by must be the per-draw loss [C, D] = {(C, D)} (e.g. result.loss), "
                             f"got {L.shape}")
        L = L.reshape(C, D, *([1] * (a.ndim - 2))).astype(np.float64)
    else:
        L = None
    sa, sb = a.shape[2:], b.shape[2:]
    fa, fb = int(np.prod(sa)), int(np.prod(sb))
    dt = np.float32 if (a.dtype == np.float32 and b.dtype == np.float32) else np.float64
    A = a.reshape(C, D, fa).astype(np.float64)
    if L is not None:
        A = A - L.reshape(C, D, 1)
    Bm = b.reshape(C, D, fb).astype(np.float64)
    # One BLAS thread: these GEMMs are small, and BLAS threads spinning against XLA's own thread
    # pool (still busy right after sampling) made the same work 5-30x slower on a 2-core CPU.
    with threadpool_limits(limits=1, user_api="blas"):
        value = -_pooled(A, Bm, correlation)
        err = _batch_se(A, Bm, _batch_edges(D, num_batches), correlation, int(block_size), dt,
                        symmetric=losses_b is None and L is None) if se else np.full((fa, fb), np.nan)
    out_shape = sa + sb
    value, err = value.reshape(out_shape), err.reshape(out_shape)
    if len(sa) == 2 or len(sb) == 2:   # [N, (T), N', (T')] -> [N, N', (T), (T')]
        order = [0, len(sa)] + [k for k in range(len(out_shape)) if k not in (0, len(sa))]
        value, err = value.transpose(order), err.transpose(order)
    return Estimate(value, err, C * D)


@dataclasses.dataclass(frozen=True)
class BIFResult(Estimate):
    """`Estimate` of the influence matrix plus the `SampleResult` of the run that produced it."""

    result: Any = None


def bif(key, loss_fn, params, data, query_data=None, *, sampler, nbeta: float, gamma: float = 0.0,
        num_chains: int = 4, num_draws: int = 200, centered: bool = False, correlation: bool = False,
        token_mean: bool = False, block_size: int = 64, num_batches: int = 8, weights=None,
        se: bool = True, chunk_size: int | None = None, **sample_kwargs) -> BIFResult:
    """Sample the localized posterior and return the influence matrix BIF(i, j) = −Cov[ℓ_i, ℓ_j].

    Runs `susc.sample` with the per-sample losses of ``data`` (and of ``query_data``) as observables
    (``susc.observable(loss_fn, data, chunk_size=chunk_size)``: the data are runtime arguments, so a
    second call with other data of the same shapes compiles nothing), evaluated at every draw, then `influence_matrix` (rows = training
    samples i of ``data``, columns = ``query_data`` or ``data``). ``centered=True`` subtracts the
    draw's exact L^ρ_n = (1/n)Σ_i ρ_i ℓ_i (from the recorded per-sample losses, so rows sum to zero
    even with minibatch sampling). devinterp's ``bif()`` returns −(this value) (it reports +corr/+cov).

    Args:
        loss_fn, params, data, sampler, nbeta, gamma, num_chains, num_draws, weights: as `susc.sample`;
            other ``sample_kwargs`` (batch_size, num_burnin, steps_per_draw, ...) pass through.
        query_data: PyTree like ``data`` with the query samples (None: the training samples).
        centered, correlation, token_mean, block_size, num_batches, se: see `influence_matrix`.
        chunk_size: rows of ``data``/``query_data`` per evaluation (bounds memory; None = all).

    Returns:
        `BIFResult` (value, se, n, result) of shape ``[n, n_query(, T, T')]``.
    """
    if "observables" in sample_kwargs:
        raise ValueError("bif() builds its own observables (the per-sample losses); call susc.sample "
                         "and influence_matrix directly to record more")
    obs = {"train_losses": observable(loss_fn, data, chunk_size=chunk_size)}
    if query_data is not None:
        obs["query_losses"] = observable(loss_fn, query_data, chunk_size=chunk_size)
    res = sample(key, loss_fn, params, data, sampler=sampler, nbeta=nbeta, gamma=gamma,
                 num_chains=num_chains, num_draws=num_draws, observables=obs, weights=weights,
                 num_batches=num_batches, **sample_kwargs)
    train = res.observables["train_losses"]
    L = None
    if centered:
        per = train.reshape(train.shape[:3] + (-1,)).mean(axis=3)           # mean over tokens: [C, D, n]
        rho = np.ones(per.shape[2]) if weights is None else np.asarray(weights, np.float64)
        L = (per.astype(np.float64) * rho).mean(axis=2)
    query = res.observables.get("query_losses")
    est = influence_matrix(train, query, centered_by=L, correlation=correlation, token_mean=token_mean,
                           block_size=block_size, num_batches=num_batches, se=se)
    return BIFResult(est.value, est.se, est.n, res)
