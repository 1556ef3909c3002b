"""Pieces of the corpus-structure pipeline with known answers: merge-prefix vocabularies, corpus
subsets, the induction readouts, resumable snapshot training, draw_loss="observable:…" and the
analyses of `susc.experiments.structure` (planted directions, permutation nulls, SE calibration).

Conventions: χ^C_xy = −Cov[φ_C, ℓ_xy − L]; Z is standardized per layer, negative ⇒ expresses.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from susc import sample, sgld
from susc.data.corpus import load_corpus_tokens, load_tokenizer, reduce_vocab
from susc.data.subsets import SUBSETS, prose_mask, token_subsets
from susc.experiments import formation, structure
from susc.models.transformer import TransformerConfig, init_params, make_loss_fn
from susc.sampling.observables import observable


def test_reduce_vocab_equals_encoding_with_the_merge_prefix():
    tok = load_tokenizer()
    small = load_tokenizer(vocab_size=700)
    assert small.vocab_size == 700 and small.eot_id == 699
    stream = load_corpus_tokens()[:6000]
    ids, src = reduce_vocab(stream, tok, 700)
    text = tok.decode(stream)
    parts = text.split("<|endoftext|>")
    enc = []
    for i, part in enumerate(parts):
        if i:
            enc.append(np.array([small.eot_id]))
        enc.append(small.encode(part))
    np.testing.assert_array_equal(ids, np.concatenate(enc))
    assert ids.max() < 700 and np.all(np.diff(src) >= 0) and src[-1] == len(stream) - 1
    with pytest.raises(ValueError, match="vocab_size"):
        load_tokenizer(vocab_size=100)


def test_prose_mask_marks_comments_and_docstrings_only():
    src = b'def f(x):\n    """Doc."""\n    y = "#no"  # yes\n    return x\n'
    m = prose_mask(src)
    marked = bytes(b for b, k in zip(src, m) if k)
    assert marked == b'"""Doc."""# yes'
    # a file that does not tokenize falls back to the regex
    bad = b'x = (\n# c\n"""d'
    assert bytes(b for b, k in zip(bad, prose_mask(bad)) if k) == b'# c"""d'


def test_token_subsets_cover_all_kinds():
    s = token_subsets(np.arange(0, 2_700_000, 997), vocab_size=1024)
    counts = np.bincount(s, minlength=len(SUBSETS))
    assert np.all(counts > 0), dict(zip(SUBSETS, counts))


def test_induction_readouts_of_a_hand_built_copying_pattern():
    """repeat_windows/repeated_sequences layout, and formation_step on a known curve."""
    toks = np.arange(2 * 9).reshape(2, 9)
    w = formation.repeat_windows(toks)
    np.testing.assert_array_equal(w[0], [0, 1, 2, 3, 0, 1, 2, 3, 0])
    r = formation.repeated_sequences(jax.random.key(0), 3, 5, 300)
    np.testing.assert_array_equal(r[:, :5], r[:, 5:10])
    assert r.min() >= 256 and r.max() < 299
    steps = np.arange(0, 1100, 100)
    y = np.where(steps < 400, 0.0, np.where(steps > 600, -2.0, -(steps - 400) / 100.0))
    assert formation.formation_step(steps, y) == 500
    assert formation.formation_step(steps, y, fraction=0.9) == 600


@dataclasses.dataclass(frozen=True)
class _Train:
    train_steps: int = 6
    learning_rate: float = 1e-2
    warmup_steps: int = 2
    train_batch: int = 4
    init_seed: int = 0
    train_seed: int = 1


def test_train_with_snapshots_resumes_bitwise(tmp_path):
    mcfg = TransformerConfig(vocab_size=40, n_layers=2, n_heads=2, d_model=8, d_head=4, context_length=8)
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 40, (16, 9)).astype(np.int32)
    ev, rep = tr[:4], formation.repeat_windows(tr[:4])
    full = formation.train_with_snapshots(_Train(), mcfg, tr, ev, rep, tmp_path / "a", chunk=2)
    assert len(full["snapshots"]) == 4 and full["prefix_matching"].shape == (4, 4)
    np.testing.assert_array_equal(full["eval_step"], [0, 2, 4, 6])
    # a staged run: stop after the first chunk, then continue from the saved state
    formation.train_with_snapshots(_Train(), mcfg, tr, ev, rep, tmp_path / "b", chunk=2, stop_at=2)
    part = formation.train_with_snapshots(_Train(), mcfg, tr, ev, rep, tmp_path / "b", chunk=2)
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]  # noqa: E731
    np.testing.assert_array_equal(flat(full["params"]), flat(part["params"]))
    np.testing.assert_array_equal(part["loss"], full["loss"])
    for a, b in zip(full["snapshots"], part["snapshots"]):
        np.testing.assert_array_equal(flat(a), flat(b))
    # snapshots are files written once; the state file does not carry them
    assert sorted(f.name for f in (tmp_path / "b" / "snapshots").iterdir()) == [
        f"step{s:07d}.npy" for s in (0, 2, 4, 6)]
    with np.load(tmp_path / "b" / "train_state.npz") as z:
        assert "snapshots" not in z.files
    # a state of the older layout (snapshots inside the npz) resumes identically
    formation.train_with_snapshots(_Train(), mcfg, tr, ev, rep, tmp_path / "c", chunk=2, stop_at=4)
    c = tmp_path / "c"
    with np.load(c / "train_state.npz") as z:
        old = {k: z[k] for k in z.files}
    old["snapshots"] = np.stack([np.load(f) for f in sorted((c / "snapshots").iterdir())])
    np.savez(c / "train_state.npz", **old)
    for f in (c / "snapshots").iterdir():
        f.unlink()
    mig = formation.train_with_snapshots(_Train(), mcfg, tr, ev, rep, c, chunk=2)
    np.testing.assert_array_equal(flat(full["params"]), flat(mig["params"]))
    for a, b in zip(full["snapshots"], mig["snapshots"]):
        np.testing.assert_array_equal(flat(a), flat(b))


def test_draw_loss_can_be_the_mean_of_an_observable():
    """L at each draw = the mean of the recorded per-row losses, and nothing else changes."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(24, 3)), jnp.float32)
    y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jnp.asarray(rng.normal(size=24), jnp.float32)
    data = {"x": X, "y": y}
    loss_fn = lambda w, b: (b["x"] @ w["w"] - b["y"]) ** 2            # noqa: E731
    w0 = {"w": jnp.array([1.0, -2.0, 0.5])}
    kw = dict(sampler=sgld(1e-3), nbeta=24.0, gamma=10.0, num_chains=2, num_draws=20, batch_size=6,
              progress=False)
    obs = {"probe": observable(loss_fn, data, chunk_size=5)}
    a = sample(jax.random.key(1), loss_fn, w0, data, observables=obs,
               draw_loss="observable:probe", **kw)
    b = sample(jax.random.key(1), loss_fn, w0, data, observables=obs, draw_loss="full", **kw)
    np.testing.assert_allclose(a.loss, a.observables["probe"].mean(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)           # here the probe set is the data
    np.testing.assert_array_equal(a.observables["probe"], b.observables["probe"])
    with pytest.raises(ValueError, match="observable:<name>"):
        sample(jax.random.key(1), loss_fn, w0, data, observables=obs, draw_loss="observable:nope", **kw)


# ------------------------------------------------------------------ analyses with known answers
def _planted(N=3000, H=4, strength=1.0, seed=0):
    """Z [N, 2H] whose layer-1 block has a direction v aligned with the label (plus noise)."""
    rng = np.random.default_rng(seed)
    lab = rng.random(N) < 0.1
    Z = rng.normal(size=(N, 2 * H))
    v = np.array([1.0, -1.0, 0.5, -0.5])
    Z[:, H:] += strength * np.outer(lab - lab.mean(), v) + 0.3 * np.outer(rng.normal(size=N), v)
    return Z, lab, v


def test_label_free_direction_finds_a_planted_direction_and_pays_for_selection():
    Z, lab, v = _planted()
    r = structure.label_free_direction(Z, lab, 2, k=3, num_perm=200)
    assert r["layer"] == 1 and r["p_value"] <= 1 / 201 + 1e-12 and r["auc"] > 0.75
    cos = abs(r["components"][1, r["pc"]] @ v) / np.linalg.norm(v)
    assert cos > 0.95
    # null: labels independent of Z -> p-values not concentrated near 0 (selection is paid for)
    ps = [structure.label_free_direction(Z, np.random.default_rng(s).random(len(lab)) < 0.1, 2,
                                         num_perm=100, seed=s)["p_value"] for s in range(20)]
    assert np.mean(np.array(ps) < 0.05) <= 0.2 and np.mean(ps) > 0.3


def test_loading_cosines_and_eta_squared():
    Z, lab, v = _planted(seed=1)
    Z2, _, _ = _planted(seed=2)
    C = structure.loading_cosines([Z, Z, Z2], 1, 0, 2)
    np.testing.assert_allclose(np.diag(C), 1, atol=1e-12)
    np.testing.assert_allclose(C[0, 1], 1, atol=1e-12)
    from scipy.stats import f_oneway
    score = Z[:, 4]
    labels = np.random.default_rng(0).integers(0, 3, len(score)) + 2 * lab
    e = structure.eta_squared(score, labels)
    groups = [score[labels == c] for c in np.unique(labels)]
    F = f_oneway(*groups).statistic
    k, n = len(groups), len(score)
    np.testing.assert_allclose(e, F * (k - 1) / (F * (k - 1) + n - k), rtol=1e-10)
    s = structure.separation_null(score, lab, num_perm=200)
    assert s["p_value"] < 0.01 and s["eta2"] > s["null_q99"]


def test_seed_z_is_standard_normal_for_calibrated_errors():
    rng = np.random.default_rng(0)
    truth, se_a, se_b = rng.normal(size=5000), rng.uniform(0.5, 2, 5000), rng.uniform(0.5, 2, 5000)
    z = structure.seed_z(truth + se_a * rng.normal(size=5000), se_a, truth + se_b * rng.normal(size=5000), se_b)
    assert abs(np.mean(z ** 2) - 1) < 4 * np.sqrt(2 / 5000)


def test_stage_deadline_stops_training_resumably(tmp_path):
    from susc.experiments import common
    mcfg = TransformerConfig(vocab_size=40, n_layers=2, n_heads=2, d_model=8, d_head=4, context_length=8)
    tr = np.random.default_rng(0).integers(0, 40, (16, 9)).astype(np.int32)
    rep = formation.repeat_windows(tr[:4])
    common.set_deadline(0.0)
    try:
        with pytest.raises(common.StageTimeout):
            formation.train_with_snapshots(_Train(), mcfg, tr, tr[:4], rep, tmp_path, chunk=2,
                                           on_chunk=common.check_deadline)
    finally:
        common.set_deadline(None)
    common.check_deadline()                                     # no deadline: a no-op
    done = formation.train_with_snapshots(_Train(), mcfg, tr, tr[:4], rep, tmp_path, chunk=2)
    ref = formation.train_with_snapshots(_Train(), mcfg, tr, tr[:4], rep, tmp_path / "r", chunk=2)
    np.testing.assert_array_equal(done["loss"], ref["loss"])


def test_crossing_step_interpolates_and_censors():
    steps = np.array([0, 50, 100, 150])
    y = np.array([0.05, 0.1, 0.3, 0.35])
    assert formation.crossing_step(steps, y, 0.2) == pytest.approx(75.0)
    assert formation.crossing_step(steps, y, 0.04) == 0.0
    assert formation.crossing_step(steps, y, 0.5) == float("inf")
    # first crossing, not the last
    assert formation.crossing_step(steps, np.array([0.0, 1.0, 0.0, 1.0]), 0.5) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="1-D"):
        formation.crossing_step(steps, y[:3], 0.2)
