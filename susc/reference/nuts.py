r"""A NUTS reference sampler (numpyro) for the same localized tempered posterior as `susc.sample`.

Conventions (theory.md §1): the target is p(w) ∝ exp{−U(w)} with

.. math::

    U(w) = n\beta\,[L^\rho_n(w) + h\,\Delta L(w)] + \tfrac{\gamma}{2}\|w - w^*\|^2,
    \qquad L^\rho_n(w) = \frac1n \sum_i \rho_i\,\ell_i(w),

built from exactly the arguments `susc.sample` takes (``loss_fn, params, data, nbeta, gamma, center,
weights, mask, perturbation``; per-token losses are averaged over tokens first), or from a raw
``potential_fn(params) -> U`` for anything else. Only the product nβ enters. NUTS is asymptotically
exact (no step-size bias), so on small models (d ≲ 10³) it is the ground truth that SGLD's
covariances, susceptibilities χ = −Cov[ϕ, ΔL] and LLC estimates are checked against.

Chains run vectorized (``chain_method="vectorized"``: one vmapped program, no extra devices needed).
The result is a `susc.result.SampleResult` shaped exactly like the SGLD runner's:
``loss [C, D]``, ``observables[name] [C, D, *s]``.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..sampling.posterior import mean_loss
from ..sampling.validate import check_inputs
from ..sampling.result import SampleResult

__all__ = ["nuts"]


def _free_index(params, mask) -> np.ndarray:
    """Indices into ravel(params) of the coordinates that move (all of them when mask is None)."""
    flat, _ = ravel_pytree(params)
    if mask is None:
        return np.arange(flat.size)
    full = jax.tree_util.tree_map(lambda m, p: np.broadcast_to(np.asarray(m), np.shape(p)), mask, params)
    mflat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(full)]) if flat.size else np.zeros(0)
    free = np.flatnonzero(mflat != 0)
    if free.size == 0:
        raise ValueError("mask selects no parameters: at least one entry must be 1")
    return free


def nuts(key, loss_fn: Callable | None = None, params=None, data=None, *, nbeta: float | None = None,
         gamma: float = 0.0, center=None, weights=None, mask=None, perturbation=None,
         potential_fn: Callable | None = None, observables: Mapping[str, Callable] | None = None,
         num_chains: int = 4, num_warmup: int = 500, num_draws: int = 1000,
         target_accept_prob: float = 0.8, max_tree_depth: int = 10, dense_mass: bool = False,
         init_jitter: float = 0.0, progress: bool = False) -> SampleResult:
    """NUTS draws from p(w) ∝ exp{−nβ[L^ρ_n(w) + hΔL(w)] − (γ/2)‖w − w*‖²} (or exp{−potential_fn(w)}).

    Args:
        key: PRNG key (raw or typed).
        loss_fn, params, data, nbeta, gamma, center, weights, mask, perturbation: as in `susc.sample`
            (``loss_fn(params, batch) -> (B,)`` or ``(B, T)``; chains start at ``params``; masked-out
            coordinates stay at ``params``). Always full batch.
        potential_fn: instead of the loss arguments, the whole potential ``U(params) -> scalar``
            (then nbeta, gamma, weights, perturbation must be left unset; ``loss_fn``/``data``, if
            given, are only used to record L_n at the draws).
        observables: ``{name: fn(params) -> array}``, evaluated at every draw after sampling.
        num_chains, num_warmup, num_draws: warm-up (step size and mass adaptation) is not recorded.
        target_accept_prob, max_tree_depth, dense_mass: passed to ``numpyro.infer.NUTS``.
        init_jitter: chains start at params + init_jitter·N(0, I) (free coordinates only).
        progress: numpyro's progress bar.

    Returns:
        `SampleResult`: ``loss [C, D]`` is L^ρ_n at each draw (U itself for a raw potential without
        loss_fn), ``init_loss`` the same at ``params``, ``observables[name] [C, D, *s]``,
        ``final_state`` the last draw as a PyTree stacked over chains, ``extras`` with per-draw
        ``diverging``/``accept_prob``/``num_steps`` [C, D], adapted ``step_size`` [C] and numpyro's
        ``ess``/``r_hat`` of the loss and of every observable.
    """
    t0 = time.perf_counter()
    observables, params, (h, delta_fn) = _check_args(params, observables, perturbation, num_chains=num_chains,
                                                     num_draws=num_draws, num_warmup=num_warmup)
    n = _check_target(loss_fn, params, data, potential_fn, nbeta=nbeta, gamma=gamma, weights=weights,
                      mask=mask, perturbation=perturbation, observables=observables,
                      num_chains=num_chains, num_draws=num_draws, num_warmup=num_warmup)
    flat0, unravel = ravel_pytree(params)
    free = jnp.asarray(_free_index(params, mask))
    to_params = lambda z: unravel(flat0.at[free].set(z.astype(flat0.dtype)))
    loss_at, U = _potentials(loss_fn, params, data, potential_fn, to_params, dtype=flat0.dtype, n=n,
                             nbeta=nbeta, gamma=gamma, center=center, weights=weights, h=h, delta_fn=delta_fn)

    Z, extra, step_size = _run_nuts(key, U, flat0[free], num_chains=int(num_chains),
                                    num_warmup=int(num_warmup), num_draws=int(num_draws),
                                    target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                                    dense_mass=dense_mass, init_jitter=init_jitter, progress=progress)
    loss, obs = _evaluate(Z, to_params, loss_at, observables)
    ess, r_hat = _diagnostics({"loss": loss, **obs}, num_chains)
    extras = {"diverging": np.asarray(extra["diverging"]), "accept_prob": np.asarray(extra["accept_prob"]),
              "num_steps": np.asarray(extra["num_steps"]), "step_size": step_size, "ess": ess, "r_hat": r_hat}
    final = jax.vmap(to_params)(Z[:, -1])
    wall = time.perf_counter() - t0
    settings = dict(sampler="nuts", potential="loss" if potential_fn is None else "raw",
                    nbeta=float(nbeta) if nbeta is not None else 1.0, gamma=float(gamma), n=n,
                    num_chains=int(num_chains), num_draws=int(num_draws), num_warmup=int(num_warmup),
                    num_burnin=int(num_warmup), target_accept_prob=float(target_accept_prob),
                    max_tree_depth=int(max_tree_depth), dense_mass=bool(dense_mass), h=float(h),
                    weighted=weights is not None, masked=mask is not None, num_free=int(free.size),
                    init_jitter=float(init_jitter), wall_time=wall)
    init_loss = float(loss_at(params))
    return SampleResult(loss, init_loss, obs, {}, settings, final, wall, extras)


def _check_args(params, observables, perturbation, **counts):
    """Validate the arguments common to both targets; returns (observables, params, (h, delta_fn))."""
    if params is None:
        raise ValueError("params (the initial point w*, any PyTree) is required")
    observables = dict(observables or {})
    if "loss" in observables:
        raise ValueError("'loss' is reserved (the loss at each draw is always recorded); rename the observable")
    for name, lo in [("num_chains", 1), ("num_draws", 1), ("num_warmup", 0)]:
        v = counts[name]
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    h, delta_fn = perturbation if perturbation is not None else (0.0, None)
    if perturbation is not None and not callable(delta_fn):
        raise TypeError("perturbation must be a pair (h, delta_fn) with delta_fn(params) -> scalar ΔL(w)")
    return observables, params, (h, delta_fn)


def _check_target(loss_fn, params, data, potential_fn, *, nbeta, gamma, weights, mask, perturbation,
                  observables, num_chains, num_draws, num_warmup) -> int | None:
    """Validate the loss arguments or the raw potential; returns n (None: a raw potential without loss)."""
    common = dict(batch_size=None, mask=mask, observables=observables, num_chains=num_chains,
                  num_draws=num_draws, num_burnin=num_warmup, steps_per_draw=1)
    if potential_fn is None:
        if loss_fn is None or data is None or nbeta is None:
            raise ValueError("pass loss_fn, data and nbeta (the same arguments as susc.sample), "
                             "or a raw potential_fn(params) -> scalar")
        return check_inputs(loss_fn, params, data, nbeta=nbeta, gamma=gamma, weights=weights, **common)
    if not callable(potential_fn):
        raise TypeError("potential_fn must be callable: potential_fn(params) -> scalar U(w)")
    if nbeta is not None or gamma != 0.0 or weights is not None or perturbation is not None:
        raise ValueError("potential_fn is the whole potential U: fold nbeta, gamma, weights and "
                         "perturbation into it (or use loss_fn/data/nbeta instead)")
    out = jax.eval_shape(potential_fn, params)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"potential_fn must return a scalar, got shape {getattr(out, 'shape', out)}")
    if loss_fn is None:
        return None
    if data is None:
        raise ValueError("loss_fn was given without data")
    return check_inputs(loss_fn, params, data, nbeta=1.0, gamma=0.0, weights=None, **common)


def _potentials(loss_fn, params, data, potential_fn, to_params, *, dtype, n, nbeta, gamma, center, weights,
                h, delta_fn):
    """(loss_at(w), U(z)): the recorded loss L^ρ_n(w) (or U for a raw potential without loss_fn) and
    U(z) = nβ[L^ρ_n(w) + hΔL(w)] + (γ/2)‖w − w*‖² on the free coordinates z (or potential_fn(w))."""
    center = params if center is None else jax.tree_util.tree_map(jnp.asarray, center)
    rho = None if n is None else (jnp.ones((n,), dtype) if weights is None else jnp.asarray(weights, dtype))

    def loss_at(w):
        return mean_loss(loss_fn, w, data, rho) if loss_fn is not None else potential_fn(w)

    if potential_fn is not None:
        return loss_at, lambda z: potential_fn(to_params(z))

    def U(z):
        w = to_params(z)
        data_term = mean_loss(loss_fn, w, data, rho)
        if delta_fn is not None:
            data_term = data_term + h * delta_fn(w)
        sq = sum(jnp.sum((a - c) ** 2) for a, c in zip(jax.tree_util.tree_leaves(w),
                                                       jax.tree_util.tree_leaves(center)))
        return nbeta * data_term + 0.5 * gamma * sq

    return loss_at, U


def _run_nuts(key, U, z0, *, num_chains, num_warmup, num_draws, target_accept_prob, max_tree_depth,
              dense_mass, init_jitter, progress):
    """Vectorized numpyro NUTS from z0 + init_jitter·N(0, I): (draws [C, D, d_free], extra fields,
    adapted step size [C])."""
    from numpyro.infer import MCMC, NUTS

    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    k_run, k_init = jax.random.split(key)
    z_init = z0 + init_jitter * jax.random.normal(k_init, (num_chains, z0.size), z0.dtype)
    kernel = NUTS(potential_fn=U, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                  dense_mass=dense_mass)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_draws, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress)
    mcmc.run(k_run, init_params=z_init, extra_fields=("diverging", "accept_prob", "num_steps"))
    Z = mcmc.get_samples(group_by_chain=True)                               # [C, D, d_free]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    step_size = np.broadcast_to(np.asarray(mcmc.last_state.adapt_state.step_size), (num_chains,))
    return Z, extra, step_size


def _evaluate(Z, to_params, loss_at, observables):
    """The loss [C, D] and every observable [C, D, *s] at the draws Z [C, D, d_free], as NumPy."""
    @jax.jit
    def evaluate(Z):
        def per_draw(zc):                                                   # zc: [C, d_free]
            def one(z):
                w = to_params(z)
                return loss_at(w), {k: jnp.asarray(f(w)) for k, f in observables.items()}
            return jax.vmap(one)(zc)
        loss, obs = jax.lax.map(per_draw, jnp.swapaxes(Z, 0, 1))            # [D, C, ...]
        sw = lambda x: jnp.swapaxes(x, 0, 1)
        return sw(loss), jax.tree_util.tree_map(sw, obs)

    loss, obs = evaluate(Z)
    return np.asarray(loss), {k: np.asarray(v) for k, v in obs.items()}


def _diagnostics(diag, num_chains):
    """numpyro's ESS and split R-hat (R-hat only for several chains) of every series in ``diag``."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    with np.errstate(invalid="ignore", divide="ignore"):  # constant series (frozen coordinates) -> nan
        ess = {k: np.asarray(effective_sample_size(v)) for k, v in diag.items()}
        r_hat = {k: np.asarray(split_gelman_rubin(v)) for k, v in diag.items()} if num_chains > 1 else {}
    return ess, r_hat
