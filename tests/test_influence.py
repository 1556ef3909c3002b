"""The influence matrix (BIF): blocked computation = `susc.covariance`; SGLD BIF vs the closed form of
Bayesian linear regression; the regular limit (damped classical IF) and leave-one-out retraining on
logistic regression; centred rows sum to zero."""
import dataclasses

import jax
import numpy as np
import pytest

import susc
from susc.reference.classical import damped_influence, fit_logistic, leave_one_out
from susc.reference.exact import linreg_posterior, quadratic_posterior
from susc.estimators.influence import bif, influence_matrix
from susc.models import linear_regression, logistic_regression

K_SE = 4.0


def test_blocked_matches_covariance_and_shapes():
    """Deterministic: every block/shape path equals the dense pooled covariance to float64 rounding."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 50, 7)), rng.normal(size=(3, 50, 5))
    L = rng.normal(size=(3, 50))
    for bs in (1, 3, 256):
        e = influence_matrix(a, b, block_size=bs, num_batches=4)
        ref = susc.covariance(a, b, num_batches=4)
        np.testing.assert_allclose(e.value, -ref.value, rtol=0, atol=1e-14)
        np.testing.assert_allclose(e.se, ref.se, rtol=0, atol=1e-14)
    e = influence_matrix(a, centered_by=L, block_size=2)
    np.testing.assert_allclose(e.value, -susc.covariance(a - L[..., None], a).value, atol=1e-14)
    corr = influence_matrix(a, b, correlation=True, block_size=4, se=False)
    ref = np.corrcoef(a.reshape(150, 7).T, b.reshape(150, 5).T)[:7, 7:]
    np.testing.assert_allclose(corr.value, -ref, atol=1e-13)
    assert np.all(np.isnan(corr.se))
    # per token: [C, D, N, T] x [C, D, N', T'] -> [N, N', T, T']; token_mean -> [N, N']
    a4, b4 = rng.normal(size=(2, 40, 4, 3)), rng.normal(size=(2, 40, 5, 2))
    e = influence_matrix(a4, b4, block_size=5)
    assert e.value.shape == (4, 5, 3, 2)
    np.testing.assert_allclose(e.value, -susc.covariance(a4, b4).value.transpose(0, 2, 1, 3), atol=1e-14)
    e = influence_matrix(a4, b4, token_mean=True)
    np.testing.assert_allclose(e.value, -susc.covariance(a4.mean(3), b4.mean(3)).value, atol=1e-14)


@pytest.mark.parametrize("kw, match", [
    (dict(losses_a=np.zeros((2, 5))), "losses_a"),
    (dict(losses_a=np.zeros((2, 5, 3)), losses_b=np.zeros((2, 4, 3))), "same draws"),
    (dict(losses_a=np.zeros((2, 5, 3)), centered_by=np.zeros(5)), "centered_by"),
    (dict(losses_a=np.zeros((2, 5, 3)), block_size=0), "block_size"),
])
def test_bad_inputs(kw, match):
    with pytest.raises(ValueError, match=match):
        influence_matrix(**kw)


@pytest.mark.slow
def test_bif_linear_regression_matches_closed_form():
    """BIF(i, j) = −Cov[ℓ_i, ℓ_j] = −(r_i r_j s_ij + s_ij²/2)/σ⁴ with s_ij = x_iᵀ S x_j, S the exact
    stationary covariance of full-batch SGLD (no step-size bias in the oracle)."""
    n, d, nbeta, gamma, eps = 12, 3, 12.0, 1.0, 0.02
    toy = linear_regression(jax.random.key(1), n, d)
    X, y, w0 = toy.info["X"], toy.info["y"], np.asarray(toy.params, np.float64)
    post = linreg_posterior(X, y, nbeta=nbeta, gamma=gamma, center=w0)
    _, S = quadratic_posterior(X.T @ X / n, t=nbeta, w0=w0, gamma=gamma).sgld_stationary(eps)
    exact = dataclasses.replace(post, cov=S)
    r = bif(jax.random.key(0), toy.loss_fn, toy.params, toy.data, sampler=susc.sgld(eps), nbeta=nbeta,
            gamma=gamma, num_chains=8, num_draws=2000, steps_per_draw=10, num_burnin=100, num_batches=16)
    assert r.value.shape == (n, n) and r.result.observables["train_losses"].shape == (8, 2000, n)
    iu = np.triu_indices(n)
    z = r.z(exact.bif())[iu]
    assert np.abs(z).max() <= K_SE, np.abs(z).max()
    assert np.median(r.se / np.abs(r.value)) < 0.05          # the check has power
    # the same draws resolve the step-size bias of the continuous-time Σ (≈ 6% here): mean z² ≫ 1
    assert np.mean(r.z(post.bif())[iu] ** 2) > 4


def test_centered_rows_sum_to_zero():
    """bif(centered=True): Σ_i ρ_i χ_i(ℓ_j) = 0 to float64 rounding (Σρ = n), also with minibatches."""
    n = 10
    toy = linear_regression(jax.random.key(4), n, 2)
    rho = np.linspace(0.5, 1.5, n)                            # Σρ = n
    r = bif(jax.random.key(0), toy.loss_fn, toy.params, toy.data, sampler=susc.sgld(0.01), nbeta=10.0,
            gamma=1.0, num_chains=2, num_draws=60, batch_size=4, weights=rho, centered=True)
    assert np.abs(rho @ r.value).max() <= 1e-12 * n * np.abs(r.value).max()


@pytest.fixture(scope="module")
def logistic():
    n, d, nq, nbeta, gamma = 200, 3, 20, 1000.0, 1.0
    toy = logistic_regression(jax.random.key(3), n + nq, d)
    tr = {k: v[:n] for k, v in toy.data.items()}
    q = {k: v[n:] for k, v in toy.data.items()}
    w = fit_logistic(tr["x"], tr["y"], num_iters=50)
    r = bif(jax.random.key(0), toy.loss_fn, w, tr, q, sampler=susc.sgld(0.2 / nbeta), nbeta=nbeta, gamma=gamma,
            num_chains=4, num_draws=1000, steps_per_draw=20, num_burnin=200)
    return dict(loss_fn=toy.loss_fn, w=w, tr=tr, q=q, n=n, nbeta=nbeta, gamma=gamma, bif=r)


@pytest.mark.slow
def test_regular_limit_matches_damped_influence(logistic):
    """nβ·BIF(i, q) → IF_i(ℓ_q) = −∇ℓ_qᵀ(H + (γ/nβ)I)⁻¹∇ℓ_i as nβ → ∞ (measured corr 0.997 at nβ = 1000)."""
    L = logistic
    IF = np.asarray(damped_influence(L["loss_fn"], L["w"], L["tr"], queries=lambda p: L["loss_fn"](p, L["q"]),
                                     nbeta=L["nbeta"], gamma=L["gamma"]))          # [n_query, n]
    pred = L["nbeta"] * L["bif"].value.T
    corr = np.corrcoef(pred.ravel(), IF.ravel())[0, 1]
    print(f"corr(nβ·BIF, damped IF) = {corr:.4f}")
    assert corr >= 0.99


@pytest.mark.slow
def test_bif_predicts_leave_one_out(logistic):
    """Removing sample i (dρ_i = −1) moves ℓ_q by ≈ −∂⟨ℓ_q⟩/∂ρ_i = −β·BIF(i, q) (measured corr 0.996)."""
    L = logistic
    loo = leave_one_out(lambda dd, ww: fit_logistic(dd["x"], dd["y"], ww, num_iters=50), L["tr"], np.arange(L["n"]),
                        query_fn=lambda p: L["loss_fn"](p, L["q"]))
    pred = -(L["nbeta"] / L["n"]) * L["bif"].value
    corr = np.corrcoef(pred.ravel(), np.asarray(loo.delta).ravel())[0, 1]
    print(f"corr(−β·BIF, LOO retraining) = {corr:.4f}")
    assert corr >= 0.98
