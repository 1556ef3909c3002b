"""One house style for every figure in the book, and a heatmap for signed matrices.

``use_style()`` sets matplotlib's rcParams: Okabe–Ito colours (safe for the common forms of colour
blindness and distinct in greyscale print), labelled axes at print-readable sizes, light grids,
no top/right spines. Signed quantities -- susceptibilities χ = -Cov[φ, ΔL] and BIF(i, j) =
-Cov[ℓ_i, ℓ_j] -- are drawn with the diverging map ``DIVERGING_CMAP`` centred at zero, so that
red/blue always means the same sign across chapters: positive is red, negative is blue.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib as mpl
import numpy as np

__all__ = ["PALETTE", "DIVERGING_CMAP", "SEQUENTIAL_CMAP", "STYLE", "use_style", "heatmap", "shift_strip"]

# Okabe & Ito (2008), "Color Universal Design"; black moved last so lines stay coloured.
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
DIVERGING_CMAP = "RdBu_r"  # ColorBrewer RdBu: colour-blind safe; reversed so positive = red
SEQUENTIAL_CMAP = "viridis"

STYLE = {
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "axes.grid": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "figure.figsize": (6.4, 3.8),
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "image.cmap": SEQUENTIAL_CMAP,
}


def use_style() -> None:
    """Apply the house style to matplotlib's global rcParams (idempotent)."""
    mpl.rcParams.update(STYLE)


def heatmap(
    ax,
    M,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    signed: bool = True,
    *,
    cmap: str | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    annotate: bool = False,
    fmt: str = "{:.2g}",
):
    """Draw matrix ``M`` (shape ``[R, K]``) on ``ax`` and return the ``AxesImage``.

    With ``signed=True`` the colour scale is symmetric, ``[-vmax, vmax]`` with ``vmax = max|M|``
    unless given, using the diverging map so that zero is white. With ``signed=False`` the
    sequential map spans ``[min M, max M]``. ``annotate=True`` writes each entry with ``fmt``.
    """
    M = np.asarray(M, dtype=float)
    if M.ndim != 2:
        raise ValueError(f"M must be a 2-D matrix, got shape {M.shape}; reshape it to [rows, cols].")
    for name, labels, n in (("row_labels", row_labels, M.shape[0]), ("col_labels", col_labels, M.shape[1])):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} entries but M has {n} {name.split('_')[0]}s.")
    if signed:
        finite = np.abs(M[np.isfinite(M)])
        scale = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        scale = scale if scale > 0 else 1.0  # all-zero matrix: any symmetric range will do
        kw = dict(cmap=cmap or DIVERGING_CMAP, vmin=-scale, vmax=scale)
    else:
        kw = dict(cmap=cmap or SEQUENTIAL_CMAP, vmax=vmax)
    im = ax.imshow(M, aspect="auto", interpolation="nearest", **kw)
    ax.grid(False)
    if row_labels is not None:
        ax.set_yticks(np.arange(M.shape[0]), labels=list(row_labels))
    if col_labels is not None:
        ax.set_xticks(np.arange(M.shape[1]), labels=list(col_labels))
        if max((len(str(c)) for c in col_labels), default=0) > 3:
            ax.tick_params(axis="x", labelrotation=45)
    if annotate:
        lo, hi = im.get_clim()
        for (i, j), v in np.ndenumerate(M):
            # white text on dark cells: saturated ends of RdBu, the low end of viridis
            frac = 0.5 if hi == lo else (v - lo) / (hi - lo)
            strong = abs(frac - 0.5) > 0.3 if signed else frac < 0.4
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if strong else "black")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.85)
    return im


def shift_strip(ax, shifts, *, censored_at: float, ylabel: str | None = None, jitter: float = 0.2):
    """One jittered column of points per group: ``shifts`` maps a label to a 1-D array (e.g. an
    arm's formation step minus its seed's baseline). Infinite entries (the run or its baseline
    never formed) are drawn hollow at ±``censored_at`` and NaN (neither formed) hollow at 0, so
    that they stay visible without pretending to a value. Returns ``ax``."""
    for k, (label, d) in enumerate(shifts.items()):
        d = np.asarray(d, dtype=float).ravel()
        x = k + (np.linspace(-jitter, jitter, d.size) if d.size > 1 else np.zeros(d.size))
        ok = np.isfinite(d)
        shown = np.where(np.isnan(d), 0.0, np.clip(d, -censored_at, censored_at))
        ax.plot(x[ok], d[ok], "o", ms=4, color=f"C{k % 10}")
        ax.plot(x[~ok], shown[~ok], "o", ms=4, mfc="none", color=f"C{k % 10}")
    ax.axhline(0, color="k", lw=0.8)
    for y in (-censored_at, censored_at):
        ax.axhline(y, color="0.7", ls=":", lw=0.8)
    ax.set_xticks(range(len(shifts)), list(shifts))
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax
