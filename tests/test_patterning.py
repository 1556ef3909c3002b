"""Tests for susc.patterning against exact Gaussian (Bayesian linear regression) closed forms.

Conventions: χ̂_ij = -Cov[φ_i, ℓ_j - L_n] (centred, rows = observables), β = nβ/n,
∂⟨φ⟩/∂ρ_j = -β Cov[φ, ℓ_j]. Posterior: P(ρ) = (β/σ²) Σ ρ_i x_i x_iᵀ + γI, m = P⁻¹((β/σ²) Σ ρ_i y_i x_i + γw*).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from susc.estimators import patterning

SIGMA, NBETA, GAMMA = 0.8, 20.0, 1.0


def problem(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.6 * rng.normal(size=n)
    wstar = 0.1 * rng.normal(size=d)
    C = rng.normal(size=(3, d))                   # k = 3 observables φ_i = c_iᵀw
    return X, y, wstar, C


def posterior(X, y, wstar, rho, beta):
    P = beta / SIGMA**2 * (X.T * rho) @ X + GAMMA * np.eye(X.shape[1])
    S = np.linalg.inv(P)
    return S @ (beta / SIGMA**2 * X.T @ (rho * y) + GAMMA * wstar), S


def exact_chi(X, y, wstar, C, beta):
    """Uncentred -Cov[c_iᵀw, ℓ_j] = (r_j/σ²) c_iᵀΣx_j and the centred χ̂ (theory.md §4.2)."""
    m, S = posterior(X, y, wstar, np.ones(len(y)), beta)
    raw = (C @ S @ X.T) * (y - X @ m) / SIGMA**2
    return raw, raw - raw.mean(axis=1, keepdims=True)


def test_solve_is_min_norm_least_squares():
    rng = np.random.default_rng(1)
    chi, dmu = rng.normal(size=(3, 25)), rng.normal(size=3)
    sol = patterning.solve(chi, dmu, nbeta=NBETA)
    ref = np.linalg.lstsq(chi, dmu, rcond=None)[0]
    np.testing.assert_allclose(NBETA * sol.dq, ref, rtol=1e-12)
    np.testing.assert_allclose(NBETA * sol.dq, np.linalg.pinv(chi) @ dmu, rtol=1e-10)
    assert sol.rank == 3 and sol.residual < 1e-12 * np.linalg.norm(dmu)
    # Any other solution dq + v with v ∈ ker χ has a larger norm.
    v = rng.normal(size=25)
    v -= np.linalg.pinv(chi) @ (chi @ v)
    assert np.linalg.norm(sol.dq + v) > np.linalg.norm(sol.dq)
    # Rank-deficient χ (rank 2) and dμ ∉ im χ: least squares, residual = distance to im χ.
    low = rng.normal(size=(3, 2)) @ rng.normal(size=(2, 25))
    sol = patterning.solve(low, dmu)
    ref, res, rank, _ = np.linalg.lstsq(low, dmu, rcond=None)
    np.testing.assert_allclose(sol.dq, ref, rtol=1e-10)
    assert sol.rank == rank == 2
    u = np.linalg.svd(low)[0][:, 2]                   # normal to im χ
    np.testing.assert_allclose(sol.residual, abs(u @ dmu), rtol=1e-9)


def test_reweighting_patterns_linear_regression_to_first_order():
    X, y, wstar, C = problem()
    n = len(y)
    beta = NBETA / n
    raw, chi_hat = exact_chi(X, y, wstar, C, beta)
    np.testing.assert_allclose(chi_hat.sum(axis=1), 0.0, atol=1e-12)   # 1 ∈ ker χ̂
    dmu = np.array([1.0, -0.5, 0.25]) * np.abs(C @ posterior(X, y, wstar, np.ones(n), beta)[0]).max()
    mu_fn = lambda rho: C @ posterior(X, y, wstar, rho, beta)[0]

    errors = []
    s_max = np.abs(patterning.reweighting(chi_hat, dmu, alpha=1.0).scores).max()
    for alpha in np.array([0.02, 0.01, 0.005]) / s_max:      # max |ρ - 1| = 2%, 1%, 0.5%
        rw = patterning.reweighting(chi_hat, dmu, alpha=alpha, nbeta=NBETA)
        assert abs(rw.weights.sum() - n) < 1e-10 * n and abs(rw.mass_change) < 1e-10 * n
        assert rw.frac_negative == 0.0 and abs(rw.mean_weight - 1) < 1e-12
        np.testing.assert_allclose(rw.predicted_shift, alpha * beta * dmu, rtol=1e-10)   # dμ ∈ im χ̂
        rep = patterning.verify(mu_fn, rw.weights, rw.predicted_shift, names=["a", "b", "c"])
        errors.append(rep["rel_error"])
        assert rep["cosine"] > 0.999 and set(rep["table"]) == {"a", "b", "c"}
    print("relative errors at alpha, alpha/2, alpha/4:", errors)
    assert errors[-1] < 0.01
    for big, small in zip(errors, errors[1:]):            # O(α²) remainder: error ∝ α
        assert 0.4 < small / big < 0.6


def test_predicted_shift_uncentred_is_first_order_for_any_weights():
    """With the uncentred matrix -Cov[φ, ℓ_j], β χ dρ is the derivative even when Σdρ ≠ 0."""
    X, y, wstar, C = problem(seed=2)
    n = len(y)
    beta = NBETA / n
    raw, chi_hat = exact_chi(X, y, wstar, C, beta)
    d_rho = np.random.default_rng(3).normal(size=n)
    eps = 1e-6
    mu = lambda rho: C @ posterior(X, y, wstar, rho, beta)[0]
    fd = (mu(1 + eps * d_rho) - mu(1 - eps * d_rho)) / (2 * eps)
    pred = patterning.predicted_shift(raw, 1 + d_rho, NBETA)
    np.testing.assert_allclose(pred, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())
    # The centred χ̂ agrees only after removing the total mass: project dρ ⟂ 1.
    d_c = d_rho - d_rho.mean()
    np.testing.assert_allclose(patterning.predicted_shift(chi_hat, 1 + d_c, NBETA),
                               patterning.predicted_shift(raw, 1 + d_c, NBETA), rtol=1e-10)


def test_retrain_weighted_reaches_weighted_least_squares():
    X, y, _, _ = problem(n=50, d=3, seed=4)
    rho = np.random.default_rng(5).uniform(0.2, 2.0, size=len(y))
    loss_fn = lambda w, b: 0.5 * (b["y"] - b["x"] @ w) ** 2
    data = {"x": jnp.asarray(X, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    H = (X.T * rho) @ X / rho.sum()
    lr = 1.0 / np.linalg.eigvalsh(H).max()
    w, losses = patterning.retrain_weighted(loss_fn, jnp.zeros(3), data, rho,
                                            optimizer=optax.sgd(lr), steps=300)
    ref = np.linalg.solve((X.T * rho) @ X, X.T @ (rho * y))
    assert losses.shape == (300,) and losses[-1] <= losses[0]
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-5)   # float32, condition number ~ few
    # Scaling ρ by a constant leaves the normalized objective (hence the fit) unchanged.
    w2, _ = patterning.retrain_weighted(loss_fn, jnp.zeros(3), data, 3.0 * rho,
                                        optimizer=optax.sgd(lr), steps=300)
    np.testing.assert_allclose(w2, w, rtol=1e-5, atol=1e-6)


def test_retrain_weighted_minibatch_step_is_unbiased():
    """E over minibatches of one SGD step equals the full-batch step (MC check, |Δ| ≤ 4 SE)."""
    X, y, _, _ = problem(n=64, d=3, seed=6)
    rho = np.random.default_rng(7).uniform(-0.5, 2.0, size=len(y))    # some negative weights
    loss_fn = lambda w, b: 0.5 * (b["y"] - b["x"] @ w) ** 2
    data = {"x": jnp.asarray(X, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    w0, opt = jnp.array([0.3, -0.2, 0.1]), optax.sgd(0.1)
    full, _ = patterning.retrain_weighted(loss_fn, w0, data, rho, optimizer=opt, steps=1)
    keys = jax.random.split(jax.random.key(0), 4000)
    mb = jax.vmap(lambda k: patterning.retrain_weighted(loss_fn, w0, data, rho, optimizer=opt, steps=1,
                                                        batch_size=16, key=k)[0])(keys)
    mb = np.asarray(mb, np.float64)
    se = mb.std(axis=0, ddof=1) / np.sqrt(len(mb))
    assert np.all(np.abs(mb.mean(axis=0) - np.asarray(full)) <= 4 * se), (mb.mean(0), full, se)
    assert np.all(se > 0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="dmu"):
        patterning.solve(np.ones((2, 5)), np.ones(3))
    with pytest.raises(ValueError, match="chi"):
        patterning.reweighting(np.ones(5), np.ones(1), alpha=1.0)
    with pytest.raises(ValueError, match="total weight"):
        patterning.retrain_weighted(lambda w, b: b["y"] * w, jnp.zeros(()), {"y": jnp.ones(3)},
                                    -np.ones(3), optimizer=optax.sgd(0.1), steps=1)


def test_reweighting_max_change_sets_alpha():
    _, chi = exact_chi(*problem(), beta=NBETA / 40)
    dmu = np.array([1.0, -0.5, 0.2])
    for a in (0.25, 1.0):
        rw = patterning.reweighting(chi, dmu, max_change=a, nbeta=NBETA)
        assert np.max(np.abs(rw.weights - 1)) == pytest.approx(a, rel=1e-12)
        same = patterning.reweighting(chi, dmu, alpha=a / np.max(np.abs(rw.scores)), nbeta=NBETA)
        np.testing.assert_allclose(same.weights, rw.weights, rtol=1e-12)
        assert rw.frac_negative == 0.0 and abs(rw.mass_change) < 1e-9
    # the opposite target moves every weight the other way about 1
    up = patterning.reweighting(chi[:1], np.array([1.0]), max_change=0.5).weights
    down = patterning.reweighting(chi[:1], np.array([-1.0]), max_change=0.5).weights
    np.testing.assert_allclose(up - 1, -(down - 1), atol=1e-12)
    with pytest.raises(ValueError, match="exactly one"):
        patterning.reweighting(chi, dmu, alpha=1.0, max_change=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        patterning.reweighting(chi, dmu)
    with pytest.raises(ValueError, match="max_change"):
        patterning.reweighting(chi, dmu, max_change=0.0)


def test_random_reweighting_matches_norm_and_mass():
    rho = 1 + 0.3 * np.sin(np.arange(200.0))
    rho -= rho.mean() - 1
    r = patterning.random_reweighting(jax.random.key(3), rho)
    assert np.linalg.norm(r - 1) == pytest.approx(np.linalg.norm(rho - 1), rel=1e-12)
    assert abs(r.sum() - r.size) < 1e-9 and np.all(r >= 0)
    np.testing.assert_array_equal(r, patterning.random_reweighting(jax.random.key(3), rho))
    assert abs(np.corrcoef(r, rho)[0, 1]) < 4 / np.sqrt(rho.size)   # an independent direction
    with pytest.raises(ValueError, match="negative"):
        patterning.random_reweighting(jax.random.key(3), 1 + 40 * (rho - 1))


def test_random_reweighting_with_shares_preserves_weighted_mass_and_size():
    q = np.array([0.5, 0.2, 0.2, 0.1])
    like = np.array([0.9, 1.3, 1.1, 0.4])          # Σ q (ρ − 1) = 0
    r = patterning.random_reweighting(jax.random.key(5), like, shares=q)
    assert abs(q @ (r - 1)) < 1e-12
    assert np.sum(q * (r - 1) ** 2) == pytest.approx(np.sum(q * (like - 1) ** 2), rel=1e-12)
    with pytest.raises(ValueError, match="shares"):
        patterning.random_reweighting(jax.random.key(5), like, shares=q[:3])
