r"""The real-corpus experiment: structural susceptibilities of every head of a model that formed its circuits.

``corpus-susceptibility``
    Train an attention-only transformer (`susc.models.transformer`, 2 layers × 8 heads at ``small``)
    on the shipped CPython standard-library corpus (`susc.data.load_corpus`, byte-level BPE; the
    ``small`` profile keeps the first 767 merges: vocabulary 1024) while watching the induction
    circuit form (`susc.experiments.formation`: prefix-matching score, in-context loss; snapshots),
    then measure, per attention head C and probe token xy,

    χ^C_xy = −Cov[φ_C, ℓ_xy − L],   φ_C = δ(u − u*)[L − L(w*)]   (theory.md §1.7),

    for ``num_seeds`` independent sampler seeds, an nβ = 0 control (the Gaussian localizer alone)
    and the development snapshots (before / during / after formation), each as ONE vectorized
    `susc.structural_susceptibilities` run over all heads plus one unrestricted run, streamed;
    and a finite-difference oracle (`susc.experiments.response`): the posterior data reweighted
    toward a token subset by ±h, the restricted posterior means ⟨φ_C⟩ resampled with common
    random numbers, their difference against −Cov_WR[φ_C, L_S − L] for every head.

This module holds the config, the data, the probe set and the trained model; the sampling stages
and the registered experiment are in `susc.experiments.corpus_run`.

Posterior: p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}, L_n the mean token loss of the probe windows,
sampled by SGLD w ← w − (ε/2)[nβ∇L_B + γ(w − w*)] + √ε ξ (blackjax's h = ε/2) with ``num_burnin``
unrecorded steps. L at every draw is the full probe-set mean (``draw_loss="observable:probe"``), so
φ_C and ℓ_xy share the same evaluation and no minibatch noise enters φ_C.

Probe windows are drawn from the whole corpus, stratified by document kind (numeric-heavy, GUI,
other) so that every subset of `susc.data.subsets` is represented; tokens are labelled with
`susc.data.label_tokens` (classes) and `susc.data.token_subsets` (subsets).
The analyses of the resulting ``Z`` matrices live in `susc.experiments.structure`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import artifacts
from ..config import register_config
from ..data import label_tokens, load_corpus, load_tokenizer
from ..data.corpus import document_index
from ..data.subsets import SUBSETS, token_subsets
from ..models.transformer import TransformerConfig
from . import common, formation

__all__ = ["CorpusConfig", "model_config", "make_data", "probe_windows", "probe_labels",
           "load_model", "ship_checkpoint", "develop_steps"]

_TRAIN_FIELDS = ("model", "vocab_size", "d_model", "d_head", "n_heads", "seq_len", "num_train", "repeat_fraction",
                 "num_eval", "data_seed", "init_seed", "train_seed", "train_steps", "train_batch",
                 "learning_rate", "warmup_steps", "snapshot_every")


@register_config(
    "corpus",
    tiny={},
    small={"model": "small", "d_model": 64, "d_head": 8, "n_heads": 8, "seq_len": 128,
           "repeat_fraction": 0.5, "train_steps": 6000, "learning_rate": 5e-3, "warmup_steps": 200,
           "snapshot_every": 250,
           "num_seeds": 3, "num_chains": 2, "num_draws": 40, "num_burnin": 10,
           "sample_batch": 16, "probe_sequences": 80, "probe_chunk": 16, "num_batches": 4,
           "checkpoint_every": 20, "develop_draws": 20, "sweep_draws": 50, "response_draws": 40},
    full={"model": "full", "vocab_size": None, "d_model": 256, "d_head": 32, "n_heads": 8,
          "seq_len": 1024, "num_train": 1800, "num_eval": 16, "train_steps": 20000, "train_batch": 16,
          "learning_rate": 1e-3, "warmup_steps": 1000, "snapshot_every": 1000, "num_seeds": 3,
          "num_chains": 4, "num_draws": 200, "num_burnin": 100, "sample_batch": 8,
          "probe_sequences": 20, "probe_chunk": 1, "checkpoint_every": 10, "sweep_draws": 100})
@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Sizes of the corpus experiment (class defaults = the ``tiny`` profile, a pipeline check).

    ``small`` (2-core CPU: training 9 min, sampling about 40 min): 2 layers × 8 heads, d_model 64,
    context 128, vocabulary 1024, 6000 AdamW steps of 32 windows; 3 sampler seeds × 2 chains × 40
    draws after 10 burn-in steps (20 draws at each development snapshot), 80 × 128 = 10,240 probe
    tokens. ``full``: the paper's model (d_model 256,
    context 1024, vocabulary 5000) on one GPU. ``vocab_size=None`` is the shipped 5000.
    """

    model: str = "tiny"                  # TransformerConfig profile, then the fields below
    vocab_size: int | None = 1024        # first vocab_size - 257 merges of the shipped BPE
    d_model: int = 32
    d_head: int = 8
    n_heads: int = 4
    seq_len: int = 32                    # T: context length (windows are [n, T+1])
    num_train: int | None = None         # training windows from the train split (None: all)
    repeat_fraction: float = 0.25        # training windows whose second half repeats the first
    num_eval: int = 64                   # held-out windows for the eval loss
    data_seed: int = 0
    init_seed: int = 0
    train_seed: int = 1
    train_steps: int = 300
    train_batch: int = 32
    learning_rate: float = 1e-2
    warmup_steps: int = 30
    snapshot_every: int = 50             # training steps between snapshots / circuit readouts
    step_size: float = 1e-3              # SGLD ε (Baker et al.: ε = 1e-3, nβ = 30, γ = 300)
    nbeta: float = 30.0
    gamma: float = 300.0
    num_seeds: int = 2                   # independent sampler seeds (cross-seed stability)
    num_chains: int = 2
    num_draws: int = 30
    num_burnin: int = 10
    sample_batch: int = 4                # probe windows per SGLD gradient
    probe_sequences: int = 8             # probe windows (every target token is a probe)
    probe_chunk: int = 4                 # probe windows per forward pass (bounds the logits)
    num_batches: int = 4                 # batch-means groups per chain (standard errors)
    checkpoint_every: int = 10
    sample_seed: int = 0
    control: bool = True                 # the nβ = 0 run (Gaussian localizer only)
    develop: tuple = (0.1, 0.5, 0.9)     # snapshots where the in-context loss has fallen this far
    develop_draws: int = 20              # draws per chain at each development snapshot
    sweep_steps: tuple = (3e-4, 1e-3, 3e-3)   # ε sweep: loss traces of the unrestricted chain
    sweep_draws: int = 30
    response_subsets: tuple = ("prose", "numeric")   # finite-difference oracle (`response`)
    response_h: float = 0.2              # data reweighting toward the subset, central difference ±h
    response_draws: int = 30
    response_burnin: int = 20            # the ±h runs start at w*: burn in before averaging φ
    use_shipped: bool = True


def model_config(cfg: CorpusConfig) -> TransformerConfig:
    """The attention-only TransformerConfig of ``cfg`` (vocabulary = the tokenizer's)."""
    return TransformerConfig.from_profile(cfg.model, vocab_size=cfg.vocab_size or 5000,
                                          context_length=cfg.seq_len, d_model=cfg.d_model,
                                          d_head=cfg.d_head, n_heads=cfg.n_heads)


def make_data(cfg: CorpusConfig) -> tuple[dict, dict]:
    """``(train, eval)``: train-split windows (in order) and ``num_eval`` random test windows.

    A random ``repeat_fraction`` of the training windows (seeded by ``data_seed``) have their second
    half replaced by a copy of their first: natural text repeated verbatim. Copying is the one task
    only an induction circuit solves, and the repeats make it form within a CPU budget (in our
    trials with no repeats, or a quarter of the windows repeated, the 2 × 8-head ``small`` model
    had no previous-token head after 2,000–2,750 steps). Evaluation and probe windows are never
    modified.
    """
    tr = load_corpus(cfg.seq_len, cfg.num_train, split="train", vocab_size=cfg.vocab_size)
    if cfg.repeat_fraction > 0:
        tok = tr["tokens"].copy()
        rng = np.random.default_rng(cfg.data_seed)
        rows = np.nonzero(rng.random(len(tok)) < cfg.repeat_fraction)[0]
        h = tok.shape[1] // 2
        tok[rows, h:2 * h] = tok[rows, :h]
        tr = {**tr, "tokens": tok}
    ev = load_corpus(cfg.seq_len, cfg.num_eval, split="test", key=cfg.data_seed,
                     vocab_size=cfg.vocab_size)
    return tr, ev


def probe_windows(cfg: CorpusConfig) -> dict:
    """``probe_sequences`` windows of the whole corpus, stratified by document kind.

    A quarter each from numeric-heavy and GUI documents, the rest from the others (random, seeded
    by ``data_seed``). Returns ``tokens [m, T+1]``, ``start [m]`` (stream positions), the target
    tokens' ``subset [m, T]`` (`susc.data.token_subsets`) and ``token_class [m, T]``.
    """
    allw = load_corpus(cfg.seq_len, None, split="all", vocab_size=cfg.vocab_size, return_index=True)
    doc, _ = document_index(vocab_size=cfg.vocab_size)
    kind = token_subsets(allw["start"], vocab_size=cfg.vocab_size)        # window start's subset
    doc_kind = np.where(kind == SUBSETS.index("prose"), 0, kind)           # doc-level kind only
    rng = np.random.default_rng(cfg.data_seed)
    m = cfg.probe_sequences
    quota = {SUBSETS.index("numeric"): m // 4, SUBSETS.index("gui"): m // 4}
    quota[0] = m - sum(quota.values())
    pick = np.concatenate([rng.choice(np.nonzero(doc_kind == k)[0], q, replace=False)
                           for k, q in quota.items()])
    pick = np.sort(pick)
    tokens, start = allw["tokens"][pick], allw["start"][pick]
    T = cfg.seq_len
    pos = start[:, None] + 1 + np.arange(T)                                # target positions
    subset = token_subsets(pos.ravel(), vocab_size=cfg.vocab_size).reshape(len(pick), T)
    return {"tokens": tokens, "start": start, "subset": subset,
            "token_class": probe_labels(tokens, load_tokenizer(vocab_size=cfg.vocab_size)),
            "doc": doc[start]}


def probe_labels(tokens, tokenizer=None) -> np.ndarray:
    """Class ids (`susc.data.LABELS`) of the *targets* ``tokens[:, 1:]`` of windows ``[n, T+1]``.

    Labels are computed on the whole window (so induction sees the full context) and then shifted,
    so ``probe_labels(tokens)[i, t]`` describes the token predicted at loss position ``t``.
    """
    tok = load_tokenizer() if tokenizer is None else tokenizer
    return label_tokens(np.asarray(tokens), tok)[:, 1:]


# ----------------------------------------------------------------------------- the trained model


def _name(cfg: CorpusConfig) -> str:
    return f"corpus-{cfg.model}"


def _train(cfg: CorpusConfig, work_dir: Path, progress: bool):
    mcfg = model_config(cfg)
    tr, ev = make_data(cfg)
    rep = formation.repeat_windows(ev["tokens"])
    return formation.train_with_snapshots(cfg, mcfg, tr["tokens"], ev["tokens"], rep,
                                          work_dir / "train", chunk=cfg.snapshot_every,
                                          on_chunk=common.check_deadline, progress=progress)


def develop_steps(cfg: CorpusConfig, eval_step, induction_loss) -> list[int]:
    """Snapshot steps where the in-context loss has fallen the ``cfg.develop`` fractions of its
    total fall (`formation.formation_step`), without repeats and without the final step."""
    out = [formation.formation_step(eval_step, induction_loss, fraction=f) for f in cfg.develop]
    return sorted({s for s in out if s != int(eval_step[-1])})


def _save_all(cfg: CorpusConfig, dest: Path, hist: dict) -> dict:
    """Final params as ``dest/<name>`` and each development snapshot as ``<name>-step<k>``."""
    mcfg = model_config(cfg)
    settings = common.train_settings(cfg, _TRAIN_FIELDS)
    steps = develop_steps(cfg, hist["eval_step"], hist["induction_loss"])
    stride = max(1, len(hist["loss"]) // 250)
    meta = {"train_settings": settings, "train_wall_s": float(hist["wall_time"]),
            "curve_step": hist["step"][::stride].tolist(), "curve_loss": hist["loss"][::stride].tolist(),
            "eval_step": hist["eval_step"].tolist(), "eval_loss": hist["eval_loss"].tolist(),
            "prefix_matching": hist["prefix_matching"].tolist(),
            "induction_loss": hist["induction_loss"].tolist(), "develop_steps": steps}
    dest.mkdir(parents=True, exist_ok=True)
    index = list(hist["eval_step"])
    for s in steps:
        artifacts.save_params(dest / f"{_name(cfg)}-step{s}", hist["snapshots"][index.index(s)],
                              config=mcfg, metadata={"train_settings": settings, "step": s})
    return artifacts.save_params(dest / _name(cfg), hist["params"], config=mcfg, metadata=meta,
                                 wall_time=float(hist["wall_time"]))


def ship_checkpoint(cfg: CorpusConfig, work_dir=None, *, progress: bool = True) -> dict:
    """Train ``cfg``'s model (resuming in ``work_dir``) and save it and its development snapshots
    under ``data/checkpoints`` (+ provenance and the formation curves in the metadata)."""
    work = Path(work_dir or common.CHECKPOINT_DIR.parent.parent / "_build" / "train" / _name(cfg))
    return _save_all(cfg, common.CHECKPOINT_DIR, _train(cfg, work, progress))


def load_model(cfg: CorpusConfig, work_dir=None, *, progress: bool = False):
    """``(params, record, snapshots)``: the shipped checkpoint if its training settings match
    ``cfg``, else ``work_dir/model`` (trained now if absent); ``snapshots`` maps each development
    step to its parameters. Every file is sha256-verified on load."""
    settings = common.train_settings(cfg, _TRAIN_FIELDS)
    base = common.CHECKPOINT_DIR
    if not (cfg.use_shipped and (base / f"{_name(cfg)}.json").exists()
            and artifacts.load_params(base / _name(cfg))[1]["metadata"].get("train_settings") == settings):
        if work_dir is None:
            raise ValueError("no shipped checkpoint matches cfg; pass work_dir= to train and keep one")
        base = Path(work_dir) / "model"
        if not (base / f"{_name(cfg)}.json").exists():
            _save_all(cfg, base, _train(cfg, Path(work_dir), progress))
    params, record = artifacts.load_params(base / _name(cfg))
    snaps = {s: artifacts.load_params(base / f"{_name(cfg)}-step{s}")[0]
             for s in record["metadata"]["develop_steps"]}
    return params, record, snaps
