r"""Retraining many models at once: the ground truth that attribution methods are scored against.

`retrain` trains M copies of a model from the *same* initialization, copy m on the weighted
objective

.. math::

    J_m(w) = \frac{\sum_i \rho_{mi}\,\ell_i(w)}{\sum_i \rho_{mi}} + \frac{\lambda}{2}\|w\|^2,

by full-batch Adam with a cosine-decayed step size (deterministic: the only difference between
copies is ρ_m, e.g. the 0/1 indicator of a random training subset). The M copies are vmapped and
trained ``chunk`` at a time in one compiled program (`jax.lax.map` with ``batch_size``); step size,
weight decay, data and weights are runtime arguments, so new subsets or data of the same shapes
compile nothing.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["retrain", "query_losses"]


def _check(weights, n):
    w = np.asarray(weights, np.float32)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"`weights` must have shape [M, n] = [M, {n}] (one row of example weights "
                         f"per retrained model); got {np.shape(weights)}")
    if not np.all(w.sum(1) > 0):
        raise ValueError("every row of `weights` needs a positive total Σρ (an empty subset cannot "
                         "be trained on)")
    return w


@partial(jax.jit, static_argnames=("loss_fn", "steps", "chunk", "batch_size"))
def _retrain(loss_fn, params, data, weights, keys, lr, wd, *, steps, chunk, batch_size):
    opt = optax.adam(optax.cosine_decay_schedule(1.0, steps))
    n = weights.shape[1]

    def objective(p, rho, batch):
        reg = sum(jnp.vdot(x, x) for x in jax.tree_util.tree_leaves(p))
        return jnp.sum(rho * loss_fn(p, batch)) / jnp.sum(rho) + 0.5 * wd * reg

    def one(args):
        rho, key = args

        def step(carry, k):
            p, s = carry
            if batch_size is None:
                g = jax.grad(objective)(p, rho, data)
            else:
                # Minibatch noise: rows drawn with probability ∝ ρ (the subset's examples),
                # so the gradient is an unbiased estimate of the weighted objective's.
                idx = jax.random.choice(k, n, (batch_size,), p=rho / jnp.sum(rho))
                batch = jax.tree_util.tree_map(lambda a: a[idx], data)
                g = jax.grad(objective)(p, jnp.ones(batch_size), batch)
            u, s = opt.update(g, s, p)
            u = jax.tree_util.tree_map(lambda x: lr * x, u)
            return (optax.apply_updates(p, u), s), None
        ks = jax.random.split(key, steps)
        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), ks)
        return p
    return jax.lax.map(one, (weights, keys), batch_size=chunk)


def retrain(loss_fn: Callable, params, data, weights, *, steps: int, learning_rate: float = 1e-2,
            weight_decay: float = 0.0, chunk: int = 32, batch_size: int | None = None,
            key: jax.Array | None = None):
    """Train one model per row of ``weights`` [M, n] from ``params``; returns params stacked [M, ...].

    Args:
        loss_fn: the loss contract ``loss_fn(params, batch) -> [n]`` per-example losses.
        params: the common initialization (PyTree).
        data: the training batch (PyTree with leading axis n), used in full at every step.
        weights: [M, n] (or [n]) example weights ρ_m; 0/1 rows train on subsets.
        steps: full-batch Adam steps; the step size decays from ``learning_rate`` to 0 (cosine).
        weight_decay: λ of the L2 term (λ/2)‖w‖², which makes the retrained optimum well defined.
        chunk: models trained side by side (memory ∝ chunk · n).
        batch_size, key: minibatch training instead (rows drawn with probability ∝ ρ, with
            replacement; model m uses ``fold_in(key, m)``): a referee with SGD noise, whose
            realized losses vary between retrainings on the same subset.
    """
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    w = _check(weights, n)
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1; got {steps}")
    chunk = max(1, min(int(chunk), w.shape[0]))
    if batch_size is not None and key is None:
        raise ValueError("minibatch retraining (`batch_size`) needs a PRNG `key`")
    key = jax.random.key(0) if key is None else key
    keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(w.shape[0]))
    return _retrain(loss_fn, params, data, jnp.asarray(w), keys, jnp.float32(learning_rate),
                    jnp.float32(weight_decay), steps=int(steps), chunk=chunk,
                    batch_size=None if batch_size is None else int(batch_size))


@partial(jax.jit, static_argnames=("loss_fn",))
def _query(loss_fn, stacked, data):
    return jax.vmap(lambda p: loss_fn(p, data))(stacked)


def query_losses(loss_fn: Callable, stacked_params, data) -> np.ndarray:
    """Per-example losses ``[M, q]`` of every retrained model (leading axis M) on ``data``."""
    return np.asarray(_query(loss_fn, stacked_params, data))
