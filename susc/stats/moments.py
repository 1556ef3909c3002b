"""The `Moments` type: streaming moments of one observable (or a cross pair), per (chain, batch)."""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Moments"]


@dataclasses.dataclass(frozen=True)
class Moments:
    """Streaming moments of one observable (or a cross pair) kept per (chain, batch).

    Draws of each chain are split into `B` contiguous batches; each batch keeps its count, mean
    and centred co-moment (Welford/Chan updates, no E[xy] - E[x]E[y] cancellation).

    Attributes:
        count: ``[C, B]`` number of draws in each batch (``[K, C, B]`` for a stacked run).
        mean_x: ``[C, B, *sx]``; mean_y: ``[C, B, *sy]``.
        comoment: ``[C, B, *sx, *sy]`` = sum over draws of (x - mean_x) (y - mean_y) (outer product),
            or ``[C, B, *sx]`` (elementwise) for a single observable.
    """

    count: np.ndarray
    mean_x: np.ndarray
    mean_y: np.ndarray | None = None
    comoment: np.ndarray | None = None
