"""The dyck-patterning experiment: the LLC susceptibility against a closed form, the target weights'
algebra, the string classes, and the tiny profile end to end."""

import jax.numpy as jnp
import numpy as np
import pytest

from susc import experiments
from susc.data import dyck
from susc.experiments.dyck_patterning import (DyckConfig, llc_response, string_classes,
                                              target_weights)


def _exact_llc(x, classes, rho_c, nbeta, gamma):
    """Noise-free linear regression, ℓ_j = ½(x_jᵀ(w − w*))²: the localized posterior of L^ρ_n is
    Gaussian with precision nβH_ρ + γI, H_ρ = (1/n)Σ ρ_j x_j x_jᵀ, so λ = (nβ/2) tr(H_ρ Σ_ρ)."""
    n, d = x.shape
    H = (x * np.asarray(rho_c)[classes][:, None]).T @ x / n
    return 0.5 * nbeta * np.trace(H @ np.linalg.inv(nbeta * H + gamma * np.eye(d)))


@pytest.mark.slow
def test_llc_susceptibility_matches_closed_form():
    rng = np.random.default_rng(0)
    n, d, K = 60, 3, 3
    x = rng.normal(size=(n, d)) * np.array([1.0, 0.5, 0.2])
    classes = np.arange(n) % K
    data = {"x": jnp.asarray(x, jnp.float32)}
    loss_fn = lambda p, b: 0.5 * (b["x"] @ p["w"]) ** 2          # w* = 0, every ℓ_j(w*) = 0
    cfg = DyckConfig(step_size=2e-3, nbeta=20.0, gamma=5.0, num_chains=8, num_draws=4000,
                     num_burnin=500, num_batches=20)
    out = llc_response(cfg, {"w": jnp.zeros(d)}, data, classes, K, loss_fn=loss_fn)
    lam = _exact_llc(x, classes, np.ones(K), cfg.nbeta, cfg.gamma)
    h = 1e-5
    X = [(_exact_llc(x, classes, 1 + h * np.eye(K)[c], cfg.nbeta, cfg.gamma)
          - _exact_llc(x, classes, 1 - h * np.eye(K)[c], cfg.nbeta, cfg.gamma)) / (2 * h)
         for c in range(K)]
    # SGLD's O(ε) bias on this Gaussian is ~ε·(nβλ_max+γ)/4 relative: below 1% here
    assert abs(out["llc"] - lam) < 4 * out["llc_se"] + 0.01 * lam, (out["llc"], lam)
    np.testing.assert_array_less(np.abs(out["X"] - X), 4 * out["X_se"] + 0.01 * np.abs(X))
    assert np.all(np.abs(np.array(X)) > 4 * out["X_se"])   # the check can fail: X is resolved


def test_target_weights_algebra():
    rng = np.random.default_rng(1)
    X, sizes = rng.normal(size=(3, 7)), rng.integers(5, 50, size=7)
    dmu = np.array([-1.0, 0.5, 0.5])
    rho = target_weights(X, sizes, dmu, 0.8)
    assert abs(sizes @ (rho - 1)) < 1e-9 * sizes.sum()          # total mass kept
    assert np.isclose(np.abs(rho - 1).max(), 0.8)
    pred = X @ (rho - 1)                                        # = α dμ: dμ ∈ im(XP)
    np.testing.assert_allclose(pred / pred[0] * dmu[0], dmu, atol=1e-9)
    assert pred[0] < 0


def test_string_classes():
    x = dyck.split(10)["x_train"]
    cls, names = string_classes(x)
    assert len(names) == cls.max() + 1 and np.bincount(cls).sum() == len(x)
    dw = x[dyck.labels(x)[:, 2] == 1]                           # Dyck words: one class
    assert len(set(string_classes(dw)[0])) == 1 and names[cls[np.all(x == dw[0], 1)][0]] == "|s|=0 (…)"


@pytest.mark.slow
def test_tiny_run(tmp_path):
    res = experiments.run("dyck-patterning", "tiny", root=tmp_path, progress=False)
    A, cfg = res.arrays, DyckConfig()
    S, R, T = len(cfg.seeds), 3, 3
    assert A["votes"].shape == (S, 1 + T + cfg.num_random, R)
    assert A["chosen"].shape == (S, T) and A["llc"].shape == (R,)
    np.testing.assert_allclose(np.diag(A["solution_votes"]), 1.0)   # w_a implements rule a
    sizes = A["class_sizes"]
    np.testing.assert_allclose(A["class_weights"] @ sizes, sizes.sum(), rtol=1e-9)
    np.testing.assert_allclose(A["dllc_predicted"], (A["class_weights"] - 1) @ A["llc_susceptibility"].T)
    assert np.all(A["train_accuracy"] == 1.0)                     # every arm fits the training set
    assert A["decay_sweep_found"].shape == (len(cfg.decay_sweep) + 1, S)
    np.testing.assert_array_equal(A["decay_sweep_found"][-1], A["found"][:, 0])
