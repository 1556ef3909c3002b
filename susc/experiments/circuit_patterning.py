r"""Patterning the induction circuit: reweight the training sequences, retrain, time the formation.

Wang & Murfet (2601.13548) and *Patterning in Practice* (PiP): the weights ρ = 1 + α χ̂† dμ move the
structural coordinates μ by dμ ≈ β χ̂ (ρ − 1) (β = nβ/n, theory.md §1.8). Here μ is one coordinate,
the **in-context loss** φ(w) (second-half minus first-half loss on repeated random word sequences,
`formation.induction_readouts`): it falls when the induction circuit forms.

1. *Reference run.* Train seed 0 (unweighted) to ``early_step``, before the circuit forms: w_e.
2. *Susceptibility.* Sample the localized posterior p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w_e‖²} by SGLD
   w ← w − (ε/2)[nβ∇L_B + γ(w − w_e)] + √ε ξ and estimate the per-sequence
   χ̂_j = −Cov[φ, ℓ_j − L_n] over all n training sequences (`susc.per_sample_susceptibility`).
3. *Weights.* ``accelerate`` targets dμ < 0 (more in-context learning), ``delay`` dμ > 0, each at
   ``max_change`` = max_j |ρ_j − 1| (PiP's α fixed by the largest weight change; ≤ 1 keeps ρ ≥ 0),
   plus a sweep of smaller changes; ``random`` is a centred Gaussian ρ − 1 of the accelerate norm,
   and ``num_null`` more such draws per seed measure the formation-step spread of a data change of
   that size without a susceptibility behind it. Class arms (`circuit_patterning_classes`) use
   per-token weights constant on the planted classes.
4. *Predicted vs posterior.* dμ_pred = β χ̂ (ρ − 1) against the posterior actually reweighted:
   ⟨φ⟩_ρ − ⟨φ⟩_1 at w_e by resampling with the weights (common random numbers), also at the
   smaller step sizes ``eps_check`` (`step_size_check`: minibatch SGLD runs hotter than p at large ε,
   which inflates covariances but not responses).
5. *Retraining.* Every training seed (its own initialization and data order) is trained from
   scratch with each arm's weights: the same minibatch sequence as its baseline, objective
   Σ_{j∈B} ρ_j ℓ_j / |B| (ρ has mean 1). The formation step is where the largest prefix-matching
   score first reaches the seed's threshold (midway between its baseline's start and end values),
   interpolated between readouts; the realized shift is φ(arm) − φ(baseline) at ``early_step``.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..estimators import patterning
from ..config import register_config
from ..estimators.susceptibility import per_sample_susceptibility, susceptibility
from ..models.transformer import TransformerConfig, init_params, make_loss_fn
from ..samplers import sgld
from ..sampling.observables import observable
from ..sampling.runner import sample
from ..stats.covariance import mean_estimate
from ..train import adamw
from . import formation
from .transformer import SyntheticConfig, model_config

__all__ = ["PatterningConfig", "arm_weights", "train_arm", "early_susceptibility", "predicted_shifts",
           "resampled_shifts", "step_size_check", "synthetic_config",
           "null_weights", "in_context_loss_fn", "resampled_indices", "training_weights"]


@register_config(
    "transformer-patterning",
    tiny={},
    small={"num_train": 8000, "num_eval": 512, "train_steps": 6000, "early_step": 1000,
           "readout_every": 50,
           "seeds": (0, 1, 2), "num_chains": 4, "num_draws": 200, "num_burnin": 100,
           "resample_draws": 400, "repeat_sequences": 128, "num_null": 2, "class_draws": 100, "eps_check": (2.5e-4,),
           "eps_check_draws": 150, "resample_arms": ("baseline", "accelerate", "delay", "random")})
@dataclasses.dataclass(frozen=True)
class PatterningConfig:
    """Sizes (class defaults = ``tiny``). ``small`` is the synthetic-language ``tiny`` transformer
    on the data of chapters 11–12 (vocabulary 64, context 32, 8000 sequences), trained for 6000
    AdamW steps: its induction circuit forms between steps ~2300 and ~3000 depending on the seed,
    leaving room after it for a delayed formation; w_e is taken at step 1000."""

    model: str = "tiny"
    vocab_size: int = 64
    seq_len: int = 32
    pattern_probs: tuple = SyntheticConfig.pattern_probs
    num_train: int = 512
    num_eval: int = 64
    data_seed: int = 0
    seeds: tuple = (0, 1, 2)             # training seeds: init key(s), data order key(1000 + s)
    train_steps: int = 300
    train_batch: int = 32
    learning_rate: float = 1e-2
    warmup_steps: int = 100
    early_step: int = 100                # w_e: the checkpoint whose susceptibilities set the weights
    readout_every: int = 50
    repeat_sequences: int = 32           # repeated random word sequences of the readouts and of φ
    max_change: float = 1.0              # max |ρ − 1| of the accelerate / delay / random arms
    sweep: tuple = (0.25, 0.5)           # smaller max |ρ − 1| of the linear-regime sweep
    num_null: int = 1                    # extra random reweightings per seed (formation null)
    resample_arms: tuple = ("accelerate",)  # arms retrained again with the data resampled ∝ ρ
    class_arms: bool = True              # also pattern per-token weights by planted class
    class_draws: int = 10                # draws per chain of the class-susceptibility run
    step_size: float = 1e-3              # SGLD ε, nβ, γ as chapters 11–12
    nbeta: float = 100.0
    gamma: float = 300.0
    num_chains: int = 2
    num_draws: int = 20
    num_burnin: int = 10
    sample_batch: int = 32
    num_batches: int = 4
    resample_draws: int = 40
    eps_check: tuple = (3e-4,)           # ε of the prediction-vs-resampling check (accelerate arm)
    eps_check_draws: int = 10
    sample_seed: int = 0


def synthetic_config(cfg: PatterningConfig) -> SyntheticConfig:
    """The `SyntheticConfig` whose data and model ``cfg`` uses (chapters 11–12's language)."""
    return SyntheticConfig(model=cfg.model, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
                           pattern_probs=cfg.pattern_probs, num_train=cfg.num_train,
                           num_eval=cfg.num_eval, data_seed=cfg.data_seed)


def resampled_indices(key, rho, batch: int):
    """``batch`` indices drawn with replacement with probabilities ρ_j/Σρ by inverse CDF: the same
    key gives the same uniforms for any ρ (common random numbers across arms)."""
    cdf = jnp.cumsum(rho) / jnp.sum(rho)
    u = jax.random.uniform(key, (batch,))
    return jnp.minimum(jnp.searchsorted(cdf, u), rho.shape[0] - 1)


@functools.lru_cache(maxsize=8)
def _chunk_fn(mcfg: TransformerConfig, lr: float, steps: int, warmup: int, n: int, batch: int,
              resample: bool = False):
    """One jitted chunk of weighted AdamW steps; ρ, data, key and carry are arguments, so every arm
    and seed of one config shares the compiled program. With ``resample`` each minibatch is drawn
    with replacement with probabilities ρ_j/Σρ and unit weights (the data resampled instead of
    the loss reweighted); the inverse-CDF draw shares its uniforms across arms of one seed."""
    loss_fn = make_loss_fn(mcfg)
    opt = adamw(lr, num_steps=steps, warmup_steps=warmup)
    per_epoch = n // batch

    @jax.jit
    def run(carry, steps_, data, rho, key):
        def one(carry, step):
            p, s = carry
            if resample:
                idx, w = resampled_indices(jax.random.fold_in(key, step), rho, batch), jnp.ones(batch)
            else:
                perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
                idx = jax.lax.dynamic_slice(perm, ((step % per_epoch) * batch,), (batch,))
                w = rho[idx]
            def obj(q):
                per = loss_fn(q, {"tokens": data[idx]})                      # [B, T]
                return jnp.mean((per if w.ndim == 2 else per.mean(axis=1)) * w)
            loss, g = jax.value_and_grad(obj)(p)
            u, s = opt.update(g, s, p)
            return (jax.tree.map(jnp.add, p, u), s), loss
        return jax.lax.scan(one, carry, steps_)
    return run, opt


@functools.lru_cache(maxsize=8)
def _readout_fn(mcfg: TransformerConfig):
    """The circuit readouts, compiled once per model config (the tokens are an argument)."""
    return jax.jit(lambda p, tokens: formation.induction_readouts(p, tokens, mcfg))


def training_weights(weights, train_tokens):
    """ρ as float32, normalized to mean 1, after checking it is nonnegative and per sequence [n]
    or per target token [n, T − 1]."""
    n, t = train_tokens.shape[0], train_tokens.shape[1] - 1
    rho = jnp.asarray(weights, jnp.float32)
    if rho.shape not in ((n,), (n, t)) or bool(jnp.any(rho < 0)):
        raise ValueError(f"`weights` must be nonnegative, per sequence ({n},) or per target token "
                         f"({n}, {t}); got {rho.shape}.")
    return rho / rho.mean()


def train_arm(cfg: PatterningConfig, seed: int, weights, train_tokens, repeat_tokens, *,
              keep_step: int | None = None, resample: bool = False) -> dict:
    """Train seed ``seed`` from its initialization with per-sequence ρ [n] or per-token ρ [n, T]
    weights (normalized to mean 1); with ``resample``, per-sequence ρ only, the minibatches are
    drawn ∝ ρ instead (see `_chunk_fn`).

    Returns ``steps`` [R], ``prefix_matching`` [R, L·H], ``induction_loss`` [R] (φ) at every
    ``readout_every`` steps from 0, ``loss`` [train_steps] and, with ``keep_step``, the flat
    parameters there (``params_at``)."""
    mcfg = model_config(synthetic_config(cfg))
    n = train_tokens.shape[0]
    rho = training_weights(weights, train_tokens)
    if resample and rho.ndim != 1:
        raise ValueError("resample=True needs per-sequence weights ρ [n].")
    run, opt = _chunk_fn(mcfg, cfg.learning_rate, cfg.train_steps, cfg.warmup_steps, n, cfg.train_batch,
                         bool(resample))
    read = functools.partial(_readout_fn(mcfg), tokens=jnp.asarray(repeat_tokens))
    params = init_params(jax.random.key(seed), mcfg)
    carry, key, data = (params, opt.init(params)), jax.random.key(1000 + seed), jnp.asarray(train_tokens)
    out = {"steps": [0], "prefix_matching": [], "induction_loss": [], "loss": []}

    def readout(p):
        r = read(p)
        out["prefix_matching"].append(np.asarray(r["prefix_matching"]))
        out["induction_loss"].append(float(r["induction_loss"]))

    readout(params)
    done = 0
    while done < cfg.train_steps:
        carry, losses = run(carry, jnp.arange(done, done + cfg.readout_every), data, rho, key)
        done += cfg.readout_every
        out["loss"].append(np.asarray(losses))
        out["steps"].append(done)
        readout(carry[0])
        if done == keep_step:
            out["params_at"] = np.asarray(ravel_pytree(carry[0])[0])
    res = {k: np.asarray(v) for k, v in out.items() if k != "loss"}
    res["loss"] = np.concatenate(out["loss"])
    return res


def in_context_loss_fn(mcfg, repeat_tokens):
    """φ(params): the in-context loss (second-half minus first-half mean loss) on ``repeat_tokens``."""
    return lambda p: formation.induction_readouts(p, repeat_tokens, mcfg)["induction_loss"]


def early_susceptibility(cfg: PatterningConfig, params, train_tokens, repeat_tokens, *,
                         step_size: float | None = None, steps_per_draw: int = 1,
                         num_draws: int | None = None, progress: bool = False) -> dict:
    """χ̂_j = −Cov[φ, ℓ_j − L_n] [n] at w_e with its batch-means SE, ⟨φ⟩, and the draws of φ and
    of ℓ_j − L_n; ℓ_j is sequence j's mean per-token loss and L_n their mean (exact, every draw).
    ``step_size`` / ``steps_per_draw`` / ``num_draws`` override cfg's (burn-in scales with
    ``steps_per_draw`` so that it spans the same Langevin time)."""
    mcfg = model_config(synthetic_config(cfg))
    loss_fn = make_loss_fn(mcfg)
    seq_loss = lambda p, b: loss_fn(p, b).mean(axis=1)                    # [B] per sequence
    data = {"tokens": jnp.asarray(train_tokens)}
    res = sample(jax.random.key(cfg.sample_seed), loss_fn, params, data,
                 sampler=sgld(step_size or cfg.step_size), nbeta=cfg.nbeta, gamma=cfg.gamma,
                 num_chains=cfg.num_chains, num_draws=num_draws or cfg.num_draws,
                 num_burnin=cfg.num_burnin * steps_per_draw, steps_per_draw=steps_per_draw,
                 batch_size=cfg.sample_batch,
                 observables={"phi": in_context_loss_fn(mcfg, repeat_tokens),
                              "losses": observable(seq_loss, data, chunk_size=1024)},
                 draw_loss="observable:losses", num_batches=cfg.num_batches, progress=progress)
    phi, losses = np.asarray(res.observables["phi"]), np.asarray(res.observables["losses"])
    est = per_sample_susceptibility(phi, losses, np.asarray(res.loss), num_batches=cfg.num_batches)
    m = mean_estimate(phi, num_batches=cfg.num_batches)
    return {"chi": np.asarray(est.value).reshape(-1), "chi_se": np.asarray(est.se).reshape(-1),
            "phi_mean": float(m.value), "phi_se": float(m.se), "phi": phi,
            "centred_losses": losses - np.asarray(res.loss)[..., None]}


def predicted_shifts(cfg: PatterningConfig, sus: dict, rhos, shares=None) -> tuple[np.ndarray, np.ndarray]:
    """dμ_pred = nβ Σ_u s_u (ρ_u − 1) χ̂_u for each row of ``rhos`` [A, U], with its SE, computed as
    −nβ Cov[φ, Σ_u s_u (ρ_u − 1)(ℓ_u − L_n)] from the draws ``sus["phi"]`` [C, D] and
    ``sus["centred_losses"]`` [C, D, U] (so the SE counts the covariance of the U estimates).
    Units u are sequences with shares s_u = 1/n (the default: nβ/n = β) or classes of tokens with
    their token shares q_c."""
    d = np.asarray(rhos, np.float64) - 1.0                                # [A, U]
    U = d.shape[1]
    d = d * (np.full(U, 1.0 / U) if shares is None else np.asarray(shares, np.float64))
    delta = np.einsum("cdu,au->cda", sus["centred_losses"], d)           # [C, D, A]
    est = susceptibility(sus["phi"], delta, num_batches=cfg.num_batches)
    return cfg.nbeta * np.asarray(est.value).reshape(-1), cfg.nbeta * np.asarray(est.se).reshape(-1)


def resampled_shifts(cfg: PatterningConfig, params, train_tokens, repeat_tokens, rhos,
                     *, step_size: float | None = None, steps_per_draw: int = 1, phi_fn=None,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """⟨φ⟩_ρ − ⟨φ⟩_1 at w_e by sampling the reweighted posterior exp{−nβ L^ρ_n − (γ/2)‖w − w_e‖²}
    with the unweighted run's key (common random numbers); the SE is the batch-means SE of the
    draw-by-draw difference. ``rhos`` is [A, n] (sequence weights, `susc.sample`'s ``weights``) or
    [A, n, T] (token weights, carried in the data so that a minibatch takes its rows' weights).
    ``step_size`` overrides cfg's ε; φ is the in-context loss unless ``phi_fn`` is given."""
    mcfg = model_config(synthetic_config(cfg))
    loss_fn = make_loss_fn(mcfg)
    rhos = np.asarray(rhos)
    per_token = rhos.ndim == 3
    if per_token:
        loss_fn = lambda p, b, f=loss_fn: f(p, b) * b["rho"]
    phi_fn = phi_fn or in_context_loss_fn(mcfg, repeat_tokens)

    def draws(rho):
        rho = jnp.asarray(rho, jnp.float32)
        data = {"tokens": jnp.asarray(train_tokens), **({"rho": rho} if per_token else {})}
        r = sample(jax.random.key(cfg.sample_seed + 1), loss_fn, params, data,
                   sampler=sgld(step_size or cfg.step_size), nbeta=cfg.nbeta, gamma=cfg.gamma,
                   num_chains=cfg.num_chains, num_draws=cfg.resample_draws,
                   num_burnin=cfg.num_burnin * steps_per_draw, steps_per_draw=steps_per_draw,
                   batch_size=cfg.sample_batch, weights=None if per_token else rho,
                   observables={"phi": phi_fn}, progress=progress)
        return np.asarray(r.observables["phi"], np.float64)

    base = draws(np.ones(rhos.shape[1:]))
    out = [mean_estimate(draws(rho) - base, num_batches=cfg.num_batches) for rho in rhos]
    return np.array([float(e.value) for e in out]), np.array([float(e.se) for e in out])


def step_size_check(cfg: PatterningConfig, params, train_tokens, repeat_tokens, rho, step_size,
                    *, num_draws: int, progress: bool = False) -> dict:
    """Predicted (β χ̂ (ρ − 1), from a fresh run) and resampled shift for one ``rho`` at SGLD step
    ``step_size``, with ``steps_per_draw = round(cfg.step_size / step_size)`` so that a draw spans
    the same Langevin time. Minibatch gradient noise, relative to the Langevin noise, grows with ε:
    the chain's stationary law is hotter than the posterior, its covariances grow but its response
    to a force does not, so the ratio resampled / predicted should approach 1 as ε → 0."""
    k = max(1, round(cfg.step_size / step_size))
    rho = np.asarray(rho)[None]
    sus = early_susceptibility(cfg, params, train_tokens, repeat_tokens, step_size=step_size,
                               steps_per_draw=k, num_draws=num_draws, progress=progress)
    pred, pred_se = predicted_shifts(cfg, sus, rho)
    rs, rs_se = resampled_shifts(cfg, params, train_tokens, repeat_tokens, rho,
                                 step_size=step_size, steps_per_draw=k, progress=progress)
    return {"predicted": float(pred[0]), "predicted_se": float(pred_se[0]),
            "resampled": float(rs[0]), "resampled_se": float(rs_se[0]), "steps_per_draw": k}


def arm_weights(cfg: PatterningConfig, chi) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(names, rho [A, n], max_change [A])``: baseline, accelerate, delay, random at
    ``max_change``, then accelerate / delay at each ``sweep`` value."""
    chi = np.asarray(chi, np.float64)[None, :]
    w = lambda sign, a: patterning.reweighting(chi, np.array([sign]), max_change=a).weights
    acc = w(-1.0, cfg.max_change)
    rand = patterning.random_reweighting(jax.random.key(cfg.sample_seed + 17), acc)
    names = ["baseline", "accelerate", "delay", "random"]
    rows = [np.ones(chi.shape[1]), acc, w(1.0, cfg.max_change), rand]
    sizes = [0.0, cfg.max_change, cfg.max_change, cfg.max_change]
    for a in cfg.sweep:
        names += [f"accelerate@{a:g}", f"delay@{a:g}"]
        rows += [w(-1.0, a), w(1.0, a)]
        sizes += [a, a]
    return names, np.stack(rows), np.array(sizes)


def null_weights(cfg: PatterningConfig, like) -> np.ndarray:
    """``[num_null, n]`` further random reweightings of the norm of ``like`` (the accelerate
    weights): their formation steps measure how far a patterning-free data change of that size
    moves formation within one seed."""
    return np.stack([patterning.random_reweighting(jax.random.key(cfg.sample_seed + 18 + r), like)
                     for r in range(cfg.num_null)])
