r"""Per-token influence on the synthetic-language transformer (issue 13): does the influence of an
induction token land on the earlier occurrence it copies?

``token-influence``
    Samples p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²} of the trained transformer (the shipped
    ``synthetic-<model>`` checkpoint of the ``transformer-synthetic`` config of the same profile)
    by minibatch SGLD, w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ, recording the per-token losses of
    P *training* sequences at every draw, and forms the token × token influence matrix
    BIF[(p', t'), (p, t)] = −Cov[ℓ_{p't'}, ℓ_{pt}] over all P·T tokens (`susc.influence_matrix`,
    blocked). For every induction target (p, t) — ``tokens[p, t+1]`` copies ``tokens[p, s]`` —
    the candidate "earlier occurrence" is the loss ℓ_{p, s−1} that predicted ``tokens[p, s]``.
    Its rank among all P·T − 1 other tokens (most negative BIF = including it lowers the query
    loss most) is compared with chance, with a control of repeated tokens that are *not*
    induction copies, and with the classical analogues at w*: gradient similarity −g_{t'}·g_t and
    damped influence −g_{t'}ᵀ(H + γ/nβ)⁻¹g_t/n (CG, H from a training subsample).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import config as _config
from ..config import register_config
from ..estimators.influence import influence_matrix
from ..models.transformer import make_loss_fn
from ..samplers import sgld
from ..sampling.observables import observable
from ..sampling.runner import sample
from ..stats import rhat
from . import register
from . import transformer as T

__all__ = ["TokenInfluenceConfig", "run_token_influence", "query_sets", "earlier_rank"]


@register_config("token-influence", tiny={}, small={"probe_sequences": 48, "num_draws": 400})
@dataclasses.dataclass(frozen=True)
class TokenInfluenceConfig:
    """Sampler and probe sizes (class defaults = ``tiny``); the model is ``transformer-synthetic``'s."""

    probe_sequences: int = 24            # P training sequences with at least one induction target
    step_size: float = 1e-3
    nbeta: float = 100.0
    gamma: float = 300.0
    num_chains: int = 4
    num_draws: int = 200
    num_burnin: int = 200
    sample_batch: int = 32
    num_batches: int = 8
    sample_seed: int = 0
    hessian_sequences: int = 128         # training sequences defining H for the classical analogue
    cg_maxiter: int = 50


def query_sets(tokens, labels, source):
    """``(induction, repeat)`` query lists of (p, t, t_earlier): induction targets with the loss
    position t_earlier = s − 1 that predicted the copied token, and a control — "random" targets
    whose token occurred earlier (at s, predicted by s − 1) without an induction context."""
    ind, rep = [], []
    P, Tn = labels.shape
    for p in range(P):
        for t in range(Tn):
            tok = tokens[p, t + 1]
            if labels[p, t] == 1 and source[p, t] >= 1:
                ind.append((p, t, int(source[p, t]) - 1))
            elif labels[p, t] == 0:
                prev = [s for s in range(1, t + 1) if tokens[p, s] == tok
                        and tokens[p, s - 1] != tokens[p, t]]
                if prev:
                    rep.append((p, t, prev[-1] - 1))
    return np.array(ind, int).reshape(-1, 3), np.array(rep, int).reshape(-1, 3)


def earlier_rank(B, queries) -> np.ndarray:
    """Rank (0 = most negative) of B[(p, t_earlier), (p, t)] among all other rows of column (p, t),
    as a fraction of the P·T − 1 candidates: uniform on [0, 1) for an uninformative score."""
    P, Tn = B.shape[0], B.shape[2]
    out = []
    for p, t, te in queries:
        col = np.asarray(B[:, p, :, t], np.float64).reshape(-1).copy()
        col[p * Tn + t] = np.inf                      # the query itself is not a candidate
        out.append(np.sum(col < col[p * Tn + te]) / (P * Tn - 1))
    return np.array(out)


def _token_grads(loss_fn, params, tokens):
    flat, unravel = ravel_pytree(params)
    f = lambda x, tk: loss_fn(unravel(x), {"tokens": tk[None]})[0]      # [T]
    return jax.jit(jax.vmap(jax.jacrev(f), in_axes=(None, 0)))(flat, tokens)   # [P, T, d]


def _damped_solves(loss_fn, params, data, G, damping, maxiter):
    """x_a = (H + δI)⁻¹ g_a for each row of G [k, d] by CG; H of the mean token loss on ``data``
    (data, params and G are arguments of the compiled program, not constants to fold)."""
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def solve(flat, data, G):
        f = lambda x: jnp.mean(loss_fn(unravel(x), data))
        mv = lambda v: jax.jvp(jax.grad(f), (flat,), (v,))[1] + damping * v
        return jax.lax.map(lambda g: jax.scipy.sparse.linalg.cg(mv, g, maxiter=maxiter)[0], G,
                           batch_size=32)
    return solve(flat, data, G)


@register("token-influence", "token-influence",
          "token × token BIF on training sequences of the synthetic language: induction queries")
def run_token_influence(cfg: TokenInfluenceConfig, work_dir, *, progress: bool = True):
    t0 = time.perf_counter()
    tcfg = _config.get_config("transformer-synthetic", _config.get_profile())
    params, record = T.load_model(tcfg, work_dir, progress=progress)
    mcfg = T.model_config(tcfg)
    loss_fn = make_loss_fn(mcfg)
    tr, _ = T.make_data(tcfg)
    has_ind = np.flatnonzero(((tr["labels"] == 1) & (tr["source"] >= 1)).any(1))
    pick = has_ind[: cfg.probe_sequences]
    probe = {k: tr[k][pick] for k in ("tokens", "labels", "source")}
    data = {"tokens": jnp.asarray(tr["tokens"])}
    obs = {"probe": observable(loss_fn, {"tokens": jnp.asarray(probe["tokens"])})}
    res = sample(jax.random.key(cfg.sample_seed), loss_fn, params, data, sampler=sgld(cfg.step_size),
                 nbeta=cfg.nbeta, gamma=cfg.gamma, num_chains=cfg.num_chains, num_draws=cfg.num_draws,
                 num_burnin=cfg.num_burnin, batch_size=cfg.sample_batch, observables=obs,
                 num_batches=cfg.num_batches, checkpoint_dir=work_dir / "samples", progress=progress)
    t_sample = time.perf_counter() - t0
    t1 = time.perf_counter()
    est = influence_matrix(res.observables["probe"], num_batches=cfg.num_batches)     # [P, P, T, T]
    t_matrix = time.perf_counter() - t1
    ind, rep = query_sets(probe["tokens"], probe["labels"], probe["source"])
    P, Tn = probe["labels"].shape

    t1 = time.perf_counter()
    G = np.asarray(_token_grads(loss_fn, params, jnp.asarray(probe["tokens"])), np.float64)
    Gf = G.reshape(P * Tn, -1)
    qi = np.array([p * Tn + t for p, t, _ in ind], int)
    grad_sim = np.zeros((P * Tn, P * Tn))
    grad_sim[:, qi] = -Gf @ Gf[qi].T
    t_grad = time.perf_counter() - t1
    t1 = time.perf_counter()
    sub = {"tokens": jnp.asarray(tr["tokens"][: cfg.hessian_sequences])}
    X = np.asarray(_damped_solves(loss_fn, params, sub, jnp.asarray(Gf[qi], jnp.float32),
                                  cfg.gamma / cfg.nbeta, cfg.cg_maxiter), np.float64)
    infl = np.zeros((P * Tn, P * Tn))
    n_train = tr["tokens"].shape[0]
    infl[:, qi] = -Gf @ X.T / n_train
    t_if = time.perf_counter() - t1
    as4 = lambda M: M.reshape(P, Tn, P, Tn).transpose(0, 2, 1, 3)         # -> [P', P, T', T]
    ranks = {"bif": earlier_rank(est.value, ind), "bif_repeat": earlier_rank(est.value, rep),
             "grad_sim": earlier_rank(as4(grad_sim), ind), "influence": earlier_rank(as4(infl), ind)}
    B = est.value
    diag_val = np.array([B[p, p, te, t] for p, t, te in ind])
    diag_se = np.array([est.se[p, p, te, t] for p, t, te in ind])
    arrays = {"probe_tokens": probe["tokens"], "probe_labels": probe["labels"],
              "probe_source": probe["source"], "probe_index": pick, "induction_queries": ind,
              "repeat_queries": rep, "bif_within": np.stack([B[p, p] for p in range(P)]),
              "bif_within_se": np.stack([est.se[p, p] for p in range(P)]),
              "earlier_bif": diag_val, "earlier_bif_se": diag_se,
              "rank_bif": ranks["bif"], "rank_bif_repeat": ranks["bif_repeat"],
              "rank_grad_sim": ranks["grad_sim"], "rank_influence": ranks["influence"],
              "loss_trace": np.asarray(res.loss)}
    top1 = lambda r: float(np.mean(r * (P * Tn - 1) < 0.5))
    summary = {"num_induction_queries": int(len(ind)), "num_repeat_queries": int(len(rep)),
               "num_candidates": int(P * Tn - 1),
               "median_rank": {k: float(np.median(v)) for k, v in ranks.items()},
               "top1": {k: top1(v) for k, v in ranks.items()},
               "rhat_loss": float(np.asarray(rhat(np.asarray(res.loss)))),
               "checkpoint_sha256": record["sha256"],
               "timings": {"sample_s": t_sample, "matrix_s": t_matrix, "grad_sim_s": t_grad,
                           "influence_s": t_if}}
    return arrays, summary
