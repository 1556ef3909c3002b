"""The corpus-susceptibility experiment end to end (reduced sizes) and its probe-label alignment.

Conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}; χ^C_xy = −Cov[φ_C, ℓ_xy − L]; after per-layer
standardization negative ⇒ the head expresses the token.
"""
import numpy as np
import pytest

from susc import experiments
from susc.data import LABELS, load_tokenizer
from susc.experiments import corpus

# Same training fields as tiny (so the shipped checkpoint is used, no training), tiny sampling.
SMALL = dict(num_eval=8, probe_sequences=4, probe_chunk=2, num_chains=1, num_draws=8, num_batches=2,
             checkpoint_every=4, sample_windows=64)


def _brute_force_induction(row):
    """Oracle for the induction rule: the trigram ending at i occurred earlier in the row."""
    seen, out = set(), np.zeros(len(row), bool)
    for i in range(2, len(row)):
        tri = tuple(int(x) for x in row[i - 2:i + 1])
        out[i] = tri in seen
        seen.add(tri)
    return out


def test_probe_labels_align_with_targets():
    tok = load_tokenizer()
    cfg = corpus.CorpusConfig(num_eval=16)
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
    N = cfg.probe_sequences * T
    assert a["Z"].shape == (N, K) and a["chi"].shape == (K, N) and np.all(np.isfinite(a["Z"]))
    np.testing.assert_array_equal(a["probe_labels"], corpus.probe_labels(a["probe_tokens"]))
    # per-layer standardization: each layer's block is row-centred
    for l in range(2):
        np.testing.assert_allclose(a["Z"][:, l * H:(l + 1) * H].sum(axis=1), 0, atol=1e-9)
    # heads × classes = class means of Z; counts add up to the probe tokens
    labels = a["probe_labels"].reshape(-1)
    inv = {v: k for k, v in LABELS.items()}
    for j, c in enumerate(a["class_names"]):
        np.testing.assert_allclose(a["heads_by_classes"][:, j], a["Z"][labels == inv[str(c)]].mean(0), atol=1e-12)
    assert a["class_counts"].sum() == N
    # PCA: orthonormal loadings, decreasing ratios summing to at most 1
    for V, r in zip(a["pca_components"], a["pca_ratio"]):
        np.testing.assert_allclose(V @ V.T, np.eye(len(V)), atol=1e-10)
        assert np.all(np.diff(r) <= 1e-12) and r.sum() <= 1 + 1e-12
    # the record is reloadable and checksummed
    again = experiments.load_results("corpus-susceptibility", "tiny", tmp_path)
    np.testing.assert_array_equal(again.arrays["Z"], a["Z"])
    assert again.record["config"]["num_draws"] == SMALL["num_draws"]
