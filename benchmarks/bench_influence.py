r"""Influence-matrix and structural-susceptibility timings (susc side; `benchmarks/run.py` adds devinterp).

Conventions: posterior p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}; BIF(i, j) = −Cov[ℓ_i, ℓ_j] (devinterp's
``bif()`` returns +corr/+cov); SGLD w ← w − (ε/2)[nβ∇L + γ(w − w*)] + √ε ξ.

* The BIF timings, side by side with devinterp 2.0.1, are in `bench_bif.py` (part ``bif``).
* `bench_structural`: k = 8 attention heads of a 1-layer transformer; per-token structural
  susceptibilities on a 16 × 32-token probe, as ONE vectorized restricted run (+ the full run) vs k + 1
  separate runs vs one full-chain run. Goal: vectorized ≤ 2× one full-chain run.

Wall times in seconds; "cold" includes tracing/compilation, "warm" is a second identical call.
"""
from __future__ import annotations

import time

import jax

import susc
from susc.estimators.structural import structural_susceptibilities

__all__ = ["bench_structural"]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree_util.tree_leaves(getattr(out, "final_state", None)) or 0)
    return out, time.perf_counter() - t0


def _transformer(k: int, n: int = 256, T: int = 32):
    from susc.models.masks import component_masks
    from susc.models.transformer import TransformerConfig, init_params, make_loss_fn

    cfg = TransformerConfig(vocab_size=64, n_layers=1, n_heads=k, d_model=64, d_head=8, context_length=T)
    params = init_params(jax.random.key(0), cfg)
    kd, kp = jax.random.split(jax.random.key(1))
    data = {"tokens": jax.random.randint(kd, (n, T + 1), 0, cfg.vocab_size)}
    probe = {"tokens": jax.random.randint(kp, (16, T + 1), 0, cfg.vocab_size)}
    loss_fn = make_loss_fn(cfg)
    names, masks = component_masks(params, cfg, mlps=False, embed=False, unembed=False)
    return loss_fn, params, data, probe, names, masks


def bench_structural(k: int = 8, chains: int = 4, draws: int = 100, quick: bool = False) -> dict:
    """k components: one vectorized run (+ full) vs k + 1 separate runs vs one full-chain run."""
    if quick:
        chains, draws = 2, 20
    loss_fn, params, data, probe, names, masks = _transformer(k)
    probe_fn = lambda p: loss_fn(p, probe)
    kw = dict(sampler=susc.sgld(1e-4), nbeta=30.0, gamma=300.0, num_chains=chains, num_draws=draws,
              batch_size=32, progress=False)
    obs = {"probe": probe_fn}

    def vectorized():
        return structural_susceptibilities(jax.random.key(0), loss_fn, params, data, probe_fn, masks,
                                           names=names, **kw)

    def separate():
        outs = [susc.sample(jax.random.key(0), loss_fn, params, data, observables=obs,
                            mask=jax.tree_util.tree_map(lambda m, i=i: m[i], masks), **kw) for i in range(k)]
        outs.append(susc.sample(jax.random.key(1), loss_fn, params, data, observables=obs, **kw))
        return outs[-1]

    def full():
        return susc.sample(jax.random.key(1), loss_fn, params, data, observables=obs, **kw)

    out = {"k": k, "chains": chains, "draws": draws, "batch_size": 32, "probe_tokens": 16 * 32,
           "device": str(jax.devices()[0])}
    for name, fn in (("full", full), ("vectorized", vectorized), ("separate", separate)):
        _, out[f"{name}_cold_s"] = _timed(fn)
        _, out[f"{name}_warm_s"] = _timed(fn)
    out["vectorized_over_full_warm"] = out["vectorized_warm_s"] / out["full_warm_s"]
    out["separate_over_vectorized_warm"] = out["separate_warm_s"] / out["vectorized_warm_s"]
    out["vectorized_over_full_cold"] = out["vectorized_cold_s"] / out["full_cold_s"]
    return out


if __name__ == "__main__":
    import json
    import sys

    q = "--quick" in sys.argv
    print(json.dumps(bench_structural(quick=q), indent=1))
