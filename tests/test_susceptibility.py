"""Susceptibility estimators vs exact oracles: Bayesian linear regression (closed-form Gaussian posterior
and the exact stationary law of full-batch SGLD), finite differences of the exact posterior mean
(FDT), sampled finite differences, the 1-D anharmonic potential (quadrature) and patterning."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import susc
from susc.reference.exact import anharmonic_limits, anharmonic_moments, anharmonic_potential, linreg_posterior, \
    quadratic_posterior
from susc.models import linear_regression
from susc.estimators.patterning import reweighting
from susc.estimators.susceptibility import jacobian, mixture_susceptibility, per_sample_susceptibility, \
    reweighting_derivative, susceptibility, susceptibility_from_result

N, D, NBETA, GAMMA, EPS = 12, 3, 12.0, 1.0, 0.005
C_OBS = np.array([[1.0, 0.0, 0.0], [0.5, -1.0, 0.5]])   # φ = C w, k = 2 linear observables
NB = 16
K_SE = 4.0                                                  # |z| ≤ 4


@pytest.fixture(scope="module")
def linreg():
    toy = linear_regression(jax.random.key(1), N, D)
    X, y = toy.info["X"], toy.info["y"]
    w0 = np.asarray(toy.params, np.float64)
    post = linreg_posterior(X, y, nbeta=NBETA, gamma=GAMMA, center=w0)
    # Full-batch SGLD on a quadratic is an AR(1) process: its stationary law N(m, S) is exact, so the
    # oracle carries no step-size bias (S = Σ(I − εP/4)⁻¹; here ~1.5% away from Σ).
    _, S = quadratic_posterior(X.T @ X / N, t=NBETA, w0=w0, gamma=GAMMA).sgld_stationary(EPS)
    Cj = jnp.asarray(C_OBS, jnp.float32)
    obs = {"phi": lambda w: Cj @ w, "losses": lambda w: toy.loss_fn(w, toy.data)}
    kw = dict(sampler=susc.sgld(EPS), nbeta=NBETA, gamma=GAMMA, num_chains=8, num_draws=2000,
              steps_per_draw=20, num_burnin=400, num_batches=NB, observables=obs)
    res = susc.sample(jax.random.key(0), toy.loss_fn, toy.params, toy.data, **kw)
    return dict(toy=toy, post=post, sgld=dataclasses.replace(post, cov=S), res=res, kw=kw)


@pytest.mark.slow
def test_linear_observable_covariances_match_closed_form(linreg):
    r, ex = linreg["res"], linreg["sgld"]
    phi, ls = r.observables["phi"], r.observables["losses"]
    cov = susceptibility(phi, ls, num_batches=NB)                  # = −Cov[cᵀw, ℓ_j]
    z = cov.z(-ex.linear_loss_cov(C_OBS))
    assert np.abs(z).max() <= K_SE, z
    chi = per_sample_susceptibility(phi, ls, r.loss, num_batches=NB)
    assert np.abs(chi.z(ex.chi_linear(C_OBS))).max() <= K_SE
    rd = reweighting_derivative(phi, ls, nbeta=NBETA, n=N, num_batches=NB)
    assert np.abs(rd.z(ex.dmean_drho(C_OBS))).max() <= K_SE
    # power: the SE resolves the values to a few percent
    assert np.median(rd.se / np.abs(rd.value)) < 0.05
    np.testing.assert_allclose(jacobian(chi, NBETA).value, NBETA * chi.value, rtol=1e-12)


def test_fdt_exact_gaussian():
    """FD of the closed-form mean under reweighting and under the mixture path = −β Cov and −Cov
    (closed forms, to FD precision); the estimators on exact i.i.d. posterior draws agree within k·SE."""
    toy = linear_regression(jax.random.key(2), N, D)
    X, y = toy.info["X"], toy.info["y"]
    post = linreg_posterior(X, y, nbeta=NBETA, gamma=GAMMA)
    beta, h = NBETA / N, 1e-5
    fd_rho = np.stack([(post.with_weights(1 + h * e).mean - post.with_weights(1 - h * e).mean) / (2 * h)
                       for e in np.eye(N)], 1)                                    # [d, n]
    fd_mix = np.stack([(post.with_weights((1 - h) + N * h * e).mean
                        - post.with_weights((1 + h) - N * h * e).mean) / (2 * h) for e in np.eye(N)], 1)
    scale_ = np.abs(fd_rho).max()
    np.testing.assert_allclose(C_OBS @ fd_rho, -beta * post.linear_loss_cov(C_OBS), atol=1e-7 * scale_)
    np.testing.assert_allclose(C_OBS @ fd_mix / NBETA, post.chi_linear(C_OBS), atol=1e-7 * scale_)

    rng = np.random.default_rng(0)
    w = post.sample(rng, 8 * 4000).reshape(8, 4000, D)                         # i.i.d. exact draws
    phi, ls = w @ C_OBS.T, post.per_sample_loss(w)
    rd = reweighting_derivative(phi, ls, nbeta=NBETA, n=N)
    assert np.abs(rd.z(C_OBS @ fd_rho)).max() <= K_SE
    chi = per_sample_susceptibility(phi, ls, ls.mean(-1))
    assert np.abs(chi.z(C_OBS @ fd_mix / NBETA)).max() <= K_SE
    # mixture toward the probe q′ = uniform on the first 3 samples: χ = mean of their χ_z
    mix = mixture_susceptibility(phi, ls[..., :3].mean(-1), ls.mean(-1))
    assert np.abs(mix.z(post.chi_linear(C_OBS)[:, :3].mean(1))).max() <= K_SE


@pytest.mark.slow
def test_fdt_sampled_reweighting(linreg):
    """(⟨φ⟩_{ρ+δe_j} − ⟨φ⟩_{ρ−δe_j})/2δ from two SGLD runs (common random numbers) = −β Cov[φ, ℓ_j]."""
    toy, post, r, kw = linreg["toy"], linreg["post"], linreg["res"], linreg["kw"]
    j = int(np.argmax(np.abs(post.dmean_drho(C_OBS)).sum(0)))
    delta = 0.15          # central-difference truncation ≈ 0.25% of the derivative, ≪ SE here
    runs = [susc.sample(jax.random.key(0), toy.loss_fn, toy.params, toy.data,
                        weights=jnp.asarray(1 + s * delta * np.eye(N)[j], jnp.float32), **kw) for s in (1, -1)]
    diff = (runs[0].observables["phi"].astype(np.float64) - runs[1].observables["phi"]) / (2 * delta)
    fd = susc.mean_estimate(diff, num_batches=NB)
    rd = reweighting_derivative(r.observables["phi"], r.observables["losses"], nbeta=NBETA, n=N, num_batches=NB)
    z = (fd.value - rd.value[:, j]) / np.hypot(fd.se, rd.se[:, j])
    assert np.abs(z).max() <= K_SE, z
    assert np.all(np.abs(rd.value[:, j]) > 10 * rd.se[:, j])      # a real signal, not noise


@pytest.mark.slow
def test_patterning_with_sampled_chi(linreg):
    """ρ = 1 + α χ̂†dμ (χ̂ sampled) shifts the exact posterior mean by αβ dμ to first order (within MC error)."""
    post, r = linreg["post"], linreg["res"]
    phi, ls = r.observables["phi"], r.observables["losses"]
    chi = per_sample_susceptibility(phi, ls, r.loss, num_batches=NB)
    dmu, alpha, beta = np.array([1.0, -0.5]), 0.05, NBETA / N
    rw = reweighting(chi.value, dmu, alpha=alpha, nbeta=NBETA)
    s = rw.scores
    np.testing.assert_allclose(rw.predicted_shift, alpha * beta * dmu, rtol=1e-8)
    # symmetric difference of the exact mean cancels the second order in α
    realized = C_OBS @ (post.with_weights(1 + alpha * s).mean - post.with_weights(1 - alpha * s).mean) / 2
    # MC error of χ̂ s: the SE of −Cov[φ, Σ_j s_j(ℓ_j − L_n)] by batch means
    err = susceptibility(phi, (ls - r.loss[..., None]) @ s, num_batches=NB)
    z = (realized / (alpha * beta) - dmu) / err.se
    assert np.abs(z).max() <= K_SE, z
    assert np.all(err.se < 0.05 * np.abs(dmu))


def test_per_sample_rows_sum_to_zero(linreg):
    r = linreg["res"]
    phi, ls = r.observables["phi"], r.observables["losses"]
    ideal = per_sample_susceptibility(phi, ls, ls.astype(np.float64).mean(-1)).value
    scale_ = np.abs(ideal).max()
    np.testing.assert_allclose(ideal.sum(1), 0.0, atol=1e-12 * N * scale_)       # float64 rounding
    # the runner's float32 L_n at draws: zero to float32 precision of the loss values
    got = per_sample_susceptibility(phi, ls, r.loss).value.sum(1)
    tol = N * 1e-6 * np.abs(ls).max() * phi.std((0, 1))
    assert np.all(np.abs(got) <= tol), (got, tol)


@pytest.mark.slow
def test_anharmonic_cross_susceptibility():
    """t²Cov[x², x] = −t²χ(x²; ΔL = x) by SGLD vs the finite-t quadrature value, and the sampled
    FD ∂_h⟨x²⟩ under perturbation=(±h, x) vs t·χ."""
    lam = 2.0
    alpha, g4, t = 0.5 * lam ** 1.5, lam ** 2, 10.0
    V = anharmonic_potential(lam, alpha, g4)
    loss, data = susc.potential_loss(lambda w: V(w[0]))
    obs = {"x2": lambda w: w[0] ** 2, "x": lambda w: w[0]}
    kw = dict(sampler=susc.sgld(0.005), nbeta=t, gamma=0.0, num_chains=8, num_draws=4000, steps_per_draw=20,
              num_burnin=200, observables=obs, num_batches=NB)
    r = susc.sample(jax.random.key(0), loss, jnp.zeros(1), data, **kw)
    chi = susceptibility(r.observables["x2"], r.observables["x"], num_batches=NB)
    ref = anharmonic_moments(t, lam, alpha, g4)["t2_cov_x2_x"]
    z = (-t ** 2 * chi.value - ref) / (t ** 2 * chi.se)
    assert abs(z) <= K_SE, (-t ** 2 * chi.value, ref, t ** 2 * chi.se)
    assert abs(chi.value) > 5 * chi.se
    h = 0.05
    kw.update(num_draws=2000)
    runs = [susc.sample(jax.random.key(0), loss, jnp.zeros(1), data, perturbation=(s * h, lambda w: w[0]), **kw)
            for s in (1, -1)]
    fd = susc.mean_estimate((runs[0].observables["x2"].astype(np.float64) - runs[1].observables["x2"]) / (2 * h),
                            num_batches=NB)
    assert abs(fd.value - t * chi.value) <= K_SE * np.hypot(fd.se, t * chi.se)


def test_anharmonic_quadrature_approaches_primer_limit():
    """t²Cov[x², x] → −2α/λ³ (primer eq. 4.10) with an O(1/t) correction."""
    lam = 2.0
    alpha, g4 = 0.5 * lam ** 1.5, lam ** 2
    limit = anharmonic_limits(lam, alpha)["t2_cov_x2_x"]
    ts = np.array([10.0, 100.0, 1000.0, 10000.0])
    gap = np.array([anharmonic_moments(t, lam, alpha, g4)["t2_cov_x2_x"] - limit for t in ts])
    assert np.all(np.diff(np.abs(gap)) < 0)
    tg = ts * gap                       # O(1/t): t·gap settles to a constant
    assert abs(tg[-1] - tg[-2]) < 0.02 * abs(tg[-1])


def test_from_result_streaming_equals_stored():
    loss, data = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2) + 0.3 * w[0] ** 3 + 0.1 * jnp.sum(w ** 4))
    obs = {"phi": lambda w: w ** 2, "ls": lambda w: jnp.stack([w[0], w[1] + w[0] ** 2, jnp.sum(w ** 2)])}
    kw = dict(sampler=susc.sgld(0.01), nbeta=5.0, gamma=1.0, num_chains=3, num_draws=400, observables=obs,
              accumulate=[("phi", "ls"), ("phi", "loss")])
    stored = susc.sample(jax.random.key(3), loss, jnp.zeros(2), data, **kw)
    stream = susc.sample(jax.random.key(3), loss, jnp.zeros(2), data, store_draws=False, **kw)
    for centered in (False, True):
        a = susceptibility_from_result(stored, "phi", "ls", centered=centered)
        b = susceptibility_from_result(stream, "phi", "ls", centered=centered)
        ref = np.abs(a.value).max()
        # float32 streaming accumulators vs float64 from stored float32 draws
        np.testing.assert_allclose(b.value, a.value, atol=1e-4 * ref)
        np.testing.assert_allclose(b.se, a.se, atol=1e-3 * np.abs(a.se).max())


@pytest.mark.parametrize("call, match", [
    (lambda: susceptibility(np.zeros(5), np.zeros((2, 5))), "phi"),
    (lambda: susceptibility(np.zeros((2, 5)), np.zeros((3, 5))), "same run"),
    (lambda: per_sample_susceptibility(np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 5))), "per_sample_losses"),
    (lambda: per_sample_susceptibility(np.zeros((2, 5)), np.zeros((2, 5, 3)), np.zeros((2, 4))), "loss"),
    (lambda: reweighting_derivative(np.zeros((2, 5)), np.zeros((2, 5, 3)), nbeta=0.0, n=3), "nbeta"),
    (lambda: jacobian(np.ones(2), -1.0), "nbeta"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
