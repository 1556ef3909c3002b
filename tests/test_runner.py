"""The chain runner: reproducibility, chain-stream independence, resume, streaming == stored,
sharding over simulated devices, divergence handling and bad-input errors.
Checkpoints, dtypes, sparse components and compile counts: tests/test_engine.py."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import susc

LOSS, DATA = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2) + 0.1 * jnp.sum(w ** 4))
OBS = {"w": lambda w: w, "w2": lambda w: w ** 2}


def run(key=0, **kw):
    args = dict(sampler=susc.sgld(5e-3), nbeta=10.0, gamma=1.0, num_chains=4, num_draws=60,
                observables=OBS)
    args.update(kw)
    return susc.sample(jax.random.key(key), LOSS, jnp.zeros(3), DATA, **args)


def test_bitwise_reproducible():
    a, b = run(), run()
    assert np.array_equal(a.loss, b.loss)
    assert np.array_equal(a.observables["w"], b.observables["w"])
    assert not np.array_equal(a.loss, run(key=1).loss)


def test_chain_stream_independent_of_num_chains():
    a, b = run(num_chains=2), run(num_chains=5)
    np.testing.assert_allclose(a.observables["w"], b.observables["w"][:2], rtol=1e-6, atol=1e-7)


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    ref = run(checkpoint_dir=tmp_path / "ref", checkpoint_every=20, num_burnin=7)
    plain = run(num_burnin=7)
    np.testing.assert_allclose(ref.observables["w"], plain.observables["w"], rtol=1e-6, atol=1e-7)

    class Stop(Exception):
        pass

    def stop(done):
        if done == 40:
            raise Stop

    with pytest.raises(Stop):
        run(checkpoint_dir=tmp_path / "cut", checkpoint_every=20, num_burnin=7, on_block=stop)
    resumed = run(checkpoint_dir=tmp_path / "cut", checkpoint_every=20, num_burnin=7)
    assert np.array_equal(resumed.loss, ref.loss)
    assert np.array_equal(resumed.observables["w2"], ref.observables["w2"])
    with pytest.raises(ValueError, match="different inputs"):
        run(checkpoint_dir=tmp_path / "cut", checkpoint_every=20, num_burnin=7, nbeta=11.0)


def test_streaming_equals_stored_and_is_stable_under_offsets():
    offset = 1e3
    obs = {"w": lambda w: w, "far": lambda w: w + offset}
    stored = run(observables=obs, num_draws=400, accumulate=[("far", "loss"), ("w", "w")])
    stream = run(observables=obs, num_draws=400, store_draws=False, accumulate=[("far", "loss")])
    assert stream.observables == {}
    ref = susc.covariance(stored.observables["far"], stored.loss)
    for res in (stored, stream):
        got = susc.covariance_from_moments(res.moments["far|loss"])
        # float32 draws at offset 1e3 have ulp ~6e-5 against a spread ~0.1: relative precision ~1e-3
        np.testing.assert_allclose(got.value, ref.value, rtol=0, atol=2e-3 * np.abs(ref.value).max())
        np.testing.assert_allclose(got.se, ref.se, rtol=0, atol=2e-2 * np.abs(ref.se).max())
    var = susc.covariance_from_moments(stream.moments["far"])
    ref_var = np.diag(susc.covariance(stored.observables["w"]).value)
    np.testing.assert_allclose(var.value, ref_var, rtol=1e-2)
    full = susc.covariance_from_moments(stored.moments["w|w"])
    np.testing.assert_allclose(full.value, susc.covariance(stored.observables["w"]).value, rtol=1e-4, atol=1e-8)


def test_divergence_names_chain_and_draw_and_keeps_finished_draws():
    # V = −w⁴ has no minimum: chains run off to infinity.
    loss, data = susc.potential_loss(lambda w: -jnp.sum(w ** 4))
    with pytest.raises(susc.SamplingDivergence, match=r"chain \d+ at draw \d+.*step_size") as e:
        susc.sample(jax.random.key(0), loss, jnp.ones(2), data, sampler=susc.sgld(0.05), nbeta=10.0,
                    num_chains=3, num_draws=100, observables={"w": lambda w: w})
    part = e.value.partial
    assert part.loss.shape[1] == e.value.draw or part.loss.shape[1] <= e.value.draw
    assert np.all(np.isfinite(part.loss))


def test_progress_is_quiet_under_pytest(capfd):
    run(progress=True)
    assert capfd.readouterr().err == ""


def test_sharding_over_simulated_devices(tmp_path):
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, susc
        assert len(jax.devices()) == 4
        loss, data = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2))
        r = susc.sample(jax.random.key(0), loss, jnp.zeros(2), data, sampler=susc.sgld(1e-2), nbeta=5.0,
                        num_chains=8, num_draws=30, observables={"w": lambda w: w})
        leaf = jax.tree_util.tree_leaves(r.final_state.position)[0]
        assert len(leaf.sharding.device_set) == 4, leaf.sharding
        np.save(%r, r.observables["w"])
    """ % str(tmp_path / "w.npy"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    loss, data = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2))
    single = susc.sample(jax.random.key(0), loss, jnp.zeros(2), data, sampler=susc.sgld(1e-2), nbeta=5.0,
                         num_chains=8, num_draws=30, observables={"w": lambda w: w})
    np.testing.assert_allclose(np.load(tmp_path / "w.npy"), single.observables["w"], rtol=1e-5, atol=1e-6)


def _lin():
    X = jnp.ones((10, 2))
    return (lambda w, b: (b["y"] - b["X"] @ w) ** 2), jnp.zeros(2), {"X": X, "y": jnp.ones(10)}


@pytest.mark.parametrize("kw, err, match", [
    (dict(nbeta=-1.0), ValueError, "nbeta"),
    (dict(nbeta=0.0, gamma=0.0), ValueError, "nbeta"),
    (dict(gamma=-0.5), ValueError, "gamma"),
    (dict(batch_size=11), ValueError, "batch_size"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(weights=jnp.ones(3)), ValueError, "weights"),
    (dict(mask={"a": jnp.ones(2)}), ValueError, "mask"),
    (dict(mask=jnp.ones(3)), ValueError, "mask"),
    (dict(observables={"bad": lambda w: {"x": w}}), TypeError, "observable 'bad'"),
    (dict(observables={"bad": 3}), TypeError, "observable 'bad'"),
    (dict(num_draws=0), ValueError, "num_draws"),
])
def test_bad_input_names_the_argument(kw, err, match):
    loss_fn, w, data = _lin()
    args = dict(sampler=susc.sgld(1e-3), nbeta=1.0, num_draws=5)
    args.update(kw)
    with pytest.raises(err, match=match):
        susc.sample(jax.random.key(0), loss_fn, w, data, **args)


def test_bad_input_data_and_loss_and_params():
    loss_fn, w, data = _lin()
    kw = dict(sampler=susc.sgld(1e-3), nbeta=1.0, num_draws=5)
    with pytest.raises(ValueError, match="empty"):
        susc.sample(jax.random.key(0), loss_fn, w, {}, **kw)
    with pytest.raises(ValueError, match="n = 0"):
        susc.sample(jax.random.key(0), loss_fn, w, {"X": jnp.ones((0, 2)), "y": jnp.ones(0)}, **kw)
    with pytest.raises(ValueError, match="leading axis"):
        susc.sample(jax.random.key(0), loss_fn, w, {"X": jnp.ones((10, 2)), "y": jnp.ones(9)}, **kw)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        susc.sample(jax.random.key(0), lambda w, b: jnp.mean(loss_fn(w, b)), w, data, **kw)
    with pytest.raises(ValueError, match="non-finite"):
        susc.sample(jax.random.key(0), loss_fn, jnp.array([0.0, jnp.nan]), data, **kw)
    with pytest.raises(ValueError, match="step_size"):
        susc.sgld(0.0)
    with pytest.raises(ValueError, match="step_size"):
        susc.rmsprop_sgld(-1e-3)
    with pytest.raises(TypeError, match="sampler"):
        susc.sample(jax.random.key(0), loss_fn, w, data, sampler="sgld", nbeta=1.0)


def test_vectorized_components_equal_separate_masked_runs():
    """All K components' restricted chains in one program == K separate masked runs (shared keys)."""
    masks = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    kw = dict(nbeta=10.0, gamma=1.0, num_chains=3, num_draws=40, num_burnin=5, accumulate=[("w", "loss")])
    vec = run(masks=masks, **kw)
    assert vec.loss.shape == (2, 3, 40) and vec.observables["w"].shape == (2, 3, 40, 3)
    for k in range(2):
        one = run(mask=masks[k], **kw)
        np.testing.assert_allclose(vec.observables["w"][k], one.observables["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(vec.moments["w|loss"].comoment[k], one.moments["w|loss"].comoment,
                                   rtol=1e-5, atol=1e-7)
    assert np.all(vec.observables["w"][0][..., 1:] == 0.0) and np.all(vec.observables["w"][1][..., 0] == 0.0)
