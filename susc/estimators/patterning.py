"""Patterning: invert the linear response of structural coordinates to data (theory.md §1.8).

Conventions (theory.md §1): localized tempered posterior ``p(w) ∝ exp{-nβ L_n^ρ(w) - (γ/2)‖w - w*‖²}``
with ``L_n^ρ = (1/n) Σ_j ρ_j ℓ_j``; structural coordinates μ = (⟨φ_1⟩, …, ⟨φ_k⟩). The centred
per-sample susceptibility matrix ``χ̂ ∈ R^{k×n}`` has entries ``χ̂_{ij} = -Cov[φ_i, ℓ_j - L_n]``
(rows = observables, columns = training samples); the single-weight derivative is
``∂⟨φ_i⟩/∂ρ_j = -β Cov[φ_i, ℓ_j]`` with β = nβ/n (β, not nβ).

First-order response. For a data change dq (masses on samples, Σ dq = 0), ``dμ = nβ χ dq``. For a
reweighting ρ = 1 + dρ:
    dμ_i = Σ_j ∂⟨φ_i⟩/∂ρ_j dρ_j = -β Σ_j Cov[φ_i, ℓ_j] dρ_j
         = β (χ̂ dρ)_i - β Cov[φ_i, L_n] Σ_j dρ_j,
so ``dμ = β χ̂ dρ`` exactly to first order when the total mass is preserved (Σ dρ = 0) or when χ̂
is the uncentred matrix -Cov[φ_i, ℓ_j]. With dρ = α s and s = χ̂† dμ (s lies in the row space of
χ̂, orthogonal to 1 when the rows of χ̂ sum to zero, so Σρ = n), ``dμ_pred = αβ χ̂ χ̂† dμ`` = αβ dμ
when dμ ∈ im χ̂ (else αβ times its orthogonal projection onto im χ̂).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["PatterningSolution", "Reweighting", "solve", "reweighting", "predicted_shift",
           "random_reweighting", "verify", "retrain_weighted"]


class PatterningSolution(NamedTuple):
    """Minimum-norm data change ``dq = (1/nβ) χ† dμ`` and residual ``‖nβ χ dq - dμ‖``."""
    dq: np.ndarray
    residual: float
    rank: int


class Reweighting(NamedTuple):
    """Patterning weights ρ = 1 + α s, s = χ̂† dμ, with diagnostics.

    ``predicted_shift`` = αβ χ̂ s (first order; equals αβ dμ when dμ ∈ im χ̂), or None when nβ was
    not given. ``mass_change`` = Σρ - n (≈ 0 when the rows of χ̂ are centred).
    """
    weights: np.ndarray
    scores: np.ndarray
    predicted_shift: np.ndarray | None
    mean_weight: float
    frac_negative: float
    mass_change: float


def _as_chi(chi, dmu, name="chi"):
    chi = np.asarray(chi, dtype=np.float64)
    dmu = np.asarray(dmu, dtype=np.float64)
    if chi.ndim != 2:
        raise ValueError(f"`{name}` must be a [k, n] matrix (rows = observables, columns = samples); "
                         f"got shape {chi.shape}.")
    if dmu.shape != (chi.shape[0],):
        raise ValueError(f"`dmu` must have shape (k,) = ({chi.shape[0]},), one target per observable; "
                         f"got {dmu.shape}.")
    return chi, dmu


def solve(chi, dmu, *, nbeta: float | None = None, rcond: float | None = None) -> PatterningSolution:
    """Patterning solution ``dq = (1/nβ) χ† dμ`` (theory.md §1.8, PiP eq. 12).

    Minimum-L2-norm solution of ``nβ χ dq = dμ`` (least squares when dμ ∉ im χ), via SVD with
    singular values below ``rcond·σ_max`` treated as zero (NumPy ``lstsq`` default when None).
    ``nbeta=None`` means nβ = 1, i.e. the hyperparameter form ``dh = χ† dμ`` (2601.13548).
    """
    chi, dmu = _as_chi(chi, dmu)
    scale = 1.0 if nbeta is None else float(nbeta)
    if not scale > 0:
        raise ValueError(f"`nbeta` must be positive; got {nbeta!r}.")
    x, _, rank, _ = np.linalg.lstsq(chi, dmu, rcond=rcond)
    dq = x / scale
    residual = float(np.linalg.norm(scale * chi @ dq - dmu))
    return PatterningSolution(dq=dq, residual=residual, rank=int(rank))


def predicted_shift(chi, weights, nbeta: float, n: int | None = None) -> np.ndarray:
    """First-order shift of μ under weights ρ: ``dμ = β χ (ρ - 1)`` with β = nβ/n.

    Exact to first order when ``chi`` is the uncentred matrix -Cov[φ_i, ℓ_j] (any ρ), or the
    centred χ̂ and Σ(ρ - 1) = 0 (see the module docstring). ``n`` defaults to ``chi.shape[1]``.
    """
    chi = np.asarray(chi, dtype=np.float64)
    rho = np.asarray(weights, dtype=np.float64)
    if chi.ndim != 2 or rho.shape != (chi.shape[1],):
        raise ValueError(f"need `chi` [k, n] and `weights` (n,); got {chi.shape} and {rho.shape}.")
    n = chi.shape[1] if n is None else int(n)
    return (float(nbeta) / n) * chi @ (rho - 1.0)


def reweighting(chi_hat, dmu, *, alpha: float | None = None, max_change: float | None = None,
                nbeta: float | None = None, rcond: float | None = None) -> Reweighting:
    """Patterning weights ``ρ_j = 1 + α (χ̂† dμ)_j`` (PiP eqs. 13–14).

    Give exactly one of ``alpha`` and ``max_change``: the latter sets α = max_change / max_j |s_j|,
    so that ``max_j |ρ_j − 1| = max_change`` (``max_change ≤ 1`` keeps every weight ≥ 0: a
    reweighting that retraining with nonnegative weights can realize without PiP's label swap).

    ``chi_hat`` is the centred per-sample susceptibility matrix [k, n], χ̂_ij = -Cov[φ_i, ℓ_j - L_n].
    With s = χ̂† dμ, dρ = α s and the first-order shift is ``dμ_pred = β χ̂ dρ = αβ χ̂ s`` (β = nβ/n,
    n = number of columns), which equals ``αβ dμ`` when dμ ∈ im χ̂. Mass is preserved (Σρ = n) when
    the rows of χ̂ sum to zero, since then s ⟂ 1. Negative ρ_j (reported as ``frac_negative``) mean
    α is outside the regime where reweighting is a probability measure; PiP swap labels there.
    """
    chi, dmu = _as_chi(chi_hat, dmu, "chi_hat")
    if (alpha is None) == (max_change is None):
        raise ValueError("give exactly one of `alpha` (the step α) and `max_change` "
                         "(max_j |ρ_j − 1|, which sets α).")
    s = np.linalg.lstsq(chi, dmu, rcond=rcond)[0]
    if max_change is not None:
        if not max_change > 0:
            raise ValueError(f"`max_change` must be positive; got {max_change!r}.")
        peak = float(np.max(np.abs(s)))
        if peak == 0:
            raise ValueError("χ̂† dμ is zero (dμ ⟂ im χ̂): no reweighting moves these coordinates.")
        alpha = float(max_change) / peak
    rho = 1.0 + float(alpha) * s
    pred = None if nbeta is None else predicted_shift(chi, rho, nbeta)
    return Reweighting(weights=rho, scores=s, predicted_shift=pred, mean_weight=float(rho.mean()),
                       frac_negative=float(np.mean(rho < 0)), mass_change=float(rho.sum() - rho.size))


def random_reweighting(key, like, *, shares=None, centred: bool = True) -> np.ndarray:
    """A random-direction control for a reweighting ``like`` = ρ: ``1 + r`` with r Gaussian,
    centred (Σ_j s_j r_j = 0, mass preserved) when ``centred``, and of the same size,
    Σ_j s_j r_j² = Σ_j s_j (ρ_j − 1)², with shares s_j (default equal: ‖r‖ = ‖ρ − 1‖; token
    shares q_c when ρ is a weight per class of tokens).

    A patterning claim should beat this control: same size of data change, no susceptibility in
    its direction (its predicted shift β χ̂ r is ≈ 0 up to ‖χ̂‖‖r‖/√n). Raises when the draw has a
    negative weight (pick another key or a smaller ρ − 1).
    """
    like = np.asarray(like, dtype=np.float64)
    if like.ndim != 1:
        raise ValueError(f"`like` must be a 1-D weight vector ρ; got shape {like.shape}.")
    s = np.ones_like(like) if shares is None else np.asarray(shares, dtype=np.float64)
    if s.shape != like.shape or np.any(s < 0) or not s.sum() > 0:
        raise ValueError(f"`shares` must be nonnegative of shape {like.shape} with a positive sum.")
    r = np.asarray(jax.random.normal(key, like.shape), dtype=np.float64)
    if centred:
        r -= (r @ s) / s.sum()
    r *= np.sqrt(np.sum(s * (like - 1.0) ** 2) / np.sum(s * r ** 2))
    if np.any(1.0 + r < 0):
        raise ValueError("the random control has negative weights at this norm; use a smaller "
                         "reweighting or another key.")
    return 1.0 + r


def verify(mu_fn: Callable, weights, predicted, *, names: Sequence[str] | None = None) -> dict:
    """Compare the predicted shift with the realized one ``μ(ρ) - μ(1)``.

    ``mu_fn(weights) -> (k,)`` structural coordinates (posterior expectations by re-sampling, or a
    closed form). Returns ``{"realized", "predicted", "cosine", "rel_error", "table"}`` where
    rel_error = ‖realized - predicted‖/‖predicted‖ and table maps each coordinate name to
    ``{"predicted", "realized", "ratio"}``.
    """
    rho = np.asarray(weights, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    mu0 = np.asarray(mu_fn(np.ones_like(rho)), dtype=np.float64).reshape(-1)
    mu1 = np.asarray(mu_fn(rho), dtype=np.float64).reshape(-1)
    if mu0.shape != predicted.shape:
        raise ValueError(f"`mu_fn` returned {mu0.shape[0]} coordinates but `predicted` has "
                         f"{predicted.shape[0]}.")
    realized = mu1 - mu0
    norm_p, norm_r = np.linalg.norm(predicted), np.linalg.norm(realized)
    cosine = float(realized @ predicted / (norm_p * norm_r)) if norm_p > 0 and norm_r > 0 else float("nan")
    rel = float(np.linalg.norm(realized - predicted) / norm_p) if norm_p > 0 else float("nan")
    names = list(names) if names is not None else [f"phi_{i}" for i in range(predicted.size)]
    if len(names) != predicted.size:
        raise ValueError(f"`names` has {len(names)} entries for {predicted.size} coordinates.")
    table = {nm: {"predicted": float(p), "realized": float(r),
                  "ratio": float(r / p) if p != 0 else float("nan")}
             for nm, p, r in zip(names, predicted, realized)}
    return {"realized": realized, "predicted": predicted, "cosine": cosine, "rel_error": rel,
            "table": table}


def retrain_weighted(loss_fn: Callable, params: Any, data: Any, weights, *,
                     optimizer: optax.GradientTransformation, steps: int,
                     batch_size: int | None = None, key: jax.Array | None = None):
    """Retrain on the normalized weighted loss ``Σ_j ρ_j ℓ_j / Σ_j ρ_j`` with optax.

    One jitted ``lax.scan`` of ``steps`` updates from ``params``. Full batch by default; with
    ``batch_size`` (needs ``key``) each step uses the unbiased minibatch estimate
    ``(n/B) Σ_{j∈B} ρ_j ℓ_j / Σ_j ρ_j`` (sampling without replacement). Per-token losses are
    averaged over their token axes. Negative ρ_j are allowed (they push that sample's loss up)
    as long as Σρ > 0. Returns ``(params, losses)`` with ``losses[t]`` the objective at step t.
    """
    leaves = jax.tree_util.tree_leaves(data)
    n = int(leaves[0].shape[0])
    rho = jnp.asarray(weights)
    if rho.shape != (n,):
        raise ValueError(f"`weights` must have shape (n,) = ({n},); got {rho.shape}.")
    total = float(jnp.sum(rho))
    if not total > 0:
        raise ValueError(f"the total weight Σρ must be positive to normalize the loss; got {total}.")
    if batch_size is not None and key is None:
        raise ValueError("minibatch retraining (`batch_size`) needs a PRNG `key`.")
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1; got {steps}.")

    def objective(p, batch, r, scale):
        per = loss_fn(p, batch)
        per = per.reshape(per.shape[0], -1).mean(axis=1)
        return scale * jnp.sum(r * per) / total

    @jax.jit
    def run(params, data, rho, key):
        def step(carry, k):
            p, state = carry
            if batch_size is None:
                batch, r, scale = data, rho, 1.0
            else:
                idx = jax.random.choice(k, n, (batch_size,), replace=False)
                batch = jax.tree_util.tree_map(lambda a: a[idx], data)
                r, scale = rho[idx], n / batch_size
            val, g = jax.value_and_grad(objective)(p, batch, r, scale)
            updates, state = optimizer.update(g, state, p)
            return (optax.apply_updates(p, updates), state), val
        keys = jax.random.split(key, int(steps))
        (p, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), keys)
        return p, losses

    return run(params, data, rho, key if key is not None else jax.random.key(0))
