"""One devinterp-protocol LLC call (RRR (5,3,5), n = 1000, nβ = n/ln n, ε 6e-4, γ 1, 3 × 2000, full
batch) timed in a fresh process: what a user waits for. Training w* is not timed.

    python benchmarks/llc_fresh.py [--profile]      # prints one JSON line

Run it twice with the same ``JAX_COMPILATION_CACHE_DIR`` for the warm-cache figure, or with an
empty one for the cold figure (`benchmarks/run.py` does both in subprocesses).
"""
from __future__ import annotations

import json
import math
import sys
import time

T_START = time.perf_counter()

import jax  # noqa: E402

import susc  # noqa: E402
from susc.models import reduced_rank_regression, train_rrr  # noqa: E402

T_IMPORT = time.perf_counter() - T_START


def main(profile: bool = False) -> dict:
    susc.config.setup()
    toy = train_rrr(reduced_rank_regression(jax.random.key(42), 5, 3, 5, n=1000))   # bench_llc's B2 data
    jax.block_until_ready(toy.params)
    kw = dict(sampler=susc.sgld(6e-4), nbeta=1000 / math.log(1000), gamma=1.0, num_chains=3, num_draws=2000,
              progress=False)
    if profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
    t0 = time.perf_counter()
    est = susc.llc(susc.sample(jax.random.key(1), *toy.args, **kw))
    wall = time.perf_counter() - t0
    if profile:
        pr.disable()
        pstats.Stats(pr, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    t0 = time.perf_counter()
    est2 = susc.llc(susc.sample(jax.random.key(2), *toy.args, **kw))
    return {"first_call_s": round(wall, 3), "second_call_s": round(time.perf_counter() - t0, 3),
            "import_s": round(T_IMPORT, 2), "llc": round(est.mean, 3), "llc_std": round(est.std, 3),
            "llc_second": round(est2.mean, 3), "truth": toy.llc}


if __name__ == "__main__":
    print(json.dumps(main("--profile" in sys.argv)))
