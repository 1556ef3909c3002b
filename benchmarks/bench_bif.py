r"""BIF side by side: devinterp 2.0.1 ``bif()`` against ``susc.bif()`` (issue 10; `run.py --only bif`).

The model is devinterp's reduced-rank-regression test model (M, H, N) = (5, 3, 5) (``rrr_test``; the
one `bench_influence.bench_bif` uses): y = BAx with x, y independent N(0, I), n = 1000, w* from 5000
full-batch Adam steps (lr 0.01). Settings (the issue's): ε = 1e-3, γ = 10, nβ = n/ln n = 144.76,
2 chains × 200 draws, full batch, every per-sample loss recorded at every draw, the n × n matrix.
devinterp runs on the very same data and w* (`devinterp_bif_side.py` in ``.venv-bench2``, a
subprocess, through a temporary .npz).

susc is timed three ways (wall time of the ``susc.bif()`` call alone):

* **in process**: a first call (tracing and compilation; warm only if the parent's
  ``JAX_COMPILATION_CACHE_DIR`` already holds the programs), then 3 further calls with other keys.
  The **second call** is the goal number (issue 10: devinterp / susc ≥ 50).
* **fresh process, cold**: a new Python process with an empty persistent compilation cache
  (``JAX_COMPILATION_CACHE_DIR`` = a new empty folder, min compile time 0 s).
* **fresh process, warm**: another new process on the cache the cold one filled.

Each call's time is split into ``susc.sample``'s own wall time and the rest (the n × n matrix and its
batch-means standard errors); one more in-process call with ``se=False`` does devinterp's work.

devinterp's ``bif()`` is timed twice with torch's default thread count and twice with 1 thread (its
2-thread default collapses when other processes share a 2-core CPU, anchors.md §B6); the ratio uses
its fastest call, so contention on its side cannot inflate the ratio. Progress bars are off on
both sides. Sign: susc BIF = −Cov[ℓ_i, ℓ_j] (``correlation=True``: −Corr); devinterp returns +Corr
(default) or +Cov. The cross-check compares susc's −(−Corr) with devinterp's +Corr (off-diagonal
entries), susc's −(−Cov) with the covariance of devinterp's recorded losses (slope and correlation),
and the same for two susc seeds.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MHN = (5, 3, 5)
SETTINGS = {"model": "RRR (M, H, N) = (5, 3, 5), devinterp's rrr_test model, w* from 5000 full-batch Adam steps",
            "n": 1000, "lr": 1e-3, "gamma": 10.0, "chains": 2, "draws": 200, "seed": 42, "batch": "full (n)"}
GOAL_FACTOR = 50.0


def _settings(quick: bool) -> dict:
    s = dict(SETTINGS, nbeta=SETTINGS["n"] / math.log(SETTINGS["n"]))
    if quick:
        s["draws"] = 50
    return s


def _susc_bif(key: int, loss_fn, params, data, s: dict, **kw):
    import jax

    import susc
    return susc.bif(jax.random.key(key), loss_fn, params, data, sampler=susc.sgld(s["lr"]), nbeta=s["nbeta"],
                    gamma=s["gamma"], num_chains=s["chains"], num_draws=s["draws"], progress=False, **kw)


def _timed_call(key, loss_fn, params, data, s, **kw):
    load = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    out = _susc_bif(key, loss_fn, params, data, s, **kw)
    np.asarray(out.value)  # the matrix is a NumPy array already; this keeps the timing honest if that changes
    wall = time.perf_counter() - t0
    sampling = float(out.result.wall_time)  # susc.sample's own wall time (the rest: the n × n matrix, SE)
    return out, {"key": key, "wall_s": wall, "cpu_s": time.process_time() - c0, "sampling_s": sampling,
                 "matrix_s": wall - sampling, "load_average_1min": load} | ({"kwargs": kw} if kw else {})


def _rrr_loss(w, batch):
    import jax.numpy as jnp
    return jnp.mean((batch["y"] - batch["x"] @ w["A"].T @ w["B"].T) ** 2, axis=-1)  # = susc.models' RRR loss


def fresh_process_main(argv) -> int:
    """``python bench_bif.py --fresh CASE.npz OUT.json``: one timed ``susc.bif()`` call in a new process
    (the compilation cache is whatever ``$JAX_COMPILATION_CACHE_DIR`` holds)."""
    t_start = time.perf_counter()
    case, out = argv
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp

    import susc  # noqa: F401  (import time is measured)
    import_s = time.perf_counter() - t0
    arrays = np.load(case)
    s = json.loads(str(arrays["spec"]))
    params = {"A": jnp.asarray(arrays["A"]), "B": jnp.asarray(arrays["B"])}
    data = {"x": jnp.asarray(arrays["x"]), "y": jnp.asarray(arrays["y"])}
    jax.block_until_ready((params, data))
    _, rec = _timed_call(1, _rrr_loss, params, data, s)
    rec |= {"import_s": import_s, "process_s": time.perf_counter() - t_start,
            "cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR")}
    Path(out).write_text(json.dumps(rec))
    return 0


def _run_fresh(case_npz: Path, cache_dir: Path, out: Path) -> dict:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               SUSC_PROGRESS="0", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--fresh", str(case_npz), str(out)],
                          env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fresh-process susc run failed:\n{proc.stderr[-3000:]}")
    rec = json.loads(out.read_text())
    rec["subprocess_wall_s"] = time.perf_counter() - t0
    rec["cache_files_after"] = sum(1 for p in cache_dir.rglob("*") if p.is_file())
    return rec


def devinterp2_python() -> str | None:
    """Path of a python that imports torch and devinterp 2's ``bif``, or None."""
    from run import venv_python
    return venv_python("SUSC_BENCH2_PYTHON", ".venv-bench2", "import torch; from devinterp.slt.bif import bif")


def _run_devinterp(py: str, case_npz: Path, tmp: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    out = tmp / "devinterp.npz"
    t0 = time.perf_counter()
    proc = subprocess.run([py, str(HERE / "devinterp_bif_side.py"), str(case_npz), str(out)],
                          env=dict(os.environ, TQDM_DISABLE="1"), stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"devinterp bif side failed:\n{proc.stderr[-3000:]}")
    res = np.load(out)
    meta = json.loads(str(res["meta"]))
    meta["subprocess_wall_s"] = time.perf_counter() - t0
    return meta, np.asarray(res["influences"]), np.asarray(res["losses"])


def _offdiag(m: np.ndarray) -> np.ndarray:
    return m[~np.eye(m.shape[0], dtype=bool)]


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Pearson r of the off-diagonal entries of two n × n matrices, and the least-squares slope of a on b."""
    x, y = _offdiag(b).astype(np.float64), _offdiag(a).astype(np.float64)
    r = float(np.corrcoef(x, y)[0, 1])
    slope = float(np.dot(x - x.mean(), y - y.mean()) / np.dot(x - x.mean(), x - x.mean()))
    return {"r_offdiag": r, "slope": slope, "mean_abs_a": float(np.abs(y).mean()), "mean_abs_b": float(np.abs(x).mean())}


def _cross_check(s1, s2, dev_corr, dev_losses) -> dict:
    """susc (two seeds) against devinterp, after undoing susc's sign (susc BIF = −devinterp output)."""
    from susc import influence_matrix

    l1, l2 = (np.asarray(r.result.observables["train_losses"]) for r in (s1, s2))
    c1, c2 = (-influence_matrix(lo, correlation=True, se=False).value for lo in (l1, l2))  # +Corr
    v1, v2 = -np.asarray(s1.value), -np.asarray(s2.value)                                     # +Cov
    flat = dev_losses.reshape(-1, dev_losses.shape[-1]).astype(np.float64)                   # chains × draws stacked
    dev_cov = np.cov(flat, rowvar=False)                                                     # = compute_covariance=True
    return {"what": "off-diagonal entries; susc matrices negated (susc BIF = −Cov / −Corr, devinterp +Cov / +Corr)",
            "corr_susc_vs_devinterp": _compare(c1, dev_corr),
            "corr_susc_seed_vs_seed": _compare(c2, c1),
            "cov_susc_vs_devinterp": _compare(v1, dev_cov),
            "cov_susc_seed_vs_seed": _compare(v2, v1),
            "diag_cov_mean": {"susc": float(np.diag(v1).mean()), "susc_seed2": float(np.diag(v2).mean()),
                              "devinterp": float(np.diag(dev_cov).mean())}}


def bench_bif_side_by_side(*, quick: bool = False, log=print, devinterp: bool = True) -> dict:
    import jax

    from susc.models import reduced_rank_regression, train_rrr

    s = _settings(quick)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    toy = train_rrr(reduced_rank_regression(jax.random.key(s["seed"]), *MHN, n=s["n"]))
    jax.block_until_ready(toy.params)
    train_s = time.perf_counter() - t0
    args = (toy.loss_fn, toy.params, toy.data, s)
    calls, results = [], []
    for key in range(4):  # first call (compiles), then the second call = the goal number, then 2 more
        out, rec = _timed_call(key, *args)
        calls.append(rec)
        results.append(out)
    rep = [c["wall_s"] for c in calls[1:]]
    _, no_se = _timed_call(4, *args, se=False)  # the same work as devinterp's bif(): the matrix, no SE
    susc_rec = {"train_s": train_s, "calls": calls, "first_call_s": calls[0]["wall_s"],
                "second_call_s": calls[1]["wall_s"], "second_call_cpu_s": calls[1]["cpu_s"],
                "repeat_median_s": statistics.median(rep), "repeat_min_s": min(rep),
                "second_call_sampling_s": calls[1]["sampling_s"], "second_call_matrix_s": calls[1]["matrix_s"],
                "no_se_call": no_se, "no_se_call_s": no_se["wall_s"],
                "parent_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
                "matrix_shape": list(np.shape(results[1].value)),
                "call": "susc.bif(key, loss_fn, w*, data, sampler=susc.sgld(ε), nbeta, gamma, num_chains, num_draws, "
                        "progress=False): defaults otherwise (−Cov with batch-means SE, float32 draws)"}
    log(f"[susc] bif() in process: first {calls[0]['wall_s']:.2f} s, second {calls[1]['wall_s'] * 1e3:.0f} ms "
        f"(sampling {calls[1]['sampling_s'] * 1e3:.0f} ms + matrix and SE {calls[1]['matrix_s'] * 1e3:.0f} ms; "
        f"median of calls 2–4 {susc_rec['repeat_median_s'] * 1e3:.0f} ms; se=False {no_se['wall_s'] * 1e3:.0f} ms)")

    spec = {"mhn": list(MHN), "lr": s["lr"], "nbeta": s["nbeta"], "gamma": s["gamma"], "chains": s["chains"],
            "draws": s["draws"], "repeats": 1 if quick else 2, "threads": [None] if quick else [None, 1]}
    record = {"settings": s, "goal_factor": GOAL_FACTOR, "load_average_start": load_start, "susc": susc_rec}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        case = tmp / "case.npz"
        np.savez(case, spec=json.dumps(spec), x=np.asarray(toy.data["x"], np.float32),
                 y=np.asarray(toy.data["y"], np.float32), A=np.asarray(toy.params["A"], np.float32),
                 B=np.asarray(toy.params["B"], np.float32))
        cache = tmp / "jax_cache"
        cache.mkdir()
        cold = _run_fresh(case, cache, tmp / "cold.json")
        warm = _run_fresh(case, cache, tmp / "warm.json")
        susc_rec["fresh_cold"], susc_rec["fresh_warm"] = cold, warm
        log(f"[susc] bif() in a fresh process: cold (empty compile cache) {cold['wall_s']:.2f} s, warm (filled "
            f"cache, {cold['cache_files_after']} files) {warm['wall_s']:.2f} s; import jax + susc "
            f"{cold['import_s']:.1f} / {warm['import_s']:.1f} s")

        py = devinterp2_python() if devinterp else None
        if py is None:
            log("[devinterp 2] " + ("skipped" if not devinterp else
                "not found (no .venv-bench2 with torch + devinterp 2.0.1, nor $SUSC_BENCH2_PYTHON): susc only"))
            record["load_average_end"] = os.getloadavg()
            return record
        log(f"[devinterp 2] running bif() in {py}")
        meta, dev_corr, dev_losses = _run_devinterp(py, case, tmp)
    best = min(meta["calls"], key=lambda c: c["wall_s"])
    default = [c for c in meta["calls"] if c["threads_requested"] is None]
    dev_rec = dict(meta, best_s=best["wall_s"], best_cpu_s=best["cpu_s"], best_threads=best["torch_threads"],
                   default_threads_s=min(c["wall_s"] for c in default),
                   default_torch_threads=default[0]["torch_threads"])
    record["devinterp"] = dev_rec
    record["torch_threads_default"] = dev_rec["default_torch_threads"]
    record["ratio"] = {
        "goal_second_call": best["wall_s"] / susc_rec["second_call_s"],
        "second_call_vs_devinterp_default_threads": dev_rec["default_threads_s"] / susc_rec["second_call_s"],
        "repeat_median": best["wall_s"] / susc_rec["repeat_median_s"],
        "no_se_call": best["wall_s"] / no_se["wall_s"],
        "fresh_process_cold": best["wall_s"] / cold["wall_s"],
        "fresh_process_warm": best["wall_s"] / warm["wall_s"],
        "in_process_first_call": best["wall_s"] / calls[0]["wall_s"],
        "cpu_second_call": best["cpu_s"] / susc_rec["second_call_cpu_s"],
    }
    record["goal_met"] = record["ratio"]["goal_second_call"] >= GOAL_FACTOR
    record["goal_target_s"] = best["wall_s"] / GOAL_FACTOR
    record["cross_check"] = _cross_check(results[1], results[2], dev_corr, dev_losses)
    record["load_average_end"] = os.getloadavg()
    return record


def print_bif(rec: dict, log=print) -> None:
    s, su = rec["settings"], rec["susc"]
    log(f"\nBIF side by side ({s['model']}; n = {s['n']}, {s['chains']} × {s['draws']}, full batch, ε = {s['lr']:g}, "
        f"γ = {s['gamma']:g}, nβ = n/ln n = {s['nbeta']:.2f}; susc BIF = −Cov, devinterp bif() = +Corr)")
    log(f"  susc.bif(): in process first {su['first_call_s']:.2f} s, second {su['second_call_s'] * 1e3:.0f} ms "
        f"(sampling {su['second_call_sampling_s'] * 1e3:.0f} ms + matrix/SE {su['second_call_matrix_s'] * 1e3:.0f} ms; "
        f"median of calls 2–4 {su['repeat_median_s'] * 1e3:.0f} ms; se=False {su['no_se_call_s'] * 1e3:.0f} ms); "
        f"fresh process cold {su['fresh_cold']['wall_s']:.2f} s, warm {su['fresh_warm']['wall_s']:.2f} s")
    d = rec.get("devinterp")
    if d is None:
        log("  devinterp 2.0.1: not run")
        return
    calls = ", ".join(f"{c['wall_s']:.2f} s ({c['torch_threads']} thr)" for c in d["calls"])
    log(f"  devinterp {d['versions']['devinterp']} bif() (torch {d['versions']['torch']}): {calls}; fastest {d['best_s']:.2f} s")
    r = rec["ratio"]
    log(f"  ratio devinterp / susc: second call {r['goal_second_call']:.1f}× (goal ≥ {rec['goal_factor']:.0f}×, i.e. susc ≤ "
        f"{rec['goal_target_s'] * 1e3:.0f} ms: {'met' if rec['goal_met'] else 'NOT met'}); vs devinterp at default threads "
        f"{r['second_call_vs_devinterp_default_threads']:.1f}×; se=False {r['no_se_call']:.1f}×; fresh process cold {r['fresh_process_cold']:.2f}×, warm "
        f"{r['fresh_process_warm']:.2f}×; CPU seconds (second call) {r['cpu_second_call']:.1f}×")
    cc = rec["cross_check"]
    log(f"  cross-check (off-diagonal): corr susc vs devinterp r = {cc['corr_susc_vs_devinterp']['r_offdiag']:.3f} "
        f"(susc seed vs seed {cc['corr_susc_seed_vs_seed']['r_offdiag']:.3f}); cov r = {cc['cov_susc_vs_devinterp']['r_offdiag']:.3f}, "
        f"slope {cc['cov_susc_vs_devinterp']['slope']:.3f} (seed vs seed r = {cc['cov_susc_seed_vs_seed']['r_offdiag']:.3f}, "
        f"slope {cc['cov_susc_seed_vs_seed']['slope']:.3f}); mean variance Var[ℓ_i] susc {cc['diag_cov_mean']['susc']:.3g} / "
        f"{cc['diag_cov_mean']['susc_seed2']:.3g} (two seeds), devinterp {cc['diag_cov_mean']['devinterp']:.3g}")
    log(f"  load average {rec['load_average_start'][0]:.1f} → {rec['load_average_end'][0]:.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fresh":
        raise SystemExit(fresh_process_main(sys.argv[2:]))
    print(__doc__)
    raise SystemExit(2)
