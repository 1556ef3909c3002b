"""susc.plotting: the house style, the signed heatmap and the shift strip."""
import matplotlib

matplotlib.use("Agg")  # in-process only; does not touch MPLBACKEND for notebook kernels
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from susc import plotting  # noqa: E402


def test_use_style_sets_palette():
    plotting.use_style()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    assert [c.lower() for c in colors] == [c.lower() for c in plotting.PALETTE]
    assert matplotlib.rcParams["image.cmap"] == plotting.SEQUENTIAL_CMAP


def test_heatmap_signed_is_symmetric_and_labelled():
    M = np.array([[0.5, -2.0, 1.0], [0.0, 0.25, -0.5]])
    fig, ax = plt.subplots()
    im = plotting.heatmap(ax, M, ["a", "b"], ["x", "y", "z"], annotate=True)
    assert im.get_clim() == (-2.0, 2.0)
    assert im.get_cmap().name == plotting.DIVERGING_CMAP
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert len(ax.texts) == M.size
    # zero maps to the centre of the diverging map
    assert im.norm(0.0) == pytest.approx(0.5)
    plt.close(fig)


def test_heatmap_unsigned_and_errors():
    fig, ax = plt.subplots()
    im = plotting.heatmap(ax, np.arange(6.0).reshape(2, 3), signed=False, colorbar=False)
    assert im.get_clim() == (0.0, 5.0)
    with pytest.raises(ValueError, match="row_labels has 3 entries"):
        plotting.heatmap(ax, np.zeros((2, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="2-D"):
        plotting.heatmap(ax, np.zeros(3))
    plt.close(fig)


def test_shift_strip_places_censored_runs_at_the_bounds():
    fig, ax = plt.subplots()
    plotting.shift_strip(ax, {"a": [10.0, np.inf], "b": [-np.inf, np.nan, -5.0]}, censored_at=100)
    ys = np.concatenate([ln.get_ydata() for ln in ax.lines if ln.get_marker() == "o"])
    assert sorted(ys.tolist()) == [-100.0, -5.0, 0.0, 10.0, 100.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close(fig)
