"""`make bench`: susc benchmarks, side by side with devinterp 1.3.2 / 2.0.1 when their venvs are present.

    python benchmarks/run.py [--quick] [--devinterp auto|off|subset|full] [--only llc,step,throughput,influence,bif]

* llc: B1 normal crossing (nine power pairs; --quick: [1,1], [0,2], [3,3]) and B2 RRR (five cases)
  in susc at devinterp's exact test settings; then devinterp on the same data and w*
  (`devinterp_side.py` in a separate venv, subprocess, via a temporary .npz). devinterp's chains are
  sequential at ~100 steps/s here, so by default ("subset") it runs B1 [1,1] with 2 of the 10 chains
  and B2 (5,3,5) in full, and the table extrapolates the full-setting wall time from its measured
  steps/s; "full" runs every case at full settings (about 15 min for B2, 8 min per B1 pair).
* step: per-chain-step cost of susc SGLD vs a bare value_and_grad (MLP, 1.3e4 params, batch 256).
* throughput: B10, 1/4/16/64 chains on the polynomial, RRR and the MLP.
* influence: `bench_influence.bench_structural()` (k heads in one vectorized run vs k + 1 runs).
* bif: devinterp 2.0.1 ``bif()`` vs ``susc.bif()`` on the same RRR (5, 3, 5) data and w* (`bench_bif.py`;
  devinterp in ``.venv-bench2`` through `devinterp_bif_side.py`): susc's second call in process (the
  issue-10 goal ratio), fresh-process cold and warm compile cache, devinterp's fastest call, the
  ratio, torch threads, load average, and a cross-check of the two matrices.

The devinterp venv is ``$SUSC_BENCH_PYTHON`` or ``.venv-bench/bin/python`` (create it with
``python3 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 devinterp==1.3.2 numpy``).
The devinterp 2 venv (part bif) is ``$SUSC_BENCH2_PYTHON`` or ``.venv-bench2/bin/python``
(``make bench-venv`` creates both). A JSON record (machine, date, versions, commit, every number)
goes to ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from susc.env import device_report  # noqa: E402

CONVENTIONS = ("nβ = n/ln n = 144.76 (n = 1000, full batch; devinterp's default_nbeta); SGLD "
               "w ← w − (ε/2)[nβ∇L_n + γ(w − w*)] + √ε ξ on both sides; λ̂ = nβ(mean draw loss − L_n(w*)), "
               "no burn-in (so none is included), mean ± std over chains (ddof=1); float32 on both sides.")


def venv_python(env_var: str, venv: str, probe: str) -> str | None:
    """``$env_var`` or ``venv/bin/python`` if it exists and runs ``probe`` (an import line), else None."""
    cand = os.environ.get(env_var) or str(ROOT / venv / "bin" / "python")
    if not Path(cand).exists():
        return None
    ok = subprocess.run([cand, "-c", probe], capture_output=True)
    return cand if ok.returncode == 0 else None


def devinterp_python() -> str | None:
    """Path of a python that imports devinterp (1.3.2) and torch, or None."""
    return venv_python("SUSC_BENCH_PYTHON", ".venv-bench", "import torch, devinterp")


def devinterp_plan(cases: list[dict], mode: str, quick: bool) -> list[dict]:
    """Which cases devinterp runs, with which chains × draws (full settings unless reduced)."""
    plan = []
    for c in cases:
        full = dict(c, full_chains=c["chains"], full_draws=c["draws"])
        if mode == "full":
            plan.append(full)
        elif c["name"] in ("B1 [1, 1]", "B2 RRR (5, 3, 5)"):
            if quick:
                plan.append(dict(full, chains=1, draws=2000))
            elif c["kind"] == "poly":
                plan.append(dict(full, chains=2))
            else:
                plan.append(full)
    return plan


def run_devinterp(py: str, plan: list[dict], log) -> dict:
    from bench_llc import export_case

    arrays, spec = {}, []
    for c in plan:
        spec.append(export_case(c, arrays))
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp) / "cases.npz", Path(tmp) / "out.json"
        np.savez(npz, spec=json.dumps(spec), **arrays)
        log(f"[devinterp] running {len(plan)} case(s) in {py} (sequential chains; this takes a while)")
        t0 = time.perf_counter()
        proc = subprocess.run([py, str(HERE / "devinterp_side.py"), str(npz), str(out)],
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"devinterp side failed:\n{proc.stderr[-3000:]}")
        res = json.loads(out.read_text())
        res["subprocess_wall_s"] = time.perf_counter() - t0
    return res


def merge(records, plan, dres):
    """Attach devinterp's numbers (and full-setting extrapolations) to the susc records."""
    by_name = {r["name"]: r for r in dres["cases"]}
    for rec in records:
        d = by_name.get(rec["name"])
        if d is None:
            continue
        p = next(c for c in plan if c["name"] == rec["name"])
        full_steps = p["full_chains"] * p["full_draws"]
        reduced = (p["chains"], p["draws"]) != (p["full_chains"], p["full_draws"])
        d["reduced"] = reduced
        d["rel_error"] = abs(d["llc_mean"] - rec["truth"]) / rec["truth"]
        scale = full_steps / (p["chains"] * p["draws"])  # sequential chains: cost ∝ steps
        d["full_wall_s"] = (d["init_loss_s"] + d["sampling_s"] * scale) if reduced else d["wall_s"]
        d["full_cpu_s"] = d["cpu_s"] * scale
        s = rec["susc"]
        rec["devinterp"] = d
        rec["speedup_wall"] = d["full_wall_s"] / s["wall_s"]
        rec["speedup_wall_repeat"] = d["full_wall_s"] / s["repeat_wall_s"]
        rec["speedup_loop"] = d["full_wall_s"] / s["loop_s"]
        rec["speedup_cpu"] = d["full_cpu_s"] / s["cpu_s"]
        rec["speedup_steps_per_s"] = s["steps_per_s_total"] / d["steps_per_s_total"]


def print_llc(records, log):
    log("\nLLC benchmarks (" + CONVENTIONS + ")")
    hdr = (f"{'case':<18} {'truth':>6} {'susc λ̂':>15} {'rel':>5} {'ok':>4} {'susc s':>7} {'rep s':>6} "
           f"{'loop s':>6} {'devinterp λ̂':>15} {'rel':>5} {'dev s':>8} {'×wall':>7} {'×loop':>7} {'×cpu':>6}")
    log(hdr)
    for r in records:
        s = r["susc"]
        line = (f"{r['name']:<18} {r['truth']:>6.3f} {s['llc_mean']:>7.3f} ± {s['llc_std']:<5.3f} "
                f"{s['rel_error']:>5.0%} {'yes' if s['pass'] else 'NO':>4} {s['wall_s']:>7.2f} {s['repeat_wall_s']:>6.2f} {s['loop_s']:>6.2f}")
        d = r.get("devinterp")
        if d:
            star = "*" if d["reduced"] else " "
            line += (f" {d['llc_mean']:>7.3f} ± {d['llc_std']:<5.3f} {d['rel_error']:>5.0%} "
                     f"{d['full_wall_s']:>7.1f}{star} {r['speedup_wall']:>6.0f}× {r['speedup_loop']:>6.0f}× {r['speedup_cpu']:>5.0f}×")
        log(line)
    if any(r.get("devinterp", {}).get("reduced") for r in records):
        log("* devinterp ran fewer chains/draws than the full setting: its λ̂ is from that reduced run and its "
            "wall time is extrapolated to the full setting from its measured steps/s (chains are sequential).")
    log("susc s = first susc.sample call (tracing + compilation included); rep s = a second call in the same "
        "process; loop s = the compiled sampling loop alone. ×wall = devinterp s / susc s; ×loop = devinterp s / loop s; "
        "×cpu = the same ratio in process CPU seconds (first susc call), less sensitive to other load.")


def print_step(res, log):
    log(f"\nPer-step overhead ({res['model']}; {res['timing']})")
    for c in res["cases"]:
        log(f"  {c['case']}: bare value_and_grad {c['bare_call_s'] * 1e3:.3f} ms/call (jitted, from Python), "
            f"{c['bare_scan_s'] * 1e3:.3f} ms/step (in a scan); gradient + SGLD noise {c['bare_sgld_s'] * 1e3:.3f} ms/step")
        for s in c["susc"]:
            log(f"    susc SGLD, {s['chains']} chain(s): {s['s_per_chain_step'] * 1e3:.3f} ms per chain-step = "
                f"{s['overhead_vs_bare_scan']:.2f}× bare scan, {s['overhead_vs_bare_call']:.2f}× bare call "
                f"(CPU time: {s['cpu_overhead_vs_bare_scan']:.2f}× bare scan); {s['overhead_vs_bare_sgld']:.2f}× "
                f"gradient + noise (CPU {s['cpu_overhead_vs_bare_sgld']:.2f}×)")


def print_throughput(res, log):
    log(f"\nThroughput (B10; steps per timed call {res['steps_per_call']}, median of {res['repeats']}, "
        "compilation and a warm-up call excluded)")
    log(f"  {'problem':<50} {'chains':>6} {'steps/s/chain':>14} {'chain-steps/s':>14} {'per CPU s':>10}")
    for r in res["rows"]:
        log(f"  {r['problem']:<50} {r['chains']:>6} {r['steps_per_s_per_chain']:>14.0f} "
            f"{r['chain_steps_per_s']:>14.0f} {r['chain_steps_per_cpu_s']:>10.0f}")


def llc_fresh(log) -> dict:
    """devinterp's RRR (5,3,5) LLC call in fresh processes: an empty compile cache (cold), then the
    filled one (warm). The ratio to devinterp's wall for the same call is in ``goals``."""
    import tempfile
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, SUSC_PROGRESS="0")
            r = subprocess.run([sys.executable, str(HERE / "llc_fresh.py")], env=env, capture_output=True,
                               text=True, timeout=900)
            out[label] = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-800:]}
            log(f"[llc-fresh] {label}: " + json.dumps(out[label]))
    return out


def goals(record) -> dict:
    """The three issue-10 ratios from whatever parts this record holds (None where a side is missing)."""
    g = {}
    b2 = next((r for r in record.get("llc", []) if r["name"] == "B2 RRR (5, 3, 5)"), None)
    dev = (b2 or {}).get("devinterp", {}).get("full_wall_s")
    fresh = record.get("llc_fresh", {})
    for label in ("warm", "cold"):
        s = fresh.get(label, {}).get("first_call_s")
        g[f"llc_{label}_ratio (goal {'100' if label == 'warm' else '30'}x)"] = \
            None if not (dev and s) else round(dev / s, 1)
    step = record.get("step", {}).get("cases", [])
    if step:
        g["step_overhead_vs_bare_scan (goal <=1.3)"] = {
            f"{c['case']}, {s['chains']} chains": round(s["overhead_vs_bare_scan"], 2)
            for c in step for s in c["susc"]}
    ratio = record.get("bif", {}).get("ratio", {}).get("goal_second_call")
    g["bif_ratio_second_call (goal 50x)"] = None if ratio is None else round(ratio, 1)
    return g


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases, steps and repeats (about 2 min)")
    ap.add_argument("--devinterp", default="auto", choices=["auto", "off", "subset", "full"],
                    help="auto = subset when the devinterp venv exists")
    ap.add_argument("--only", default="llc,llc-fresh,step,throughput,influence,bif,growth")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<date>[-quick].json)")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    lines: list[str] = []

    def log(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    env = device_report()
    log("susc benchmarks — " + ", ".join(f"{k} {env[k]}" for k in ("date", "git_commit", "jax", "backend", "cpu_count")))
    log("The machine may be shared: CPU contention inflates every wall time below (both sides).")
    record = {"kind": "susc-benchmarks", "quick": args.quick, "env": env, "conventions": CONVENTIONS,
              "load_average_start": os.getloadavg(), "argv": sys.argv[1:]}
    t_start = time.perf_counter()
    out = Path(args.out) if args.out else HERE / "results" / (
        dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M") + ("-quick" if args.quick else "") + ".json")

    def save():  # after every part, so an interrupted run keeps what it measured
        record["total_wall_s"] = time.perf_counter() - t_start
        record["load_average_end"] = os.getloadavg()
        record["susc_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record["log"] = lines
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1, default=_json_default))

    if "llc" in parts:
        from bench_llc import bench_llc
        records, cases = bench_llc(quick=args.quick, log=log)
        record["llc"] = records
        py = None if args.devinterp == "off" else devinterp_python()
        if py is None:
            log("[devinterp] " + ("skipped (--devinterp off)" if args.devinterp == "off" else
                "not found (no .venv-bench with torch + devinterp, nor $SUSC_BENCH_PYTHON): susc only"))
        else:
            mode = "full" if args.devinterp == "full" else "subset"
            plan = devinterp_plan(cases, mode, args.quick)
            dres = run_devinterp(py, plan, log)
            record["devinterp_versions"] = dres["versions"]
            record["devinterp_mode"] = mode
            merge(records, plan, dres)
        print_llc(records, log)
        save()
    if "llc-fresh" in parts:
        record["llc_fresh"] = llc_fresh(log)
        save()
    if "step" in parts:
        from bench_step import bench_step
        record["step"] = bench_step(quick=args.quick)
        print_step(record["step"], log)
        save()
    if "throughput" in parts:
        from bench_step import bench_throughput
        record["throughput"] = bench_throughput(quick=args.quick, log=log)
        print_throughput(record["throughput"], log)
        save()
    if "influence" in parts:
        try:
            import bench_influence
        except ImportError:
            log("\n[influence] benchmarks/bench_influence.py not present: skipped")
        else:
            for fn in ("bench_structural",):
                if hasattr(bench_influence, fn):
                    try:
                        record[fn] = getattr(bench_influence, fn)(quick=args.quick)
                    except TypeError:  # no quick switch
                        record[fn] = getattr(bench_influence, fn)()
                    log(f"\n[{fn}] " + json.dumps(record[fn], default=str)[:2000])
            save()
    if "bif" in parts:
        from bench_bif import bench_bif_side_by_side, print_bif
        log("\n[bif] devinterp 2.0.1 bif() vs susc.bif(), same data and w*")
        record["bif"] = bench_bif_side_by_side(quick=args.quick, log=log, devinterp=args.devinterp != "off")
        if "devinterp" in record["bif"]:
            record["devinterp2_versions"] = record["bif"]["devinterp"]["versions"]
        save()
        print_bif(record["bif"], log)

    if "growth" in parts:
        from bench_growth import bench_growth
        log("\n[growth] wall time and peak memory against draws, chains, parameters, BIF size")
        record["growth"] = bench_growth(quick=args.quick, log=log)
        save()
    record["goals"] = goals(record)
    for k, v in record["goals"].items():
        log(f"[goal] {k}: {v}")
    save()
    log(f"\nTotal {record['total_wall_s']:.0f} s; record written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


if __name__ == "__main__":
    raise SystemExit(main())
