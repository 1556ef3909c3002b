r"""`susc.sample`: vectorized SGLD-family chains on a localized tempered posterior.

.. math::

    p(w) \propto \exp\{-n\beta\,[L^\rho_n(w) + h\,\Delta L(w)] - \tfrac{\gamma}{2}\|w - w^*\|^2\}

sampled with ``sampler`` (`susc.sgld`: w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ; blackjax h = ε/2).
Chains start at w* (``params``), run vmapped inside one compiled `lax.scan` over draws, and are
sharded over devices when several are present. Burn-in draws are never recorded.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint as ckpt
from . import progress as prog
from .kernel import make_kernels
from .posterior import Posterior, check_inputs
from .result import SampleResult
from ..samplers.base import SamplingAlgorithm
from ..stats.streaming import acc_init, to_moments

__all__ = ["sample", "SamplingDivergence"]

_AFTER_BLOCK: Callable | None = None  # test hook: called with draws_done after each saved block
_BAR: prog.Bar | None = None           # the bar of the run in progress (the compiled callback reads it)
_KERNELS: dict = {}                    # compiled kernels of recent runs, so repeated calls skip tracing
_KERNELS_MAX = 16
_BUILTIN_SAMPLERS = ("sgld", "rmsprop_sgld", "sgnht")


def _progress(n):
    if _BAR is not None:
        _BAR.update_to(n)


def _kernels(post, sampler, observables, acc_spec, K, progress_on, **static):
    """Compiled (init, burnin, block), reused across calls with the same functions and static settings.

    Entries hold strong references to every function in their key, so an ``id`` in a live key can
    never be recycled by another object. Built-in samplers are keyed by name and hyperparameters
    other than the step size, which (like nβ, γ, h) is a runtime argument of the compiled program.
    """
    samp = ((sampler.name, tuple(sorted((k, v) for k, v in sampler.hyperparams.items() if k != "step_size")))
            if sampler.name in _BUILTIN_SAMPLERS and sampler.step.__module__.startswith("susc.samplers")
            else ("custom", id(sampler.step)))
    key = (id(post.loss_fn), id(post.delta_fn), post.n, post.batch_size, samp,
           tuple((k, id(f)) for k, f in observables.items()), tuple(acc_spec.items()), K, progress_on,
           tuple(sorted(static.items())))
    hit = _KERNELS.get(key)
    if hit is None:
        raw = make_kernels(post, sampler, observables, acc_spec, progress_cb=_progress if progress_on else None,
                           **static)
        hit = (_compile(*raw, K), (post.loss_fn, post.delta_fn, sampler, dict(observables)))
        if len(_KERNELS) >= _KERNELS_MAX:
            _KERNELS.pop(next(iter(_KERNELS)))
        _KERNELS[key] = hit
    return hit[0]


class SamplingDivergence(RuntimeError):
    """A chain produced a non-finite loss or gradient. ``.partial`` holds the draws finished before it."""

    def __init__(self, message: str, partial: SampleResult, chain: int, draw: int):
        super().__init__(message)
        self.partial, self.chain, self.draw = partial, chain, draw


def _acc_spec(observables, store_draws, accumulate):
    """name -> (x, y or None). Streaming runs keep means/variances of everything by default."""
    names = ["loss", *observables]
    spec = {n: (n, None) for n in (names if not store_draws else [])}
    for item in accumulate or ():
        pair = (item, None) if isinstance(item, str) else tuple(item)
        for nm in pair:
            if nm is not None and nm not in names:
                raise ValueError(f"accumulate names {nm!r}, which is not an observable; known: {names}")
        spec[pair[0] if pair[1] is None else f"{pair[0]}|{pair[1]}"] = pair
    return spec


def _shard(tree, num_chains):
    """Put the chain axis across devices when there are several and they divide num_chains."""
    devs = jax.devices()
    if len(devs) < 2 or num_chains % len(devs):
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    sh = NamedSharding(Mesh(np.array(devs), ("chain",)), P("chain"))
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sh), tree)


def sample(key, loss_fn, params, data, *, sampler: SamplingAlgorithm, nbeta: float, gamma: float = 0.0,
           num_chains: int = 4, num_draws: int = 200, num_burnin: int = 0, steps_per_draw: int = 1,
           batch_size: int | None = None, observables: Mapping[str, Callable] | None = None,
           mask=None, masks=None, weights=None, perturbation=None, center=None, store_draws: bool = True,
           accumulate=None, num_batches: int = 8, draw_loss: str = "auto", checkpoint_dir=None,
           checkpoint_every: int | None = None, on_divergence: str = "raise",
           progress: bool = True) -> SampleResult:
    """Draw from p(w) ∝ exp{−nβ[L^ρ_n(w) + hΔL(w)] − (γ/2)‖w − w*‖²} with vectorized chains.

    Args:
        key: PRNG key; chain c uses ``fold_in(key, c)`` so its stream does not depend on num_chains.
        loss_fn: ``loss_fn(params, batch) -> (B,)`` or ``(B, T)`` per-example losses (not averaged).
        params: w*, any PyTree; chains start here and, unless ``center`` is given, are localized here.
        data: PyTree of arrays with a shared leading axis n.
        sampler: `susc.sgld`, `susc.rmsprop_sgld` or `susc.sgnht`.
        nbeta: nβ > 0 (only the product enters). gamma: γ ≥ 0, the localization strength.
        num_chains, num_draws, num_burnin, steps_per_draw: total steps per chain =
            num_burnin + num_draws × steps_per_draw; burn-in is not recorded.
        batch_size: minibatch size B (rows drawn without replacement each step); None = full batch.
        observables: ``{name: fn(params) -> array}`` evaluated at every draw inside the compiled loop.
        mask: PyTree like params of 0/1 (broadcastable leaves): only the masked component moves.
        masks: K components at once: a PyTree like params whose leaves carry a leading axis K
            (e.g. from `susc.models.component_masks`). All K × C restricted chains run in one
            vectorized program; component k uses the same chain keys as a single run with
            ``mask=masks[k]``. Every output gains a leading K axis (``loss [K, C, D]``, ...).
        weights: per-sample ρ of shape (n,): L^ρ_n = (1/n) Σ ρ_i ℓ_i.
        perturbation: ``(h, delta_fn)`` adds nβ·h·ΔL(w), ΔL = ``delta_fn(params)`` (a scalar).
        center: w* for the localization term, if different from ``params``.
        store_draws: keep every draw of every observable (memory ∝ draws). With False only the
            streaming moments are kept (means and variances of everything, batch-means SE).
        accumulate: extra streaming moments: names (mean/variance) or pairs ``(a, b)`` for the full
            cross co-moment of observables a and b ("loss" is always available); read them with
            `susc.covariance_from_moments`.
        num_batches: batches of contiguous draws per chain in the streaming accumulators.
        draw_loss: "auto" records the loss the next step's gradient used (exact L_n when full batch,
            a minibatch estimate otherwise); "full" evaluates L_n on all data at every draw.
        checkpoint_dir, checkpoint_every: save chain states, accumulators and draws every
            ``checkpoint_every`` draws; calling again with the same settings resumes there.
        on_divergence: "raise" (`SamplingDivergence` naming chain and draw, with ``.partial``) or
            "drop" (discard diverged chains and warn).
        progress: show a progress bar (quiet under pytest and when SUSC_PROGRESS=0).

    Compiled programs are cached across calls keyed on the identity of ``loss_fn``, the observable
    functions and ``delta_fn`` (and on shapes and static settings); nβ, γ, h and ε are runtime
    arguments. Define observables once outside a loop to reuse the program in a sweep: a lambda
    written inside the loop is a new object each time and recompiles.

    Returns:
        `SampleResult` with ``loss [C, D]``, ``init_loss``, ``observables[name] [C, D, *s]``,
        ``moments`` (streaming), ``settings``, ``final_state`` and ``wall_time``.
    """
    t0 = time.perf_counter()
    observables = dict(observables or {})
    if "loss" in observables:
        raise ValueError("'loss' is reserved (the loss at each draw is always recorded); rename the observable")
    if not isinstance(sampler, SamplingAlgorithm):
        raise TypeError("sampler must be built by susc.sgld(step_size), susc.rmsprop_sgld(...) or susc.sgnht(...)")
    if draw_loss not in ("auto", "full"):
        raise ValueError(f"draw_loss must be 'auto' or 'full', got {draw_loss!r}")
    if on_divergence not in ("raise", "drop"):
        raise ValueError(f"on_divergence must be 'raise' or 'drop', got {on_divergence!r}")
    if mask is not None and masks is not None:
        raise ValueError("pass either mask (one component) or masks (K stacked components), not both")
    K = None
    if masks is not None:
        ks = {int(np.shape(m)[0]) if np.ndim(m) else -1 for m in jax.tree_util.tree_leaves(masks)}
        if len(ks) != 1 or -1 in ks:
            raise ValueError("masks leaves must all carry the same leading component axis K")
        K = ks.pop()
    n = check_inputs(loss_fn, params, data, nbeta=nbeta, gamma=gamma, batch_size=batch_size,
                     weights=weights, mask=mask if masks is None else jax.tree_util.tree_map(lambda m: m[0], masks), observables=observables, num_chains=num_chains,
                     num_draws=num_draws, num_burnin=num_burnin, steps_per_draw=steps_per_draw)
    h, delta_fn = perturbation if perturbation is not None else (0.0, None)
    if perturbation is not None and not callable(delta_fn):
        raise TypeError("perturbation must be a pair (h, delta_fn) with delta_fn(params) -> scalar ΔL(w)")
    if checkpoint_every is not None and (int(checkpoint_every) != checkpoint_every or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    num_batches = int(min(max(int(num_batches), 1), num_draws))
    post = Posterior(loss_fn, float(nbeta), float(gamma), n, batch_size, float(h), delta_fn)
    settings = dict(sampler=sampler.name, **sampler.hyperparams, nbeta=float(nbeta), gamma=float(gamma),
                    n=n, num_chains=int(num_chains), num_draws=int(num_draws), num_burnin=int(num_burnin),
                    steps_per_draw=int(steps_per_draw), batch_size=batch_size, h=float(h),
                    weighted=weights is not None, masked=mask is not None, num_components=K, store_draws=bool(store_draws),
                    num_batches=num_batches, draw_loss=draw_loss, checkpoint_every=checkpoint_every,
                    devices=[str(d) for d in jax.devices()])
    acc_spec = _acc_spec(observables, store_draws, accumulate)

    params = jax.tree_util.tree_map(jnp.asarray, params)
    center = params if center is None else jax.tree_util.tree_map(jnp.asarray, center)
    w = jnp.ones((n,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    mask_in = mask if masks is None else masks
    hyper = tuple(jnp.float32(v) for v in (nbeta, gamma, h, sampler.hyperparams.get("step_size", 0.0)))
    ctx = (jax.tree_util.tree_map(jnp.asarray, data), w, center,
           None if mask_in is None else jax.tree_util.tree_map(jnp.asarray, mask_in), hyper)

    global _BAR
    bar = prog.Bar(num_draws, f"{sampler.name} ×{num_chains}") if prog.enabled(progress) else None
    init, burnin, block = _kernels(
        post, sampler, observables, acc_spec, K, bar is not None, num_draws=num_draws,
        num_batches=num_batches, steps_per_draw=int(steps_per_draw), draw_loss=draw_loss,
        store_draws=bool(store_draws))
    _BAR = bar
    cks = _shard(jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num_chains)), num_chains)
    states = init(cks, params, ctx)
    init_loss = _full_loss(post, params, ctx[0], w)
    obs_shapes = {k: jax.eval_shape(f, params) for k, f in observables.items()}
    obs_shapes["loss"] = jax.ShapeDtypeStruct((), jnp.float32)
    lead = (num_chains,) if K is None else (K, num_chains)
    accs = {k: jax.tree_util.tree_map(
                lambda a: jnp.broadcast_to(a, lead + a.shape),
                acc_init(num_batches, obs_shapes[x].shape, None if y is None else obs_shapes[y].shape))
            for k, (x, y) in acc_spec.items()}
    states, accs = _shard((states, accs), num_chains)

    fp = ckpt.fingerprint(settings, key, params, observables) if checkpoint_dir is not None else None
    done, loss_blocks, obs_blocks = 0, [], []
    restored = ckpt.load(checkpoint_dir, fp, (states, accs)) if checkpoint_dir is not None else None
    if restored is not None:
        done, (states, accs), loss_blocks, obs_blocks = restored
        states, accs = _shard(jax.tree_util.tree_map(jnp.asarray, (states, accs)), num_chains)
    elif num_burnin:
        states = burnin(states, cks, ctx, int(num_burnin))

    block_len = int(checkpoint_every or num_draws)
    try:
        while done < num_draws:
            length = min(block_len, num_draws - done)
            states, accs, loss, obs = block(states, accs, cks, ctx, jnp.int32(done), length)
            ax = 0 if K is None else 1                              # draw axis of block outputs
            loss_blocks.append(np.moveaxis(np.asarray(loss), ax, ax + 1))   # [(K,) L, C] -> [(K,) C, L]
            obs_blocks.append({k: np.moveaxis(np.asarray(v), ax, ax + 1) for k, v in obs.items()})
            done += length
            bad = np.asarray(states.bad_draw)
            if (bad >= 0).any():
                break
            if checkpoint_dir is not None:
                ckpt.save(checkpoint_dir, fp, done, states, accs, loss_blocks, obs_blocks)
                if _AFTER_BLOCK is not None:
                    _AFTER_BLOCK(done)
    finally:
        if bar is not None:
            bar.close()
        _BAR = None

    dax = 1 if K is None else 2
    loss_all = np.concatenate(loss_blocks, axis=dax)
    obs_all = {k: np.concatenate([b[k] for b in obs_blocks], axis=dax) for k in observables} if store_draws else {}
    moments = {k: to_moments(a) for k, a in accs.items()}
    settings["wall_time"] = time.perf_counter() - t0
    result = SampleResult(loss_all, init_loss, obs_all, moments, settings, states, settings["wall_time"])
    bad = np.asarray(states.bad_draw)
    if (bad >= 0).any():
        if K is not None:
            k, c = np.argwhere(bad >= 0)[0]
            raise SamplingDivergence(f"component {k}, chain {c} diverged at draw {bad[k, c]} (step_size="
                                     f"{settings.get('step_size')}, nbeta={nbeta}, gamma={gamma}); lower "
                                     "step_size or nbeta, or raise gamma", result, int(c), int(bad[k, c]))
        return _diverged(result, bad, on_divergence)
    return result


def _full_loss(post: Posterior, params, data, weights) -> float:
    """L^ρ_n(w*) over all n rows, in chunks of 8 minibatches when minibatching (a single forward
    pass over a large token dataset can need many GB)."""
    n = post.n
    chunk = n if post.batch_size is None else min(n, 8 * post.batch_size)
    f = jax.jit(post.batch_loss)
    total = 0.0
    for s in range(0, n, chunk):
        part = jax.tree_util.tree_map(lambda x: x[s:s + chunk], data)
        total += float(f(params, part, weights[s:s + chunk])) * min(chunk, n - s)
    return total / n


def _compile(init, burnin, block, K):
    """jit the chain kernels; with K components, vmap them over (states, accs, mask) first.
    Chain keys are shared across components (common random numbers)."""
    if K is None:
        return jax.jit(init), jax.jit(burnin, static_argnums=3), jax.jit(block, static_argnums=5)
    cx = (None, None, None, 0, None)
    vinit = jax.vmap(init, in_axes=(None, None, cx))
    vburn = lambda s, c, x, n: jax.vmap(lambda s_, x_: burnin(s_, c, x_, n), in_axes=(0, cx))(s, x)
    vblock = lambda s, a, c, x, st, L: jax.vmap(lambda s_, a_, x_: block(s_, a_, c, x_, st, L),
                                                in_axes=(0, 0, cx))(s, a, x)
    return jax.jit(vinit), jax.jit(vburn, static_argnums=3), jax.jit(vblock, static_argnums=5)


def _diverged(result: SampleResult, bad: np.ndarray, mode: str) -> SampleResult:
    chain = int(np.argmax(np.where(bad >= 0, -bad, np.iinfo(np.int32).min)))  # earliest divergence
    draw = int(bad[chain])
    s = result.settings
    hint = (f"non-finite loss or gradient in chain {chain} at draw {draw} (step_size={s.get('step_size')}, "
            f"nbeta={s['nbeta']}, gamma={s['gamma']}). Lower step_size first, then nbeta; raise gamma "
            "to keep chains near w*.")
    if mode == "drop":
        import warnings
        keep = bad < 0
        if not keep.any():
            raise SamplingDivergence("all chains diverged: " + hint, result, chain, draw)
        warnings.warn(f"dropping {int((~keep).sum())} diverged chain(s): {hint}", RuntimeWarning, stacklevel=3)
        return SampleResult(result.loss[keep], result.init_loss,
                            {k: v[keep] for k, v in result.observables.items()},
                            {}, dict(result.settings, dropped_chains=np.flatnonzero(~keep).tolist()),
                            None, result.wall_time)
    first = int(bad[bad >= 0].min())
    partial = SampleResult(result.loss[:, :first], result.init_loss,
                           {k: v[:, :first] for k, v in result.observables.items()},
                           {}, result.settings, None, result.wall_time)
    raise SamplingDivergence(hint + f" The {first} draws finished before it are in .partial.",
                             partial, chain, draw)
