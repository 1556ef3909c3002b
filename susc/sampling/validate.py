"""Argument checks for `susc.sample`, `susc.Posterior.build` and `susc.nuts`.

Every error names the argument and says how to fix it; checks on functions run abstractly
(`jax.eval_shape`), so no FLOPs are spent before the run.
"""
from __future__ import annotations

import jax
import numpy as np

from .observables import check_observables, normalize

__all__ = ["check_posterior", "check_run", "check_mask", "check_inputs", "num_components"]


def _leading(data) -> list[tuple[str, int]]:
    return [(jax.tree_util.keystr(p) or "data", int(np.shape(x)[0]) if np.ndim(x) else -1)
            for p, x in jax.tree_util.tree_leaves_with_path(data)]


def check_posterior(loss_fn, params, data, *, nbeta, gamma, batch_size, weights, perturbation=None) -> int:
    """Validate what defines the posterior; return n (the number of data rows)."""
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable: loss_fn(params, batch) -> per-example losses (B,) or (B, T)")
    if not np.isfinite(nbeta) or nbeta < 0:
        raise ValueError(f"nbeta must be a positive number (the inverse temperature nβ), got {nbeta!r}")
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma (localization strength γ) must be >= 0, got {gamma!r}")
    if nbeta == 0 and gamma == 0:
        raise ValueError("nbeta must be positive: nbeta=0 with gamma=0 is an improper posterior. "
                         "For the nβ = 0 control (pure localization) pass gamma > 0.")
    if perturbation is not None and (len(perturbation) != 2 or not callable(perturbation[1])):
        raise TypeError("perturbation must be a pair (h, delta_fn) with delta_fn(params) -> scalar ΔL(w)")
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
    return n


def check_run(*, num_chains, num_draws, num_burnin, steps_per_draw):
    for name, v, lo in [("num_chains", num_chains, 1), ("num_draws", num_draws, 1),
                        ("steps_per_draw", steps_per_draw, 1), ("num_burnin", num_burnin, 0)]:
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def num_components(masks) -> int:
    """K of a stacked ``masks=`` PyTree (every leaf carries the leading component axis)."""
    ks = {int(np.shape(m)[0]) if np.ndim(m) else -1 for m in jax.tree_util.tree_leaves(masks)}
    if len(ks) != 1 or -1 in ks:
        raise ValueError("masks leaves must all carry the same leading component axis K "
                         "(build them with susc.stack_masks or susc.models.component_masks)")
    return ks.pop()


def check_mask(params, mask, name="mask"):
    ps, ms = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(mask)
    if ps != ms:
        raise ValueError(f"{name} must have the same PyTree structure as params.\n  params: {ps}\n  {name}:   {ms}")
    for (p, w), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mask)):
        try:
            np.broadcast_shapes(np.shape(m), np.shape(w))
        except ValueError:
            raise ValueError(f"{name} leaf {jax.tree_util.keystr(p)} has shape {np.shape(m)}, "
                             f"not broadcastable to the parameter's {np.shape(w)}") from None


def check_inputs(loss_fn, params, data, *, nbeta, gamma, batch_size, weights, mask,
                 observables, num_chains, num_draws, num_burnin, steps_per_draw) -> int:
    """All checks of a single-component run at once; return n."""
    n = check_posterior(loss_fn, params, data, nbeta=nbeta, gamma=gamma, batch_size=batch_size,
                        weights=weights)
    check_run(num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, steps_per_draw=steps_per_draw)
    if mask is not None:
        check_mask(params, mask)
    check_observables(normalize(observables), params)
    return n
