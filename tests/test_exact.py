"""Exact references (`susc.exact`) and the NUTS reference (`susc.nuts`) against independent oracles:
Monte Carlo from the exact Gaussian (|est − truth| ≤ 4·SE), central finite differences (tolerance
from the truncation error seen between two step sizes), closed forms vs quadrature (float64
precision), and direct simulation of the SGLD recursion."""
import dataclasses

import numpy as np
import pytest

from susc.reference import exact as E

K = 4.0  # Monte-Carlo tolerance in standard errors


def _linreg(nbeta=3.0, gamma=0.5, weights="random", n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
    rho = rng.uniform(0.5, 1.5, size=n) if weights == "random" else None
    return E.linreg_posterior(X, y, nbeta=nbeta, sigma=0.7, gamma=gamma, center=rng.normal(size=d), weights=rho)


def _assert_mc(est, se, truth, what):
    z = np.abs(est - truth) / se
    assert np.all(z <= K), f"{what}: max |est − truth|/SE = {z.max():.2f} > {K}"


def _fd(f, x0, delta):
    return (f(x0 + delta) - f(x0 - delta)) / (2 * delta)


def _assert_fd(f, exact, delta=1e-3, floor=1e-9):
    """Central differences at δ and 2δ: their gap (≈ 3× the O(δ²) error of the δ one) bounds the error."""
    d1, d2 = _fd(f, 0.0, delta), _fd(f, 0.0, 2 * delta)
    tol = np.abs(d1 - d2) + floor * (1 + np.abs(exact))
    assert np.all(np.abs(d1 - exact) <= tol), f"max FD error {np.abs(d1 - exact).max():.3g}"


# ---------------------------------------------------------------- Bayesian linear regression

def test_linreg_posterior_solves_the_potential():
    post = _linreg()
    U = lambda w: (post.nbeta * np.mean(post.weights * post.per_sample_loss(w))
                   + 0.5 * post.gamma * np.sum((w - post.center) ** 2))
    eye = np.eye(3)
    grad = np.array([_fd(lambda s: U(post.mean + s * e), 0.0, 1e-4) for e in eye])
    hess = np.array([[(U(post.mean + 1e-3 * (a + b)) - U(post.mean + 1e-3 * (a - b))
                       - U(post.mean - 1e-3 * (a - b)) + U(post.mean - 1e-3 * (a + b))) / 4e-6
                      for b in eye] for a in eye])
    np.testing.assert_allclose(grad, 0.0, atol=1e-8)
    np.testing.assert_allclose(hess, np.linalg.inv(post.cov), rtol=1e-6)


def test_linreg_moments_match_monte_carlo():
    post = _linreg()
    C = np.random.default_rng(1).normal(size=(2, 3))
    N = 400_000
    w = post.sample(np.random.default_rng(2), N)
    ell = post.per_sample_loss(w)                                   # [N, n]
    phi = w @ C.T                                                   # [N, 2]
    _assert_mc(ell.mean(0), ell.std(0) / np.sqrt(N), post.loss_mean(), "E[ℓ]")

    def cov_and_se(a, b):
        prod = (a - a.mean(0))[:, :, None] * (b - b.mean(0))[:, None, :]
        return prod.mean(0), prod.std(0) / np.sqrt(N)

    est, se = cov_and_se(ell, ell)
    _assert_mc(est, se, post.loss_cov(), "Cov[ℓ_i, ℓ_j]")
    _assert_mc(-est, se, post.bif(), "BIF")
    est, se = cov_and_se(phi, ell)
    _assert_mc(est, se, post.linear_loss_cov(C), "Cov[cᵀw, ℓ_j]")
    centred = ell - (ell @ post.weights)[:, None] / post.n          # ℓ_j − L^ρ_n
    est, se = cov_and_se(phi, centred)
    _assert_mc(-est, se, post.chi_linear(C), "χ_j(cᵀw)")
    est, se = cov_and_se(ell, centred)
    _assert_mc(-est, se, post.chi_loss(), "χ_j(ℓ_k)")


@pytest.mark.parametrize("weights", [None, "random"])
def test_linreg_reweighting_derivatives_match_finite_differences(weights):
    post = _linreg(weights=weights)
    C = np.random.default_rng(3).normal(size=(2, 3))
    beta, n = post.beta, post.n
    # FDT identities (algebraic, so float64 precision): ∂⟨φ⟩/∂ρ_j = −β Cov[φ, ℓ_j]
    np.testing.assert_allclose(post.dmean_drho(C), -beta * post.linear_loss_cov(C), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.dloss_mean_drho(), -beta * post.loss_cov(), rtol=1e-10, atol=1e-13)
    for j in range(n):
        e = np.eye(n)[j]
        at = lambda s: post.with_weights(post.weights + s * e)
        _assert_fd(lambda s: at(s).mean, post.dmean_drho()[:, j])
        _assert_fd(lambda s: at(s).loss_mean(), post.dloss_mean_drho()[:, j])
        # mass-preserving path ρ(h) = (1 − h)ρ + n h e_j: (1/nβ) d⟨φ⟩/dh = −Cov[φ, ℓ_j − L^ρ_n]
        path = lambda h: post.with_weights((1 - h) * post.weights + n * h * e)
        _assert_fd(lambda h: C @ path(h).mean / post.nbeta, post.chi_linear(C)[:, j])
        _assert_fd(lambda h: path(h).loss_mean() / post.nbeta, post.chi_loss()[:, j])
    if weights is None:  # centred rows sum to zero (1 ∈ ker χ at ρ = 1)
        np.testing.assert_allclose(post.chi_loss().sum(1), 0.0, atol=1e-12)


def test_linreg_damped_influence_is_the_exact_derivative():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    C = rng.normal(size=(2, 3))
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    grads = -(y - X @ ols)[:, None] * X / 0.7 ** 2                       # ∇ℓ_j at the OLS point
    classical = -C @ np.linalg.solve(X.T @ X / (30 * 0.7 ** 2), grads.T) / 30   # Koh–Liang, upweight 1/n
    for nbeta in (0.3, 30.0):  # γ = 0: exact for any β, and the mean is the OLS solution
        post = E.linreg_posterior(X, y, nbeta=nbeta, sigma=0.7)
        np.testing.assert_allclose(post.mean, ols, rtol=1e-10)
        np.testing.assert_allclose(post.dmean_drho(C), classical, rtol=1e-9)
        np.testing.assert_allclose(post.damped_influence(C), classical, rtol=1e-9)
    post = _linreg(gamma=2.0)
    np.testing.assert_allclose(post.damped_influence(np.eye(3)), post.dmean_drho(), rtol=1e-10)


def test_linreg_rejects_bad_input():
    X = np.ones((2, 3))
    with pytest.raises(ValueError, match="positive definite"):
        E.linreg_posterior(X, np.zeros(2), nbeta=1.0)               # n < d and γ = 0
    with pytest.raises(ValueError, match="y must"):
        E.linreg_posterior(X, np.zeros(3), nbeta=1.0, gamma=1.0)
    with pytest.raises(ValueError, match="weights"):
        E.linreg_posterior(X, np.zeros(2), nbeta=1.0, gamma=1.0, weights=np.ones(3))


# ------------------------------------------------------------------------ quadratic potential

def test_quadratic_llc_closed_form_and_monte_carlo():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(3, 3))
    H = A @ A.T + 0.1 * np.eye(3)
    t, gamma = 20.0, 3.0
    post = E.quadratic_posterior(H, t=t, w0=np.ones(3), gamma=gamma)   # w* = w0
    lam_i = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(post.llc_estimate(), 0.5 * np.sum(t * lam_i / (t * lam_i + gamma)), rtol=1e-12)
    off = E.quadratic_posterior(H, t=t, w0=np.ones(3), gamma=gamma, center=np.zeros(3))
    v = off.potential(rng.multivariate_normal(off.mean, off.cov, size=200_000))
    _assert_mc(v.mean(), v.std() / np.sqrt(v.size), off.mean_potential(), "E[V]")


def test_sgld_stationary_covariance_matches_simulation():
    H = np.array([[2.0, 0.8], [0.8, 1.0]])
    t, gamma, center = 10.0, 1.0, np.array([0.5, -0.5])
    post = E.quadratic_posterior(H, t=t, w0=np.zeros(2), gamma=gamma, center=center)
    P = post.precision
    eps = 1.5 / np.linalg.eigvalsh(P).max()
    m, S = post.sgld_stationary(eps)
    np.testing.assert_allclose(S, np.linalg.inv(P) @ np.linalg.inv(np.eye(2) - eps * P / 4), rtol=1e-10)
    rng = np.random.default_rng(6)
    w = np.tile(post.mean, (40_000, 1))
    for _ in range(400):  # the literal SGLD step, 40k independent chains
        grad = t * (w - post.w0) @ H + gamma * (w - center)
        w = w - 0.5 * eps * grad + np.sqrt(eps) * rng.normal(size=w.shape)
    u = w - w.mean(0)
    prod = u[:, :, None] * u[:, None, :]
    se = prod.std(0) / np.sqrt(len(w))
    _assert_mc(prod.mean(0), se, S, "SGLD stationary covariance")
    _assert_mc(w.mean(0), w.std(0) / np.sqrt(len(w)), m, "SGLD stationary mean")
    assert np.all(np.abs(np.diag(S - post.cov)) > 10 * np.diag(se))  # the bias is resolved
    # 1-D: 1/(p(1 − εp/4)); theory.md §4.1's "LLC(d=10, κ=1) = 5/(1 − hp/2)" with h = ε/2
    one = E.quadratic_posterior(np.eye(10), t=t)
    h = 0.05
    np.testing.assert_allclose(one.sgld_stationary(2 * h)[1], np.eye(10) / (t * (1 - h * t / 2)), rtol=1e-10)
    np.testing.assert_allclose(one.sgld_llc_estimate(2 * h), 5 / (1 - h * t / 2), rtol=1e-10)
    with pytest.raises(ValueError, match="step_size"):
        one.sgld_stationary(4.0 / t)


# ----------------------------------------------------------------------------- quadrature

def test_quadrature_1d_gaussian_to_1e10():
    mu, s2, t, gamma, c = 0.3, 0.04, 7.0, 2.0, -1.0
    p = t / s2 + gamma
    m, v = (t * mu / s2 + gamma * c) / p, 1 / p
    q = E.gibbs_moments_1d(lambda x: (x - mu) ** 2 / (2 * s2), t,
                           {"x": lambda x: x, "x2": lambda x: x ** 2}, gamma=gamma, center=c)
    np.testing.assert_allclose(q["x"], m, rtol=1e-10)
    np.testing.assert_allclose(q["x2"], m ** 2 + v, rtol=1e-10)
    np.testing.assert_allclose(q.cov, [[v, 2 * m * v], [2 * m * v, 2 * v ** 2 + 4 * m ** 2 * v]], rtol=1e-10)
    log_z = 0.5 * np.log(2 * np.pi / p) - 0.5 * (t * mu ** 2 / s2 + gamma * c ** 2 - p * m ** 2)
    np.testing.assert_allclose(q.log_z, log_z, rtol=1e-10)
    with pytest.raises(ValueError, match="improper"):
        E.gibbs_moments_1d(lambda x: 0.0 * x, 1.0, [lambda x: x])   # flat: no normalizable measure


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quadrature_matches_monomial_closed_forms(k):
    for t in (1.0, 1e2, 1e4):
        q = E.gibbs_moments_1d(lambda w: w ** (2 * k), t, [lambda w: w ** 2, lambda w: w ** 4,
                                                          lambda w: t * w ** (2 * k)])
        np.testing.assert_allclose(q.mean[:2], [E.monomial_moment(1, k, t), E.monomial_moment(2, k, t)], rtol=1e-10)
        np.testing.assert_allclose(q.mean[2], E.monomial_llc(k), rtol=1e-10)     # virial: t⟨V⟩ = 1/(2k)
        np.testing.assert_allclose(-q.cov[0, 0], E.monomial_susceptibility(k, t), rtol=1e-9)
    # closed form with c: (ct)^{-j/k} scaling
    np.testing.assert_allclose(E.monomial_moment(1, k, 10.0, c=3.0), E.monomial_moment(1, k, 30.0), rtol=1e-14)


def test_quadrature_2d_gaussian_and_normal_crossing():
    H = np.array([[2.0, 0.7], [0.7, 1.0]])
    post = E.quadratic_posterior(H, t=5.0, w0=[0.2, -0.1], gamma=0.5, center=[1.0, 0.0])
    q = E.gibbs_moments_2d(lambda a, b: post.potential(np.stack([a, b], -1)), 5.0,
                           [lambda a, b: a, lambda a, b: b], gamma=0.5, center=(1.0, 0.0))
    np.testing.assert_allclose(q.mean, post.mean, rtol=1e-10)
    np.testing.assert_allclose(q.cov, post.cov, rtol=1e-10)
    for t, gamma in ((100.0, 1.0), (10.0, 0.3)):
        q = E.gibbs_moments_2d(lambda a, b: a ** 2 * b ** 2, t, [lambda a, b: a ** 2 * b ** 2], gamma=gamma)
        np.testing.assert_allclose(q.mean[0], E.normal_crossing_mean_potential(t, gamma), rtol=1e-8)


def test_anharmonic_limits_converge_like_one_over_t():
    lam = 2.0
    alpha, g4 = 0.5 * lam ** 1.5, lam ** 2
    lim = E.anharmonic_limits(lam, alpha)
    err = {t: {k: v - lim[k] for k, v in E.anharmonic_moments(t, lam, alpha, g4).items()} for t in (1e3, 1e4, 1e5)}
    for key in lim:
        r1, r2 = err[1e4][key] / err[1e3][key], err[1e5][key] / err[1e4][key]
        assert 0.07 < r1 < 0.13 and 0.07 < r2 < 0.13, f"{key}: error ratios {r1:.3f}, {r2:.3f} (expect ~1/10)"
        assert abs(err[1e5][key]) < 1e-3 * abs(lim[key])
    harmonic = E.anharmonic_moments(50.0, lam, 0.0, g4)   # α = 0: odd quantities vanish
    for key in ("2t_mean_x", "t2_cov_x2_x", "t2_kappa3", "t2_cov_V_x"):
        assert abs(harmonic[key]) < 1e-10, key


def test_anharmonic_fluctuation_identity_by_finite_differences():
    lam, alpha, g4, t = 2.0, 1.0, 4.0, 100.0
    V = E.anharmonic_potential(lam, alpha, g4)
    var_h = lambda h: E.gibbs_moments_1d(lambda x: V(x) + h * x, t, [lambda x: x]).cov[0, 0]
    kappa3 = E.anharmonic_moments(t, lam, alpha, g4)["t2_kappa3"] / t ** 2
    _assert_fd(var_h, -t * kappa3, delta=1e-3, floor=1e-8)          # ∂_h Var_h[x] = −t κ₃
    with pytest.raises(ValueError, match="alpha"):
        E.anharmonic_potential(1.0, 2.0, 1.0)


# --------------------------------------------------------------------------------- NUTS

@pytest.mark.slow
def test_nuts_matches_linear_regression_closed_form():
    import jax
    import jax.numpy as jnp
    from susc.reference.nuts import nuts

    rng = np.random.default_rng(7)
    n, d = 20, 2
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5]) + 0.5 * rng.normal(size=n)).astype(np.float32)
    rho = rng.uniform(0.5, 1.5, size=n).astype(np.float32)
    center, c, h = np.array([0.3, 0.2]), np.array([1.0, 2.0]), 0.05
    base = E.linreg_posterior(X, y, nbeta=10.0, gamma=1.0, center=center, weights=rho)
    # the field nβ·h·cᵀw shifts the Gaussian's mean by −nβ h Σ c and leaves Σ alone
    post = dataclasses.replace(base, mean=base.mean - 10.0 * h * base.cov @ c)
    loss_fn = lambda w, b: (b["y"] - b["x"] @ w) ** 2 / 2
    res = nuts(jax.random.key(0), loss_fn, jnp.zeros(d), {"x": X, "y": y}, nbeta=10.0, gamma=1.0,
               center=jnp.asarray(center, jnp.float32), weights=rho, perturbation=(h, lambda w: w @ c),
               observables={"w": lambda w: w}, num_warmup=300, num_draws=1000)
    W = res.observables["w"]
    assert W.shape == (4, 1000, d) and res.loss.shape == (4, 1000)
    assert res.settings["sampler"] == "nuts" and res.extras["diverging"].sum() == 0
    from numpyro.diagnostics import effective_sample_size
    ess = res.extras["ess"]["w"]
    flat = W.reshape(-1, d)
    _assert_mc(flat.mean(0), flat.std(0) / np.sqrt(ess), post.mean, "NUTS mean")
    sq = (W - post.mean) ** 2                                        # E[(w − m)²] = diag Σ
    ess_sq = np.asarray(effective_sample_size(sq))
    _assert_mc(sq.reshape(-1, d).mean(0), sq.reshape(-1, d).std(0) / np.sqrt(ess_sq), np.diag(post.cov), "NUTS var")
    loss = res.loss                                                  # L^ρ_n at the draws
    ess_l = res.extras["ess"]["loss"]
    _assert_mc(loss.mean(), loss.std() / np.sqrt(ess_l), post.loss_mean() @ rho / n, "E[L^ρ_n]")


@pytest.mark.slow
def test_nuts_raw_potential_with_mask_samples_the_conditional():
    import jax
    import jax.numpy as jnp
    from susc.reference.nuts import nuts

    P = np.array([[4.0, 1.5], [1.5, 2.0]], np.float32)               # U = ½ wᵀPw; w[1] frozen at 1
    res = nuts(jax.random.key(1), params={"w": jnp.array([0.0, 1.0])},
               potential_fn=lambda p: 0.5 * p["w"] @ P @ p["w"], mask={"w": jnp.array([1.0, 0.0])},
               observables={"w0": lambda p: p["w"][0], "w1": lambda p: p["w"][1]},
               num_chains=2, num_warmup=200, num_draws=1000)
    assert res.observables["w0"].shape == (2, 1000) and res.settings["num_free"] == 1
    assert np.all(res.observables["w1"] == 1.0)
    w0, ess = res.observables["w0"], res.extras["ess"]["w0"]
    # conditional of w0 | w1 = 1: N(−P01/P00, 1/P00)
    _assert_mc(w0.mean(), w0.std() / np.sqrt(ess), -1.5 / 4.0, "conditional mean")
    sq = (w0 + 1.5 / 4.0) ** 2
    _assert_mc(sq.mean(), sq.std() / np.sqrt(ess), 1 / 4.0, "conditional variance")
    with pytest.raises(ValueError, match="whole potential"):
        nuts(jax.random.key(1), params=jnp.zeros(2), potential_fn=lambda w: w @ w, nbeta=2.0)
