r"""Toy models with known answers (theory.md §4), each ready for `susc.sample` / `susc.nuts`.

Every factory returns a `Toy`: ``loss_fn(params, batch) -> (B,)`` per-example losses, ``params``
(the point w* the posterior is localized at), ``data`` (PyTree with leading axis n) and, where one
is known, the learning coefficient ``llc``. Sampling convention (theory.md §1):
p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}, L_n = mean per-example loss. Potential toys (quadratic,
anharmonic, monomial, normal crossing) use `susc.posterior.potential_loss`, so L_n = V and nβ plays
the inverse temperature t of theory.md §4; their exact moments are in `susc.exact`.

Learning coefficients: regular models λ = d/2; c·w^{2k}: 1/(2k); w1²w2²: 1/2 (multiplicity 2);
x·Πw_i^{k_i}: 1/(2 max k); reduced-rank regression: Aoyagi & Watanabe (2005) for any true rank r;
deep linear networks: Aoyagi (2024). Data generators take explicit PRNG keys.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..reference.exact import anharmonic_limits, anharmonic_potential
from ..sampling.posterior import potential_loss

__all__ = [
    "Toy", "quadratic", "anharmonic", "monomial", "normal_crossing", "polynomial_regression",
    "reduced_rank_regression", "train_rrr", "deep_linear_network", "linear_regression",
    "logistic_regression", "rrr_learning_coefficient", "dln_learning_coefficient",
]


@dataclasses.dataclass(frozen=True)
class Toy:
    """What `susc.sample` needs, plus the known answer: ``susc.sample(key, *toy.args, ...)``."""

    name: str
    loss_fn: Callable
    params: Any
    data: Any
    llc: float | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def args(self) -> tuple:
        return self.loss_fn, self.params, self.data

    def replace(self, **changes) -> "Toy":
        return dataclasses.replace(self, **changes)


def _potential_toy(name, V, params, llc, **info) -> Toy:
    loss_fn, data = potential_loss(V)
    return Toy(name, loss_fn, params, data, llc, dict(info, potential=V))


# ------------------------------------------------------------------ potentials (L_n = V, nβ = t)

def quadratic(H, w0=None) -> Toy:
    """V(w) = ½(w − w0)ᵀH(w − w0), params = w0; λ = rank(H)/2. Exact: `susc.exact.quadratic_posterior`."""
    H = np.atleast_2d(np.asarray(H, dtype=np.float64))
    d = H.shape[0]
    if H.shape != (d, d) or not np.allclose(H, H.T):
        raise ValueError(f"H must be a symmetric [d, d] matrix, got shape {H.shape}")
    w0 = np.zeros(d) if w0 is None else np.broadcast_to(np.asarray(w0, np.float64), (d,))
    Hj, w0j = jnp.asarray(H, jnp.float32), jnp.asarray(w0, jnp.float32)
    V = lambda w: 0.5 * (w - w0j) @ Hj @ (w - w0j)
    return _potential_toy("quadratic", V, w0j, 0.5 * np.linalg.matrix_rank(H), H=H, w0=w0)


def anharmonic(lam: float = 2.0, alpha: float | None = None, gamma4: float | None = None) -> Toy:
    """Primer eq. 4.10: V(x) = (λ/2)x² + (α/6)x³ + (γ₄/24)x⁴, params = [0.] (shape (1,)); λ_LLC = 1/2.

    Defaults follow the laplace repository checks: α = 0.5 λ^{3/2}, γ₄ = λ². ``info["limits"]``
    holds the t → ∞ limits (`susc.exact.anharmonic_limits`), e.g. t²Cov[x², x] → −2α/λ³.
    """
    alpha = 0.5 * lam ** 1.5 if alpha is None else alpha
    gamma4 = lam ** 2 if gamma4 is None else gamma4
    v = anharmonic_potential(lam, alpha, gamma4)
    return _potential_toy("anharmonic", lambda w: v(w[0]), jnp.zeros((1,), jnp.float32), 0.5,
                          lam=lam, alpha=alpha, gamma4=gamma4, limits=anharmonic_limits(lam, alpha))


def monomial(k: int, c: float = 1.0) -> Toy:
    """V(w) = c·w^{2k}, params = [0.]; λ = 1/(2k), and t⟨V⟩ = 1/(2k) exactly (`susc.exact.monomial_moment`)."""
    if int(k) != k or k < 1 or not c > 0:
        raise ValueError(f"need an integer k >= 1 and c > 0, got k={k}, c={c}")
    return _potential_toy(f"monomial{2 * k}", lambda w: c * w[0] ** (2 * k), jnp.zeros((1,), jnp.float32),
                          1.0 / (2 * k), k=int(k), c=c)


def normal_crossing() -> Toy:
    """V(w) = w1²w2², params = [0., 0.]; λ = 1/2 with multiplicity 2 (needs γ > 0 to be proper).
    Finite-t reference: `susc.exact.normal_crossing_mean_potential`."""
    return _potential_toy("normal_crossing", lambda w: w[0] ** 2 * w[1] ** 2, jnp.zeros((2,), jnp.float32),
                          0.5, multiplicity=2)


# ------------------------------------------------------------------------- regression toys

def polynomial_regression(key, powers: Sequence[int], *, n: int = 1000, x_std: float = 2.0,
                          y_std: float = 0.25) -> Toy:
    """devinterp's normal-crossing test model f(x) = x·Π_i w_i^{k_i}, ℓ = (y − f(x))², w* = 0.

    Data: x ~ N(0, x_std²), y = y_std·N(0, 1) independent of x (true parameter w = 0).
    λ = 1/(2 max k) (e.g. [1, 1] → 1/2, [0, 2] → 1/4, [2, 3] → 1/6).
    """
    p = np.asarray(powers, dtype=int)
    if p.ndim != 1 or (p < 0).any() or p.max() < 1:
        raise ValueError(f"powers must be nonnegative integers with max >= 1, got {powers}")
    kx, ky = jax.random.split(key)
    data = {"x": x_std * jax.random.normal(kx, (n,)), "y": y_std * jax.random.normal(ky, (n,))}
    def loss_fn(w, batch):
        # integer powers: w ** 0.0 has a NaN gradient at w = 0, w ** 0 does not
        f = jnp.prod(jnp.stack([w[i] ** int(k) for i, k in enumerate(p)]))
        return (batch["y"] - batch["x"] * f) ** 2

    return Toy(f"polynomial{list(p)}", loss_fn, jnp.zeros(len(p), jnp.float32), data,
               1.0 / (2 * int(p.max())), {"powers": p})


def _mse_rows(pred, y):
    return jnp.mean((y - pred) ** 2, axis=-1)  # mean over outputs, as torch's F.mse_loss


def reduced_rank_regression(key, M: int, H: int, N: int, *, r: int = 0, n: int = 1000,
                            noise_std: float = 1.0) -> Toy:
    """y = BAx with A [H, M], B [N, H] (no biases); ℓ = mean over outputs of (y − BAx)².

    r = 0 is devinterp's ``rrr_test`` setting: x ~ N(0, I_M) and y ~ N(0, I_N) independent. For
    r > 0, y = C0 x + noise_std·N(0, I) with a random rank-r teacher C0 = B0 A0. ``params`` is a
    torch-``nn.Linear``-style init, U(±1/√fan_in): call `train_rrr` before sampling. λ from
    `rrr_learning_coefficient`.
    """
    for name, v in (("M", M), ("H", H), ("N", N)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    if not 0 <= r <= min(M, H, N):
        raise ValueError(f"true rank r must satisfy 0 <= r <= min(M, H, N) = {min(M, H, N)}, got {r}")
    kx, ky, kt1, kt2, ka, kb = jax.random.split(key, 6)
    x = jax.random.normal(kx, (n, M))
    C0 = jnp.zeros((N, M))
    if r > 0:
        C0 = (jax.random.normal(kt1, (N, r)) @ jax.random.normal(kt2, (r, M))) / math.sqrt(r)
    y = x @ C0.T + noise_std * jax.random.normal(ky, (n, N))
    params = {"A": jax.random.uniform(ka, (H, M), minval=-1, maxval=1) / math.sqrt(M),
              "B": jax.random.uniform(kb, (N, H), minval=-1, maxval=1) / math.sqrt(H)}

    def loss_fn(w, batch):
        return _mse_rows(batch["x"] @ w["A"].T @ w["B"].T, batch["y"])

    return Toy(f"rrr(M={M},H={H},N={N},r={r})", loss_fn, params, {"x": x, "y": y},
               rrr_learning_coefficient(M, H, N, r), {"M": M, "H": H, "N": N, "r": r, "teacher": C0})


def train_rrr(toy: Toy, *, num_steps: int = 5000, learning_rate: float = 0.01, key=None) -> Toy:
    """devinterp's pre-training: ``num_steps`` full-batch Adam steps at ``learning_rate`` from
    ``toy.params``; returns the toy with the trained params (``info["train_loss"]`` = history)."""
    from ..train import train

    key = jax.random.key(0) if key is None else key  # full batch: the key orders nothing
    params, hist = train(key, toy.loss_fn, toy.params, toy.data, num_steps=num_steps, batch_size=None,
                         optimizer=optax.adam(learning_rate), chunk_size=min(num_steps, 1000), progress=False)
    return toy.replace(params=params, info=dict(toy.info, train_loss=hist["loss"]))


def deep_linear_network(key, widths: Sequence[int], *, true_rank: int, n: int = 10000,
                        noise_std: float = 0.0) -> Toy:
    """f(x) = W_L ⋯ W_1 x with W_l [H_l, H_{l−1}], widths = [H_0 (input), H_1, …, H_L (output)].

    The teacher (= ``params``, the true parameter: the posterior is localized there) is a
    product-balanced point at which *every* layer has rank ``true_rank``: with a random rank-r
    product C = U S Vᵀ (Gaussian entries, 1/√H_0 scale), W_l = Q_l S^{1/L} Q_{l−1}ᵀ with Q_0 = V,
    Q_L = U and random orthonormal H_l × r frames Q_l in between (so W_{l+1}ᵀW_{l+1} = W_l W_lᵀ).
    These are the most singular points of the zero set {W_L⋯W_1 = C}, where the local learning
    coefficient is Aoyagi's λ. (At other points of the same set the local coefficient is larger:
    with W_1 of rank r and the other layers of full rank, widths (4, 3, 5, 4) and r = 1, the Hessian
    of L_n alone has rank 13, so the local coefficient is at least 6.5 > λ = 6; tests/test_toy.py.)
    x ~ N(0, I), y = f(x) + noise_std·N(0, I); ℓ = mean over outputs of (y − f(x))².
    λ and its multiplicity: `dln_learning_coefficient(widths, true_rank)`.
    """
    widths = [int(h) for h in widths]
    lam, mult = dln_learning_coefficient(widths, true_rank, return_multiplicity=True)
    keys = jax.random.split(key, len(widths) + 2)
    L, r = len(widths) - 1, int(true_rank)
    C = jax.random.normal(keys[1], (widths[-1], widths[0])) / math.sqrt(widths[0])
    U, S, Vt = jnp.linalg.svd(C, full_matrices=False)
    if r == 0:
        Ws = [jnp.zeros((widths[l + 1], widths[l])) for l in range(L)]
    else:
        frames = [Vt[:r].T]
        for l in range(1, L):
            frames.append(jnp.linalg.qr(jax.random.normal(keys[l + 1], (widths[l], r)))[0])
        frames.append(U[:, :r])
        D = jnp.diag(S[:r] ** (1.0 / L))
        Ws = [frames[l + 1] @ D @ frames[l].T for l in range(L)]
    x = jax.random.normal(keys[0], (n, widths[0]))

    def forward(ws, x):
        for W in ws:
            x = x @ W.T
        return x

    y = forward(Ws, x) + noise_std * jax.random.normal(keys[-1], (n, widths[-1]))
    loss_fn = lambda ws, batch: _mse_rows(forward(ws, batch["x"]), batch["y"])
    return Toy(f"dln{widths}(r={true_rank})", loss_fn, Ws, {"x": x, "y": y}, lam,
               {"widths": widths, "true_rank": true_rank, "multiplicity": mult})


def linear_regression(key, n: int, d: int, *, sigma: float = 1.0, w_true=None, x_std: float = 1.0) -> Toy:
    """ℓ_i(w) = (y_i − x_iᵀw)²/(2σ²) with x ~ N(0, x_std² I), y = xᵀw_true + σ·N(0, 1); λ = d/2.

    ``params`` is the OLS solution (the minimizer of L_n). The exact posterior is
    ``susc.exact.linreg_posterior(info["X"], info["y"], sigma=σ, nbeta=..., gamma=..., center=...)``
    with float64 copies of the very same (float32) data.
    """
    kw, kx, ke = jax.random.split(key, 3)
    w_true = jax.random.normal(kw, (d,)) if w_true is None else jnp.asarray(w_true, jnp.float32)
    x = x_std * jax.random.normal(kx, (n, d))
    y = x @ w_true + sigma * jax.random.normal(ke, (n,))
    X64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w_ols = np.linalg.lstsq(X64, y64, rcond=None)[0]
    loss_fn = lambda w, batch: (batch["y"] - batch["x"] @ w) ** 2 / (2 * sigma ** 2)
    return Toy("linear_regression", loss_fn, jnp.asarray(w_ols, jnp.float32), {"x": x, "y": y}, d / 2,
               {"X": X64, "y": y64, "sigma": sigma, "w_true": np.asarray(w_true, np.float64)})


def logistic_regression(key, n: int, d: int, *, w_true=None, x_std: float = 1.0) -> Toy:
    """ℓ_i(w) = log(1 + e^{z_i}) − y_i z_i, z_i = x_iᵀw (Bernoulli NLL), y ~ Bernoulli(σ(xᵀw_true)).

    ``params`` is the maximum-likelihood estimate (Newton's method in float64); λ = d/2.
    """
    kw, kx, ky = jax.random.split(key, 3)
    w_true = jax.random.normal(kw, (d,)) if w_true is None else jnp.asarray(w_true, jnp.float32)
    x = x_std * jax.random.normal(kx, (n, d))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(x @ w_true)).astype(jnp.float32)
    X, Y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.zeros(d)
    for _ in range(100):  # Newton on the mean NLL (the 1e-12 in the Hessian only guards a singular solve)
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - Y) / n
        Hm = (X.T * (p * (1 - p))) @ X / n + 1e-12 * np.eye(d)
        step = np.linalg.solve(Hm, g)
        w -= step
        if np.abs(step).max() < 1e-12:
            break
    loss_fn = lambda w, batch: jax.nn.softplus(batch["x"] @ w) - batch["y"] * (batch["x"] @ w)
    return Toy("logistic_regression", loss_fn, jnp.asarray(w, jnp.float32), {"x": x, "y": y}, d / 2,
               {"X": X, "y": Y, "w_true": np.asarray(w_true, np.float64), "w_mle": w})


# ----------------------------------------------------------------- learning coefficients

def rrr_learning_coefficient(M: int, H: int, N: int, r: int = 0, *, return_multiplicity: bool = False):
    """λ of reduced-rank regression y = BAx (A: H×M, B: N×H) at a true map of rank r
    (Aoyagi & Watanabe 2005; theory.md §4.6):

    1. N+r ≤ M+H, M+r ≤ N+H, H+r ≤ M+N: λ = [2(H+r)(M+N) − (M−N)² − (H+r)²]/8, plus 1/8 and
       multiplicity 2 when M+N+H+r is odd;
    2. M+H < N+r: λ = (HM − Hr + Nr)/2;   3. N+H < M+r: λ = (HN − Hr + Mr)/2;   4. M+N < H+r: λ = MN/2.
    """
    for name, v in (("M", M), ("H", H), ("N", N)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    if int(r) != r or not 0 <= r <= min(M, H, N):
        raise ValueError(f"true rank r must be an integer in [0, min(M, H, N)] = [0, {min(M, H, N)}], got {r}")
    mult = 1
    if M + H < N + r:
        lam = (H * M - H * r + N * r) / 2
    elif N + H < M + r:
        lam = (H * N - H * r + M * r) / 2
    elif M + N < H + r:
        lam = M * N / 2
    else:
        lam = (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2) / 8
        if (M + N + H + r) % 2:
            lam, mult = lam + 1 / 8, 2
    return (lam, mult) if return_multiplicity else lam


def dln_learning_coefficient(widths: Sequence[int], r: int = 0, *, return_multiplicity: bool = False):
    """λ of a deep linear network with layer widths [H_0 (input), …, H_L (output)] at a true map of
    rank r (Aoyagi 2024, "Consideration on the learning efficiency of multiple-layered neural
    networks with linear units"; the port follows validating_lambdahat's
    ``true_dln_learning_coefficient``).

    With M_i = H_i − r, let S be the set of the ℓ+1 smallest M_i such that max_S M < min_{S^c} M,
    Σ_S M ≥ ℓ·max_S M and Σ_S M < ℓ·min_{S^c} M. With s = Σ_S M_i, a = s − (⌈s/ℓ⌉ − 1)ℓ:

        λ = [−r² + r(H_0 + H_L)]/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4·(s/ℓ)² + ½ Σ_{i<j∈S} M_i M_j,

    multiplicity a(ℓ − a) + 1. Two layers reduce to `rrr_learning_coefficient`; one layer to H_0H_1/2.
    """
    H = [int(h) for h in widths]
    if len(H) < 2 or any(h != w or h < 1 for h, w in zip(H, widths)):
        raise ValueError(f"widths must be >= 2 positive integers [input, hidden..., output], got {widths}")
    if int(r) != r or not 0 <= r <= min(H):
        raise ValueError(f"true rank r must be an integer in [0, min(widths)] = [0, {min(H)}], got {r}")
    Ms = sorted(h - r for h in H)
    for size in range(2, len(Ms) + 1):
        S, rest, ell = Ms[:size], Ms[size:], size - 1
        s = sum(S)
        if rest and not (S[-1] < rest[0] and s < ell * rest[0]):
            continue
        if s >= ell * S[-1]:
            break
    else:  # unreachable: the full set always satisfies the conditions
        raise RuntimeError(f"no admissible subset for widths={widths}, r={r}")
    a = s - (math.ceil(s / ell) - 1) * ell
    pairs = sum(S[i] * S[j] for i in range(len(S)) for j in range(i + 1, len(S)))
    lam = (-r * r + r * (H[0] + H[-1])) / 2 + a * (ell - a) / (4 * ell) \
        - ell * (ell - 1) / 4 * (s / ell) ** 2 + pairs / 2
    return (lam, a * (ell - a) + 1) if return_multiplicity else lam
