"""Structural susceptibilities on a planted toy: a linear model whose parameter blocks each serve one
data pattern (disjoint input features). The restricted and full posteriors are Gaussian, so χ^C_xy has
a closed form (covariances of quadratic forms) with the exact stationary law of full-batch SGLD."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import susc
from susc.reference.exact import quadratic_posterior
from susc.estimators.structural import pca, stack_masks, standardize, structural_from_results, structural_susceptibilities

K, G, M, MP, SIGMA = 3, 2, 30, 8, 1.0       # patterns, features per pattern, train/probe rows per pattern
EPS, GAMMA = 0.01, 1.0
K_SE = 4.0


def _loss(w, b):
    return (b["y"] - b["x"] @ w) ** 2 / (2 * SIGMA ** 2)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)

    def patterns(count):
        X, lab = np.zeros((K * count, K * G)), np.repeat(np.arange(K), count)
        for k in range(K):
            X[lab == k, k * G:(k + 1) * G] = rng.normal(size=(count, G))
        return X, lab

    w_true = rng.normal(size=K * G)
    X, _ = patterns(M)
    y = X @ w_true + SIGMA * rng.normal(size=len(X))
    Xp, labp = patterns(MP)
    yp = Xp @ w_true + SIGMA * rng.normal(size=len(Xp))
    n = len(X)
    w0 = np.linalg.lstsq(X, y, rcond=None)[0]
    masks = [np.repeat(np.eye(K)[k], G).astype(np.float32) for k in range(K)]
    nbeta = float(n)
    # Exact oracle. u = w − w*; φ_C = uᵀAu (the linear term vanishes at the OLS w*),
    # ΔL_xy = c + bᵀu + uᵀ(B − A)u; restricted chain k: u ~ N(0, S_k) (S masked to block k), full: N(0, S).
    _, S = quadratic_posterior(X.T @ X / (n * SIGMA ** 2), t=nbeta, w0=w0, gamma=GAMMA).sgld_stationary(EPS)
    A = X.T @ X / (2 * n * SIGMA ** 2)
    L0 = np.mean((y - X @ w0) ** 2) / (2 * SIGMA ** 2)
    rp = yp - Xp @ w0
    exact = {c: np.zeros((K, len(Xp))) for c in ("full", "restricted")}
    for k in range(K):
        Sk = S * np.outer(masks[k], masks[k])
        for t in range(len(Xp)):
            B = np.outer(Xp[t], Xp[t]) / (2 * SIGMA ** 2)
            c = rp[t] ** 2 / (2 * SIGMA ** 2) - L0
            cov = 2 * np.trace(A @ Sk @ (B - A) @ Sk)            # Cov[uᵀAu, uᵀMu] = 2 tr(ASMS)
            e_phi = np.trace(A @ Sk)
            exact["restricted"][k, t] = -cov
            exact["full"][k, t] = -(cov + e_phi * (c + np.trace((B - A) @ Sk)) - e_phi * (c + np.trace((B - A) @ S)))
    data = {"x": jnp.asarray(X, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    probe = {"x": jnp.asarray(Xp, jnp.float32), "y": jnp.asarray(yp, jnp.float32)}
    return dict(data=data, probe=probe, params=jnp.asarray(w0, jnp.float32), masks=masks, labp=labp,
                nbeta=nbeta, exact=exact)


def _kw(t, **over):
    kw = dict(sampler=susc.sgld(EPS), nbeta=t["nbeta"], gamma=GAMMA, num_chains=4, num_draws=1000,
              steps_per_draw=10, num_burnin=200, num_batches=8)
    kw.update(over)
    return kw


@pytest.fixture(scope="module")
def run(toy):
    return structural_susceptibilities(jax.random.key(0), _loss, toy["params"], toy["data"],
                                       lambda w: _loss(w, toy["probe"]), toy["masks"], names=["a", "b", "c"],
                                       **_kw(toy))


def _by_pattern(Z, labp):
    """[pattern j, component k] mean of the standardized [tokens, components] matrix."""
    return np.array([[Z[labp == j, k].mean() for k in range(K)] for j in range(K)])


@pytest.mark.slow
def test_matches_closed_form(toy, run):
    assert run.value.shape == (K, K * MP) and run.names == ("a", "b", "c")
    z = run.z(toy["exact"]["full"])
    assert np.abs(z).max() <= K_SE, np.abs(z).max()
    restricted = structural_from_results(run.restricted, centering="restricted")
    assert np.abs(restricted.z(toy["exact"]["restricted"])).max() <= K_SE
    assert np.median(run.se / np.abs(run.value)) < 0.25          # power


@pytest.mark.slow
def test_planted_components_express_their_own_pattern(toy, run):
    """After standardization each component is most negative (expresses) on its own pattern, and that is
    its largest-magnitude entry — in the exact oracle and in the estimate."""
    for Z in (standardize(toy["exact"]["full"].T), run.standardized()):
        P = _by_pattern(Z, toy["labp"])
        for k in range(K):
            assert P[k, k] < 0
            assert np.argmax(np.abs(P[:, k])) == k, P


@pytest.mark.slow
def test_one_vectorized_run_equals_separate_runs(toy):
    """K restricted chains in one program == K separate masked runs with the same key; streaming == stored."""
    kw = _kw(toy, num_chains=2, num_draws=200, num_burnin=20)
    probe_fn = lambda w: _loss(w, toy["probe"])
    vec = structural_susceptibilities(jax.random.key(1), _loss, toy["params"], toy["data"], probe_fn,
                                      stack_masks(toy["masks"]), **kw)
    sep = [susc.sample(jax.random.key(1), _loss, toy["params"], toy["data"], mask=m,
                       observables={"probe": probe_fn}, **kw) for m in toy["masks"]]
    got = structural_from_results(sep, vec.full, num_batches=kw["num_batches"])
    scale = np.abs(vec.value).max()
    # identical float32 draws up to vmap-vs-single rounding (~1e-6 relative), amplified by centring
    np.testing.assert_allclose(got.value, vec.value, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(got.se, vec.se, rtol=0, atol=1e-4 * np.abs(vec.se).max())
    stream = structural_susceptibilities(jax.random.key(1), _loss, toy["params"], toy["data"], probe_fn,
                                         toy["masks"], store_draws=False, **kw)
    assert stream.restricted.observables == {}
    np.testing.assert_allclose(stream.value, vec.value, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(stream.se, vec.se, rtol=0, atol=1e-3 * np.abs(vec.se).max())


def test_standardize_removes_component_scale_and_centres_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    Z = standardize(X)
    # a positive per-component factor (Z_full/Z_C) and offset leave it unchanged
    np.testing.assert_allclose(standardize(X * np.array([1e-3, 2.0, 7.0, 0.5, 1e4]) + np.arange(5)), Z, atol=1e-12)
    np.testing.assert_allclose(Z.sum(1), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="zero variance"):
        standardize(np.ones((4, 2)))


def test_pca_matches_eigendecomposition():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 4)) @ rng.normal(size=(4, 4))
    p = pca(X, 4)
    Xc = X - X.mean(0)
    evals, evecs = np.linalg.eigh(Xc.T @ Xc)
    np.testing.assert_allclose(p.explained_variance_ratio, evals[::-1] / evals.sum(), rtol=1e-10)
    np.testing.assert_allclose(np.abs(p.components @ evecs[:, ::-1]), np.eye(4), atol=1e-8)
    np.testing.assert_allclose(p.scores @ p.components, Xc, atol=1e-10)
    assert np.all(p.components[np.arange(4), np.abs(p.components).argmax(1)] > 0)
    with pytest.raises(ValueError, match="k must be"):
        pca(X, 5)


def test_bad_inputs(toy):
    with pytest.raises(ValueError, match="structure"):
        stack_masks([{"a": np.ones(2)}, {"b": np.ones(2)}])
    with pytest.raises(ValueError, match="centering"):
        structural_susceptibilities(jax.random.key(0), _loss, toy["params"], toy["data"], lambda w: w,
                                    toy["masks"], centering="both", **_kw(toy))
    with pytest.raises(ValueError, match="needs the unrestricted run"):
        structural_from_results([], None, centering="full")
