r"""Susceptibilities from posterior draws: χ = (1/nβ) ∂_h⟨φ⟩_h = −Cov[φ, ΔL] (fluctuation–dissipation).

Conventions (theory.md §1), the same everywhere in `susc`:

* localized tempered posterior :math:`p(w) \propto \exp\{-n\beta L^\rho_n(w) - \tfrac\gamma2\|w-w^*\|^2\}`,
  :math:`L^\rho_n = \frac1n\sum_i\rho_i\ell_i`; only the product ``nbeta`` = nβ enters the sampler.
* a data perturbation L → L + hΔL moves expectations by
  :math:`\partial_h\langle\phi\rangle_h|_0 = -n\beta\,\mathrm{Cov}[\phi, \Delta L]`, so the
  **susceptibility** :math:`\chi(\phi) = \frac1{n\beta}\partial_h\langle\phi\rangle = -\mathrm{Cov}[\phi,\Delta L]`
  and the **Jacobian** of the map data → structural coordinates is nβ·χ (`jacobian`).

Which perturbation is which (pick the helper by the ΔL it uses):

==============================  =========================================  ===============================
perturbation                    ΔL(w)                                      helper
==============================  =========================================  ===============================
mixture q → (1−h)q + h q′       L(w; q′) − L(w)                            `mixture_susceptibility`
point mass on sample/token z    ℓ_z(w) − L_n(w)  (q′ = δ_z)                `per_sample_susceptibility`
single weight ρ_m (reweight)    ∂⟨φ⟩/∂ρ_m = −β Cov[φ, ℓ_m], β = nβ/n        `reweighting_derivative`
any field h·ΔL                  ΔL                                         `susceptibility`
==============================  =========================================  ===============================

The per-sample χ_z is the mixture susceptibility of the probe q′ = δ_z; centring with the draw's
L_n (``result.loss``) makes the rows of the ideal estimator sum to zero over a full training set:
Σ_z χ̂_z = −n Cov[φ, L_n − L_n] = 0. The reweighting derivative has β, not nβ, because
nβ L^ρ_n = β Σ_j ρ_j ℓ_j. All estimates pool chains × draws and carry a batch-means standard error
(`susc.covariance`).
"""
from __future__ import annotations

import numpy as np

from ..stats.covariance import Estimate, covariance, covariance_from_moments
from ..sampling.result import SampleResult, check_result
from ..stats.streaming import Moments

__all__ = ["susceptibility", "mixture_susceptibility", "per_sample_susceptibility",
           "reweighting_derivative", "jacobian", "scale", "susceptibility_from_result"]


def scale(est: Estimate, factor: float) -> Estimate:
    """``factor × est`` with the standard error scaled by ``|factor|``."""
    return Estimate(np.asarray(est.value) * factor, np.asarray(est.se) * abs(factor), est.n)


def _draws(x, name):
    x = np.asarray(x, np.float64)  # differences like ℓ − L lose digits in float32
    if x.ndim < 2:
        raise ValueError(f"{name} must be draws [chains, draws, ...], got shape {x.shape}; "
                         "pass e.g. result.observables[name] or result.loss")
    return x


def _same_lead(a, b, na, nb):
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"{na} {a.shape} and {nb} {b.shape} must share the [chains, draws] axes "
                         "(they must come from the same run)")


def susceptibility(phi, delta_loss, *, num_batches: int = 8) -> Estimate:
    """χ = −Cov[φ, ΔL], pooled over chains × draws, with a batch-means standard error.

    Args:
        phi: observable draws ``[C, D]`` or ``[C, D, k]`` (k observables).
        delta_loss: perturbation draws ΔL(w) ``[C, D]`` or ``[C, D, m]`` (m perturbations).
        num_batches: contiguous batches per chain for the standard error.

    Returns:
        `Estimate` of shape ``(k, m)`` (axes of scalar inputs are dropped). ∂_h⟨φ⟩ = nβ·χ.
    """
    phi, delta_loss = _draws(phi, "phi"), _draws(delta_loss, "delta_loss")
    _same_lead(phi, delta_loss, "phi", "delta_loss")
    return scale(covariance(phi, delta_loss, num_batches=num_batches), -1.0)


def _broadcast_loss(loss, like, name):
    """L_n draws [C, D] broadcast against ``like`` [C, D, ...]."""
    loss = _draws(loss, name)
    if loss.shape != like.shape[:2]:
        raise ValueError(f"{name} must be the per-draw mean loss [C, D] = {like.shape[:2]} "
                         f"(e.g. result.loss), got {loss.shape}")
    return loss.reshape(loss.shape + (1,) * (like.ndim - 2))


def mixture_susceptibility(phi, probe_loss, loss, *, num_batches: int = 8) -> Estimate:
    """Susceptibility to the mixture path q → (1−h)q + h q′: χ = −Cov[φ, L(·; q′) − L].

    Args:
        phi: ``[C, D(, k)]`` observable draws.
        probe_loss: ``[C, D(, m)]`` mean loss on each of m probe distributions q′ at every draw.
        loss: ``[C, D]`` the baseline loss L at every draw (``result.loss`` for the training set).
    """
    probe_loss = _draws(probe_loss, "probe_loss")
    delta = probe_loss - _broadcast_loss(loss, probe_loss, "loss")
    return susceptibility(phi, delta, num_batches=num_batches)


def per_sample_susceptibility(phi, per_sample_losses, loss, *, num_batches: int = 8) -> Estimate:
    """Per-sample (or per-token) susceptibility χ̂_z(φ) = −Cov[φ, ℓ_z − L_n] (point-mass probe δ_z).

    Args:
        phi: ``[C, D(, k)]`` observable draws.
        per_sample_losses: ``[C, D, N]`` (or ``[C, D, N, T]`` per token) ℓ_z at every draw.
        loss: ``[C, D]`` the draw's L_n (``result.loss``). When it equals the (ρ-weighted) mean of
            the per-sample losses over the whole training set, Σ_z ρ_z χ̂_z = 0 up to rounding.

    Returns:
        `Estimate` of shape ``(k, N(, T))``; (1/nβ) d⟨φ⟩/dh along ρ(h) = (1−h)1 + nh e_z.
    """
    ls = _draws(per_sample_losses, "per_sample_losses")
    if ls.ndim < 3:
        raise ValueError(f"per_sample_losses must be [C, D, N] or [C, D, N, T], got {ls.shape}")
    delta = ls - _broadcast_loss(loss, ls, "loss")
    return susceptibility(phi, delta, num_batches=num_batches)


def reweighting_derivative(phi, per_sample_losses, *, nbeta: float, n: int, num_batches: int = 8) -> Estimate:
    """∂⟨φ⟩/∂ρ_m at ρ = 1: −β Cov[φ, ℓ_m] with β = nβ/n (β, not nβ: nβ L^ρ_n = β Σ_j ρ_j ℓ_j).

    This is the BIF / local case sensitivity (Giordano et al. 2018, Kreer et al. 2025). ``n`` is the
    number of training samples (the n of L_n), not the number of columns given.
    """
    if not nbeta > 0 or int(n) < 1:
        raise ValueError(f"need nbeta > 0 and n >= 1 (training-set size), got nbeta={nbeta}, n={n}")
    est = susceptibility(phi, per_sample_losses, num_batches=num_batches)
    return scale(est, float(nbeta) / int(n))


def jacobian(chi, nbeta: float):
    """nβ·χ: the response dμ = nβ χ dq of structural coordinates to data masses (an `Estimate` in,
    an `Estimate` out; arrays are scaled as they are)."""
    if not nbeta > 0:
        raise ValueError(f"nbeta must be positive, got {nbeta!r}")
    if isinstance(chi, Estimate):
        return scale(chi, float(nbeta))
    return np.asarray(chi) * float(nbeta)


def _centred_moments(m_xy: Moments, m_xl: Moments) -> Moments:
    """Moments of (x, y − L) from those of (x, y) and (x, L): co-moments are bilinear, exactly."""
    extra = m_xy.mean_y.ndim - m_xl.mean_y.ndim
    ml = m_xl.mean_y.reshape(m_xl.mean_y.shape + (1,) * extra)
    cl = m_xl.comoment.reshape(m_xl.comoment.shape + (1,) * extra)
    return Moments(m_xy.count, m_xy.mean_x, m_xy.mean_y - ml, m_xy.comoment - cl)


def susceptibility_from_result(result: SampleResult, phi: str, delta: str, *, centered: bool = False,
                               num_batches: int | None = None) -> Estimate:
    """χ = −Cov[φ, ΔL] from a `SampleResult`: ``phi`` and ``delta`` name observables ("loss" is L_n).

    ``centered=True`` uses ΔL = delta − L_n (per-sample losses as ``delta`` give χ̂_z). Works with stored
    draws, or with streaming runs that accumulated ``(phi, delta)`` (and ``(phi, "loss")`` when
    centred) via ``accumulate=[...]``.
    """
    check_result(result, "susceptibility_from_result")
    nb = int(num_batches or result.settings.get("num_batches", 8))
    get = lambda nm: result.loss if nm == "loss" else result.observables.get(nm)
    x, y = get(phi), get(delta)
    if x is not None and y is not None:
        if centered:
            return per_sample_susceptibility(x, y, result.loss, num_batches=nb) if np.ndim(y) > 2 else \
                mixture_susceptibility(x, y, result.loss, num_batches=nb)
        return susceptibility(x, y, num_batches=nb)
    key = f"{phi}|{delta}"
    if key not in result.moments or (centered and f"{phi}|loss" not in result.moments):
        need = [key] + ([f"{phi}|loss"] if centered else [])
        raise ValueError(f"result has neither stored draws of {phi!r} and {delta!r} nor streaming moments "
                         f"{need}; rerun with observables=... and store_draws=True, or "
                         f"accumulate={[tuple(k.split('|')) for k in need]}")
    m = result.moments[key]
    if centered:
        m = _centred_moments(m, result.moments[f"{phi}|loss"])
    return scale(covariance_from_moments(m), -1.0)
