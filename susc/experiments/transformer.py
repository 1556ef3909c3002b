r"""Transformer experiments on the synthetic language with planted patterns (issue 6).

``transformer-train``
    Train the attention-only transformer (`susc.models.transformer`) on `susc.data.make_synthetic`
    and read out its circuits: training curve, per-pattern losses, attention scores (induction,
    previous token) and zero-ablation loss increases per head and pattern.
``transformer-susceptibility``
    Per-token structural susceptibilities of every head (theory.md §1.7):
    χ^C_xy = −Cov[φ_C, ℓ_xy − L], φ_C = δ(u − u*)[L − L(w*)], all K heads' restricted chains in ONE
    vectorized `susc.sample(..., masks=...)` run plus one unrestricted run, streamed (no stored draws).
    Standardized per layer (column z-score, row centring; negative ⇒ the head expresses the token),
    averaged into a heads × patterns matrix, and used to identify the induction heads from
    susceptibilities alone; checked against the planted induction labels (attention to the planted
    source token) and against zero-ablation.

Posterior: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²} with w* the trained model, sampled by SGLD
w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ. Both experiments reuse a trained model: the shipped
checkpoint ``data/checkpoints/synthetic-<model>`` when its training settings match the config,
else one trained once in the experiment's ``work/`` folder; the samplers resume from ``work/samples/``
(training, shipping, loading and sampling: `susc.experiments.common`).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..config import register_config
from ..data import PATTERNS, make_synthetic
from ..models.transformer import TransformerConfig, make_loss_fn
from . import circuits, common, register
from .common import CHECKPOINT_DIR, per_layer_standardize

__all__ = ["SyntheticConfig", "CHECKPOINT_DIR", "model_config", "make_data", "load_model",
           "train_model", "ship_checkpoint", "token_names", "per_layer_standardize", "run_train",
           "run_susceptibility"]

# Induction-heavy mixture: 40% of segments copy an earlier span, so the induction circuit forms
# within the tiny training budget (about 4k AdamW steps).
_PROBS = (("random", 0.2), ("induction", 0.4), ("bigram", 0.1), ("bracket", 0.1),
          ("delimiter", 0.08), ("formatting", 0.06), ("counting", 0.06))
_TRAIN_FIELDS = ("model", "vocab_size", "seq_len", "pattern_probs", "num_train", "num_eval",
                 "data_seed", "init_seed", "train_seed", "train_steps", "train_batch",
                 "learning_rate", "warmup_steps")


@register_config(
    "transformer-synthetic",
    tiny={},
    small={"num_draws": 200, "probe_sequences": 192},
    full={"model": "full", "vocab_size": 5000, "seq_len": 1024, "num_train": 20000, "num_eval": 64,
          "train_steps": 20000, "train_batch": 16, "learning_rate": 1e-3, "warmup_steps": 1000,
          "nbeta": 30.0, "sample_batch": 16, "num_draws": 100, "probe_sequences": 20,
          "checkpoint_every": 10})
@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the synthetic-language experiments (class defaults = the ``tiny`` profile).

    ``full`` is the paper's model (2 layers × 8 heads, d_model 256, context 1024, 5k vocabulary;
    4 chains × 100 draws, 20 × 1024 ≥ 20k probe tokens) and needs a GPU.
    """

    model: str = "tiny"                  # TransformerConfig profile; context_length = seq_len
    vocab_size: int = 64
    seq_len: int = 32                    # T: positions per sequence (tokens are [n, T+1])
    pattern_probs: tuple = _PROBS
    num_train: int = 8000                # training sequences (n)
    num_eval: int = 512                  # held-out sequences (probes and circuit read-outs)
    data_seed: int = 0
    init_seed: int = 0
    train_seed: int = 1
    train_steps: int = 4000
    train_batch: int = 32
    learning_rate: float = 1e-2
    warmup_steps: int = 100
    step_size: float = 1e-3              # SGLD ε (Baker et al.: ε = 1e-3, nβ = 30, γ = 300)
    nbeta: float = 100.0
    gamma: float = 300.0
    num_chains: int = 4
    num_draws: int = 100
    sample_batch: int = 32
    probe_sequences: int = 64            # held-out sequences whose every target token is a probe
    num_batches: int = 8                 # batch-means groups per chain (standard errors)
    checkpoint_every: int = 25           # draws between sampler checkpoints (resumability)
    sample_seed: int = 0
    use_shipped: bool = True             # load data/checkpoints/synthetic-<model> when it matches


def model_config(cfg: SyntheticConfig) -> TransformerConfig:
    """The TransformerConfig of ``cfg``: profile ``cfg.model`` with its vocabulary and context."""
    return TransformerConfig.from_profile(cfg.model, vocab_size=cfg.vocab_size, context_length=cfg.seq_len)


def make_data(cfg: SyntheticConfig) -> tuple[dict, dict]:
    """``(train, eval)`` splits of one `make_synthetic` draw (one bigram table for both)."""
    n = cfg.num_train + cfg.num_eval
    d = make_synthetic(cfg.data_seed, num_sequences=n, seq_len=cfg.seq_len, vocab_size=cfg.vocab_size,
                       pattern_probs=dict(cfg.pattern_probs))
    split = lambda sl: {k: d[k][sl] for k in ("tokens", "labels", "source")}
    return split(slice(0, cfg.num_train)), split(slice(cfg.num_train, n))


def train_model(cfg: SyntheticConfig, *, progress: bool = False):
    """Train w* from scratch; returns ``(params, history)`` (AdamW, cosine decay, warmup)."""
    tr, ev = make_data(cfg)
    return common.train_transformer(cfg, model_config(cfg), tr["tokens"], ev["tokens"][:128],
                                    max_chunk=250, progress=progress)


def _recipe(cfg: SyntheticConfig) -> common.Recipe:
    return common.Recipe(f"synthetic-{cfg.model}", model_config(cfg), common.train_settings(cfg, _TRAIN_FIELDS),
                         lambda progress: train_model(cfg, progress=progress))


def ship_checkpoint(cfg: SyntheticConfig, dest=None, *, progress: bool = True) -> dict:
    """Train ``cfg``'s model and save it as ``data/checkpoints/synthetic-<model>`` (+ provenance)."""
    return common.ship_checkpoint(_recipe(cfg), dest, progress=progress)


def load_model(cfg: SyntheticConfig, work_dir=None, *, progress: bool = False):
    """``(params, record)``: the shipped checkpoint if it matches ``cfg``'s training settings, else a
    checkpoint in ``work_dir/model`` (trained now if absent; sha256-verified on load)."""
    return common.load_model(_recipe(cfg), work_dir, use_shipped=cfg.use_shipped, progress=progress)


def token_names(vocab_size: int) -> list[str]:
    """Printable names of the synthetic vocabulary (``BOS``, ``⏎``, ``,`` ... ``g0`` triggers, ``w19`` words)."""
    special = {0: "BOS", 1: "⏎", 2: "␣␣", 3: ",", 4: ";", 5: "(", 6: ")", 7: "[", 8: "]", 9: "·", 10: "!"}
    out = []
    for x in range(vocab_size):
        out.append(special.get(x) or (f"C{x - 10}" if 11 <= x <= 14 else f"g{x - 15}" if 15 <= x <= 18 else f"w{x}"))
    return out


def _circuit_readouts(params, mcfg, ev, probe_n):
    tok, lab, src = ev["tokens"], ev["labels"], ev["source"]
    ids = sorted(PATTERNS)
    abl = np.stack([circuits.ablation_increase(params, tok[:probe_n], mcfg, lab[:probe_n] == i)
                    if np.any(lab[:probe_n] == i) else np.full(mcfg.n_layers * mcfg.n_heads, np.nan)
                    for i in ids], axis=1)                                   # [K, P]
    return {"attn_induction": circuits.induction_attention_score(params, tok[:probe_n], src[:probe_n], mcfg),
            "attn_previous": circuits.previous_token_score(params, tok[:probe_n], mcfg),
            "ablation": abl}


@register("transformer-train", "transformer-synthetic",
          "train the attention-only transformer on the synthetic language; circuits by attention and ablation")
def run_train(cfg: SyntheticConfig, work_dir, *, progress: bool = True):
    t0 = time.perf_counter()
    params, record = load_model(cfg, work_dir, progress=progress)
    mcfg = model_config(cfg)
    _, ev = make_data(cfg)
    losses = np.asarray(jax.jit(make_loss_fn(mcfg))(params, {"tokens": jnp.asarray(ev["tokens"])}))
    ids = sorted(PATTERNS)
    per_pattern = np.array([losses[ev["labels"] == i].mean() if np.any(ev["labels"] == i) else np.nan
                            for i in ids])
    out = _circuit_readouts(params, mcfg, ev, cfg.num_eval)
    meta = record["metadata"]
    arrays = {"curve_step": np.asarray(meta["curve_step"]), "curve_loss": np.asarray(meta["curve_loss"]),
              "eval_step": np.asarray(meta["eval_step"]), "eval_loss": np.asarray(meta["eval_loss"]),
              "pattern_loss": per_pattern, "pattern_names": np.array([PATTERNS[i] for i in ids]),
              "head_names": np.array(circuits.head_names(mcfg)), **out}
    names = circuits.head_names(mcfg)
    i_ind = ids.index(1)
    summary = {"eval_loss": float(losses.mean()), "checkpoint_sha256": record["sha256"],
               "top_induction_attention": names[int(np.argmax(out["attn_induction"]))],
               "top_induction_ablation": names[int(np.argmax(out["ablation"][:, i_ind]))],
               "timings": {"train_s": record["wall_time"], "readout_s": time.perf_counter() - t0}}
    return arrays, summary


@register("transformer-susceptibility", "transformer-synthetic",
          "per-token structural susceptibilities of every head; induction heads from susceptibilities alone")
def run_susceptibility(cfg: SyntheticConfig, work_dir, *, progress: bool = True):
    t0 = time.perf_counter()
    params, record = load_model(cfg, work_dir, progress=progress)
    t_model = time.perf_counter() - t0
    mcfg = model_config(cfg)
    tr, ev = make_data(cfg)
    h = common.head_susceptibilities(jax.random.key(cfg.sample_seed), cfg, params, mcfg,
                                     {"tokens": jnp.asarray(tr["tokens"])}, ev["tokens"][:cfg.probe_sequences],
                                     work_dir, progress=progress)
    names, Z = h.names, h.Z
    labels = ev["labels"][:cfg.probe_sequences].reshape(-1)
    hp, pnames, counts = circuits.heads_by_patterns(Z, labels, PATTERNS)
    score, score_se = circuits.susceptibility_induction_score(Z, labels == 1)
    ref = _circuit_readouts(params, mcfg, ev, cfg.probe_sequences)
    abl_ind = ref["ablation"][:, sorted(PATTERNS).index(1)]
    H = mcfg.n_heads
    layers = [slice(l * H, (l + 1) * H) for l in range(mcfg.n_layers)]
    # Per layer: the head whose susceptibilities say it expresses induction tokens most, against the
    # head whose ablation hurts induction tokens most; in the last layer also against attention to
    # the planted source (induction heads read a previous-token head, so they sit in layer >= 1).
    per_layer = [circuits.rank_agreement({"susceptibility": score[sl], "ablation": abl_ind[sl],
                                          **({"attention": ref["attn_induction"][sl]} if l == len(layers) - 1 else {})},
                                         names[sl]) for l, sl in enumerate(layers)]
    agree_all = circuits.rank_agreement({"susceptibility": score, "ablation": abl_ind,
                                         "attention": ref["attn_induction"]}, names)
    arrays = {**common.chi_arrays(h), "probe_tokens": np.asarray(ev["tokens"][:cfg.probe_sequences]),
              "probe_labels": ev["labels"][:cfg.probe_sequences], "head_names": np.array(names),
              "heads_by_patterns": hp, "pattern_names": np.array(pnames), "pattern_counts": counts,
              "induction_score": score, "induction_score_se": score_se, **common.posterior_arrays(h), **ref}
    summary = {"induction_head_susceptibility": per_layer[-1]["top"]["susceptibility"],
               "induction_head_attention": per_layer[-1]["top"]["attention"],
               "induction_head_ablation": per_layer[-1]["top"]["ablation"],
               "per_layer": per_layer, "all_heads": agree_all, "num_probe_tokens": int(Z.shape[0]),
               "checkpoint_sha256": record["sha256"],
               "timings": {"model_s": t_model, **h.timings}}
    return arrays, summary
