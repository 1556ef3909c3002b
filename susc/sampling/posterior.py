r"""The localized tempered posterior and its (minibatch) potential gradient.

Convention (theory.md §1.2–1.3), used everywhere in `susc`:

.. math::

    p(w) \propto \exp\{-n\beta\,[L^\rho_n(w) + h\,\Delta L(w)] - \tfrac{\gamma}{2}\|w-w^*\|^2\},
    \qquad L^\rho_n(w) = \frac1n \sum_i \rho_i\, \ell_i(w).

Only the product :math:`n\beta` (``nbeta``) enters. ``weights`` are the per-sample :math:`\rho`
(default 1), ``perturbation=(h, delta_fn)`` adds the field :math:`h\,\Delta L`, ``center`` is
:math:`w^*` and ``gamma`` is :math:`\gamma`. The potential is :math:`U = n\beta(L^\rho_n + h\Delta L)
+ \frac\gamma2\|w-w^*\|^2`; the samplers receive :math:`\nabla U` evaluated on a minibatch, where
:math:`L_n` is replaced by the minibatch mean :math:`L_B = \frac1B\sum_{i\in B}\rho_i\ell_i`
(mean over tokens too, when the loss is per token).

A `Posterior` is a PyTree: its arrays (data, nβ, γ, h, ρ, w*) are leaves passed to the compiled
program at run time, and its functions and batch size are static. Two posteriors with the same
functions and shapes share one compiled kernel, so a sweep over nβ, γ, h, ρ or the data compiles once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..samplers.noise import key_words, normal_bits
from .partition import combine

__all__ = ["Posterior", "Gradients", "potential_loss", "mean_loss", "float_dtype", "tree_size"]

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


def float_dtype(params) -> np.dtype:
    """The floating dtype every sampled quantity uses: that of ``params`` (float32 or float64).

    Low-precision parameters are refused: Langevin noise of size √ε ~ 1e-2 added to bfloat16 weights
    (8 bits of mantissa) is mostly rounded away, and moments accumulated in it are meaningless.
    """
    dts = {jnp.result_type(x) for x in jax.tree_util.tree_leaves(params)}
    bad = [str(d) for d in dts if not jnp.issubdtype(d, jnp.floating)]
    if bad:
        raise TypeError(f"params must be floating point, got leaves of dtype {bad}")
    low = [str(d) for d in dts if jnp.finfo(d).bits < 32]
    if low:
        raise TypeError(f"params of dtype {low} are not supported: SGLD noise and streaming moments need "
                        "float32 or float64. Cast first: jax.tree.map(lambda x: x.astype(jnp.float32), params)")
    return np.dtype(jnp.result_type(*dts))


def mean_loss(loss_fn, params, data, weights=None):
    """(1/B) Σ_i ρ_i ℓ_i over the rows of ``data`` (per-token losses are averaged over tokens first)."""
    per = loss_fn(params, data)
    per = per.reshape(per.shape[0], -1).mean(axis=1)
    return jnp.mean(per if weights is None else weights * per)


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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Posterior:
    """p(w) ∝ exp{−nβ[L^ρ_n(w) + hΔL(w)] − (γ/2)‖w − w*‖²}: everything that defines the sampled density.

    Build it with `Posterior.build` (validates, casts to the params' dtype). Leaves: ``data``,
    ``nbeta``, ``gamma``, ``h``, ``weights`` [n], ``center`` (w*). Static: ``loss_fn``,
    ``delta_fn`` (ΔL(w) -> scalar, or None) and ``batch_size`` (None = full batch).
    """

    data: PyTree
    nbeta: jax.Array
    gamma: jax.Array
    h: jax.Array
    weights: jax.Array
    center: PyTree
    loss_fn: Callable = dataclasses.field(metadata=dict(static=True))
    delta_fn: Callable | None = dataclasses.field(default=None, metadata=dict(static=True))
    batch_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))

    @classmethod
    def build(cls, loss_fn, params, data, *, nbeta, gamma=0.0, weights=None, perturbation=None,
              center=None, batch_size=None) -> "Posterior":
        """Validated posterior in the dtype of ``params`` (see `check_inputs` for the errors)."""
        from .validate import check_posterior
        n = check_posterior(loss_fn, params, data, nbeta=nbeta, gamma=gamma, batch_size=batch_size,
                            weights=weights, perturbation=perturbation)
        dt = float_dtype(params)
        h, delta_fn = perturbation if perturbation is not None else (0.0, None)
        as_dt = lambda x: jnp.asarray(x, dt)  # noqa: E731
        center = params if center is None else center
        return cls(jax.tree_util.tree_map(jnp.asarray, data), as_dt(nbeta), as_dt(gamma), as_dt(h),
                   jnp.ones((n,), dt) if weights is None else as_dt(weights),
                   jax.tree_util.tree_map(as_dt, center), loss_fn, delta_fn,
                   None if batch_size is None or int(batch_size) >= n else int(batch_size))

    @property
    def n(self) -> int:
        return int(jax.tree_util.tree_leaves(self.data)[0].shape[0])

    def batch_loss(self, params, idx=None):
        """L^ρ_B: mean (ρ-weighted) loss over rows ``idx`` (all rows if None)."""
        data, weights = self.data, self.weights
        if idx is not None:
            data = jax.tree_util.tree_map(lambda x: x[idx], data)
            weights = weights[idx]
        return mean_loss(self.loss_fn, params, data, weights).astype(self.nbeta.dtype)

    def batch_index(self, key):
        """Rows of one minibatch, drawn without replacement; None means full batch."""
        if self.batch_size is None:
            return None
        # Without replacement: the B largest of n random keys (top_k is O(n), unlike a full
        # permutation). The keys are the counter-based hash of susc.samplers.noise under this
        # step's key: as random as threefry's here, at a fraction of its cost.
        k0, k1 = key_words(key)
        bits = normal_bits(k0, k1, jnp.arange(self.n, dtype=jnp.uint32))
        u = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)  # [1, 2)
        return jax.lax.top_k(u, self.batch_size)[1]

    def value_and_grads(self, position, key, rest=None, center=None):
        """(L_B, `Gradients`) at ``position`` with the minibatch picked by ``key``.

        ``rest`` holds the frozen leaves (see `susc.sampling.partition`): gradients are taken with
        respect to ``position`` only, and ``center`` is w* restricted to the same leaves.
        """
        center = self.center if center is None else center
        idx = self.batch_index(key)
        loss, g_loss = jax.value_and_grad(lambda p: self.batch_loss(combine(p, rest), idx))(position)
        g_data = g_loss
        if self.delta_fn is not None:
            g_delta = jax.grad(lambda p: jnp.sum(self.delta_fn(combine(p, rest))))(position)
            g_data = jax.tree_util.tree_map(lambda a, b: a + self.h * b, g_loss, g_delta)
        g_pot = jax.tree_util.tree_map(lambda g, w, c: self.nbeta * g + self.gamma * (w - c),
                                       g_data, position, center)
        return loss, Gradients(g_pot, g_loss)

    def full_loss(self, params, chunk: int | None = None) -> float:
        """L^ρ_n(params) over all n rows on the host, ``chunk`` rows per compiled call (a single
        forward pass over a large token dataset can need many GB)."""
        n = self.n
        chunk = n if chunk is None else min(n, int(chunk))
        total = 0.0
        for s in range(0, n, chunk):
            part = jax.tree_util.tree_map(lambda x: x[s:s + chunk], self.data)
            total += float(_mean_loss_jit(self.loss_fn, params, part, self.weights[s:s + chunk])) \
                * min(chunk, n - s)
        return total / n


_mean_loss_jit = jax.jit(mean_loss, static_argnums=0)
