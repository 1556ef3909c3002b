r"""Streaming (constant-memory) moment accumulators, per chain and per batch of draws.

Each accumulator keeps, for every batch b of contiguous draws, the count n_b, the means and the
centred co-moment C_b = Σ (x − x̄_b)(y − ȳ_b)ᵀ, updated one draw at a time with Welford's rule

.. math::

    n' = n + 1,\quad \delta = x - \bar x,\quad \bar x' = \bar x + \delta / n',\quad
    \bar y' = \bar y + (y - \bar y)/n',\quad C' = C + \delta\,(y - \bar y')^\top ,

which never forms E[xy] − E[x]E[y] and so is stable under large offsets. Batches (and chains) are
pooled exactly with Chan et al.'s parallel formula. Keeping B batches per chain gives the
batch-means Monte-Carlo standard error without storing draws.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .moments import Moments

__all__ = ["Accumulator", "acc_init", "acc_update", "pool", "batch_of_draw"]


class Accumulator(NamedTuple):
    """One chain's accumulator: [B] counts, [B, *sx] / [B, *sy] means, [B, *sx, *sy] co-moment.

    For a single observable (y is x) only the elementwise second moment is kept: comoment [B, *sx].
    """

    count: jnp.ndarray
    mean_x: jnp.ndarray
    mean_y: jnp.ndarray | None
    comoment: jnp.ndarray


def acc_init(num_batches: int, sx: tuple, sy: tuple | None, dtype=jnp.float32) -> Accumulator:
    """Empty accumulator for x of shape sx and y of shape sy (sy None: x with itself, elementwise)."""
    cm_shape = (num_batches, *sx) if sy is None else (num_batches, *sx, *sy)
    return Accumulator(
        jnp.zeros((num_batches,), dtype),
        jnp.zeros((num_batches, *sx), dtype),
        None if sy is None else jnp.zeros((num_batches, *sy), dtype),
        jnp.zeros(cm_shape, dtype))


def batch_of_draw(draw, num_draws: int, num_batches: int):
    """Index of the contiguous batch a draw falls in (batches of near-equal size)."""
    return (draw * num_batches) // num_draws


def acc_update(acc: Accumulator, b, x, y=None, active=True) -> Accumulator:
    """Add one draw (x, y) to batch ``b``. ``active=False`` leaves it unchanged (diverged chains)."""
    x = x.astype(acc.mean_x.dtype)
    w = jnp.asarray(active, acc.count.dtype)
    n = acc.count[b] + w
    mx = acc.mean_x[b]
    dx = x - mx
    mx_new = mx + w * dx / jnp.maximum(n, 1.0)
    if acc.mean_y is None:
        cm = acc.comoment[b] + w * dx * (x - mx_new)
        return Accumulator(acc.count.at[b].set(n), acc.mean_x.at[b].set(mx_new), None,
                           acc.comoment.at[b].set(cm))
    y = y.astype(acc.mean_y.dtype)
    my = acc.mean_y[b]
    my_new = my + w * (y - my) / jnp.maximum(n, 1.0)
    outer = jnp.tensordot(dx, y - my_new, axes=0)
    cm = acc.comoment[b] + w * outer
    return Accumulator(acc.count.at[b].set(n), acc.mean_x.at[b].set(mx_new),
                       acc.mean_y.at[b].set(my_new), acc.comoment.at[b].set(cm))


def to_moments(acc: Accumulator) -> Moments:
    """Host copy of a chain-stacked accumulator ([C, B, ...] leaves)."""
    return Moments(np.asarray(acc.count), np.asarray(acc.mean_x),
                   None if acc.mean_y is None else np.asarray(acc.mean_y), np.asarray(acc.comoment))


def pool(count, mean_x, mean_y, comoment, axis_groups: int):
    """Chan's pooling of the first ``axis_groups`` axes (e.g. 2 for chain × batch).

    Returns (N, mean_x, mean_y, comoment) for the pooled set of draws; empty groups are ignored.
    ``mean_y`` None means the elementwise self co-moment.
    """
    k = int(np.prod(count.shape[:axis_groups]))
    n = count.reshape(k).astype(np.float64)
    mx = mean_x.reshape(k, *mean_x.shape[axis_groups:]).astype(np.float64)
    cm = comoment.reshape(k, *comoment.shape[axis_groups:]).astype(np.float64)
    N = n.sum()
    wx = n.reshape(k, *[1] * (mx.ndim - 1))
    Mx = (wx * mx).sum(0) / N
    dx = mx - Mx
    if mean_y is None:
        C = cm.sum(0) + (wx * dx * dx).sum(0)
        return N, Mx, None, C
    my = mean_y.reshape(k, *mean_y.shape[axis_groups:]).astype(np.float64)
    wy = n.reshape(k, *[1] * (my.ndim - 1))
    My = (wy * my).sum(0) / N
    dy = my - My
    between = np.einsum("k,ki,kj->ij", n, dx.reshape(k, -1), dy.reshape(k, -1))
    C = cm.sum(0) + between.reshape(cm.shape[1:])
    return N, Mx, My, C
