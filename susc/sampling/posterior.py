r"""The localized tempered posterior and its (minibatch) potential gradient.

Convention (theory.md §1.2–1.3), used everywhere in `susc`:

.. math::

    p(w) \propto \exp\{-n\beta\,[L^\rho_n(w) + h\,\Delta L(w)] - \tfrac{\gamma}{2}\|w - w^*\|^2\},
    \qquad L^\rho_n(w) = \frac1n \sum_i \rho_i\, \ell_i(w).

Only the product :math:`n\beta` (``nbeta``) enters. ``weights`` are the per-sample :math:`\rho`
(default 1), ``perturbation=(h, delta_fn)`` adds the field :math:`h\,\Delta L`, ``center`` is
:math:`w^*` and ``gamma`` is :math:`\gamma`. The potential is :math:`U = n\beta(L^\rho_n + h\Delta L)
+ \frac\gamma2\|w-w^*\|^2`; the samplers receive :math:`\nabla U` evaluated on a minibatch, where
:math:`L_n` is replaced by the minibatch mean :math:`L_B = \frac1B\sum_{i\in B}\rho_i\ell_i`
(mean over tokens too, when the loss is per token).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Posterior", "Gradients", "potential_loss", "check_inputs", "tree_size"]

PyTree = Any


class Gradients(NamedTuple):
    """Gradients handed to a sampler's step at the current position.

    potential: ∇U = nβ(∇L_B + h∇ΔL) + γ(w − w*)  (what Langevin dynamics follows)
    loss: ∇L_B, the unscaled minibatch loss gradient (what RMSProp preconditioning tracks)
    """

    potential: PyTree
    loss: PyTree


def tree_size(tree: PyTree) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def potential_loss(V: Callable[[PyTree], jax.Array], n: int = 1):
    """Turn a potential ``V(params) -> scalar`` into the loss contract ``(loss_fn, data)``.

    The returned ``loss_fn(params, batch)`` gives ``V(params)`` for every row of a dummy dataset of
    ``n`` rows, so ``L_n = V`` and the posterior is ∝ exp{−nβ V − (γ/2)‖w−w*‖²}: ``nbeta`` plays the
    inverse temperature t of theory.md §4.
    """
    if int(n) < 1:
        raise ValueError(f"potential_loss: n must be >= 1, got {n}")

    def loss_fn(params, batch):
        return jnp.broadcast_to(V(params), batch.shape[:1])

    return loss_fn, jnp.zeros((int(n),), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Posterior:
    """Everything that defines the sampled density, closed over by the compiled chain loop."""

    loss_fn: Callable
    nbeta: float
    gamma: float
    n: int
    batch_size: int | None = None
    h: float = 0.0
    delta_fn: Callable | None = None

    def batch_loss(self, params, data, weights, idx=None):
        """Mean (optionally ρ-weighted) loss over a batch of rows ``idx`` (all rows if None)."""
        if idx is not None:
            data = jax.tree_util.tree_map(lambda x: x[idx], data)
            weights = weights[idx]
        per = self.loss_fn(params, data)
        per = per.reshape(per.shape[0], -1).mean(axis=1)  # mean over tokens: [B]
        return jnp.mean(weights * per)

    def batch_index(self, key):
        """Rows of one minibatch, drawn without replacement; None means full batch."""
        if self.batch_size is None or self.batch_size >= self.n:
            return None
        # Without replacement: the B largest of n uniforms (top_k is O(n), unlike a full permutation).
        return jax.lax.top_k(jax.random.uniform(key, (self.n,)), self.batch_size)[1]

    def value_and_grads(self, params, center, data, weights, key, hyper=None):
        """(L_B(w), Gradients) at ``params`` with the minibatch picked by ``key``.

        ``hyper`` = (nβ, γ, h) as traced scalars lets one compiled program serve a sweep over them;
        None uses the values stored on the posterior.
        """
        nbeta, gamma, h = (self.nbeta, self.gamma, self.h) if hyper is None else hyper[:3]
        idx = self.batch_index(key)
        loss, g_loss = jax.value_and_grad(self.batch_loss)(params, data, weights, idx)
        g_data = g_loss
        if self.delta_fn is not None:
            g_delta = jax.grad(lambda p: jnp.sum(self.delta_fn(p)))(params)
            g_data = jax.tree_util.tree_map(lambda a, b: a + h * b, g_loss, g_delta)
        g_pot = jax.tree_util.tree_map(
            lambda g, w, c: nbeta * g + gamma * (w - c), g_data, params, center)
        return loss, Gradients(g_pot, g_loss)


def _leading(data) -> list[tuple[str, int]]:
    leaves = jax.tree_util.tree_leaves_with_path(data)
    return [(jax.tree_util.keystr(p) or "data", int(np.shape(x)[0]) if np.ndim(x) else -1)
            for p, x in leaves]


def check_inputs(loss_fn, params, data, *, nbeta, gamma, batch_size, weights, mask,
                 observables, num_chains, num_draws, num_burnin, steps_per_draw) -> int:
    """Validate the arguments of `susc.sample`; return n. Errors name the argument and the fix."""
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params, batch) -> per-example losses (B,) or (B, T)")
    if not np.isfinite(nbeta) or nbeta < 0:
        raise ValueError(f"nbeta must be a positive number (the inverse temperature nβ), got {nbeta!r}")
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma (localization strength γ) must be >= 0, got {gamma!r}")
    if nbeta == 0 and gamma == 0:
        raise ValueError("nbeta must be positive: nbeta=0 with gamma=0 is an improper posterior. "
                         "For the nβ = 0 control (pure localization) pass gamma > 0.")
    for name, v, lo in [("num_chains", num_chains, 1), ("num_draws", num_draws, 1),
                        ("steps_per_draw", steps_per_draw, 1), ("num_burnin", num_burnin, 0)]:
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    leads = _leading(data)
    if not leads:
        raise ValueError("data is empty: pass a PyTree of arrays with a leading axis of n samples "
                         "(use susc.potential_loss(V) for a data-free potential)")
    sizes = {s for _, s in leads}
    if len(sizes) != 1 or -1 in sizes:
        desc = ", ".join(f"{p}: {s if s >= 0 else 'scalar'}" for p, s in leads)
        raise ValueError(f"data leaves must share one leading axis (the sample axis n); got {desc}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("data has n = 0 samples; pass at least one row")
    if batch_size is not None and (int(batch_size) != batch_size or not 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, n={n}] or None for full batch, got {batch_size!r}")
    bad = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(params)
           if not np.all(np.isfinite(np.asarray(x)))]
    if bad:
        raise ValueError(f"params (the initial point w*) contain non-finite values at {bad}; "
                         "start from a finite trained point")
    if weights is not None and np.shape(weights) != (n,):
        raise ValueError(f"weights must have shape (n,) = ({n},), got {np.shape(weights)}")
    if weights is not None and not np.all(np.isfinite(np.asarray(weights))):
        raise ValueError("weights contain non-finite values")
    if mask is not None:
        ps, ms = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(mask)
        if ps != ms:
            raise ValueError(f"mask must have the same PyTree structure as params.\n  params: {ps}\n  mask:   {ms}")
        for (p, w), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mask)):
            try:
                np.broadcast_shapes(np.shape(m), np.shape(w))
            except ValueError:
                raise ValueError(f"mask leaf {jax.tree_util.keystr(p)} has shape {np.shape(m)}, "
                                 f"not broadcastable to the parameter's {np.shape(w)}") from None
    # Shapes of what loss_fn and the observables return, checked abstractly (no FLOPs spent).
    b = min(n, 2)
    batch = jax.tree_util.tree_map(lambda x: x[:b], data)
    try:
        out = jax.eval_shape(loss_fn, params, batch)
    except Exception as e:  # re-raise with the contract spelled out
        raise TypeError(f"loss_fn(params, batch) failed on a batch of {b} rows: {e}") from e
    if not hasattr(out, "shape") or len(out.shape) not in (1, 2) or out.shape[0] != b:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"loss_fn must return per-example losses of shape (B,) or (B, T); on a batch "
                         f"of B={b} rows it returned {got}. Do not average over the batch.")
    for name, fn in (observables or {}).items():
        if not callable(fn):
            raise TypeError(f"observable {name!r} must be a callable fn(params) -> array")
        try:
            o = jax.eval_shape(fn, params)
        except Exception as e:
            raise TypeError(f"observable {name!r} failed when called on params: {e}") from e
        if not isinstance(o, jax.ShapeDtypeStruct):
            raise TypeError(f"observable {name!r} must return one array, got {type(o).__name__} "
                            "(return jnp.stack([...]) or register each piece as its own observable)")
    return n
