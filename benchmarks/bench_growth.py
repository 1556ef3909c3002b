r"""How wall time and peak memory grow with draws, chains, parameters and (for the BIF) data points.

Every configuration runs in a fresh subprocess (peak RSS is per process), which prints one JSON line;
``wall_s`` is a second, warm call in that process (compilation excluded), ``first_s`` the first call.

* draws: MLP (13,130 params), 4 chains, batch 256 of n = 4096, per-sample losses of 256 probe rows as
  an observable — stored draws (memory ∝ draws) vs streaming moments (``store_draws=False``: flat);
* chains: the same MLP, 200 draws, 1 → 64 chains;
* params: tanh MLPs of ~1e3 → ~1e6 parameters, 4 chains × 100 draws, batch 64;
* bif: `susc.bif` on the RRR (5, 3, 5) model with N = 250 → 4000 samples, 2 chains × 200 draws
  (the N × N matrix and its batch-means SE: time ∝ N², memory ∝ N²).

    python benchmarks/bench_growth.py [--quick]          # prints the whole section as JSON
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

GRID = {"draws": [100, 400, 1600], "chains": [1, 4, 16, 64], "params": [1_000, 10_000, 100_000, 1_000_000],
        "bif": [250, 500, 1000, 2000, 4000]}
QUICK = {"draws": [50, 200], "chains": [1, 4], "params": [1_000, 10_000], "bif": [250, 500]}


def _mlp(key, hidden, n: int):
    sys.path.insert(0, str(HERE))
    from bench_step import mlp_problem
    return mlp_problem(key, n=n, hidden=hidden)


def _width_for(params: int) -> int:
    """Hidden width w of a 32-w-w-10 MLP with about ``params`` parameters: w² + 44w + 10 ≈ params."""
    return max(4, int((-44 + math.sqrt(44 ** 2 + 4 * max(params - 10, 1))) / 2))


def _one(kind: str, value: int) -> dict:
    """Runs inside the subprocess."""
    import jax
    import susc
    susc.config.setup()

    def timed(f):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        return time.perf_counter() - t0

    if kind == "bif":
        from susc.models import reduced_rank_regression, train_rrr
        toy = train_rrr(reduced_rank_regression(jax.random.key(42), 5, 3, 5, n=value), num_steps=1000)
        kw = dict(sampler=susc.sgld(1e-3), nbeta=value / math.log(value), gamma=10.0, num_chains=2,
                  num_draws=200, progress=False)
        f = lambda: susc.bif(jax.random.key(0), toy.loss_fn, toy.params, toy.data, **kw).value  # noqa: E731
        extra = {}
    else:
        hidden = (_width_for(value),) * 2 if kind == "params" else (128, 64)
        chains = value if kind == "chains" else 4
        draws = value if kind == "draws" else (100 if kind == "params" else 200)
        batch = 64 if kind == "params" else 256
        loss_fn, params, data = _mlp(jax.random.key(1), hidden, 4096)
        probe = jax.tree_util.tree_map(lambda a: a[:256], data)
        store = os.environ.get("GROWTH_STORE", "1") == "1"
        obs = {"probe": susc.observable(loss_fn, probe)}
        kw = dict(sampler=susc.sgld(1e-4), nbeta=100.0, gamma=1.0, num_chains=chains, num_draws=draws,
                  batch_size=batch, observables=obs, store_draws=store, progress=False)
        f = lambda: susc.sample(jax.random.key(0), loss_fn, params, data, **kw).loss  # noqa: E731
        extra = {"num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params))), "store_draws": store}
    first = timed(f)
    wall = timed(f)
    return {"kind": kind, "value": value, "first_s": round(first, 3), "wall_s": round(wall, 4),
            "peak_rss_mb": _peak_rss_mb(), **extra}


def _peak_rss_mb() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries the parent's peak
    across fork + exec into it, so a child of a large process would report the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_growth(*, quick: bool = False, log=print) -> dict:
    grid = QUICK if quick else GRID
    rows = []
    for kind, values in grid.items():
        for store in (["1", "0"] if kind == "draws" else ["1"]):
            for v in values:
                env = dict(os.environ, GROWTH_STORE=store)
                out = subprocess.run([sys.executable, __file__, "--one", kind, str(v)], env=env,
                                     capture_output=True, text=True, timeout=1800)
                if out.returncode != 0:
                    rows.append({"kind": kind, "value": v, "error": out.stderr[-500:]})
                    log(f"  [growth] {kind}={v}: FAILED")
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                log(f"  [growth] {kind}={v}{'' if store == '1' else ' (streaming)'}: {row['wall_s']:.3f} s, "
                    f"{row['peak_rss_mb']} MB")
    return {"note": "one subprocess per row; wall_s = second call (compile excluded), first_s = first call; "
                    "peak_rss_mb = the subprocess's peak resident memory (JAX runtime included)",
            "rows": rows}


if __name__ == "__main__":
    if "--one" in sys.argv:
        i = sys.argv.index("--one")
        print(json.dumps(_one(sys.argv[i + 1], int(sys.argv[i + 2]))))
    else:
        print(json.dumps(bench_growth(quick="--quick" in sys.argv), indent=1))
