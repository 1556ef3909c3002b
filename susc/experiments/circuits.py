r"""Circuit read-outs of a trained transformer: attention scores, head ablations, heads × patterns.

These are the *mechanistic* references against which the structural susceptibilities of
`susc.structural` are checked (theory.md §1.7, §3.1). Conventions: the localized tempered posterior
is p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}; the per-token structural susceptibility of component C
is χ^C_xy = −Cov[φ_C, ℓ_xy − L]; after `susc.structural.standardize` (column z-score, row centring)
a **negative** entry means the head *expresses* the continuation y|x.

Token indexing follows `susc.data`: a batch ``tokens [B, T+1]`` feeds inputs ``tokens[:, :-1]`` and
``labels[:, t]`` / ``source[:, t]`` describe the target ``tokens[:, t+1]`` predicted at query
position t. For an induction target, ``source[b, t]`` is the index of the earlier token being copied,
so an induction head at query t attends to key ``source[b, t]`` (the token that followed the
earlier occurrence of ``tokens[b, t]``); a previous-token head at query t attends to key t − 1.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..models.transformer import TransformerConfig, attention_patterns, token_losses

__all__ = ["head_names", "induction_attention_score", "previous_token_score", "ablate_head",
           "ablation_increase", "heads_by_patterns", "susceptibility_induction_score",
           "spearman", "rank_agreement"]


def head_names(cfg: TransformerConfig) -> list[str]:
    """``["0:0", "0:1", ...]``: layer-major head names, the order of `component_masks`."""
    return [f"{l}:{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)]


def _patterns(params, tokens, cfg):
    fn = jax.jit(attention_patterns, static_argnums=2)
    return np.asarray(fn(params, jnp.asarray(tokens)[:, :-1], cfg))   # [L, B, H, T, T]


def induction_attention_score(params, tokens, source, cfg: TransformerConfig) -> np.ndarray:
    """Mean attention from each induction query t to its planted source key, per head ``[L·H]``.

    ``source [B, T]`` is -1 except at induction targets (`make_synthetic`'s ``source``). A perfect
    induction head scores 1; a head attending uniformly over a context of length t scores ≈ 1/t.
    """
    source = np.asarray(source)
    b, t = np.nonzero(source >= 0)
    if b.size == 0:
        raise ValueError("source has no induction targets (all -1); pass sequences with induction segments")
    pats = _patterns(params, tokens, cfg)
    return pats[:, b, :, t, source[b, t]].mean(axis=0).reshape(-1)     # [N, L, H] -> [L·H]


def previous_token_score(params, tokens, cfg: TransformerConfig) -> np.ndarray:
    """Mean attention from query t to key t − 1 over positions t ≥ 1, per head ``[L·H]``."""
    pats = _patterns(params, tokens, cfg)
    t = np.arange(1, pats.shape[-1])
    return pats[:, :, :, t, t - 1].mean(axis=(1, 3)).reshape(-1)       # [L, B, H, T-1] -> [L·H]


def ablate_head(params, layer: int, head: int):
    """Zero-ablation: a copy of ``params`` whose head ``layer:head`` writes nothing (W_O[head] = 0)."""
    attn = params["blocks"][layer]["attn"]
    blocks = list(params["blocks"])
    blocks[layer] = {**params["blocks"][layer], "attn": {**attn, "W_O": attn["W_O"].at[head].set(0.0)}}
    return {**params, "blocks": blocks}


def ablation_increase(params, tokens, cfg: TransformerConfig, mask=None) -> np.ndarray:
    """Loss increase ``[L·H]`` from zero-ablating each head, averaged over the positions in ``mask``.

    ``mask [B, T]`` (bool/0-1) selects target positions (default: all). Positive = the head helps.
    """
    batch = {"tokens": jnp.asarray(tokens)}
    losses = jax.jit(lambda p: token_losses(p, batch, cfg))
    m = np.ones(np.shape(tokens)[:1] + (np.shape(tokens)[1] - 1,), bool) if mask is None else np.asarray(mask, bool)
    base = np.asarray(losses(params))[m].mean()
    out = [np.asarray(losses(ablate_head(params, l, h)))[m].mean() - base
           for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
    return np.asarray(out)


def heads_by_patterns(Z, labels, patterns: Mapping[int, str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Mean standardized susceptibility of each head over the probe tokens of each pattern.

    Args:
        Z: ``[N, K]`` standardized per-token susceptibilities (tokens × heads), negative ⇒ expresses.
        labels: ``[N]`` pattern id of each probe token.
        patterns: id → name; patterns with no token in ``labels`` are skipped.

    Returns:
        ``(M [K, P], names [P], counts [P])`` with ``M[k, p]`` the mean of ``Z[:, k]`` over pattern p.
    """
    Z, labels = np.asarray(Z), np.asarray(labels).reshape(-1)
    if Z.ndim != 2 or Z.shape[0] != labels.shape[0]:
        raise ValueError(f"Z must be [N, K] with N = len(labels) = {labels.shape[0]}, got {Z.shape}")
    ids = [i for i in patterns if np.any(labels == i)]
    M = np.stack([Z[labels == i].mean(axis=0) for i in ids], axis=1)   # [K, P]
    return M, [patterns[i] for i in ids], np.array([(labels == i).sum() for i in ids])


def susceptibility_induction_score(Z, is_induction) -> tuple[np.ndarray, np.ndarray]:
    """Induction score from susceptibilities alone: ``−mean Z[induction tokens, k]`` and its SE ``[K]``.

    Larger = head k expresses induction continuations more than the other heads do (Z is
    row-centred, so the score is relative to the other heads on the same tokens).
    """
    Zi = np.asarray(Z)[np.asarray(is_induction, bool).reshape(-1)]
    if Zi.shape[0] < 2:
        raise ValueError("need at least two induction tokens among the probe tokens")
    return -Zi.mean(axis=0), Zi.std(axis=0, ddof=1) / np.sqrt(Zi.shape[0])


def spearman(a, b) -> float:
    """Spearman rank correlation of two score vectors (average ranks for ties)."""
    from scipy.stats import spearmanr
    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


def rank_agreement(scores: Mapping[str, Sequence[float]], names: Sequence[str]) -> dict:
    """Top head and pairwise Spearman correlations of several per-head score vectors."""
    keys = list(scores)
    top = {k: names[int(np.argmax(scores[k]))] for k in keys}
    rho = {f"{a}~{b}": spearman(scores[a], scores[b]) for i, a in enumerate(keys) for b in keys[i + 1:]}
    return {"top": top, "spearman": rho}
