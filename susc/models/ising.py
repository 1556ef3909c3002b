r"""The 2-D Ising model: exact enumeration and a vectorized heat-bath Monte Carlo sampler.

The physics prototype of every susceptibility in this package (book chapter 1). Spins
:math:`s_i \in \{-1, +1\}` sit on an ``L × L`` square lattice with **periodic** boundaries; the energy is

.. math::

    H(s) = -J \sum_{\langle ij\rangle} s_i s_j - \sum_i h_i s_i ,

with each nearest-neighbour bond counted once (``L >= 3``, so the four neighbours of a site are
distinct) and a field ``h`` that is a scalar or one value per site. The Boltzmann distribution is
:math:`p_\beta(s) = e^{-\beta H(s)}/Z`. The field enters with a *minus* sign, so by the
fluctuation–dissipation theorem

.. math::

    \frac{\partial\langle \phi\rangle}{\partial h_j} = +\beta\,\mathrm{Cov}[\phi, s_j], \qquad
    \frac{\partial\langle M\rangle}{\partial h} = \beta\,\mathrm{Var}[M], \qquad
    \chi_{ij} = \frac{\partial\langle s_i\rangle}{\partial h_j} = \beta\,\mathrm{Cov}[s_i, s_j].

In the learning setting the perturbation *raises* the loss, p ∝ exp{−nβ(L_n + hΔL)}, hence the
opposite sign there: χ(φ) = (1/nβ) ∂_h⟨φ⟩ = −Cov[φ, ΔL] (the convention of the rest of `susc`).

`exact` enumerates all 2^(L²) configurations (L ≤ 4: 65,536 states) in float64 NumPy. `sample`
runs heat-bath (Gibbs) chains, vectorized over chains inside one compiled ``lax.scan``: a sweep
updates the two checkerboard sublattices in turn when L is even, and every site in a fixed order
when L is odd (a checkerboard is not a proper colouring of an odd torus). Each update draws
s_i = +1 with probability σ(2β(J Σ_{j∼i} s_j + h_i)), the exact conditional, so the chain leaves
p_β invariant.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["energy", "magnetization", "ExactIsing", "exact", "sample", "CRITICAL_TEMPERATURE"]

# Onsager (1944): the infinite square lattice orders below T_c = 2J / log(1 + √2) (k_B = 1).
CRITICAL_TEMPERATURE = 2.0 / np.log(1.0 + np.sqrt(2.0))
_MAX_ENUM_SITES = 20  # 2^20 states × 20 sites is the most we enumerate (L² ≤ 20 means L ≤ 4)


def _check_L(L):
    if int(L) != L or L < 3:
        raise ValueError(f"L must be an integer >= 3 (periodic lattice with distinct neighbours), got {L!r}")
    return int(L)


def _field(h, L):
    h = np.asarray(h, dtype=np.float64)
    if h.shape not in ((), (L, L)):
        raise ValueError(f"h must be a scalar or an [L, L] = [{L}, {L}] array of site fields, got shape {h.shape}")
    return np.broadcast_to(h, (L, L))


def energy(spins, *, J: float = 1.0, h=0.0):
    """H(s) = −J Σ_⟨ij⟩ s_i s_j − Σ_i h_i s_i of spins ``[..., L, L]`` (±1), periodic; returns ``[...]``.

    Works on NumPy arrays (float64) and on JAX arrays (inside `sample`); ``h`` is a scalar or ``[L, L]``.
    """
    xp = jnp if isinstance(spins, jax.Array) else np
    s = spins if isinstance(spins, jax.Array) else np.asarray(spins, np.float64)
    bonds = s * (xp.roll(s, 1, axis=-1) + xp.roll(s, 1, axis=-2))  # right and down bonds: each once
    return -J * bonds.sum(axis=(-2, -1)) - (s * h).sum(axis=(-2, -1))


def magnetization(spins):
    """M(s) = Σ_i s_i of spins ``[..., L, L]``; returns ``[...]``."""
    return spins.sum(axis=(-2, -1))


@dataclasses.dataclass(frozen=True)
class ExactIsing:
    """The Boltzmann distribution of an L × L lattice by exact enumeration (float64).

    Attributes:
        spins: ``[S, L, L]`` all S = 2^(L²) configurations (int8, ±1).
        energy: ``[S]`` H(s); p: ``[S]`` Boltzmann probabilities (sum to 1); log_z: log Z.
        beta, J, h: the parameters.
    """

    spins: np.ndarray
    energy: np.ndarray
    p: np.ndarray
    log_z: float
    beta: float
    J: float
    h: np.ndarray

    def mean(self, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """⟨f⟩ for ``f(spins [S, L, L]) -> [S, *k]`` (vectorized over states); returns ``[*k]``."""
        v = np.asarray(f(self.spins.astype(np.float64)), np.float64)
        return np.tensordot(self.p, v, axes=(0, 0))

    def cov(self, f: Callable, g: Callable | None = None) -> np.ndarray:
        """Cov[f, g] (two-pass, no cancellation) for vectorized f, g -> ``[S, *k]``; returns ``[*kf, *kg]``."""
        s = self.spins.astype(np.float64)
        a = np.asarray(f(s), np.float64)
        b = a if g is None else np.asarray(g(s), np.float64)
        a = a - np.tensordot(self.p, a, axes=(0, 0))
        b = b - np.tensordot(self.p, b, axes=(0, 0))
        a2, b2 = a.reshape(len(s), -1), b.reshape(len(s), -1)
        return ((a2 * self.p[:, None]).T @ b2).reshape(a.shape[1:] + b.shape[1:])


def exact(L: int, beta: float, *, J: float = 1.0, h=0.0) -> ExactIsing:
    """Enumerate all 2^(L²) states of the periodic L × L lattice and weight them by e^{−βH}/Z.

    Args:
        L: side length, 3 or 4 (4 × 4 = 65,536 states; larger lattices are refused).
        beta: inverse temperature β ≥ 0. J: coupling. h: field, scalar or ``[L, L]``.
    """
    L = _check_L(L)
    if L * L > _MAX_ENUM_SITES:
        raise ValueError(f"exact enumeration of {L}x{L} needs 2^{L * L} states; use L <= 4 (or `sample`)")
    if not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be finite and >= 0, got {beta!r}")
    N = L * L
    codes = np.arange(2 ** N, dtype=np.int64)[:, None]
    spins = (1 - 2 * ((codes >> np.arange(N)) & 1)).astype(np.int8).reshape(-1, L, L)
    hf = _field(h, L)
    E = energy(spins, J=J, h=hf)
    a = -beta * E
    amax = a.max()
    w = np.exp(a - amax)                     # shift by the max: no overflow at low temperature
    z = w.sum()
    return ExactIsing(spins, E, w / z, float(np.log(z) + amax), float(beta), float(J), np.array(hf))


def _colour_masks(L):
    """Sets of sites updated together: the two checkerboard sublattices (L even), else single sites."""
    i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    if L % 2 == 0:
        return np.stack([(i + j) % 2 == c for c in (0, 1)]).astype(np.float32)
    return np.eye(L * L, dtype=np.float32).reshape(L * L, L, L)


def _uniform(state, shape):
    """Uniforms in [0, 1) from XLA's RngBitGenerator, carrying its raw ``uint32[4]`` state.

    Why not `jax.random.uniform` with a key per sweep: threefry inside a compiled loop costs XLA:CPU
    seconds of compile time per call site (and more under vmap); the stateful generator does not.
    The float conversion is the one `jax.random.uniform` uses (23 random mantissa bits).
    """
    state, bits = jax.lax.rng_bit_generator(state, shape, dtype=jnp.uint32)
    u = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
    return state, u


def _sweep(state, s, beta, J, h, masks):
    """One heat-bath sweep of all chains ``s [C, L, L]``: every site resampled from its conditional once."""
    state, u = _uniform(state, (masks.shape[0],) + s.shape)  # [K, C, L, L]

    def update(s, k):
        nb = jnp.roll(s, 1, -2) + jnp.roll(s, -1, -2) + jnp.roll(s, 1, -1) + jnp.roll(s, -1, -1)
        new = jnp.where(u[k] < jax.nn.sigmoid(2.0 * beta * (J * nb + h)), 1.0, -1.0)
        return jnp.where(masks[k] > 0, new, s)

    if masks.shape[0] == 2:  # checkerboard: unroll the two half-sweeps
        return state, update(update(s, 0), 1)
    return state, jax.lax.fori_loop(0, masks.shape[0], lambda k, s: update(s, k), s)


def _run(key, beta, J, h, *, L, num_chains, num_draws, num_burnin, sweeps_per_draw, init, observables):
    masks = jnp.asarray(_colour_masks(L))
    obs = dict(observables)

    def measure(s):  # s [C, L, L]
        out = {"magnetization": magnetization(s), "energy": energy(s, J=J, h=h)}
        out.update({name: jax.vmap(lambda x, f=fn: jnp.asarray(f(x)))(s) for name, fn in obs.items()})
        return out

    state = jax.random.bits(key, (4,), jnp.uint32)  # seeds one generator stream shared by all chains
    state, u0 = _uniform(state, (num_chains, L, L))
    if init == "random":
        s0 = jnp.where(u0 < 0.5, 1.0, -1.0)
    else:
        s0 = jnp.full((num_chains, L, L), 1.0 if init == "up" else -1.0)
    step = lambda t, carry: _sweep(carry[0], carry[1], beta, J, h, masks)
    carry = jax.lax.fori_loop(0, num_burnin, step, (state, s0))

    def draw(carry, _):
        carry = jax.lax.fori_loop(0, sweeps_per_draw, step, carry)
        return carry, measure(carry[1])

    _, out = jax.lax.scan(draw, carry, None, length=num_draws)
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), out)  # [D, C, ...] -> [C, D, ...]


_run_jit = jax.jit(_run, static_argnames=("L", "num_chains", "num_draws", "num_burnin", "sweeps_per_draw",
                                          "init", "observables"))


def sample(key, L: int, beta: float, *, J: float = 1.0, h=0.0, num_chains: int = 8, num_draws: int = 1000,
           num_burnin: int = 200, sweeps_per_draw: int = 1, init: str = "random",
           observables: Mapping[str, Callable] | None = None) -> dict[str, np.ndarray]:
    """Heat-bath Monte Carlo for p_β(s) ∝ exp{−βH(s)}, chains vectorized in one compiled loop.

    Args:
        key: PRNG key; it seeds one RngBitGenerator stream that all chains draw from (so a chain's
            draws depend on ``num_chains``; the statistics do not).
        L: side length (>= 3, periodic). beta: β ≥ 0. J: coupling. h: scalar or ``[L, L]`` field.
        num_chains, num_draws, num_burnin, sweeps_per_draw: each chain runs ``num_burnin`` sweeps,
            then records ``num_draws`` draws ``sweeps_per_draw`` sweeps apart (a sweep visits every site).
        init: "random" (independent ±1 spins), "up" or "down".
        observables: ``{name: fn(spins [L, L] float ±1) -> array}`` evaluated at every draw. The
            compiled program is cached on the function objects, so reuse them across calls; β, J
            and h are traced (a temperature scan compiles once).

    Returns:
        ``{name: [C, D, *s]}`` NumPy arrays with "magnetization" (M = Σ s_i), "energy" (H) and
        the requested observables: the layout of `susc.SampleResult.observables`, so
        `susc.covariance` and `susc.mean_estimate` apply directly.
    """
    L = _check_L(L)
    for name, v in (("num_chains", num_chains), ("num_draws", num_draws), ("sweeps_per_draw", sweeps_per_draw)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if int(num_burnin) != num_burnin or num_burnin < 0:
        raise ValueError(f"num_burnin must be a non-negative integer, got {num_burnin!r}")
    if init not in ("random", "up", "down"):
        raise ValueError(f"init must be 'random', 'up' or 'down', got {init!r}")
    if not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be finite and >= 0, got {beta!r}")
    observables = dict(observables or {})
    clash = {"magnetization", "energy"} & set(observables)
    if clash:
        raise ValueError(f"observable names {sorted(clash)} are reserved (always recorded); rename them")
    hf = jnp.asarray(_field(h, L), jnp.float32)
    out = _run_jit(key, jnp.float32(beta), jnp.float32(J), hf, L=L, num_chains=int(num_chains),
                   num_draws=int(num_draws), num_burnin=int(num_burnin), sweeps_per_draw=int(sweeps_per_draw),
                   init=init, observables=tuple(sorted(observables.items())))
    return {k: np.asarray(v) for k, v in out.items()}
