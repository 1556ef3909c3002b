"""Component masks over a transformer params PyTree (for component-restricted sampling).

A *mask* is a PyTree with the structure of ``params`` whose leaves are float 0/1 arrays of the
same shapes: 1 marks a coordinate that belongs to the component. ``susc.sample(..., mask=m)``
samples only the coordinates where ``m == 1`` and clamps the rest at w*, which is the restricted
chain of the structural susceptibility χ^C_xy = -Cov[ϕ_C, ℓ_xy - L] with
ϕ_C = δ(u - u*)[L - L(w*)] (theory.md §1.7; Baker et al. arXiv:2504.18274, App. C.4).

Components (names as in the papers):

* ``"l:h"`` — attention head h of layer l: the slice ``[h]`` of W_Q, W_K, W_V, W_O and of the
  per-head biases b_Q, b_K, b_V (head axis first, see ``susc.models.transformer``).
* ``"l:mlp"`` — the MLP of layer l (W_in, b_in, W_out, b_out), when the model has MLPs.
* ``"embed"`` — token and positional embeddings W_E, W_pos.
* ``"unembed"`` — W_U, b_U.

The head masks of one layer partition its per-head leaves. Parameters shared by a layer's heads
(the attention output bias b_O) and the LayerNorm parameters belong to no component;
``layer_mask`` covers the whole block including them.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

__all__ = [
    "path_name", "param_subset_mask", "head_mask", "layer_mask", "mlp_mask", "embedding_mask",
    "unembedding_mask", "component_masks", "PER_HEAD_LEAVES",
]

# Leaves of blocks[l]["attn"] whose leading axis is the head axis.
PER_HEAD_LEAVES = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


def path_name(path) -> str:
    """``"blocks/0/attn/W_Q"`` for a ``jax.tree_util`` key path."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def param_subset_mask(params, predicate: Callable[[str, Any], Any]):
    """Mask from ``predicate(name, leaf)``, where ``name`` is the leaf's path like ``"blocks/0/attn/W_Q"``.

    The predicate returns a bool (whole leaf in or out) or a boolean array broadcastable to the
    leaf's shape (element-wise membership). Leaves are float32 0/1 NumPy arrays of the leaf's
    shape (masks are constants: built on the host, no device dispatch per leaf).
    """
    if not callable(predicate):
        raise TypeError(f"predicate must be callable (name, leaf) -> bool, got {type(predicate).__name__}")

    def one(path, leaf):
        member = np.asarray(predicate(path_name(path), leaf), dtype=bool)
        return np.broadcast_to(member, np.shape(leaf)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(one, params)


def _n_layers(params) -> int:
    if "blocks" not in params:
        raise ValueError("params has no 'blocks'; build it with susc.models.transformer.init_params")
    return len(params["blocks"])


def _check_layer(params, layer):
    n = _n_layers(params)
    if not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer must be an int in [0, {n}), got {layer!r}")


def head_mask(params, layer: int, head: int):
    """Mask of attention head ``head`` of layer ``layer`` (the ``[head]`` slice of each per-head leaf)."""
    _check_layer(params, layer)
    n_heads = params["blocks"][layer]["attn"]["W_Q"].shape[0]
    if not isinstance(head, int) or not 0 <= head < n_heads:
        raise ValueError(f"head must be an int in [0, {n_heads}), got {head!r}")
    prefix = f"blocks/{layer}/attn/"

    def pred(name, leaf):
        if not name.startswith(prefix) or name[len(prefix):] not in PER_HEAD_LEAVES:
            return False
        sel = np.arange(leaf.shape[0]) == head                # [H]
        return sel.reshape((-1,) + (1,) * (leaf.ndim - 1))     # [H, 1, ...] broadcast over the rest

    return param_subset_mask(params, pred)


def layer_mask(params, layer: int):
    """Mask of the whole residual block ``layer`` (attention, MLP and their LayerNorms)."""
    _check_layer(params, layer)
    return param_subset_mask(params, lambda name, _: name.startswith(f"blocks/{layer}/"))


def mlp_mask(params, layer: int):
    """Mask of the MLP of block ``layer`` (ValueError for an attention-only model)."""
    _check_layer(params, layer)
    if "mlp" not in params["blocks"][layer]:
        raise ValueError(f"block {layer} has no MLP (attention-only model: cfg.d_mlp is None)")
    return param_subset_mask(params, lambda name, _: name.startswith(f"blocks/{layer}/mlp/"))


def embedding_mask(params):
    """Mask of the token embedding W_E and the positional embedding W_pos."""
    return param_subset_mask(params, lambda name, _: name.split("/")[0] in ("embed", "pos_embed"))


def unembedding_mask(params):
    """Mask of the unembedding W_U, b_U."""
    return param_subset_mask(params, lambda name, _: name.split("/")[0] == "unembed")


def component_masks(params, cfg=None, *, heads: bool = True, mlps: bool = True,
                    embed: bool = True, unembed: bool = True):
    """All component masks, stacked: ``(names, masks)``.

    ``names`` lists the K components in order: heads ``"l:h"`` (layer-major), then ``"l:mlp"``
    (if the model has MLPs), ``"embed"``, ``"unembed"``. ``masks`` is a PyTree like ``params``
    with each leaf of shape ``[K, *leaf_shape]``; ``masks`` sliced at ``[k]`` is the mask of
    ``names[k]``. Use ``jax.tree.map(lambda m: m[k], masks)`` or vmap over the leading axis.
    ``cfg`` (a TransformerConfig) is optional and only cross-checked against ``params``.
    """
    n_layers = _n_layers(params)
    n_heads = params["blocks"][0]["attn"]["W_Q"].shape[0]
    if cfg is not None and (cfg.n_layers, cfg.n_heads) != (n_layers, n_heads):
        raise ValueError(f"cfg has {cfg.n_layers} layers x {cfg.n_heads} heads but params has "
                         f"{n_layers} x {n_heads}; pass the cfg the params were built with")
    names, masks = [], []
    if heads:
        for layer in range(n_layers):
            for head in range(n_heads):
                names.append(f"{layer}:{head}")
                masks.append(head_mask(params, layer, head))
    if mlps:
        for layer in range(n_layers):
            if "mlp" in params["blocks"][layer]:
                names.append(f"{layer}:mlp")
                masks.append(mlp_mask(params, layer))
    if embed:
        names.append("embed")
        masks.append(embedding_mask(params))
    if unembed:
        names.append("unembed")
        masks.append(unembedding_mask(params))
    if not masks:
        raise ValueError("component_masks: every component family is switched off")
    return names, jax.tree.map(lambda *ms: np.stack(ms), *masks)
