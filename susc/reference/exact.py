r"""Exact references: closed forms and quadrature for the toy models of theory.md §4.

Conventions (theory.md §1), the same as `susc.sample`:

* localized tempered posterior :math:`p(w) \propto \exp\{-n\beta L^\rho_n(w) - \tfrac\gamma2\|w-w^*\|^2\}`,
  :math:`L^\rho_n = \frac1n\sum_i \rho_i\ell_i`; only the product ``nbeta`` = nβ enters, β = nβ/n.
  For a data-free potential V the Gibbs measure is ∝ exp{−tV − (γ/2)‖w−w*‖²} with t ≙ nβ.
* susceptibility :math:`\chi(\phi) = \frac{1}{n\beta}\partial_h\langle\phi\rangle_h = -\mathrm{Cov}[\phi, \Delta L]`;
  per-sample (centred) :math:`\chi_j(\phi) = -\mathrm{Cov}[\phi, \ell_j - L^\rho_n]`;
  single weight :math:`\partial\langle\phi\rangle/\partial\rho_j = -\beta\,\mathrm{Cov}[\phi, \ell_j]` (β, not nβ);
  BIF(i, j) = −Cov[ℓ_i, ℓ_j].
* SGLD step :math:`w \leftarrow w - \frac\epsilon2[t\nabla V + \gamma(w-w^*)] + \sqrt\epsilon\,\xi`.

Everything here is NumPy float64 (the point of a reference is precision). Potentials handed to the
quadrature routines must accept NumPy arrays; write them with ``np`` (or with operators only), since
a ``jnp`` function computes in float32 unless x64 is enabled.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.linalg
from scipy.special import gammaln

__all__ = [
    "LinregPosterior", "linreg_posterior",
    "GaussianPosterior", "quadratic_posterior",
    "GibbsMoments", "gibbs_grid_1d", "gibbs_grid_2d", "gibbs_moments_1d", "gibbs_moments_2d",
    "anharmonic_potential", "anharmonic_limits", "anharmonic_moments",
    "monomial_moment", "monomial_llc", "monomial_susceptibility", "normal_crossing_mean_potential",
]


# --------------------------------------------------------------------------------------------
# Bayesian linear regression (theory.md §4.2)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LinregPosterior:
    r"""Exact Gaussian posterior N(mean, cov) of localized, tempered, reweighted linear regression.

    ℓ_i(w) = (y_i − x_iᵀw)²/(2σ²);  p(w) ∝ exp{−nβ L^ρ_n(w) − (γ/2)‖w − w*‖²}, so the precision is
    P = (β/σ²) Σ_i ρ_i x_i x_iᵀ + γI and mean = P⁻¹((β/σ²) Σ_i ρ_i y_i x_i + γ w*), β = nβ/n.
    With residuals r_i = y_i − x_iᵀ mean and s_ij = x_iᵀ cov x_j all moments below are closed form.
    """

    X: np.ndarray        # [n, d]
    y: np.ndarray        # [n]
    sigma: float
    nbeta: float
    gamma: float
    center: np.ndarray   # [d]  w*
    weights: np.ndarray  # [n]  ρ
    mean: np.ndarray     # [d]
    cov: np.ndarray      # [d, d]

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def beta(self) -> float:
        return self.nbeta / self.n

    @property
    def residuals(self) -> np.ndarray:
        """r_i = y_i − x_iᵀ mean, shape [n]."""
        return self.y - self.X @ self.mean

    def gram(self) -> np.ndarray:
        """s_ij = x_iᵀ Σ x_j, shape [n, n]."""
        return self.X @ self.cov @ self.X.T

    def per_sample_loss(self, w: np.ndarray) -> np.ndarray:
        """ℓ_i(w) for parameters ``w`` of shape [..., d]; returns [..., n]."""
        return (self.y - np.asarray(w) @ self.X.T) ** 2 / (2 * self.sigma ** 2)

    def loss_mean(self) -> np.ndarray:
        """E[ℓ_k] = (r_k² + s_kk)/(2σ²), shape [n]."""
        s_kk = np.einsum("kd,de,ke->k", self.X, self.cov, self.X)
        return (self.residuals ** 2 + s_kk) / (2 * self.sigma ** 2)

    def loss_cov(self) -> np.ndarray:
        """Cov[ℓ_i, ℓ_j] = r_i r_j s_ij/σ⁴ + s_ij²/(2σ⁴), shape [n, n] (Isserlis for a Gaussian w)."""
        r, s, s4 = self.residuals, self.gram(), self.sigma ** 4
        return np.outer(r, r) * s / s4 + s ** 2 / (2 * s4)

    def bif(self) -> np.ndarray:
        """Bayesian influence function BIF(i, j) = −Cov[ℓ_i, ℓ_j] (Kreer et al. sign; no centring)."""
        return -self.loss_cov()

    def linear_loss_cov(self, C: np.ndarray) -> np.ndarray:
        """Cov[cᵀw, ℓ_j] = −(r_j/σ²) cᵀΣx_j for each row c of ``C`` ([d] or [k, d]) -> [n] or [k, n]."""
        C = np.asarray(C, dtype=float)
        return -(C @ self.cov @ self.X.T) * self.residuals / self.sigma ** 2

    def _centre(self, cov_with_losses: np.ndarray) -> np.ndarray:
        # Cov[φ, ℓ_j − L^ρ_n] = Cov[φ, ℓ_j] − (1/n) Σ_i ρ_i Cov[φ, ℓ_i]
        return cov_with_losses - (cov_with_losses @ self.weights)[..., None] / self.n

    def chi_linear(self, C: np.ndarray) -> np.ndarray:
        """Per-sample susceptibility χ_j(cᵀw) = −Cov[cᵀw, ℓ_j − L^ρ_n]; [d] or [k, d] -> [n] or [k, n].

        Equals (1/nβ) d⟨cᵀw⟩/dh along the mass-preserving path ρ(h) = (1−h)ρ + nh e_j.
        """
        return -self._centre(self.linear_loss_cov(C))

    def chi_loss(self) -> np.ndarray:
        """χ_j(ℓ_k) = −Cov[ℓ_k, ℓ_j − L^ρ_n], shape [k, j] = [n, n]; Σ_j ρ_j χ_j = 0 when Σ_j ρ_j = n."""
        return -self._centre(self.loss_cov())

    def dmean_drho(self, C: np.ndarray | None = None) -> np.ndarray:
        """∂⟨Cw⟩/∂ρ_j by differentiating the closed-form mean: ∂m/∂ρ_j = β (r_j/σ²) Σ x_j.

        Returns [d, n] for C = None (the mean itself), else [n] or [k, n]. Equals −β Cov[cᵀw, ℓ_j].
        """
        dm = self.beta * (self.cov @ self.X.T) * self.residuals / self.sigma ** 2  # [d, n]
        return dm if C is None else np.asarray(C, dtype=float) @ dm

    def dloss_mean_drho(self) -> np.ndarray:
        """∂E[ℓ_k]/∂ρ_j, shape [k, j], by the chain rule through m(ρ) and Σ(ρ).

        ∂Σ/∂ρ_j = −(β/σ²) Σ x_j x_jᵀ Σ, so ∂E[ℓ_k]/∂ρ_j = (−2 r_k x_kᵀ ∂m_j + x_kᵀ ∂Σ_j x_k)/(2σ²);
        the FDT says this is −β Cov[ℓ_k, ℓ_j] (theory.md §4.2).
        """
        s2 = self.sigma ** 2
        dm = self.X @ self.dmean_drho()                 # [k, j] = x_kᵀ ∂m/∂ρ_j
        dS = -(self.beta / s2) * self.gram() ** 2       # [k, j] = x_kᵀ ∂Σ_j x_k
        return (-2 * self.residuals[:, None] * dm + dS) / (2 * s2)

    def damped_influence(self, C: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Damped classical IF −(1/n) cᵀ(H^ρ_n + (γ/nβ)I)⁻¹ ∇ℓ_j(w), at w = ``at`` (default: mean).

        H^ρ_n = Σ_i ρ_i x_i x_iᵀ/(nσ²) = ∇²L^ρ_n. At w = mean this equals ∂⟨cᵀw⟩/∂ρ_j exactly, for
        any β (theory.md §4.2); at γ = 0 it is Koh–Liang's IF at the OLS solution.
        """
        w = self.mean if at is None else np.asarray(at, dtype=float)
        n, d = self.X.shape
        H = (self.X.T * self.weights) @ self.X / (n * self.sigma ** 2)
        grads = -(self.y - self.X @ w)[:, None] * self.X / self.sigma ** 2       # [n, d] ∇ℓ_j(w)
        sol = np.linalg.solve(H + (self.gamma / self.nbeta) * np.eye(d), grads.T)  # [d, n]
        return -np.asarray(C, dtype=float) @ sol / n

    def with_weights(self, weights: np.ndarray) -> "LinregPosterior":
        """The same problem with per-sample weights ρ replaced by ``weights``."""
        return linreg_posterior(self.X, self.y, nbeta=self.nbeta, sigma=self.sigma, gamma=self.gamma,
                                center=self.center, weights=weights)

    def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
        """``num`` exact draws w ~ N(mean, cov) as [num, d] (NumPy ``Generator``)."""
        return rng.multivariate_normal(self.mean, self.cov, size=num, method="cholesky")


def linreg_posterior(X, y, *, nbeta: float, sigma: float = 1.0, gamma: float = 0.0, center=None,
                     weights=None) -> LinregPosterior:
    r"""Closed-form posterior of p(w) ∝ exp{−nβ L^ρ_n(w) − (γ/2)‖w − w*‖²}, ℓ_i = (y_i − x_iᵀw)²/(2σ²).

    Args:
        X: [n, d] inputs; y: [n] targets (n is taken from X, so β = nbeta/n).
        nbeta: nβ > 0. sigma: noise scale σ of the loss. gamma: γ ≥ 0.
        center: w* (default 0). weights: per-sample ρ of shape (n,) (default 1).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be [n, d], got shape {X.shape}")
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape (n,) = ({n},), got {y.shape}")
    if not nbeta > 0 or not sigma > 0 or not gamma >= 0:
        raise ValueError(f"need nbeta > 0, sigma > 0, gamma >= 0; got {nbeta}, {sigma}, {gamma}")
    center = np.zeros(d) if center is None else np.broadcast_to(np.asarray(center, float), (d,)).copy()
    rho = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if rho.shape != (n,):
        raise ValueError(f"weights must have shape (n,) = ({n},), got {rho.shape}")
    c = (nbeta / n) / sigma ** 2
    P = c * (X.T * rho) @ X + gamma * np.eye(d)
    try:
        L = np.linalg.cholesky(P)
    except np.linalg.LinAlgError:
        raise ValueError("the posterior precision (β/σ²)Σρ_i x_i x_iᵀ + γI is not positive definite: "
                         "use gamma > 0, more data, or nonnegative weights") from None
    cov = scipy.linalg.cho_solve((L, True), np.eye(d))
    mean = cov @ (c * X.T @ (rho * y) + gamma * center)
    return LinregPosterior(X, y, float(sigma), float(nbeta), float(gamma), center, rho, mean, cov)


# --------------------------------------------------------------------------------------------
# Quadratic potential with Gaussian localization (theory.md §4.1)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GaussianPosterior:
    """Gibbs measure ∝ exp{−tV − (γ/2)‖w − w*‖²} of V = ½(w − w0)ᵀH(w − w0): N(mean, cov) with
    cov = (tH + γI)⁻¹ and mean = cov (tH w0 + γ w*)."""

    H: np.ndarray
    w0: np.ndarray
    t: float
    gamma: float
    center: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    @property
    def precision(self) -> np.ndarray:
        return self.t * self.H + self.gamma * np.eye(len(self.w0))

    def potential(self, w: np.ndarray) -> np.ndarray:
        u = np.asarray(w, dtype=float) - self.w0
        return 0.5 * np.einsum("...i,ij,...j->...", u, self.H, u)

    def _mean_potential(self, mean, cov) -> float:
        u = mean - self.w0
        return float(0.5 * np.trace(self.H @ cov) + 0.5 * u @ self.H @ u)

    def mean_potential(self) -> float:
        """E[V] = ½ tr(HΣ) + V(mean)."""
        return self._mean_potential(self.mean, self.cov)

    def llc_estimate(self) -> float:
        """t(E[V] − V(w*)); at w* = w0 it is ½ tr(tH(tH + γI)⁻¹) → d/2 (the γ-biased LLC)."""
        return self.t * (self.mean_potential() - float(self.potential(self.center)))

    def sgld_stationary(self, step_size: float) -> tuple[np.ndarray, np.ndarray]:
        """(mean, cov) of the stationary law of w ← w − (ε/2)[t∇V + γ(w − w*)] + √ε ξ.

        The recursion is the AR(1) w' = A w + b + √ε ξ with A = I − (ε/2)P, P = tH + γI; its mean is
        the exact posterior mean and its covariance solves the discrete Lyapunov equation
        S = A S Aᵀ + εI, i.e. S = P⁻¹(I − εP/4)⁻¹ (1-D: 1/(p(1 − εp/4)); with h = ε/2 this is
        theory.md §4.1's 1/(p(1 − hp/2))). Needs ε < 4/p_max for stability.
        """
        P = self.precision
        p_max = float(np.linalg.eigvalsh(P).max())
        if not 0 < step_size < 4.0 / p_max:
            raise ValueError(f"step_size must be in (0, 4/p_max) = (0, {4.0 / p_max:.4g}) for a stable "
                             f"SGLD recursion, got {step_size}")
        A = np.eye(len(P)) - 0.5 * step_size * P
        S = scipy.linalg.solve_discrete_lyapunov(A, step_size * np.eye(len(P)))
        return self.mean.copy(), 0.5 * (S + S.T)

    def sgld_llc_estimate(self, step_size: float) -> float:
        """t(E_S[V] − V(w*)) under the SGLD stationary law: the step-size-biased LLC estimate."""
        m, S = self.sgld_stationary(step_size)
        return self.t * (self._mean_potential(m, S) - float(self.potential(self.center)))


def quadratic_posterior(H, *, t: float, w0=None, gamma: float = 0.0, center=None) -> GaussianPosterior:
    """Exact Gibbs measure of V = ½(w − w0)ᵀH(w − w0) at inverse temperature t (≙ nβ), localized by
    γ at w* = ``center`` (default w0). H: [d, d] symmetric with tH + γI positive definite."""
    H = np.atleast_2d(np.asarray(H, dtype=float))
    d = H.shape[0]
    if H.shape != (d, d) or not np.allclose(H, H.T):
        raise ValueError(f"H must be a symmetric [d, d] matrix, got shape {H.shape}")
    w0 = np.zeros(d) if w0 is None else np.broadcast_to(np.asarray(w0, float), (d,)).copy()
    center = w0.copy() if center is None else np.broadcast_to(np.asarray(center, float), (d,)).copy()
    P = t * H + gamma * np.eye(d)
    if np.linalg.eigvalsh(P).min() <= 0:
        raise ValueError("tH + γI must be positive definite (a flat or concave direction needs gamma > 0)")
    cov = np.linalg.inv(P)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (t * H @ w0 + gamma * center)
    return GaussianPosterior(H, w0, float(t), float(gamma), center, mean, cov)


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
