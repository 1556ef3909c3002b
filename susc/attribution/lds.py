r"""Scoring attributions against retraining: the linear datamodeling score (LDS) and LOO.

**Sign convention of every score matrix** ``scores[i, j]`` (``[n, q]``): the predicted change of
query j's loss caused by *including* training example i; positive = including i raises the loss.
(The BIF −Cov[ℓ_i, ℓ_j] already has this sign: ∂⟨ℓ_j⟩/∂ρ_i = β·BIF(i, j); classical influence is
−∇ℓ_jᵀH⁻¹∇ℓ_i/n.)

**LDS** (Ilyas et al. 2022; Park et al. 2023, TRAK): draw M random subsets S_m of the training
set (a fixed fraction each), retrain on each, and record the realized query losses f_j(S_m). A
method predicts g_j(S_m) = Σ_{i∈S_m} scores[i, j]. Then

.. math::

    \mathrm{LDS}_j = \mathrm{Spearman}_m\big(g_j(S_m),\ f_j(S_m)\big),
    \qquad \mathrm{LDS} = \frac1q\sum_j \mathrm{LDS}_j,

reported with its standard error over queries, sd_j(LDS_j)/√q. 1 is a perfect ranking of the
subsets' effects, 0 is chance. Noise-label detection is scored by the AUC (Mann–Whitney) and the
precision among the top k of a self-influence ranking.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

__all__ = ["random_subsets", "LDSResult", "lds", "paired_difference", "spearman_columns",
           "detection_auc", "precision_at_k"]


def random_subsets(n: int, num_subsets: int, fraction: float = 0.5, *, seed: int = 0) -> np.ndarray:
    """Bool ``[num_subsets, n]``: each row holds exactly ``round(fraction·n)`` examples, uniformly."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1); got {fraction}")
    if num_subsets < 2:
        raise ValueError(f"`num_subsets` must be >= 2 for a rank correlation; got {num_subsets}")
    rng = np.random.default_rng(seed)
    k = int(round(fraction * n))
    out = np.zeros((num_subsets, n), bool)
    for m in range(num_subsets):
        out[m, rng.choice(n, k, replace=False)] = True
    return out


def spearman_columns(a, b) -> np.ndarray:
    """Spearman correlation of each column of ``a`` [M, q] with the same column of ``b`` [M, q]
    (average ranks for ties; NaN where a column is constant)."""
    ra = rankdata(np.asarray(a, np.float64), axis=0)
    rb = rankdata(np.asarray(b, np.float64), axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    den = np.sqrt((ra ** 2).sum(0) * (rb ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(0) / den


class LDSResult(NamedTuple):
    """``value`` = mean LDS over queries, ``se`` = its standard error, ``per_query`` [q]."""

    value: float
    se: float
    per_query: np.ndarray


def _check(scores, subsets, realized):
    scores, subsets, realized = np.asarray(scores), np.asarray(subsets), np.asarray(realized)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be [n, q] (training example × query); got {scores.shape}")
    n, q = scores.shape
    if subsets.shape[1:] != (n,) or subsets.ndim != 2:
        raise ValueError(f"`subsets` must be [M, n] = [M, {n}]; got {subsets.shape}")
    if realized.shape != (subsets.shape[0], q):
        raise ValueError(f"`realized` must be [M, q] = [{subsets.shape[0]}, {q}] (query losses of "
                         f"the model retrained on each subset); got {realized.shape}")
    return scores, subsets, realized


def lds(scores, subsets, realized, *, queries=None) -> LDSResult:
    """Linear datamodeling score of ``scores`` [n, q] against ``realized`` [M, q] (module docstring).

    ``queries``: optional index or bool mask of the queries to average over (e.g. a held-out half
    when a hyperparameter was chosen on the other half). Constant-prediction queries are dropped.
    """
    scores, subsets, realized = _check(scores, subsets, realized)
    per = spearman_columns(subsets.astype(np.float64) @ scores, realized)
    if queries is not None:
        per = per[np.asarray(queries)]
    ok = per[np.isfinite(per)]
    if ok.size < 2:
        raise ValueError("fewer than 2 queries with a defined rank correlation")
    return LDSResult(float(ok.mean()), float(ok.std(ddof=1) / np.sqrt(ok.size)), per)


def paired_difference(a: LDSResult, b: LDSResult) -> tuple[float, float]:
    """(mean, SE) of the per-query difference LDS_a − LDS_b: the error bar of a comparison, which
    is much smaller than the two SEs combined because queries are shared."""
    d = a.per_query - b.per_query
    d = d[np.isfinite(d)]
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def detection_auc(score, positive) -> float:
    """ROC AUC of ranking by ``score`` (higher = more suspicious) for the bool labels ``positive``
    (Mann–Whitney U / (n₊ n₋), ties counted ½). 0.5 is chance."""
    score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
    if score.shape != positive.shape or score.ndim != 1:
        raise ValueError(f"`score` and `positive` must be 1-D of the same length; got {score.shape} "
                         f"and {positive.shape}")
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("`positive` needs both classes")
    r = rankdata(score)
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def precision_at_k(score, positive, k: int) -> float:
    """Fraction of true positives among the ``k`` highest scores."""
    score, positive = np.asarray(score), np.asarray(positive, bool)
    top = np.argsort(-score, kind="stable")[: int(k)]
    return float(positive[top].mean())
