"""Tests of the experiment CLI, resumability, the shipped checkpoint and induction-head identification.

Oracles: an interrupted-then-resumed run must reproduce an uninterrupted run bit for bit; a masked
SGLD chain must leave every coordinate outside its head exactly at w*; the planted induction
labels (`make_synthetic`'s ``source``) define which head attends like an induction head, and
zero-ablation defines which head the induction tokens need; susceptibilities must agree.
Conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}, χ = −Cov[φ, ΔL] (negative ⇒ expresses).
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import susc
from susc import artifacts, config, experiments
from susc.__main__ import main
from susc.experiments import circuits
from susc.experiments import transformer as T
from susc.models.masks import PER_HEAD_LEAVES, head_mask, path_name
from susc.models.transformer import make_loss_fn

# A reduced tiny config: trains in-process in seconds; every code path of the real run.
SMALL = dict(vocab_size=32, seq_len=16, num_train=256, num_eval=32, train_steps=40, train_batch=16,
             warmup_steps=5, num_chains=2, num_draws=8, sample_batch=16, probe_sequences=8,
             num_batches=4, checkpoint_every=4, use_shipped=False)
SET = [f"--set={k}={json.dumps(v)}" for k, v in SMALL.items()]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    rc = main(["run", "transformer-susceptibility", "--profile", "tiny", "--out", str(root), "--quiet", *SET])
    assert rc == 0
    return root, experiments.load_results("transformer-susceptibility", "tiny", root)


@pytest.mark.slow
def test_cli_writes_arrays_and_record(cli_run, capsys):
    root, res = cli_run
    rec = res.record
    assert rec["experiment"] == "transformer-susceptibility" and rec["profile"] == "tiny"
    assert rec["config"]["num_draws"] == SMALL["num_draws"]
    assert {"git", "device", "packages"} <= set(rec["provenance"])
    assert rec["timings"]["total_s"] > 0 and rec["timings"]["restricted_s"] > 0
    K, N = 8, SMALL["probe_sequences"] * SMALL["seq_len"]        # 2 layers × 4 heads, probe tokens
    assert res.arrays["chi"].shape == (K, N) and res.arrays["Z"].shape == (N, K)
    assert np.all(np.isfinite(res.arrays["chi"])) and np.all(res.arrays["chi_se"] > 0)
    # per-layer standardization: every layer block is row-centred (float precision)
    Z = res.arrays["Z"]
    np.testing.assert_allclose(Z[:, :4].sum(1), 0, atol=1e-9)
    np.testing.assert_allclose(Z[:, 4:].sum(1), 0, atol=1e-9)
    # a second call with the same config loads, recomputes nothing
    again = experiments.run("transformer-susceptibility", "tiny", root=root, **SMALL)
    assert again.record["created"] == rec["created"]
    assert main(["list"]) == 0 and "transformer-susceptibility" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.run("no-such-experiment", "tiny", root=root)


@pytest.mark.slow
def test_resume_after_interruption_gives_identical_arrays(cli_run, tmp_path, monkeypatch):
    _, ref = cli_run

    class Stop(Exception):
        pass

    def stop(done):
        if done == SMALL["checkpoint_every"]:
            raise Stop

    import susc.estimators.structural as S   # the sampler the experiment reaches
    monkeypatch.setattr(S, "sample", functools.partial(susc.sample, on_block=stop))
    with pytest.raises(Stop):
        experiments.run("transformer-susceptibility", "tiny", root=tmp_path, progress=False, **SMALL)
    work = experiments.results_dir("transformer-susceptibility", "tiny", tmp_path) / "work"
    blocks = list((work / "samples" / "restricted").glob("block-*"))
    assert (work / "model.npz").exists() and len(blocks) == 1 and (blocks[0] / "meta.json").exists()
    monkeypatch.undo()
    resumed = experiments.run("transformer-susceptibility", "tiny", root=tmp_path, progress=False, **SMALL)
    assert set(resumed.arrays) == set(ref.arrays)
    for name, arr in ref.arrays.items():
        np.testing.assert_array_equal(resumed.arrays[name], arr, err_msg=name)


def test_shipped_checkpoint_loads_with_checksum(tmp_path):
    cfg = config.get_config("transformer-synthetic", "tiny")
    params, record = T.load_model(cfg)                       # no work_dir: must be the shipped one
    assert record["sha256"] == artifacts.sha256_file(T.CHECKPOINT_DIR / "synthetic-tiny.npz")
    assert record["metadata"]["train_settings"]["train_steps"] == cfg.train_steps
    assert (T.CHECKPOINT_DIR / "synthetic-tiny.npz").stat().st_size < 1_000_000
    bad = tmp_path / "bad"
    artifacts.save_params(bad, params)
    raw = bytearray((tmp_path / "bad.npz").read_bytes())
    raw[-100] ^= 0xFF                                          # corrupt one byte
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(artifacts.ChecksumError):
        artifacts.load_params(bad)


def test_planted_induction_head_by_attention_and_ablation():
    """The shipped model has an induction circuit: one layer-1 head attends to the planted source."""
    cfg = config.get_config("transformer-synthetic", "tiny")
    params, _ = T.load_model(cfg)
    mcfg = T.model_config(cfg)
    _, ev = T.make_data(cfg)
    tok, lab, src = ev["tokens"][:128], ev["labels"][:128], ev["source"][:128]
    att = circuits.induction_attention_score(params, tok, src, mcfg)
    abl = circuits.ablation_increase(params, tok, mcfg, lab == 1)
    abl_random = circuits.ablation_increase(params, tok, mcfg, lab == 0)
    H = mcfg.n_heads
    top = int(np.argmax(att[H:])) + H
    # a head attending uniformly scores mean 1/(t+1) ≈ 0.06 on these positions; induction ≫ that
    assert att[top] > 0.3 > att[:H].max()
    assert top == H + int(np.argmax(abl[H:]))                 # ablation agrees on the layer-1 head
    assert abl[top] > 3 * abl_random[top]                     # and it matters for induction tokens


@pytest.mark.slow
def test_masked_chain_moves_only_its_head():
    cfg = config.get_config("transformer-synthetic", "tiny")
    params, _ = T.load_model(cfg)
    mcfg = T.model_config(cfg)
    tr, _ = T.make_data(cfg)
    layer, head = 1, 2
    res = susc.sample(jax.random.key(0), make_loss_fn(mcfg), params, {"tokens": jnp.asarray(tr["tokens"][:64])},
                      sampler=susc.sgld(1e-3), nbeta=30.0, gamma=300.0, num_chains=2, num_draws=3,
                      batch_size=16, mask=head_mask(params, layer, head), progress=False)
    final = res.final_state.position
    for (path, new), old in zip(jax.tree_util.tree_flatten_with_path(final)[0], jax.tree.leaves(params)):
        name, d = path_name(path), np.asarray(new) - np.asarray(old)[None]       # [chains, ...]
        leaf = name.rsplit("/", 1)[-1]
        if name.startswith(f"blocks/{layer}/attn/") and leaf in PER_HEAD_LEAVES:
            assert np.all(np.delete(d, head, axis=1) == 0), name
            assert np.all(np.abs(d[:, head]).reshape(d.shape[0], -1).max(axis=1) > 0), name  # each chain moved it
        else:
            assert np.all(d == 0), name


def test_results_display_path_is_repository_relative(tmp_path):
    """The book prints `display_path`: no absolute path of the build machine inside the repo."""
    inside = experiments.Results({}, {}, experiments.results_dir("x", "tiny"))
    assert inside.display_path == "data/results/x/tiny"
    outside = experiments.Results({}, {}, tmp_path / "x")
    assert outside.display_path == str(tmp_path / "x")
