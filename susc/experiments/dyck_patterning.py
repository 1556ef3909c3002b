r"""Algorithm selection by LLC targeting on parenthesis balancing (issue 12, Dyck part).

Three rules fit the training strings of `susc.data.dyck` perfectly (count, ends, depth); a
trained MLP's answers on the ambiguous strings say which one it implements. The experiment:

1. **Solutions.** For each rule a, train the MLP on the training strings *plus* the ambiguous
   ones labelled by a: a point w_a that fits the training data and implements a.
2. **LLC and its susceptibility.** At each w_a, sample the localized tempered posterior of the
   training loss L_n (conventions of theory.md §1: p(w) ∝ exp{−nβ L^ρ_n(w) − (γ/2)‖w − w_a‖²},
   SGLD w ← w − (ε/2)[nβ∇L + γ(w − w_a)] + √ε ξ) and estimate λ̂_a = nβ(E[L_n] − L_n(w_a)).
   Data are grouped in classes c (|Σx| × first symbol × last symbol) with mixture weights ρ_c,
   L^ρ_n = (1/n) Σ_j ρ_{c(j)} ℓ_j. Differentiating λ̂(ρ) = nβ(E_ρ[L^ρ_n] − L^ρ_n(w_a)) at ρ = 1,
   with S_c = Σ_{j∈c} ℓ_j and β = nβ/n:

       X_{ac} = ∂λ̂_a/∂ρ_c = β (E[S_c] − S_c(w_a)) − nβ·β·Cov[L_n, S_c].

3. **Patterning.** Toward rule a, ask dλ = −1 at a and +½ at the others; the class weights are
   ρ = 1 + α s with s = (X P)† dλ, P projecting out the total mass (Σ_c n_c (ρ_c − 1) = 0), and α
   set by ``max_change`` = max_c |ρ_c − 1|. Predicted dλ̂ = X (ρ − 1); the posterior check
   resamples each solution under each ρ (same chain keys) for the realized dλ̂.
4. **Retraining.** Every seed is retrained from its own initialization under the baseline, each
   target's weights and random class weights of the same size (`patterning.random_reweighting`);
   the rule it implements is the argmax of `dyck.algorithm_votes`.

Arrays: ``rule_names`` [3], ``class_names`` / ``class_sizes`` [K], ``llc`` / ``llc_se`` [3],
``llc_susceptibility`` / ``llc_susceptibility_se`` [3, K], ``target_names`` [T],
``class_weights`` [T, K], ``dllc_predicted`` / ``dllc_realized`` / ``dllc_realized_se`` [T, 3],
``arm_names`` [A] (baseline, toward_<rule>…, random…), ``votes`` [seeds, A, 3],
``found`` [seeds, A] (rule index), ``chosen`` [seeds, T] (rule index found under each target),
``solution_votes`` [3, 3], ``train_accuracy`` [seeds, A], ``decay_sweep`` [W] with
``decay_sweep_found`` [W, seeds] (the baseline's rule at other weight decays; the last row is the
configured one).
"""
from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..config import register_config
from ..data import dyck
from ..estimators import patterning
from ..models.classifier import init_mlp, mlp_forward, mlp_loss
from ..samplers import sgld
from ..sampling.observables import observable
from ..sampling.runner import sample
from ..stats.covariance import mean_estimate
from . import register

__all__ = ["DyckConfig", "string_classes", "train_seeds", "solutions", "llc_response",
           "target_weights", "run"]


@register_config(
    "dyck-patterning",
    tiny={},
    small={"train_steps": 3000, "seeds": tuple(range(16)), "num_draws": 400, "num_burnin": 200,
           "num_random": 4})
@dataclasses.dataclass(frozen=True)
class DyckConfig:
    """Sizes (class defaults = ``tiny``). Strings of ``length`` parentheses (all 2^L enumerated),
    an MLP with tanh ``hidden`` layers trained full batch with AdamW; SGLD at nβ = n/log n
    (``nbeta=None``). Weight decay sets which rule training prefers: with none, plain Adam lands
    on depth in every seed tried; at 0.1 on ends in most; at the default 0.03 the seeds split
    between the two, which is where a data change can tip them."""

    length: int = 10
    hidden: tuple = (64, 64)
    learning_rate: float = 3e-3
    weight_decay: float = 0.03
    train_steps: int = 1000
    seeds: tuple = (0, 1, 2, 3)          # retraining seeds: init key(s)
    solution_seed: int = 100             # init of the solutions w_a
    step_size: float = 1e-4
    nbeta: float | None = None
    gamma: float = 100.0
    num_chains: int = 4
    num_draws: int = 100
    num_burnin: int = 50
    num_batches: int = 8
    max_change: float = 0.8              # max_c |ρ_c − 1| of the target weights
    num_random: int = 1                  # random class reweightings per seed
    decay_sweep: tuple = (0.0, 0.1)      # baseline retrained at these weight decays too
    sample_seed: int = 0


def string_classes(x) -> tuple[np.ndarray, list[str]]:
    """Class index of each string ``x [N, L]`` by (|Σx| bucket 0/2/4/6+, first, last symbol),
    with the names of the non-empty classes, in order."""
    x = np.asarray(x)
    s = np.minimum(np.abs(x.sum(1)).astype(int), 6)
    key = [f"|s|={v}{'+' if v == 6 else ''} {'(' if a > 0 else ')'}…{'(' if b > 0 else ')'}"
           for v, a, b in zip(s, x[:, 0], x[:, -1])]
    names = sorted(set(key), key=lambda k: (int(k[4]), k[-3:]))
    index = {k: i for i, k in enumerate(names)}
    return np.array([index[k] for k in key]), names


def _data(x, y):
    return {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32)}


def train_seeds(cfg: DyckConfig, seeds, data, rho) -> dict:
    """Params ``[S, …]`` after ``train_steps`` full-batch AdamW steps on Σ ρ_j ℓ_j / Σ ρ_j, one
    initialization per seed (``init_mlp(key(seed))``), vmapped over seeds."""
    opt = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    rho = jnp.asarray(rho, jnp.float32)

    def one(seed):
        p = init_mlp(jax.random.key(seed), cfg.length, cfg.hidden, 2)

        def step(carry, _):
            p, st = carry
            g = jax.grad(lambda q: jnp.sum(rho * mlp_loss(q, data)) / jnp.sum(rho))(p)
            u, st = opt.update(g, st, p)
            return (optax.apply_updates(p, u), st), None
        return jax.lax.scan(step, (p, opt.init(p)), None, cfg.train_steps)[0][0]
    return jax.jit(jax.vmap(one))(jnp.asarray(seeds))


def _balanced(params, x):
    return np.asarray(jnp.argmax(mlp_forward(params, jnp.asarray(x)), -1) == 1)


def solutions(cfg: DyckConfig, sp: dict) -> list:
    """One w_a per rule: trained on the training strings plus the ambiguous ones labelled by a."""
    out = []
    for a in range(len(dyck.ALGORITHMS)):
        data = _data(np.r_[sp["x_train"], sp["x_probe"]], np.r_[sp["y_train"], sp["y_probe"][:, a]])
        p = train_seeds(cfg, [cfg.solution_seed], data, np.ones(len(data["y"])))
        out.append(jax.tree_util.tree_map(lambda v: v[0], p))
    return out


def _nbeta(cfg, n):
    return float(n / math.log(n)) if cfg.nbeta is None else float(cfg.nbeta)


def llc_response(cfg: DyckConfig, w, data, classes, K, rho_class=None, *, loss_fn=mlp_loss) -> dict:
    """λ̂ at w under class weights ρ (default 1) and, at ρ = 1, X_c = ∂λ̂/∂ρ_c with SEs.

    λ̂(ρ) = nβ(E_ρ[L^ρ_n] − L^ρ_n(w)) from the per-sample losses at every draw; X_c as in the
    module docstring, its SE the batch-means SE of the per-draw summand (centred at the pooled
    means). Chains use the same keys for every ρ (common random numbers). ``loss_fn`` follows the
    package contract ``loss_fn(params, batch) -> [B]``; ``data`` has the rows of ``classes``."""
    n = int(jax.tree_util.tree_leaves(data)[0].shape[0])
    nb = _nbeta(cfg, n)
    rho = np.ones(K) if rho_class is None else np.asarray(rho_class, np.float64)
    per = rho[classes]
    res = sample(jax.random.key(cfg.sample_seed), loss_fn, w, data, sampler=sgld(cfg.step_size),
                 nbeta=nb, gamma=cfg.gamma, num_chains=cfg.num_chains, num_draws=cfg.num_draws,
                 num_burnin=cfg.num_burnin, weights=jnp.asarray(per, jnp.float32),
                 observables={"losses": observable(loss_fn, data)}, progress=False)
    ls = np.asarray(res.observables["losses"], np.float64)                 # [C, D, n]
    l0 = np.asarray(loss_fn(w, data), np.float64)
    trace = nb * ((ls * per).mean(-1) - (l0 * per).mean())
    lam = mean_estimate(trace, num_batches=cfg.num_batches)
    onehot = np.eye(K)[classes]                                            # [n, K]
    S, S0 = ls @ onehot, l0 @ onehot                                       # [C, D, K], [K]
    L = ls.mean(-1)
    beta = nb / n
    q = beta * (S - S0) - nb * beta * (L - L.mean())[..., None] * (S - S.mean((0, 1)))
    X = mean_estimate(q, num_batches=cfg.num_batches)
    return {"llc": float(lam.value), "llc_se": float(lam.se), "trace": trace,
            "X": np.asarray(X.value), "X_se": np.asarray(X.se), "nbeta": nb}


def target_weights(X, sizes, dmu, max_change: float):
    """Class weights ρ = 1 + α (X P)† dμ with Σ_c n_c (ρ_c − 1) = 0 and max |ρ_c − 1| = max_change
    (`patterning.reweighting` on the mass-projected X)."""
    sizes = np.asarray(sizes, np.float64)
    P = np.eye(len(sizes)) - np.outer(sizes, sizes) / (sizes @ sizes)
    return patterning.reweighting(np.asarray(X) @ P, np.asarray(dmu, np.float64),
                                  max_change=max_change).weights


def _random_weights(cfg, like, sizes) -> list:
    """``num_random`` random class weights of the size of ``like`` (the first nonnegative draws)."""
    out, r = [], 0
    while len(out) < cfg.num_random:
        if r >= 100 * cfg.num_random:
            raise ValueError("too few nonnegative random class weights; lower max_change.")
        try:
            out.append(patterning.random_reweighting(
                jax.random.key(1000 + 100 * cfg.sample_seed + r), like, shares=sizes))
        except ValueError:
            pass
        r += 1
    return out


@register("dyck-patterning", "dyck-patterning",
          "pattern the training strings of a parenthesis task toward the rule whose LLC is "
          "lowered; retrain and classify which rule each model implements")
def run(cfg: DyckConfig, work_dir, *, progress: bool = True):
    t0 = time.perf_counter()
    timings = {}
    sp = dyck.split(cfg.length)
    data = _data(sp["x_train"], sp["y_train"])
    classes, names = string_classes(sp["x_train"])
    K, R = len(names), len(dyck.ALGORITHMS)
    sizes = np.bincount(classes, minlength=K)
    n = len(classes)

    t = time.perf_counter()
    sols = solutions(cfg, sp)
    sol_votes = np.array([dyck.algorithm_votes(lambda x, p=p: _balanced(p, x), sp["x_probe"])
                          for p in sols])
    base = [llc_response(cfg, w, data, classes, K) for w in sols]
    X = np.array([b["X"] for b in base])
    timings["solutions_s"] = time.perf_counter() - t

    t = time.perf_counter()
    targets = [f"toward_{a}" for a in dyck.ALGORITHMS]
    dmus = [np.where(np.arange(R) == a, -1.0, 0.5) for a in range(R)]
    rhos = np.array([target_weights(X, sizes, d, cfg.max_change) for d in dmus])
    pred = (rhos - 1.0) @ X.T                                               # [T, R]
    real = np.zeros((len(targets), R))
    real_se = np.zeros_like(real)
    for i, r in enumerate(rhos):
        for a, w in enumerate(sols):
            out = llc_response(cfg, w, data, classes, K, r)
            diff = mean_estimate(out["trace"] - base[a]["trace"], num_batches=cfg.num_batches)
            real[i, a], real_se[i, a] = float(diff.value), float(diff.se)
    timings["posterior_check_s"] = time.perf_counter() - t

    t = time.perf_counter()
    randoms = _random_weights(cfg, rhos[0], sizes)
    arm_names = ["baseline", *targets, *[f"random{k}" for k in range(cfg.num_random)]]
    arm_rho = [np.ones(K), *rhos, *randoms]
    votes = np.zeros((len(cfg.seeds), len(arm_names), R))
    acc = np.zeros((len(cfg.seeds), len(arm_names)))
    for j, r in enumerate(arm_rho):
        ps = train_seeds(cfg, cfg.seeds, data, r[classes])
        for i in range(len(cfg.seeds)):
            p = jax.tree_util.tree_map(lambda v, i=i: v[i], ps)
            votes[i, j] = dyck.algorithm_votes(lambda x, p=p: _balanced(p, x), sp["x_probe"])
            acc[i, j] = float(np.mean(_balanced(p, sp["x_train"]) == (sp["y_train"] == 1)))
    sweep = []
    for wd in cfg.decay_sweep:
        ps = train_seeds(dataclasses.replace(cfg, weight_decay=wd), cfg.seeds, data, np.ones(n))
        sweep.append([dyck.algorithm_votes(lambda x, i=i: _balanced(
            jax.tree_util.tree_map(lambda v: v[i], ps), x), sp["x_probe"]).argmax()
            for i in range(len(cfg.seeds))])
    timings["retrain_s"] = time.perf_counter() - t
    found = votes.argmax(-1)
    arrays = {"rule_names": np.array(dyck.ALGORITHMS), "class_names": np.array(names),
              "class_sizes": sizes, "seeds": np.array(cfg.seeds),
              "llc": np.array([b["llc"] for b in base]), "llc_se": np.array([b["llc_se"] for b in base]),
              "llc_susceptibility": X, "llc_susceptibility_se": np.array([b["X_se"] for b in base]),
              "target_names": np.array(targets), "class_weights": rhos,
              "random_weights": np.array(randoms), "dllc_predicted": pred,
              "dllc_realized": real, "dllc_realized_se": real_se,
              "arm_names": np.array(arm_names), "votes": votes, "found": found,
              "chosen": found[:, 1:1 + R], "solution_votes": sol_votes, "train_accuracy": acc,
              "decay_sweep": np.array([*cfg.decay_sweep, cfg.weight_decay]),
              "decay_sweep_found": np.array([*sweep, found[:, 0]]).reshape(-1, len(cfg.seeds))}
    timings["total_s"] = time.perf_counter() - t0
    summary = {"nbeta": base[0]["nbeta"], "llc": {a: b["llc"] for a, b in zip(dyck.ALGORITHMS, base)},
               "found": {a: found[:, j].tolist() for j, a in enumerate(arm_names)},
               "timings": timings}
    return arrays, summary
