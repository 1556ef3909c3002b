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
``work/samples/`` (training, shipping, loading and sampling: `susc.experiments.common`).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..config import register_config
from ..data import LABELS, label_tokens, load_corpus, load_tokenizer
from ..models.transformer import TransformerConfig
from . import circuits, common, register

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


def train_model(cfg: CorpusConfig, *, progress: bool = False):
    """Train w* from scratch on the corpus; returns ``(params, history)`` (AdamW, cosine, warmup)."""
    tr, ev = make_data(cfg)
    return common.train_transformer(cfg, model_config(cfg), tr["tokens"], ev["tokens"][-64:],
                                    max_chunk=200, progress=progress)


def _recipe(cfg: CorpusConfig) -> common.Recipe:
    return common.Recipe(f"corpus-{cfg.model}", model_config(cfg), common.train_settings(cfg, _TRAIN_FIELDS),
                         lambda progress: train_model(cfg, progress=progress))


def ship_checkpoint(cfg: CorpusConfig, dest=None, *, progress: bool = True) -> dict:
    """Train ``cfg``'s model and save it as ``data/checkpoints/corpus-<model>`` (+ provenance)."""
    return common.ship_checkpoint(_recipe(cfg), dest, progress=progress)


def load_model(cfg: CorpusConfig, work_dir=None, *, progress: bool = False):
    """``(params, record)``: the shipped checkpoint if its training settings match ``cfg``, else
    ``work_dir/model`` (trained now if absent, then saved so a rerun reuses it)."""
    return common.load_model(_recipe(cfg), work_dir, use_shipped=cfg.use_shipped, progress=progress)


@register("corpus-susceptibility", "corpus",
          "per-token structural susceptibilities of every head on the stdlib corpus; heads × token classes, PCA")
def run_corpus_susceptibility(cfg: CorpusConfig, work_dir, *, progress: bool = True):
    t0 = time.perf_counter()
    params, record = load_model(cfg, work_dir, progress=progress)
    t_model = time.perf_counter() - t0
    mcfg = model_config(cfg)
    tr, ev = make_data(cfg)
    probe_tok = ev["tokens"][:cfg.probe_sequences]
    labels = probe_labels(probe_tok)                                         # [m, T], targets' classes
    h = common.head_susceptibilities(jax.random.key(cfg.sample_seed), cfg, params, mcfg,
                                     {"tokens": jnp.asarray(tr["tokens"][:cfg.sample_windows])},
                                     probe_tok, work_dir, probe_chunk=cfg.probe_chunk, progress=progress)
    hc, cnames, counts = circuits.heads_by_patterns(h.Z, labels.reshape(-1), LABELS)   # [K, classes]
    arrays = {**common.chi_arrays(h), "probe_tokens": np.asarray(probe_tok),
              "probe_labels": labels, "head_names": np.array(h.names),
              "heads_by_classes": hc, "class_names": np.array(cnames), "class_counts": counts,
              **common.posterior_arrays(h, scores=True),
              "curve_step": np.asarray(record["metadata"]["curve_step"]),
              "curve_loss": np.asarray(record["metadata"]["curve_loss"])}
    summary = {"num_probe_tokens": int(h.Z.shape[0]), "init_loss": float(h.restricted.init_loss),
               "class_counts": {c: int(n) for c, n in zip(cnames, counts)},
               "pca_ratio": [p.explained_variance_ratio.tolist() for p in h.pcs],
               "checkpoint_sha256": record["sha256"],
               "timings": {"model_s": t_model, **h.timings}}
    return arrays, summary
