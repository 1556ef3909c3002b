"""Split a parameter PyTree into the leaves that move and the leaves a mask freezes entirely.

A component mask often freezes whole leaves (a head-restricted chain of a transformer never moves
the embedding and unembedding, 84% of the `full` model's parameters). Those leaves are split out of
the position the sampler sees: they get no noise, no update and no gradient, and the stacked run
costs what the moving parameters cost. The split uses ``None`` placeholders (equinox's
partition/combine), so the moving part keeps the structure of ``params``.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

__all__ = ["moving_leaves", "partition", "combine"]

_is_none = lambda x: x is None  # noqa: E731


def moving_leaves(params, mask) -> tuple[bool, ...]:
    """One flag per leaf of ``params``: does any coordinate of it move (in any component)?"""
    n = len(jax.tree_util.tree_leaves(params))
    if mask is None:
        return (True,) * n
    return tuple(bool(np.any(np.asarray(m) != 0)) for m in jax.tree_util.tree_leaves(mask))


def partition(tree, moving: Sequence[bool]) -> tuple[Any, Any]:
    """``(moving part, frozen part)``: each has ``tree``'s structure with ``None`` for the other's leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if len(leaves) != len(moving):
        raise ValueError(f"partition: {len(leaves)} leaves but {len(moving)} flags")
    dyn = [x if m else None for x, m in zip(leaves, moving)]
    rest = [None if m else x for x, m in zip(leaves, moving)]
    return jax.tree_util.tree_unflatten(treedef, dyn), jax.tree_util.tree_unflatten(treedef, rest)


def combine(dyn, rest):
    """Inverse of `partition`: the full tree from its moving and frozen parts."""
    if rest is None:
        return dyn
    a, treedef = jax.tree_util.tree_flatten(dyn, is_leaf=_is_none)
    b = jax.tree_util.tree_leaves(rest, is_leaf=_is_none)
    return jax.tree_util.tree_unflatten(treedef, [x if x is not None else y for x, y in zip(a, b)])
