"""Engine v2: checkpoints that cannot corrupt, fingerprints, divergence within a block, dtypes, sparse
components, stacked results, observables with run-time data, compile counts, global state.

Each test fails on the engine before the redesign (62e8199): stacked resume crashed after two blocks,
a crash between checkpoint files duplicated a block, other data resumed silently, divergence was
acted on at the end of the run, "drop" discarded the moments, x64 runs kept float32, frozen leaves
were differentiated, `llc` pooled components, `bif()` recompiled, `import susc` set JAX options.
"""
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
OBS = {"w": lambda w: w}
MASKS = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


class Stop(Exception):
    pass


def stop_at(n):
    def hook(done):
        if done == n:
            raise Stop(done)
    return hook


def run(key=0, **kw):
    args = dict(sampler=susc.sgld(5e-3), nbeta=10.0, gamma=1.0, num_chains=3, num_draws=40, observables=OBS,
                accumulate=[("w", "loss")], progress=False)
    args.update(kw)
    return susc.sample(jax.random.key(key), LOSS, jnp.zeros(3), DATA, **args)


def assert_same(a, b):
    assert type(a) is type(b)
    assert np.array_equal(a.loss, b.loss)
    for k in a.observables:
        assert np.array_equal(a.observables[k], b.observables[k]), k
    for k in a.moments:
        for f in ("count", "mean_x", "mean_y", "comoment"):
            x, y = getattr(a.moments[k], f), getattr(b.moments[k], f)
            assert (x is None and y is None) or np.array_equal(x, y), (k, f)


def test_stacked_resume_after_several_blocks_is_bitwise(tmp_path):
    kw = dict(masks=MASKS, checkpoint_every=10, num_burnin=3)
    ref = run(checkpoint_dir=tmp_path / "ref", **kw)
    assert isinstance(ref, susc.StackedResult) and ref.loss.shape == (2, 3, 40)
    with pytest.raises(Stop):
        run(checkpoint_dir=tmp_path / "cut", on_block=stop_at(30), **kw)   # three blocks saved
    assert_same(run(checkpoint_dir=tmp_path / "cut", **kw), ref)


def test_crash_between_checkpoint_files_loses_nothing(tmp_path):
    """Kill the process while block 3 is half written (its state saved, its draws not)."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        calls = [0]
        savez = np.savez
        def dying_savez(*a, **k):
            calls[0] += 1
            if calls[0] == 6:           # block 1: state, draws; block 2: state, draws; block 3: state | draws
                os._exit(3)
            return savez(*a, **k)
        np.savez = dying_savez
        import jax, jax.numpy as jnp, susc
        loss, data = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2) + 0.1 * jnp.sum(w ** 4))
        susc.sample(jax.random.key(0), loss, jnp.zeros(3), data, sampler=susc.sgld(5e-3), nbeta=10.0,
                    gamma=1.0, num_chains=3, num_draws=40, observables={{"w": lambda w: w}},
                    accumulate=[("w", "loss")], progress=False, checkpoint_dir={str(tmp_path / "cut")!r},
                    checkpoint_every=10)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, timeout=300)
    assert proc.returncode == 3
    resumed = run(checkpoint_dir=tmp_path / "cut", checkpoint_every=10)
    assert_same(resumed, run(checkpoint_dir=tmp_path / "ref", checkpoint_every=10))
    assert not [d for d in os.listdir(tmp_path / "cut") if ".tmp" in d]


@pytest.mark.parametrize("change", ["data", "weights", "mask", "center", "observable data"])
def test_resume_with_other_inputs_is_refused(tmp_path, change):
    X = jax.random.normal(jax.random.key(1), (20, 2))
    data = {"X": X, "y": X @ jnp.array([1.0, -1.0])}
    w0 = jnp.array([1.0, -1.0])
    fit = lambda w, b: b["X"] @ w  # noqa: E731

    def go(data=data, probe=data, **extra):
        return susc.sample(jax.random.key(0), lambda w, b: (b["y"] - fit(w, b)) ** 2, w0, data,
                           sampler=susc.sgld(1e-3), nbeta=5.0, gamma=1.0, num_chains=2, num_draws=20,
                           observables={"fit": susc.observable(fit, probe)}, checkpoint_dir=tmp_path,
                           checkpoint_every=5, progress=False, **extra)

    with pytest.raises(Stop):
        go(on_block=stop_at(10))
    other = {"data": dict(data=dict(data, y=data["y"] + 1.0)), "weights": dict(weights=jnp.full(20, 2.0)),
             "mask": dict(mask=jnp.array([1.0, 0.0])), "center": dict(center=w0 + 0.1),
             "observable data": dict(probe=dict(data, X=-X))}[change]
    with pytest.raises(ValueError, match="different inputs"):
        go(**other)
    assert go().num_draws == 20                     # the same inputs resume


def test_divergence_stops_every_chain_at_the_draw_it_happens():
    loss, data = susc.potential_loss(lambda w: -jnp.sum(w ** 4))   # no minimum: chains run off
    with pytest.raises(susc.SamplingDivergence) as e:
        susc.sample(jax.random.key(0), loss, jnp.ones(2), data, sampler=susc.sgld(0.05), nbeta=10.0,
                    num_chains=3, num_draws=500, num_burnin=2, steps_per_draw=2, progress=False)
    part, draw = e.value.partial, e.value.draw
    assert draw < 50 and part.loss.shape == (3, draw)
    # every chain stopped right after the divergence, within the one 500-draw block
    assert np.all(np.asarray(part.final_state.step) == 2 + 2 * (draw + 1))


WELL = susc.potential_loss(lambda w: jnp.sum(0.5 * w ** 2 - 0.05 * w ** 4))   # escapes diverge
# The keys below were found by scanning seeds for a run in which exactly one chain escapes.


def test_drop_keeps_moments_and_final_state_of_surviving_chains():
    kw = dict(sampler=susc.sgld(0.05), nbeta=1.0, num_draws=100, store_draws=False, progress=False)
    with pytest.warns(RuntimeWarning, match="dropping 1 diverged chain"):
        r = susc.sample(jax.random.key(6), *WELL[:1], jnp.zeros(1), WELL[1], num_chains=4,
                        on_divergence="drop", **kw)
    assert r.settings["dropped_chains"] == [3]
    ref = susc.sample(jax.random.key(6), *WELL[:1], jnp.zeros(1), WELL[1], num_chains=3, **kw)
    for k in ("loss",):
        np.testing.assert_allclose(r.moments[k].mean_x, ref.moments[k].mean_x, rtol=1e-6)
        np.testing.assert_allclose(r.moments[k].comoment, ref.moments[k].comoment, rtol=1e-5)
    np.testing.assert_allclose(r.final_state.position, ref.final_state.position, rtol=1e-6)
    assert susc.llc(r).per_chain.shape == (3,)


def test_stacked_runs_honour_drop():
    masks = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.warns(RuntimeWarning, match="dropping"):
        r = susc.sample(jax.random.key(0), WELL[0], jnp.zeros(2), WELL[1], sampler=susc.sgld(0.05), nbeta=1.0,
                        num_chains=4, num_draws=100, masks=masks, accumulate=["loss"], on_divergence="drop",
                        progress=False)
    assert r.settings["dropped_chains"] == [2]
    assert r.loss.shape == (2, 3, 100) and r.moments["loss"].count.shape[:2] == (2, 3)
    assert np.isfinite(r.loss).all()


def test_float64_runs_stay_float64_end_to_end():
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, susc
        loss, data = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2))
        w0 = jnp.zeros(2, jnp.float64)
        obs = {"w": lambda w: w, "far": lambda w: w + 1e8}     # float32 cannot resolve 1e8 + O(0.3)
        r = susc.sample(jax.random.key(0), loss, w0, data, sampler=susc.sgld(1e-2), nbeta=4.0, num_chains=2,
                        num_draws=300, observables=obs, accumulate=["far"], progress=False)
        assert r.loss.dtype == np.float64 and r.observables["w"].dtype == np.float64
        assert r.moments["far"].comoment.dtype == np.float64
        assert jax.tree_util.tree_leaves(r.final_state.position)[0].dtype == jnp.float64
        far = susc.covariance_from_moments(r.moments["far"]).value
        np.testing.assert_allclose(far, r.observables["w"].reshape(-1, 2).var(0, ddof=1), rtol=1e-6)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], env=dict(ENV, JAX_ENABLE_X64="1"), timeout=300,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-3000:]


def test_low_precision_params_get_a_clear_error():
    with pytest.raises(TypeError, match="bfloat16.*Cast first"):
        susc.sample(jax.random.key(0), LOSS, jnp.zeros(3, jnp.bfloat16), DATA, sampler=susc.sgld(1e-3),
                    nbeta=1.0, num_draws=2)


def test_stacked_result_refuses_pooling_and_gives_components():
    stacked = run(masks=MASKS)
    with pytest.raises(TypeError, match="StackedResult of 2 components"):
        susc.llc(stacked)
    one = run(mask=MASKS[1])
    assert stacked.num_chains == 3 and stacked.num_components == 2
    np.testing.assert_allclose(susc.llc(stacked.component(1)).mean, susc.llc(one).mean, rtol=1e-5)
    assert [r.num_chains for r in stacked] == [3, 3]


def test_frozen_leaves_are_not_differentiated_sampled_or_copied():
    """sqrt has an infinite derivative at 0: differentiating the frozen leaf would poison the chain."""
    def loss_fn(p, b):
        return (b - p["w"] * jnp.sum(jnp.sqrt(p["frozen"]))) ** 2 + 0.0 * b

    params = {"w": jnp.ones(()), "frozen": jnp.array([0.0, 1.0])}
    mask = {"w": jnp.ones(()), "frozen": jnp.zeros(2)}
    r = susc.sample(jax.random.key(0), loss_fn, params, jnp.ones(8), sampler=susc.sgld(1e-3), nbeta=8.0,
                    gamma=1.0, num_chains=2, num_draws=20, mask=mask, progress=False)
    assert np.isfinite(r.loss).all() and r.settings["moving_leaves"] == 1
    assert np.array_equal(r.final_state.position["frozen"], np.broadcast_to(params["frozen"], (2, 2)))
    assert r.final_state.grads.potential["frozen"] is None


def test_chunked_observable_with_data_equals_whole():
    data = {"x": jnp.arange(10.0)}
    f = lambda w, b: jnp.outer(b["x"], w)  # noqa: E731
    kw = dict(sampler=susc.sgld(1e-2), nbeta=5.0, gamma=1.0, num_chains=2, num_draws=15, progress=False)
    whole = susc.sample(jax.random.key(0), LOSS, jnp.zeros(3), DATA,
                        observables={"f": susc.observable(f, data)}, **kw)
    parts = susc.sample(jax.random.key(0), LOSS, jnp.zeros(3), DATA,
                        observables={"f": susc.observable(f, data, chunk_size=4)}, **kw)  # 4 ∤ 10
    assert parts.observables["f"].shape == (2, 15, 10, 3)
    np.testing.assert_allclose(parts.observables["f"], whole.observables["f"], rtol=1e-6)
    with pytest.raises(ValueError, match="one row per data row"):
        susc.sample(jax.random.key(0), LOSS, jnp.zeros(3), DATA,
                    observables={"bad": susc.observable(lambda w, b: w, data)}, **kw)


def test_repeated_bif_compiles_nothing(lowerings):
    def loss_fn(w, b):
        return (b["y"] - b["X"] @ w) ** 2

    def problem(seed):
        X = jax.random.normal(jax.random.key(seed), (40, 3))
        return {"X": X, "y": X @ jnp.ones(3) + 0.1 * jax.random.normal(jax.random.key(seed + 1), (40,))}

    kw = dict(sampler=susc.sgld(1e-3), nbeta=20.0, gamma=10.0, num_chains=2, num_draws=30)
    susc.bif(jax.random.key(0), loss_fn, jnp.ones(3), problem(0), problem(2), **kw)
    lowerings.clear()
    second = susc.bif(jax.random.key(1), loss_fn, jnp.ones(3), problem(4), problem(6), **kw)
    assert lowerings == [], lowerings
    assert second.value.shape == (40, 40)
    susc.bif(jax.random.key(1), loss_fn, jnp.ones(3), problem(4), {"X": jnp.ones((7, 3)), "y": jnp.ones(7)},
             **kw)
    assert any("run_block" in (f or "") for f in lowerings)   # the counter sees a real recompile


def test_import_susc_changes_no_jax_setting():
    script = textwrap.dedent("""
        import jax
        before = dict(jax.config.values)
        import susc, susc.experiments  # noqa: F401
        changed = {k: (before.get(k), v) for k, v in jax.config.values.items() if before.get(k) != v}
        assert not changed, changed
        susc.config.setup()
        assert jax.config.values["jax_compilation_cache_dir"]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], env=ENV, timeout=120, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-3000:]


def test_stacked_runs_shard_the_chain_axis(tmp_path):
    script = textwrap.dedent("""
        import warnings, jax, jax.numpy as jnp, numpy as np, susc
        loss, data = susc.potential_loss(lambda w: 0.5 * jnp.sum(w ** 2))
        masks = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        r = susc.sample(jax.random.key(0), loss, jnp.zeros(2), data, sampler=susc.sgld(1e-2), nbeta=5.0,
                        num_chains=8, num_draws=10, masks=masks, progress=False)
        leaf = r.final_state.loss
        assert leaf.shape == (2, 8) and len(leaf.sharding.device_set) == 4, leaf.sharding
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            susc.sample(jax.random.key(0), loss, jnp.zeros(2), data, sampler=susc.sgld(1e-2), nbeta=5.0,
                        num_chains=6, num_draws=10, progress=False)
        assert any("not a multiple of the 4 devices" in str(x.message) for x in w), [str(x.message) for x in w]
        print("ok")
    """)
    env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", script], env=env, timeout=300, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-3000:]
