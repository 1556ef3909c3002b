r"""Attribution scores ``[n, q]`` by the classical methods the BIF is compared with.

Every function returns the predicted change of query j's loss from *including* training example i
(positive = including i raises the loss; `susc.attribution.lds` states the convention), from
per-example gradients g_i = ∇ℓ_i(w*) and query gradients q_j = ∇ℓ_j(w*) at the trained w*:

- classical (damped) influence: −q_jᵀ (H + δI)⁻¹ g_i / n, with H the Hessian of the training
  objective at w* (Koh & Liang 2017; dense, eigendecomposed once so a damping grid is free);
- gradient similarity (Grad-Dot, TracIn at the final checkpoint): −η q_jᵀ g_i; Grad-Cos: the cosine;
- projected influence (TRAK-style, one model): the influence with the empirical Fisher
  F = ΦᵀΦ/n of random projections Φ = G P (P Gaussian, d × k) in place of H.

The BIF itself is `susc.bif` (−Cov[ℓ_i, ℓ_j] under the localized posterior); `bif_scores` rescales
it by β = nβ/n into the same units (∂⟨ℓ_j⟩/∂ρ_i = β·BIF(i, j)).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["per_example_grads", "HessianEigen", "hessian_eigen", "classical_influence",
           "gradient_similarity", "projected_influence", "bif_scores", "self_influence"]


@partial(jax.jit, static_argnames=("loss_fn",))
def _grads(loss_fn, params, data):
    flat, unravel = ravel_pytree(params)

    def one(example):
        batch = jax.tree_util.tree_map(lambda a: a[None], example)
        return jax.grad(lambda x: loss_fn(unravel(x), batch)[0])(flat)
    return jax.vmap(one)(data)


def per_example_grads(loss_fn: Callable, params, data) -> np.ndarray:
    """``[n, d]`` gradients of each example's loss at ``params`` (``ravel_pytree`` order), float64."""
    return np.asarray(_grads(loss_fn, params, data), np.float64)


class HessianEigen(NamedTuple):
    """H = V diag(λ) Vᵀ of the training objective's Hessian at w*."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray


def hessian_eigen(loss_fn: Callable, params, data, *, weight_decay: float = 0.0) -> HessianEigen:
    """Dense Hessian of (1/n)Σℓ_i + (λ/2)‖w‖² at ``params`` and its eigendecomposition (float64).

    Affordable for the small models here (d ≲ 10⁴); the cost is d Hessian-vector products.
    """
    flat, unravel = ravel_pytree(params)
    H = jax.jit(jax.hessian(lambda x: jnp.mean(loss_fn(unravel(x), data))))(flat)
    H = np.asarray(H, np.float64)
    H = 0.5 * (H + H.T) + float(weight_decay) * np.eye(H.shape[0])
    lam, V = np.linalg.eigh(H)
    return HessianEigen(lam, V)


def _inverse_weights(eig: HessianEigen, damping: float):
    if not damping >= 0:
        raise ValueError(f"`damping` must be >= 0; got {damping}")
    # Negative curvature (a trained net sits near, not at, a minimum) is floored at 0 before
    # damping, as in the Gauss-Newton practice; the count of floored directions is reported by
    # hessian_eigen's eigenvalues.
    lam = np.maximum(eig.eigenvalues, 0.0) + damping
    if np.any(lam <= 0):
        raise ValueError("H + δI is singular: pass a positive `damping`")
    return 1.0 / lam


def classical_influence(G, Gq, eig: HessianEigen, *, damping: float) -> np.ndarray:
    """−q_jᵀ (H₊ + δI)⁻¹ g_i / n for all i, j: ``[n, q]`` (H₊: negative eigenvalues set to 0)."""
    G, Gq = np.asarray(G, np.float64), np.asarray(Gq, np.float64)
    inv = _inverse_weights(eig, damping)
    A = G @ eig.eigenvectors
    B = Gq @ eig.eigenvectors
    return -(A * inv) @ B.T / G.shape[0]


def gradient_similarity(G, Gq, *, normalize: bool = False, learning_rate: float = 1.0) -> np.ndarray:
    """−η q_jᵀ g_i (one gradient step on example i changes ℓ_j by this much); ``normalize=True``:
    the negated cosine (Grad-Cos)."""
    G, Gq = np.asarray(G, np.float64), np.asarray(Gq, np.float64)
    if normalize:
        G = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-300)
        Gq = Gq / np.maximum(np.linalg.norm(Gq, axis=1, keepdims=True), 1e-300)
    return -float(learning_rate) * G @ Gq.T


def projected_influence(G, Gq, *, dim: int, damping: float, seed: int = 0) -> np.ndarray:
    """Influence with the empirical Fisher of a random projection (TRAK-style, one model):
    Φ = G P, P ~ N(0, 1/k)^{d×k}; scores = −Φ (ΦᵀΦ/n + δI)⁻¹ Φ_qᵀ / n."""
    G, Gq = np.asarray(G, np.float64), np.asarray(Gq, np.float64)
    n, d = G.shape
    P = np.random.default_rng(seed).standard_normal((d, int(dim))) / np.sqrt(dim)
    Phi, Phq = G @ P, Gq @ P
    F = Phi.T @ Phi / n + float(damping) * np.eye(int(dim))
    return -Phi @ np.linalg.solve(F, Phq.T) / n


def bif_scores(bif_value, *, nbeta: float, n: int) -> np.ndarray:
    """β·BIF(i, j) with β = nβ/n: the BIF in the units of ∂⟨ℓ_j⟩/∂ρ_i (sign unchanged)."""
    return np.asarray(bif_value, np.float64) * (float(nbeta) / int(n))


def self_influence(G, eig: HessianEigen | None = None, *, damping: float = 0.0) -> np.ndarray:
    """g_iᵀ (H₊ + δI)⁻¹ g_i / n per example (``eig=None``: ‖g_i‖², TracIn's self-influence).
    High = the example pulls the model toward itself: the classical mislabel ranking."""
    G = np.asarray(G, np.float64)
    if eig is None:
        return (G ** 2).sum(1)
    A = G @ eig.eigenvectors
    return (A ** 2 * _inverse_weights(eig, damping)).sum(1) / G.shape[0]
