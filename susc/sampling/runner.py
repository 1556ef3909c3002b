r"""`susc.sample`: a thin driver over the kernel layer (`susc.sampling.kernel`).

.. math::

    p(w) \propto \exp\{-n\beta\,[L^\rho_n(w) + h\,\Delta L(w)] - \tfrac{\gamma}{2}\|w - w^*\|^2\}

sampled with ``sampler`` (`susc.sgld`: w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ; blackjax h = ε/2).
The driver builds the `Posterior` and the `Kernel`, shards the chain axis over devices, runs
burn-in and then blocks of draws, writes a checkpoint after each block, calls ``on_block``, and
assembles the result. Everything it does between blocks a user can do in a loop of their own.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import progress as prog
from .checkpoint import CheckpointStore, fingerprint
from .kernel import Kernel, RunState, build_kernel
from .observables import check_observables, normalize
from .partition import combine
from .posterior import Posterior
from .result import SampleResult, StackedResult
from .validate import check_mask, check_run, num_components
from ..samplers.base import SamplingAlgorithm
from ..stats.streaming import to_moments

__all__ = ["sample", "SamplingDivergence"]


class SamplingDivergence(RuntimeError):
    """A chain produced a non-finite loss or gradient. ``.partial`` holds the draws finished before it."""

    def __init__(self, message: str, partial, chain: int, draw: int):
        super().__init__(message)
        self.partial, self.chain, self.draw = partial, chain, draw


def _acc_spec(names, store_draws, accumulate) -> tuple:
    """(key, x, y or None). Streaming runs keep means/variances of everything by default."""
    spec = {n: (n, n, None) for n in (names if not store_draws else [])}
    for item in accumulate or ():
        pair = (item, None) if isinstance(item, str) else tuple(item)
        for nm in pair:
            if nm is not None and nm not in names:
                raise ValueError(f"accumulate names {nm!r}, which is not an observable; known: {names}")
        key = pair[0] if pair[1] is None else f"{pair[0]}|{pair[1]}"
        spec[key] = (key, *pair)
    return tuple(spec.values())


def _shard(state: RunState, num_chains: int, stacked: bool) -> RunState:
    """Put the chain axis across devices (axis 1 of chain states when components are stacked)."""
    devs = jax.devices()
    if len(devs) < 2:
        return state
    if num_chains % len(devs):
        warnings.warn(f"num_chains={num_chains} is not a multiple of the {len(devs)} devices: the run is "
                      "not sharded. Use a multiple of the device count to use them all.", RuntimeWarning,
                      stacklevel=3)
        return state
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(devs), ("chain",))
    put = lambda spec: lambda x: jax.device_put(x, NamedSharding(mesh, spec))  # noqa: E731
    per_chain = P(None, "chain") if stacked else P("chain")
    tm = jax.tree_util.tree_map
    return RunState(tm(put(per_chain), state.chains), tm(put(per_chain), state.accs), put(P("chain"))(state.keys),
                    put(P())(state.draw), put(P())(state.num_draws))


def _settings(sampler, post_args, n, K, **kw) -> dict:
    return dict(sampler=sampler.name, **sampler.hyperparams, **post_args, n=n, num_components=K, **kw,
                devices=[str(d) for d in jax.devices()])


def sample(key, loss_fn, params, data, *, sampler: SamplingAlgorithm, nbeta: float, gamma: float = 0.0,
           num_chains: int = 4, num_draws: int = 200, num_burnin: int = 0, steps_per_draw: int = 1,
           batch_size: int | None = None, observables: Mapping | None = None, mask=None, masks=None,
           weights=None, perturbation=None, center=None, store_draws: bool = True, accumulate=None,
           num_batches: int = 8, draw_loss: str = "auto", checkpoint_dir=None, checkpoint_every: int | None = None,
           on_divergence: str = "raise", on_block: Callable[[int], None] | None = None,
           progress: bool = True):
    """Draw from p(w) ∝ exp{−nβ[L^ρ_n(w) + hΔL(w)] − (γ/2)‖w − w*‖²} with vectorized chains.

    Args:
        key: PRNG key; chain c uses ``fold_in(key, c)`` so its stream does not depend on num_chains.
        loss_fn: ``loss_fn(params, batch) -> (B,)`` or ``(B, T)`` per-example losses (not averaged).
        params: w*, a PyTree of float32 or float64 arrays; every sampled quantity (hyperparameters,
            moments, draws) uses that dtype. Chains start here and, unless ``center`` is given, are
            localized here.
        data: PyTree of arrays with a shared leading axis n.
        sampler: `susc.sgld`, `susc.rmsprop_sgld` or `susc.sgnht`.
        nbeta: nβ > 0 (only the product enters). gamma: γ ≥ 0, the localization strength.
        num_chains, num_draws, num_burnin, steps_per_draw: total steps per chain =
            num_burnin + num_draws × steps_per_draw; burn-in is not recorded.
        batch_size: minibatch size B (rows drawn without replacement each step); None = full batch.
        observables: ``{name: fn(params) -> array}`` or ``{name: susc.observable(fn, data, chunk_size=m)}``
            (data passed at run time, evaluated m rows at a time), evaluated at every draw in the loop.
        mask: PyTree like params of 0/1 (broadcastable leaves): only the masked component moves.
            Leaves it freezes entirely are split out: no noise, no update, no gradient.
        masks: K components at once: leaves with a leading axis K (e.g. `susc.models.component_masks`).
            All K × C restricted chains run in one program; component k uses the same chain keys as a
            single run with ``mask=masks[k]``. Returns a `StackedResult`.
        weights: per-sample ρ of shape (n,): L^ρ_n = (1/n) Σ ρ_i ℓ_i.
        perturbation: ``(h, delta_fn)`` adds nβ·h·ΔL(w), ΔL = ``delta_fn(params)`` (a scalar).
        center: w* for the localization term, if different from ``params``.
        store_draws: keep every draw of every observable. False keeps only streaming moments
            (means and variances of everything, batch-means SE).
        accumulate: extra streaming moments: names or pairs ``(a, b)`` ("loss" is always available);
            read them with `susc.covariance_from_moments`.
        num_batches: batches of contiguous draws per chain in the streaming accumulators.
        draw_loss: "auto" records the loss the next step's gradient used (exact L_n when full batch,
            a minibatch estimate otherwise); "full" evaluates L_n on all data at every draw;
            "observable:<name>" records the mean of observable <name> (e.g. per-token losses on a
            fixed probe set: an exact, minibatch-free L at no extra forward pass).
        checkpoint_dir, checkpoint_every: save a block folder every ``checkpoint_every`` draws;
            calling again with the same inputs resumes after the last saved block (bitwise).
        on_divergence: "raise" stops every chain at the first non-finite loss or gradient and raises
            `SamplingDivergence` (``.partial`` has the draws before it); "drop" lets the other chains
            finish and drops the diverged ones (draws, moments and final state), with a warning.
            For stacked runs a chain is dropped from every component.
        on_block: ``fn(draws_done)`` called after every block, after its checkpoint is written; an
            exception raised in it propagates and leaves a resumable checkpoint.
        progress: a progress bar (quiet under pytest and when SUSC_PROGRESS=0).

    Compiled programs are jit's own, keyed on the functions (``loss_fn``, ``delta_fn``, observable
    functions, the sampler's ``init``/``step``) and shapes; data, nβ, γ, h, ρ, w*, ε, masks and
    observable data are runtime arguments. Define functions once outside a loop to reuse the program.

    Returns:
        `SampleResult` (``loss [C, D]``, ``init_loss``, ``observables[name] [C, D, *s]``, ``moments``,
        ``settings``, ``final_state``, ``wall_time``), or `StackedResult` (leading K axis) with ``masks``.
    """
    t0 = time.perf_counter()
    obs = normalize(observables)
    if not isinstance(sampler, SamplingAlgorithm):
        raise TypeError("sampler must be built by susc.sgld(step_size), susc.rmsprop_sgld(...) or susc.sgnht(...)")
    if mask is not None and masks is not None:
        raise ValueError("pass either mask (one component) or masks (K stacked components), not both")
    check_run(num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, steps_per_draw=steps_per_draw)
    if checkpoint_every is not None and (int(checkpoint_every) != checkpoint_every or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    K = None if masks is None else num_components(masks)
    if mask is not None:
        check_mask(params, mask)
    if masks is not None:
        check_mask(params, jax.tree_util.tree_map(lambda m: m[0], masks), "masks")
    post = Posterior.build(loss_fn, params, data, nbeta=nbeta, gamma=gamma, weights=weights,
                           perturbation=perturbation, center=center, batch_size=batch_size)
    dt = post.nbeta.dtype
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dt), params)
    check_observables(obs, params)
    num_batches = int(min(max(int(num_batches), 1), num_draws))
    acc = _acc_spec(["loss", *obs], store_draws, accumulate)
    kernel = build_kernel(sampler, observables=obs, accumulate=acc, store_draws=store_draws,
                          num_batches=num_batches, steps_per_draw=steps_per_draw, draw_loss=draw_loss,
                          on_divergence=on_divergence)
    ctx = kernel.context(post, params, mask if masks is None else masks, stacked=K is not None)
    settings = _settings(sampler, dict(nbeta=float(nbeta), gamma=float(gamma), h=float(post.h)), post.n, K,
                         num_chains=int(num_chains), num_draws=int(num_draws), num_burnin=int(num_burnin),
                         steps_per_draw=int(steps_per_draw), batch_size=batch_size, weighted=weights is not None,
                         masked=mask is not None, store_draws=bool(store_draws), num_batches=num_batches,
                         draw_loss=draw_loss, checkpoint_every=checkpoint_every, on_divergence=on_divergence,
                         accumulate=[list(a) for a in acc], dtype=str(dt),
                         moving_leaves=int(sum(ctx.moving)) if ctx.moving else None)
    init_loss = post.full_loss(params, None if post.batch_size is None else 8 * post.batch_size)
    store = None
    if checkpoint_dir is not None:
        fp = fingerprint(settings, key=key, arrays=dict(
            params=params, data=post.data, weights=post.weights, center=post.center, mask=mask, masks=masks,
            observables={k: o.data for k, o in obs.items()}),
            functions=dict(loss_fn=loss_fn, delta_fn=None if perturbation is None else perturbation[1],
                           sampler=sampler.step, **{f"obs:{k}": o.fn for k, o in obs.items()}))
        store = CheckpointStore(checkpoint_dir, fp)
    state, blocks = _run(kernel, ctx, key, settings, store, on_block, progress)
    settings["wall_time"] = time.perf_counter() - t0
    return _finish(state, blocks, ctx, params, init_loss, settings, on_divergence, obs)


def _run(kernel: Kernel, ctx, key, settings, store, on_block, progress):
    """Burn-in and blocks of draws; returns the final state and the host draws of every block."""
    C, D, K = settings["num_chains"], settings["num_draws"], settings["num_components"]
    state = _shard(kernel.init(key, ctx, C, D), C, K is not None)
    done, blocks = 0, []
    restored = store.load(state) if store is not None else None
    if restored is not None:
        done, state, blocks = restored
        state = _shard(jax.tree_util.tree_map(jnp.asarray, state), C, K is not None)
    else:
        state = kernel.burnin(state, ctx, settings["num_burnin"])
    bar = prog.Bar(D, f"{settings['sampler']} ×{C}", initial=done) if prog.enabled(progress) else None
    block_len = settings["checkpoint_every"] or (-(-D // prog.NUM_UPDATES) if bar is not None else D)
    try:
        while done < D:
            length = min(block_len, D - done)
            state, draws = kernel.run_block(state, ctx, length)
            blocks.append({"loss": np.asarray(draws.loss),
                           **{f"obs/{k}": np.asarray(v) for k, v in draws.observables.items()}})
            start, done = done, done + length
            bad = np.asarray(state.chains.bad_draw) >= 0
            if bad.any() and (settings["on_divergence"] == "raise" or bad.all()):
                break                                   # the diverged block is not saved
            if store is not None:
                store.save(state, blocks[-1], start, done)
            if bar is not None:
                bar.update_to(done)
            if on_block is not None:
                on_block(done)
    finally:
        if bar is not None:
            bar.close()
    return state, blocks


def _finish(state: RunState, blocks, ctx, params, init_loss, settings, on_divergence, obs):
    K = settings["num_components"]
    dax = 1 if K is None else 2                      # the draw axis of block outputs
    loss = np.concatenate([b["loss"] for b in blocks], axis=dax)
    draws = ({k: np.concatenate([b[f"obs/{k}"] for b in blocks], axis=dax) for k in obs}
             if settings["store_draws"] else {})
    lead = loss.shape[:dax]
    rest = None if ctx.rest is None else jax.tree_util.tree_map(      # read-only views, no copies
        lambda x: np.broadcast_to(np.asarray(x), lead + np.shape(x)), ctx.rest)
    final = state.chains._replace(position=combine(state.chains.position, rest))
    moments = {k: to_moments(a) for k, a in state.accs.items()}
    Result = SampleResult if K is None else StackedResult
    result = Result(loss, init_loss, draws, moments, settings, final, settings["wall_time"])
    bad = np.asarray(state.chains.bad_draw)
    if (bad >= 0).any():
        return _diverged(result, bad, on_divergence)
    return result


def _take(tree, idx, axis):
    return jax.tree_util.tree_map(lambda x: None if x is None else np.take(np.asarray(x), idx, axis=axis),
                                  tree, is_leaf=lambda x: x is None)


def _diverged(result, bad: np.ndarray, mode: str):
    """Raise `SamplingDivergence` with the finished draws, or drop the diverged chains."""
    stacked = bad.ndim == 2
    s = result.settings
    where = np.argwhere(bad >= 0)
    first = where[np.argmin(bad[tuple(where.T)])]
    comp = f"component {first[0]}, " if stacked else ""
    chain, draw = int(first[-1]), int(bad[tuple(first)])
    hint = (f"non-finite loss or gradient in {comp}chain {chain} at draw {draw} (step_size="
            f"{s.get('step_size')}, nbeta={s['nbeta']}, gamma={s['gamma']}). Lower step_size first, then "
            "nbeta; raise gamma to keep chains near w*.")
    cax = 1 if stacked else 0
    chain_bad = (bad >= 0).any(axis=0) if stacked else bad >= 0
    if mode == "drop" and not chain_bad.all():
        keep = np.flatnonzero(~chain_bad)
        warnings.warn(f"dropping {int(chain_bad.sum())} diverged chain(s): {hint}", RuntimeWarning, stacklevel=3)
        mom = {k: type(m)(*(_take(a, keep, cax) for a in (m.count, m.mean_x, m.mean_y, m.comoment)))
               for k, m in result.moments.items()}
        return type(result)(_take(result.loss, keep, cax), result.init_loss,
                            {k: _take(v, keep, cax) for k, v in result.observables.items()}, mom,
                            dict(result.settings, dropped_chains=np.flatnonzero(chain_bad).tolist()),
                            _take(result.final_state, keep, cax), result.wall_time)
    n = int(bad[bad >= 0].min())
    dax = cax + 1
    cut = lambda x: np.take(x, np.arange(n), axis=dax)  # noqa: E731
    partial = type(result)(cut(result.loss), result.init_loss,
                           {k: cut(v) for k, v in result.observables.items()}, {}, result.settings,
                           result.final_state, result.wall_time)
    msg = ("all chains diverged: " if mode == "drop" else "") + hint
    raise SamplingDivergence(msg + f" The {n} draws finished before it are in .partial.", partial, chain, draw)
