r"""The local learning coefficient estimator (Lau et al. 2023, arXiv:2308.12108).

.. math::

    \hat\lambda(w^*) = n\beta\,\big(\mathbb E^{\beta}_{w\mid w^*,\gamma}[L_n(w)] - L_n(w^*)\big),

with the expectation over the localized tempered posterior, estimated per chain from the recorded
draws (burn-in is never recorded, so it is excluded), then averaged over chains.

How this differs from devinterp: v1 averages the *minibatch* losses at draws and takes L_n(w*)
from a few minibatches; v2 averages over every step **including burn-in** and 32 init batches per
chain. `susc` uses the full-batch L_n(w*) and, with ``batch_size=None`` (or ``draw_loss="full"``),
the exact L_n at each draw; with minibatches and ``draw_loss="auto"`` the draw loss is an unbiased
minibatch estimate of L_n. ``std`` is the spread over chains (ddof=1); ``se`` is the batch-means
Monte-Carlo standard error of the pooled mean, which accounts for autocorrelation.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..stats.covariance import mean_estimate
from ..sampling.result import SampleResult, check_result

__all__ = ["LLCEstimate", "llc"]


@dataclasses.dataclass(frozen=True)
class LLCEstimate:
    mean: float            # pooled λ̂
    std: float             # standard deviation of per-chain λ̂ (ddof=1; nan for one chain)
    se: float              # Monte-Carlo standard error of `mean` (batch means)
    per_chain: np.ndarray  # [C] λ̂ of each chain
    trace: np.ndarray      # [C, D] nβ(L_n(w_d) − L_n(w*)), for loss-trace plots

    def __repr__(self):
        return f"LLCEstimate(mean={self.mean:.4g}, std={self.std:.3g}, se={self.se:.3g}, chains={len(self.per_chain)})"


def llc(result: SampleResult, *, num_batches: int = 8) -> LLCEstimate:
    """λ̂ = nβ(E[L_n] − L_n(w*)) from a `SampleResult` (its ``loss``, ``init_loss`` and ``nbeta``)."""
    check_result(result, "llc")
    trace = result.nbeta * (np.asarray(result.loss, np.float64) - result.init_loss)
    per_chain = trace.mean(axis=1)
    est = mean_estimate(trace, num_batches=num_batches)
    std = float(per_chain.std(ddof=1)) if per_chain.size > 1 else float("nan")
    return LLCEstimate(float(est.value), std, float(est.se), per_chain, trace)
