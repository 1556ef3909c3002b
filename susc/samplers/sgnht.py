r"""Stochastic gradient Nosé–Hoover thermostat (Ding et al. 2014).

With momentum p, thermostat ξ, diffusion A and step size ε (Ding et al.'s h):

.. math::

    p \leftarrow p - \epsilon\,\xi\,p - \epsilon\,\nabla U(w) + \sqrt{2A\epsilon}\,\eta,\qquad
    w \leftarrow w + \epsilon\, p,\qquad
    \xi \leftarrow \xi + \epsilon\,(p^\top p / d - 1),

where ∇U = nβ∇L_B + γ(w − w*) and d is the number of sampled coordinates (the mask's support).
The thermostat absorbs the unknown minibatch-gradient noise, so the invariant density is
∝ exp(−U) for any A. Momentum starts at 0 and ξ at A.

Note: the position update uses the *new* momentum, so the runner's carried gradient is at the
current position, as for SGLD.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .base import SamplingAlgorithm, apply_mask, check_step_size, tree_normal

__all__ = ["sgnht"]


class SGNHTState(NamedTuple):
    momentum: object
    xi: jax.Array


def _init(position, hp):
    return SGNHTState(jax.tree_util.tree_map(jnp.zeros_like, position), jnp.asarray(hp["diffusion"]))


def _step(key, position, aux, grads, mask, hp):
    e, diffusion = hp["step_size"], hp["diffusion"]
    noise = tree_normal(key, position)
    p = jax.tree_util.tree_map(
        lambda p, g, z: p - e * aux.xi * p - e * g + jnp.sqrt(2 * diffusion * e) * z,
        aux.momentum, grads.potential, noise)
    p = apply_mask(p, mask)
    ones = jax.tree_util.tree_map(jnp.ones_like, position)
    d = sum(jnp.sum(m) for m in jax.tree_util.tree_leaves(apply_mask(ones, mask)))
    kinetic = sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(p))
    xi = aux.xi + e * (kinetic / d - 1.0)
    position = jax.tree_util.tree_map(lambda w, pp: w + e * pp, position, p)
    return position, SGNHTState(p, xi)


def sgnht(step_size: float, diffusion: float = 1.0) -> SamplingAlgorithm:
    """SGNHT with step ε = ``step_size`` and diffusion A = ``diffusion``."""
    eps = check_step_size(step_size)
    if not diffusion > 0:
        raise ValueError(f"diffusion (A) must be positive, got {diffusion!r}")
    return SamplingAlgorithm(_init, _step, "sgnht", {"step_size": eps, "diffusion": float(diffusion)})
