r"""Stochastic gradient Langevin dynamics (Welling & Teh 2011) with localization.

One step, the convention of theory.md §2.1 and devinterp:

.. math::

    w \leftarrow w - \frac{\epsilon}{2}\big[n\beta\,\nabla L_B(w) + \gamma (w - w^*)\big] + \sqrt{\epsilon}\,\xi,
    \qquad \xi \sim \mathcal N(0, I).

The bracket is the potential gradient ∇U supplied by the kernel. blackjax writes the same update as
``x + h ∇log p + sqrt(2h) ξ``: its ``step_size`` h equals ε/2 here. With a mask, drift and noise are
zero outside the component. For a quadratic of precision p the stationary variance is
1/(p(1 − εp/4)) (unadjusted-Langevin step-size bias, theory.md §4.1 with h = ε/2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .base import SamplingAlgorithm, apply_mask, check_step_size, tree_normal

__all__ = ["sgld"]


def _init(position, hp):
    return ()


def _step(key, position, aux, grads, mask, hp):
    e = hp["step_size"]
    noise = tree_normal(key, position)
    update = jax.tree_util.tree_map(lambda g, z: -0.5 * e * g + jnp.sqrt(e) * z, grads.potential, noise)
    update = apply_mask(update, mask)
    return jax.tree_util.tree_map(lambda w, u: w + u, position, update), aux


def sgld(step_size: float) -> SamplingAlgorithm:
    """SGLD with step size ``step_size`` = ε (blackjax h = ε/2)."""
    return SamplingAlgorithm(_init, _step, "sgld", {"step_size": check_step_size(step_size)})
