r"""Parenthesis balancing with two algorithms that fit the same training data (issue 12, Dyck part).

A string x ∈ {(, )}^L is written as ±1 (``(`` = +1). Two rules decide "balanced":

* **count**: the numbers of ``(`` and ``)`` are equal (Σ x = 0);
* **depth**: every prefix has depth ≥ 0 and the final depth is 0 (a Dyck word).

They agree on every string except the *ambiguous* ones: equal counts with a negative prefix
(``)(``, ``())(``, ...). Training on the strings where the rules agree leaves both as perfect
solutions; what a trained model says on the ambiguous strings tells which one it learned. For even
L = 2m there are C(2m, m) equal-count strings, of which the Catalan number C_m = C(2m, m)/(m + 1)
are Dyck words, so the ambiguous set has C(2m, m)·m/(m + 1) strings (210 of 1024 for L = 10).

This module enumerates all 2^L strings exactly; `algorithm_votes` classifies a model by its
answers on the ambiguous strings.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["all_strings", "labels", "split", "algorithm_votes", "ALGORITHMS"]

#: the two rules, in the order of `labels`' columns
ALGORITHMS = ("count", "depth")


def all_strings(length: int) -> np.ndarray:
    """Every string of ``length`` parentheses as a ``[2^L, L]`` float32 array of ±1 (``(`` = +1)."""
    if not isinstance(length, (int, np.integer)) or not 2 <= length <= 20 or length % 2:
        raise ValueError(f"length must be an even integer in [2, 20] (2^L strings are enumerated); "
                         f"got {length!r}.")
    return np.array(list(itertools.product([1.0, -1.0], repeat=int(length))), np.float32)


def labels(x) -> np.ndarray:
    """``[N, 2]`` int labels (1 = balanced) of the rules in `ALGORITHMS` for strings ``x [N, L]``."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.all(np.abs(x) == 1):
        raise ValueError("x must be a [N, L] array of ±1 (one string per row).")
    depth = np.cumsum(x, axis=1)
    count = depth[:, -1] == 0
    dyck = count & (depth.min(axis=1) >= 0)
    return np.stack([count, dyck], axis=1).astype(np.int32)


def split(length: int) -> dict:
    """``{"x_train", "y_train", "x_probe"}``: the strings where the rules agree with their common
    label, and the ambiguous strings (count says balanced, depth says not)."""
    x = all_strings(length)
    y = labels(x)
    agree = y[:, 0] == y[:, 1]
    return {"x_train": x[agree], "y_train": y[agree, 0], "x_probe": x[~agree]}


def algorithm_votes(predict_balanced, x_probe) -> np.ndarray:
    """Fractions ``[count, depth]`` of the ambiguous strings on which a model answers as each rule
    does: ``predict_balanced(x) -> [N]`` booleans; count says "balanced" on every probe, depth
    "unbalanced", so the two fractions sum to 1 and the larger names the algorithm learned."""
    said = np.asarray(predict_balanced(np.asarray(x_probe)), bool).reshape(-1)
    if said.shape[0] != np.shape(x_probe)[0]:
        raise ValueError(f"predict_balanced returned {said.shape[0]} answers for "
                         f"{np.shape(x_probe)[0]} strings.")
    return np.array([said.mean(), 1.0 - said.mean()])
