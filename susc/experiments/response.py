r"""A finite-difference oracle for per-token structural susceptibilities: reweight the data, resample.

The fluctuation–dissipation theorem (theory.md §1) says that reweighting the posterior data toward
a subset S of the probe tokens by h,

    L_h = L + h (L_S − L),   token weights ρ_t = 1 + h (1[t ∈ S] / q_S − 1)   (mean 1),

moves the posterior mean of head C's observable φ_C = L − L(w*) under the *restricted* posterior
p_h(u) ∝ exp{−nβ L_h(u, v*) − (γ/2)‖u − u*‖²} (only head C's weights u move) at the rate

    d⟨φ_C⟩_h / dh |_{h=0} = −nβ Cov_WR[φ_C, L_S − L] = nβ χ^{C,R}_S,

where χ^{C,R}_S is the restricted-centred susceptibility, the mean over the S tokens of the per-token
χ^{C,R}_xy = −Cov_WR[φ_C, ℓ_xy − L]. `restricted_response` measures the left side by a central
difference (⟨φ_C⟩_{+h} − ⟨φ_C⟩_{−h}) / (2h nβ) with common random numbers (the same key, hence the
same minibatches and Langevin noise, at ±h: the difference has a far smaller variance than either
mean), and the right side from the draws of the unweighted run. The two are different estimators of
the same number; agreement within their Monte-Carlo error is the oracle check, and the slope of one
on the other tests the factor nβ and the sign.

Baker et al.'s full-centred χ (`susc.structural_susceptibilities`, ``centering="full"``) adds the term
E_WR[φ_C]·(E_WR − E_full)[L_S − L]: it is the response of the joint density-weighted mean
E_h[δ(u − u*) f], whose normalisation p_h(u*) also moves with h. `restricted_response` checks the
covariance part; the offset is a product of posterior means.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..models.masks import component_masks
from ..models.transformer import TransformerConfig, make_loss_fn
from ..stats.covariance import covariance, mean_estimate
from . import common

__all__ = ["subset_weights", "restricted_response"]


def subset_weights(subset, s: int, h: float) -> np.ndarray:
    """Token weights ρ = 1 + h(1[subset == s]/q_s − 1) (mean exactly 1): L_ρ = L + h(L_s − L)."""
    subset = np.asarray(subset)
    q = float(np.mean(subset == s))
    if q == 0.0:
        raise ValueError(f"subset: no token has label {s}; pick a subset that occurs in the probe")
    w = 1.0 + h * ((subset == s) / q - 1.0)
    if q < 1.0 and w.min() <= 0:       # needs −q/(1 − q) < h < 1
        raise ValueError(f"h = {h} makes some weights non-positive (min {w.min():.3f}); "
                         f"use h in ({-q / (1 - q):.3f}, 1)")
    return w


def _weighted(loss_fn):
    def weighted_loss(params, batch):            # per-token losses times the batch's token weights
        return loss_fn(params, {"tokens": batch["tokens"]}) * batch["weight"]
    return weighted_loss


def restricted_response(key, cfg, params, mcfg: TransformerConfig, probe, subset, subsets, h: float,
                        work_dir, *, num_draws: int, num_burnin: int, progress: bool = False) -> dict:
    """Finite-difference vs covariance estimates of nβ-scaled responses for every head and subset.

    Args:
        key: PRNG key, shared by the unweighted run and every ±h run (common random numbers).
        cfg: SGLD settings (step_size, nbeta, gamma, num_chains, sample_batch,
            num_batches, checkpoint_every, probe_chunk), as in `common.head_susceptibilities`.
        probe: ``[m, T + 1]`` windows: the posterior data and the probe set (φ_C = L on them − L(w*)).
        subset: ``[m, T]`` integer subset label of each target token; ``subsets``: the ids to test.
        h: the reweighting strength (central difference at ±h).
        num_draws, num_burnin: per chain, for every run.

    Returns:
        ``fd``/``fd_se`` ``[R, K]``: (⟨φ_C⟩_{+h} − ⟨φ_C⟩_{−h}) / (2h nβ); ``chi``/``chi_se`` ``[R, K]``:
        −Cov_WR[φ_C, L_S − L] from the unweighted draws; ``phi_mean`` ``[K]`` = E_WR[φ_C];
        ``delta_mean`` ``[R, K]`` = E_WR[L_S − L]; ``chi_tokens`` ``[K, N]`` the per-token
        restricted-centred χ^{C,R}_xy; ``seconds``.
    """
    from .. import sample, sgld
    from ..sampling.observables import observable
    work_dir = Path(work_dir)
    names, masks = component_masks(params, mcfg, embed=False, unembed=False)
    base_loss = make_loss_fn(mcfg)
    loss = _weighted(base_loss)                  # one function: every run shares one program
    probe = jnp.asarray(probe)
    subset = np.asarray(subset)
    obs = {"probe": observable(base_loss, {"tokens": probe}, chunk_size=cfg.probe_chunk)}
    kw = dict(sampler=sgld(cfg.step_size), nbeta=cfg.nbeta, gamma=cfg.gamma, masks=masks,
              num_chains=cfg.num_chains, num_draws=num_draws, num_burnin=num_burnin,
              batch_size=cfg.sample_batch, observables=obs, draw_loss="observable:probe",
              checkpoint_every=cfg.checkpoint_every, progress=progress,
              **common.deadline_kwargs())
    dtype = jax.tree.leaves(params)[0].dtype
    t0 = time.perf_counter()

    def run(weight, name, store):
        return sample(key, loss, params, {"tokens": probe, "weight": jnp.asarray(weight, dtype)},
                      store_draws=store, checkpoint_dir=work_dir / name, **kw)

    base = run(np.ones(subset.shape), "base", True)
    phi = np.asarray(base.loss, np.float64) - float(base.init_loss)           # [K, C, D]
    tok = np.asarray(base.observables["probe"], np.float64)                    # [K, C, D, m, T]
    K, C, D = phi.shape
    tok = tok.reshape(K, C, D, -1)
    dev = tok - np.asarray(base.loss, np.float64)[..., None]                   # ℓ_xy − L
    nb = cfg.num_batches
    chi_tok = np.stack([-covariance(phi[k], dev[k], num_batches=nb).value for k in range(K)])
    flat = subset.reshape(-1)
    out = {k: np.zeros((len(subsets), K)) for k in ("fd", "fd_se", "chi", "chi_se", "delta_mean")}
    for i, s in enumerate(subsets):
        dS = dev[..., flat == s].mean(-1)                                      # [K, C, D]: L_S − L
        for k in range(K):
            c = covariance(phi[k], dS[k], num_batches=nb)
            out["chi"][i, k], out["chi_se"][i, k] = -float(c.value), float(c.se)
            out["delta_mean"][i, k] = float(dS[k].mean())
        ends = []
        for sign in (+1, -1):
            r = run(subset_weights(subset, s, sign * h), f"s{s}{'p' if sign > 0 else 'm'}", False)
            ends.append(np.asarray(r.loss, np.float64))
        diff = (ends[0] - ends[1]) / (2 * h * cfg.nbeta)                       # paired, [K, C, D]
        for k in range(K):
            e = mean_estimate(diff[k], num_batches=nb)
            out["fd"][i, k], out["fd_se"][i, k] = float(e.value), float(e.se)
    shutil.rmtree(work_dir, ignore_errors=True)      # finished: the resume state is not needed
    return {**out, "phi_mean": phi.mean((1, 2)), "chi_tokens": chi_tok.astype(np.float32),
            "names": np.array(names), "seconds": np.float64(time.perf_counter() - t0)}
