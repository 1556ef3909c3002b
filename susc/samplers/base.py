"""The sampler interface: a pair of pure functions ``(init, step)``.

``init(position, hp) -> aux`` builds the sampler's auxiliary state (empty for SGLD, RMSProp averages,
SGNHT momentum and thermostat). ``step(key, position, aux, grads, mask, hp) -> (position, aux)``
makes one update given `susc.sampling.posterior.Gradients` at ``position``. ``hp`` is the dict of
hyperparameters (``{"step_size": ε, ...}``) passed as *traced* scalars of the position's dtype, so
one compiled program serves a sweep over any of them and an adaptive loop may change them between
blocks. ``mask`` is a PyTree of 0/1 arrays like the position (or None): drift and noise are
multiplied by it, so coordinates outside the component never move.

The built-in samplers' ``init``/``step`` are module-level functions: two calls of ``susc.sgld(ε)``
return equal algorithms, and the compiled kernel is reused. A custom sampler whose functions are
defined once is reused the same way. Samplers are stateless and know nothing about chains: the
kernel vmaps them.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .noise import tree_normal

__all__ = ["SamplingAlgorithm", "tree_normal", "apply_mask", "check_step_size"]


class SamplingAlgorithm(NamedTuple):
    """A sampler: ``init``/``step`` pure functions plus its name and hyperparameters ``hp``."""

    init: Callable[[Any, dict], Any]
    step: Callable[..., tuple[Any, Any]]
    name: str
    hyperparams: dict


def apply_mask(update, mask):
    """Zero an update outside the component (mask None = everything moves)."""
    if mask is None:
        return update
    return jax.tree_util.tree_map(lambda u, m: u * m.astype(u.dtype), update, mask)


def check_step_size(step_size, name="step_size"):
    try:
        ok = float(step_size) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} (ε) must be a positive number, got {step_size!r}; "
                         "typical values are 1e-5 to 1e-2 (lower it if chains diverge)")
    return float(step_size)
