"""Tests of the attention-only transformer, its component masks, training and checkpoints.

Oracles: shapes and the closed-form parameter count; causality by perturbing a future token;
per-token loss against a NumPy cross-entropy; masks against explicit slices; training against
the exact information-theoretic floor log 2 of any model that ignores the other positions.
"""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from susc import artifacts
from susc.models import masks as M
from susc.models.transformer import (PROFILES, Transformer, TransformerConfig, attention_patterns,
                                     count_params, forward, init_params, make_loss_fn,
                                     module_params, set_module_params, token_losses)
from susc.train import train

CFG = TransformerConfig.from_profile("tiny", vocab_size=16, context_length=16)
# jitted once per shape: eager op-by-op dispatch is the slow path on CPU
fwd = jax.jit(forward, static_argnums=2)
patterns = jax.jit(attention_patterns, static_argnums=2)
losses_of = jax.jit(token_losses, static_argnums=2)


@pytest.fixture(scope="module")
def params():
    return init_params(jax.random.key(1), CFG)


def random_tokens(key, n, length, vocab=CFG.vocab_size):
    return jax.random.randint(key, (n, length), 0, vocab, dtype=jnp.int32)


def test_shapes_and_patterns(params):
    tokens = random_tokens(jax.random.key(2), 4, 8)
    logits = fwd(params, tokens, CFG)
    assert logits.shape == (4, 8, CFG.vocab_size)
    pats = patterns(params, tokens, CFG)
    assert pats.shape == (CFG.n_layers, 4, CFG.n_heads, 8, 8)
    np.testing.assert_allclose(pats.sum(-1), 1.0, atol=1e-5)      # rows are distributions
    upper = np.triu(np.ones((8, 8), bool), k=1)
    assert np.all(np.asarray(pats)[..., upper] == 0.0)            # no attention to the future
    assert params["blocks"][0]["attn"]["W_Q"].shape == (CFG.n_heads, CFG.d_model, CFG.d_head)
    assert params["blocks"][0]["attn"]["W_O"].shape == (CFG.n_heads, CFG.d_head, CFG.d_model)
    with pytest.raises(ValueError, match="context_length"):
        forward(params, random_tokens(jax.random.key(0), 1, CFG.context_length + 1), CFG)


def test_causality(params):
    tokens = random_tokens(jax.random.key(3), 4, 8)
    t0 = 5
    changed = tokens.at[:, t0].set((tokens[:, t0] + 1) % CFG.vocab_size)
    a, b = fwd(params, tokens, CFG), fwd(params, changed, CFG)
    np.testing.assert_allclose(a[:, :t0], b[:, :t0], rtol=0, atol=1e-6)
    assert np.all(np.abs(np.asarray(a[:, t0:] - b[:, t0:])).max(axis=-1) > 1e-4)


def test_token_losses_match_manual_cross_entropy(params):
    tokens = random_tokens(jax.random.key(4), 4, 9)
    losses = losses_of(params, {"tokens": tokens}, CFG)
    assert losses.shape == (4, 8)
    logits = np.asarray(fwd(params, tokens[:, :-1], CFG), dtype=np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    tgt = np.asarray(tokens[:, 1:])
    manual = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses, manual, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(make_loss_fn(CFG))(params, {"tokens": tokens}), losses,
                               rtol=1e-6)


def test_full_profile_parameter_count():
    cfg = PROFILES["full"]
    shapes = jax.eval_shape(lambda k: init_params(k, cfg), jax.random.key(0))
    V, D, H, E, K, L = (cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.d_head,
                        cfg.context_length, cfg.n_layers)
    per_layer = 4 * H * D * E + 3 * H * E + D + 2 * D              # weights, b_QKV, b_O, ln1
    expected = V * D + K * D + L * per_layer + 2 * D + D * V + V   # embed, pos, blocks, ln_f, unembed
    assert count_params(shapes) == expected
    assert 3.0e6 <= expected <= 3.5e6                              # "~3M" (Baker et al.)


def test_masked_gradient_step_moves_only_that_head(params):
    tokens = random_tokens(jax.random.key(5), 4, 9)
    loss = lambda p: jnp.mean(token_losses(p, {"tokens": tokens}, CFG))
    grads = jax.jit(jax.grad(loss))(params)
    layer, head = 1, 2
    mask = M.head_mask(params, layer, head)
    moved = jax.tree.map(lambda p, g, m: p - 0.1 * g * m, params, grads, mask)
    diffs = jax.tree_util.tree_flatten_with_path(jax.tree.map(lambda a, b: a - b, moved, params))[0]
    for path, d in diffs:
        name, d = M.path_name(path), np.asarray(d)
        leaf = name.rsplit("/", 1)[-1]
        if name.startswith(f"blocks/{layer}/attn/") and leaf in M.PER_HEAD_LEAVES:
            others = np.delete(d, head, axis=0)
            assert np.all(others == 0), name
            assert np.any(d[head] != 0), name                      # the head itself moved
        else:
            assert np.all(d == 0), name


def test_component_masks_partition_attention_parameters(params):
    names, stacked = M.component_masks(params, CFG)
    heads = [f"{l}:{h}" for l in range(CFG.n_layers) for h in range(CFG.n_heads)]
    assert names == heads + ["embed", "unembed"]
    total = jax.tree.map(lambda m: m.sum(0), stacked)
    for path, t in jax.tree_util.tree_flatten_with_path(total)[0]:
        name, t = M.path_name(path), np.asarray(t)
        assert set(np.unique(t)) <= {0.0, 1.0}, name               # components are disjoint
        leaf = name.rsplit("/", 1)[-1]
        covered = leaf in M.PER_HEAD_LEAVES or name.split("/")[0] in ("embed", "pos_embed", "unembed")
        assert np.all(t == (1.0 if covered else 0.0)), name        # b_O and LayerNorms: no component
    k = names.index("1:3")
    np.testing.assert_array_equal(stacked["blocks"][1]["attn"]["W_V"][k],
                                  M.head_mask(params, 1, 3)["blocks"][1]["attn"]["W_V"])
    with pytest.raises(ValueError, match="head"):
        M.head_mask(params, 0, CFG.n_heads)


def test_layer_mlp_and_subset_masks():
    cfg = TransformerConfig.from_profile("tiny", vocab_size=8, d_mlp=16)
    p = init_params(jax.random.key(0), cfg)
    names, stacked = M.component_masks(p, cfg)
    assert names[-4:] == ["0:mlp", "1:mlp", "embed", "unembed"]
    assert float(jax.tree.reduce(jnp.maximum, jax.tree.map(lambda m: m.sum(0).max(), stacked))) == 1.0
    lm = M.layer_mask(p, 1)
    n_block = count_params(p["blocks"][1])
    assert float(sum(jax.tree.leaves(jax.tree.map(jnp.sum, lm)))) == n_block
    sub = M.param_subset_mask(p, lambda name, _: name.endswith("W_U"))
    assert float(sub["unembed"]["W_U"].min()) == 1.0 and float(sub["unembed"]["b_U"].max()) == 0.0
    with pytest.raises(ValueError, match="MLP"):
        M.mlp_mask(init_params(jax.random.key(0), CFG), 0)


def cyclic_pattern_data(key, n, length, vocab):
    """Random cyclic shifts of the period-6 pattern a b a c b c (a, b, c distinct random tokens).

    Every token has two equally likely successors, also given its position (over the random
    shift), so a model that cannot read other positions has expected loss >= log 2; the previous token
    determines the next one, so attention can reach log(2)/T (position 0 stays ambiguous).
    """
    k1, k2 = jax.random.split(key)
    abc = jax.random.choice(k1, vocab, (3,), replace=False)
    pattern = abc[jnp.array([0, 1, 0, 2, 1, 2])]
    shifts = jax.random.randint(k2, (n, 1), 0, 6)
    return {"tokens": pattern[(shifts + jnp.arange(length)) % 6].astype(jnp.int32)}


def test_training_beats_the_no_attention_floor():
    data = cyclic_pattern_data(jax.random.key(6), 128, CFG.context_length + 1, CFG.vocab_size)
    mean_loss = lambda p: float(jnp.mean(losses_of(p, data, CFG)))
    p0 = init_params(jax.random.key(7), CFG)
    init_loss = mean_loss(p0)
    assert abs(init_loss - math.log(CFG.vocab_size)) < 0.3         # random init ~ uniform
    p, hist = train(jax.random.key(8), make_loss_fn(CFG), p0, data, num_steps=150, batch_size=32,
                    learning_rate=1e-2, chunk_size=75, eval_data=data, progress=False)
    final = mean_loss(p)
    assert hist["loss"].shape == (150,) and list(hist["eval_step"]) == [75, 150]
    assert abs(hist["eval_loss"][-1] - final) < 1e-5
    # The optimum is log(2)/T (only position 0 is ambiguous); a model that ignores the other
    # positions cannot go below log 2.
    assert final < 0.5 * math.log(2), (init_loss, final)


def test_weighted_training_and_padded_chunks():
    # rho = (2.5, 2.5, 2.5, 2.5, 0, ...) on n = 8 rows weighs like the first 4 rows taken twice.
    tokens = random_tokens(jax.random.key(9), 8, 9)
    loss_fn = make_loss_fn(CFG)
    p0 = init_params(jax.random.key(10), CFG)
    rho = jnp.zeros(8).at[:4].set(2.5)                             # the scale must not matter
    # SGD, not Adam: Adam's g/(|g|+eps) turns rounding noise in ~0 gradients into full steps.
    # 3 steps in chunks of 2: the last chunk carries one padded no-op step.
    kw = dict(optimizer=optax.sgd(0.5), chunk_size=2, progress=False)
    pw, hw = train(jax.random.key(0), loss_fn, p0, {"tokens": tokens}, weights=rho, num_steps=3, **kw)
    dup = {"tokens": jnp.concatenate([tokens[:4], tokens[:4]])}
    pd, hd = train(jax.random.key(0), loss_fn, p0, dup, weights=jnp.ones(8), num_steps=3, **kw)
    np.testing.assert_allclose(hw["loss"], hd["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(pw), jax.tree.leaves(pd)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    subset_loss = lambda p: float(jnp.mean(losses_of(p, {"tokens": tokens[:4]}, CFG)))
    assert abs(hw["loss"][0] - subset_loss(p0)) < 1e-5             # objective = mean over the subset
    # The padded step changed nothing: step 4 of a 4-step run starts from the 3-step result.
    _, h4 = train(jax.random.key(0), loss_fn, p0, {"tokens": tokens}, weights=rho, num_steps=4, **kw)
    np.testing.assert_allclose(h4["loss"][:3], hw["loss"], rtol=1e-6)
    assert abs(h4["loss"][3] - subset_loss(pw)) < 1e-5
    with pytest.raises(ValueError, match="weights"):
        train(jax.random.key(0), loss_fn, p0, {"tokens": tokens}, weights=jnp.ones(3), num_steps=3, **kw)


def test_per_token_weights_weigh_tokens_and_keep_the_batch_order():
    """Per-token ρ [n, T]: the objective is Σρℓ/Σρ over tokens (oracle: the hand-computed
    weighted mean at step 1); per-row constant ρ equals per-sample ρ (same minibatch order)."""
    tokens = random_tokens(jax.random.key(13), 12, 9)
    loss_fn = make_loss_fn(CFG)
    p0 = init_params(jax.random.key(14), CFG)
    kw = dict(optimizer=optax.sgd(0.3), batch_size=4, chunk_size=2, num_steps=4, progress=False)
    T = tokens.shape[1] - 1
    rho_tok = jnp.ones((12, T)).at[:, : T // 2].set(3.0)          # first half of every window
    pt, ht = train(jax.random.key(0), loss_fn, p0, {"tokens": tokens}, weights=rho_tok, **kw)
    per = np.asarray(losses_of(p0, {"tokens": tokens}, CFG))        # [n, T]
    w = np.asarray(rho_tok) / np.asarray(rho_tok).mean()
    # step 1's batch: the same permutation train() draws for epoch 0
    idx = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(0), 0), 12))[:4]
    assert abs(ht["loss"][0] - np.mean(per[idx] * w[idx])) < 1e-5
    rho_row = jnp.linspace(0.5, 2.0, 12)
    pr, hr = train(jax.random.key(0), loss_fn, p0, {"tokens": tokens}, weights=rho_row, **kw)
    pb, hb = train(jax.random.key(0), loss_fn, p0, {"tokens": tokens},
                   weights=jnp.repeat(rho_row[:, None], T, axis=1), **kw)
    np.testing.assert_allclose(hr["loss"], hb["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(pr), jax.tree.leaves(pb)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="per-token loss shape"):
        train(jax.random.key(0), loss_fn, p0, {"tokens": tokens}, weights=jnp.ones((12, T + 1)),
              **kw)


def test_minibatch_training_is_deterministic_given_key():
    data = {"tokens": random_tokens(jax.random.key(11), 20, 9)}
    loss_fn = make_loss_fn(CFG)
    p0 = init_params(jax.random.key(12), CFG)
    kw = dict(num_steps=6, batch_size=8, chunk_size=3, progress=False)
    _, h1 = train(jax.random.key(3), loss_fn, p0, data, **kw)
    _, h2 = train(jax.random.key(3), loss_fn, p0, data, **kw)
    _, h3 = train(jax.random.key(4), loss_fn, p0, data, **kw)
    assert h1["loss"].shape == (6,)
    np.testing.assert_array_equal(h1["loss"], h2["loss"])
    assert not np.array_equal(h1["loss"], h3["loss"])


def test_nnx_bridge(params):
    model = Transformer(CFG, rngs=nnx.Rngs(0))
    set_module_params(model, params)
    graphdef, state = nnx.split(model)
    model2 = nnx.merge(graphdef, state)
    tokens = random_tokens(jax.random.key(13), 4, 8)
    np.testing.assert_allclose(nnx.jit(lambda m, t: m(t))(model2, tokens), fwd(params, tokens, CFG),
                               rtol=1e-6, atol=1e-6)
    assert jax.tree.structure(module_params(model2)) == jax.tree.structure(params)


def test_checkpoint_round_trip_and_checksum(params, tmp_path):
    record = artifacts.save_params(tmp_path / "ckpt", params, config=CFG,
                                   metadata={"final_loss": 1.25}, wall_time=3.0)
    loaded, rec = artifacts.load_params(tmp_path / "ckpt.npz")
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert rec == json.loads((tmp_path / "ckpt.json").read_text()) == json.loads(json.dumps(record))
    assert rec["config"]["d_model"] == CFG.d_model and rec["num_params"] == count_params(params)
    assert TransformerConfig(**{k: v for k, v in rec["config"].items() if k != "type"}) == CFG
    assert set(rec["provenance"]) >= {"git", "device", "packages", "python"}
    assert rec["sha256"] == artifacts.sha256_file(tmp_path / "ckpt.npz")

    raw = bytearray((tmp_path / "ckpt.npz").read_bytes())          # flip one byte of the payload
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "ckpt.npz").write_bytes(bytes(raw))
    with pytest.raises(artifacts.ChecksumError, match="sha256"):
        artifacts.load_params(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError):
        artifacts.load_params(tmp_path / "missing")
