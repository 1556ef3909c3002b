r"""Exact references: closed forms for the toy models of theory.md §4.

Conventions (theory.md §1), the same as `susc.sample`:

* localized tempered posterior :math:`p(w) \propto \exp\{-n\beta L^\rho_n(w) - \tfrac\gamma2\|w-w^*\|^2\}`,
  :math:`L^\rho_n = \frac1n\sum_i \rho_i\ell_i`; only the product ``nbeta`` = nβ enters, β = nβ/n.
  For a data-free potential V the Gibbs measure is ∝ exp{−tV − (γ/2)‖w−w*‖²} with t ≙ nβ.
* susceptibility :math:`\chi(\phi) = \frac{1}{n\beta}\partial_h\langle\phi\rangle_h = -\mathrm{Cov}[\phi, \Delta L]`;
  per-sample (centred) :math:`\chi_j(\phi) = -\mathrm{Cov}[\phi, \ell_j - L^\rho_n]`;
  single weight :math:`\partial\langle\phi\rangle/\partial\rho_j = -\beta\,\mathrm{Cov}[\phi, \ell_j]` (β, not nβ);
  BIF(i, j) = −Cov[ℓ_i, ℓ_j].
* SGLD step :math:`w \leftarrow w - \frac\epsilon2[t\nabla V + \gamma(w-w^*)] + \sqrt\epsilon\,\xi`.

Closed forms live here (linear regression, §4.2; quadratic potential and its SGLD stationary law,
§4.1). The quadrature references (1-D/2-D Gibbs moments, anharmonic §4.3, monomials §4.4, normal
crossing §4.5) live in `susc.reference.quadrature` and are re-exported below, so ``susc.exact.<name>``
and ``from susc.reference.exact import <name>`` reach every reference.

Everything here is NumPy float64 (the point of a reference is precision).
"""
from __future__ import annotations

import dataclasses
# warnings, typing and gammaln are unused here since the quadrature split; they stay importable so
# the ``susc.exact`` namespace is unchanged for outside code that reached them through it.
import warnings  # noqa: F401
from typing import Callable, Mapping, Sequence  # noqa: F401

import numpy as np
import scipy.linalg
from scipy.special import gammaln  # noqa: F401

from .quadrature import (
    GibbsMoments, anharmonic_limits, anharmonic_moments, anharmonic_potential, gibbs_grid_1d,
    gibbs_grid_2d, gibbs_moments_1d, gibbs_moments_2d, monomial_llc, monomial_moment,
    monomial_susceptibility, normal_crossing_mean_potential,
)

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
