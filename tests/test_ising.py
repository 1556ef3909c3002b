"""The Ising model of book chapter 1 (`susc.models.ising`) against exact enumeration.

Convention: p_β(s) ∝ exp{−βH(s)}, H = −J Σ_⟨ij⟩ s_i s_j − Σ_i h_i s_i, so the field enters with a
minus sign and ∂⟨φ⟩/∂h_j = +β Cov[φ, s_j] (in learning, where ΔL raises the loss, χ = −Cov[φ, ΔL]).
Deterministic checks use float64 enumeration with tolerances from the finite-difference truncation
error; Monte Carlo checks use |estimate − exact| ≤ 4·SE with batch-means standard errors.
"""
import itertools

import jax
import numpy as np
import pytest

import susc
from susc.models import ising


def _bond_loop_energy(s, J, h):
    """H(s) by an explicit loop over the right and down bonds of the periodic lattice."""
    L = s.shape[0]
    e = 0.0
    for i, j in itertools.product(range(L), range(L)):
        e -= J * s[i, j] * (s[i, (j + 1) % L] + s[(i + 1) % L, j])
        e -= h[i, j] * s[i, j]
    return e


@pytest.mark.parametrize("L", [3, 4])
def test_energy_matches_explicit_bond_sum(L):
    rng = np.random.default_rng(0)
    s = rng.choice([-1, 1], size=(5, L, L))
    h = rng.normal(size=(L, L))
    got = ising.energy(s, J=0.7, h=h)
    want = [_bond_loop_energy(x, 0.7, h) for x in s]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # All-up ground state: 2N bonds of energy −J each.
    assert ising.energy(np.ones((L, L)), J=1.0) == -2 * L * L


def test_exact_enumeration_identities():
    N = 9
    ex0 = ising.exact(3, 0.0)
    assert ex0.spins.shape == (2 ** N, 3, 3) and len(np.unique(ex0.spins.reshape(2 ** N, -1), axis=0)) == 2 ** N
    np.testing.assert_allclose(ex0.p, 2.0 ** -N, rtol=1e-12)        # β = 0: uniform
    assert abs(ex0.log_z - N * np.log(2)) < 1e-12
    assert abs(ex0.cov(ising.magnetization) - N) < 1e-10               # independent ±1 spins

    ex = ising.exact(3, 0.4, h=0.1)
    assert abs(ex.p.sum() - 1) < 1e-12
    direct = np.log(np.sum(np.exp(-0.4 * ising.energy(ex.spins, h=0.1))))
    assert abs(ex.log_z - direct) < 1e-10


def test_fluctuation_dissipation_by_finite_differences():
    """∂⟨M⟩/∂h = β Var[M] and ∂⟨s_i⟩/∂h_j = β Cov[s_i, s_j], by central differences of enumeration.

    The central-difference error is (δ²/6)|∂_h³⟨M⟩| = (δ²/6) β³ |κ₄(M)| (κ₄ the fourth cumulant),
    computed exactly; the tolerance is twice that plus float64 round-off (≈ 1e-16·N/δ).
    """
    beta, h0, delta = 0.4, 0.1, 1e-3
    ex = ising.exact(3, beta, h=h0)
    M = lambda s: ising.magnetization(s)
    mean_at = lambda h: float(ising.exact(3, beta, h=h).mean(M))
    fd = (mean_at(h0 + delta) - mean_at(h0 - delta)) / (2 * delta)
    var = float(ex.cov(M))
    c = M(ex.spins.astype(float)) - ex.mean(M)
    kappa4 = ex.p @ c ** 4 - 3 * var ** 2
    tol = 2 * delta ** 2 / 6 * beta ** 3 * abs(kappa4) + 1e-9
    assert abs(fd - beta * var) < tol, (fd, beta * var, tol)

    # Site-resolved: field on site j = (2, 1), response of site i = (0, 0).
    j = np.zeros((3, 3)); j[2, 1] = 1.0
    si = lambda s: s[:, 0, 0]
    resp = lambda d: float(ising.exact(3, beta, h=h0 + d * j).mean(si))
    fd_ij = (resp(delta) - resp(-delta)) / (2 * delta)
    chi = beta * ex.cov(lambda s: s.reshape(len(s), -1))
    assert abs(fd_ij - chi[0, 2 * 3 + 1]) < 1e-6 * beta  # |∂³⟨s_i⟩| ≤ β³·O(1): δ²β³/6 ≪ 1e-6β
    # The response matrix is symmetric and positive semidefinite: vᵀχv = β Var[vᵀs] ≥ 0.
    np.testing.assert_allclose(chi, chi.T, atol=1e-14)
    assert np.linalg.eigvalsh(chi).min() > -1e-12
    # 1ᵀχ1 = β Var[M]: the total response is the sum of all pair responses.
    assert abs(chi.sum() - beta * var) < 1e-10 * beta * var


@pytest.mark.parametrize("L,beta,h", [(3, 0.4, 0.1), (4, 0.35, 0.0)])  # odd: site scan; even: checkerboard
def test_heat_bath_matches_enumeration(L, beta, h):
    ex = ising.exact(L, beta, h=h)
    draws = ising.sample(jax.random.key(0), L, beta, h=h, num_chains=16, num_draws=2000, num_burnin=100,
                         observables={"s00_s01": lambda s: s[0, 0] * s[0, 1]})
    assert draws["magnetization"].shape == (16, 2000) and draws["s00_s01"].shape == (16, 2000)
    M = ising.magnetization
    checks = {
        "<M>": (susc.mean_estimate(draws["magnetization"]), ex.mean(M)),
        "Var[M]": (susc.covariance(draws["magnetization"]), ex.cov(M)),
        "<H>": (susc.mean_estimate(draws["energy"]), ex.mean(lambda s: ising.energy(s, h=h))),
        "<s00 s01>": (susc.mean_estimate(draws["s00_s01"]), ex.mean(lambda s: s[:, 0, 0] * s[:, 0, 1])),
    }
    for name, (est, truth) in checks.items():
        assert np.all(np.abs(est.z(truth)) <= 4), (name, est.value, est.se, truth)
    assert np.all(susc.ess(draws["magnetization"]) > 200)  # the SEs above rest on enough samples


def test_cold_start_stays_ordered_and_validation():
    # At β = 5 a spin in the all-up state flips with probability σ(−40) ≈ 4e-18: M stays N.
    d = ising.sample(jax.random.key(1), 4, 5.0, num_chains=2, num_draws=20, num_burnin=0, init="up")
    assert np.all(d["magnetization"] == 16) and np.all(d["energy"] == -32)
    with pytest.raises(ValueError, match="L must be"):
        ising.exact(2, 0.4)
    with pytest.raises(ValueError, match="use L <= 4"):
        ising.exact(5, 0.4)
    with pytest.raises(ValueError, match="h must be"):
        ising.sample(jax.random.key(0), 4, 0.4, h=np.zeros(3))
    with pytest.raises(ValueError, match="init"):
        ising.sample(jax.random.key(0), 4, 0.4, init="hot")
    with pytest.raises(ValueError, match="reserved"):
        ising.sample(jax.random.key(0), 4, 0.4, observables={"energy": lambda s: s.sum()})
    with pytest.raises(ValueError, match="beta"):
        ising.exact(3, -1.0)
