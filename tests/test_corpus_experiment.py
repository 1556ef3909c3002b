"""The corpus-susceptibility experiment end to end (reduced sizes) and its probe-label alignment.

Conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}; χ^C_xy = −Cov[φ_C, ℓ_xy − L]; after per-layer
standardization negative ⇒ the head expresses the token.
"""
import numpy as np
import pytest

from susc import experiments
from susc.data import LABELS, load_tokenizer
from susc.experiments import corpus

# The tiny model trains in seconds; tiny sampling.
SMALL = dict(train_steps=100, snapshot_every=25, warmup_steps=10, probe_sequences=4, probe_chunk=2,
             sample_batch=2, num_seeds=2, num_chains=2, num_draws=8, num_burnin=2, num_batches=2,
             checkpoint_every=4, develop_draws=4, sweep_draws=4, response_draws=4,
             response_burnin=2)


def _brute_force_induction(row):
    """Oracle for the induction rule: the trigram ending at i occurred earlier in the row."""
    seen, out = set(), np.zeros(len(row), bool)
    for i in range(2, len(row)):
        tri = tuple(int(x) for x in row[i - 2:i + 1])
        out[i] = tri in seen
        seen.add(tri)
    return out


def test_probe_labels_align_with_targets():
    cfg = corpus.CorpusConfig(num_eval=16)
    tok = load_tokenizer(vocab_size=cfg.vocab_size)
    _, ev = corpus.make_data(cfg)
    windows = ev["tokens"]
    lab = corpus.probe_labels(windows, tok)
    assert lab.shape == (windows.shape[0], windows.shape[1] - 1)
    ind = [k for k, v in LABELS.items() if v == "induction"][0]
    ws = [k for k, v in LABELS.items() if v in ("spacing", "formatting")]
    n_ind = 0
    for w, l in zip(windows, lab):
        rep = _brute_force_induction(w)[1:]                  # shifted to target positions
        kind = np.array([tok.token_bytes[int(x)].strip() == b"" for x in w[1:]])  # whitespace tokens
        # induction label ⇔ repeated trigram on a non-whitespace target
        np.testing.assert_array_equal(l == ind, rep & ~kind & (w[1:] != tok.eot_id))
        # whitespace targets carry whitespace classes: the label refers to tokens[:, 1:], not [:, :-1]
        assert np.all(np.isin(l[kind & (w[1:] != tok.eot_id)], ws))
        n_ind += int((l == ind).sum())
    assert n_ind > 0                                         # code repeats: the oracle is exercised


@pytest.mark.slow
def test_corpus_experiment_end_to_end(tmp_path):
    res = experiments.run("corpus-susceptibility", "tiny", root=tmp_path, progress=False, **SMALL)
    a, cfg = res.arrays, corpus.CorpusConfig(**SMALL)
    T, K, H = cfg.seq_len, 2 * cfg.n_heads, cfg.n_heads
    N, S = cfg.probe_sequences * T, cfg.num_seeds
    assert a["Z"].shape == (S, N, K) and a["chi"].shape == (S, K, N) and np.all(np.isfinite(a["Z"]))
    assert a["Z_control"].shape == (N, K) and a["rhat"].shape == (K,)
    assert a["Z_develop"].shape == (len(a["develop_steps"]), N, K)
    assert a["token_class"].shape == a["subset"].shape == (N,)
    tok = load_tokenizer(vocab_size=cfg.vocab_size)
    np.testing.assert_array_equal(a["token_class"],
                                  corpus.probe_labels(a["probe_tokens"], tok).reshape(-1))
    # seeds differ (independent chains), the control differs from the real run
    assert not np.allclose(a["Z"][0], a["Z"][1]) and not np.allclose(a["Z"][0], a["Z_control"])
    # per-layer standardization: each layer's block is row-centred, in every seed
    for l in range(2):
        np.testing.assert_allclose(a["Z"][:, :, l * H:(l + 1) * H].sum(axis=2), 0, atol=1e-5)
    # L at each draw is the probe-set mean: the restricted traces start near L(w*)
    assert abs(a["restricted_loss"][..., 0].mean() - a["init_loss"]) < 0.5
    # the finite-difference oracle stage: one estimate per (subset, head), finite
    R = len(cfg.response_subsets)
    for k in ("fd", "fd_se", "chi", "chi_se", "delta_mean"):
        assert a[f"response_{k}"].shape == (R, K) and np.all(np.isfinite(a[f"response_{k}"]))
    assert a["chi_restricted"].shape == (K, N)
    again = experiments.load_results("corpus-susceptibility", "tiny", tmp_path)
    np.testing.assert_array_equal(again.arrays["Z"], a["Z"])
