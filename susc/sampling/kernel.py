r"""The compiled chain program, as a public kernel layer under the `susc.sample` driver.

``kernel = build_kernel(sampler, ...)`` returns `Kernel` ``(context, init, burnin, run_block)``:

.. code-block:: python

    ctx = kernel.context(posterior, params, mask=None)     # runtime data: posterior, ε, masks, probes
    state = kernel.init(key, ctx, num_chains, num_draws)    # RunState: chains, accumulators, counters
    state = kernel.burnin(state, ctx, 100)                  # steps, nothing recorded
    state, draws = kernel.run_block(state, ctx, 50)         # 50 draws, loss/observables [C, 50, ...]
    ctx = ctx.replace_hp(step_size=5e-4)                    # e.g. adaptive ε: no recompilation

Every function is one ``jax.jit`` keyed on a hashable `KernelSpec` (sampler functions, observable
functions, accumulators, lengths) and on the *static* parts of the context (loss function, batch
size, which leaves move): jit's own cache replaces any hand-made one. Everything else — data,
nβ, γ, h, ρ, w*, ε, masks, probe sets — is a runtime argument, so a sweep compiles once.

Each step is the sampler's update followed by one ``value_and_grad`` at the new position (the
gradient is carried in the state, so the loss at a draw is free). Randomness: chain c uses
``ck = fold_in(key, c)``; step k uses ``fold_in(ck, k)`` (noise from ``fold_in(., 0)``, the next
minibatch from ``fold_in(fold_in(ck, k + 1), 1)``): chain c's stream depends on neither the number
of chains nor on how the run is split into blocks, so resuming is bitwise. With K stacked
components (``mask`` with a leading K axis) the K × C chains run in one program and component k
shares chain keys with a single run of ``mask[k]``.

Divergence (a non-finite loss or gradient) is recorded per chain at the draw it happens. With
``on_divergence="raise"`` every later draw of the block is skipped (a real branch, no compute);
with ``"drop"`` the other chains go on and the diverged one stops accumulating.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..samplers.base import SamplingAlgorithm
from ..stats.streaming import acc_init, acc_update, batch_of_draw
from .observables import Observable, evaluate, normalize
from .partition import combine, moving_leaves, partition
from .posterior import Gradients, Posterior

__all__ = ["KernelSpec", "Kernel", "Context", "ChainState", "RunState", "Draws", "build_kernel"]


class ChainState(NamedTuple):
    position: Any          # the moving leaves (None where a mask freezes a whole leaf)
    aux: Any               # the sampler's state
    loss: jax.Array        # L_B at position (the minibatch the next step will use)
    grads: Gradients       # gradients at position, same minibatch
    step: jax.Array        # global step counter (int32)
    bad_draw: jax.Array    # first draw with a non-finite loss or gradient, -1 if none


class RunState(NamedTuple):
    """Everything a run carries between blocks (what a checkpoint saves); leaves ``[(K,) C, ...]``."""

    chains: ChainState
    accs: dict             # name -> Accumulator, [(K,) C, B, ...]
    keys: jax.Array        # [C, *key] raw chain keys (uint32)
    draw: jax.Array        # draws finished (int32)
    num_draws: jax.Array   # draws planned: sets the accumulators' batch boundaries (int32)


class Draws(NamedTuple):
    loss: jax.Array        # [(K,) C, L]
    observables: dict      # name -> [(K,) C, L, *s] (empty when draws are not stored)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Context:
    """Runtime inputs of the kernel. ``moving``/``stacked`` are static (they change the program)."""

    posterior: Posterior
    hp: dict               # sampler hyperparameters as scalars of the params' dtype
    mask: Any              # mask of the moving leaves ([K, ...] leaves when stacked), or None
    rest: Any              # the frozen leaves of params (None where leaves move)
    obs_data: dict         # observable name -> its data (None for data-free observables)
    params: Any            # the initial position's moving leaves
    moving: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    stacked: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def replace_hp(self, **hp) -> "Context":
        """The same context with some sampler hyperparameters changed (no recompilation)."""
        unknown = set(hp) - set(self.hp)
        if unknown:
            raise ValueError(f"unknown sampler hyperparameters {sorted(unknown)}; known: {sorted(self.hp)}")
        dt = self.posterior.nbeta.dtype
        return dataclasses.replace(self, hp={**self.hp, **{k: jnp.asarray(v, dt) for k, v in hp.items()}})


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """The hashable, static description of a chain program (see `build_kernel`)."""

    init_fn: Callable              # the sampler's init(position, hp)
    step_fn: Callable              # the sampler's step(key, position, aux, grads, mask, hp)
    observables: tuple = ()        # (name, fn, chunk_size, has_data)
    accumulate: tuple = ()         # (key, x, y-or-None) streaming moments
    num_batches: int = 8
    steps_per_draw: int = 1
    draw_loss: str = "auto"
    store_draws: bool = True
    on_divergence: str = "raise"


def _num_components(ctx: Context) -> int | None:
    return int(jax.tree_util.tree_leaves(ctx.mask)[0].shape[0]) if ctx.stacked else None


def _center(ctx: Context):
    return partition(ctx.posterior.center, ctx.moving)[0] if ctx.moving else ctx.posterior.center


def _values(spec: KernelSpec, ctx: Context, cs: ChainState):
    """(loss, observables) of one chain at its current position."""
    full = combine(cs.position, ctx.rest)
    obs = {name: evaluate(fn, chunk, full, ctx.obs_data[name] if has else None)
           for name, fn, chunk, has in spec.observables}
    if spec.draw_loss == "auto":
        loss = cs.loss
    elif spec.draw_loss == "full":
        loss = ctx.posterior.batch_loss(full)
    else:                                   # "observable:<name>": the mean of a recorded observable
        loss = jnp.mean(obs[spec.draw_loss.split(":", 1)[1]])
    return loss, obs


def _batch_key(ctx: Context, ck, step):
    """The key of step ``step``'s minibatch; None (nothing traced or lowered) when full batch."""
    if ctx.posterior.batch_size is None:
        return None
    return jax.random.fold_in(jax.random.fold_in(ck, step), 1)


def _step(spec: KernelSpec, ctx: Context, cs: ChainState, ck, mask):
    k = jax.random.fold_in(ck, cs.step)
    pos, aux = spec.step_fn(jax.random.fold_in(k, 0), cs.position, cs.aux, cs.grads, mask, ctx.hp)
    kb = _batch_key(ctx, ck, cs.step + 1)
    loss, grads = ctx.posterior.value_and_grads(pos, kb, ctx.rest, _center(ctx))
    return cs._replace(position=pos, aux=aux, loss=loss, grads=grads, step=cs.step + 1)


def _step_all(spec: KernelSpec, ctx: Context):
    """One step of every chain (and component): cs [(K,) C], keys [C], mask [(K,) ...]."""
    one = lambda cs, ck, m: _step(spec, ctx, cs, ck, m)  # noqa: E731
    f = jax.vmap(one, in_axes=(0, 0, None))
    if ctx.stacked:
        f = jax.vmap(f, in_axes=(0, None, 0))
    return lambda cs, cks: f(cs, cks, ctx.mask)


def _finite(loss, grads):
    sq = sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads.potential))
    return jnp.isfinite(loss) & jnp.isfinite(sq)


@partial(jax.jit, static_argnames=("spec", "num_chains"))
def _init(spec: KernelSpec, key, ctx: Context, num_chains: int, num_draws):
    cks = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num_chains))

    def one(ck):
        kb = _batch_key(ctx, ck, 0)
        loss, grads = ctx.posterior.value_and_grads(ctx.params, kb, ctx.rest, _center(ctx))
        return ChainState(ctx.params, spec.init_fn(ctx.params, ctx.hp), loss, grads,
                          jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))

    cs = jax.vmap(one)(cks)
    K = _num_components(ctx)
    lead = (num_chains,) if K is None else (K, num_chains)
    if K is not None:
        cs = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (K, *x.shape)), cs)
    loss_s, obs_s = jax.eval_shape(lambda ck: _values(spec, ctx, one(ck)), cks[0])   # abstract
    shapes = dict(obs_s, loss=loss_s)
    dt = ctx.posterior.nbeta.dtype
    accs = {}
    for name, x, y in spec.accumulate:
        acc = acc_init(spec.num_batches, shapes[x].shape, None if y is None else shapes[y].shape, dt)
        accs[name] = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, lead + a.shape), acc)
    return RunState(cs, accs, jax.random.key_data(cks), jnp.zeros((), jnp.int32),
                    jnp.asarray(num_draws, jnp.int32))


def _steps(spec, ctx, cs, cks, num_steps):
    step = _step_all(spec, ctx)
    return jax.lax.scan(lambda c, _: (step(c, cks), None), cs, None, length=num_steps)[0]


@partial(jax.jit, static_argnames=("spec", "num_steps"))
def _burnin(spec: KernelSpec, state: RunState, ctx: Context, num_steps: int) -> RunState:
    cks = jax.random.wrap_key_data(state.keys)
    return state._replace(chains=_steps(spec, ctx, state.chains, cks, num_steps))


def _accumulate(spec, accs, vals, active, b, stacked):
    upd = jax.vmap(lambda a, x, y, act: acc_update(a, b, x, y, act))
    if stacked:
        upd = jax.vmap(upd)
    return {name: upd(accs[name], vals[x], None if y is None else vals[y], active)
            for name, x, y in spec.accumulate}


@partial(jax.jit, static_argnames=("spec", "length"))
def _run_block(spec: KernelSpec, state: RunState, ctx: Context, length: int):
    cks = jax.random.wrap_key_data(state.keys)
    values = jax.vmap(lambda c: _values(spec, ctx, c))
    if ctx.stacked:
        values = jax.vmap(values)
    finite = jax.vmap(jax.vmap(_finite)) if ctx.stacked else jax.vmap(_finite)
    out_shapes = jax.eval_shape(values, state.chains)

    def advance(carry):
        cs, accs, d = carry
        cs = _steps(spec, ctx, cs, cks, spec.steps_per_draw)
        loss, obs = values(cs)
        bad = jnp.where((cs.bad_draw < 0) & ~finite(loss, cs.grads), d, cs.bad_draw)
        cs = cs._replace(bad_draw=bad)
        b = batch_of_draw(d, state.num_draws, spec.num_batches)
        accs = _accumulate(spec, accs, dict(obs, loss=loss), bad < 0, b, ctx.stacked)
        return cs, accs, (loss, obs if spec.store_draws else {})

    def skip(carry):   # after a divergence: nothing computed, NaN placeholders
        cs, accs, _ = carry
        nan = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), out_shapes)
        return cs, accs, (nan[0], nan[1] if spec.store_draws else {})

    def body(carry, i):
        cs, accs = carry
        diverged = cs.bad_draw >= 0
        stop = diverged.any() if spec.on_divergence == "raise" else diverged.all()
        cs, accs, out = jax.lax.cond(stop, skip, advance, (cs, accs, state.draw + i))
        return (cs, accs), out

    (cs, accs), (loss, obs) = jax.lax.scan(body, (state.chains, state.accs), jnp.arange(length, dtype=jnp.int32))
    ax = 2 if ctx.stacked else 1                        # scan stacks draws first: move them behind chains
    draws = Draws(jnp.moveaxis(loss, 0, ax), {k: jnp.moveaxis(v, 0, ax) for k, v in obs.items()})
    return state._replace(chains=cs, accs=accs, draw=state.draw + length), draws


class Kernel:
    """``(context, init, burnin, run_block)`` over one `KernelSpec`; see the module docstring."""

    def __init__(self, spec: KernelSpec, hyperparams: dict, observables: dict[str, Observable]):
        self.spec, self.hyperparams, self.observables = spec, dict(hyperparams), dict(observables)

    def context(self, posterior: Posterior, params, mask=None, stacked: bool = False) -> Context:
        """Runtime inputs: ``mask`` is a 0/1 PyTree like params, with a leading K axis if ``stacked``.
        Leaves the mask freezes entirely (in every component) are split out of the sampled position."""
        dt = posterior.nbeta.dtype
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dt), params)
        moving = moving_leaves(params, mask)
        dyn, rest = partition(params, moving)
        m = None
        if mask is not None:
            m = partition(jax.tree_util.tree_map(lambda x: jnp.asarray(x, dt), mask), moving)[0]
        hp = {k: jnp.asarray(v, dt) for k, v in self.hyperparams.items()}
        obs_data = {name: o.data for name, o in self.observables.items()}
        return Context(posterior, hp, m, None if all(moving) else rest, obs_data, dyn,
                       moving if not all(moving) else (), bool(stacked))

    def init(self, key, ctx: Context, num_chains: int, num_draws: int) -> RunState:
        if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
        return _init(self.spec, key, ctx, int(num_chains), num_draws)

    def burnin(self, state: RunState, ctx: Context, num_steps: int) -> RunState:
        return state if int(num_steps) == 0 else _burnin(self.spec, state, ctx, int(num_steps))

    def run_block(self, state: RunState, ctx: Context, length: int) -> tuple[RunState, Draws]:
        return _run_block(self.spec, state, ctx, int(length))


def build_kernel(sampler: SamplingAlgorithm, *, observables=None, accumulate=None, store_draws: bool = True,
                 num_batches: int = 8, steps_per_draw: int = 1, draw_loss: str = "auto",
                 on_divergence: str = "raise") -> Kernel:
    """A `Kernel` for ``sampler`` recording ``observables`` ({name: fn(params) | susc.observable(...)}).

    ``accumulate`` lists streaming moments as (key, x, y-or-None) with x, y observable names or
    "loss"; y None keeps means and elementwise variances of x. Two kernels built from equal
    arguments (same function objects) share every compiled program.
    """
    if not isinstance(sampler, SamplingAlgorithm):
        raise TypeError("sampler must be built by susc.sgld(step_size), susc.rmsprop_sgld(...) or susc.sgnht(...)")
    obs = normalize(observables)
    named = isinstance(draw_loss, str) and draw_loss.startswith("observable:")
    if not (draw_loss in ("auto", "full") or (named and draw_loss.split(":", 1)[1] in obs)):
        raise ValueError(f"draw_loss must be 'auto', 'full' or 'observable:<name>' with <name> one of "
                         f"the observables {sorted(obs)}, got {draw_loss!r}")
    if on_divergence not in ("raise", "drop"):
        raise ValueError(f"on_divergence must be 'raise' or 'drop', got {on_divergence!r}")
    spec = KernelSpec(sampler.init, sampler.step,
                      tuple((k, o.fn, o.chunk_size, o.data is not None) for k, o in obs.items()),
                      tuple(accumulate or ()), int(num_batches), int(steps_per_draw), draw_loss,
                      bool(store_draws), on_divergence)
    return Kernel(spec, sampler.hyperparams, obs)
