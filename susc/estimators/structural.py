r"""Structural susceptibilities: which model component responds to which data (theory.md §1.7).

Conventions (theory.md §1): localized tempered posterior
:math:`p(w) \propto \exp\{-n\beta L_n(w) - \tfrac\gamma2\|w-w^*\|^2\}` (only ``nbeta`` = nβ enters);
χ(φ) = (1/nβ)∂_h⟨φ⟩ = −Cov[φ, ΔL]; for a single probe token xy the perturbation is ΔL = ℓ_xy − L.

Component observable. Split w = (u, c) with c the parameters of component C. The observable
φ_C(w) = δ(u − u*)[L(w) − L(w*)] ("only the component moves") is estimated with a *restricted* chain
that samples c with u clamped at u* (``susc.sample(..., mask=...)``); at its draws
φ_C = L_n(draw) − L_n(w*). The per-token structural susceptibility (Baker et al. 2025, App. C.4;
devinterp v2 ``susceptibilities.py``) is

.. math::

    \chi^C_{xy} = -\big(\mathbb E_C[\phi_C(\ell_{xy} - L)] - \mathbb E_C[\phi_C]\,\mathbb E_{\rm full}[\ell_{xy} - L]\big),

with E_C over the restricted chain and the centring term from an unrestricted (full) chain
(``centering="full"``, default), or the plain restricted covariance −Cov_C[φ_C, ℓ_xy − L]
(``centering="restricted"``). L is the draw's training loss (``result.loss``). The δ-function makes
this the renormalized Z_full/Z_C · χ^C_xy: magnitudes carry a component-dependent (token-independent)
factor, so compare components only after column z-scoring (`standardize`), which removes it.
The two centrings differ by E_C[φ_C]·(E_C − E_full)[ℓ_xy − L], a product of posterior means; only
the restricted one is a covariance whose nβ multiple is the response of E_C[φ_C] to reweighted data
(checked by finite differences in `susc.experiments.response`). On the book's corpus model the
offset dominates (chapter 13).
Sign after standardization: **negative ⇒ the component expresses** the continuation y|x,
positive ⇒ suppresses.

All K components run as ONE vectorized program (``susc.sample(..., masks=stacked)``), plus one full
run. The estimate and its batch-means SE are computed from per-(chain, batch) moments, so stored
draws and streaming runs (``store_draws=False``) give the same numbers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from ..stats.covariance import Estimate
from ..sampling.observables import observable
from ..sampling.result import SampleResult, StackedResult
from ..sampling.runner import sample

__all__ = ["StructuralResult", "structural_susceptibilities", "structural_from_results", "stack_masks",
           "standardize", "pca", "PCAResult"]

_FULL_SALT = 0x5EED  # the full run's key is fold_in(key, _FULL_SALT): independent of the restricted chains


def stack_masks(masks: Sequence[Any]):
    """Stack K mask PyTrees (same structure as params, 0/1 leaves) into one with a leading K axis."""
    masks = list(masks)
    if not masks:
        raise ValueError("stack_masks needs at least one mask PyTree")
    s0 = jax.tree_util.tree_structure(masks[0])
    for k, m in enumerate(masks[1:], 1):
        if jax.tree_util.tree_structure(m) != s0:
            raise ValueError(f"mask {k} has a different PyTree structure than mask 0; every mask must "
                             "have the structure of params")
    return jax.tree_util.tree_map(lambda *ms: np.stack([np.asarray(m, np.float32) for m in ms]), *masks)


@dataclasses.dataclass(frozen=True)
class StructuralResult(Estimate):
    """χ^C_xy for K components × N probe tokens: ``value``/``se`` of shape ``[K, N]``.

    ``names`` label the components, ``restricted`` is the K-stacked restricted `SampleResult` and
    ``full`` the unrestricted one (None for ``centering="restricted"``). ``matrix`` is the
    ``[tokens, components]`` layout used by `standardize` and `pca`.
    """

    names: tuple = ()
    centering: str = "full"
    restricted: Any = None
    full: Any = None

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.value).T

    def standardized(self) -> np.ndarray:
        """`standardize` of the ``[tokens, components]`` matrix (negative ⇒ expresses)."""
        return standardize(self.matrix)


def _batch_moments(phi, delta, num_batches):
    """Per (chain, batch) count, mean φ, mean ΔL and co-moment of φ [..., C, D], ΔL [..., C, D, N]."""
    D = phi.shape[-1]
    B = int(min(max(int(num_batches), 1), D))
    edges = (np.arange(B + 1) * D) // B
    n, mp, md, cm = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        p = phi[..., lo:hi].astype(np.float64)
        d = delta[..., lo:hi, :].astype(np.float64)
        pm, dm = p.mean(-1), d.mean(-2)
        n.append(np.full(p.shape[:-1], hi - lo, np.float64))
        mp.append(pm)
        md.append(dm)
        cm.append(np.einsum("...d,...dn->...n", p - pm[..., None], d - dm[..., None, :]))
    st = lambda xs: np.stack(xs, axis=phi.ndim - 1)            # [..., C, B, ...]
    return st(n), st(mp), st(md), st(cm)


def _estimate(n, mphi, mdel, cm, full_n=None, full_mdel=None, centering="full"):
    """χ from per-group moments: n, mphi [K, G]; mdel, cm [K, G, N]; full_n [Gf], full_mdel [Gf, N]."""
    K, G = n.shape
    N = n.sum(1)                                                  # [K]
    Mphi = (n * mphi).sum(1) / N
    Mdel = np.einsum("kg,kgn->kn", n, mdel) / N[:, None]
    good = n > 1
    if centering == "restricted":
        C = cm.sum(1) + np.einsum("kg,kg,kgn->kn", n, mphi - Mphi[:, None], mdel - Mdel[:, None])
        value = -C / (N - 1)[:, None]
        sub = cm / np.maximum(n - 1, 1)[..., None]
    else:
        Nf = full_n.sum()
        m_full = (full_n[:, None] * full_mdel).sum(0) / Nf        # E_full[ℓ − L]  [N_tok]
        gf = full_n > 0
        se_full = full_mdel[gf].std(0, ddof=1) / np.sqrt(gf.sum()) if gf.sum() > 1 else np.nan
        sub = cm / np.maximum(n, 1)[..., None] + mphi[..., None] * (mdel - m_full)   # batch E[φ(ΔL − m)]
        value = -np.einsum("kg,kgn->kn", n, sub) / N[:, None]
    se = np.stack([sub[k][good[k]].std(0, ddof=1) / np.sqrt(good[k].sum()) if good[k].sum() > 1
                   else np.full(sub.shape[2:], np.nan) for k in range(K)])
    if centering != "restricted":
        se = np.sqrt(se ** 2 + (Mphi[:, None] * se_full) ** 2)   # independent full run
    return value, se, int(N.min())


def _restricted_moments(res: SampleResult, probe: str, num_batches):
    """(n, mphi, mdel, cm) [K, C·B, ...] of a K-stacked restricted run (stored draws or streaming)."""
    if probe in res.observables:
        pr = np.asarray(res.observables[probe])
        K, C, D = pr.shape[:3]
        phi = np.asarray(res.loss, np.float64) - res.init_loss
        delta = pr.reshape(K, C, D, -1) - np.asarray(res.loss)[..., None]
        out = _batch_moments(phi, delta, num_batches)
    else:
        lp, ll = _need(res, f"loss|{probe}"), _need(res, "loss")
        K, C = lp.count.shape[:2]
        mdel = lp.mean_y.reshape(*lp.mean_y.shape[:3], -1) - lp.mean_x[..., None]
        cm = lp.comoment.reshape(*lp.comoment.shape[:3], -1) - ll.comoment[..., None]
        out = (lp.count, lp.mean_x - res.init_loss, mdel, cm)
    return tuple(np.asarray(a, np.float64).reshape(a.shape[0], -1, *a.shape[3:]) for a in out)


def _full_moments(res: SampleResult, probe: str, num_batches):
    """(n [G], mean ΔL [G, N]) of the unrestricted run."""
    if probe in res.observables:
        pr = np.asarray(res.observables[probe])
        C, D = pr.shape[:2]
        delta = pr.reshape(C, D, -1) - np.asarray(res.loss)[..., None]
        n, _, md, _ = _batch_moments(np.asarray(res.loss)[None], delta[None], num_batches)
        return n[0].reshape(-1), md[0].reshape(C * n.shape[-1], -1)
    lp = _need(res, f"loss|{probe}")
    md = lp.mean_y.reshape(*lp.mean_y.shape[:2], -1) - lp.mean_x[..., None]
    return lp.count.reshape(-1).astype(np.float64), md.reshape(-1, md.shape[-1]).astype(np.float64)


def _need(res, key):
    if key not in res.moments:
        raise ValueError(f"the run has neither stored probe draws nor streaming moments {key!r}; sample with "
                         f"store_draws=True, or accumulate=[('loss', probe)]")
    return res.moments[key]


def structural_from_results(restricted, full=None, *, probe: str = "probe", centering: str = "full",
                            names: Sequence[str] | None = None, num_batches: int = 8) -> StructuralResult:
    """χ^C_xy from finished runs: ``restricted`` is a K-stacked `SampleResult` (``masks=``) or a list of
    K single-component results (same num_chains/num_draws); ``full`` the unrestricted run (needed for
    ``centering="full"``). ``probe`` names the observable with the probe's per-token losses."""
    if centering not in ("full", "restricted"):
        raise ValueError(f"centering must be 'full' or 'restricted', got {centering!r}")
    if centering == "full" and full is None:
        raise ValueError("centering='full' needs the unrestricted run `full` (or use centering='restricted')")
    parts = [restricted] if isinstance(restricted, (SampleResult, StackedResult)) else list(restricted)
    mom = [_restricted_moments(r if isinstance(r, StackedResult) else _lift(r), probe, num_batches)
           for r in parts]
    n, mphi, mdel, cm = (np.concatenate(x, 0) for x in zip(*mom))
    fn = fm = None
    if centering == "full":
        fn, fm = _full_moments(full, probe, num_batches)
        if fm.shape[1] != mdel.shape[2]:
            raise ValueError(f"full run has {fm.shape[1]} probe tokens, restricted runs {mdel.shape[2]}")
    value, se, N = _estimate(n, mphi, mdel, cm, fn, fm, centering)
    names = tuple(names) if names is not None else tuple(str(k) for k in range(value.shape[0]))
    if len(names) != value.shape[0]:
        raise ValueError(f"names has {len(names)} entries for {value.shape[0]} components")
    return StructuralResult(value, se, N, names, centering, restricted, full)


def _lift(r: SampleResult) -> SampleResult:
    """A single-component result as a K = 1 stacked one."""
    if not isinstance(r, SampleResult):
        raise TypeError(f"restricted runs must be SampleResult/StackedResult, got {type(r).__name__}")
    obs = {k: np.asarray(v)[None] for k, v in r.observables.items()}
    lift = lambda a: None if a is None else np.asarray(a)[None]  # noqa: E731
    mom = {k: dataclasses.replace(m, **{f.name: lift(getattr(m, f.name)) for f in dataclasses.fields(m)})
           for k, m in r.moments.items()}
    return StackedResult(np.asarray(r.loss)[None], r.init_loss, obs, mom, r.settings, None, r.wall_time)


def structural_susceptibilities(key, loss_fn: Callable, params, data, probe_losses_fn: Callable, masks, *,
                                names: Sequence[str] | None = None, sampler, nbeta: float, gamma: float = 0.0,
                                num_chains: int = 4, num_draws: int = 200, batch_size: int | None = None,
                                centering: str = "full", num_batches: int = 8, store_draws: bool = True,
                                probe_data=None, probe_chunk: int | None = None, checkpoint_dir=None,
                                **sample_kwargs) -> StructuralResult:
    """Per-token structural susceptibilities of K components in one vectorized run (+ one full run).

    Args:
        key: PRNG key. The restricted chains use ``key`` (component k's chains equal a single run with
            ``mask=masks[k]`` and the same key); the full run uses ``fold_in(key, 0x5EED)``.
        loss_fn, params, data: the training loss contract of `susc.sample` (L at draws = ``result.loss``).
        probe_losses_fn: ``params -> per-token probe losses`` of any shape (flattened to N tokens),
            evaluated at every draw inside the compiled loop; with ``probe_data``,
            ``probe_losses_fn(params, batch) -> [rows, ...]`` over the probe set, passed at run time
            and evaluated ``probe_chunk`` rows at a time (no recompilation for another probe set of
            the same shapes; memory bounded by the chunk). Often ``probe_losses_fn = loss_fn``.
        masks: PyTree like params whose leaves carry a leading axis K (e.g.
            ``susc.models.masks.component_masks``), or a list of K mask PyTrees.
        names: K component labels. centering: "full" (default, Baker et al. C.4) or "restricted".
        store_draws: False streams per-(chain, batch) moments instead of keeping the probe draws
            (memory independent of num_draws; same estimate).
        checkpoint_dir: resumable runs: the restricted run checkpoints into ``checkpoint_dir/restricted``
            and the full run into ``checkpoint_dir/full`` (with ``checkpoint_every=`` in sample_kwargs).
        sampler, nbeta, gamma, num_chains, num_draws, batch_size, **sample_kwargs: as `susc.sample`.

    Returns:
        `StructuralResult` with ``value``/``se`` ``[K, N]``; ``.standardized()`` for comparisons.
    """
    if centering not in ("full", "restricted"):
        raise ValueError(f"centering must be 'full' or 'restricted', got {centering!r}")
    if not callable(probe_losses_fn):
        raise TypeError("probe_losses_fn must be callable: params -> per-token probe losses")
    for bad in ("observables", "mask", "masks", "accumulate"):
        if bad in sample_kwargs:
            raise ValueError(f"structural_susceptibilities sets {bad!r} itself")
    if isinstance(masks, (list, tuple)):
        masks = stack_masks(masks)
    kw = dict(sampler=sampler, nbeta=nbeta, gamma=gamma, num_chains=num_chains, num_draws=num_draws,
              batch_size=batch_size, num_batches=num_batches,
              observables={"probe": probe_losses_fn if probe_data is None
                           else observable(probe_losses_fn, probe_data, chunk_size=probe_chunk)},
              store_draws=store_draws, accumulate=None if store_draws else [("loss", "probe")],
              **sample_kwargs)
    ckpt = (lambda _: None) if checkpoint_dir is None else (lambda run: Path(checkpoint_dir) / run)  # noqa: E731
    restricted = sample(key, loss_fn, params, data, masks=masks, checkpoint_dir=ckpt("restricted"), **kw)
    full = None
    if centering == "full":
        full = sample(jax.random.fold_in(key, _FULL_SALT), loss_fn, params, data,
                      checkpoint_dir=ckpt("full"), **kw)
    return structural_from_results(restricted, full, probe="probe", centering=centering, names=names,
                                   num_batches=num_batches)


def standardize(X) -> np.ndarray:
    """Column z-scoring, then row-centring, of a ``[tokens, components]`` matrix.

    Column z-scoring first removes each component's unknown positive factor Z_full/Z_C (and the
    component's overall offset); row-centring then removes the component-independent "uniform mode"
    (how susceptible a token is overall). After it, negative entries mean "expresses".
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a [tokens, components] matrix, got shape {X.shape}")
    sd = X.std(axis=0)
    if np.any(sd == 0):
        raise ValueError(f"components {np.flatnonzero(sd == 0).tolist()} have zero variance over tokens; "
                         "drop them before standardizing")
    Z = (X - X.mean(axis=0)) / sd
    return Z - Z.mean(axis=1, keepdims=True)


class PCAResult(NamedTuple):
    """``components [k, n_components]`` (unit rows), ``explained_variance_ratio [k]``, ``scores [tokens, k]``."""

    components: np.ndarray
    explained_variance_ratio: np.ndarray
    scores: np.ndarray


def pca(X, k: int) -> PCAResult:
    """Principal components of a ``[tokens, components]`` matrix (columns centred; SVD).

    Each component's sign is fixed so that its largest-magnitude loading is positive.
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a [tokens, components] matrix, got shape {X.shape}")
    if not 1 <= int(k) <= min(X.shape):
        raise ValueError(f"k must be in [1, {min(X.shape)}], got {k!r}")
    Xc = X - X.mean(axis=0)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    V = Vt[:k]
    sign = np.sign(V[np.arange(k), np.abs(V).argmax(axis=1)])
    V = V * sign[:, None]
    total = (S ** 2).sum()
    ratio = (S[:k] ** 2) / total if total > 0 else np.zeros(k)
    return PCAResult(V, ratio, Xc @ V.T)
