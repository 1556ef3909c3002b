r"""The ``transformer-patterning`` experiment: cached stages over `circuit_patterning`.

Stages (each kept in ``work/`` and reused by a rerun): the reference run of the first seed to
``early_step`` (w_e); the per-sequence susceptibility χ̂ at w_e with the sequence arms' weights and
predicted shifts dμ_pred = β χ̂ (ρ − 1) (β = nβ/n); their resampled posterior shifts; the ε check;
the class-level susceptibility χ̄_c with the class arms (`circuit_patterning_classes`); then one
retraining per (seed, arm) and per (seed, null reweighting). Arrays
(``data/results/transformer-patterning/<profile>/arrays.npz``):

``arm_names`` [A], ``seeds`` [S], ``formation_step`` [S, A] (inf: not formed by the last step),
``threshold`` [S], ``dmu_predicted`` / ``dmu_predicted_se`` / ``dmu_resampled`` /
``dmu_resampled_se`` [A], ``dmu_realized`` [S, A] (φ(arm) − φ(baseline) at ``early_step``),
``readout_steps`` [R], ``prefix_matching_max`` / ``induction_loss`` [S, A, R],
``null_formation_step`` [S, N], ``null_prefix_matching_max`` / ``null_induction_loss`` [S, N, R],
``chi`` / ``chi_se`` / ``induction_fraction`` [n], ``weights`` [sequence arms, n],
``max_change`` [sequence arms], ``weight_rms`` [A] (RMS of ρ − 1 over target tokens),
``class_names`` / ``class_chi`` / ``class_chi_se`` / ``class_share`` [P], ``class_weights``
[class arms, P], ``eps_check`` and ``eps_{predicted,resampled}{,_se}`` [E]; with
``resample_arms``, ``resample_arm_names`` [Ar] and ``resample_formation_step`` [S, Ar],
``resample_prefix_matching_max`` / ``resample_induction_loss`` [S, Ar, R]: the same weights
realized by drawing the minibatches ∝ ρ (unit loss weights), thresholds of the weighted baseline.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..data import PATTERNS
from ..models.transformer import init_params
from . import common, formation, register
from .circuit_patterning import (PatterningConfig, arm_weights, early_susceptibility, null_weights,
                                 predicted_shifts, resampled_shifts, step_size_check, synthetic_config,
                                 train_arm)
from .circuit_patterning_classes import class_arm_weights, class_susceptibility
from .transformer import make_data, model_config

__all__ = ["run"]


def _threshold(pm_max_base) -> float:
    """Midway between the baseline's largest prefix-matching score at the start and at the end."""
    return 0.5 * (float(pm_max_base[0]) + float(pm_max_base[-1]))


@register("transformer-patterning", "transformer-patterning",
          "reweight the training data along the susceptibility of the in-context loss; retrain; "
          "time the induction circuit's formation against baseline and random-weight arms")
def run(cfg: PatterningConfig, work_dir, *, progress: bool = True):
    t0 = time.perf_counter()
    work = Path(work_dir)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    mcfg = model_config(synthetic_config(cfg))
    tr, _ = make_data(synthetic_config(cfg))
    tokens = np.asarray(tr["tokens"])
    rep = jnp.asarray(formation.repeated_sequences(jax.random.key(7), cfg.repeat_sequences,
                                                   cfg.seq_len // 2, cfg.vocab_size, low=19))
    timings = {}

    def arm_run(seed, name, rho, **kw):
        return common.cached_stage(work / "runs" / f"seed{seed}-{name}.npz",
                                   lambda: train_arm(cfg, seed, rho, tokens, rep, **kw))

    t = time.perf_counter()
    ref = arm_run(cfg.seeds[0], "baseline", np.ones(len(tokens)), keep_step=cfg.early_step)
    unravel = ravel_pytree(init_params(jax.random.key(0), mcfg))[1]
    w_e = unravel(jnp.asarray(ref["params_at"]))
    timings["reference_s"] = time.perf_counter() - t

    t = time.perf_counter()
    def weights_stage():
        sus = early_susceptibility(cfg, w_e, tokens, rep, progress=progress)
        names, rhos, sizes = arm_weights(cfg, sus["chi"])
        pred, pred_se = predicted_shifts(cfg, sus, rhos)
        return {"chi": sus["chi"], "chi_se": sus["chi_se"], "phi_mean": sus["phi_mean"],
                "phi_se": sus["phi_se"], "arm_names": np.array(names), "weights": rhos,
                "max_change": sizes, "dmu_predicted": pred, "dmu_predicted_se": pred_se}
    ws = common.cached_stage(work / "weights.npz", weights_stage)
    timings["susceptibility_s"] = time.perf_counter() - t
    names, rhos = [str(a) for a in ws["arm_names"]], ws["weights"]

    t = time.perf_counter()
    rs = common.cached_stage(work / "resampled.npz", lambda: dict(zip(
        ("value", "se"), resampled_shifts(cfg, w_e, tokens, rep, rhos, progress=progress))))
    timings["resample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    acc = rhos[names.index("accelerate")]
    eps = [common.cached_stage(work / f"eps{e:g}.npz", lambda e=e: step_size_check(
        cfg, w_e, tokens, rep, acc, e, num_draws=cfg.eps_check_draws, progress=progress))
        for e in cfg.eps_check]
    timings["eps_check_s"] = time.perf_counter() - t

    labels = np.asarray(tr["labels"])
    P = len(PATTERNS)
    train_rho = list(rhos)
    pred, pred_se = ws["dmu_predicted"], ws["dmu_predicted_se"]
    rsm, rsm_se = rs["value"], rs["se"]
    rms = [float(np.sqrt(np.mean((r - 1) ** 2))) for r in rhos]
    cls = {}
    if cfg.class_arms:
        t = time.perf_counter()

        def class_stage():
            sus = class_susceptibility(cfg, w_e, tokens, labels, rep, P, num_draws=cfg.class_draws,
                                       progress=progress)
            cnames, crho = class_arm_weights(cfg, sus["chi"], sus["q"], labels)
            cp_, cp_se = predicted_shifts(cfg, sus, crho, shares=sus["q"])
            cr, cr_se = resampled_shifts(cfg, w_e, tokens, rep, crho[:, labels], progress=progress)
            return {"names": np.array(cnames), "rho": crho, "chi": sus["chi"], "chi_se": sus["chi_se"],
                    "q": sus["q"], "pred": cp_, "pred_se": cp_se, "rs": cr, "rs_se": cr_se}
        cls = common.cached_stage(work / "classes.npz", class_stage)
        timings["class_s"] = time.perf_counter() - t
        names += [str(a) for a in cls["names"]]
        train_rho += [r[labels] for r in cls["rho"]]
        pred, pred_se = np.r_[pred, cls["pred"]], np.r_[pred_se, cls["pred_se"]]
        rsm, rsm_se = np.r_[rsm, cls["rs"]], np.r_[rsm_se, cls["rs_se"]]
        rms += [float(np.sqrt(np.sum(cls["q"] * (r - 1) ** 2))) for r in cls["rho"]]

    t = time.perf_counter()
    runs = [[ref if (s == cfg.seeds[0] and a == "baseline") else arm_run(s, a, rho)
             for a, rho in zip(names, train_rho)] for s in cfg.seeds]
    nulls = null_weights(cfg, acc)
    null_runs = [[arm_run(s, f"null{k}", rho) for k, rho in enumerate(nulls)] for s in cfg.seeds]
    rs_names = list(cfg.resample_arms)
    rs_runs = [[arm_run(s, f"{a}-resampled", np.ones(len(tokens)) if a == "baseline"
                        else rhos[names.index(a)], resample=True) for a in rs_names] for s in cfg.seeds]
    timings["retrain_s"] = time.perf_counter() - t
    steps = runs[0][0]["steps"]
    e = int(np.searchsorted(steps, cfg.early_step))
    pm_max = np.array([[r["prefix_matching"].max(axis=1) for r in row] for row in runs])   # [S, A, R]
    ind = np.array([[r["induction_loss"] for r in row] for row in runs])                   # [S, A, R]
    thresholds = np.array([_threshold(pm[0]) for pm in pm_max])
    formed = np.array([[formation.crossing_step(steps, pm, th) for pm in row]
                       for row, th in zip(pm_max, thresholds)])
    null_pm = np.array([[r["prefix_matching"].max(axis=1) for r in row] for row in null_runs])
    null_formed = np.array([[formation.crossing_step(steps, pm, th) for pm in row]
                            for row, th in zip(null_pm, thresholds)]).reshape(len(cfg.seeds), -1)
    # fraction of each training sequence's targets that are planted induction tokens
    ind_frac = (labels == 1).mean(axis=1)
    arrays = {"arm_names": np.array(names), "seeds": np.array(cfg.seeds),
              "formation_step": formed, "threshold": thresholds,
              "dmu_predicted": pred, "dmu_predicted_se": pred_se,
              "dmu_resampled": rsm, "dmu_resampled_se": rsm_se,
              "dmu_realized": ind[:, :, e] - ind[:, :1, e], "readout_steps": steps,
              "prefix_matching_max": pm_max, "induction_loss": ind,
              "null_formation_step": null_formed,
              "null_prefix_matching_max": null_pm.reshape(len(cfg.seeds), -1, len(steps)),
              "null_induction_loss": np.array([[r["induction_loss"] for r in row]
                                               for row in null_runs]).reshape(len(cfg.seeds), -1, len(steps)),
              "chi": ws["chi"], "chi_se": ws["chi_se"], "weights": rhos.astype(np.float32),
              "max_change": ws["max_change"], "weight_rms": np.array(rms),
              "induction_fraction": ind_frac, "early_step": np.array(cfg.early_step),
              "eps_check": np.array(cfg.eps_check, float),
              **{f"eps_{k}": np.array([float(x[k]) for x in eps], float)
                 for k in ("predicted", "predicted_se", "resampled", "resampled_se")}}
    if rs_names:
        rs_pm = np.array([[r["prefix_matching"].max(axis=1) for r in row] for row in rs_runs])
        arrays.update({"resample_arm_names": np.array(rs_names), "resample_prefix_matching_max": rs_pm,
                       "resample_induction_loss": np.array([[r["induction_loss"] for r in row]
                                                            for row in rs_runs]),
                       "resample_formation_step": np.array(
                           [[formation.crossing_step(steps, pm, th) for pm in row]
                            for row, th in zip(rs_pm, thresholds)])})
    if cls:
        arrays.update({"class_names": np.array([PATTERNS[c] for c in range(P)]),
                       "class_chi": cls["chi"], "class_chi_se": cls["chi_se"],
                       "class_share": cls["q"], "class_weights": cls["rho"]})
    timings["total_s"] = time.perf_counter() - t0
    summary = {"phi_mean": float(ws["phi_mean"]), "phi_se": float(ws["phi_se"]),
               "formation_step": {a: formed[:, k].tolist() for k, a in enumerate(names)},
               "null_formation_step": null_formed.tolist(),
               "corr_chi_induction_fraction": float(np.corrcoef(ws["chi"], ind_frac)[0, 1]),
               "timings": timings}
    return arrays, summary
