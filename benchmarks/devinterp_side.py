"""The devinterp (PyTorch) side of the side-by-side LLC benchmarks. Runs ONLY inside the benchmark
venv (``.venv-bench``: torch 2.13.0 CPU + devinterp 1.3.2), as a subprocess of `benchmarks/run.py`:

    .venv-bench/bin/python benchmarks/devinterp_side.py CASES.npz OUT.json

``CASES.npz`` holds ``spec`` (a JSON list of cases) and, per case ``name``, the arrays ``name/x``,
``name/y`` (the very data the susc side sampled) and, for RRR, the trained ``name/A`` [H, M] and
``name/B`` [N, H] (the same w*). Each case runs devinterp 1.3.2's own test recipe
(``tests/slt/sampler_accuracy_test.py`` / ``rrr_test.py``): ``SGLD`` with ``lr`` = ε, ``nbeta`` = nβ,
``localization`` = γ, a full-batch shuffled ``DataLoader``, ``init_loss`` from
``get_init_loss_multi_batch(loader, num_chains, ...)`` and `estimate_learning_coeff_with_summary`.

devinterp's conventions (anchors.md §1.4–1.5): the step is w ← w − (ε/2)[nβ∇L_B + γ(w − w0)] + √ε ξ,
the same as susc; λ̂ per chain = nβ(mean of the draw losses − init_loss); draws only, burn-in
excluded (v1); ``llc/std`` is the spread over chains. Chains run one after another (``cores=1``).
"""
from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np


def _model(case, torch):
    from devinterp.test_utils import Polynomial, ReducedRankRegressor

    if case["kind"] == "poly":
        return Polynomial(list(case["powers"]))
    M, H, N = case["mhn"]
    model = ReducedRankRegressor(M, H, N)
    return model


def run_case(case: dict, arrays, torch) -> dict:
    from torch.utils.data import DataLoader, TensorDataset
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from devinterp.utils import evaluate_mse, get_init_loss_multi_batch

    name = case["name"]
    x = torch.tensor(arrays[f"{name}/x"], dtype=torch.float32)
    y = torch.tensor(arrays[f"{name}/y"], dtype=torch.float32)
    torch.manual_seed(case["seed"])
    model = _model(case, torch)
    if case["kind"] == "rrr":  # the same trained w* as the susc side
        with torch.no_grad():
            model.fc1.weight.copy_(torch.tensor(arrays[f"{name}/A"]))
            model.fc2.weight.copy_(torch.tensor(arrays[f"{name}/B"]))
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x), shuffle=True)
    C, D = case["chains"], case["draws"]
    c0, t0 = time.process_time(), time.perf_counter()
    init_loss = get_init_loss_multi_batch(loader, C, model, evaluate_mse, device="cpu")
    t1 = time.perf_counter()
    out = estimate_learning_coeff_with_summary(
        model, loader, evaluate=evaluate_mse, sampling_method=SGLD,
        optimizer_kwargs=dict(lr=case["lr"], nbeta=case["nbeta"], localization=case["gamma"]),
        num_chains=C, num_draws=D, num_burnin_steps=0, num_steps_bw_draws=1, init_loss=init_loss,
        cores=1, seed=case["seed"], device="cpu", verbose=False)
    t2, c2 = time.perf_counter(), time.process_time()
    per_chain = [float(np.mean(out[f"llc-chain/{c}"])) if np.ndim(out[f"llc-chain/{c}"]) else
                 float(out[f"llc-chain/{c}"]) for c in range(C) if f"llc-chain/{c}" in out]
    return {"name": name, "llc_mean": float(out["llc/mean"]), "llc_std": float(out["llc/std"]),
            "llc_per_chain": per_chain, "init_loss": float(init_loss), "chains": C, "draws": D,
            "wall_s": t2 - t0, "cpu_s": c2 - c0, "sampling_s": t2 - t1, "init_loss_s": t1 - t0,
            "steps_per_s_total": C * D / (t2 - t1), "steps_per_s_per_chain": C * D / (t2 - t1) / C}


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import torch
    import devinterp

    warnings.filterwarnings("ignore")  # SGLD deprecation and nbeta notices, once per chain
    arrays = np.load(argv[0])
    spec = json.loads(str(arrays["spec"]))
    results = []
    for case in spec:
        r = run_case(case, arrays, torch)
        print(f"[devinterp] {r['name']}: {r['llc_mean']:.3f} ± {r['llc_std']:.3f} in {r['wall_s']:.1f} s "
              f"({r['steps_per_s_total']:.0f} steps/s)", file=sys.stderr, flush=True)
        results.append(r)
    import importlib.metadata as md
    meta = {"devinterp": md.version("devinterp"), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "python": sys.version.split()[0], "peak_rss_mb": _peak_rss_mb()}
    with open(argv[1], "w") as f:
        json.dump({"versions": meta, "cases": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
