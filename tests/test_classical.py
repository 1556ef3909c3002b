"""Tests for susc.classical: HVPs, damped influence (CG vs dense, exact linear regression), Laplace, LOO.

Deterministic checks run in float64 (``jax.enable_x64``) with tolerances from floating-point
precision; the LOO check compares retraining with its first-order (influence) prediction.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from susc.reference import classical


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------- helpers (test-local oracles)
def mlp_problem(n=40, d_in=3, hidden=6, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w1": jnp.asarray(rng.normal(size=(d_in, hidden)) / np.sqrt(d_in)),
              "b1": jnp.asarray(0.1 * rng.normal(size=hidden)),
              "w2": jnp.asarray(rng.normal(size=(hidden,)) / np.sqrt(hidden)),
              "b2": jnp.asarray(0.0)}
    data = {"x": jnp.asarray(rng.normal(size=(n, d_in))), "y": jnp.asarray(rng.normal(size=n))}

    def loss_fn(p, batch):
        h = jnp.tanh(batch["x"] @ p["w1"] + p["b1"])
        return 0.5 * (h @ p["w2"] + p["b2"] - batch["y"]) ** 2

    def queries(p):  # k = 2: prediction at a probe input, and a weight-norm observable
        h = jnp.tanh(jnp.array([0.3, -1.0, 0.5]) @ p["w1"] + p["b1"])
        return jnp.stack([h @ p["w2"] + p["b2"], 0.5 * jnp.sum(p["w1"] ** 2)])
    return loss_fn, params, data, queries


def dense_if(loss_fn, params, data, queries, damping):
    """-G (H + δI)^{-1} ∇φᵀ from explicit Hessian / Jacobians (independent of the CG path)."""
    flat, unravel = ravel_pytree(params)
    n = data["y"].shape[0]
    H = jax.hessian(lambda x: jnp.mean(loss_fn(unravel(x), data)))(flat)
    G = jax.jacrev(lambda x: loss_fn(unravel(x), data).reshape(n, -1))(flat)   # [n, T, d]
    A = jax.jacrev(lambda x: jnp.atleast_1d(queries(unravel(x))))(flat)          # [k, d]
    X = np.linalg.solve(np.asarray(H) + damping * np.eye(flat.size), np.asarray(A).T)  # [d, k]
    return -np.einsum("ntd,dk->knt", np.asarray(G), X), np.asarray(H)


def linreg(n=30, d=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
    return X, y


def linreg_posterior(X, y, sigma, beta, gamma, wstar, rho):
    P = beta / sigma**2 * (X.T * rho) @ X + gamma * np.eye(X.shape[1])
    S = np.linalg.inv(P)
    return S @ (beta / sigma**2 * X.T @ (rho * y) + gamma * wstar), S


# ---------------------------------------------------------------- HVP / dense Hessian
def test_hvp_and_dense_hessian_match_finite_differences():
    loss_fn, params, data, _ = mlp_problem()
    f = classical.mean_loss(loss_fn, data)
    flat, unravel = ravel_pytree(params)
    H = np.asarray(classical.dense_hessian(loss_fn, params, data))
    g = jax.jit(jax.grad(lambda x: f(unravel(x))))
    eps = 1e-5
    fd = np.stack([(g(flat + eps * e) - g(flat - eps * e)) / (2 * eps) for e in np.eye(flat.size)])
    np.testing.assert_allclose(H, fd, atol=1e-8 * np.abs(H).max())   # FD error O(eps²)
    v = np.random.default_rng(3).normal(size=flat.size)
    hv = ravel_pytree(classical.hvp(f, params, unravel(jnp.asarray(v))))[0]
    np.testing.assert_allclose(hv, H @ v, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- damped IF: CG == dense
@pytest.mark.parametrize("model", ["mlp", "logistic"])
def test_damped_influence_cg_matches_dense(model):
    if model == "mlp":
        loss_fn, params, data, queries = mlp_problem()
        nbeta = 40.0
    else:
        rng = np.random.default_rng(5)
        x = np.c_[rng.normal(size=(60, 3)), np.ones(60)]
        data = {"x": jnp.asarray(x), "y": jnp.asarray((rng.random(60) < 0.4).astype(float))}
        loss_fn, params, nbeta = classical.logistic_loss, jnp.asarray(rng.normal(size=4) * 0.3), 60.0
        queries = lambda w: jnp.stack([w @ jnp.array([1.0, 0.0, -1.0, 0.2]), jax.nn.sigmoid(w.sum())])
    _, H = dense_if(loss_fn, params, data, queries, 0.0)
    # Damping large enough that H + δI is positive definite (the MLP Hessian is indefinite here).
    damping = max(0.05, 0.05 - np.linalg.eigvalsh(H).min())
    gamma = damping * nbeta
    ref, _ = dense_if(loss_fn, params, data, queries, damping)
    est = classical.damped_influence(loss_fn, params, data, queries, nbeta=nbeta, gamma=gamma, cg_tol=1e-12)
    assert est.shape == (2, data["y"].shape[0])
    rel = np.abs(np.asarray(est) - ref[..., 0]).max() / np.abs(ref).max()
    assert rel < 1e-7, rel
    # Same answer from explicit query gradients, and a scalar query drops the k axis.
    grads = jax.jacrev(queries)(params)
    est2 = classical.damped_influence(loss_fn, params, data, phi_grads=grads, nbeta=nbeta,
                                      gamma=gamma, cg_tol=1e-12)
    np.testing.assert_allclose(est2, est, rtol=1e-9, atol=1e-12)
    est1 = classical.damped_influence(loss_fn, params, data, lambda p: queries(p)[0], nbeta=nbeta,
                                      gamma=gamma, cg_tol=1e-12)
    np.testing.assert_allclose(est1, est[0], rtol=1e-9, atol=1e-12)


def test_damped_influence_sweep_compiles_once(lowerings):
    """Damping, tolerance, data and weights are runtime arguments: a sweep reuses one program."""
    loss_fn, params, data, queries = mlp_problem()
    grads = jax.jacrev(queries)(params)
    kw = dict(phi_grads=grads, nbeta=40.0)
    first = classical.damped_influence(loss_fn, params, data, gamma=10.0, **kw)
    lowerings.clear()
    out = [classical.damped_influence(loss_fn, params, data, gamma=g, cg_tol=t, **kw)
           for g, t in ((20.0, 1e-6), (40.0, 1e-8))]
    assert lowerings == [], lowerings
    assert not np.allclose(out[0], first)        # the damping did change


def test_damped_influence_per_token_losses():
    loss_fn, params, data, queries = mlp_problem(n=20)
    tok = lambda p, b: jnp.stack([loss_fn(p, b), 0.3 * loss_fn(p, b) ** 2], axis=1)   # (B, T=2)
    ref, H = dense_if(tok, params, data, queries, 0.0)
    damping = max(0.05, 0.05 - np.linalg.eigvalsh(H).min())
    ref, _ = dense_if(tok, params, data, queries, damping)
    est = classical.damped_influence(tok, params, data, queries, nbeta=10.0, gamma=10.0 * damping,
                                     cg_tol=1e-12)
    assert est.shape == (2, 20, 2)
    np.testing.assert_allclose(est, ref, atol=1e-7 * np.abs(ref).max())


# ---------------------------------------------------------------- exact: Bayesian linear regression
@pytest.mark.parametrize("nbeta,gamma", [(30.0, 0.0), (5.0, 0.0), (30.0, 2.0), (5.0, 0.7)])
def test_damped_influence_is_exact_derivative_for_linear_regression(nbeta, gamma):
    """∂⟨cᵀw⟩/∂ρ_j = β (r_j/σ²) cᵀΣx_j = IF_j / n exactly (theory.md §4.2), any β and γ."""
    X, y = linreg()
    n, d = X.shape
    sigma, beta = 0.7, nbeta / n
    wstar = np.array([0.2, -0.1, 0.4])
    m, S = linreg_posterior(X, y, sigma, beta, gamma, wstar, np.ones(n))
    C = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])
    # Closed-form derivative (from P dm = db with dP = β/σ² x_j x_jᵀ, db = β/σ² y_j x_j) ...
    r = y - X @ m
    deriv = beta / sigma**2 * (C @ S @ X.T) * r                     # [k, n]
    # ... checked against central finite differences of the closed-form posterior mean.
    eps = 1e-6
    fd = np.stack([C @ (linreg_posterior(X, y, sigma, beta, gamma, wstar, 1 + eps * e)[0]
                        - linreg_posterior(X, y, sigma, beta, gamma, wstar, 1 - eps * e)[0]) / (2 * eps)
                   for e in np.eye(n)], axis=1)
    np.testing.assert_allclose(fd, deriv, atol=1e-7 * np.abs(deriv).max())
    loss_fn = lambda w, b: (b["y"] - b["x"] @ w) ** 2 / (2 * sigma**2)
    data = {"x": jnp.asarray(X), "y": jnp.asarray(y)}
    est = classical.damped_influence(loss_fn, jnp.asarray(m), data, lambda w: jnp.asarray(C) @ w,
                                     nbeta=nbeta, gamma=gamma, cg_tol=1e-13)
    np.testing.assert_allclose(np.asarray(est) / n, deriv, rtol=1e-8, atol=1e-10 * np.abs(deriv).max())


def test_laplace_covariances_exact_for_linear_regression():
    X, y = linreg()
    n = X.shape[0]
    sigma, nbeta, gamma = 0.7, 12.0, 1.5
    wstar = np.zeros(3)
    m, S = linreg_posterior(X, y, sigma, nbeta / n, gamma, wstar, np.ones(n))
    loss_fn = lambda w, b: (b["y"] - b["x"] @ w) ** 2 / (2 * sigma**2)
    data = {"x": jnp.asarray(X), "y": jnp.asarray(y)}
    Sig = classical.laplace_covariance(loss_fn, jnp.asarray(m), data, nbeta=nbeta, gamma=gamma)
    np.testing.assert_allclose(Sig, S, rtol=1e-10)
    # Plug-in Cov[ℓ_i, ℓ_j] = ∇ℓ_iᵀΣ∇ℓ_j = r_i r_j s_ij / σ⁴: the leading term of the exact
    # r_i r_j s_ij/σ⁴ + s_ij²/(2σ⁴) (theory.md §4.2).
    r, s = y - X @ m, X @ S @ X.T
    K = classical.laplace_loss_covariance(loss_fn, jnp.asarray(m), data, nbeta=nbeta, gamma=gamma)
    np.testing.assert_allclose(K, np.outer(r, r) * s / sigma**4, rtol=1e-9, atol=1e-12)
    Kq = classical.laplace_loss_covariance(loss_fn, jnp.asarray(m), data, nbeta=nbeta, gamma=gamma,
                                           query_data={"x": data["x"][:5], "y": data["y"][:5]})
    np.testing.assert_allclose(Kq, np.asarray(K)[:, :5], rtol=1e-12)


# ---------------------------------------------------------------- LOO on logistic regression
def test_leave_one_out_logistic_matches_influence_prediction():
    rng = np.random.default_rng(11)
    n, l2 = 400, 1e-3
    x = np.c_[rng.normal(size=(n, 3)), np.ones(n)]
    y = (rng.random(n) < jax.nn.sigmoid(x @ np.array([1.5, -1.0, 0.5, 0.2]))).astype(float)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    train = lambda d, w: classical.fit_logistic(d["x"], d["y"], w, l2)
    res = classical.leave_one_out(train, data, np.arange(n), batch_size=100)
    w = res.params_full
    g = jax.grad(lambda w: jnp.mean(classical.logistic_loss(w, data)) + 0.5 * l2 * w @ w)(w)
    assert np.abs(g).max() < 1e-12        # Newton converged to the optimum
    # Removing z: Δw ≈ -IF_z / n with damping l2 (γ/nβ = l2 at nβ = 1).
    pred = -classical.damped_influence(classical.logistic_loss, w, data, lambda v: v,
                                       nbeta=1.0, gamma=l2, cg_tol=1e-12).T / n   # [n, d]
    corr = np.corrcoef(np.asarray(res.delta).ravel(), np.asarray(pred).ravel())[0, 1]
    print(f"LOO vs IF correlation (n={n}): {corr:.6f}")
    assert corr >= 0.99
    # Exact check of the LOO bookkeeping: refit without sample 7 directly.
    w7 = classical.fit_logistic(data["x"][np.arange(n) != 7], data["y"][np.arange(n) != 7],
                                l2=l2 * n / (n - 1))       # same objective, rescaled by n/(n-1)
    np.testing.assert_allclose(res.params_loo[7], w7, rtol=1e-9, atol=1e-12)


def test_bad_inputs_raise():
    loss_fn, params, data, queries = mlp_problem(n=10)
    with pytest.raises(ValueError, match="nbeta"):
        classical.damped_influence(loss_fn, params, data, queries, nbeta=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        classical.damped_influence(loss_fn, params, data, nbeta=1.0)
    with pytest.raises(ValueError, match="weights"):
        classical.damped_influence(loss_fn, params, data, queries, nbeta=1.0, weights=np.ones(3))
    with pytest.raises(ValueError, match="indices"):
        classical.leave_one_out(lambda d, w: w, data, [10])
