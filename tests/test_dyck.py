"""susc.data.dyck against exact combinatorics (binomials, Catalan numbers) and a brute-force rule."""
from math import comb

import numpy as np
import pytest

from susc.data import dyck


def _brute_dyck(s):
    depth = 0
    for c in s:
        depth += 1 if c == 1 else -1
        if depth < 0:
            return 0
    return int(depth == 0)


@pytest.mark.parametrize("L", [2, 4, 6, 10])
def test_counts_are_binomial_and_catalan(L):
    m = L // 2
    x = dyck.all_strings(L)
    y = dyck.labels(x)
    assert x.shape == (2 ** L, L) and len(np.unique(x, axis=0)) == 2 ** L
    assert y[:, 0].sum() == comb(L, m)                       # equal counts
    assert y[:, 2].sum() == comb(L, m) // (m + 1)            # Catalan number C_m
    assert y[:, 1].sum() == (comb(L - 2, m - 1) if L > 2 else 1)   # "(" + equal counts + ")"
    np.testing.assert_array_equal(y[:, 2], [_brute_dyck(s) for s in x])
    d = dyck.split(L)
    assert len(d["x_probe"]) == comb(L, m) * m // (m + 1)
    assert len(d["x_train"]) + len(d["x_probe"]) == 2 ** L
    # on the training strings every rule gives the training label
    for k in range(3):
        np.testing.assert_array_equal(dyck.labels(d["x_train"])[:, k], d["y_train"])
    if L == 10:
        assert d["y_probe"][:, 1].sum() == 28


def test_votes_name_the_rule():
    d = dyck.split(10)
    expected = [[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]]   # (b_E, b_R) = (1,1), (1,0), (0,0)
    for k in range(3):
        rule = lambda x, k=k: dyck.labels(x)[:, k] == 1
        np.testing.assert_array_equal(dyck.algorithm_votes(rule, d["x_probe"]), expected[k])
    with pytest.raises(ValueError, match="answers"):
        dyck.algorithm_votes(lambda x: np.ones(3, bool), d["x_probe"])
    with pytest.raises(ValueError, match="ambiguous"):
        dyck.algorithm_votes(lambda x: np.ones(len(x), bool), d["x_train"])


def test_bad_input():
    with pytest.raises(ValueError, match="even"):
        dyck.all_strings(7)
    with pytest.raises(ValueError, match="±1"):
        dyck.labels(np.zeros((2, 4)))
