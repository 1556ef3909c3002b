r"""Quadrature references: Gibbs expectations of 1-D and 2-D potentials, and the toy models of
theory.md §4.3–4.5 built on them (anharmonic, monomial, normal crossing).

Conventions (theory.md §1), the same as `susc.sample` and `susc.reference.exact`: for a data-free
potential V the Gibbs measure is ∝ exp{−tV − (γ/2)‖w − w*‖²} with t ≙ nβ.

Everything here is NumPy float64 (the point of a reference is precision). Potentials handed to the
quadrature routines must accept NumPy arrays; write them with ``np`` (or with operators only), since
a ``jnp`` function computes in float32 unless x64 is enabled.

All public names are re-exported by `susc.reference.exact` (the ``susc.exact`` namespace).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.special import gammaln

__all__ = [
    "GibbsMoments", "gibbs_grid_1d", "gibbs_grid_2d", "gibbs_moments_1d", "gibbs_moments_2d",
    "anharmonic_potential", "anharmonic_limits", "anharmonic_moments",
    "monomial_moment", "monomial_llc", "monomial_susceptibility", "normal_crossing_mean_potential",
]


# --------------------------------------------------------------------------------------------
# Quadrature for Gibbs expectations of 1-D and 2-D potentials
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GibbsMoments:
    """Expectations ``mean[k]`` and covariances ``cov[k, l]`` of observables ``names`` under
    ∝ exp{−tV − (γ/2)‖w − w*‖²}, with ``log_z`` = log ∫ exp{−tV − (γ/2)‖w − w*‖²}.
    ``m[name]`` is E[name]; ``m.covariance(a, b)`` is Cov[a, b]."""

    names: tuple
    mean: np.ndarray
    cov: np.ndarray
    log_z: float

    def __getitem__(self, name) -> float:
        return float(self.mean[self.names.index(name)])

    def covariance(self, a, b) -> float:
        return float(self.cov[self.names.index(a), self.names.index(b)])


def _f64(x, what):
    arr = np.asarray(x)
    if arr.dtype == np.float32:
        warnings.warn(f"{what} returned float32: quadrature accuracy is limited to ~1e-7; "
                      "write it with NumPy (or enable jax x64)", stacklevel=3)
    return arr.astype(np.float64)


def _region(energy_on, lo, hi, num, cutoff, max_expand=40):
    """Interval(s) where energy − min ≤ cutoff: expand while mass touches an edge, then shrink."""
    lo, hi = np.array(lo, float), np.array(hi, float)
    for _ in range(max_expand):
        E, axes = energy_on(lo, hi, num)
        keep = E - E.min() <= cutoff
        grow = False
        for ax in range(len(lo)):
            other = tuple(a for a in range(len(lo)) if a != ax)
            along = keep.any(axis=other) if other else keep
            w = hi[ax] - lo[ax]
            if along[0]:
                lo[ax] -= w; grow = True
            if along[-1]:
                hi[ax] += w; grow = True
        if not grow:
            break
    else:
        raise ValueError("the Gibbs density does not decay within a huge window: the measure may be "
                         "improper (flat direction?); pass gamma > 0 or explicit bounds")
    for _ in range(3):  # shrink to the support, pad one coarse cell, refine
        E, axes = energy_on(lo, hi, num)
        keep = E - E.min() <= cutoff
        for ax in range(len(lo)):
            other = tuple(a for a in range(len(lo)) if a != ax)
            idx = np.flatnonzero(keep.any(axis=other) if other else keep)
            x = axes[ax]
            lo[ax], hi[ax] = x[max(idx[0] - 1, 0)], x[min(idx[-1] + 1, len(x) - 1)]
    return lo, hi


def gibbs_grid_1d(V: Callable, t: float, *, gamma: float = 0.0, center: float = 0.0, bounds=None,
                  num: int = 20001, cutoff: float = 60.0, window: float = 10.0):
    """Grid ``x`` [num] and normalized weights ``p`` [num] (Σp = 1) for ∝ exp{−tV(x) − (γ/2)(x − w*)²}.

    The trapezoid rule on a smooth, fast-decaying integrand converges geometrically, so a dense uniform
    grid over {energy − min ≤ ``cutoff``} (found automatically, starting from w* ± ``window``, unless
    ``bounds`` = (lo, hi) is given) gives ~1e-12 relative accuracy. Returns (x, p, log_z).
    """
    energy = lambda x: t * _f64(V(x), "V") + 0.5 * gamma * (x - center) ** 2

    def on(lo, hi, m):
        x = np.linspace(lo[0], hi[0], m)
        return energy(x), (x,)

    if bounds is None:
        lo, hi = _region(on, [center - window], [center + window], 4001, cutoff)
    else:
        lo, hi = [float(bounds[0])], [float(bounds[1])]
    E, (x,) = on(lo, hi, num)
    if not np.all(np.isfinite(E)):
        raise ValueError("V is not finite on the quadrature grid; pass bounds inside its domain")
    w = np.exp(-(E - E.min()))
    z = w.sum()
    log_z = float(np.log(z * (x[1] - x[0])) - E.min())
    return x, w / z, log_z


def gibbs_grid_2d(V: Callable, t: float, *, gamma: float = 0.0, center=(0.0, 0.0), bounds=None,
                  num: int = 1201, cutoff: float = 60.0, window: float = 10.0):
    """2-D analogue of `gibbs_grid_1d` on a tensor grid: V(w1, w2) must broadcast over arrays.

    Returns (W1, W2, p, log_z) with ``W1, W2, p`` of shape [num, num] and Σp = 1; ``bounds`` =
    ((lo1, hi1), (lo2, hi2)).
    """
    c = np.asarray(center, dtype=float)

    def on(lo, hi, m):
        x1, x2 = np.linspace(lo[0], hi[0], m), np.linspace(lo[1], hi[1], m)
        W1, W2 = np.meshgrid(x1, x2, indexing="ij")
        E = t * _f64(V(W1, W2), "V") + 0.5 * gamma * ((W1 - c[0]) ** 2 + (W2 - c[1]) ** 2)
        return E, (x1, x2)

    if bounds is None:
        lo, hi = _region(on, c - window, c + window, 401, cutoff)
    else:
        lo, hi = [b[0] for b in bounds], [b[1] for b in bounds]
    E, (x1, x2) = on(lo, hi, num)
    if not np.all(np.isfinite(E)):
        raise ValueError("V is not finite on the quadrature grid; pass bounds inside its domain")
    w = np.exp(-(E - E.min()))
    z = w.sum()
    log_z = float(np.log(z * (x1[1] - x1[0]) * (x2[1] - x2[0])) - E.min())
    W1, W2 = np.meshgrid(x1, x2, indexing="ij")
    return W1, W2, w / z, log_z


def _moments(fns, args, p, log_z) -> GibbsMoments:
    if isinstance(fns, Mapping):
        names, fs = tuple(fns), list(fns.values())
    else:
        fs = list(fns)
        names = tuple(range(len(fs)))
    vals = np.stack([np.broadcast_to(_f64(f(*args), "an observable"), p.shape) for f in fs])
    vals = vals.reshape(len(fs), -1)
    p = p.reshape(-1)
    mean = vals @ p
    cent = vals - mean[:, None]                    # two-pass: no E[fg] − E[f]E[g] cancellation
    cov = (cent * p) @ cent.T
    return GibbsMoments(names, mean, cov, log_z)


def gibbs_moments_1d(V: Callable, t: float, fns: Mapping[str, Callable] | Sequence[Callable], *,
                     gamma: float = 0.0, center: float = 0.0, bounds=None, num: int = 20001,
                     cutoff: float = 60.0, window: float = 10.0) -> GibbsMoments:
    """E[f] and Cov[f, g] of observables ``fns`` (callables of x) under ∝ exp{−tV − (γ/2)(x − w*)²},
    by quadrature (see `gibbs_grid_1d`; ~1e-10 relative accuracy is checked against a Gaussian)."""
    x, p, log_z = gibbs_grid_1d(V, t, gamma=gamma, center=center, bounds=bounds, num=num,
                                cutoff=cutoff, window=window)
    return _moments(fns, (x,), p, log_z)


def gibbs_moments_2d(V: Callable, t: float, fns: Mapping[str, Callable] | Sequence[Callable], *,
                     gamma: float = 0.0, center=(0.0, 0.0), bounds=None, num: int = 1201,
                     cutoff: float = 60.0, window: float = 10.0) -> GibbsMoments:
    """E[f] and Cov[f, g] of observables f(w1, w2) under ∝ exp{−tV(w1, w2) − (γ/2)‖w − w*‖²}."""
    W1, W2, p, log_z = gibbs_grid_2d(V, t, gamma=gamma, center=center, bounds=bounds, num=num,
                                     cutoff=cutoff, window=window)
    return _moments(fns, (W1, W2), p, log_z)


# --------------------------------------------------------------------------------------------
# 1-D anharmonic potential (primer eq. 4.10; theory.md §4.3)
# --------------------------------------------------------------------------------------------

def _check_anharmonic(lam, alpha, gamma4):
    if not lam > 0 or not alpha ** 2 < 3 * lam * gamma4:
        raise ValueError(f"need lam > 0 and alpha² < 3·lam·gamma4 (so x = 0 is the global minimum); "
                         f"got lam={lam}, alpha={alpha}, gamma4={gamma4}")


def anharmonic_potential(lam: float, alpha: float, gamma4: float) -> Callable:
    """V(x) = (λ/2)x² + (α/6)x³ + (γ₄/24)x⁴ (operators only: works on NumPy and JAX arrays)."""
    _check_anharmonic(lam, alpha, gamma4)
    return lambda x: 0.5 * lam * x ** 2 + alpha / 6.0 * x ** 3 + gamma4 / 24.0 * x ** 4


def anharmonic_limits(lam: float, alpha: float) -> dict[str, float]:
    """t → ∞ limits of the t-scaled moments of ∝ e^{−tV} (flat prior), theory.md §4.3.

    Keys name the scaled quantity: ``t_var_x`` = t·Var[x] → 1/λ, ``2t_mean_x`` → −α/λ²,
    ``2t_mean_x2`` → 2/λ, ``t2_cov_x2_x`` = t²Cov[x², x] → −2α/λ³ (primer eq. 4.10),
    ``t2_kappa3`` → −α/λ³, ``t_dh_var_x`` = t·∂_h Var_h[x] (field h·x) → α/λ³,
    ``t2_cov_V_x2`` → 1/λ, ``t2_cov_V_x`` → −α/(2λ²). The relative corrections are O(1/t).
    """
    return {"t_var_x": 1 / lam, "2t_mean_x": -alpha / lam ** 2, "2t_mean_x2": 2 / lam,
            "t2_cov_x2_x": -2 * alpha / lam ** 3, "t2_kappa3": -alpha / lam ** 3,
            "t_dh_var_x": alpha / lam ** 3, "t2_cov_V_x2": 1 / lam, "t2_cov_V_x": -alpha / (2 * lam ** 2)}


def anharmonic_moments(t: float, lam: float, alpha: float, gamma4: float, **quad) -> dict[str, float]:
    """The same t-scaled quantities as `anharmonic_limits` at finite t, by 1-D quadrature.

    ``t_dh_var_x`` uses the exact identity ∂_h Var_h[x]|₀ = −t κ₃(x, x, x) (field V + h x).
    """
    V = anharmonic_potential(lam, alpha, gamma4)
    x, p, _ = gibbs_grid_1d(V, t, **quad)
    mu = p @ x
    u = x - mu
    k2, k3 = p @ u ** 2, p @ u ** 3
    m2 = p @ x ** 2
    v = V(x)
    cov = lambda f, g: p @ ((f - p @ f) * (g - p @ g))
    return {"t_var_x": t * k2, "2t_mean_x": 2 * t * mu, "2t_mean_x2": 2 * t * m2,
            "t2_cov_x2_x": t ** 2 * cov(x ** 2, x), "t2_kappa3": t ** 2 * k3,
            "t_dh_var_x": -t ** 2 * k3, "t2_cov_V_x2": t ** 2 * cov(v, x ** 2),
            "t2_cov_V_x": t ** 2 * cov(v, x)}


# --------------------------------------------------------------------------------------------
# Singular toys: monomials (§4.4) and the normal crossing (§4.5)
# --------------------------------------------------------------------------------------------

def monomial_moment(j: int, k: int, t: float, c: float = 1.0) -> float:
    """⟨w^{2j}⟩ = (ct)^{−j/k} Γ((2j+1)/(2k))/Γ(1/(2k)) under ∝ exp{−t c w^{2k}} (flat prior), exactly."""
    if k < 1 or j < 0 or not c * t > 0:
        raise ValueError(f"need integers k >= 1, j >= 0 and c·t > 0; got j={j}, k={k}, c·t={c * t}")
    return float(np.exp(-(j / k) * np.log(c * t) + gammaln((2 * j + 1) / (2 * k)) - gammaln(1 / (2 * k))))


def monomial_llc(k: int) -> float:
    """LLC of V = c w^{2k} at 0: λ = 1/(2k); t⟨V⟩ = 1/(2k) exactly for every t (virial identity)."""
    return 1.0 / (2 * k)


def monomial_susceptibility(k: int, t: float, c: float = 1.0) -> float:
    """χ = −Var[w²] of ϕ = w² to the field A = w² (so ∂_h⟨w²⟩ = −t Var[w²]) under ∝ exp{−t c w^{2k}}."""
    return -(monomial_moment(2, k, t, c) - monomial_moment(1, k, t, c) ** 2)


def normal_crossing_mean_potential(t: float, gamma: float, **quad) -> float:
    """⟨V⟩ for V = w1²w2² under ∝ exp{−tV − (γ/2)‖w‖²}, γ > 0 (theory.md §4.5).

    w1 | w2 ~ N(0, 1/(γ + 2t w2²)) and w2 has marginal ∝ e^{−γw2²/2}(γ + 2t w2²)^{−1/2}, so
    ⟨V⟩ = E_{w2}[w2²/(γ + 2t w2²)] by 1-D quadrature. t⟨V⟩ → 1/2 only logarithmically slowly.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0 (the normal crossing is improper without localization), got {gamma}")
    energy = lambda w: 0.5 * gamma * w ** 2 + 0.5 * np.log(gamma + 2 * t * w ** 2)
    m = gibbs_moments_1d(energy, 1.0, [lambda w: w ** 2 / (gamma + 2 * t * w ** 2)], **quad)
    return float(m.mean[0])
