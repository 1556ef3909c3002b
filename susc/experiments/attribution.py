r"""Data attribution on the handwritten digits, scored against retraining (issue 13).

``attribution-lds``
    Train a small classifier w* on n digits (full-batch Adam, weight decay λ), then score q query
    images' losses against n training images by every method of `susc.attribution` and by the BIF
    (`susc.bif`: −Cov[ℓ_i, ℓ_j] under p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}, SGLD
    w ← w − (ε/2)[nβ∇L + γ(w − w*)] + √ε ξ). Ground truth: M models retrained from the same
    initialization on random halves of the training set (`retrained_query_loss`), and
    leave-one-out retraining for ``loo_count`` examples. Each method's hyperparameter (BIF: nβ, γ;
    influence: damping) is chosen on the first half of the queries and its LDS reported on the
    second half, so no method is scored on the queries it was tuned on. Then 5% of the training
    labels are flipped, the model retrained, and each method's self-influence ranks the flipped
    examples (AUC, precision at k).

Score sign (all methods): ``scores[m, i, j]`` is the predicted change of query j's loss from
including training example i; positive = including i raises the loss.
"""
from __future__ import annotations

import dataclasses
import resource
import time

import jax
import numpy as np

from .. import attribution as A
from ..config import register_config
from ..data.digits import flip_labels, split_digits
from ..estimators.influence import bif, influence_matrix
from ..models.classifier import convnet_loss, init_convnet, init_mlp, mlp_loss
from ..samplers import sgld
from ..stats import rhat
from . import register

__all__ = ["AttributionConfig", "run_lds", "METHODS", "NOISE_METHODS"]

METHODS = ("bif", "influence", "projected", "grad_dot", "grad_cos")
NOISE_METHODS = ("bif", "influence", "grad_norm", "loss")


@register_config("attribution-digits", tiny={},
                 small={"hidden": (32,), "n_train": 1000, "n_query": 100, "num_subsets": 200, "train_steps": 2000,
                        "loo_count": 100, "models": ("mlp", "convnet"), "num_draws": 1000})
@dataclasses.dataclass(frozen=True)
class AttributionConfig:
    """Sizes of the digits attribution experiment (class defaults = the ``tiny`` profile)."""

    models: tuple = ("mlp",)             # "mlp": 64-32-10 tanh; "convnet": conv3×3(channels)-pool-dense
    hidden: tuple = (16,)
    channels: int = 4
    n_train: int = 300
    n_query: int = 40                    # first half tunes hyperparameters, second half is scored
    num_subsets: int = 100               # M retrained models for the LDS (first model)
    secondary_subsets: int = 100         # M for the other models (the convnet costs ~4× the MLP)
    fraction: float = 0.5
    other_fractions: tuple = (0.1, 0.25)   # further LDS referees: M subsets of each size
    loo_count: int = 0                   # leave-one-out retrains (the first loo_count examples)
    train_steps: int = 600
    learning_rate: float = 0.01
    weight_decay: float = 1e-3
    data_seed: int = 0
    init_seed: int = 0
    subset_seed: int = 1
    bif_grid: tuple = ((20.0, 10.0), (50.0, 10.0), (145.0, 10.0), (145.0, 30.0))   # (nβ, γ)
    step_scale: float = 0.2              # ε = step_scale / (nβ·λ_max(H) + γ)
    num_chains: int = 4
    num_draws: int = 200
    steps_per_draw: int = 10
    num_burnin: int = 500
    sample_seed: int = 0
    damping_grid: tuple = (1e-4, 1e-3, 1e-2, 1e-1)
    projection_dim: int = 512
    noise_fraction: float = 0.05
    noise_seed: int = 0
    kernel_size: int = 300               # examples in the stored loss kernel Corr[ℓ_i, ℓ_j]


def _model(cfg, name, key):
    if name == "mlp":
        return mlp_loss, init_mlp(key, 64, cfg.hidden, 10)
    if name == "convnet":
        return convnet_loss, init_convnet(key, (8, 8, 1), cfg.channels, 10)
    raise ValueError(f"unknown model {name!r}; use 'mlp' or 'convnet'")


def _first(stacked):
    return jax.tree_util.tree_map(lambda x: x[0], stacked)


def _bif_runs(cfg, loss_fn, w, train, query, lam_max, key):
    """One BIF per (nβ, γ) of the grid: [grid, n, q] scores in β·BIF units, the same from the
    first half of the chains (Monte-Carlo error at half the budget), and loss traces."""
    out, half, traces, secs = [], [], [], []
    n = train["y"].shape[0]
    for nb, g in cfg.bif_grid:
        t = time.perf_counter()
        eps = cfg.step_scale / (nb * lam_max + g)
        b = bif(key, loss_fn, w, train, query, sampler=sgld(eps), nbeta=nb, gamma=g,
                num_chains=cfg.num_chains, num_draws=cfg.num_draws, num_burnin=cfg.num_burnin,
                steps_per_draw=cfg.steps_per_draw, se=False, progress=False)
        secs.append(time.perf_counter() - t)
        out.append(A.bif_scores(b.value, nbeta=nb, n=n))
        obs, c = b.result.observables, max(cfg.num_chains // 2, 1)
        h = influence_matrix(obs["train_losses"][:c], obs["query_losses"][:c], se=False)
        half.append(A.bif_scores(h.value, nbeta=nb, n=n))
        traces.append(np.asarray(b.result.loss))
    return np.stack(out), np.stack(half), np.stack(traces), secs


def _choose(cands, subsets, realized, tune, evaluate):
    """Index of the candidate with the best LDS on the ``tune`` queries, and its eval LDS."""
    tuned = [A.lds(s, subsets, realized, queries=tune).value for s in cands]
    k = int(np.nanargmax(tuned))
    return k, tuned, A.lds(cands[k], subsets, realized, queries=evaluate)


def _cached(path, compute):
    """``compute()``'s dict of arrays, saved to ``path`` once (the retraining stages resume), with
    the seconds it took (``"seconds"``, kept when a later run resumes from the cache)."""
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    out = compute()
    out["seconds"] = np.float64(time.perf_counter() - t0)
    np.savez(path, **out)
    return out


def _referees(cfg, name, loss_fn, p0, w, sp, kw, work_dir, primary):
    """The ground truth: query losses of models retrained on M random subsets (and, for the
    primary model, on subsets of the other fractions and leave-one-out)."""
    n, q = cfg.n_train, cfg.n_query
    retrain = lambda rows: A.query_losses(loss_fn, A.retrain(loss_fn, p0, sp.train, rows, **kw),
                                          sp.query)
    M = cfg.num_subsets if primary else min(cfg.secondary_subsets, cfg.num_subsets)
    subsets = A.random_subsets(n, M, cfg.fraction, seed=cfg.subset_seed)

    def main():
        loo = np.zeros((0, q))
        if cfg.loo_count and primary:
            full = A.query_losses(loss_fn, jax.tree_util.tree_map(lambda x: x[None], w), sp.query)
            loo = full - retrain(~np.eye(cfg.loo_count, n, dtype=bool))
        return {"realized": retrain(subsets), "loo": loo}
    ref = _cached(work_dir / f"retrain-{name}.npz", main)
    seconds = [float(ref.get("seconds", np.nan))]
    other = []
    for k, f in enumerate(cfg.other_fractions if primary else ()):
        sub_f = A.random_subsets(n, cfg.num_subsets, f, seed=cfg.subset_seed + 1 + k)
        got = _cached(work_dir / f"retrain-{name}-fraction{k}.npz",
                      lambda: {"realized": retrain(sub_f)})
        other.append((sub_f, got["realized"]))
        seconds.append(float(got.get("seconds", np.nan)))
    return subsets, ref["realized"], ref["loo"], other, seconds


def _candidates(cfg, loss_fn, w, sp, t):
    """Every method's scores [n, q] at every hyperparameter of its grid (timed into ``t``)."""
    t0 = time.perf_counter()
    G = A.per_example_grads(loss_fn, w, sp.train)
    Gq = A.per_example_grads(loss_fn, w, sp.query)
    t["grads_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    eig = A.hessian_eigen(loss_fn, w, sp.train, weight_decay=cfg.weight_decay)
    t["hessian_s"] = time.perf_counter() - t0
    lam_max = float(eig.eigenvalues[-1])
    bif_c, bif_half, traces, t["bif_s"] = _bif_runs(cfg, loss_fn, w, sp.train, sp.query, lam_max,
                                                   jax.random.key(cfg.sample_seed))
    t0 = time.perf_counter()
    if_c = np.stack([A.classical_influence(G, Gq, eig, damping=d) for d in cfg.damping_grid])
    t["influence_s"] = (time.perf_counter() - t0) / len(cfg.damping_grid)
    t0 = time.perf_counter()
    dim = min(cfg.projection_dim, G.shape[1])
    pr_c = np.stack([A.projected_influence(G, Gq, dim=dim, damping=d) for d in cfg.damping_grid])
    t["projected_s"] = (time.perf_counter() - t0) / len(cfg.damping_grid)
    t0 = time.perf_counter()
    sims = [A.gradient_similarity(G, Gq)[None], A.gradient_similarity(G, Gq, normalize=True)[None]]
    t["grad_sim_s"] = time.perf_counter() - t0
    # One candidate list per method of METHODS (a single candidate: nothing to tune).
    return [bif_c, if_c, pr_c, *sims], bif_half, traces, eig


def _evaluate(cands, subsets, realized, tune, evaluate):
    """Per method: the chosen candidate's index, its tuning-query LDS grid and its eval LDS."""
    return [_choose(c, subsets, realized, tune, evaluate) for c in cands]


def _loo_corr(scores, loo):
    """Pearson correlation per query between the LOO effects and each method's scores."""
    out = np.full((scores.shape[0], scores.shape[2]), np.nan)
    for m in range(scores.shape[0]):
        a, b = scores[m, : loo.shape[0]], loo
        a, b = a - a.mean(0), b - b.mean(0)
        out[m] = (a * b).sum(0) / np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0))
    return out


def _one_model(cfg, name, work_dir, primary=True):
    """LDS of every method for one model; LOO and the other referees only for the ``primary``."""
    sp = split_digits(cfg.n_train, cfg.n_query, seed=cfg.data_seed)
    loss_fn, p0 = _model(cfg, name, jax.random.key(cfg.init_seed))
    kw = dict(steps=cfg.train_steps, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n, q = cfg.n_train, cfg.n_query
    t = {}
    w = _first(A.retrain(loss_fn, p0, sp.train, np.ones(n), **kw))
    subsets, realized, loo, other, secs = _referees(cfg, name, loss_fn, p0, w, sp, kw, work_dir,
                                                    primary)
    # Seconds of the run that computed each referee (NaN: cached by an older version).
    t["retrain_s"], t["retrain_other_s"] = secs[0], secs[1:]
    cands, bif_half, traces, eig = _candidates(cfg, loss_fn, w, sp, t)
    lam_max = float(eig.eigenvalues[-1])
    tune = np.arange(q) < q // 2
    evaluate = ~tune
    picked = _evaluate(cands, subsets, realized, tune, evaluate)
    (kb, tuned_bif, _), (ki, tuned_if, _), (kp, tuned_pr, _) = picked[:3]
    res = [r for _, _, r in picked]
    scores = np.stack([c[k] for c, (k, _, _) in zip(cands, picked)])
    # LDS against the other referees, each method re-tuned on the tuning queries of that referee.
    frac = [[r for _, _, r in _evaluate(cands, s_, r_, tune, evaluate)] for s_, r_ in other]
    frac_lds = np.zeros((len(other), len(METHODS), 2))
    frac_per = np.zeros((len(other), len(METHODS), int(evaluate.sum())))
    for k, rs in enumerate(frac):
        frac_lds[k] = [[r.value, r.se] for r in rs]
        frac_per[k] = [r.per_query for r in rs]
    loo_corr = _loo_corr(scores, loo) if loo.shape[0] else np.full((len(METHODS), q), np.nan)
    nbeta, gamma = cfg.bif_grid[kb]
    half = A.lds(bif_half[kb], subsets, realized, queries=evaluate)
    arrays = {"subsets": subsets, "retrained_query_loss": realized.astype(np.float32),
              "scores": scores.astype(np.float32), "method_names": np.array(METHODS),
              "query_eval": evaluate, "lds_per_query": np.stack([r.per_query for r in res]),
              "lds": np.array([r.value for r in res]), "lds_se": np.array([r.se for r in res]),
              "lds_tune_bif": np.array(tuned_bif), "lds_bif_half_chains": np.array(half[:2]),
              "lds_tune_influence": np.array(tuned_if), "lds_tune_projected": np.array(tuned_pr),
              "bif_grid": np.array(cfg.bif_grid), "damping_grid": np.array(cfg.damping_grid),
              "bif_loss_trace": traces[kb], "loo_effect": loo.astype(np.float32),
              "loo_corr": loo_corr,
              "other_fractions": np.array(cfg.other_fractions[: len(other)]),
              "fraction_lds": frac_lds, "fraction_lds_per_query": frac_per,
              "fraction_subsets": np.array([o[0] for o in other]).reshape(
                  len(other), cfg.num_subsets, n),
              "fraction_retrained_query_loss": np.array([o[1] for o in other], np.float32)
              .reshape(len(other), cfg.num_subsets, q),
              "hessian_eigenvalues": eig.eigenvalues, "train_index": sp.train_index,
              "query_index": sp.query_index, "train_labels": sp.train["y"],
              "query_labels": sp.query["y"], "query_loss": np.asarray(loss_fn(w, sp.query))}
    summary = {"lds": {m: [round(r.value, 4), round(r.se, 4)] for m, r in zip(METHODS, res)},
               "lds_by_fraction": {str(f): {m: [round(float(v), 4) for v in frac_lds[k, j]]
                                            for j, m in enumerate(METHODS)}
                                   for k, f in enumerate(cfg.other_fractions[: len(other)])},
               "bif_nbeta": nbeta, "bif_gamma": gamma,
               "bif_step": cfg.step_scale / (nbeta * lam_max + gamma),
               "bif_rhat_loss": float(np.asarray(rhat(traces[kb]))),
               "damping_influence": cfg.damping_grid[ki], "damping_projected": cfg.damping_grid[kp],
               "num_params": int(eig.eigenvalues.size),
               "negative_eigenvalues": int((eig.eigenvalues < 0).sum()),
               "train_loss": float(np.mean(loss_fn(w, sp.train))),
               "query_loss": float(arrays["query_loss"].mean()), "timings": t}
    if loo.shape[0]:
        summary["loo_corr"] = {m: round(float(np.nanmean(c)), 4) for m, c in zip(METHODS, loo_corr)}
    return arrays, summary, (sp, loss_fn, p0, kw, nbeta, gamma, lam_max, ki)


def _label_noise(cfg, ctx):
    sp, loss_fn, p0, kw, nbeta, gamma, _, ki = ctx
    y_noisy, flipped = flip_labels(sp.train["y"], cfg.noise_fraction, seed=cfg.noise_seed)
    train = {"x": sp.train["x"], "y": y_noisy}
    w = _first(A.retrain(loss_fn, p0, train, np.ones(cfg.n_train), **kw))
    G = A.per_example_grads(loss_fn, w, train)
    eig = A.hessian_eigen(loss_fn, w, train, weight_decay=cfg.weight_decay)
    lam_max = float(eig.eigenvalues[-1])
    b = bif(jax.random.key(cfg.sample_seed + 1), loss_fn, w, train, None,
            sampler=sgld(cfg.step_scale / (nbeta * lam_max + gamma)), nbeta=nbeta, gamma=gamma,
            num_chains=cfg.num_chains, num_draws=cfg.num_draws, num_burnin=cfg.num_burnin,
            steps_per_draw=cfg.steps_per_draw, se=False, progress=False)
    # Self-influence, high = suspicious: β·Var[ℓ_i] = −β·BIF(i, i); g_iᵀ(H₊+δI)⁻¹g_i/n; ‖g_i‖²; ℓ_i(w*).
    selfs = np.stack([-A.bif_scores(np.diag(b.value), nbeta=nbeta, n=cfg.n_train),
                      A.self_influence(G, eig, damping=cfg.damping_grid[ki]),
                      A.self_influence(G), np.asarray(loss_fn(w, train), np.float64)])
    # The loss kernel (Adam, Furman, Hoogland 2025): K(i, j) = Corr[ℓ_i, ℓ_j] under the same
    # posterior, for the first kernel_size training examples.
    m = min(cfg.kernel_size, cfg.n_train)
    kern = influence_matrix(b.result.observables["train_losses"][..., :m], correlation=True, se=False)
    k = int(flipped.sum())
    auc = np.array([A.detection_auc(s, flipped) for s in selfs])
    prec = np.array([A.precision_at_k(s, flipped, k) for s in selfs])
    arrays = {"flipped": flipped, "noisy_labels": y_noisy, "self_influence": selfs,
              "noise_method_names": np.array(NOISE_METHODS), "noise_auc": auc,
              "noise_precision_at_k": prec, "loss_kernel": (-kern.value).astype(np.float32)}
    summary = {"noise_auc": dict(zip(NOISE_METHODS, np.round(auc, 4).tolist())),
               "noise_precision_at_k": dict(zip(NOISE_METHODS, np.round(prec, 4).tolist())),
               "num_flipped": k}
    return arrays, summary


@register("attribution-lds", "attribution-digits",
          "data attribution on digits scored against retraining (LDS, LOO) and label-noise detection")
def run_lds(cfg: AttributionConfig, work_dir, *, progress: bool = True):
    arrays, summary, timings = {}, {}, {}
    for i, name in enumerate(cfg.models):
        t0 = time.perf_counter()
        a, s, ctx = _one_model(cfg, name, work_dir, primary=i == 0)
        if i == 0:
            na, ns = _label_noise(cfg, ctx)
            a.update(na)
            s.update(ns)
        prefix = "" if i == 0 else f"{name}_"
        arrays.update({prefix + k: v for k, v in a.items()})
        timings[name] = {**s.pop("timings"), "total_s": time.perf_counter() - t0,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        summary[name] = s
    summary["timings"] = timings
    return arrays, summary
