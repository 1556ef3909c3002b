r"""Analyses of per-token structural susceptibilities ``Z [tokens, heads]`` that can fail.

Input everywhere: ``Z`` standardized per layer (`common.per_layer_standardize`: column z-score,
row centring; negative ⇒ the head expresses the token), head columns layer-major (``"l:h"``).

* `pc_label_auc` -- per-layer PCA (Baker et al. 2025, §4) of ``Z`` and, for each principal
  component, the ROC AUC of its token scores for a label (e.g. induction tokens), folded to
  ``max(AUC, 1 − AUC)`` because a component's sign is arbitrary.
* `label_free_direction` -- the best (layer, component) by that AUC, with a permutation p-value
  that repeats the *same selection* on shuffled labels (the max over all candidates), so choosing
  the best of several components is paid for.
* `loading_cosines` -- |cos| between the loadings of the same component fitted on different
  sampler seeds (1 = identical direction).
* `eta_squared` / `separation_null` -- between-class share of a score's variance and its
  permutation null.
* `seed_z` -- per-token differences between two seeds in units of their combined batch-means SE:
  ≈ N(0, 1) if the standard errors are right.
"""
from __future__ import annotations

import numpy as np

from ..attribution.lds import detection_auc
from ..estimators.structural import pca

__all__ = ["layer_blocks", "pc_label_auc", "label_free_direction", "loading_cosines",
           "eta_squared", "separation_null", "seed_z"]


def layer_blocks(Z, n_layers: int) -> list[np.ndarray]:
    """The per-layer column blocks ``[N, H]`` of ``Z [N, L·H]``."""
    Z = np.asarray(Z)
    H = Z.shape[1] // n_layers
    if H * n_layers != Z.shape[1]:
        raise ValueError(f"Z has {Z.shape[1]} columns, not a multiple of n_layers={n_layers}")
    return [Z[:, l * H:(l + 1) * H] for l in range(n_layers)]


def pc_label_auc(Z, positive, n_layers: int, k: int = 3) -> tuple[np.ndarray, list]:
    """``(auc [L, k], pcs)``: folded AUC of each layer's first ``k`` PC scores for ``positive``."""
    positive = np.asarray(positive, bool).reshape(-1)
    pcs = [pca(B, k) for B in layer_blocks(Z, n_layers)]
    auc = np.array([[detection_auc(p.scores[:, j], positive) for j in range(k)] for p in pcs])
    return np.maximum(auc, 1 - auc), pcs


def _fast_auc(S, pos):
    """Folded AUC of each column of ``S [N, m]`` (ranks computed once) for a bool label ``pos``."""
    from scipy.stats import rankdata
    R = rankdata(S, axis=0)
    n1, n0 = pos.sum(), (~pos).sum()
    a = (R[pos].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.maximum(a, 1 - a)


def label_free_direction(Z, positive, n_layers: int, *, k: int = 3, num_perm: int = 1000,
                         seed: int = 0) -> dict:
    """The principal component (found without labels) that best separates ``positive`` tokens.

    Returns ``layer``, ``pc``, ``auc`` (folded), ``auc_table [L, k]``, ``p_value`` (permutation, the
    max over all L·k components recomputed on each shuffle; (1 + #{null ≥ observed}) / (1 + num_perm)),
    ``null_max`` (the shuffles' maxima), ``components`` [L, k, H] and ``scores`` [L, N, k].
    """
    positive = np.asarray(positive, bool).reshape(-1)
    auc, pcs = pc_label_auc(Z, positive, n_layers, k)
    S = np.concatenate([p.scores for p in pcs], axis=1)                 # [N, L·k]
    rng = np.random.default_rng(seed)
    null = np.array([_fast_auc(S, rng.permutation(positive)).max() for _ in range(num_perm)])
    l, j = np.unravel_index(np.argmax(auc), auc.shape)
    return {"layer": int(l), "pc": int(j), "auc": float(auc[l, j]), "auc_table": auc,
            "p_value": float((1 + np.sum(null >= auc[l, j])) / (1 + num_perm)), "null_max": null,
            "components": np.stack([p.components for p in pcs]),
            "ratio": np.stack([p.explained_variance_ratio for p in pcs]),
            "scores": np.stack([p.scores for p in pcs])}


def loading_cosines(Z_seeds, layer: int, pc: int, n_layers: int, k: int = 3) -> np.ndarray:
    """``|cos|`` between seed pairs' loadings of component ``pc`` of ``layer`` ([S, S] matrix)."""
    V = np.stack([pca(layer_blocks(Z, n_layers)[layer], k).components[pc] for Z in Z_seeds])
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    return np.abs(V @ V.T)


def eta_squared(score, labels) -> float:
    """Between-class share of the variance of ``score`` (one-way ANOVA η²) for integer ``labels``."""
    score, labels = np.asarray(score, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    grand = score.mean()
    total = np.sum((score - grand) ** 2)
    between = sum(np.sum(labels == c) * (score[labels == c].mean() - grand) ** 2
                  for c in np.unique(labels))
    return float(between / total)


def separation_null(score, labels, *, num_perm: int = 1000, seed: int = 0) -> dict:
    """η² of ``score`` by ``labels`` with its permutation null: ``eta2``, ``null_mean``,
    ``null_q99`` and ``p_value``."""
    rng = np.random.default_rng(seed)
    obs = eta_squared(score, labels)
    null = np.array([eta_squared(score, rng.permutation(np.asarray(labels).reshape(-1)))
                     for _ in range(num_perm)])
    return {"eta2": obs, "null_mean": float(null.mean()), "null_q99": float(np.quantile(null, 0.99)),
            "p_value": float((1 + np.sum(null >= obs)) / (1 + num_perm))}


def seed_z(chi_a, se_a, chi_b, se_b) -> np.ndarray:
    """``(χ_a − χ_b) / √(se_a² + se_b²)`` elementwise: two independent estimates of one quantity."""
    return (np.asarray(chi_a) - np.asarray(chi_b)) / np.sqrt(np.square(se_a) + np.square(se_b))
