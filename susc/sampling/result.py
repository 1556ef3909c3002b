"""The result type shared by every sampler in `susc` (SGLD-family chains and the NUTS reference).

Shapes use the letters C = chains, D = draws (burn-in excluded), and `*s` an observable's own shape.
Arrays are NumPy arrays on the host: a result is data, not a traced value.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from ..stats.moments import Moments

__all__ = ["SampleResult", "StackedResult", "Moments", "check_result"]


@dataclasses.dataclass(frozen=True)
class _Draws:
    """Fields shared by `SampleResult` and `StackedResult` (the latter adds a leading K axis)."""

    loss: np.ndarray
    init_loss: float
    observables: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    moments: Mapping[str, Moments] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    final_state: Any = None
    wall_time: float = float("nan")
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _lead = 0   # number of axes before the chain axis

    @property
    def num_chains(self) -> int:
        return int(self.loss.shape[self._lead])

    @property
    def num_draws(self) -> int:
        return int(self.loss.shape[self._lead + 1])

    @property
    def nbeta(self) -> float:
        return float(self.settings["nbeta"])

    def __repr__(self) -> str:  # short: results are printed in notebooks
        dims = f"chains={self.num_chains}, draws={self.num_draws}"
        if self._lead:
            dims = f"components={self.loss.shape[0]}, " + dims
        obs = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.observables.items())
        return (f"{type(self).__name__}({dims}, nbeta={self.settings.get('nbeta')}, "
                f"init_loss={self.init_loss:.6g}, observables=[{obs}], moments=[{', '.join(self.moments)}], "
                f"wall_time={self.wall_time:.2f}s)")


@dataclasses.dataclass(frozen=True, repr=False)
class SampleResult(_Draws):
    """Draws (or streaming moments) from a localized tempered posterior.

    Attributes:
        loss: ``[C, D]`` mean loss L_n at each draw (L_n^rho when weights are given). With
            minibatches and ``draw_loss="auto"`` this is the minibatch estimate.
        init_loss: L_n(w*) at the initial (localization) point, full batch.
        observables: ``name -> [C, D, *s]`` observables evaluated at the draws; empty when the
            run was streaming (``store_draws=False``).
        moments: ``name -> Moments`` (and ``"a|b" -> Moments`` for cross pairs) when streaming
            accumulators were requested.
        settings: the hyperparameters and options the run used (nbeta, gamma, sampler, ...).
        final_state: the chain states after the last draw, stacked over chains (position, sampler
            state, loss, gradients, step counter, first diverged draw).
        wall_time: seconds spent sampling (compilation included).
        extras: free-form diagnostics (e.g. NUTS acceptance rates).
    """


def _take(tree, k):
    return None if tree is None else jax.tree_util.tree_map(lambda x: x[k], tree)


@dataclasses.dataclass(frozen=True, repr=False)
class StackedResult(_Draws):
    """K components × C chains from one vectorized run (``susc.sample(..., masks=...)``).

    Same fields as `SampleResult` with a leading component axis: ``loss [K, C, D]``,
    ``observables[name] [K, C, D, *s]``, moments ``[K, C, B, ...]``, ``final_state`` leaves
    ``[K, C, ...]``. It is deliberately *not* a `SampleResult`: estimators that pool chains (e.g.
    `susc.llc`) would silently pool components too. Take one component with ``result.component(k)``
    (or iterate: ``[susc.llc(r) for r in result]``).
    """

    _lead = 1

    @property
    def num_components(self) -> int:
        return int(self.loss.shape[0])

    def component(self, k: int) -> SampleResult:
        """Component k as an ordinary `SampleResult` (``[C, D]`` draws)."""
        K = self.num_components
        if not -K <= int(k) < K:
            raise IndexError(f"component {k} out of range for {K} components")
        mom = {name: Moments(*(None if a is None else np.asarray(a)[k] for a in
                               (m.count, m.mean_x, m.mean_y, m.comoment))) for name, m in self.moments.items()}
        return SampleResult(np.asarray(self.loss)[k], self.init_loss,
                            {n: np.asarray(v)[k] for n, v in self.observables.items()}, mom,
                            dict(self.settings, component=int(k)), _take(self.final_state, k),
                            self.wall_time, dict(self.extras))

    def __len__(self) -> int:
        return self.num_components

    def __iter__(self):
        return (self.component(k) for k in range(self.num_components))


def check_result(result, fn: str):
    """Refuse anything but a single-component `SampleResult`, saying what to do instead."""
    if isinstance(result, StackedResult):
        raise TypeError(f"{fn}() got a StackedResult of {result.num_components} components × "
                        f"{result.num_chains} chains; pooling would mix components. Use "
                        f"{fn}(result.component(k)) or [{fn}(r) for r in result].")
    if not isinstance(result, SampleResult):
        raise TypeError(f"{fn}() needs a SampleResult from susc.sample or susc.nuts, got {type(result).__name__}")
