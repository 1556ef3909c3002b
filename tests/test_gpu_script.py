"""`benchmarks/gpu.sh --dry-run` end to end: every stage of the GPU benchmark at toy sizes on the CPU.

The record (a temporary file, never benchmarks/results/) must hold each stage with its numbers and
provenance; a second call must resume (skip the stages already done); a budget too small for any stage
must skip them all with a note instead of running past it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
STAGES = ("mlp", "transformer", "structural", "corpus")


def _run(*args, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu", SUSC_PROGRESS="0")
    env.pop("SUSC_GPU_SETUP", None)
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--python", sys.executable, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_writes_every_stage_and_resumes(tmp_path):
    out, copy = tmp_path / "gpu.json", tmp_path / "copy"
    proc = _run("--budget", "900", "--out", str(out), "--copy-to", str(copy))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rec = json.loads(out.read_text())
    assert rec["kind"] == "susc-gpu-benchmarks" and rec["mode"] == "tiny"
    assert rec["env"]["backend"] == "cpu" and rec["env"]["git_commit"] and rec["env"]["date"]
    assert rec["runs"][0]["argv"] and rec["runs"][0]["setup"]["mode"] == "given"
    st = rec["stages"]
    for name in ("setup", *STAGES):
        assert st[name]["status"] == "done", (name, st[name])
    for name in STAGES:
        assert st[name]["git_commit"] and st[name]["wall_s"] > 0 and st[name]["budget_s"] > 0
    mlp = st["mlp"]["results"]
    assert len(mlp["step"]["cases"]) == 2
    assert [r["chains"] for r in mlp["throughput"]["rows"]] == [1, 4]
    assert all(r["chain_steps_per_s"] > 0 for r in mlp["throughput"]["rows"])
    tr = st["transformer"]["results"]
    assert tr["bare_sgld"]["s_per_step"] > 0 and [r["chains"] for r in tr["rows"]] == [1, 4]
    assert all(r["tokens_per_s"] > 0 and r["first_call_s"] >= r["seconds"] for r in tr["rows"])
    case = st["structural"]["results"]["cases"]["tiny"]
    assert case["k"] == 8 and case["chi_shape"] == [8, case["probe_tokens"]] and case["chi_finite"]
    assert case["vectorized_over_full_warm"] > 0 and case["full_warm_s"] > 0
    corpus = st["corpus"]["results"]["result"]
    assert corpus["token_draws_per_s"] > 0 and corpus["probe_tokens"] == 4 * 32 and corpus["draws"] == 8
    assert json.loads((copy / out.name).read_text())["stages"].keys() == st.keys()

    again = _run("--budget", "900", "--out", str(out), timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    rec2 = json.loads(out.read_text())
    assert len(rec2["runs"]) == 2
    for name in STAGES:
        assert f"[{name}] already done" in again.stdout
        assert rec2["stages"][name]["results"] == st[name]["results"]


@pytest.mark.slow
def test_stages_that_do_not_fit_are_skipped_with_a_note(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run("--budget", "1", "--out", str(out), "--only", "mlp,corpus", timeout=300)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    st = json.loads(out.read_text())["stages"]
    assert st["mlp"]["status"] == st["corpus"]["status"] == "skipped"
    assert "budget" in st["mlp"]["note"] and "transformer" not in st
