"""Engine v2 measurements for the closing note and the performance appendix (one run each, CPU).

  python benchmarks/bench_engine.py stacked      # peak memory and time of a head-stacked run
  python benchmarks/bench_engine.py compiles SCRIPT.py   # XLA lowerings/compiles and wall of a script

Both modes use only names that exist before and after the redesign (`susc.sample`,
`susc.models.component_masks`), so the same file measures an older checkout through PYTHONPATH.
Output: one JSON line.
"""
from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time


def _counter():
    import jax
    counts = {"lowerings": 0, "backend_compiles": 0, "compile_s": 0.0, "by_function": {}}

    def listen(event, secs, **kw):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            counts["lowerings"] += 1
            name = kw.get("fun_name", "?")
            counts["by_function"][name] = counts["by_function"].get(name, 0) + 1
        elif event == "/jax/core/compile/backend_compile_duration":
            counts["backend_compiles"] += 1
            counts["compile_s"] += secs

    jax.monitoring.register_event_duration_secs_listener(listen)
    return counts


def stacked():
    """K = 16 heads × 4 chains of a 2×8-head attention-only transformer with a 5000-token vocabulary:
    embedding and unembedding are frozen in every component (the case sparse components address)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import susc
    from susc.models import component_masks
    from susc.models.transformer import TransformerConfig, init_params, make_loss_fn, token_losses

    cfg = TransformerConfig(vocab_size=5000, n_layers=2, n_heads=8, d_model=128, d_head=16, context_length=64)
    params = init_params(jax.random.key(0), cfg)
    names, masks = component_masks(params, cfg, embed=False, unembed=False)
    rng = np.random.default_rng(0)
    data = {"tokens": jnp.asarray(rng.integers(0, 5000, (256, 65)))}
    probe = {"tokens": jnp.asarray(rng.integers(0, 5000, (8, 65)))}
    n_all = sum(x.size for x in jax.tree.leaves(params))
    n_move = sum(x.size for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)) if np.any(m))
    t0 = time.perf_counter()
    res = susc.sample(jax.random.key(1), make_loss_fn(cfg), params, data, sampler=susc.sgld(1e-4),
                      nbeta=100.0, gamma=1000.0, num_chains=4, num_draws=6, batch_size=8, masks=masks,
                      observables={"probe": lambda w: token_losses(w, probe, cfg)}, store_draws=False,
                      accumulate=[("loss", "probe")], progress=False)
    wall = time.perf_counter() - t0
    assert np.isfinite(np.asarray(res.loss)).all()
    return {"components": len(names), "chains": 4, "params": int(n_all), "params_in_moving_leaves": int(n_move),
            "wall_s": round(wall, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def compiles(script: str):
    counts = _counter()
    t0 = time.perf_counter()
    runpy.run_path(script, run_name="__main__")
    top = sorted(counts.pop("by_function").items(), key=lambda kv: -kv[1])[:int(os.environ.get("TOP", 8))]
    return {"script": script, "wall_s": round(time.perf_counter() - t0, 1), **counts,
            "compile_s": round(counts["compile_s"], 1), "top_lowered": dict(top)}


if __name__ == "__main__":
    mode = sys.argv[1]
    out = stacked() if mode == "stacked" else compiles(sys.argv[2])
    print(json.dumps(out))
