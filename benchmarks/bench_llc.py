r"""B1 (normal crossing) and B2 (reduced-rank regression) LLC benchmarks with devinterp 1.3.2's own
test settings (anchors.md §1.10 and §(b)), on the susc side; `benchmarks/run.py` feeds the very same
data (and, for RRR, the same trained w*) to devinterp through `benchmarks/devinterp_side.py`.

Conventions, identical on both sides:

* posterior p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²} with nβ = n/ln n = 144.76 (n = 1000: devinterp's
  ``default_nbeta`` of a full-batch loader), L_n the mean squared error (torch's ``F.mse_loss``);
* SGLD w ← w − (ε/2)[nβ∇L_n + γ(w − w*)] + √ε ξ, full batch, one step per draw, no burn-in;
* λ̂ = nβ(mean over draws of L_n − L_n(w*)) per chain (burn-in excluded: there is none), reported
  as the mean over chains ± the std over chains (ddof = 1), as devinterp's ``llc/mean``, ``llc/std``.

B1: f(x) = x·w1^k1·w2^k2, x ~ N(0, 2²), y = 0.25·N(0, 1), w* = 0, ε = 4e-4, γ = 0, 10 chains × 5000
draws; λ = 1/(2 max k); pass if |mean − λ| < 3.5·std. B2: y = BAx with x, y independent N(0, I),
w* from 5000 full-batch Adam steps (lr 0.01), ε = 6e-4, γ = 1, 3 × 2000; λ from Aoyagi & Watanabe;
pass if |mean − λ| ≤ 0.4·λ.
"""
from __future__ import annotations

import math
import time

import jax
import numpy as np

import susc
from susc.models import polynomial_regression, reduced_rank_regression, train_rrr

__all__ = ["B1_POWERS", "B1_QUICK", "B2_CASES", "NBETA", "b1_cases", "b2_cases", "run_susc", "bench_llc"]

N = 1000
NBETA = N / math.log(N)  # 144.76
B1_POWERS = [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (0, 3), (1, 3), (2, 3), (3, 3)]
B1_QUICK = [(1, 1), (0, 2), (3, 3)]
B2_CASES = [(5, 3, 5), (5, 4, 5), (4, 3, 8), (8, 3, 4), (3, 8, 4)]
SEED = 42


def _integer_power_loss(powers):
    """(y − x·Π w_i^{k_i})² with integer powers (`lax.integer_pow`): d/dw w⁰ = 0 at w = 0, as in torch.
    (``w ** k`` with a float array k has gradient 0·w⁻¹ = NaN at the w* = 0 of the k = 0 cases.)"""
    def loss_fn(w, batch):
        f = batch["x"]
        for i, k in enumerate(powers):
            f = f * w[i] ** int(k)
        return (batch["y"] - f) ** 2
    return loss_fn


def b1_cases(powers=B1_POWERS) -> list[dict]:
    """One case per power pair; all share one dataset (devinterp's fixture is seeded once)."""
    cases = []
    for k in powers:
        toy = polynomial_regression(jax.random.key(SEED), list(k), n=N)
        toy = toy.replace(loss_fn=_integer_power_loss(k))
        cases.append(dict(name=f"B1 {list(k)}", kind="poly", powers=list(k), toy=toy, truth=1 / (2 * max(k)),
                          lr=4e-4, nbeta=NBETA, gamma=0.0, chains=10, draws=5000, seed=SEED,
                          criterion="|mean - truth| < 3.5 std", train_s=0.0))
    return cases


def b2_cases(mhn=B2_CASES) -> list[dict]:
    """One case per (M, H, N), each with its own data and its own Adam-trained w*."""
    cases = []
    for M, H, Nn in mhn:
        t0 = time.perf_counter()
        toy = train_rrr(reduced_rank_regression(jax.random.key(SEED), M, H, Nn, n=N))
        jax.block_until_ready(toy.params)
        cases.append(dict(name=f"B2 RRR {(M, H, Nn)}", kind="rrr", mhn=[M, H, Nn], toy=toy, truth=toy.llc,
                          lr=6e-4, nbeta=NBETA, gamma=1.0, chains=3, draws=2000, seed=SEED,
                          criterion="|mean - truth| <= 0.4 truth", train_s=time.perf_counter() - t0))
    return cases


def passes(case: dict, mean: float, std: float) -> bool:
    if case["kind"] == "poly":
        return abs(mean - case["truth"]) < 3.5 * std
    return abs(mean - case["truth"]) <= 0.4 * case["truth"]


def run_susc(case: dict, *, seed: int = 0) -> dict:
    """Sample one case twice with susc (different keys): the first call includes tracing and
    compilation, the second is what a repeat run in the same process costs. ``loop_s`` is the
    median of 3 further warm calls (compiled program reused); steps/s are from it."""
    toy = case["toy"]
    kw = dict(sampler=susc.sgld(case["lr"]), nbeta=case["nbeta"], gamma=case["gamma"],
              num_chains=case["chains"], num_draws=case["draws"], progress=False)
    walls, cpus, ests = [], [], []
    for rep in range(2):
        c0, t0 = time.process_time(), time.perf_counter()
        res = susc.sample(jax.random.key(seed + rep), *toy.args, **kw)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        ests.append(susc.llc(res))
    est = ests[0]
    steps = case["chains"] * case["draws"]
    from bench_step import susc_step_timer, timeit  # the compiled loop alone, compilation excluded
    loop_s, loop_cpu_s = timeit(susc_step_timer(toy.loss_fn, toy.params, toy.data, num_chains=case["chains"],
                                    num_steps=case["draws"], step_size=case["lr"], nbeta=case["nbeta"],
                                    gamma=case["gamma"]), repeats=3, cpu=True)
    return {"llc_mean": est.mean, "llc_std": est.std, "llc_se": est.se,
            "llc_per_chain": est.per_chain.tolist(), "init_loss": float(res.init_loss),
            "rel_error": abs(est.mean - case["truth"]) / case["truth"],
            "pass": bool(passes(case, est.mean, est.std)),
            "repeat_llc_mean": ests[1].mean, "repeat_llc_std": ests[1].std,
            "wall_s": walls[0], "repeat_wall_s": walls[1], "loop_s": loop_s,
            "cpu_s": cpus[0], "repeat_cpu_s": cpus[1], "loop_cpu_s": loop_cpu_s,
            "steps_per_s_total": steps / loop_s, "steps_per_s_per_chain": case["draws"] / loop_s}


def export_case(case: dict, arrays: dict) -> dict:
    """Add this case's data (and trained w*) to ``arrays`` for devinterp; return its JSON spec."""
    toy, name = case["toy"], case["name"]
    arrays[f"{name}/x"] = np.asarray(toy.data["x"], np.float32)
    arrays[f"{name}/y"] = np.asarray(toy.data["y"], np.float32)
    if case["kind"] == "rrr":
        arrays[f"{name}/A"] = np.asarray(toy.params["A"], np.float32)
        arrays[f"{name}/B"] = np.asarray(toy.params["B"], np.float32)
    return {k: case[k] for k in ("name", "kind", "lr", "nbeta", "gamma", "chains", "draws", "seed")} | (
        {"powers": case["powers"]} if case["kind"] == "poly" else {"mhn": case["mhn"]})


def bench_llc(*, quick: bool = False, log=print) -> tuple[list[dict], list[dict]]:
    """Run every susc case; return (records, cases) — cases keep the toys for the devinterp export."""
    cases = b1_cases(B1_QUICK if quick else B1_POWERS) + b2_cases()
    records = []
    for case in cases:
        r = run_susc(case)
        rec = {k: case[k] for k in ("name", "kind", "truth", "lr", "nbeta", "gamma", "chains", "draws",
                                    "criterion", "train_s")} | {"susc": r}
        records.append(rec)
        log(f"[susc] {case['name']}: {r['llc_mean']:.3f} ± {r['llc_std']:.3f} (truth {case['truth']:.3f}, "
            f"{'pass' if r['pass'] else 'FAIL'}) in {r['wall_s']:.2f} s first / {r['repeat_wall_s']:.2f} s repeat / "
            f"{r['loop_s']:.2f} s compiled loop")
    return records, cases
