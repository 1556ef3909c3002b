"""LLC accuracy against known learning coefficients and exact references (issue 3).

- monomials c·w^(2k): t⟨V⟩ = 1/(2k) exactly for every t (virial identity), so any deviation is
  sampler error;
- normal crossing w1²w2² with localization: ⟨V⟩ by 1-D quadrature (susc.exact);
- reduced-rank regression, devinterp's five cases: on the *population* loss at the true parameter
  (where Aoyagi's λ is the estimator's target) within 10% relative error at t = 1000 — devinterp's
  own test tolerates 40%; on devinterp's *empirical* setting (n = 1000, trained w*, nβ = n/ln n) the
  SGLD estimate must equal the NUTS estimate of the same finite-n posterior within Monte-Carlo error.

Why two RRR checks: at n = 1000 the trained w* is a generic rank-H point at distance ~√(M/n) from
the rank-0 singularity, comparable to the posterior width 1/√(nβ), so the finite-n estimator itself
is biased upward by up to ~15% depending on the data draw (measured, e.g. (8,3,4): +4% to +15% over
four data seeds). That is the estimator, not the sampler; the NUTS comparison isolates the sampler.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import susc
from susc.reference import exact
from susc.models import toy

K = 4.0
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("k, eps", [(1, 1e-4), (2, 2e-4), (3, 2e-4)])
def test_monomial_llc_is_exact_virial(k, eps):
    t = 100.0
    loss_fn, data = susc.potential_loss(lambda w: jnp.sum(w ** (2 * k)))
    res = susc.sample(jax.random.key(k), loss_fn, jnp.zeros(1), data, sampler=susc.sgld(eps), nbeta=t,
                      num_chains=16, num_draws=2000, num_burnin=500, steps_per_draw=10)
    est = susc.llc(res)
    truth = exact.monomial_llc(k)
    if k == 1:  # quadratic, precision p = 2t: SGLD's stationary variance 1/(p(1 − εp/4)) is exact
        p = 2 * t
        truth = t / (p * (1 - eps * p / 4))
    assert abs(est.mean - truth) < K * est.se, (est, truth)


def test_normal_crossing_against_quadrature():
    t, gamma = 100.0, 1.0
    m = toy.normal_crossing()
    res = susc.sample(jax.random.key(0), *m.args, sampler=susc.sgld(1e-3), nbeta=t, gamma=gamma,
                      num_chains=16, num_draws=2000, num_burnin=1000, steps_per_draw=10)
    est = susc.llc(res)
    truth = t * exact.normal_crossing_mean_potential(t, gamma)
    assert abs(est.mean - truth) < K * est.se, (est, truth)


@pytest.mark.parametrize("M, H, N", [(5, 3, 5), (5, 4, 5), (4, 3, 8), (8, 3, 4), (3, 8, 4)])
def test_rrr_population_llc_within_10_percent_of_aoyagi(M, H, N):
    lam = toy.rrr_learning_coefficient(M, H, N, 0)
    # Population MSE for x ~ N(0, I), y independent noise: K(w) = ‖BA‖²_F / N (mean over outputs).
    loss_fn, data = susc.potential_loss(lambda w: jnp.sum((w["B"] @ w["A"]) ** 2) / N)
    w0 = {"A": jnp.zeros((H, M)), "B": jnp.zeros((N, H))}
    res = susc.sample(jax.random.key(0), loss_fn, w0, data, sampler=susc.sgld(1e-4), nbeta=1000.0,
                      gamma=1.0, num_chains=64, num_draws=2000, num_burnin=1000, steps_per_draw=2)
    est = susc.llc(res)
    # λ̂ at t = nβ = 1000 with γ = 1 is not λ: with 128 chains the finite-t deviations are −9.4, −6.9,
    # −1.0, +1.2, −0.1 % (± ~0.5 %) for these five cases. The check allows that 10 % systematic
    # deviation plus K Monte-Carlo standard errors (8 chains used to leave (5,3,5) at ~1 SE from failing).
    assert abs(est.mean - lam) <= 0.10 * lam + K * est.se, (est, lam)


def test_rrr_empirical_devinterp_setting_sgld_equals_nuts():
    m = toy.train_rrr(toy.reduced_rank_regression(jax.random.key(42), 5, 3, 5))
    n = 1000
    nbeta = n / np.log(n)
    sg = susc.llc(susc.sample(jax.random.key(0), *m.args, sampler=susc.sgld(6e-4), nbeta=nbeta,
                              gamma=1.0, num_chains=8, num_draws=1000, num_burnin=200))
    nu = susc.llc(susc.nuts(jax.random.key(1), *m.args, nbeta=nbeta, gamma=1.0, num_chains=4,
                            num_warmup=200, num_draws=300))
    se = np.hypot(sg.se, nu.se)
    assert abs(sg.mean - nu.mean) < K * se, (sg, nu)
