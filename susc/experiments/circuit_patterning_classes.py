r"""Patterning by planted class: per-token weights that are constant within each pattern class.

Per-sequence susceptibilities χ̂_j are noisy (one covariance per sequence); the class-level
susceptibility pools every target token of a class c (induction, bigram, bracket, ...):

    χ̄_c = −Cov[φ, L_c − L_n],   L_c = mean loss over the training targets of class c,

the response of ⟨φ⟩ to moving mass onto class c. With token shares q_c and class weights ρ_c
(every token of class c weighted ρ_c, Σ_c q_c ρ_c = 1), L^ρ_n = Σ_c q_c ρ_c L_c and

    dμ = −nβ Cov[φ, Σ_c q_c (ρ_c − 1)(L_c − L_n)] = nβ Σ_c q_c (ρ_c − 1) χ̄_c   (first order).

The minimum-norm token weights for a target dμ in the class-constant subspace are ρ_c − 1 ∝ χ̄_c:
`susc.patterning.reweighting` applied to the token-expanded row χ̄_{c(t)} gives exactly that, and
mass is preserved because Σ_c q_c χ̄_c = 0 (L_n = Σ_c q_c L_c at every draw). The prediction is
`circuit_patterning.predicted_shifts` with ``shares=q`` and the check `resampled_shifts` with the
token weights ρ_{c(t)}.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..estimators import patterning
from ..estimators.susceptibility import susceptibility
from ..models.transformer import make_loss_fn
from ..samplers import sgld
from ..sampling.runner import sample
from .circuit_patterning import PatterningConfig, in_context_loss_fn, synthetic_config
from .transformer import model_config

__all__ = ["class_loss_fn", "class_susceptibility", "class_arm_weights"]


def class_loss_fn(mcfg, tokens, labels, num_classes: int, *, chunk: int = 1000):
    """``fn(params) -> [P]``: mean loss over all training targets of each class (0 where a class
    has no token), evaluated ``chunk`` sequences at a time inside one compiled map."""
    n = tokens.shape[0]
    m = -(-n // chunk) * chunk
    pad = m - n
    tok = np.concatenate([tokens, np.zeros((pad, tokens.shape[1]), tokens.dtype)])
    hot = np.eye(num_classes, dtype=np.float32)[labels]                    # [n, T, P]
    hot = np.concatenate([hot, np.zeros((pad,) + hot.shape[1:], np.float32)])
    counts = hot.sum(axis=(0, 1))
    tok = jnp.asarray(tok.reshape(m // chunk, chunk, -1))
    hot = jnp.asarray(hot.reshape((m // chunk, chunk) + hot.shape[1:]))
    loss_fn = make_loss_fn(mcfg)
    inv = jnp.asarray(np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0), jnp.float32)

    def fn(params):
        sums = jax.lax.map(lambda th: jnp.einsum("bt,btp->p", loss_fn(params, {"tokens": th[0]}),
                                                 th[1]), (tok, hot))
        return sums.sum(axis=0) * inv
    return fn


def class_susceptibility(cfg: PatterningConfig, params, tokens, labels, repeat_tokens, num_classes,
                         *, num_draws: int, phi_fn=None, progress: bool = False) -> dict:
    """χ̄_c = −Cov[φ, L_c − L_n] [P] at w_e (with SE), the token shares q [P] and the draws.
    φ is the in-context loss unless ``phi_fn(params) -> scalar`` is given."""
    mcfg = model_config(synthetic_config(cfg))
    q = np.bincount(np.asarray(labels).ravel(), minlength=num_classes) / np.asarray(labels).size
    res = sample(jax.random.key(cfg.sample_seed), make_loss_fn(mcfg), params,
                 {"tokens": jnp.asarray(tokens)}, sampler=sgld(cfg.step_size), nbeta=cfg.nbeta,
                 gamma=cfg.gamma, num_chains=cfg.num_chains, num_draws=num_draws,
                 num_burnin=cfg.num_burnin, batch_size=cfg.sample_batch,
                 observables={"phi": phi_fn or in_context_loss_fn(mcfg, repeat_tokens),
                              "class_loss": class_loss_fn(mcfg, tokens, labels, num_classes)},
                 num_batches=cfg.num_batches, progress=progress)
    phi = np.asarray(res.observables["phi"], np.float64)                  # [C, D]
    Lc = np.asarray(res.observables["class_loss"], np.float64)            # [C, D, P]
    centred = Lc - (Lc @ q)[..., None]
    est = susceptibility(phi, centred, num_batches=cfg.num_batches)
    return {"chi": np.asarray(est.value).reshape(-1), "chi_se": np.asarray(est.se).reshape(-1),
            "q": q, "phi": phi, "centred_losses": centred}


def class_arm_weights(cfg: PatterningConfig, chi, q, labels):
    """``(names, rho [3, P])``: the class weights of
    ``accelerate_class`` / ``delay_class`` at ``max_change`` (min-norm over tokens, via
    `patterning.reweighting` on the token-expanded χ̄) and ``random_class`` (a random class
    direction with Σ q_c v_c = 0 and the token-space norm of accelerate, weights ≥ 0)."""
    labels = np.asarray(labels)
    row = np.asarray(chi, np.float64)[labels].reshape(1, -1)
    first = {c: int(np.flatnonzero(labels.ravel() == c)[0]) for c in np.unique(labels)}

    def per_class(sign):
        w = patterning.reweighting(row, np.array([sign]), max_change=cfg.max_change).weights
        return np.array([w[first[c]] if c in first else 1.0 for c in range(len(q))])
    acc, dec = per_class(-1.0), per_class(1.0)
    for r in range(100):                          # the first draw with every weight >= 0
        try:
            rand = patterning.random_reweighting(jax.random.key(cfg.sample_seed + 40 + r), acc,
                                                 shares=q)
            break
        except ValueError:
            continue
    else:
        raise ValueError("no nonnegative random class direction in 100 draws; lower max_change.")
    return ["accelerate_class", "delay_class", "random_class"], np.stack([acc, dec, rand])
