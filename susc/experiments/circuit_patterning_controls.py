r"""Induction timing: a circuit-specific coordinate and the controls that say what data weights can do.

The shipped arms of ``transformer-patterning`` target the in-context loss φ, a readout that any
mechanism lowering second-half loss can move; the formation step did not follow them beyond what
random weights do. This experiment asks three sharper questions of the same model, data, seeds
and formation readout, all retrained for many seeds at once (`train_arm_seeds`):

1. *A circuit-specific coordinate.* μ(w) = the mean prefix-matching score of the last layer's
   heads on repeated random word sequences (where induction heads live in a two-layer
   attention-only model). At w_e its class susceptibility χ̄_c = −Cov[μ, L_c − L_n] (localized
   posterior p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w_e‖²}, SGLD w ← w − (ε/2)[nβ∇L_B + γ(w − w_e)]
   + √ε ξ) gives min-norm class weights (`circuit_patterning_classes.class_arm_weights`):
   ``pm_accelerate`` asks for dμ > 0, ``pm_delay`` for dμ < 0, ``pm_random`` is a random class
   direction of the same token-space size; predicted dμ = nβ Σ_c q_c (ρ_c − 1) χ̄_c.
2. *Hand-made controls* for the classes `HAND_CLASSES`: ``<class>_up`` weights every target of
   the class 2 and the rest (1 − 2q)/(1 − q) (mass Σ_c q_c ρ_c = 1); ``<class>_off`` weights it 0
   and the rest 1/(1 − q). For the planted induction targets these are positive controls: if
   they do not move formation, few data weights will; for ``bracket_close``, μ's largest lever,
   they separate that one class's effect from the rest of the ``pm`` weights.
3. *Sensitivity.* ``tiny_random``: a per-sequence random reweighting with ``tiny_scale`` times the
   RMS change of the shipped ``accelerate`` weights. Its prediction is ≈ 0 on any coordinate; if
   it still moves formation by as much as the full-size arms, formation timing is not a smooth
   function of the data at this size.

The formation step uses one threshold on the best prefix-matching score for every seed (the mean
of the shipped first seeds' midpoints, as chapter 15's "More seeds"). Each arm is saved to
``work/`` when done, so a rerun resumes.

The weights stage also checks the class arms' prediction against the reweighted posterior at
w_e (`resampled_shifts` with φ = μ), before any retraining.

    python -m susc.experiments.circuit_patterning_controls --seeds 0:8 [--tiny] [--out DIR]

Arrays: ``arm_names`` [A], ``seeds`` [S], ``formation_step`` [S, A] (inf: not formed),
``threshold`` (scalar), ``readout_steps`` [R], ``prefix_matching_max`` / ``coordinate`` (μ) /
``induction_loss`` [S, A, R], ``dmu_predicted`` / ``dmu_predicted_se`` [A] (μ; NaN where no
susceptibility applies), ``dmu_resampled`` / ``dmu_resampled_se`` [A] (⟨μ⟩_ρ − ⟨μ⟩_1 of the
reweighted posterior at w_e, common random numbers), ``dmu_realized`` [S, A]
(μ(arm) − μ(baseline) at ``early_step``),
``weight_rms`` [A] (RMS of ρ − 1 over target tokens), ``class_names`` / ``class_chi`` /
``class_chi_se`` / ``class_share`` [P], ``class_weights`` [`CLASS_ARMS`, P].
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import config as _config
from ..data import PATTERNS
from ..estimators import patterning
from ..models.transformer import init_params
from . import common, formation, save_results
from .circuit_patterning import (model_config, predicted_shifts, resampled_shifts, synthetic_config,
                                 train_arm)
from .circuit_patterning_classes import class_arm_weights, class_susceptibility
from .circuit_patterning_seeds import load_shipped, seeds_cli, train_arms_cached
from .transformer import make_data

__all__ = ["ARMS", "CLASS_ARMS", "HAND_CLASSES", "last_layer_mean", "last_layer_prefix_matching_fn",
           "hand_class_weights", "control_weights", "arm_rhos", "run_controls"]

#: Classes of the hand-made controls: ``<class>_up`` weights the class 2, ``<class>_off`` 0.
#: bracket_close is the largest lever of μ's class susceptibility at the small profile's w_e.
HAND_CLASSES = ("induction", "bracket_close")
ARMS = ("baseline", "pm_accelerate", "pm_delay", "pm_random", "induction_up", "induction_off",
        "tiny_random", "bracket_close_up", "bracket_close_off")
#: The arms whose weights are constant on planted classes (rows of ``class_weights``).
CLASS_ARMS = tuple(a for a in ARMS if a not in ("baseline", "tiny_random"))


def last_layer_mean(pm, mcfg):
    """Mean over the last layer's heads of per-head scores ``pm`` [..., L·H] (numpy or jax)."""
    return pm.reshape(pm.shape[:-1] + (mcfg.n_layers, mcfg.n_heads))[..., -1, :].mean(axis=-1)


def last_layer_prefix_matching_fn(mcfg, repeat_tokens):
    """μ(params): mean prefix-matching score of the last layer's heads on ``repeat_tokens``."""
    return lambda params: last_layer_mean(
        formation.induction_readouts(params, repeat_tokens, mcfg)["prefix_matching"], mcfg)


def _per_arm(class_values, baseline, tiny) -> np.ndarray:
    """A value per arm of `ARMS` from one per row of ``class_weights`` and the two others."""
    return np.array([baseline if a == "baseline" else tiny if a == "tiny_random"
                     else class_values[CLASS_ARMS.index(a)] for a in ARMS], dtype=float)


def hand_class_weights(q, cls: int, up: float = 2.0) -> np.ndarray:
    """Class weights [P]: class ``cls`` weighted ``up``, every other class (1 − up·q)/(1 − q), so
    that Σ_c q_c ρ_c = 1 (``up = 0`` removes the class from the loss)."""
    q = np.asarray(q, np.float64)
    if not 0 <= up * q[cls] <= 1:
        raise ValueError(f"`up`={up} leaves negative weights for class share {q[cls]:.3f}.")
    rho = np.full(q.shape, (1 - up * q[cls]) / (1 - q[cls]))
    rho[cls] = up
    return rho


def control_weights(cfg, w_e, tokens, labels, repeat_tokens, accelerate, *, num_draws: int,
                    tiny_scale: float, progress: bool = False) -> dict:
    """The arms' weights, as ``class_weights`` [len(CLASS_ARMS), P] and ``tiny_random`` [n] (per
    sequence), the class susceptibility of μ at w_e, and per arm of `ARMS` the predicted dμ
    (NaN for ``tiny_random``) and the RMS weight change over target tokens (see `arm_rhos`)."""
    mcfg = model_config(synthetic_config(cfg))
    P = len(PATTERNS)
    cls = {name: c for c, name in PATTERNS.items()}
    sus = class_susceptibility(cfg, w_e, tokens, labels, repeat_tokens, P, num_draws=num_draws,
                               phi_fn=last_layer_prefix_matching_fn(mcfg, repeat_tokens),
                               progress=progress)
    q = sus["q"]
    # class_arm_weights' first row lowers its coordinate, the second raises it; another key for
    # the random class direction than the shipped random_class arm's
    _, (lower, raise_, rand) = class_arm_weights(
        dataclasses.replace(cfg, sample_seed=cfg.sample_seed + 100), sus["chi"], q, labels)
    rows = {"pm_accelerate": raise_, "pm_delay": lower, "pm_random": rand}
    for c in HAND_CLASSES:
        rows[f"{c}_up"] = hand_class_weights(q, cls[c], 2.0)
        rows[f"{c}_off"] = hand_class_weights(q, cls[c], 0.0)
    cw = np.stack([rows[a] for a in CLASS_ARMS])
    pred, pred_se = predicted_shifts(cfg, sus, cw, shares=q)
    acc = np.asarray(accelerate, np.float64)
    tiny = patterning.random_reweighting(jax.random.key(cfg.sample_seed + 60),
                                         1 + tiny_scale * (acc - 1))
    return {"class_weights": cw, "tiny_random": tiny,
            "weight_rms": _per_arm(np.sqrt((cw - 1) ** 2 @ q), 0.0, np.sqrt(np.mean((tiny - 1) ** 2))),
            "class_chi": sus["chi"], "class_chi_se": sus["chi_se"], "class_share": q,
            "dmu_predicted": _per_arm(pred, 0.0, np.nan),
            "dmu_predicted_se": _per_arm(pred_se, 0.0, np.nan)}


def arm_rhos(ws: dict, labels) -> dict:
    """``{arm: ρ}`` in `ARMS` order: per-token [n, T] for the class arms, per-sequence [n] else."""
    labels = np.asarray(labels)
    cw = dict(zip(CLASS_ARMS, ws["class_weights"]))
    return {a: (np.ones(labels.shape[0]) if a == "baseline" else ws["tiny_random"]
                if a == "tiny_random" else cw[a][labels]) for a in ARMS}


def run_controls(profile: str, seeds, out: Path, *, num_draws: int | None = None,
                 tiny_scale: float = 0.05, shipped_root=None, progress: bool = True) -> dict:
    """The weights stage at w_e (seed ``cfg.seeds[0]`` at ``early_step``), then every arm of
    `ARMS` retrained for ``seeds``; arrays + record saved to ``out`` (resuming from
    ``out/work``). ``num_draws`` (per chain) defaults to the config's ``class_draws``."""
    from ..artifacts import provenance
    t0 = time.perf_counter()
    shipped = load_shipped(profile, shipped_root)
    cfg = _config.get_config("transformer-patterning", profile)
    mcfg = model_config(synthetic_config(cfg))
    names = [str(a) for a in shipped.arrays["arm_names"]]
    acc = shipped.arrays["weights"][names.index("accelerate")]
    th = float(np.mean(shipped.arrays["threshold"]))
    tr, _ = make_data(synthetic_config(cfg))
    tokens, labels = np.asarray(tr["tokens"]), np.asarray(tr["labels"])
    rep = jnp.asarray(formation.repeated_sequences(jax.random.key(7), cfg.repeat_sequences,
                                                   cfg.seq_len // 2, cfg.vocab_size, low=19))
    work = Path(out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = time.perf_counter()
    ref = common.cached_stage(work / "reference.npz", lambda: train_arm(
        cfg, cfg.seeds[0], np.ones(len(tokens)), tokens, rep, keep_step=cfg.early_step))
    unravel = ravel_pytree(init_params(jax.random.key(0), mcfg))[1]
    w_e = unravel(jnp.asarray(ref["params_at"]))
    draws = num_draws or cfg.class_draws
    ws = common.cached_stage(work / "weights.npz", lambda: control_weights(
        cfg, w_e, tokens, labels, rep, acc, num_draws=draws, tiny_scale=tiny_scale,
        progress=progress))
    timings["weights_s"] = time.perf_counter() - t
    # check 1 of chapter 15 for μ: the class arms' prediction against the reweighted posterior
    t = time.perf_counter()
    post = common.cached_stage(work / "posterior.npz", lambda: dict(zip(
        ("value", "se"), resampled_shifts(cfg, w_e, tokens, rep, ws["class_weights"][:, labels],
                                          phi_fn=last_layer_prefix_matching_fn(mcfg, rep),
                                          progress=progress))))
    timings["posterior_s"] = time.perf_counter() - t

    res = train_arms_cached(cfg, seeds, arm_rhos(ws, labels), tokens, rep, work, progress=progress,
                            timings=timings)
    steps = res["baseline"]["steps"]
    pm_all = np.stack([res[a]["prefix_matching"] for a in ARMS], 1)               # [S, A, R, L·H]
    pm, mu = pm_all.max(axis=3), last_layer_mean(pm_all, mcfg)                   # [S, A, R]
    e = int(np.searchsorted(steps, cfg.early_step))
    arrays = {"arm_names": np.array(ARMS), "seeds": np.array(list(seeds)),
              "formation_step": np.array([[formation.crossing_step(steps, p, th) for p in row]
                                          for row in pm]),
              "threshold": np.array(th), "readout_steps": steps, "early_step": np.array(cfg.early_step),
              "prefix_matching_max": pm, "coordinate": mu,
              "induction_loss": np.stack([res[a]["induction_loss"] for a in ARMS], 1),
              "dmu_realized": mu[:, :, e] - mu[:, :1, e],
              "dmu_resampled": _per_arm(post["value"], 0.0, np.nan),
              "dmu_resampled_se": _per_arm(post["se"], 0.0, np.nan),
              "class_names": np.array([PATTERNS[c] for c in range(len(PATTERNS))]),
              **{k: np.asarray(ws[k]) for k in ("dmu_predicted", "dmu_predicted_se", "weight_rms",
                                                "class_chi", "class_chi_se", "class_share",
                                                "class_weights")}}
    timings["total_s"] = time.perf_counter() - t0
    record = {"experiment": "transformer-patterning-controls", "profile": profile,
              "description": "a circuit-specific coordinate (last-layer prefix matching), "
                             "hand-designed induction-class controls and a tiny random "
                             "reweighting, retrained over many seeds",
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "config": {"seeds": [int(s) for s in seeds], "arms": list(ARMS), "class_draws": draws,
                         "tiny_scale": tiny_scale, "num_chains": cfg.num_chains,
                         "step_size": cfg.step_size, "nbeta": cfg.nbeta, "gamma": cfg.gamma,
                         "max_change": cfg.max_change,
                         "weights_sha256": shipped.record["sha256"]},
              "timings": timings, "provenance": provenance()}
    save_results(Path(out), arrays, record)
    return arrays


def _main(argv=None):
    a, profile, seeds, out = seeds_cli(__doc__, argv, default="0:8", tiny="0:2", suffix="controls",
                                       extra=[("--draws", {"type": int, "default": None,
                                                           "help": "draws per chain (default class_draws)"})])
    _config.setup()
    arr = run_controls(profile, seeds, out, num_draws=a.draws, shipped_root=a.shipped_root)
    print(dict(zip(arr["arm_names"].tolist(), arr["formation_step"].T.tolist())))


if __name__ == "__main__":
    _main()
