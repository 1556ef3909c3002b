"""The result type shared by every sampler in `susc` (SGLD-family chains and the NUTS reference).

Shapes use the letters C = chains, D = draws (burn-in excluded), and `*s` an observable's own shape.
Arrays are NumPy arrays on the host: a result is data, not a traced value.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from ..stats.moments import Moments

__all__ = ["SampleResult", "Moments"]


@dataclasses.dataclass(frozen=True)
class SampleResult:
    """Draws (or streaming moments) from a localized tempered posterior.

    Attributes:
        loss: ``[C, D]`` mean loss L_n at each draw (L_n^rho when weights are given). With
            minibatches and ``draw_loss="batch"`` this is the minibatch estimate.
        init_loss: L_n(w*) at the initial (localization) point, full batch.
        observables: ``name -> [C, D, *s]`` observables evaluated at the draws; empty when the
            run was streaming (``store_draws=False``).
        moments: ``name -> Moments`` (and ``"a|b" -> Moments`` for cross pairs) when streaming
            accumulators were requested.
        settings: the hyperparameters and options the run used (nbeta, gamma, sampler, ...).
        final_state: the sampler state after the last draw, stacked over chains (a PyTree of
            arrays), so a run can be continued.
        wall_time: seconds spent sampling (compilation included).
        extras: free-form diagnostics (e.g. NUTS acceptance rates).
    """

    loss: np.ndarray
    init_loss: float
    observables: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    moments: Mapping[str, Moments] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    final_state: Any = None
    wall_time: float = float("nan")
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return int(self.loss.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.loss.shape[1])

    @property
    def nbeta(self) -> float:
        return float(self.settings["nbeta"])

    def __repr__(self) -> str:  # short: results are printed in notebooks
        obs = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.observables.items())
        mom = ", ".join(self.moments)
        return (f"SampleResult(chains={self.num_chains}, draws={self.num_draws}, "
                f"nbeta={self.settings.get('nbeta')}, init_loss={self.init_loss:.6g}, "
                f"observables=[{obs}], moments=[{mom}], wall_time={self.wall_time:.2f}s)")
