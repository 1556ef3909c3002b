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


@partial(jax.jit, static_argnames=("loss_fn", "steps", "chunk"))
def _retrain(loss_fn, params, data, weights, lr, wd, *, steps, chunk):
    opt = optax.adam(optax.cosine_decay_schedule(1.0, steps))

    def objective(p, rho):
        reg = sum(jnp.vdot(x, x) for x in jax.tree_util.tree_leaves(p))
        return jnp.sum(rho * loss_fn(p, data)) / jnp.sum(rho) + 0.5 * wd * reg

    def one(rho):
        def step(carry, _):
            p, s = carry
            g = jax.grad(objective)(p, rho)
            u, s = opt.update(g, s, p)
            u = jax.tree_util.tree_map(lambda x: lr * x, u)
            return (optax.apply_updates(p, u), s), None
        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return p
    return jax.lax.map(one, weights, batch_size=chunk)


def retrain(loss_fn: Callable, params, data, weights, *, steps: int, learning_rate: float = 1e-2,
            weight_decay: float = 0.0, chunk: int = 32):
    """Train one model per row of ``weights`` [M, n] from ``params``; returns params stacked [M, ...].

    Args:
        loss_fn: the loss contract ``loss_fn(params, batch) -> [n]`` per-example losses.
        params: the common initialization (PyTree).
        data: the training batch (PyTree with leading axis n), used in full at every step.
        weights: [M, n] (or [n]) example weights ρ_m; 0/1 rows train on subsets.
        steps: full-batch Adam steps; the step size decays from ``learning_rate`` to 0 (cosine).
        weight_decay: λ of the L2 term (λ/2)‖w‖², which makes the retrained optimum well defined.
        chunk: models trained side by side (memory ∝ chunk · n).
    """
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    w = _check(weights, n)
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1; got {steps}")
    chunk = max(1, min(int(chunk), w.shape[0]))
    return _retrain(loss_fn, params, data, jnp.asarray(w), jnp.float32(learning_rate),
                    jnp.float32(weight_decay), steps=int(steps), chunk=chunk)


@partial(jax.jit, static_argnames=("loss_fn",))
def _query(loss_fn, stacked, data):
    return jax.vmap(lambda p: loss_fn(p, data))(stacked)


def query_losses(loss_fn: Callable, stacked_params, data) -> np.ndarray:
    """Per-example losses ``[M, q]`` of every retrained model (leading axis M) on ``data``."""
    return np.asarray(_query(loss_fn, stacked_params, data))
