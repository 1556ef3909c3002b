r"""What the transformer experiments share: train w* once, ship/load checkpoints, head susceptibilities.

A trained model is a `susc.artifacts.save_params` pair ``<name>.npz`` + ``<name>.json`` (sha256,
provenance, the training settings and downsampled curves in ``metadata``). `load_model` takes the
shipped ``data/checkpoints/<name>`` when its ``train_settings`` equal the config's, else
``work_dir/model`` (trained once, then reused, so an interrupted experiment resumes).

`head_susceptibilities` samples p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²} by SGLD twice — all heads'
restricted chains in ONE vectorized `susc.sample(..., masks=...)` run, plus one unrestricted run —
streaming χ^C_xy = −Cov[φ_C, ℓ_xy − L] (no stored draws), then standardizes per layer (negative ⇒
the head expresses the token) and runs PCA per layer. The samplers resume from ``work_dir/samples/{restricted,full}``.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import artifacts
from ..models.masks import component_masks
from ..models.transformer import TransformerConfig, init_params, make_loss_fn

__all__ = ["CHECKPOINT_DIR", "StageTimeout", "set_deadline", "check_deadline", "Recipe", "train_settings", "train_transformer", "ship_checkpoint",
           "load_model", "per_layer_standardize", "HeadSusceptibilities", "head_susceptibilities",
           "chi_arrays", "posterior_arrays"]

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "data" / "checkpoints"


class StageTimeout(RuntimeError):
    """A run stopped at its stage deadline after saving its state; run it again to continue."""


_DEADLINE: list = [None]


def set_deadline(seconds: float | None) -> None:
    """Stop long experiments ``seconds`` from now at the next safe point (None: no deadline).

    Safe points are the ends of training chunks and sampling blocks, after their state is saved,
    and the starts of cached stages; there `check_deadline` raises `StageTimeout`. The CLI sets
    it with ``--stage-seconds`` so that a GPU job runs in resumable stages of bounded length.
    """
    _DEADLINE[0] = None if seconds is None else time.monotonic() + float(seconds)


def check_deadline(*_args) -> None:
    """Raise `StageTimeout` when past the deadline of `set_deadline` (a no-op without one)."""
    if _DEADLINE[0] is not None and time.monotonic() > _DEADLINE[0]:
        raise StageTimeout("stage deadline reached; the state is saved: run the same command "
                           "again to continue")


def cached_stage(path: Path, compute: Callable[[], dict]) -> dict:
    """``compute()`` once: its dict of arrays is kept in ``path`` (finished stages survive a fault
    or a stage deadline, which is checked before computing)."""
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    check_deadline()
    out = {k: np.asarray(v) for k, v in compute().items()}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def deadline_kwargs() -> dict:
    """``{"on_block": check_deadline}`` for `susc.sample` when a deadline is set, else ``{}``."""
    return {} if _DEADLINE[0] is None else {"on_block": check_deadline}


class Recipe(NamedTuple):
    """One config's model: checkpoint ``name``, ``mcfg``, the ``settings`` a shipped record must
    match, and ``train(progress) -> (params, history)``."""

    name: str
    mcfg: TransformerConfig
    settings: dict
    train: Callable[[bool], tuple]


def _as_json(v):
    return [_as_json(x) for x in v] if isinstance(v, (tuple, list)) else v


def train_settings(cfg, fields) -> dict:
    """The ``fields`` of the dataclass ``cfg`` as a JSON record stores them (tuples become lists)."""
    return {k: _as_json(v) for k, v in dataclasses.asdict(cfg).items() if k in fields}


def train_transformer(cfg, mcfg: TransformerConfig, train_tokens, eval_tokens, *, max_chunk: int,
                      progress: bool = False):
    """Train w* from scratch: AdamW (cosine decay, warmup) with ``cfg``'s training fields.

    Keys: ``key(cfg.init_seed)`` initializes, ``key(cfg.train_seed)`` orders the minibatches. One
    jitted scan chunk is the largest divisor of ``cfg.train_steps`` up to ``max_chunk`` steps; the
    mean loss on ``eval_tokens`` is logged after each. Returns ``(params, history)``.
    """
    from ..train import adamw, train
    params0 = init_params(jax.random.key(cfg.init_seed), mcfg)
    opt = adamw(cfg.learning_rate, num_steps=cfg.train_steps, warmup_steps=cfg.warmup_steps)
    chunk = max(d for d in range(1, max_chunk + 1) if cfg.train_steps % d == 0)
    return train(jax.random.key(cfg.train_seed), make_loss_fn(mcfg), params0, {"tokens": train_tokens},
                 num_steps=cfg.train_steps, batch_size=cfg.train_batch, optimizer=opt, chunk_size=chunk,
                 eval_data={"tokens": eval_tokens}, progress=progress)


def _save(path, recipe: Recipe, params, history) -> dict:
    stride = max(1, len(history["loss"]) // 200)
    meta = {"train_settings": recipe.settings, "train_wall_s": history["wall_time"],
            "curve_step": history["step"][::stride].tolist(),
            "curve_loss": history["loss"][::stride].tolist(),
            "eval_step": history["eval_step"].tolist(), "eval_loss": history["eval_loss"].tolist()}
    return artifacts.save_params(path, params, config=recipe.mcfg, metadata=meta,
                                 wall_time=history["wall_time"])


def ship_checkpoint(recipe: Recipe, dest=None, *, progress: bool = True) -> dict:
    """Train ``recipe``'s model and save it as ``dest`` (default ``data/checkpoints/<name>``)."""
    params, history = recipe.train(progress)
    return _save(CHECKPOINT_DIR / recipe.name if dest is None else dest, recipe, params, history)


def load_model(recipe: Recipe, work_dir=None, *, use_shipped: bool = True, progress: bool = False):
    """``(params, record)``: the shipped checkpoint if its training settings match ``recipe``, else
    ``work_dir/model`` (trained now if absent, then kept; sha256-verified on every load)."""
    shipped = CHECKPOINT_DIR / recipe.name
    if use_shipped and shipped.with_suffix(".json").exists():
        params, record = artifacts.load_params(shipped)
        if record["metadata"].get("train_settings") == recipe.settings:
            return params, record
    if work_dir is None:
        raise ValueError("no shipped checkpoint matches cfg; pass work_dir= to train and keep one")
    path = Path(work_dir) / "model"
    if not path.with_suffix(".json").exists():
        params, history = recipe.train(progress)
        _save(path, recipe, params, history)
    return artifacts.load_params(path)


def per_layer_standardize(X, n_layers: int) -> np.ndarray:
    """`susc.structural.standardize` applied to each layer's block of head columns of ``X [N, L·H]``.

    Layers are compared separately (as the per-layer PCA of Baker et al.): a layer-0 head and a
    layer-1 head play different roles in one circuit, and row-centring across layers would mix them.
    """
    from ..estimators.structural import standardize
    X = np.asarray(X)
    H = X.shape[1] // n_layers
    return np.concatenate([standardize(X[:, l * H:(l + 1) * H]) for l in range(n_layers)], axis=1)


class HeadSusceptibilities(NamedTuple):
    """Head ``names``, ``chi`` (`StructuralResult`, [K, N]), ``Z`` per-layer standardized [N, K],
    ``pcs`` (one `PCAResult` per layer), the ``restricted``/``full`` runs and their ``timings``."""

    names: list
    chi: Any
    Z: np.ndarray
    pcs: list
    restricted: Any
    full: Any
    timings: dict


def head_susceptibilities(key, cfg, params, mcfg: TransformerConfig, data, probe_tokens, work_dir, *,
                          probe_chunk: int | None = None, progress: bool = True,
                          sample_kwargs: dict | None = None) -> HeadSusceptibilities:
    """Per-token structural susceptibilities of every attention head on the probe windows
    ``probe_tokens [m, T + 1]`` (their per-token losses ``[m, T]``).

    The probe set is an observable with run-time data (`susc.observable`), evaluated
    ``probe_chunk`` windows at a time: with a 5000-token vocabulary the logits dominate memory,
    and vmapped over K heads × chains they would be ``[K·chains, m, T, V]`` at once.

    ``cfg`` supplies the SGLD settings (step_size, nbeta, gamma, num_chains, num_draws, sample_batch,
    num_batches, checkpoint_every); ``key`` drives the restricted run, ``fold_in(key, 0x5EED)`` the
    full one (`susc.structural_susceptibilities`); ``sample_kwargs`` go to `susc.sample` (e.g.
    ``num_burnin``, ``draw_loss``). Finished runs delete their resume state
    ``work_dir/samples``.
    """
    from .. import sgld
    from ..estimators.structural import pca, structural_susceptibilities
    work_dir = Path(work_dir)
    names, masks = component_masks(params, mcfg, embed=False, unembed=False)   # heads only
    loss_fn = make_loss_fn(mcfg)
    t0 = time.perf_counter()
    chi = structural_susceptibilities(                                # streaming: memory ∝ tokens
        key, loss_fn, params, data, loss_fn, masks, names=names, sampler=sgld(cfg.step_size),
        nbeta=cfg.nbeta, gamma=cfg.gamma, num_chains=cfg.num_chains, num_draws=cfg.num_draws,
        batch_size=cfg.sample_batch, num_batches=cfg.num_batches, store_draws=False,
        probe_data={"tokens": jnp.asarray(probe_tokens)}, probe_chunk=probe_chunk,   # [m, T] losses
        checkpoint_dir=work_dir / "samples", checkpoint_every=cfg.checkpoint_every, progress=progress,
        **deadline_kwargs(), **(sample_kwargs or {}))
    wall = time.perf_counter() - t0
    shutil.rmtree(work_dir / "samples", ignore_errors=True)   # finished: the resume state is not needed
    restricted, full = chi.restricted, chi.full
    Z = per_layer_standardize(chi.matrix, mcfg.n_layers)                   # [N, K], negative ⇒ expresses
    H = mcfg.n_heads
    pcs = [pca(Z[:, l * H:(l + 1) * H], min(3, H)) for l in range(mcfg.n_layers)]
    return HeadSusceptibilities(names, chi, Z, pcs, restricted, full,
                                {"restricted_s": restricted.wall_time, "full_s": full.wall_time,
                                 "sampling_s": wall})


def chi_arrays(h: HeadSusceptibilities) -> dict:
    """``chi``, ``chi_se`` [K, N] and ``Z`` [N, K] for an experiment's ``arrays.npz``."""
    return {"chi": h.chi.value, "chi_se": h.chi.se, "Z": h.Z}


def posterior_arrays(h: HeadSusceptibilities, *, scores: bool = False) -> dict:
    """Mean posterior losses, L(w*) and the per-layer PCA (with the token ``scores`` if asked)."""
    out = {"restricted_loss": h.restricted.moments["loss"].mean_x, "full_loss": h.full.moments["loss"].mean_x,
           "init_loss": np.float64(h.restricted.init_loss),
           "pca_components": np.stack([p.components for p in h.pcs]),
           "pca_ratio": np.stack([p.explained_variance_ratio for p in h.pcs])}
    if scores:
        out["pca_scores"] = np.stack([p.scores for p in h.pcs])
    return out
