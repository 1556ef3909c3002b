"""Attribution harness (susc.attribution): known answers for the metrics, the retraining ground
truth and the classical methods. Score sign: scores[i, j] = change of query j's loss from
including training example i (positive = raises)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from susc import attribution as A
from susc.data.digits import flip_labels, load_digits, split_digits
from susc.models.classifier import (convnet_forward, convnet_loss, init_convnet, init_mlp,
                                    mlp_forward, mlp_loss)

def _ridge_problem(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.standard_normal(n)).astype(np.float32)
    return {"x": X, "y": y}

def sq_loss(w, batch):
    return 0.5 * (batch["x"] @ w["w"] - batch["y"]) ** 2

def _ridge(data, rho, lam):
    """argmin Σρℓ/Σρ + (λ/2)‖w‖² in closed form (float64)."""
    X, y = np.float64(data["x"]), np.float64(data["y"])
    r = np.asarray(rho, np.float64) / np.sum(rho)
    return np.linalg.solve(X.T @ (r[:, None] * X) + lam * np.eye(X.shape[1]), X.T @ (r * y))

def test_random_subsets_exact_size_and_errors():
    s = A.random_subsets(50, 7, 0.3, seed=2)
    assert s.shape == (7, 50) and s.dtype == bool and np.all(s.sum(1) == 15)
    with pytest.raises(ValueError, match="fraction"):
        A.random_subsets(50, 7, 1.0)
    with pytest.raises(ValueError, match="num_subsets"):
        A.random_subsets(50, 1)

def test_lds_perfect_reversed_and_null():
    rng = np.random.default_rng(0)
    n, q, M = 60, 30, 200
    tau = rng.standard_normal((n, q))
    S = A.random_subsets(n, M, 0.5, seed=1)
    realized = S @ tau + 5.0                      # a linear datamodel: LDS must be exactly 1
    assert A.lds(tau, S, realized).value == pytest.approx(1.0)
    assert A.lds(-tau, S, realized).value == pytest.approx(-1.0)
    # Null: scores unrelated to the truth. Both predictions and truth are random linear functionals
    # of the same subset indicators, so a query's correlation has sd ≈ sqrt(1/n + 1/M) (the 1/n from
    # the random overlap of two n-vectors); the mean over q queries is within 4 SE of 0.
    null = A.lds(rng.standard_normal((n, q)), S, realized)
    assert abs(null.value) <= 4 * null.se
    assert null.se == pytest.approx(np.sqrt((1 / n + 1 / M) / q), rel=0.4)
    with pytest.raises(ValueError, match=r"\[M, q\]"):
        A.lds(tau, S, realized[:, :5])

def test_spearman_matches_scipy():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    a[:5, 0] = 1.0                                 # ties
    ours = A.spearman_columns(a, b)
    for j in range(3):
        assert ours[j] == pytest.approx(spearmanr(a[:, j], b[:, j]).statistic)

def test_detection_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    pos = rng.random(200) < 0.1
    score = rng.standard_normal(200) + 1.5 * pos
    score[:10] = 0.25                              # ties
    assert A.detection_auc(score, pos) == pytest.approx(roc_auc_score(pos, score))
    assert A.precision_at_k(np.arange(10.0), np.arange(10) >= 7, 3) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        A.detection_auc(score, np.zeros(200, bool))

def test_retrain_reaches_the_weighted_ridge_optimum():
    data = _ridge_problem()
    rho = np.stack([np.ones(40), (np.arange(40) % 3 == 0).astype(float), np.linspace(0.1, 2, 40)])
    w0 = {"w": jnp.zeros(3)}
    W = A.retrain(sq_loss, w0, data, rho, steps=3000, learning_rate=0.05, weight_decay=0.1, chunk=2)
    for m in range(3):
        np.testing.assert_allclose(W["w"][m], _ridge(data, rho[m], 0.1), atol=2e-4)
    with pytest.raises(ValueError, match=r"\[M, n\]"):
        A.retrain(sq_loss, w0, data, np.ones((2, 39)), steps=5)
    with pytest.raises(ValueError, match="positive total"):
        A.retrain(sq_loss, w0, data, np.zeros((1, 40)), steps=5)

def test_classical_influence_is_the_derivative_of_the_retrained_query_loss():
    """On ridge regression the influence is exact to first order: d ℓ_j(w*(ρ))/dρ_i at ρ = 1
    equals −q_jᵀ H⁻¹ g_i / n (H of the training objective). Checked against central finite
    differences of the closed-form weighted optimum: a sign or a factor of n would fail."""
    data, lam = _ridge_problem(), 0.1
    query = _ridge_problem(n=5, seed=9)
    w = {"w": jnp.asarray(_ridge(data, np.ones(40), lam), jnp.float32)}
    G = A.per_example_grads(sq_loss, w, data)
    Gq = A.per_example_grads(sq_loss, w, query)
    eig = A.hessian_eigen(sq_loss, w, data, weight_decay=lam)
    scores = A.classical_influence(G, Gq, eig, damping=0.0)
    h = 1e-4
    Xq, yq = np.float64(query["x"]), np.float64(query["y"])
    fd = np.zeros((40, 5))
    for i in range(40):
        up, dn = np.ones(40), np.ones(40)
        up[i] += h
        dn[i] -= h
        lu = 0.5 * (Xq @ _ridge(data, up, lam) - yq) ** 2
        ld = 0.5 * (Xq @ _ridge(data, dn, lam) - yq) ** 2
        fd[i] = (lu - ld) / (2 * h)
    # The objective is normalized by Σρ (= n at ρ = 1): the derivative includes the −(1/n)·mean term,
    # the same for every i; remove it from both sides (including-minus-average).
    np.testing.assert_allclose(scores - scores.mean(0), fd - fd.mean(0), rtol=2e-3, atol=2e-5)

def test_per_example_grads_and_hessian():
    data = _ridge_problem()
    w = {"w": jnp.array([0.3, -0.1, 0.2])}
    G = A.per_example_grads(sq_loss, w, data)
    X, y = np.float64(data["x"]), np.float64(data["y"])
    np.testing.assert_allclose(G, (X @ np.float64(w["w"]) - y)[:, None] * X, rtol=1e-4, atol=1e-5)
    eig = A.hessian_eigen(sq_loss, w, data, weight_decay=0.5)
    H = eig.eigenvectors @ np.diag(eig.eigenvalues) @ eig.eigenvectors.T
    np.testing.assert_allclose(H, X.T @ X / 40 + 0.5 * np.eye(3), rtol=1e-4)

def test_projected_influence_full_rank_limit_and_similarity():
    """With dim ≥ d and no damping the random projection cancels: −G (GᵀG/n)⁻¹ G_qᵀ / n."""
    rng = np.random.default_rng(0)
    G, Gq = rng.standard_normal((50, 4)), rng.standard_normal((6, 4))
    want = -G @ np.linalg.solve(G.T @ G / 50, Gq.T) / 50
    np.testing.assert_allclose(A.projected_influence(G, Gq, dim=4, damping=0.0), want, rtol=1e-8)
    np.testing.assert_allclose(A.gradient_similarity(G, Gq, learning_rate=0.1), -0.1 * G @ Gq.T)
    cos = A.gradient_similarity(G, Gq, normalize=True)
    assert np.all(np.abs(cos) <= 1 + 1e-12)
    np.testing.assert_allclose(A.self_influence(G), (G ** 2).sum(1))

def test_bif_scores_units():
    np.testing.assert_allclose(A.bif_scores(np.ones((3, 2)), nbeta=20.0, n=10), 2.0 * np.ones((3, 2)))

def test_digits_data_and_models():
    d = load_digits()
    assert d["x"].shape == (1797, 8, 8, 1) and d["x"].max() == 1.0 and set(d["y"]) == set(range(10))
    sp = split_digits(100, 20, seed=1)
    assert not set(sp.train_index) & set(sp.query_index)
    with pytest.raises(ValueError, match="n_train"):
        split_digits(1700, 200)
    y, flipped = flip_labels(sp.train["y"], 0.1, seed=0)
    assert flipped.sum() == 10 and np.all(y[flipped] != sp.train["y"][flipped])
    assert np.all(y[~flipped] == sp.train["y"][~flipped])
    for init, fwd, loss in [(lambda k: init_mlp(k, 64, (16,), 10), mlp_forward, mlp_loss),
                            (lambda k: init_convnet(k, (8, 8, 1), 4, 10), convnet_forward, convnet_loss)]:
        p = init(jax.random.key(0))
        logits = fwd(p, sp.train["x"])
        assert logits.shape == (100, 10)
        ref = -jax.nn.log_softmax(logits)[np.arange(100), sp.train["y"]]
        np.testing.assert_allclose(loss(p, sp.train), ref, rtol=1e-5, atol=1e-6)
    # The convnet's patches-as-matmul convolution equals XLA's SAME convolution.
    p = init_convnet(jax.random.key(1), (8, 8, 1), 3, 10)
    conv = jax.lax.conv_general_dilated(sp.train["x"], p["conv"]["w"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(conv + p["conv"]["b"]).reshape(100, 4, 2, 4, 2, 3).mean((2, 4))
    np.testing.assert_allclose(convnet_forward(p, sp.train["x"]),
                               h.reshape(100, -1) @ p["out"]["w"] + p["out"]["b"], atol=1e-5)


def test_attribution_experiment_tiny_path(tmp_path):
    """The tiny path of `python -m susc run attribution-lds` end to end (CI runs it live; the
    chapter shows the shipped small results): required arrays, shapes, and a record whose LDS
    and AUC are recomputable from the arrays."""
    from susc import experiments
    sizes = dict(n_train=80, n_query=12, num_subsets=24, train_steps=200, num_draws=40,
                 num_burnin=50, bif_grid=[[50.0, 10.0], [145.0, 10.0]], projection_dim=64, loo_count=6,
                 models=["mlp", "convnet"], channels=2, secondary_subsets=10, kernel_size=30)
    r = experiments.run("attribution-lds", "tiny", root=tmp_path, progress=False, **sizes)
    a = r.arrays
    assert a["subsets"].shape == (24, 80) and a["subsets"].dtype == bool
    assert a["retrained_query_loss"].shape == (24, 12)
    assert a["scores"].shape == (5, 80, 12) and list(a["method_names"])[0] == "bif"
    assert a["flipped"].shape == (80,) and a["flipped"].sum() == 4
    assert a["self_influence"].shape == (4, 80) and a["loo_effect"].shape == (6, 12)
    assert a["loss_kernel"].shape == (30, 30) and np.allclose(np.diag(a["loss_kernel"]), 1, atol=1e-5)
    assert a["fraction_lds"].shape == (2, 5, 2) and a["fraction_subsets"].shape == (2, 24, 80)
    # The second model: its own referee (10 subsets), no LOO and no extra referees.
    assert a["convnet_subsets"].shape == (10, 80) and a["convnet_scores"].shape == (5, 80, 12)
    assert a["convnet_fraction_lds"].shape == (0, 5, 2) and a["convnet_loo_effect"].shape == (0, 12)
    for k, m in enumerate(a["method_names"]):
        again = A.lds(a["scores"][k], a["subsets"], a["retrained_query_loss"], queries=a["query_eval"])
        assert again.value == pytest.approx(r.summary["mlp"]["lds"][m][0], abs=1e-4)
    for k, m in enumerate(a["noise_method_names"]):
        assert A.detection_auc(a["self_influence"][k], a["flipped"]) == pytest.approx(
            r.summary["mlp"]["noise_auc"][m], abs=1e-4)


def test_token_influence_queries_and_ranks():
    """query_sets finds induction targets and the loss position that predicted the copied token;
    earlier_rank is 0 when that entry is the column's most negative, and excludes the query."""
    from susc.experiments.token_influence import earlier_rank, query_sets
    # BOS a b c a [b]: target index t=4 predicts tokens[5] = b, copied from tokens[2] (source 2).
    tokens = np.array([[0, 20, 21, 22, 20, 21]])
    labels = np.array([[0, 0, 0, 0, 1]])
    source = np.array([[-1, -1, -1, -1, 2]])
    ind, rep = query_sets(tokens, labels, source)
    assert ind.tolist() == [[0, 4, 1]]
    assert rep.tolist() == [[0, 3, 0]]     # target a at t=3 repeats tokens[1], after BOS not c
    # A repeated token without the induction context: BIOS a b c d [b] (preceded by d, not a).
    ind2, rep2 = query_sets(np.array([[0, 20, 21, 22, 23, 21]]), np.zeros((1, 5), int),
                            -np.ones((1, 5), int))
    assert ind2.shape == (0, 3) and rep2.tolist() == [[0, 4, 1]]
    B = np.zeros((1, 1, 5, 5))
    B[0, 0, :, 4] = [0.0, -2.0, -1.0, 0.5, -9.0]     # the query's own entry (-9) is excluded
    assert earlier_rank(B, ind)[0] == 0.0
    B[0, 0, 2, 4] = -3.0
    assert earlier_rank(B, ind)[0] == pytest.approx(1 / 4)


def test_token_influence_experiment_tiny_path(tmp_path):
    """`python -m susc run token-influence` end to end at reduced size (the chapter shows the
    shipped tiny results): arrays, and ranks recomputable from the shipped matrix."""
    from susc import experiments
    from susc.experiments.token_influence import earlier_rank
    r = experiments.run("token-influence", "tiny", root=tmp_path, progress=False, probe_sequences=3,
                        num_draws=16, num_burnin=8, cg_maxiter=3, hessian_sequences=8)
    a = r.arrays
    P, T = a["probe_labels"].shape
    assert P == 3 and a["bif_within"].shape == (3, T, T)
    assert a["rank_bif"].shape == (a["induction_queries"].shape[0],)
    assert np.all((a["rank_bif"] >= 0) & (a["rank_bif"] < 1))
    assert r.summary["num_candidates"] == P * T - 1
    # Within-sequence ranks bound the all-token ranks from below in count: recompute the rank of
    # the first query restricted to its own sequence from bif_within.
    p, t, te = a["induction_queries"][0]
    W = a["bif_within"][p][None, None]
    assert 0 <= earlier_rank(W, [(0, t, te)])[0] < 1


def test_minibatch_retrain_is_noisy_but_unbiased():
    """retrain(batch_size=, key=): rows drawn ∝ ρ. On ridge regression with a decaying step the
    models land near the weighted optimum, differ between keys, and need a key."""
    data = _ridge_problem()
    rho = np.stack([np.ones(40), (np.arange(40) < 20).astype(float)])
    w0 = {"w": jnp.zeros(3)}
    kw = dict(steps=3000, learning_rate=0.05, weight_decay=0.1, batch_size=8)
    W1 = A.retrain(sq_loss, w0, data, rho, key=jax.random.key(1), **kw)
    W2 = A.retrain(sq_loss, w0, data, rho, key=jax.random.key(2), **kw)
    for m in range(2):
        np.testing.assert_allclose(W1["w"][m], _ridge(data, rho[m], 0.1), atol=0.05)
    assert not np.allclose(W1["w"], W2["w"])
    with pytest.raises(ValueError, match="key"):
        A.retrain(sq_loss, w0, data, rho, steps=5, batch_size=8)
