"""The compiled chain loop: one `lax.scan` over draws, chains vmapped inside, observables evaluated
at every draw inside the loop, streaming accumulators updated in place.

Randomness: chain c uses ``ck = fold_in(key, c)``; step k of that chain uses ``fold_in(ck, k)``
(noise from ``fold_in(., 0)``, the next minibatch from ``fold_in(., 1)``). Chain c's stream therefore
depends on neither ``num_chains`` nor how the run is split into blocks, which is what makes
checkpoint/resume bitwise identical.

The gradient at the current position is carried in the state (computed right after each move), so
the loss at a draw is free and each step costs one ``value_and_grad``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .posterior import Gradients, Posterior
from ..samplers.base import SamplingAlgorithm
from ..stats.streaming import acc_update, batch_of_draw

__all__ = ["ChainState", "make_kernels"]


class ChainState(NamedTuple):
    position: Any
    aux: Any
    loss: jax.Array        # L_B at position (the minibatch the next step will use)
    grads: Gradients       # gradients at position, same minibatch
    step: jax.Array        # global step counter (int32)
    bad_draw: jax.Array    # first draw with a non-finite loss, -1 if none


def _finite(loss, grads):
    sq = sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads.potential))
    return jnp.isfinite(loss) & jnp.isfinite(sq)


def make_kernels(post: Posterior, sampler: SamplingAlgorithm, observables: dict[str, Callable],
                 acc_spec: dict[str, tuple], *, num_draws: int, num_batches: int, steps_per_draw: int,
                 draw_loss: str, store_draws: bool, progress_cb: Callable | None):
    """Build ``init(cks, params, ctx)``, ``burnin(states, cks, ctx, num_steps)`` and
    ``block(states, accs, cks, ctx, start, length)`` over a leading chain axis (not yet jitted:
    the runner may vmap them over components first; the lengths are static).

    ``ctx`` = (data, weights, center, mask, hyper) is passed as an argument (never closed over) so
    large datasets are not baked into the compiled program as constants, and ``hyper`` = (nβ, γ, h)
    and the step size ε are traced scalars: a sweep over them reuses one compiled program.
    """

    def init_one(ck, params, ctx):
        data, weights, center, mask, hyper = ctx
        loss, grads = post.value_and_grads(params, center, data, weights,
                                           jax.random.fold_in(jax.random.fold_in(ck, 0), 1), hyper)
        return ChainState(params, sampler.init(params), loss, grads,
                          jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))

    def step_one(cs: ChainState, ck, ctx):
        data, weights, center, mask, hyper = ctx
        k = jax.random.fold_in(ck, cs.step)
        pos, aux = sampler.step(jax.random.fold_in(k, 0), cs.position, cs.aux, cs.grads, mask,
                                {"step_size": hyper[3]})
        kb = jax.random.fold_in(jax.random.fold_in(ck, cs.step + 1), 1)
        loss, grads = post.value_and_grads(pos, center, data, weights, kb, hyper)
        return cs._replace(position=pos, aux=aux, loss=loss, grads=grads, step=cs.step + 1)

    def steps(states, cks, ctx, n):
        def body(s, _):
            return jax.vmap(step_one, in_axes=(0, 0, None))(s, cks, ctx), None
        return jax.lax.scan(body, states, None, length=n)[0]

    def draw_values(cs: ChainState, ctx):
        data, weights, *_ = ctx
        loss = cs.loss if draw_loss == "auto" else post.batch_loss(cs.position, data, weights)
        obs = {name: jnp.asarray(fn(cs.position)) for name, fn in observables.items()}
        return loss, obs

    def init(cks, params, ctx):
        return jax.vmap(init_one, in_axes=(0, None, None))(cks, params, ctx)

    def burnin(states, cks, ctx, num_steps):
        return steps(states, cks, ctx, num_steps)

    def block(states, accs, cks, ctx, start, length):
        def body(carry, i):
            states, accs = carry
            d = start + i
            states = steps(states, cks, ctx, steps_per_draw)
            loss, obs = jax.vmap(draw_values, in_axes=(0, None))(states, ctx)
            ok = jax.vmap(_finite)(loss, states.grads)
            bad = jnp.where((states.bad_draw < 0) & ~ok, d, states.bad_draw)
            states = states._replace(bad_draw=bad)
            vals = dict(obs, loss=loss)
            b = batch_of_draw(d, num_draws, num_batches)
            new_accs = {}
            for key_, (xn, yn) in acc_spec.items():
                y = None if yn is None else vals[yn]
                upd = (lambda a, x, y_, act: acc_update(a, b, x, y_, act))
                new_accs[key_] = jax.vmap(upd)(accs[key_], vals[xn], y, bad < 0)
            if progress_cb is not None:  # ~200 host round-trips per run, not one per draw
                every = max(1, num_draws // 200)
                jax.lax.cond(((d + 1) % every == 0) | (d + 1 == num_draws),
                             lambda: jax.debug.callback(progress_cb, d + 1), lambda: None)
            out = (loss, obs) if store_draws else (loss, {})
            return (states, new_accs), out

        (states, accs), (loss, obs) = jax.lax.scan(body, (states, accs), jnp.arange(length))
        return states, accs, loss, obs

    return init, burnin, block
