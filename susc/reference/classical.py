"""Classical (regular-limit) influence baselines: HVPs, damped influence functions, Laplace, LOO.

Conventions (theory.md §1): the localized tempered posterior is
``p(w) ∝ exp{-nβ L_n^ρ(w) - (γ/2)‖w - w*‖²}`` with ``L_n^ρ = (1/n) Σ_i ρ_i ℓ_i`` (ρ = 1 by
default); only ``nbeta`` = nβ enters. ``loss_fn(params, batch)`` returns per-example losses of
shape ``(B,)`` (or ``(B, T)`` per token; L_n is then the mean over all entries and ρ is per
sequence). ``params`` is any PyTree, ``data`` a PyTree of arrays with leading axis n.

Regular limit (theory.md §1.9). Around a nondegenerate minimum w* with H = ∇²L_n^ρ(w*), the
Laplace covariance of the localized posterior is Σ = (nβ H + γ I)^{-1}, hence for smooth φ

    -nβ Cov[φ, ℓ_z]  →  IF_z(φ) := -∇φᵀ (H + (γ/nβ) I)^{-1} ∇ℓ_z      (nβ → ∞, γ/nβ fixed),

the *damped classical influence function* returned by `damped_influence`. Upweighting
convention: IF_z is the derivative of φ(ŵ_ε) for the objective L_n + ε ℓ_z (Koh & Liang), so a
change dρ_z of one sample's weight (ε = dρ_z / n) moves ⟨φ⟩ by ≈ (1/n) IF_z dρ_z, consistently with
∂⟨φ⟩/∂ρ_z = -β Cov[φ, ℓ_z] (β = nβ/n). Removing z (dρ_z = -1) changes φ by ≈ -(1/n) IF_z.
The centred per-sample susceptibility χ_z(φ) = -Cov[φ, ℓ_z - L_n] → (IF_z - mean_j IF_j)/nβ.
For Bayesian linear regression, evaluated at the posterior mean, these identities are exact.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["hvp", "mean_loss", "damped_influence", "dense_hessian", "laplace_covariance",
           "laplace_loss_covariance", "logistic_loss", "fit_logistic", "leave_one_out", "LOOResult"]

PyTree = Any


def _num_samples(data: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("`data` must be a PyTree of arrays with a leading sample axis n; got no arrays.")
    n = leaves[0].shape[0]
    if any(leaf.shape[0] != n for leaf in leaves):
        raise ValueError("every array in `data` must share the leading sample axis n; "
                         f"got shapes {[leaf.shape for leaf in leaves]}.")
    return int(n)


def _check_weights(weights, n: int):
    if weights is None:
        return None
    weights = jnp.asarray(weights)
    if weights.shape != (n,):
        raise ValueError(f"`weights` must have shape (n,) = ({n},), one ρ_i per sample; got {weights.shape}.")
    return weights


def _check_nbeta(nbeta, gamma):
    if nbeta is None or not float(nbeta) > 0:
        raise ValueError(f"`nbeta` (= nβ) must be a positive number; got {nbeta!r}.")
    if float(gamma) < 0:
        raise ValueError(f"`gamma` (localization strength γ) must be >= 0; got {gamma!r}.")


def _weighted(losses, weights):
    """Broadcast per-sample ρ over trailing (token) axes of the losses."""
    if weights is None:
        return losses
    return losses * weights.reshape(weights.shape + (1,) * (losses.ndim - 1))


def mean_loss(loss_fn: Callable, data: PyTree, weights=None) -> Callable:
    """Return ``f(params) = L_n^ρ = (1/n) Σ_i ρ_i ℓ_i(params)`` (mean over token axes too)."""
    n = _num_samples(data)
    weights = _check_weights(weights, n)

    def f(params):
        return jnp.mean(_weighted(loss_fn(params, data), weights))
    return f


def hvp(loss: Callable, params: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ∇²loss(params)·v by forward-over-reverse (``jvp`` of ``grad``).

    ``loss`` is a scalar function of a PyTree; ``v`` has the structure of ``params``.
    """
    return jax.jvp(jax.grad(loss), (params,), (v,))[1]


def _as_query_grads(params, queries, phi_grads):
    """Return (stacked ∇φ PyTree with leading axis k, squeeze flag)."""
    if (queries is None) == (phi_grads is None):
        raise ValueError("pass exactly one of `queries` (callable params -> scalar or (k,) array) "
                         "or `phi_grads` (PyTree like params with a leading axis k).")
    if queries is not None:
        if not callable(queries):
            raise TypeError("`queries` must be a callable params -> scalar or (k,) array.")
        out = jax.eval_shape(queries, params)
        if out.ndim > 1:
            raise ValueError(f"`queries` must return a scalar or a (k,) vector; got shape {out.shape}.")
        jac = jax.jacrev(lambda p: jnp.atleast_1d(queries(p)))(params)
        return jac, out.ndim == 0
    return phi_grads, False


def damped_influence(loss_fn: Callable, params: PyTree, data: PyTree, queries: Callable | None = None,
                     *, phi_grads: PyTree | None = None, nbeta: float, gamma: float = 0.0,
                     weights=None, cg_tol: float = 1e-6, maxiter: int | None = None) -> jax.Array:
    """Damped classical influence IF_z(φ) = -∇φᵀ (H + (γ/nβ) I)^{-1} ∇ℓ_z for every training z.

    Matrix-free: solves (H + (γ/nβ) I) x_a = ∇φ_a by conjugate gradients (`jax.scipy.sparse.linalg.cg`)
    with HVPs of L_n^ρ at ``params`` (H = ∇²L_n^ρ must be positive definite after damping), then
    IF_{a,z} = -∇ℓ_zᵀ x_a for all z at once as one forward-mode JVP of the per-example losses along
    x_a (no per-sample gradients are stored).

    This is the nβ → ∞ limit of -nβ Cov[φ, ℓ_z] under the localized posterior (module docstring):
    ``∂⟨φ⟩/∂ρ_z ≈ IF_z / n``, and removing sample z moves φ by ≈ ``-IF_z / n``.

    Args:
        queries: ``φ(params) -> scalar`` or ``-> (k,)`` array of k observables; or instead
        phi_grads: their gradients, a PyTree like ``params`` with a leading axis k.
        nbeta, gamma: nβ and γ; only the damping γ/nβ enters.
        weights: optional ρ of shape (n,) defining L_n^ρ (and hence H).
        cg_tol, maxiter: CG relative residual tolerance and iteration cap.

    Returns:
        ``[k, n]`` (``[k, n, T]`` for per-token losses); the k axis is dropped for a scalar query.
    """
    _check_nbeta(nbeta, gamma)
    grads, squeeze = _as_query_grads(params, queries, phi_grads)
    w = _check_weights(weights, _num_samples(data))
    out = _damped_solve(loss_fn, maxiter, params, grads, data, w, jnp.asarray(float(gamma) / float(nbeta)),
                        jnp.asarray(cg_tol))
    return out[0] if squeeze else out


@partial(jax.jit, static_argnums=(0, 1))
def _damped_solve(loss_fn, maxiter, params, grads, data, weights, damping, cg_tol):
    """CG solves of (H + damping·I) x_a = ∇φ_a, then -∇ℓ_zᵀ x_a for all z. One compiled program per
    (loss_fn, shapes): damping, tolerance, data and weights are runtime arguments."""
    def f(p):
        return jnp.mean(_weighted(loss_fn(p, data), weights))

    def matvec(v):
        return jax.tree_util.tree_map(lambda a, b: a + damping * b, hvp(f, params, v), v)

    def one(g):
        x, _ = jax.scipy.sparse.linalg.cg(matvec, g, tol=cg_tol, maxiter=maxiter)
        # ∇ℓ_zᵀ x for every z in one JVP of the per-example loss vector.
        return -jax.jvp(lambda p: loss_fn(p, data), (params,), (x,))[1]
    return jax.vmap(one)(grads)


def dense_hessian(loss_fn: Callable, params: PyTree, data: PyTree, *, weights=None) -> jax.Array:
    """Dense Hessian ∇²L_n^ρ [d, d] in the ``ravel_pytree`` order of ``params`` (tiny models only)."""
    flat, unravel = ravel_pytree(params)
    f = mean_loss(loss_fn, data, weights)
    return jax.hessian(lambda x: f(unravel(x)))(flat)


def laplace_covariance(loss_fn: Callable, params: PyTree, data: PyTree, *, nbeta: float,
                       gamma: float = 0.0, weights=None) -> jax.Array:
    """Laplace covariance Σ = (nβ H + γ I)^{-1} of the localized posterior at ``params`` [d, d]."""
    _check_nbeta(nbeta, gamma)
    h = dense_hessian(loss_fn, params, data, weights=weights)
    prec = nbeta * h + gamma * jnp.eye(h.shape[0], dtype=h.dtype)
    return jnp.linalg.inv(prec)


def _per_sample_jacobian(loss_fn, params, data):
    """∇ℓ_i as a dense [n, d] matrix (per-token losses are averaged over their token axes)."""
    flat, unravel = ravel_pytree(params)
    per = lambda x: loss_fn(unravel(x), data).reshape(_num_samples(data), -1).mean(axis=1)
    return jax.jacrev(per)(flat)


def laplace_loss_covariance(loss_fn: Callable, params: PyTree, data: PyTree, *, nbeta: float,
                            gamma: float = 0.0, weights=None, query_data: PyTree | None = None) -> jax.Array:
    """Laplace plug-in loss covariance Cov[ℓ_i, ℓ_j] ≈ ∇ℓ_iᵀ Σ ∇ℓ_j, Σ = (nβ H + γ I)^{-1}.

    Rows index ``data`` (training samples), columns ``query_data`` (defaults to ``data``). The
    Laplace BIF is its negative, BIF(i, j) = -Cov[ℓ_i, ℓ_j] (devinterp reports +cov/+corr).
    Dense [d, d] algebra (tiny models); per-token losses are averaged over their token axes.
    """
    sigma = laplace_covariance(loss_fn, params, data, nbeta=nbeta, gamma=gamma, weights=weights)
    g = _per_sample_jacobian(loss_fn, params, data)
    gq = g if query_data is None else _per_sample_jacobian(loss_fn, params, query_data)
    return g @ sigma @ gq.T


def logistic_loss(w: jax.Array, batch: dict) -> jax.Array:
    """Per-example logistic NLL ℓ_i = softplus(x_iᵀw) - y_i x_iᵀw, y ∈ {0, 1}; batch = {"x", "y"}."""
    z = batch["x"] @ w
    return jax.nn.softplus(z) - batch["y"] * z


def fit_logistic(X: jax.Array, y: jax.Array, weights=None, l2: float = 0.0, *,
                 num_iters: int = 30) -> jax.Array:
    """Weighted L2-regularized logistic regression by Newton's method (jit- and vmap-able).

    Minimizes ``(1/n) Σ_i ρ_i ℓ_i(w) + (l2/2)‖w‖²`` (divided by n, not Σρ, so that a zero weight
    removes exactly one sample's term) from w = 0 with a fixed number of full Newton steps. No
    intercept: append a column of ones to ``X``. Use ``l2 > 0`` if the data may be separable.
    """
    n, d = X.shape
    rho = jnp.ones(n, X.dtype) if weights is None else jnp.asarray(weights, X.dtype)

    def step(_, w):
        p = jax.nn.sigmoid(X @ w)
        g = X.T @ (rho * (p - y)) / n + l2 * w
        h = (X * (rho * p * (1 - p))[:, None]).T @ X / n + l2 * jnp.eye(d, dtype=X.dtype)
        return w - jnp.linalg.solve(h, g)
    return jax.lax.fori_loop(0, num_iters, step, jnp.zeros(d, X.dtype))


class LOOResult(NamedTuple):
    """Leave-one-out retraining: ``delta[m] = query(params_loo[m]) - query(params_full)``."""
    params_full: PyTree
    params_loo: PyTree   # stacked over the m held-out indices
    delta: jax.Array     # [m, *query_shape]


def leave_one_out(train_fn: Callable, data: PyTree, indices, *, query_fn: Callable | None = None,
                  weights=None, batch_size: int | None = None) -> LOOResult:
    """Retrain without each sample i in ``indices`` and report the change of a query.

    ``train_fn(data, weights) -> params`` must be a pure JAX function of the weight vector ρ
    (e.g. ``lambda d, w: fit_logistic(d["x"], d["y"], w, l2)``); it is jitted and mapped over
    weight vectors equal to the base ρ (default ones) with a zero at i, ``batch_size`` at a time
    (``lax.map``; None = all vmapped at once). ``query_fn(params)`` defaults to the raveled
    parameters. Compare ``delta`` with the influence prediction ``-damped_influence(...) / n``.
    """
    n = _num_samples(data)
    base = jnp.ones(n) if weights is None else _check_weights(weights, n)
    indices = jnp.asarray(indices, dtype=jnp.int32).reshape(-1)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"`indices` must lie in [0, n) = [0, {n}); got min {int(indices.min())}, "
                         f"max {int(indices.max())}.")
    query = query_fn if query_fn is not None else (lambda p: ravel_pytree(p)[0])

    @jax.jit
    def run(data, base, indices):
        full = train_fn(data, base)
        q0 = query(full)

        def drop(i):
            p = train_fn(data, base.at[i].set(0.0))
            return p, query(p) - q0
        loo, delta = jax.lax.map(drop, indices, batch_size=batch_size or max(int(indices.size), 1))
        return full, loo, delta

    return LOOResult(*run(data, base, indices))
