"""The finite-difference oracle of `susc.experiments.response`: reweighting the posterior data toward
a token subset S by h moves the restricted posterior mean of φ_C at the rate nβ χ^{C,R}_S.

Conventions: p_h(u) ∝ exp{−nβ L_h − (γ/2)‖u − u*‖²}, L_h = L + h(L_S − L);
χ^{C,R}_S = −Cov_WR[φ_C, L_S − L]; d⟨φ_C⟩_h/dh = nβ χ^{C,R}_S (fluctuation–dissipation).
"""
import dataclasses

import jax
import numpy as np
import pytest

from susc.experiments import corpus, response
from susc.models.transformer import init_params
from susc.stats import origin_slope


def test_subset_weights_shift_the_mean_loss_by_h_times_the_subset_contrast():
    rng = np.random.default_rng(0)
    subset = rng.integers(0, 3, size=(6, 10))
    ell = rng.random((6, 10))
    for h in (-0.3, 0.2, 0.7):
        w = response.subset_weights(subset, 1, h)
        assert abs(w.mean() - 1) < 1e-12
        contrast = ell[subset == 1].mean() - ell.mean()
        assert abs((w * ell).mean() - (ell.mean() + h * contrast)) < 1e-12
    with pytest.raises(ValueError, match="h ="):
        response.subset_weights(subset, 1, 1.5)
    with pytest.raises(ValueError, match="no token"):
        response.subset_weights(subset, 5, 0.1)


@pytest.mark.slow
def test_finite_difference_response_equals_the_restricted_covariance(tmp_path):
    """Oracle: two estimators of d⟨φ_C⟩/dh / nβ, one from resampling at ±h with common random
    numbers, one a covariance of the unweighted draws, agree within 4 combined SE for every head;
    a wrong factor nβ or sign would put them apart by many SE (the responses are ≫ their SE)."""
    cfg = dataclasses.replace(corpus.CorpusConfig(), step_size=3e-4, nbeta=30.0, gamma=300.0,
                              num_chains=4, sample_batch=4, probe_chunk=4,
                              num_batches=4, checkpoint_every=200)
    mcfg = corpus.model_config(cfg)
    params = init_params(jax.random.key(0), mcfg)
    _, ev = corpus.make_data(dataclasses.replace(cfg, num_eval=4))
    probe = ev["tokens"]
    subset = np.zeros(probe[:, 1:].shape, int)
    subset[:, : probe.shape[1] // 2] = 1                   # first half of every window
    out = response.restricted_response(jax.random.key(3), cfg, params, mcfg, probe, subset, [1],
                                       0.1, tmp_path / "resp", num_draws=400, num_burnin=100)
    z = (out["fd"] - out["chi"]) / np.hypot(out["fd_se"], out["chi_se"])
    assert np.all(np.abs(z) < 4), z
    # pooled over heads (errors in both variables): slope 1 inside the 4-sigma interval, and
    # the check has power: the responses are resolved, a factor 2 either way would fail it
    fit = origin_slope(out["chi"], out["chi_se"], out["fd"], out["fd_se"], k=4)
    assert fit.lo <= 1 <= fit.hi and 0.5 < fit.lo and fit.hi < 2, fit
    assert np.median(np.abs(out["chi"]) / out["chi_se"]) > 4
    assert out["chi_tokens"].shape == (2 * mcfg.n_heads, subset.size)
