"""Small image classifiers as pure functions over a params PyTree: an MLP and a convnet.

Sized for the attribution experiments on the 8×8 digits (`susc.data.digits`): thousands of
parameters, so that hundreds of retrained copies train in one vmapped program on a CPU and the
dense Hessian of classical influence is affordable. ``x`` is ``[B, H, W, C]``; logits ``[B, K]``.

Loss contract (shared by every sampler): ``loss_fn(params, batch) -> [B]`` per-example
cross-entropy ``ℓ_i = −log softmax(f(x_i))[y_i]`` for ``batch = {"x": ..., "y": int [B]}``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["init_mlp", "mlp_forward", "init_convnet", "convnet_forward", "classifier", "count_params",
           "mlp_loss", "convnet_loss"]


def _dense(key, fan_in, fan_out):
    # LeCun-normal weights, zero bias: the same scale flax.linen.Dense uses.
    return {"w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in),
            "b": jnp.zeros(fan_out)}


def init_mlp(key, in_dim: int, hidden: Sequence[int], num_classes: int) -> dict:
    """Params ``{"layers": [{w, b}, ...]}`` of an MLP in_dim → hidden… → num_classes (tanh)."""
    sizes = [int(in_dim), *map(int, hidden), int(num_classes)]
    keys = jax.random.split(key, len(sizes) - 1)
    return {"layers": [_dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]}


def mlp_forward(params, x):
    """Logits of the MLP on images ``x [B, ...]`` (flattened); tanh between layers."""
    h = x.reshape(x.shape[0], -1)
    layers = params["layers"]
    for p in layers[:-1]:
        h = jnp.tanh(h @ p["w"] + p["b"])
    return h @ layers[-1]["w"] + layers[-1]["b"]


def init_convnet(key, image_shape: Sequence[int], channels: int, num_classes: int) -> dict:
    """Params of conv3×3(channels, SAME) → tanh → 2×2 mean-pool → dense(num_classes)."""
    H, W, C = map(int, image_shape)
    k1, k2 = jax.random.split(key)
    fan_in = 9 * C
    conv = {"w": jax.random.normal(k1, (3, 3, C, channels)) / math.sqrt(fan_in),
            "b": jnp.zeros(channels)}
    return {"conv": conv, "out": _dense(k2, (H // 2) * (W // 2) * channels, num_classes)}


def _patches3x3(x):
    """``[B, H, W, C] -> [B, H, W, 9C]``: the 3×3 neighbourhoods of a SAME convolution (zero
    padded), as static slices. A convolution is then one matmul, which XLA's CPU backend runs
    ~100× faster than ``conv_general_dilated`` once vmapped over hundreds of retrained models."""
    H, W = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, i:i + H, j:j + W] for i in range(3) for j in range(3)], -1)


def convnet_forward(params, x):
    """Logits of the convnet on ``x [B, H, W, C]`` (conv3×3 SAME as patches @ kernel)."""
    c = params["conv"]
    kernel = c["w"].reshape(-1, c["w"].shape[-1])            # [3·3·C, K], (i, j, c) order
    h = jnp.tanh(_patches3x3(x) @ kernel + c["b"])
    B, H, W, K = h.shape
    h = h[:, : H // 2 * 2, : W // 2 * 2].reshape(B, H // 2, 2, W // 2, 2, K).mean((2, 4))
    return h.reshape(B, -1) @ params["out"]["w"] + params["out"]["b"]


def classifier(forward: Callable) -> Callable:
    """The per-example cross-entropy ``loss_fn(params, batch) -> [B]`` of a logits function."""
    def loss_fn(params, batch):
        logits = forward(params, batch["x"])
        logz = jax.nn.logsumexp(logits, axis=-1)
        return logz - jnp.take_along_axis(logits, batch["y"][:, None], axis=-1)[:, 0]
    loss_fn.__qualname__ = f"classifier({getattr(forward, '__qualname__', 'forward')})"
    return loss_fn


def count_params(params) -> int:
    """Number of scalars in a params PyTree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


# Module-level losses: one function object per model family, so that compiled programs (and the
# sampler's checkpoint fingerprint) are shared across calls.
mlp_loss = classifier(mlp_forward)
convnet_loss = classifier(convnet_forward)
