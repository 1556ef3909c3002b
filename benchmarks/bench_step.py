r"""Per-step cost of `susc`'s compiled SGLD loop, and chain-count throughput (anchors.md §(b) B10).

What is timed is a warm `susc.sample` call (its compiled program is cached after the first call): a
`lax.scan` over draws with the chains vmapped inside, each step one ``value_and_grad`` of the
minibatch loss, the SGLD move

.. math::

    w \leftarrow w - \tfrac{\epsilon}{2}\,[\,n\beta\,\nabla L_B(w) + \gamma (w - w^*)\,] + \sqrt{\epsilon}\,\xi,

(blackjax's h = ε/2), and per-draw bookkeeping (loss record, finiteness check). Compilation and a
warm-up call are excluded; every figure is the median of ``repeats`` timed calls, each ended by
``block_until_ready``.

Two baselines for "one gradient evaluation" on the same batch:

* ``bare_call``: a jitted ``value_and_grad`` of the mean loss called from Python (includes dispatch);
* ``bare_scan``: the same ``value_and_grad`` inside a jitted ``lax.scan`` with a plain gradient
  step (no dispatch: the cheapest compiled loop that cannot be optimised away);
* ``bare_sgld``: ``bare_scan`` plus the N(0, I) noise of an SGLD step (threefry normals, one per
  parameter) — the least any SGLD implementation must pay; susc / bare_sgld is susc's own overhead.

``overhead = (susc seconds per chain-step) / (baseline seconds per gradient)``.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import susc
from susc.sampling.posterior import tree_size
from susc.samplers.base import tree_normal

__all__ = ["timeit", "mlp_problem", "susc_step_timer", "bench_step", "bench_throughput"]


def timeit(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, cpu: bool = False):
    """Median wall seconds of ``fn()`` (its outputs blocked on), after ``warmup`` untimed calls.

    With ``cpu=True`` returns ``(wall, cpu)`` medians, cpu = process CPU seconds (all threads): on a
    shared machine it is far less inflated by other processes than the wall time."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return (statistics.median(walls), statistics.median(cpus)) if cpu else statistics.median(walls)


def mlp_problem(key, *, n: int = 256, d_in: int = 32, hidden=(128, 64), classes: int = 10):
    """Softmax MLP 32→128→64→10 (13,130 parameters) on synthetic Gaussian inputs with random labels.

    Returns ``(loss_fn, params, data)`` in susc's loss contract: per-example cross-entropy ``(B,)``.
    """
    sizes = (d_in, *hidden, classes)
    keys = jax.random.split(key, len(sizes) + 1)
    params = [{"W": jax.random.normal(k, (a, b)) / math.sqrt(a), "b": jnp.zeros((b,))}
              for k, a, b in zip(keys[:-2], sizes[:-1], sizes[1:])]
    x = jax.random.normal(keys[-2], (n, d_in))
    y = jax.random.randint(keys[-1], (n,), 0, classes)

    def loss_fn(p, batch):
        h = batch["x"]
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["W"] + layer["b"])
        logits = h @ p[-1]["W"] + p[-1]["b"]
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], axis=1)[:, 0]

    return loss_fn, params, {"x": x, "y": y}


def susc_step_timer(loss_fn, params, data, *, num_chains: int, num_steps: int, step_size: float = 1e-4,
                    nbeta: float = 100.0, gamma: float = 1.0, batch_size=None, sampler=None):
    """A zero-argument callable running ``susc.sample`` for ``num_steps`` draws (one SGLD step each) of
    ``num_chains`` vmapped chains. `susc.sample` caches its compiled program per (loss_fn, settings),
    so after the warm-up call a call costs the compiled loop plus a small fixed per-call cost
    (initial state, L_n(w*), copying the draws to the host) — what a user pays for a repeat run."""
    sampler = sampler or susc.sgld(step_size)
    key = jax.random.key(0)
    return lambda: susc.sample(key, loss_fn, params, data, sampler=sampler, nbeta=nbeta, gamma=gamma,
                               num_chains=num_chains, num_draws=num_steps, batch_size=batch_size,
                               progress=False).loss


def _bare(loss_fn, params, batch, num_steps):
    mean_loss = lambda p: jnp.mean(loss_fn(p, batch))
    vg = jax.jit(jax.value_and_grad(mean_loss))

    @jax.jit
    def scan(p):
        def body(p, _):
            loss, g = jax.value_and_grad(mean_loss)(p)
            return jax.tree_util.tree_map(lambda w, gw: w - 1e-6 * gw, p, g), loss
        return jax.lax.scan(body, p, None, length=num_steps)

    @jax.jit
    def sgld_scan(p, key):  # the least an SGLD step can cost: the gradient plus N(0, I) noise
        def body(p, i):
            loss, g = jax.value_and_grad(mean_loss)(p)
            z = tree_normal(jax.random.fold_in(key, i), p)
            return jax.tree_util.tree_map(lambda w, gw, zw: w - 1e-6 * gw + 1e-3 * zw, p, g, z), loss
        return jax.lax.scan(body, p, jnp.arange(num_steps))

    return (lambda: vg(params)), (lambda: scan(params)), (lambda: sgld_scan(params, jax.random.key(0)))


def bench_step(*, quick: bool = False, repeats: int = 5) -> dict:
    """Per-chain-step cost of susc SGLD vs a bare ``value_and_grad`` for the ~1.3e4-parameter MLP.

    Cases: full batch of 256 (the SGLD gradient uses exactly the baseline's batch) and minibatch 256
    of n = 4096 (adds drawing the minibatch without replacement each step). Goal: ≤ 1.3× per chain-step.
    """
    steps = 100 if quick else 300
    out = {"model": "MLP 32-128-64-10 tanh, softmax cross-entropy", "steps_per_call": steps,
           "repeats": repeats, "timing": "median of repeats, warm-up call excluded, block_until_ready",
           "cases": []}
    for label, n, bs in (("full batch 256", 256, None), ("minibatch 256 of n=4096", 4096, 256)):
        loss_fn, params, data = mlp_problem(jax.random.key(1), n=n)
        batch = jax.tree_util.tree_map(lambda a: a[:256], data)
        bare_call, bare_scan, bare_sgld = _bare(loss_fn, params, batch, steps)
        t_call, c_call = timeit(bare_call, repeats=max(repeats, 20) * 5, cpu=True)
        t_scan, c_scan = (v / steps for v in timeit(bare_scan, repeats=repeats, cpu=True))
        t_sgld, c_sgld = (v / steps for v in timeit(bare_sgld, repeats=repeats, cpu=True))
        case = {"case": label, "n": n, "batch": 256, "num_params": tree_size(params),
                "bare_call_s": t_call, "bare_scan_s": t_scan, "bare_call_cpu_s": c_call,
                "bare_scan_cpu_s": c_scan, "bare_sgld_s": t_sgld, "bare_sgld_cpu_s": c_sgld, "susc": []}
        for C in (1, 4):
            t, c = timeit(susc_step_timer(loss_fn, params, data, num_chains=C, num_steps=steps, batch_size=bs),
                          repeats=repeats, cpu=True)
            per, per_cpu = t / (steps * C), c / (steps * C)
            case["susc"].append({"chains": C, "s_per_chain_step": per, "chain_steps_per_s": 1 / per,
                                 "cpu_s_per_chain_step": per_cpu,
                                 "overhead_vs_bare_scan": per / t_scan, "overhead_vs_bare_call": per / t_call,
                                 "cpu_overhead_vs_bare_scan": per_cpu / c_scan,
                                 "overhead_vs_bare_sgld": per / t_sgld, "cpu_overhead_vs_bare_sgld": per_cpu / c_sgld})
        out["cases"].append(case)
    return out


def _problems(quick: bool):
    from susc.models import polynomial_regression, reduced_rank_regression, train_rrr
    key = jax.random.key(0)
    poly = polynomial_regression(key, [1, 1])
    rrr = train_rrr(reduced_rank_regression(key, 5, 3, 5), num_steps=500 if quick else 5000)
    mlp = mlp_problem(jax.random.key(1), n=4096)
    return [("polynomial [1,1] (2 params, n=1000, full batch)", poly.loss_fn, poly.params, poly.data, None, 4e-4),
            ("RRR (5,3,5) (30 params, n=1000, full batch)", rrr.loss_fn, rrr.params, rrr.data, None, 6e-4),
            ("MLP (13,130 params, batch 256 of n=4096)", *mlp, 256, 1e-4)]


def bench_throughput(*, quick: bool = False, repeats: int = 3, chains=(1, 4, 16, 64), log=None) -> dict:
    """B10: total chain-steps/s and steps/s per chain for 1, 4, 16, 64 vmapped chains."""
    base = 200 if quick else 1000
    out = {"steps_per_call": f"{base} (MLP: min({base // 4}, max(25, {base * 2} / chains)))", "repeats": repeats,
           "nbeta": 144.76, "rows": []}
    for label, loss_fn, params, data, bs, eps in _problems(quick):
        for C in chains:
            steps = base if bs is None else min(base // 4, max(25, base * 2 // C))
            t, c = timeit(susc_step_timer(loss_fn, params, data, num_chains=C, num_steps=steps, step_size=eps,
                                          nbeta=144.76, batch_size=bs), repeats=repeats, cpu=True)
            out["rows"].append({"problem": label, "num_params": tree_size(params), "chains": C, "steps": steps,
                                "seconds": t, "cpu_seconds": c, "steps_per_s_per_chain": steps / t,
                                "chain_steps_per_s": steps * C / t, "chain_steps_per_cpu_s": steps * C / c})
            if log is not None:
                log(f"  [throughput] {label}, {C} chains: {steps * C / t:.0f} chain-steps/s")
    return out


if __name__ == "__main__":
    import json
    print(json.dumps(bench_step(quick=True), indent=1))
