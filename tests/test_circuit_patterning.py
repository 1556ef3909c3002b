"""The transformer-patterning experiment end to end at reduced sizes, and its identities.

Conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w_e‖²}; χ̂_j = −Cov[φ, ℓ_j − L_n]; the first-order
shift of ⟨φ⟩ under sequence weights ρ is dμ = β χ̂ (ρ − 1) with β = nβ/n.
"""
import jax
import numpy as np
import pytest

from susc import experiments
from susc.experiments import circuit_patterning as cp
from susc.experiments import formation
from susc.experiments.transformer import make_data

SMALL = dict(num_train=128, train_steps=150, warmup_steps=10, early_step=50, readout_every=50,
             repeat_sequences=8, num_draws=12, num_burnin=4, num_batches=3, resample_draws=12,
             seeds=(0, 1, 2), sweep=(0.5,))


@pytest.mark.slow
def test_patterning_experiment_end_to_end(tmp_path):
    res = experiments.run("transformer-patterning", "tiny", root=tmp_path, progress=False, **SMALL)
    a, cfg = res.arrays, cp.PatterningConfig(**SMALL)
    names = [str(x) for x in a["arm_names"]]
    assert names == ["baseline", "accelerate", "delay", "random", "accelerate@0.5", "delay@0.5",
                     "accelerate_class", "delay_class", "random_class"]
    S, A, n = len(cfg.seeds), len(names), cfg.num_train
    assert a["weights"].shape == (6, n) and a["class_weights"].shape == (3, 8)
    assert a["formation_step"].shape == a["dmu_realized"].shape == (S, A)
    assert a["dmu_predicted"].shape == a["dmu_resampled"].shape == (A,)
    assert a["prefix_matching_max"].shape == (S, A, cfg.train_steps // cfg.readout_every + 1)
    np.testing.assert_array_equal(a["dmu_realized"][:, 0], 0.0)
    # χ̂ rows are centred (L_n is the mean of the ℓ_j at every draw): Σ_j χ̂_j = 0
    assert abs(a["chi"].sum()) < 1e-4 * np.abs(a["chi"]).sum()
    # the draw-based prediction is exactly β χ̂ (ρ − 1), the covariance being linear
    beta = cfg.nbeta / n
    direct = beta * (a["weights"].astype(np.float64) - 1) @ a["chi"]
    np.testing.assert_allclose(a["dmu_predicted"][:6], direct, rtol=1e-3, atol=1e-7)
    # class arms: nβ Σ_c q_c (ρ_c − 1) χ̄_c, mass Σ_c q_c ρ_c = 1, the class χ̄ centred
    q, cw = a["class_share"], a["class_weights"]
    np.testing.assert_allclose(cw @ q, 1.0, rtol=1e-9)
    assert abs(q @ a["class_chi"]) < 1e-4 * np.abs(a["class_chi"]).sum()
    direct = cfg.nbeta * ((cw - 1) * q) @ a["class_chi"]
    np.testing.assert_allclose(a["dmu_predicted"][6:], direct, rtol=1e-3, atol=1e-7)
    assert a["dmu_predicted"][6] < 0 < a["dmu_predicted"][7]
    assert np.all(cw >= 0) and np.max(np.abs(cw[:2] - 1)) == pytest.approx(1.0, rel=1e-6)
    assert a["weight_rms"][8] == pytest.approx(a["weight_rms"][6], rel=1e-6)
    assert a["null_formation_step"].shape == (S, cfg.num_null)
    assert a["resample_formation_step"].shape == (S, len(cfg.resample_arms))
    assert a["resample_induction_loss"].shape[:2] == (S, len(cfg.resample_arms))
    assert a["dmu_predicted"][0] == 0 and a["dmu_resampled"][0] == 0
    # weights: max change where targeted, mass preserved, opposite arms mirror each other
    dev = np.abs(a["weights"] - 1).max(axis=1)
    np.testing.assert_allclose(dev[[1, 2, 4, 5]], [1.0, 1.0, 0.5, 0.5], rtol=1e-5)
    np.testing.assert_allclose(a["weights"].sum(axis=1), n, rtol=1e-5)
    np.testing.assert_allclose(a["weights"][1] - 1, 1 - a["weights"][2], atol=1e-6)
    assert a["weight_rms"][3] == pytest.approx(a["weight_rms"][1], rel=1e-5)
    # accelerate is predicted to lower ⟨φ⟩ (more in-context learning), delay to raise it
    assert a["dmu_predicted"][1] < 0 < a["dmu_predicted"][2]
    # same seed, same initialization: every arm starts from the same readout
    start = a["induction_loss"][:, :, 0]
    np.testing.assert_allclose(start - start[:, :1], 0.0, atol=1e-6)
    again = experiments.load_results("transformer-patterning", "tiny", tmp_path)
    np.testing.assert_array_equal(again.arrays["formation_step"], a["formation_step"])


def test_train_arm_with_unit_weights_is_unweighted_training():
    cfg = cp.PatterningConfig(**{**SMALL, "train_steps": 100})
    tr, _ = make_data(cp.synthetic_config(cfg))
    rep = formation.repeated_sequences(jax.random.key(7), 4, cfg.seq_len // 2, cfg.vocab_size, low=19)
    one = cp.train_arm(cfg, 0, np.ones(cfg.num_train), tr["tokens"], rep)
    two = cp.train_arm(cfg, 0, 3.0 * np.ones(cfg.num_train), tr["tokens"], rep)  # ρ is normalized
    np.testing.assert_allclose(one["induction_loss"], two["induction_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="nonnegative"):
        cp.train_arm(cfg, 0, -np.ones(cfg.num_train), tr["tokens"], rep)


def test_resampled_indices_follow_the_weights():
    import jax.numpy as jnp
    resampled_indices = cp.resampled_indices
    key = jax.random.key(3)
    rho = jnp.zeros(10).at[3].set(1.0).at[7].set(3.0)
    idx = np.asarray(resampled_indices(key, rho, 40000))
    assert set(np.unique(idx)) == {3, 7}
    frac = np.mean(idx == 7)                          # 0.75, binomial SE 0.0022
    assert abs(frac - 0.75) < 4 * np.sqrt(0.75 * 0.25 / idx.size)
    # common random numbers: a small change of ρ moves few draws
    a = np.asarray(resampled_indices(key, jnp.ones(100), 1000))
    b = np.asarray(resampled_indices(key, jnp.ones(100).at[0].set(1.05), 1000))
    assert 0 < np.mean(a != b) < 0.05


def test_train_arm_seeds_matches_train_arm():
    from susc.experiments.circuit_patterning_seeds import train_arm_seeds
    import dataclasses
    cfg = dataclasses.replace(cp.PatterningConfig(), train_steps=100, readout_every=50)
    tr, _ = make_data(cp.synthetic_config(cfg))
    tokens = np.asarray(tr["tokens"])
    rep = formation.repeated_sequences(jax.random.key(7), 8, cfg.seq_len // 2, cfg.vocab_size, low=19)
    rho = np.random.default_rng(0).uniform(0.5, 1.5, len(tokens))
    many = train_arm_seeds(cfg, [0, 5], rho, tokens, rep)
    for k, s in enumerate([0, 5]):
        one = cp.train_arm(cfg, s, rho, tokens, rep)
        np.testing.assert_array_equal(many["steps"], one["steps"])
        np.testing.assert_allclose(many["induction_loss"][k], one["induction_loss"], rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(many["prefix_matching"][k], one["prefix_matching"], atol=2e-4)


def test_hand_class_weights_preserve_mass_and_refuse_negative_weights():
    from susc.experiments.circuit_patterning_controls import hand_class_weights
    q = np.array([0.5, 0.2, 0.3])
    for up in (0.0, 2.0, 5.0):
        rho = hand_class_weights(q, 1, up)
        assert rho[1] == up and q @ rho == pytest.approx(1.0, rel=1e-12)
        assert np.all(rho[[0, 2]] == rho[0])
    with pytest.raises(ValueError, match="negative"):
        hand_class_weights(q, 1, 6.0)


@pytest.mark.slow
def test_controls_end_to_end_tiny(tmp_path):
    """The controls run on the shipped tiny results: the coordinate is the last layer's mean
    prefix-matching score, the class predictions are the exact identity nβ Σ_c q_c (ρ_c − 1) χ̄_c,
    the pm arms mirror each other at max_change, and tiny_random has tiny_scale of the size."""
    from susc.experiments import circuit_patterning_controls as cc
    from susc.models.transformer import init_params
    res = cc.run_controls("tiny", [0], tmp_path, num_draws=6, tiny_scale=0.05, progress=False)
    shipped = experiments.load_results("transformer-patterning", "tiny")
    cfg = cp.PatterningConfig()
    names = list(res["arm_names"])
    assert names == list(cc.ARMS)
    q, cw, chi = res["class_share"], res["class_weights"], res["class_chi"]
    k = [names.index(a) for a in cc.CLASS_ARMS]
    np.testing.assert_allclose(cw @ q, 1.0, rtol=1e-9)
    np.testing.assert_allclose(res["dmu_predicted"][k], cfg.nbeta * ((cw - 1) * q) @ chi,
                               rtol=1e-3, atol=1e-9)
    i = {a: names.index(a) for a in names}
    assert res["dmu_predicted"][i["pm_accelerate"]] > 0 > res["dmu_predicted"][i["pm_delay"]]
    np.testing.assert_allclose(cw[0] - 1, 1 - cw[1], atol=1e-12)
    assert np.max(np.abs(cw[:2] - 1)) == pytest.approx(cfg.max_change, rel=1e-9)
    # the hand arms: the class at 2 or 0, the rest equal
    for c, name in ((1, "induction"), (3, "bracket_close")):
        up, off = cw[cc.CLASS_ARMS.index(f"{name}_up")], cw[cc.CLASS_ARMS.index(f"{name}_off")]
        assert up[c] == 2.0 and off[c] == 0.0 and np.ptp(np.delete(up, c)) == 0
    rms = res["weight_rms"]
    assert rms[i["pm_random"]] == pytest.approx(rms[i["pm_accelerate"]], rel=1e-6)
    assert rms[i["induction_up"]] == pytest.approx(rms[i["induction_off"]])
    acc = shipped.arrays["weights"][list(shipped.arrays["arm_names"]).index("accelerate")]
    assert rms[i["tiny_random"]] == pytest.approx(0.05 * np.sqrt(np.mean((acc - 1) ** 2)),
                                                  rel=1e-6)
    # the posterior check covers every class arm, nothing else
    assert np.all(np.isfinite(res["dmu_resampled"][k]))
    assert np.isnan(res["dmu_resampled"][i["tiny_random"]])
    # the coordinate is the mean over the last layer's heads of the readout at the initialization
    mcfg = cp.model_config(cp.synthetic_config(cfg))
    rep = formation.repeated_sequences(jax.random.key(7), cfg.repeat_sequences, cfg.seq_len // 2,
                                       cfg.vocab_size, low=19)
    mu0 = cc.last_layer_prefix_matching_fn(mcfg, rep)(init_params(jax.random.key(0), mcfg))
    np.testing.assert_allclose(res["coordinate"][0, :, 0], float(mu0), rtol=1e-5)
    np.testing.assert_array_equal(res["dmu_realized"][:, 0], 0.0)
    assert res["formation_step"].shape == (1, len(names))
    again = cc.run_controls("tiny", [0], tmp_path, num_draws=6, progress=False)  # resumes
    np.testing.assert_array_equal(again["formation_step"], res["formation_step"])


def test_seeds_cli_defaults_and_tiny_switch(tmp_path):
    from susc.experiments.circuit_patterning_seeds import seeds_cli
    a, profile, seeds, out = seeds_cli("doc", ["--seeds", "2:7"], default="0:8", tiny="0:2",
                                       suffix="controls")
    assert profile == "small" and list(seeds) == [2, 3, 4, 5, 6] and out.name == "small-controls"
    a, profile, seeds, out = seeds_cli("doc", ["--tiny", "--out", str(tmp_path), "--draws", "3"],
                                       default="0:8", tiny="0:2", suffix="controls",
                                       extra=[("--draws", {"type": int, "default": None})])
    assert profile == "tiny" and list(seeds) == [0, 1] and out == tmp_path and a.draws == 3
