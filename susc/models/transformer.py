"""A small attention-only transformer written as pure functions over a params PyTree.

This is the model family of Baker et al. (arXiv:2504.18274) and Wang et al. (arXiv:2508.00331):
a 2-layer attention-only transformer with 8 heads per layer, d_model 256, context 1024 and a
5,000-token vocabulary (~3.4M parameters, profile ``full``). The layout follows TransformerLens
(pre-LayerNorm residual blocks, learned positional embedding, per-head weights with an explicit
head axis) so that a head is one slice ``[h]`` of each per-head leaf and a head mask is a slice.

Shapes use B = batch, T = positions, D = d_model, H = heads, E = d_head, V = vocabulary,
K = context length, M = d_mlp. The params PyTree is a nested dict (``blocks`` is a list)::

    embed:     {W_E: [V, D]}                 pos_embed: {W_pos: [K, D]}
    blocks[l]: {ln1: {scale: [D], bias: [D]},            # if cfg.layer_norm
                attn: {W_Q, W_K, W_V: [H, D, E], W_O: [H, E, D],
                       b_Q, b_K, b_V: [H, E], b_O: [D]}  # biases if cfg.attn_bias
                ln2, mlp: {W_in: [D, M], b_in: [M], W_out: [M, D], b_out: [D]}}  # if cfg.d_mlp
    ln_final:  {scale: [D], bias: [D]}       unembed: {W_U: [D, V], b_U: [V]}

Loss contract (shared by every sampler in ``susc``): ``loss_fn(params, batch)`` returns the
per-token next-token negative log-likelihood ``l_{b,t} = -log softmax(logits_{b,t})[y_{b,t}]`` of
shape ``[B, T]``, where ``batch = {"tokens": int [B, T+1]}``, inputs ``tokens[:, :-1]`` and targets
``tokens[:, 1:]``. The sampled posterior is p(w) ∝ exp{-nβ L_n(w) - (γ/2)||w - w*||²} with L_n the
mean of these losses; the model itself knows nothing of nβ or γ.

Because ``forward`` is a pure function of ``params`` it can be vmapped over chains by
``susc.sample``; the ``Transformer`` nnx module is a thin wrapper for users of flax nnx.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "TransformerConfig", "PROFILES", "init_params", "forward", "token_losses", "make_loss_fn",
    "attention_patterns", "count_params", "Transformer", "module_params", "set_module_params",
]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the transformer (frozen, hashable: usable as a jit static argument)."""

    vocab_size: int            # V, number of token ids
    n_layers: int = 2          # number of residual blocks
    n_heads: int = 8           # H, attention heads per layer
    d_model: int = 256         # D, residual stream width
    d_head: int = 32           # E, query/key/value width per head
    context_length: int = 1024  # K, maximum number of input positions
    d_mlp: int | None = None   # M, MLP width; None = attention-only (the paper's model)
    layer_norm: bool = True    # pre-LayerNorm before attention/MLP and before the unembedding
    attn_bias: bool = True     # b_Q, b_K, b_V (per head) and b_O (shared by the layer)
    init_std: float = 0.02     # std of the normal init of every weight matrix (GPT-2 style)
    ln_eps: float = 1e-5       # LayerNorm epsilon

    def __post_init__(self):
        for name in ("vocab_size", "n_layers", "n_heads", "d_model", "d_head", "context_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.d_mlp is not None and (not isinstance(self.d_mlp, int) or self.d_mlp < 1):
            raise ValueError(f"TransformerConfig.d_mlp must be None or a positive int, got {self.d_mlp!r}")

    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "TransformerConfig":
        """Named size profile (``tiny``, ``small``, ``full``) with field overrides.

        ``tiny`` trains in about a minute on 2 CPU cores; ``small`` is a CPU-feasible model with
        the paper's 8 heads per layer; ``full`` is the paper's model (pass the data's vocab size
        as ``vocab_size=`` for ``tiny``/``small``).
        """
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        return dataclasses.replace(PROFILES[profile], **overrides)


PROFILES = {
    "tiny": TransformerConfig(vocab_size=64, n_layers=2, n_heads=4, d_model=32, d_head=8,
                              context_length=32),
    "small": TransformerConfig(vocab_size=5000, n_layers=2, n_heads=8, d_model=128, d_head=16,
                               context_length=128),
    "full": TransformerConfig(vocab_size=5000, n_layers=2, n_heads=8, d_model=256, d_head=32,
                              context_length=1024),
}


# ----------------------------------------------------------------------------- parameters


def init_params(key: jax.Array, cfg: TransformerConfig, dtype=jnp.float32) -> Params:
    """Random initial parameters: weights ~ N(0, init_std²), biases 0, LayerNorm scale 1."""
    if not isinstance(cfg, TransformerConfig):
        raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")
    V, D, H, E, K = cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.context_length
    keys = iter(jax.random.split(key, 3 + 6 * cfg.n_layers))

    def normal(shape):
        return cfg.init_std * jax.random.normal(next(keys), shape, dtype)

    def ln():
        return {"scale": jnp.ones((D,), dtype), "bias": jnp.zeros((D,), dtype)}

    params: Params = {"embed": {"W_E": normal((V, D))}, "pos_embed": {"W_pos": normal((K, D))}}
    blocks = []
    for _ in range(cfg.n_layers):
        attn = {"W_Q": normal((H, D, E)), "W_K": normal((H, D, E)),
                "W_V": normal((H, D, E)), "W_O": normal((H, E, D))}
        if cfg.attn_bias:
            attn.update(b_Q=jnp.zeros((H, E), dtype), b_K=jnp.zeros((H, E), dtype),
                        b_V=jnp.zeros((H, E), dtype), b_O=jnp.zeros((D,), dtype))
        block: Params = {"attn": attn}
        if cfg.layer_norm:
            block["ln1"] = ln()
        if cfg.d_mlp is not None:
            M = cfg.d_mlp
            block["mlp"] = {"W_in": normal((D, M)), "b_in": jnp.zeros((M,), dtype),
                            "W_out": normal((M, D)), "b_out": jnp.zeros((D,), dtype)}
            if cfg.layer_norm:
                block["ln2"] = ln()
        else:
            next(keys), next(keys)  # keep key usage independent of d_mlp
        blocks.append(block)
    params["blocks"] = blocks
    if cfg.layer_norm:
        params["ln_final"] = ln()
    params["unembed"] = {"W_U": normal((D, V)), "b_U": jnp.zeros((V,), dtype)}
    return params


def count_params(params: Params) -> int:
    """Total number of scalar parameters in a params PyTree."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------- forward pass


def _layer_norm(x, p, eps):
    mu = jnp.mean(x, axis=-1, keepdims=True)                      # [B, T, 1]
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)    # [B, T, 1]
    return (x - mu) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]  # [B, T, D]


def _attention(p, x, cfg):
    """Causal multi-head attention; returns (output [B, T, D], pattern [B, H, T, T])."""
    T = x.shape[1]
    q = jnp.einsum("btd,hde->bthe", x, p["W_Q"])                  # [B, T, H, E]
    k = jnp.einsum("btd,hde->bthe", x, p["W_K"])                  # [B, T, H, E]
    v = jnp.einsum("btd,hde->bthe", x, p["W_V"])                  # [B, T, H, E]
    if cfg.attn_bias:
        q, k, v = q + p["b_Q"], k + p["b_K"], v + p["b_V"]        # biases [H, E] broadcast
    scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)  # [B, H, T, T]
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))               # [T(query), T(key)]
    # A finite large negative (not -inf) keeps gradients NaN-free; row 0 always sees itself.
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    pattern = jax.nn.softmax(scores, axis=-1)                     # [B, H, T, T], rows sum to 1
    z = jnp.einsum("bhqk,bkhe->bqhe", pattern, v)                 # [B, T, H, E]
    out = jnp.einsum("bqhe,hed->bqd", z, p["W_O"])                # [B, T, D], summed over heads
    if cfg.attn_bias:
        out = out + p["b_O"]
    return out, pattern


def _check_tokens(tokens, cfg, name="tokens"):
    if tokens.ndim != 2:
        raise ValueError(f"{name} must have shape [B, T], got {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array of token ids, got dtype {tokens.dtype}")
    if tokens.shape[1] > cfg.context_length:
        raise ValueError(f"{name} has {tokens.shape[1]} positions but cfg.context_length is "
                         f"{cfg.context_length}; truncate the sequences or raise context_length")


def _run(params, tokens, cfg):
    """Shared forward pass: logits [B, T, V] and the list of per-layer patterns [B, H, T, T]."""
    _check_tokens(tokens, cfg)
    T = tokens.shape[1]
    x = params["embed"]["W_E"][tokens] + params["pos_embed"]["W_pos"][:T]  # [B, T, D]
    patterns = []
    for block in params["blocks"]:
        h = _layer_norm(x, block["ln1"], cfg.ln_eps) if cfg.layer_norm else x  # [B, T, D]
        attn_out, pattern = _attention(block["attn"], h, cfg)
        x = x + attn_out                                          # [B, T, D]
        patterns.append(pattern)
        if cfg.d_mlp is not None:
            h = _layer_norm(x, block["ln2"], cfg.ln_eps) if cfg.layer_norm else x
            m = block["mlp"]
            hidden = jax.nn.gelu(h @ m["W_in"] + m["b_in"])       # [B, T, M]
            x = x + hidden @ m["W_out"] + m["b_out"]              # [B, T, D]
    if cfg.layer_norm:
        x = _layer_norm(x, params["ln_final"], cfg.ln_eps)        # [B, T, D]
    logits = x @ params["unembed"]["W_U"] + params["unembed"]["b_U"]  # [B, T, V]
    return logits, patterns


def forward(params: Params, tokens: jax.Array, cfg: TransformerConfig) -> jax.Array:
    """Next-token logits ``[B, T, V]`` for input token ids ``tokens: int [B, T]`` (T <= K).

    Causal: the logits at position t depend only on ``tokens[:, :t+1]``.
    """
    return _run(params, tokens, cfg)[0]


def attention_patterns(params: Params, tokens: jax.Array, cfg: TransformerConfig) -> jax.Array:
    """Attention patterns ``[L, B, H, T(query), T(key)]``; each query row sums to 1 over keys <= query."""
    return jnp.stack(_run(params, tokens, cfg)[1])


def token_losses(params: Params, batch, cfg: TransformerConfig) -> jax.Array:
    """Per-token next-token NLL ``l[b, t] = -log p(tokens[b, t+1] | tokens[b, :t+1])``, shape ``[B, T]``.

    ``batch`` is ``{"tokens": int [B, T+1]}`` (or the array itself); T + 1 <= K + 1.
    """
    tokens = batch["tokens"] if isinstance(batch, dict) else batch
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"batch['tokens'] must have shape [B, T+1] with T >= 1, got {tokens.shape}")
    inputs, targets = tokens[:, :-1], tokens[:, 1:]               # [B, T] each
    logits = forward(params, inputs, cfg).astype(jnp.float32)     # [B, T, V]
    logz = jax.nn.logsumexp(logits, axis=-1)                      # [B, T]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [B, T]
    return logz - target_logit                                    # [B, T]


def make_loss_fn(cfg: TransformerConfig):
    """``loss_fn(params, batch) -> [B, T]`` per-token losses: the loss contract of ``susc.sample``."""
    if not isinstance(cfg, TransformerConfig):
        raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")

    def loss_fn(params, batch):
        return token_losses(params, batch, cfg)

    return loss_fn


# ----------------------------------------------------------------------------- flax nnx bridge


def _is_var(v):
    return isinstance(v, nnx.Variable)


class Transformer(nnx.Module):
    """Thin ``nnx.Module`` around the pure-functional model; each params leaf is an ``nnx.Param``.

    The sampler works on the plain params PyTree; move between the two with::

        model = Transformer(cfg, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)          # state: nnx.State of Params
        model = nnx.merge(graphdef, state)          # and back
        params = module_params(model)               # plain nested dict, same layout as init_params
        res = susc.sample(key, make_loss_fn(cfg), params, data, ...)
        set_module_params(model, new_params)        # write (e.g. trained) params back in place
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.params = nnx.data(jax.tree.map(nnx.Param, init_params(rngs.params(), cfg)))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return forward(module_params(self), tokens, self.cfg)     # [B, T, V]


def module_params(model: Transformer) -> Params:
    """The plain params PyTree held by a ``Transformer`` module."""
    return jax.tree.map(lambda v: v[...], model.params, is_leaf=_is_var)


def set_module_params(model: Transformer, params: Params) -> None:
    """Overwrite a ``Transformer``'s parameters in place with a params PyTree of the same layout."""
    vars_, treedef = jax.tree.flatten(model.params, is_leaf=_is_var)
    new, new_def = jax.tree.flatten(params)
    if new_def != treedef:
        raise ValueError("params layout does not match the module's; build both from the same cfg")
    for var, value in zip(vars_, new):
        var[...] = value
