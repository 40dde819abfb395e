"""What a simulated frame holds at a place: for telling what the detector takes for comets.

:func:`tails.simulate.simulate_frame` records the sources it puts in a frame in a truth table:
one row per source, with its ``kind``, its ``x`` and ``y`` (0-based science pixels) and the
kind's own columns.  :func:`sources_at` names, for each of a set of positions, the source that
lies there, so that an evaluation can say what its false positives are (:mod:`tails.evaluate`):
asteroids, round or trailed, variable stars, supernovae, a comet's coma or tail away from its
nucleus, satellite streaks, bad columns, ghosts, a bright star's residuals, galaxy cores,
nebulosity, the reference's edge, cosmic rays, or nothing that the simulator records (noise, or
one of the many stars and cosmic rays it does not list), and whether that place lies outside the
reference (:func:`in_footprint`).  :func:`in_reference` says whether the difference image holds
data about a place at all, which it does not where the reference is missing.

Each kind of source reaches as far as the simulator draws it (the ``reach`` of
:data:`SOURCE_KINDS`), plus the match radius ``radius`` for the kinds that are points or lines.
Where several reach a place, the first of :data:`SOURCE_KINDS` names it: the compact, transient
sources before the extended, static ones.  The reaches are estimates, read off the simulator's
code, not fits.

Nothing here reads files: the functions take the truth table, the WCSs and the images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

__all__ = [
    "TRAILED_PIX", "BRIGHT_STAR_REACH_PIX", "BRIGHT_STAR_SPIKE_PIX", "REF_EDGE_REACH_PIX", "SOURCE_KINDS", "NOTHING",
    "OUTSIDE_REFERENCE", "in_footprint", "in_reference", "sources_at",
]

#: An asteroid trailed by this many px or more is "trailed": shorter trails are about as round as
#: the PSF (seeing of 1.2" to 3.5" is 1.2 to 3.5 px; ZTF.md, "Images").
TRAILED_PIX = 2.0

#: How far a star of r < 12 (the truth's ``bright_star``) marks a frame all round: its subtraction
#: residual and saturated core (an estimate from ``tails.simulate``).
BRIGHT_STAR_REACH_PIX = 50.0

#: How far along its row and column it reaches: diffraction spikes of up to 254 px and bleed
#: columns of up to 200 px each way (``tails.simulate``'s ``_spikes`` and ``_saturate``).
BRIGHT_STAR_SPIKE_PIX = 254.0

#: How far from the reference's edge the difference image is disturbed: the reference lies on its
#: own grid, tens of pixels off the science grid (``tails.simulate``), so its edge is known to that.
REF_EDGE_REACH_PIX = 60.0

#: The label of a position that no recorded source reaches.
NOTHING = "nothing recorded"

#: The label of such a position where the reference does not reach (:func:`in_footprint`).
OUTSIDE_REFERENCE = "outside the reference"


def _column(truth: pd.DataFrame, name: str, default: float = 0.0) -> np.ndarray:
    return truth[name].fillna(default).to_numpy(float) if name in truth else np.full(len(truth), default)


def _to_points(x, y, truth):
    """Distances (N positions, M sources) from the positions to the sources' points."""
    return np.hypot(x[:, None] - truth["x"].to_numpy(float)[None], y[:, None] - truth["y"].to_numpy(float)[None])


def _to_segments(x, y, x0, y0, ux, uy, start, stop):
    """Distances (N, M) from the positions to segments ``(x0, y0) + t (ux, uy)``, ``start <= t <= stop``."""
    dx, dy = x[:, None] - x0[None], y[:, None] - y0[None]
    t = np.clip(dx * ux[None] + dy * uy[None], start[None], stop[None])
    return np.hypot(dx - t * ux[None], dy - t * uy[None])


def _point(x, y, t, radius, pixscale):
    return _to_points(x, y, t) <= radius


def _comet_coma_or_tail(x, y, t, radius, pixscale):
    coma = _column(t, "coma_arcsec") / pixscale
    tail = _column(t, "tail_arcsec") / pixscale
    pa = np.deg2rad(_column(t, "pa_deg"))
    ux, uy = -np.sin(pa), np.cos(pa)  # tails.simulate.comet_stamp: the tail's direction on the image
    zero = np.zeros(len(t))
    on_tail = _to_segments(x, y, t["x"].to_numpy(float), t["y"].to_numpy(float), ux, uy, zero, tail) <= radius
    return (_to_points(x, y, t) <= coma[None] + radius) | (on_tail & (tail[None] > 0))


def _asteroid(trailed: bool):
    def reach(x, y, t, radius, pixscale):
        trail = _column(t, "trail_pix")
        # the truth gives the trail's length, not its direction: it may lie any way about the centre
        near = _to_points(x, y, t) <= radius + trail[None] / 2
        return near & ((trail >= TRAILED_PIX) if trailed else (trail < TRAILED_PIX))[None]
    return reach


def _streak(x, y, t, radius, pixscale):
    ang = np.deg2rad(_column(t, "angle_deg"))
    # a satellite crosses the whole frame: the distance to its line
    d = np.abs(-(x[:, None] - t["x"].to_numpy(float)[None]) * np.sin(ang)[None]
               + (y[:, None] - t["y"].to_numpy(float)[None]) * np.cos(ang)[None])
    return d <= radius


def _bad_column(x, y, t, radius, pixscale):
    # tails.simulate offsets a column from row ``y`` to the top
    return (np.abs(x[:, None] - t["x"].to_numpy(float)[None]) <= radius) & (y[:, None] >= t["y"].to_numpy(float)[None] - radius)


def _ghost(x, y, t, radius, pixscale):
    return _to_points(x, y, t) <= _column(t, "radius_pix")[None] + radius


def _bright_star(x, y, t, radius, pixscale):
    dx = np.abs(x[:, None] - t["x"].to_numpy(float)[None])
    dy = np.abs(y[:, None] - t["y"].to_numpy(float)[None])
    on_spikes = ((dx <= radius) | (dy <= radius)) & (np.maximum(dx, dy) <= BRIGHT_STAR_SPIKE_PIX)
    return (np.hypot(dx, dy) <= BRIGHT_STAR_REACH_PIX) | on_spikes


def _nebula(x, y, t, radius, pixscale):
    return _to_points(x, y, t) <= _column(t, "size_pix")[None]


def _ref_edge(x, y, t, radius, pixscale):
    return np.abs(x[:, None] - t["x"].to_numpy(float)[None]) <= REF_EDGE_REACH_PIX


#: ``(label, truth kind, reach)``: what a position can lie on, in order of precedence; ``reach(x,
#: y, rows, radius, pixscale)`` says, for N positions and the M rows of that kind, which rows
#: reach which positions (N, M).
SOURCE_KINDS: tuple[tuple[str, str, Callable], ...] = (
    ("comet", "comet", _point),  # its nucleus
    ("comet's coma or tail", "comet", _comet_coma_or_tail),
    ("asteroid, trailed", "asteroid", _asteroid(trailed=True)),
    ("asteroid", "asteroid", _asteroid(trailed=False)),
    ("variable star", "variable", _point),
    ("supernova", "supernova", _point),
    ("cosmic ray", "cosmic_ray", _point),
    ("satellite streak", "streak", _streak),
    ("bad column", "bad_column", _bad_column),
    ("bright star", "bright_star", _bright_star),
    ("ghost", "ghost", _ghost),
    ("galaxy", "galaxy", _point),
    ("reference edge", "ref_edge", _ref_edge),
    ("nebulosity", "nebula", _nebula),
)


def in_footprint(x, y, wcs_sci, wcs_ref, shape: tuple[int, int]) -> np.ndarray:
    """Whether the reference image covers each science pixel.

    The reference lies on its own grid, offset by tens of pixels and slightly rotated
    (``tails.simulate``), so strips along the science frame's edges have no reference.

    Parameters
    ----------
    x, y : array_like
        0-based science pixels.
    wcs_sci, wcs_ref : astropy.wcs.WCS
        The science and reference images' WCSs.
    shape : (ny, nx)
        The reference image's shape.

    Returns
    -------
    numpy.ndarray of bool
    """
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    if not x.size:
        return np.zeros(0, bool)
    ra, dec = wcs_sci.wcs_pix2world(x, y, 0)
    rx, ry = wcs_ref.wcs_world2pix(ra, dec, 0)
    ny, nx = shape
    return (rx >= -0.5) & (rx < nx - 0.5) & (ry >= -0.5) & (ry < ny - 0.5)


def in_reference(diff: np.ndarray, x: np.ndarray, y: np.ndarray, half: int = 2) -> np.ndarray:
    """Whether the difference image holds data around each nucleus.

    Where the reference does not reach, IPAC's difference image is empty, and so is the
    simulator's (:func:`tails.simulate.reference_holes`): beyond the edge of the reference's
    footprint where it is cut (``ref_coverage``), and, in frames simulated since 2026-12-07, in
    the strips along the frame's edges that the reference's offset grid leaves uncovered
    (:func:`in_footprint`).  No detector that works on the difference can find a
    comet there.  A nucleus counts as in the reference when some pixel of the
    ``(2 half + 1)``-px square around it is finite and not zero.

    Returns
    -------
    ndarray of bool, shape (M,)
    """
    d = np.asarray(diff)
    out = []
    for xi, yi in zip(np.atleast_1d(x), np.atleast_1d(y)):
        c, r = int(np.floor(float(xi) + 0.5)), int(np.floor(float(yi) + 0.5))
        box = d[max(r - half, 0) : max(r + half + 1, 0), max(c - half, 0) : max(c + half + 1, 0)]
        out.append(bool((np.isfinite(box) & (box != 0)).any()))
    return np.array(out, dtype=bool)


def sources_at(x, y, truth: pd.DataFrame, radius: float, pixscale: float = 1.01,
               covered: np.ndarray | None = None) -> np.ndarray:
    """Name the simulated source at each position.

    Parameters
    ----------
    x, y : array_like
        0-based science pixels.
    truth : pandas.DataFrame
        A frame's truth table (:func:`tails.simulate.simulate_frame`): ``kind``, ``x``, ``y``
        and the kinds' columns (``coma_arcsec``, ``tail_arcsec``, ``pa_deg``, ``trail_pix``,
        ``angle_deg``, ``radius_pix``, ``size_pix``; missing ones count as 0).
    radius : float
        The match radius, px: how near a point source or a line a position must be to lie on it.
    pixscale : float
        Arcsec per pixel, for the comets' comae and tails (ZTF.md: 1.01"/px).
    covered : array_like of bool, optional
        Whether the reference covers each position (:func:`in_footprint`).

    Returns
    -------
    numpy.ndarray of str
        A label of :data:`SOURCE_KINDS` for each position; else :data:`OUTSIDE_REFERENCE` where
        ``covered`` is False, and :data:`NOTHING`.
    """
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    labels = np.full(x.shape, NOTHING, dtype=object)
    kinds = truth["kind"].astype(str) if "kind" in truth else pd.Series("", index=truth.index)
    for label, kind, reach in SOURCE_KINDS:
        open_ = labels == NOTHING
        rows = truth[kinds == kind]
        if open_.any() and len(rows):
            hit = reach(x[open_], y[open_], rows.reset_index(drop=True), float(radius), float(pixscale)).any(axis=1)
            labels[np.flatnonzero(open_)[hit]] = label
    if covered is not None:
        labels[(labels == NOTHING) & ~np.atleast_1d(np.asarray(covered, bool))] = OUTSIDE_REFERENCE
    return labels
