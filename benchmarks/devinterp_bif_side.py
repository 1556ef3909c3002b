"""The devinterp 2.0.1 side of the side-by-side BIF benchmark. Runs ONLY inside the second benchmark
venv (``.venv-bench2``: torch 2.13.0 CPU + devinterp 2.0.1), as a subprocess of `benchmarks/run.py`
(part ``bif``, driven by `bench_bif.py`):

    .venv-bench2/bin/python benchmarks/devinterp_bif_side.py CASE.npz OUT.npz

``CASE.npz`` holds ``spec`` (JSON: mhn, lr, nbeta, gamma, chains, draws; ``threads``, a list of torch
thread counts, null = torch's default; ``repeats`` calls per thread count) and the susc side's
data ``x`` [n, M], ``y`` [n, N] and trained w* ``A`` [H, M], ``B`` [N, H]. ``OUT.npz`` gets ``meta``
(JSON: versions, torch's default thread count, and per ``bif()`` call its threads, wall and CPU
seconds and the 1-min load average) and, from the last call,
``influences`` [n, n] (devinterp's +Pearson correlation, rows/columns mapped back to the sample
order of ``x``) and ``losses`` [C, D, n] (the per-sample losses it recorded at every draw, same order).

devinterp 2.0.1's ``bif()`` is language-model only (anchors.md §1.3, §B6): the dataset is a
``datasets.Dataset`` of ``input_ids``; here row i is ``[i, 0]`` (sequences need length ≥ 2) and
``loss_fn(model, input_ids)`` looks the features up by ``input_ids[:, 0]`` and returns the per-sample
loss, mean over outputs of (y − BAx)² (= susc's RRR loss), shape (batch, 1). Settings: ``lr`` = ε,
``n_beta`` = nβ, ``localization`` = γ, ``batch_size`` = n (full batch), the training set as the one
observable with ``batches_per_draw`` = 1 (all n rows observed at every draw; the default 3 would ask
for 3n rows), ``correlation_method="sequence"`` (an n × n matrix; the default "token" gives
n × n × T × T in 32 × 32 blocks), a fresh ``output_path`` per call (an existing one is silently reused
as a cache). Everything else is devinterp's default: ``sampling_method="sgmcmc_sgld"``, +correlation
(not covariance), "stack" over chains, no burn-in, one step per draw, 32 init-loss batches, init_seed
100. tqdm bars are off (``TQDM_DISABLE=1``, set by the caller).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    t_imp = time.perf_counter()
    import torch
    from datasets import Dataset
    from devinterp.slt.bif import bif
    import_s = time.perf_counter() - t_imp
    import xarray as xr

    warnings.filterwarnings("ignore")
    arrays = np.load(argv[0])
    spec = json.loads(str(arrays["spec"]))
    M, H, N = spec["mhn"]
    x = torch.tensor(arrays["x"], dtype=torch.float32)
    y = torch.tensor(arrays["y"], dtype=torch.float32)
    n = len(x)

    class ReducedRankRegressor(torch.nn.Module):  # devinterp 1.3.2's test_utils model (not in 2.0.1)
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(M, H, bias=False)
            self.fc2 = torch.nn.Linear(H, N, bias=False)

        def forward(self, x):
            return self.fc2(self.fc1(x))

    model = ReducedRankRegressor()
    with torch.no_grad():  # the susc side's trained w*
        model.fc1.weight.copy_(torch.tensor(arrays["A"]))
        model.fc2.weight.copy_(torch.tensor(arrays["B"]))

    def loss_fn(model, input_ids):
        idx = input_ids[:, 0]
        return ((model(x[idx]) - y[idx]) ** 2).mean(dim=-1, keepdim=True)

    ids = np.stack([np.arange(n), np.zeros(n, dtype=np.int64)], axis=1)
    ds = Dataset.from_dict({"input_ids": ids.tolist()}).with_format("torch")

    default_threads = torch.get_num_threads()
    runs = [(th, rep) for th in spec.get("threads", [None]) for rep in range(spec["repeats"])]
    calls = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (th, rep) in enumerate(runs):
            torch.set_num_threads(default_threads if th is None else int(th))
            out_path = Path(tmp) / f"samples-{k}.zarr"
            load = os.getloadavg()[0]
            c0, t0 = time.process_time(), time.perf_counter()
            res = bif(model, ds, {"train": (ds, 1)}, lr=spec["lr"], n_beta=spec["nbeta"],
                      localization=spec["gamma"], num_chains=spec["chains"], num_draws=spec["draws"],
                      batch_size=n, correlation_method="sequence", loss_fn=loss_fn,
                      output_path=str(out_path), device="cpu")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            calls.append({"threads_requested": th, "torch_threads": torch.get_num_threads(), "repeat": rep,
                          "wall_s": wall, "cpu_s": cpu, "load_average_1min": load})
            print(f"[devinterp 2.0.1] bif() call {k + 1} ({torch.get_num_threads()} torch threads): "
                  f"{wall:.2f} s wall, {cpu:.2f} s CPU",
                  file=sys.stderr, flush=True)
        # Map back to the order of x: devinterp's observable holds the rows in a seeded shuffle.
        order = np.asarray(res["input_ids"].values)[:, 0]
        infl = np.asarray(res["influences"].values, np.float64)
        back = np.empty((n, n))
        back[np.ix_(order, order)] = infl
        tree = xr.open_datatree(str(out_path), engine="zarr", consolidated=False)
        raw = np.asarray(tree.dataset["loss_train"].values)[..., 0]          # [C, D, n] in `order`
        losses = np.empty_like(raw)
        losses[:, :, order] = raw
    import importlib.metadata as md
    import resource
    meta = {"versions": {"devinterp": md.version("devinterp"), "torch": torch.__version__,
                         "torch_threads": default_threads, "numpy": np.__version__,
                         "datasets": md.version("datasets"), "xarray": md.version("xarray"),
                         "zarr": md.version("zarr"), "python": sys.version.split()[0]},
            "import_s": import_s, "calls": calls, "influences_shape": list(infl.shape),
            "settings": {"lr": spec["lr"], "n_beta": spec["nbeta"], "localization": spec["gamma"],
                         "num_chains": spec["chains"], "num_draws": spec["draws"], "batch_size": n,
                         "observables": "{'train': (dataset, batches_per_draw=1)}",
                         "correlation_method": "sequence", "compute_covariance": False,
                         "reduce_chain_dimension_method": "stack", "sampling_method": "sgmcmc_sgld",
                         "num_burnin_steps": 0, "num_init_loss_batches": 32, "init_seed": 100,
                         "device": "cpu"},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    np.savez(argv[1], meta=json.dumps(meta), influences=back, losses=losses)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
