"""Pictures of candidates: the sci/ref/diff triplet PNG with a reticle, and thumbnails.

Images are shown with a z-scale stretch (IRAF's zscale, via astropy) and the bone colormap,
the original's choice.  Matplotlib runs headless (Agg); files are written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import ZScaleInterval  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from .atomic import atomic_path  # noqa: E402

__all__ = ["reticle", "zscale", "plot_stack", "save_triplet_png", "thumbnail_png"]

TRIPLET_TITLES = ("science", "reference", "difference")
CMAP = "bone"


def reticle(inner: float = 0.5, outer: float = 1.0, which: str = "lrtb") -> MplPath:
    """A cross-hair marker path with a gap of ``inner`` in the middle (after L. P. Singer)."""
    vert = {"l": (-1, 0), "r": (1, 0), "b": (0, -1), "t": (0, 1)}
    verts, codes = [], []
    for d in which:
        v = np.asarray(vert[d], float)
        verts += [inner * v, outer * v]
        codes += [MplPath.MOVETO, MplPath.LINETO]
    return MplPath(np.array(verts), codes)


def zscale(image: np.ndarray) -> tuple[float, float]:
    """zscale limits of the finite pixels of ``image`` (0, 1 when there are none)."""
    finite = np.asarray(image, float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = ZScaleInterval().get_limits(finite)
    if not vmax > vmin:
        vmin, vmax = float(finite.min()), float(finite.max()) + 1e-9
    return float(vmin), float(vmax)


def _draw(
    stack: np.ndarray,
    reticles: Sequence[tuple[float, float]] | None,
    titles: Sequence[str] | None,
    title: str | None,
    w: float,
    h: float,
    dpi: int,
    cmap: str,
) -> Figure:
    n = stack.shape[-1]
    fig = Figure(figsize=(w, h), dpi=dpi)
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        img = stack[..., i]
        vmin, vmax = zscale(img)
        ax.imshow(img, cmap=cmap, origin="lower", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        for x, y in reticles or ():
            ax.plot(
                x, y, marker=reticle(which="lt", inner=0.4), color="#fd6a21",
                markersize=20, markeredgewidth=1.2,
            )
    if title:
        fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    return fig


def plot_stack(
    stack: np.ndarray,
    reticles: Sequence[tuple[float, float]] | None = None,
    save: str | os.PathLike | None = None,
    titles: Sequence[str] | None = TRIPLET_TITLES,
    title: str | None = None,
    w: float = 6,
    h: float = 2.3,
    dpi: int = 150,
    cmap: str = CMAP,
) -> Figure:
    """Plot the channels of an (H, W, C) stack side by side, zscaled, with optional reticles.

    Parameters
    ----------
    stack : ndarray, shape (H, W, C)
        E.g. a sci/ref/diff tile; pixel (x, y) is column x, row y (origin lower left).
    reticles : sequence of (x, y), optional
        Positions to mark in every panel.
    save : path, optional
        Write a PNG there (atomically); the figure is returned either way.

    Returns
    -------
    matplotlib.figure.Figure
    """
    titles = titles if titles is None or len(titles) == stack.shape[-1] else None
    fig = _draw(np.asarray(stack, float), reticles, titles, title, w, h, dpi, cmap)
    if save is not None:
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    return fig


def save_triplet_png(
    stack: np.ndarray,
    path: str | os.PathLike,
    reticle: tuple[float, float] | None = None,
    title: str | None = None,
) -> Path:
    """Write the three panels sci/ref/diff of a raw tile, zscaled and titled, with a reticle."""
    plot_stack(stack, reticles=[reticle] if reticle is not None else None, save=path, title=title)
    plt.close("all")
    return Path(path)


def thumbnail_png(image: np.ndarray, dpi: int = 100) -> bytes:
    """A PNG of one small cutout (e.g. 63 x 63), zscaled, bone colormap, no axes."""
    img = np.asarray(image, float)
    vmin, vmax = zscale(img)
    fig = Figure(figsize=(img.shape[1] / dpi * 4, img.shape[0] / dpi * 4), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.nan_to_num(img, nan=vmin), cmap=CMAP, origin="lower", vmin=vmin, vmax=vmax,
              interpolation="nearest")
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
