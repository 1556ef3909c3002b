r"""The ``corpus-susceptibility`` experiment: its sampling stages, each cached so that a fault or a
stage deadline loses no finished stage, and the assembly of the shipped arrays.

Stages (`susc.experiments.corpus` has the config, data, probe set and model): an ε sweep of the
unrestricted chain's loss traces; ``num_seeds`` sampler seeds of per-token structural
susceptibilities χ^C_xy = −Cov[φ_C, ℓ_xy − L] (full centring, theory.md §1.7); the nβ = 0 control;
the development snapshots; the finite-difference oracle of `susc.experiments.response`. Sampler:
SGLD w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ on p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..data import LABELS
from ..data.subsets import SUBSETS
from . import common, register, response
from .corpus import CorpusConfig, load_model, model_config, probe_windows

__all__ = ["run_corpus_susceptibility"]


def _sweep(cfg, params, probe, work: Path, progress: bool) -> np.ndarray:
    """Loss traces ``[len(sweep_steps), chains, sweep_draws]`` of the unrestricted chain per ε."""
    from .. import sample, sgld
    from ..models.transformer import make_loss_fn
    from ..sampling.observables import observable
    loss_fn = make_loss_fn(model_config(cfg))
    out = [np.zeros((0, cfg.num_chains, cfg.sweep_draws))]
    for i, eps in enumerate(cfg.sweep_steps):
        r = sample(jax.random.key(10_000 + i), loss_fn, params, {"tokens": jnp.asarray(probe)},
                   sampler=sgld(eps), nbeta=cfg.nbeta, gamma=cfg.gamma, num_chains=cfg.num_chains,
                   num_draws=cfg.sweep_draws, batch_size=cfg.sample_batch, store_draws=False,
                   observables={"probe": observable(loss_fn, {"tokens": jnp.asarray(probe)},
                                                    chunk_size=cfg.probe_chunk)},
                   draw_loss="observable:probe", num_batches=1,
                   checkpoint_dir=work / f"sweep{i}", checkpoint_every=cfg.checkpoint_every,
                   progress=progress)
        out.append(np.asarray(r.loss)[None])
    return np.concatenate(out)


def _one_run(key, cfg, params, probe, work: Path, *, nbeta=None, progress=False) -> dict:
    """One seed's `common.head_susceptibilities` on the probe windows (posterior data = probes)."""
    h = common.head_susceptibilities(
        key, cfg if nbeta is None else dataclasses.replace(cfg, nbeta=nbeta), params,
        model_config(cfg), {"tokens": jnp.asarray(probe)}, probe, work,
        probe_chunk=cfg.probe_chunk, progress=progress,
        sample_kwargs=dict(num_burnin=cfg.num_burnin, draw_loss="observable:probe"))
    return {**common.chi_arrays(h),
            "restricted_loss": np.asarray(h.restricted.loss),          # [K, C, D] (L on the probes)
            "full_loss": np.asarray(h.full.loss), "init_loss": np.float64(h.restricted.init_loss),
            "seconds": np.float64(h.timings["sampling_s"]),
            "restricted_s": np.float64(h.timings["restricted_s"]), "full_s": np.float64(h.timings["full_s"])}


@register("corpus-susceptibility", "corpus",
          "per-token structural susceptibilities of every head of a stdlib language model: seeds, "
          "nβ = 0 control, development snapshots, heads × classes/subsets, PCA")
def run_corpus_susceptibility(cfg: CorpusConfig, work_dir, *, progress: bool = True):
    from ..stats.covariance import ess, rhat
    from . import circuits
    work = Path(work_dir)
    t0 = time.perf_counter()
    params, record, snaps = load_model(cfg, work, progress=progress)
    t_model = time.perf_counter() - t0
    mcfg = model_config(cfg)
    pw = probe_windows(cfg)
    probe = pw["tokens"]
    timings = {"model_s": t_model}
    t = time.perf_counter()
    sweep = common.cached_stage(work / "sweep.npz", lambda: {"loss": _sweep(cfg, params, probe, work, progress)})
    timings["sweep_s"] = time.perf_counter() - t
    seeds = []
    for s in range(cfg.num_seeds):
        key = jax.random.key(cfg.sample_seed + s)
        seeds.append(common.cached_stage(work / f"seed{s}.npz",
                             lambda: _one_run(key, cfg, params, probe, work / f"seed{s}", progress=progress)))
    control = None
    if cfg.control:
        control = common.cached_stage(work / "control.npz", lambda: _one_run(
            jax.random.key(cfg.sample_seed), cfg, params, probe, work / "control", nbeta=0.0,
            progress=progress))
    dev = {}
    for step, p in sorted(snaps.items()):
        dcfg = dataclasses.replace(cfg, num_draws=cfg.develop_draws,
                                   num_batches=max(2, cfg.num_batches * cfg.develop_draws // cfg.num_draws))
        dev[step] = common.cached_stage(work / f"develop{step}.npz", lambda: _one_run(
            jax.random.key(cfg.sample_seed), dcfg, p, probe, work / f"develop{step}", progress=progress))
    resp = None
    if cfg.response_subsets:
        ids = [SUBSETS.index(n) for n in cfg.response_subsets]
        resp = common.cached_stage(work / "response.npz", lambda: response.restricted_response(
            jax.random.key(cfg.sample_seed + 77), cfg, params, mcfg, probe, pw["subset"], ids,
            cfg.response_h, work / "response", num_draws=cfg.response_draws,
            num_burnin=cfg.response_burnin, progress=progress))
    # diagnostics per head: R̂ and ESS of φ_C's loss trace over all seeds' chains
    traces = np.concatenate([r["restricted_loss"] for r in seeds], axis=1)   # [K, S·C, D]
    names = circuits.head_names(mcfg)
    meta = record["metadata"]
    flat = lambda a: a.reshape(-1)                                            # noqa: E731
    induction = flat(pw["token_class"]) == [k for k, v in LABELS.items() if v == "induction"][0]
    abl = circuits.ablation_increase(params, probe, mcfg)
    abl_ind = circuits.ablation_increase(params, probe, mcfg, mask=induction.reshape(pw["token_class"].shape))
    arrays = {
        "Z": np.stack([r["Z"] for r in seeds]), "chi": np.stack([r["chi"] for r in seeds]),
        "chi_se": np.stack([r["chi_se"] for r in seeds]),
        "restricted_loss": np.stack([r["restricted_loss"] for r in seeds]),
        "full_loss": np.stack([r["full_loss"] for r in seeds]),
        "init_loss": np.float64(seeds[0]["init_loss"]),
        "rhat": np.array([rhat(traces[k]) for k in range(len(names))]).reshape(-1),
        "ess": np.array([ess(traces[k]) for k in range(len(names))]).reshape(-1),
        "head_names": np.array(names), "token_class": flat(pw["token_class"]).astype(np.int32),
        "class_names": np.array([LABELS[k] for k in sorted(LABELS)]),
        "subset": flat(pw["subset"]).astype(np.int32), "subset_names": np.array(SUBSETS),
        "probe_tokens": probe, "probe_start": pw["start"], "is_induction": induction,
        "ablation": abl, "ablation_induction": abl_ind,
        "sweep_steps": np.array(cfg.sweep_steps), "sweep_loss": sweep["loss"],
        "train_step": np.asarray(meta["curve_step"]), "train_loss": np.asarray(meta["curve_loss"]),
        "eval_step": np.asarray(meta["eval_step"]), "eval_loss": np.asarray(meta["eval_loss"]),
        "prefix_matching": np.asarray(meta["prefix_matching"]),
        "induction_loss": np.asarray(meta["induction_loss"]),
        "develop_steps": np.array(sorted(dev), dtype=np.int64).reshape(-1),
    }
    if control is not None:
        arrays["Z_control"] = control["Z"]
        arrays["chi_control"] = control["chi"]
        arrays["chi_control_se"] = control["chi_se"]
    if resp is not None:
        arrays.update({"response_subsets": np.array(cfg.response_subsets),
                       "response_h": np.float64(cfg.response_h),
                       "chi_restricted": resp["chi_tokens"],
                       **{f"response_{k}": resp[k] for k in ("fd", "fd_se", "chi", "chi_se",
                                                             "phi_mean", "delta_mean")}})
        timings["response_s"] = float(resp["seconds"])
    if dev:
        arrays["Z_develop"] = np.stack([dev[s]["Z"] for s in sorted(dev)])
    # the [tokens × heads] matrices in float32: 7 significant digits are far below their
    # Monte-Carlo error, and the shipped file is half the size
    for k in ("Z", "chi", "chi_se", "Z_control", "chi_control", "chi_control_se", "Z_develop"):
        if k in arrays:
            arrays[k] = np.asarray(arrays[k], np.float32)
    timings.update({f"seed{s}_s": float(r["seconds"]) for s, r in enumerate(seeds)})
    # summed over seeds (the GPU benchmark reads these; cached runs from before lack them)
    for part in ("restricted_s", "full_s"):       # absent from stages cached by older code
        total = float(sum(r.get(part, np.nan) for r in seeds))
        if np.isfinite(total):
            timings[part] = total
    if control is not None:
        timings["control_s"] = float(control["seconds"])
    timings.update({f"develop{s}_s": float(r["seconds"]) for s, r in dev.items()})
    summary = {"num_probe_tokens": int(probe.shape[0] * cfg.seq_len),
               "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
               "init_loss": float(seeds[0]["init_loss"]), "train_wall_s": meta["train_wall_s"],
               "develop_steps": [int(s) for s in sorted(dev)],
               "rhat_range": [float(arrays["rhat"].min()), float(arrays["rhat"].max())],
               "checkpoint_sha256": record["sha256"], "timings": timings}
    return arrays, summary
