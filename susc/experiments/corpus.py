r"""The real-corpus experiment: structural susceptibilities of every head on the stdlib corpus.

``corpus-susceptibility``
    Train a small attention-only transformer (`susc.models.transformer`) on the shipped CPython
    standard-library corpus (`susc.data.load_corpus`, byte-level BPE, vocabulary 5000), then
    measure the per-token structural susceptibility of every attention head on held-out probe
    tokens labelled by `susc.data.label_tokens` (word start, word part, induction, spacing,
    delimiter, formatting, numeric; theory.md §3.1, after Baker et al. 2025):

    χ^C_xy = −Cov[φ_C, ℓ_xy − L],   φ_C = δ(u − u*)[L − L(w*)]   (theory.md §1.7),

    all K heads' restricted chains in ONE vectorized `susc.sample(..., masks=...)` run plus one
    unrestricted run, streamed (no stored draws). The [tokens, heads] matrix is standardized per
    layer (column z-score, row centring; negative ⇒ the head expresses the token), averaged into a
    heads × token-classes matrix, and decomposed by PCA per layer (explained variance, loadings).

Posterior: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²} with w* the trained model, sampled by SGLD
w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ (blackjax's step size h = ε/2). The trained model is the
shipped ``data/checkpoints/corpus-<model>`` when its training settings match the config, else a
checkpoint trained once in the experiment's ``work/`` folder; the samplers resume from
``work/sample_*``.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import artifacts
from ..config import register_config
from ..data import LABELS, label_tokens, load_corpus, load_tokenizer
from ..models.masks import component_masks
from ..models.transformer import TransformerConfig, init_params, make_loss_fn, token_losses
from . import circuits, register
from .transformer import CHECKPOINT_DIR, per_layer_standardize

__all__ = ["CorpusConfig", "model_config", "make_data", "probe_labels", "train_model", "load_model",
           "ship_checkpoint", "run_corpus_susceptibility"]

_TRAIN_FIELDS = ("model", "d_model", "d_head", "n_heads", "seq_len", "num_train", "data_seed",
                 "init_seed", "train_seed", "train_steps", "train_batch", "learning_rate", "warmup_steps")


@register_config(
    "corpus",
    tiny={},
    small={"model": "small", "d_model": 128, "d_head": 16, "n_heads": 8, "seq_len": 128,
           "num_train": 12000, "train_steps": 4000, "learning_rate": 3e-3, "probe_sequences": 32,
           "num_chains": 4, "num_draws": 100, "sample_windows": 250},
    full={"model": "full", "d_model": 256, "d_head": 32, "n_heads": 8, "seq_len": 1024,
          "num_train": 1800, "num_eval": 64, "train_steps": 20000, "train_batch": 16,
          "learning_rate": 1e-3, "warmup_steps": 1000, "nbeta": 30.0, "sample_batch": 16,
          "num_chains": 4, "num_draws": 100, "probe_sequences": 20, "probe_chunk": 1,
          "sample_windows": 200, "checkpoint_every": 10})
@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Sizes of the corpus experiment (class defaults = the ``tiny`` profile).

    ``tiny``: 2 layers × 4 heads, d_model 32, context 32, 64 × 32 = 2048 probe tokens (CPU, minutes).
    ``full``: the paper's model (2 layers × 8 heads, d_model 256, context 1024; 4 chains × 100 draws,
    20 × 1024 ≥ 20k probe tokens), GPU only. The vocabulary is always the tokenizer's (5000).
    """

    model: str = "tiny"                  # TransformerConfig profile, then the fields below
    d_model: int = 32
    d_head: int = 8
    n_heads: int = 4
    seq_len: int = 32                    # T: context length (windows are [n, T+1])
    num_train: int = 20000               # training windows (train split, in order)
    num_eval: int = 256                  # held-out windows (test split), probes come first
    data_seed: int = 0
    init_seed: int = 0
    train_seed: int = 1
    train_steps: int = 1200
    train_batch: int = 32
    learning_rate: float = 1e-2
    warmup_steps: int = 100
    step_size: float = 1e-3              # SGLD ε (Baker et al.: ε = 1e-3, nβ = 30, γ = 300)
    nbeta: float = 30.0
    gamma: float = 300.0
    num_chains: int = 2
    num_draws: int = 80
    sample_batch: int = 16
    probe_sequences: int = 64            # held-out windows whose every target token is a probe
    probe_chunk: int = 4                 # probe windows per forward pass (bounds the [chunk, T, V] logits)
    num_batches: int = 8                 # batch-means groups per chain (standard errors)
    sample_windows: int = 1000           # first training windows forming L_n for the sampler (see below)
    checkpoint_every: int = 20
    sample_seed: int = 0
    use_shipped: bool = True

    # ``sample_windows``: `susc.sample` evaluates L_n(w*) on all its data in one forward pass, whose
    # [n, T, 5000] logits would not fit in CPU memory for the 20k training windows; the posterior is
    # therefore localized on L_n of the first ``sample_windows`` training windows (nβ is set directly).


def model_config(cfg: CorpusConfig, vocab_size: int = 5000) -> TransformerConfig:
    """The attention-only TransformerConfig of ``cfg`` (vocabulary = the tokenizer's)."""
    return TransformerConfig.from_profile(cfg.model, vocab_size=vocab_size, context_length=cfg.seq_len,
                                          d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads)


def make_data(cfg: CorpusConfig) -> tuple[dict, dict]:
    """``(train, eval)``: the first ``num_train`` train-split windows and ``num_eval`` random test windows."""
    tr = load_corpus(cfg.seq_len, cfg.num_train, split="train")
    ev = load_corpus(cfg.seq_len, cfg.num_eval, split="test", key=cfg.data_seed)
    return tr, ev


def probe_labels(tokens, tokenizer=None) -> np.ndarray:
    """Class ids (`susc.data.LABELS`) of the *targets* ``tokens[:, 1:]`` of windows ``[n, T+1]``.

    Labels are computed on the whole window (so induction sees the full context) and then shifted,
    so ``probe_labels(tokens)[i, t]`` describes the token predicted at loss position ``t``.
    """
    tok = load_tokenizer() if tokenizer is None else tokenizer
    return label_tokens(np.asarray(tokens), tok)[:, 1:]


def _train_settings(cfg):
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k in _TRAIN_FIELDS}


def train_model(cfg: CorpusConfig, *, progress: bool = False):
    """Train w* from scratch on the corpus; returns ``(params, history)`` (AdamW, cosine, warmup)."""
    from ..train import adamw, train
    mcfg = model_config(cfg)
    tr, ev = make_data(cfg)
    params0 = init_params(jax.random.key(cfg.init_seed), mcfg)
    opt = adamw(cfg.learning_rate, num_steps=cfg.train_steps, warmup_steps=cfg.warmup_steps)
    chunk = max(d for d in range(1, 201) if cfg.train_steps % d == 0)
    return train(jax.random.key(cfg.train_seed), make_loss_fn(mcfg), params0, {"tokens": tr["tokens"]},
                 num_steps=cfg.train_steps, batch_size=cfg.train_batch, optimizer=opt, chunk_size=chunk,
                 eval_data={"tokens": ev["tokens"][-64:]}, progress=progress)


def _metadata(cfg, history):
    stride = max(1, len(history["loss"]) // 200)
    return {"train_settings": _train_settings(cfg), "train_wall_s": history["wall_time"],
            "curve_step": history["step"][::stride].tolist(),
            "curve_loss": history["loss"][::stride].tolist(),
            "eval_step": history["eval_step"].tolist(), "eval_loss": history["eval_loss"].tolist()}


def ship_checkpoint(cfg: CorpusConfig, dest=None, *, progress: bool = True) -> dict:
    """Train ``cfg``'s model and save it as ``data/checkpoints/corpus-<model>`` (+ provenance)."""
    params, history = train_model(cfg, progress=progress)
    dest = CHECKPOINT_DIR / f"corpus-{cfg.model}" if dest is None else dest
    return artifacts.save_params(dest, params, config=model_config(cfg), metadata=_metadata(cfg, history),
                                 wall_time=history["wall_time"])


def load_model(cfg: CorpusConfig, work_dir=None, *, progress: bool = False):
    """``(params, record)``: the shipped checkpoint if its training settings match ``cfg``, else
    ``work_dir/model`` (trained now if absent, then saved so a rerun reuses it)."""
    shipped = CHECKPOINT_DIR / f"corpus-{cfg.model}"
    if cfg.use_shipped and shipped.with_suffix(".json").exists():
        params, record = artifacts.load_params(shipped)
        if record["metadata"].get("train_settings") == _train_settings(cfg):
            return params, record
    if work_dir is None:
        raise ValueError("no shipped checkpoint matches cfg; pass work_dir= to train and keep one")
    path = Path(work_dir) / "model"
    if not path.with_suffix(".json").exists():
        params, history = train_model(cfg, progress=progress)
        artifacts.save_params(path, params, config=model_config(cfg), metadata=_metadata(cfg, history),
                              wall_time=history["wall_time"])
    return artifacts.load_params(path)


def _chunked_probe_losses(tokens, mcfg, chunk: int):
    """``w -> [m, T]`` probe losses, ``chunk`` windows per forward pass (`lax.map`).

    With a 5000-token vocabulary the logits dominate memory: vmapped over K heads × chains they would
    be ``[K·chains, m, T, V]`` at once; mapping over chunks keeps one ``[K·chains, chunk, T, V]`` block.
    """
    tokens = np.asarray(tokens)
    m, W = tokens.shape
    if chunk < 1 or m % chunk:
        raise ValueError(f"probe_chunk must divide probe_sequences={m}, got {chunk}")
    blocks = jnp.asarray(tokens.reshape(m // chunk, chunk, W))
    return lambda w: jax.lax.map(lambda t: token_losses(w, {"tokens": t}, mcfg), blocks).reshape(m, W - 1)


@register("corpus-susceptibility", "corpus",
          "per-token structural susceptibilities of every head on the stdlib corpus; heads × token classes, PCA")
def run_corpus_susceptibility(cfg: CorpusConfig, work_dir, *, progress: bool = True):
    from .. import sample, sgld
    from ..estimators.structural import pca, structural_from_results
    work_dir = Path(work_dir)
    t0 = time.perf_counter()
    params, record = load_model(cfg, work_dir, progress=progress)
    t_model = time.perf_counter() - t0
    mcfg = model_config(cfg)
    tr, ev = make_data(cfg)
    names, masks = component_masks(params, mcfg, embed=False, unembed=False)   # heads only
    probe_tok = ev["tokens"][:cfg.probe_sequences]
    labels = probe_labels(probe_tok)                                         # [m, T], targets' classes
    loss_fn = make_loss_fn(mcfg)
    kw = dict(sampler=sgld(cfg.step_size), nbeta=cfg.nbeta, gamma=cfg.gamma, num_chains=cfg.num_chains,
              num_draws=cfg.num_draws, batch_size=cfg.sample_batch, num_batches=cfg.num_batches,
              observables={"probe": _chunked_probe_losses(probe_tok, mcfg, cfg.probe_chunk)},  # [m, T]
              store_draws=False, accumulate=[("loss", "probe")],            # streaming: memory ∝ tokens
              checkpoint_every=cfg.checkpoint_every, progress=progress)
    data = {"tokens": jnp.asarray(tr["tokens"][:cfg.sample_windows])}
    key = jax.random.key(cfg.sample_seed)
    t1 = time.perf_counter()
    restricted = sample(key, loss_fn, params, data, masks=masks,
                        checkpoint_dir=work_dir / "sample_restricted", **kw)
    t2 = time.perf_counter()
    full = sample(jax.random.fold_in(key, 0x5EED), loss_fn, params, data,
                  checkpoint_dir=work_dir / "sample_full", **kw)
    t3 = time.perf_counter()
    for d in ("sample_restricted", "sample_full"):   # finished: the resume state is no longer needed
        shutil.rmtree(work_dir / d, ignore_errors=True)
    chi = structural_from_results(restricted, full, names=names, num_batches=cfg.num_batches)
    Z = per_layer_standardize(chi.matrix, mcfg.n_layers)                   # [N, K], negative ⇒ expresses
    flat = labels.reshape(-1)
    hc, cnames, counts = circuits.heads_by_patterns(Z, flat, LABELS)        # [K, classes]
    H = mcfg.n_heads
    k = min(3, H)
    pcs = [pca(Z[:, l * H:(l + 1) * H], k) for l in range(mcfg.n_layers)]
    arrays = {"chi": chi.value, "chi_se": chi.se, "Z": Z, "probe_tokens": np.asarray(probe_tok),
              "probe_labels": labels, "head_names": np.array(names),
              "heads_by_classes": hc, "class_names": np.array(cnames), "class_counts": counts,
              "restricted_loss": restricted.moments["loss"].mean_x, "full_loss": full.moments["loss"].mean_x,
              "init_loss": np.float64(restricted.init_loss),
              "pca_components": np.stack([p.components for p in pcs]),
              "pca_ratio": np.stack([p.explained_variance_ratio for p in pcs]),
              "pca_scores": np.stack([p.scores for p in pcs]),
              "curve_step": np.asarray(record["metadata"]["curve_step"]),
              "curve_loss": np.asarray(record["metadata"]["curve_loss"])}
    summary = {"num_probe_tokens": int(Z.shape[0]), "init_loss": float(restricted.init_loss),
               "class_counts": {c: int(n) for c, n in zip(cnames, counts)},
               "pca_ratio": [p.explained_variance_ratio.tolist() for p in pcs],
               "checkpoint_sha256": record["sha256"],
               "timings": {"model_s": t_model, "restricted_s": t2 - t1, "full_s": t3 - t2}}
    return arrays, summary
