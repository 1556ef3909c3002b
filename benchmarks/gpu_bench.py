r"""GPU benchmark driver: per-step cost, chain throughput, structural susceptibilities and a full-profile
per-token susceptibility slice, in one budgeted, resumable run (`benchmarks/gpu.sh` installs and calls it).

    python benchmarks/gpu_bench.py [--tiny] [--force] [--only mlp,transformer,structural,corpus]
                                   [--budget S | --deadline EPOCH] [--out FILE] [--copy-to DIR] [--allow-cpu]

Stages (each one's numbers go to ``stages.<name>.results`` of the JSON record):

* ``mlp``: `bench_step.bench_step` (per-chain-step cost of susc SGLD vs a bare ``value_and_grad``,
  MLP 32-128-64-10, 13,130 params, batch 256) and chain-steps/s for 1/4/16/64 chains (minibatch 256 of
  n = 4096), built from `bench_step.mlp_problem`, `susc_step_timer` and `timeit`.
* ``transformer``: the same at the ``full`` transformer (`TransformerConfig.from_profile("full")`: 2 layers
  × 8 heads, d_model 256, context 1024, vocabulary 5000, ~3.4M params), minibatch of 16 windows × 1024
  tokens (the corpus experiment's ``sample_batch``): a bare jitted ``value_and_grad`` + N(0, I) noise scan
  (1 chain) and chain-steps/s (and tokens/s) for 1, 4, 16 chains.
* ``structural``: k = 8 heads as ONE vectorized restricted run (``susc.sample(..., masks=...)``) vs one
  full (unrestricted) run with the same chains, draws, minibatch and per-token probe observable (streamed,
  ``store_draws=False``), cold (compilation included) and warm; ratio vectorized / full (goal ≤ 2×), then
  χ from both runs (`susc.structural_from_results`). On a GPU at two sizes: the 1-layer 8-head model of
  `bench_influence.bench_structural` (called as is) and the ``full`` model with its layer-0 heads.
* ``corpus``: ``corpus-susceptibility`` (`susc.experiments`) at the ``full`` profile with few draws
  (and a few training steps: no ``full`` checkpoint is shipped, so w* is barely trained; the timing of
  the sampler does not depend on it), written to a temporary results root. Reports probe tokens ×
  draws per second (draws = chains × num_draws) for the restricted (all 16 heads) + full runs, with and
  without the compilation time measured inside them.

Conventions: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}; SGLD w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ
(blackjax h = ε/2); χ^C_xy = −Cov[φ_C, ℓ_xy − L]. Warm figures are medians of repeated calls after an
untimed warm-up, each ended by ``block_until_ready``; "first call" includes tracing and compilation
(or a persistent-cache load when the cache already holds the program: ``settings.compile_cache_*``).

Budget and resume: every stage needs a minimum time (``NEED``) and is given at most ``CAP`` seconds; a
stage that cannot start in what is left of the budget is recorded as ``skipped`` with a note, and one
that runs out mid-way records what it measured as ``partial``. The record is rewritten after every
measurement. A later run with the same output file skips the stages recorded as ``done`` (``--force``
starts a new record). ``--tiny`` runs every stage at toy sizes (CPU, about 1–2 min).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("SUSC_PROGRESS", "0")

STAGES = ("mlp", "transformer", "structural", "corpus")

# Seconds a stage needs before it is started, and the most it may use (per mode).
NEED = {"gpu": dict(mlp=30, transformer=60, structural=70, corpus=90),
        "tiny": dict(mlp=5, transformer=5, structural=5, corpus=5)}
CAP = {"gpu": dict(mlp=75, transformer=120, structural=130, corpus=200),
       "tiny": dict(mlp=60, transformer=60, structural=60, corpus=60)}
DEFAULT_BUDGET = {"gpu": 470, "tiny": 170}

# Sampler settings of the corpus experiment (Baker et al.): ε = 1e-3, nβ = 30, γ = 300.
CORPUS_SGLD = dict(step_size=1e-3, nbeta=30.0, gamma=300.0)

SIZES = {
    "gpu": {
        "mlp": dict(quick=False, repeats=5, chains=(1, 4, 16, 64), steps=1000, throughput_repeats=3),
        "transformer": dict(profile="full", n=32, batch=16, chains=(1, 4, 16), steps={1: 40, 4: 20, 16: 10},
                            repeats=3, bare_steps=40),
        "structural": [
            dict(name="bench_influence", reuse="bench_influence.bench_structural", k=8, chains=4, draws=100),
            dict(name="full", profile="full", k=8, n=32, batch=16, probe=4, probe_chunk=1, chains=4, draws=20,
                 fallback=dict(batch=4), **CORPUS_SGLD),   # 32 restricted chains × 16 × 1024 tokens: ~100 GB
        ],
        "corpus": dict(profile="full",
                       overrides=dict(num_draws=10, checkpoint_every=10, num_batches=5,
                                      train_steps=50, warmup_steps=5, snapshot_every=25,
                                      num_seeds=1, num_burnin=0, control=False, develop=[],
                                      sweep_steps=[], response_subsets=[]),
                       fallback=dict(num_chains=1)),   # if 16 heads × 4 chains do not fit in memory
    },
    "tiny": {
        "mlp": dict(quick=True, repeats=2, chains=(1, 4), steps=50, throughput_repeats=2),
        "transformer": dict(profile="tiny", n=16, batch=4, chains=(1, 4), steps={1: 10, 4: 5},
                            repeats=2, bare_steps=10),
        "structural": [
            dict(name="tiny", profile="tiny", k=8, n=16, batch=4, probe=2, probe_chunk=1, chains=2, draws=10,
                 **CORPUS_SGLD),
        ],
        # The tiny corpus model trains in seconds inside the experiment.
        "corpus": dict(profile="tiny",
                       overrides=dict(probe_sequences=4, probe_chunk=2, sample_batch=2, num_chains=1,
                                      num_draws=8, num_batches=2, checkpoint_every=8, train_steps=50,
                                      warmup_steps=5, snapshot_every=25, num_seeds=1, num_burnin=0,
                                      control=False, develop=[], sweep_steps=[],
                                      response_subsets=[]),
                       fallback=None),
    },
}


# ----------------------------------------------------------------------------- helpers

def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(x):
    from susc.artifacts import json_default   # imported late: the driver sets JAX flags first
    return json_default(x)


def is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_log: list = []   # (perf_counter at the event, seconds)


def _listen(event, secs, **_):
    if event in _COMPILE_EVENTS:
        _compile_log.append((time.perf_counter(), float(secs)))


def compile_seconds(since: float, until: float | None = None) -> float:
    """Tracing + lowering + backend compilation (or persistent-cache load) seconds reported by JAX
    between two ``time.perf_counter()`` readings (events are stamped when they end)."""
    until = math.inf if until is None else until
    return sum(s for t, s in _compile_log if since <= t <= until)


def device_memory() -> dict:
    """Peak / current bytes of device 0 (`jax.Device.memory_stats`; empty on CPU)."""
    import jax
    try:
        st = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (not implemented on some backends)
        st = {}
    keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(st[k]) for k in keys if k in st}


def timed(fn):
    """``(output, wall seconds)`` of one call, its outputs blocked on."""
    import jax
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t0


def time_chains(loss_fn, params, data, *, chains: int, steps: int, batch, repeats: int, step_size: float,
                nbeta: float, gamma: float, tokens_per_example: int | None = None) -> dict:
    """One throughput row: the first (compiling) call, then the median of ``repeats`` warm calls of
    `bench_step.susc_step_timer` (a whole ``susc.sample`` call: ``steps`` draws of ``chains`` chains)."""
    import bench_step as bs
    fn = bs.susc_step_timer(loss_fn, params, data, num_chains=chains, num_steps=steps, step_size=step_size,
                            nbeta=nbeta, gamma=gamma, batch_size=batch)
    t_c = time.perf_counter()
    _, first = timed(fn)
    comp = compile_seconds(t_c)
    wall, cpu = bs.timeit(fn, repeats=repeats, warmup=0, cpu=True)
    row = {"chains": chains, "steps": steps, "first_call_s": first, "first_call_compile_s": comp,
           "seconds": wall, "cpu_seconds": cpu, "s_per_chain_step": wall / (steps * chains),
           "chain_steps_per_s": steps * chains / wall, "steps_per_s_per_chain": steps / wall}
    if tokens_per_example is not None:
        row["tokens_per_s"] = row["chain_steps_per_s"] * batch * tokens_per_example
    return row


def bare_sgld_timer(loss_fn, params, batch, steps: int, step_size: float = 1e-3):
    """The least one SGLD chain-step can cost: a jitted ``lax.scan`` of ``value_and_grad`` of the mean
    loss on a fixed batch plus N(0, I) noise per parameter (no minibatch draw, no bookkeeping)."""
    import jax
    import jax.numpy as jnp

    mean_loss = lambda p: jnp.mean(loss_fn(p, batch))  # noqa: E731

    @jax.jit
    def run(p, key):
        def body(p, i):
            loss, g = jax.value_and_grad(mean_loss)(p)
            leaves, tdef = jax.tree_util.tree_flatten(p)
            ks = jax.random.split(jax.random.fold_in(key, i), len(leaves))
            z = tdef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(ks, leaves)])
            p = jax.tree_util.tree_map(lambda w, gw, zw: w - 0.5 * step_size * gw + 1e-3 * math.sqrt(step_size) * zw,
                                       p, g, z)
            return p, loss
        return jax.lax.scan(body, p, jnp.arange(steps))

    return lambda: run(params, jax.random.key(0))


def transformer_setup(spec: dict, key: int = 0):
    """``(cfg, loss_fn, params, data)`` for a spec with ``profile`` or explicit ``cfg`` fields; the data
    are ``n`` random token windows ``[n, T + 1]`` (the timing does not depend on the text)."""
    import jax
    from susc.models.transformer import TransformerConfig, init_params, make_loss_fn
    cfg = (TransformerConfig(**spec["cfg"]) if "cfg" in spec else TransformerConfig.from_profile(spec["profile"]))
    k1, k2 = jax.random.split(jax.random.key(key))
    params = init_params(k1, cfg)
    data = {"tokens": jax.random.randint(k2, (spec["n"], cfg.context_length + 1), 0, cfg.vocab_size)}
    return cfg, make_loss_fn(cfg), params, data


def model_summary(cfg) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k in ("vocab_size", "n_layers", "n_heads", "d_model", "d_head", "context_length", "d_mlp")}


# ----------------------------------------------------------------------------- stages

class StageContext:
    """What a stage function gets: its sizes, its results dict, ``left()`` seconds, ``save()``, ``log``."""

    def __init__(self, bench: "Bench", name: str, stage: dict, end: float):
        self.bench, self.name, self.stage, self.end = bench, name, stage, end
        self.sizes = SIZES[bench.mode][name]
        self.results = stage["results"]

    def left(self) -> float:
        return self.end - time.time()

    def save(self):
        self.bench.save()

    def log(self, msg: str):
        self.bench.log(f"  [{self.name}] {msg}")

    def truncate(self, note: str):
        self.stage["truncated"] = True
        self.stage.setdefault("notes", []).append(note)
        self.log("budget: " + note)


def stage_mlp(ctx: StageContext):
    import jax
    import bench_step as bs
    s = ctx.sizes
    ctx.log("per-step cost vs bare value_and_grad (bench_step.bench_step)")
    step = bs.bench_step(quick=s["quick"], repeats=s["repeats"])
    ctx.results["step"] = step
    for c in step["cases"]:
        for r in c["susc"]:
            ctx.log(f"{c['case']}, {r['chains']} chain(s): {r['s_per_chain_step'] * 1e6:.1f} µs/chain-step = "
                    f"{r['overhead_vs_bare_sgld']:.2f}× gradient + noise, {r['overhead_vs_bare_scan']:.2f}× bare scan")
    ctx.save()
    loss_fn, params, data = bs.mlp_problem(jax.random.key(1), n=4096)
    tp = ctx.results["throughput"] = {
        "problem": "MLP 32-128-64-10 tanh (13,130 params), minibatch 256 of n=4096",
        "sampler": "sgld eps=1e-4, nbeta=144.76, gamma=1", "repeats": s["throughput_repeats"], "rows": []}
    last = 0.0
    for C in s["chains"]:
        if tp["rows"] and ctx.left() < 3 * last + 5:
            ctx.truncate(f"throughput stopped before {C} chains ({ctx.left():.0f} s left)")
            break
        t0 = time.perf_counter()
        row = time_chains(loss_fn, params, data, chains=C, steps=s["steps"], batch=256,
                          repeats=s["throughput_repeats"], step_size=1e-4, nbeta=144.76, gamma=1.0)
        last = time.perf_counter() - t0
        tp["rows"].append(row)
        ctx.log(f"{C:>3} chains: {row['chain_steps_per_s']:.0f} chain-steps/s (first call {row['first_call_s']:.1f} s)")
        ctx.save()


def stage_transformer(ctx: StageContext):
    import jax
    from susc.models.transformer import count_params
    s = ctx.sizes
    cfg, loss_fn, params, data = transformer_setup(s)
    T, B = cfg.context_length, s["batch"]
    res = ctx.results
    res.update(model=f"TransformerConfig.from_profile({s['profile']!r})", config=model_summary(cfg),
               num_params=count_params(params), n=s["n"], batch=B, tokens_per_chain_step=B * T,
               sampler=f"sgld eps={CORPUS_SGLD['step_size']}, nbeta={CORPUS_SGLD['nbeta']}, "
                       f"gamma={CORPUS_SGLD['gamma']} (corpus experiment)", repeats=s["repeats"])
    ctx.log(f"{count_params(params):,} params, minibatch {B} × {T} tokens, n = {s['n']} windows")
    batch = jax.tree_util.tree_map(lambda a: a[:B], data)
    bare = bare_sgld_timer(loss_fn, params, batch, s["bare_steps"], CORPUS_SGLD["step_size"])
    _, first = timed(bare)
    import bench_step as bs
    wall = bs.timeit(bare, repeats=s["repeats"], warmup=0)
    res["bare_sgld"] = {"steps": s["bare_steps"], "first_call_s": first, "s_per_step": wall / s["bare_steps"],
                        "tokens_per_s": B * T * s["bare_steps"] / wall}
    ctx.log(f"bare value_and_grad + noise: {wall / s['bare_steps'] * 1e3:.2f} ms/step (first call {first:.1f} s)")
    ctx.save()
    res["rows"] = []
    last_per_chain, last_first = None, first
    for C in s["chains"]:
        steps = s["steps"][C]
        if last_per_chain is not None:   # the next row: a compilation like the last one, then repeats + 1 calls
            est = last_first + last_per_chain * C * steps * (s["repeats"] + 1)
            if ctx.left() < est:
                ctx.truncate(f"stopped before {C} chains (~{est:.0f} s needed, {ctx.left():.0f} s left)")
                break
        try:
            row = time_chains(loss_fn, params, data, chains=C, steps=steps, batch=B, repeats=s["repeats"],
                              tokens_per_example=T, **CORPUS_SGLD)
        except Exception as err:  # noqa: BLE001
            if not is_oom(err):
                raise
            res["rows"].append({"chains": C, "steps": steps, "error": "out of memory: " + str(err)[:500]})
            ctx.stage.setdefault("notes", []).append(f"{C} chains do not fit in device memory")
            ctx.log(f"{C} chains: out of device memory")
            ctx.save()
            break
        row["overhead_vs_bare_sgld"] = row["s_per_chain_step"] / res["bare_sgld"]["s_per_step"]
        last_per_chain, last_first = row["s_per_chain_step"], row["first_call_s"]
        res["rows"].append(row)
        ctx.log(f"{C:>3} chains: {row['chain_steps_per_s']:.1f} chain-steps/s, {row['tokens_per_s']:.3g} tokens/s, "
                f"{row['overhead_vs_bare_sgld']:.2f}× bare (first call {row['first_call_s']:.1f} s)")
        ctx.save()


def structural_case(spec: dict, ctx: StageContext) -> dict:
    """k heads: one vectorized restricted run (masks=) vs one full run, cold and warm; then χ."""
    import jax
    import numpy as np
    import susc
    from susc.models import component_masks
    from susc.models.transformer import count_params
    cfg, loss_fn, params, data = transformer_setup(spec)
    probe = {"tokens": jax.random.randint(jax.random.key(7), (spec["probe"], cfg.context_length + 1), 0,
                                          cfg.vocab_size)}
    names, masks = component_masks(params, cfg, mlps=False, embed=False, unembed=False)   # every head
    k = min(spec["k"], len(names))
    names, masks = names[:k], jax.tree_util.tree_map(lambda m: m[:k], masks)
    nb = min(8, spec["draws"])
    kw = dict(sampler=susc.sgld(spec["step_size"]), nbeta=spec["nbeta"], gamma=spec["gamma"],
              num_chains=spec["chains"], num_draws=spec["draws"], batch_size=spec["batch"], num_batches=nb,
              observables={"probe": susc.observable(loss_fn, probe, chunk_size=spec["probe_chunk"])},
              store_draws=False, accumulate=[("loss", "probe")], progress=False)
    N = spec["probe"] * cfg.context_length
    out = {"model": model_summary(cfg), "num_params": count_params(params), "k": k, "components": names,
           "chains": spec["chains"], "draws": spec["draws"], "batch": spec["batch"], "n": spec["n"],
           "probe_tokens": N, "probe_chunk": spec["probe_chunk"],
           "sampler": {x: spec[x] for x in ("step_size", "nbeta", "gamma")}, "streaming": True}
    full = lambda: susc.sample(jax.random.key(1), loss_fn, params, data, **kw)            # noqa: E731
    vec = lambda: susc.sample(jax.random.key(0), loss_fn, params, data, masks=masks, **kw)  # noqa: E731
    warm = {}
    for name, fn in (("full", full), ("vectorized", vec)):
        for phase in ("cold", "warm"):
            t_c = time.perf_counter()
            try:
                r, secs = timed(fn)
            except Exception as err:  # noqa: BLE001
                if not is_oom(err):
                    raise
                out["error"] = f"{name} run ({k * spec['chains'] if name == 'vectorized' else spec['chains']} " \
                               f"chains): out of memory: {str(err)[:400]}"
                return out
            out[f"{name}_{phase}_s"] = secs
            out[f"{name}_{phase}_compile_s"] = compile_seconds(t_c)
        warm[name] = r
    out["vectorized_over_full_warm"] = out["vectorized_warm_s"] / out["full_warm_s"]
    out["vectorized_over_full_cold"] = out["vectorized_cold_s"] / out["full_cold_s"]
    out["vectorized_over_k_full_warm"] = out["vectorized_warm_s"] / (k * out["full_warm_s"])
    # what structural_susceptibilities costs (restricted + full) over the full run alone, as bench_structural
    out["vectorized_plus_full_over_full_warm"] = 1.0 + out["vectorized_over_full_warm"]
    out["goal_le_2x_warm"] = bool(out["vectorized_over_full_warm"] <= 2.0)
    # χ^C_xy = −Cov[φ_C, ℓ_xy − L] from the two warm runs (streamed moments)
    t0 = time.perf_counter()
    chi = susc.structural_from_results(warm["vectorized"], warm["full"], names=names, num_batches=nb)
    out["chi_s"] = time.perf_counter() - t0
    out["chi_shape"] = list(np.shape(chi.value))
    out["chi_finite"] = bool(np.all(np.isfinite(chi.value)))
    return out


def stage_structural(ctx: StageContext):
    cases = ctx.results.setdefault("cases", {})
    for spec in ctx.sizes:
        if cases.get(spec["name"], {}).get("status") == "done":
            continue
        if cases and ctx.left() < 20:
            ctx.truncate(f"case {spec['name']!r} not run ({ctx.left():.0f} s left)")
            break
        t0 = time.perf_counter()
        if spec.get("reuse"):
            import bench_influence
            out = bench_influence.bench_structural(k=spec["k"], chains=spec["chains"], draws=spec["draws"])
            out["source"] = spec["reuse"] + " (full, vectorized = masks= run + full run, separate = k + 1 runs)"
        else:
            out = structural_case(spec, ctx)
            if "error" in out and spec.get("fallback") and ctx.left() > 60:
                ctx.log(f"{spec['name']}: {out['error'][:120]}; retrying with {spec['fallback']}")
                first = out
                out = structural_case({**spec, **spec["fallback"]}, ctx)
                out["first_attempt"] = first
        # out of memory is a result (this size does not fit), not something a rerun would change
        out["status"] = "done" if "error" not in out or "out of memory" in out["error"] else "error"
        out["wall_s"] = time.perf_counter() - t0
        cases[spec["name"]] = out
        if "error" in out:
            ctx.log(f"{spec['name']}: {out['error'][:200]}")
        else:
            ctx.log(f"{spec['name']}: k = {out['k']}, {out['chains']} chains × {out['draws']} draws: vectorized "
                    f"{out['vectorized_warm_s']:.2f} s vs full {out['full_warm_s']:.2f} s warm = "
                    f"{out['vectorized_over_full_warm']:.2f}× (cold {out['vectorized_over_full_cold']:.2f}×)")
        ctx.save()
    if any(c.get("status") != "done" for c in cases.values()):
        ctx.stage["truncated"] = True


def stage_corpus(ctx: StageContext):
    from susc import experiments
    s = ctx.sizes
    attempts = [s["overrides"]] + ([{**s["overrides"], **s["fallback"]}] if s.get("fallback") else [])
    tmp = Path(tempfile.mkdtemp(prefix="susc-gpu-corpus-"))
    res = ctx.results
    res["experiment"] = f"python -m susc run corpus-susceptibility --profile {s['profile']} --out <tmp> " + " ".join(
        f"--set {k}={json.dumps(v)}" for k, v in s["overrides"].items())
    res["attempts"] = []
    try:
        for i, ov in enumerate(attempts):
            t0 = time.perf_counter()
            try:
                r = experiments.run("corpus-susceptibility", s["profile"], root=tmp, force=True, progress=False, **ov)
            except Exception as err:  # noqa: BLE001
                if not (is_oom(err) and i + 1 < len(attempts)):
                    raise
                res["attempts"].append({"overrides": ov, "error": "out of memory: " + str(err)[:500],
                                        "wall_s": time.perf_counter() - t0})
                ctx.log(f"out of device memory with {ov}; retrying with {attempts[i + 1]}")
                ctx.save()
                if ctx.left() < NEED[ctx.bench.mode]["corpus"] / 2:
                    ctx.truncate("no time left for the fallback attempt")
                    return
                continue
            wall = time.perf_counter() - t0
            cfg, tm, summ = r.record["config"], r.record["timings"], r.summary
            K = 2 * cfg["n_heads"]
            N = int(summ["num_probe_tokens"])
            draws = cfg["num_chains"] * cfg["num_draws"]
            sampling_s = tm["restricted_s"] + tm["full_s"]
            t_sample0 = t0 + wall - tm["total_s"] + tm.get("model_s", 0.0)   # approx. end of model loading
            comp = compile_seconds(t_sample0)
            out = {"overrides": ov, "config": cfg, "timings": tm, "wall_s": wall, "heads": K, "probe_tokens": N,
                   "chains": cfg["num_chains"], "num_draws": cfg["num_draws"], "draws": draws,
                   "sampling_s": sampling_s, "sampling_compile_s_approx": comp,
                   "token_draws_per_s": N * draws / sampling_s,
                   "head_token_draws_per_s": K * N * draws / sampling_s,
                   "restricted_token_draws_per_s": N * draws / tm["restricted_s"],
                   "full_token_draws_per_s": N * draws / tm["full_s"],
                   "checkpoint_sha256": summ.get("checkpoint_sha256"), "init_loss": summ.get("init_loss")}
            if sampling_s - comp > 0.05 * sampling_s:
                out["token_draws_per_s_excl_compile"] = N * draws / (sampling_s - comp)
            res["attempts"].append(out)
            res.update(result=out)
            ctx.log(f"{K} heads, {N} probe tokens, {cfg['num_chains']} chains × {cfg['num_draws']} draws: restricted "
                    f"{tm['restricted_s']:.1f} s + full {tm['full_s']:.1f} s (compilation ≈ {comp:.1f} s) → "
                    f"{out['token_draws_per_s']:.3g} token-draws/s; model {tm.get('model_s', 0):.1f} s, "
                    f"total {tm['total_s']:.1f} s")
            ctx.save()
            return
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


STAGE_FNS = {"mlp": stage_mlp, "transformer": stage_transformer, "structural": stage_structural,
             "corpus": stage_corpus}


# ----------------------------------------------------------------------------- the record

class Bench:
    def __init__(self, args):
        self.mode = "tiny" if args.tiny else "gpu"
        self.args = args
        self.out = Path(args.out)
        self.copies = [Path(d) / self.out.name for d in (args.copy_to or [])]
        self.t_start = time.time()
        self.deadline = args.deadline if args.deadline else self.t_start + (
            args.budget if args.budget else DEFAULT_BUDGET[self.mode])
        self.record: dict = {}
        self.running: str | None = None
        self.running_t0 = 0.0

    def log(self, msg: str = ""):
        print(msg, flush=True)
        self.record.setdefault("log", []).append(msg)

    def save(self):
        self.record["updated"] = now_iso()
        self.record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        text = json.dumps(self.record, indent=1, default=_json_default)
        for path in [self.out, *self.copies]:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def load_or_new(self, env: dict):
        old = None
        if self.out.exists() and not self.args.force:
            try:
                old = json.loads(self.out.read_text())
            except json.JSONDecodeError:
                old = None
        notes = []
        if old is not None and (old.get("mode") != self.mode or old.get("env", {}).get("devices") != env["devices"]):
            notes.append(f"{self.out.name} holds a {old.get('mode')} record from {old.get('env', {}).get('devices')}: "
                         "not resumed, overwritten")
            old = None
        if old is None:
            self.record = {"kind": "susc-gpu-benchmarks", "schema": 1, "mode": self.mode, "created": now_iso(),
                           "stages": {}, "runs": [], "log": []}
        else:
            self.record = old
        self.record["env"] = env
        return notes


def settings_report() -> dict:
    import jax
    rep = {k: os.environ[k] for k in sorted(os.environ)
           if k.startswith(("XLA_", "JAX_", "SUSC_", "TF_CPP", "CUDA_VISIBLE")) and k != "SUSC_GPU_SETUP"}
    rep["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    cache = jax.config.jax_compilation_cache_dir
    rep["compile_cache_dir"] = cache
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", "--dry-run", dest="tiny", action="store_true",
                    help="every stage at toy sizes (CPU, ~1-2 min)")
    ap.add_argument("--force", action="store_true", help="start a new record: rerun stages already done")
    ap.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--budget", type=float, default=None, help="seconds from now (default 470 GPU, 170 tiny)")
    ap.add_argument("--deadline", type=float, default=None, help="absolute end (epoch seconds); beats --budget")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<UTC date>-gpu.json; "
                                                 "--tiny: _build/gpu-bench/<date>-gpu-tiny.json)")
    ap.add_argument("--copy-to", action="append", default=[], help="also write the record into this folder")
    ap.add_argument("--allow-cpu", action="store_true", help="run the GPU sizes even without a GPU")
    args = ap.parse_args(argv)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    if args.out is None:
        args.out = str(ROOT / "_build" / "gpu-bench" / f"{date}-gpu-tiny.json") if args.tiny else \
            str(HERE / "results" / f"{date}-gpu.json")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {','.join(STAGES)}")

    import jax
    import susc
    from susc.env import device_report
    susc.config.setup()     # persistent compilation cache ($JAX_COMPILATION_CACHE_DIR or ~/.cache/susc/jax)
    jax.monitoring.register_event_duration_secs_listener(_listen)
    env = device_report()
    bench = Bench(args)
    if bench.mode == "gpu" and env["backend"] != "gpu" and not args.allow_cpu:
        print(f"error: JAX backend is {env['backend']!r} ({env['devices']}), not gpu. Install a CUDA jax "
              "(benchmarks/gpu.sh does), use --tiny for the toy sizes, or --allow-cpu.", file=sys.stderr)
        return 3
    notes = bench.load_or_new(env)
    rec = bench.record
    run_info = {"started": now_iso(), "argv": sys.argv[1:] if argv is None else list(argv),
                "git_commit": env["git_commit"], "budget_s": round(bench.deadline - bench.t_start, 1),
                "setup": json.loads(os.environ["SUSC_GPU_SETUP"]) if os.environ.get("SUSC_GPU_SETUP") else None,
                "hostname": platform.node(), "python": sys.executable}
    rec["runs"].append(run_info)
    rec["settings"] = settings_report()
    if run_info["setup"]:
        rec["stages"]["setup"] = {"status": "done", **run_info["setup"]}
    bench.log(f"susc GPU benchmarks ({bench.mode}) — {env['devices']}, jax {env['jax']}, commit {env['git_commit']}, "
              f"budget {run_info['budget_s']:.0f} s → {bench.out}")
    for n in notes:
        bench.log("note: " + n)
    bench.save()

    def on_term(signum, frame):   # a timeout: keep what was measured, mark the stage
        if bench.running:
            st = rec["stages"][bench.running]
            st["status"] = "interrupted"
            st.setdefault("notes", []).append(f"signal {signum} after {time.time() - bench.running_t0:.0f} s")
        bench.log(f"interrupted by signal {signum}")
        bench.save()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)

    for name in STAGES:
        if name not in only:
            continue
        prev = rec["stages"].get(name)
        if prev and prev.get("status") == "done" and not args.force:
            bench.log(f"[{name}] already done at {prev.get('finished')} (commit {prev.get('git_commit')}): skipped")
            continue
        left = bench.deadline - time.time()
        need = NEED[bench.mode][name]
        if left < need:
            rec["stages"][name] = {"status": "skipped", "note": f"{left:.0f} s of the budget left, the stage needs "
                                   f"{need} s; rerun the script (done stages are kept) or raise --budget",
                                   "git_commit": env["git_commit"], "finished": now_iso()}
            bench.log(f"[{name}] skipped: {left:.0f} s left < {need} s needed")
            bench.save()
            continue
        budget = min(CAP[bench.mode][name], left)
        stage = {"status": "running", "started": now_iso(), "budget_s": round(budget, 1),
                 "git_commit": env["git_commit"], "device": env["devices"], "results": {}}
        # keep the finished cases of an earlier partial structural stage
        if prev and name == "structural" and prev.get("results", {}).get("cases"):
            stage["results"]["cases"] = {k: v for k, v in prev["results"]["cases"].items() if v.get("status") == "done"}
        rec["stages"][name] = stage
        bench.running = name
        bench.log(f"[{name}] start (budget {budget:.0f} s)")
        bench.save()
        t0 = bench.running_t0 = time.time()
        try:
            STAGE_FNS[name](StageContext(bench, name, stage, t0 + budget))
            stage["status"] = "partial" if stage.get("truncated") else "done"
        except Exception as err:  # noqa: BLE001  (record it; the next stage still runs)
            stage["status"] = "error"
            stage["error"] = f"{type(err).__name__}: {str(err)[:2000]}"
            stage["traceback"] = traceback.format_exc()[-4000:]
            bench.log(f"[{name}] ERROR {stage['error'][:300]}")
        stage["wall_s"] = round(time.time() - t0, 2)
        stage["finished"] = now_iso()
        stage["device_memory"] = device_memory()
        bench.running = None
        bench.log(f"[{name}] {stage['status']} in {stage['wall_s']:.1f} s")
        bench.save()

    rec["runs"][-1]["wall_s"] = round(time.time() - bench.t_start, 1)
    status = {k: v.get("status") for k, v in rec["stages"].items()}
    bench.log("stages: " + ", ".join(f"{k} {v}" for k, v in status.items()) + f"; record {bench.out}")
    bench.save()
    return 0 if all(status.get(s) == "done" for s in only) else 1


if __name__ == "__main__":
    raise SystemExit(main())
