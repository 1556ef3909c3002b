"""The handwritten digits (8×8, 1,797 images, 10 classes) bundled with scikit-learn: no download.

Batches follow the loss contract of every classifier in ``susc``: ``{"x": float32 [n, 8, 8, 1]``
(pixel intensities scaled to [0, 1]), ``"y": int32 [n]}``; ``loss_fn(params, batch)`` returns the
per-example cross-entropy ``[n]``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["DigitsSplit", "load_digits", "split_digits", "flip_labels"]

NUM_CLASSES = 10


def load_digits() -> dict:
    """All 1,797 images as ``{"x": float32 [1797, 8, 8, 1] in [0, 1], "y": int32 [1797]}``."""
    from sklearn.datasets import load_digits as _sk   # bundled CSV inside the wheel
    d = _sk()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return {"x": x, "y": d.target.astype(np.int32)}


class DigitsSplit(NamedTuple):
    """Disjoint ``train`` and ``query`` batches and the dataset row of each example."""

    train: dict
    query: dict
    train_index: np.ndarray
    query_index: np.ndarray


def split_digits(n_train: int, n_query: int, *, seed: int = 0) -> DigitsSplit:
    """A random disjoint split of ``n_train`` training and ``n_query`` query images."""
    data = load_digits()
    total = data["y"].shape[0]
    if n_train < 1 or n_query < 1 or n_train + n_query > total:
        raise ValueError(f"n_train + n_query must be between 2 and {total} (the digits set); got "
                         f"n_train={n_train}, n_query={n_query}")
    perm = np.random.default_rng(seed).permutation(total)
    tr, qu = perm[:n_train], perm[n_train:n_train + n_query]
    take = lambda idx: {k: v[idx] for k, v in data.items()}
    return DigitsSplit(take(tr), take(qu), tr, qu)


def flip_labels(y, fraction: float, *, seed: int = 0, num_classes: int = NUM_CLASSES):
    """Relabel ``round(fraction·n)`` examples, chosen at random, to a different class (uniform).

    Returns ``(y_noisy, flipped)`` with ``flipped`` a bool [n] mask of the relabelled examples.
    """
    y = np.asarray(y)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`fraction` must be in [0, 1]; got {fraction}")
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    idx = rng.choice(n, int(round(fraction * n)), replace=False)
    y_new = y.copy()
    y_new[idx] = (y[idx] + rng.integers(1, num_classes, idx.size)) % num_classes
    flipped = np.zeros(n, bool)
    flipped[idx] = True
    return y_new.astype(y.dtype), flipped
