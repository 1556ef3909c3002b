r"""Parenthesis balancing with several rules that fit the same training data (issue 12, Dyck part).

A string x ∈ {(, )}^L is written as ±1 (``(`` = +1). Three rules decide "balanced":

* **count**: the numbers of ``(`` and ``)`` are equal (Σ x = 0);
* **ends**: equal counts, the first symbol is ``(`` and the last is ``)`` (a shortcut: every
  Dyck word has these ends);
* **depth**: every prefix has depth ≥ 0 and the final depth is 0 (a Dyck word).

They agree on every string except the *ambiguous* ones: equal counts with a negative prefix
(``)(``, ``())(``, ...). Training on the strings where the rules agree leaves all three as perfect
solutions; what a trained model says on the ambiguous strings tells which one it learned. For even
L = 2m there are C(2m, m) equal-count strings, of which the Catalan number C_m = C(2m, m)/(m + 1)
are Dyck words, so the ambiguous set has C(2m, m)·m/(m + 1) strings (210 of 1024 for L = 10); of
these, C(2m−2, m−1) − C_m have the ends ``(…)`` (28 for L = 10: the probes where ends says
balanced and depth does not).

This module enumerates all 2^L strings exactly; `algorithm_votes` scores a model against each rule
on the ambiguous strings.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["all_strings", "labels", "split", "algorithm_votes", "ALGORITHMS"]

#: the rules, in the order of `labels`' columns
ALGORITHMS = ("count", "ends", "depth")


def all_strings(length: int) -> np.ndarray:
    """Every string of ``length`` parentheses as a ``[2^L, L]`` float32 array of ±1 (``(`` = +1)."""
    if not isinstance(length, (int, np.integer)) or not 2 <= length <= 20 or length % 2:
        raise ValueError(f"length must be an even integer in [2, 20] (2^L strings are enumerated); "
                         f"got {length!r}.")
    return np.array(list(itertools.product([1.0, -1.0], repeat=int(length))), np.float32)


def labels(x) -> np.ndarray:
    """``[N, 3]`` int labels (1 = balanced) of the rules in `ALGORITHMS` for strings ``x [N, L]``."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.all(np.abs(x) == 1):
        raise ValueError("x must be a [N, L] array of ±1 (one string per row).")
    depth = np.cumsum(x, axis=1)
    count = depth[:, -1] == 0
    ends = count & (x[:, 0] > 0) & (x[:, -1] < 0)
    dyck = count & (depth.min(axis=1) >= 0)
    return np.stack([count, ends, dyck], axis=1).astype(np.int32)


def split(length: int) -> dict:
    """``{"x_train", "y_train", "x_probe", "y_probe"}``: the strings where the rules agree with
    their common label, and the ambiguous strings with every rule's label ``[N, 3]``."""
    x = all_strings(length)
    y = labels(x)
    agree = np.all(y == y[:, :1], axis=1)
    return {"x_train": x[agree], "y_train": y[agree, 0], "x_probe": x[~agree], "y_probe": y[~agree]}


def algorithm_votes(predict_balanced, x_probe) -> np.ndarray:
    """How well a model's answers on the ambiguous strings match each rule of `ALGORITHMS`.

    ``predict_balanced(x) -> [N]`` booleans. The probes fall in two groups: E, where ends (and
    count) say balanced, and R, where only count does. With b_E and b_R the fractions the model
    calls balanced, the scores are count (b_E + b_R)/2, ends (b_E + 1 − b_R)/2, depth
    (2 − b_E − b_R)/2: each group counts equally (E is small), an exact rule scores 1, and the
    argmax is the nearest rule in (b_E, b_R).
    """
    x_probe = np.asarray(x_probe)
    said = np.asarray(predict_balanced(x_probe), bool).reshape(-1)
    if said.shape[0] != x_probe.shape[0]:
        raise ValueError(f"predict_balanced returned {said.shape[0]} answers for "
                         f"{x_probe.shape[0]} strings.")
    y = labels(x_probe)
    if np.any(y[:, 0] != 1) or np.any(y[:, 2] != 0):
        raise ValueError("x_probe must hold ambiguous strings only (split(L)['x_probe']).")
    e = y[:, 1] == 1
    b_e = float(said[e].mean()) if e.any() else 0.0
    b_r = float(said[~e].mean())
    return np.array([(b_e + b_r) / 2, (b_e + 1 - b_r) / 2, (2 - b_e - b_r) / 2])
