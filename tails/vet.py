"""Vetting: is a candidate extended beyond the point-spread function, as a comet's coma is?

On simulated frames the model's commonest false positives are asteroids. An asteroid is a point
source in the science and difference images and is absent from the reference, so it looks like a
comet without a coma. An astronomer tells the two apart by the coma, which makes a comet fuzzier
than a star (ZTF.md, "Comets as ZTF sees them": a 1/rho coma of 2" to 60" around an unresolved
nucleus; asteroids are moving point sources). This module measures that fuzziness without any
model of the PSF. A comet whose coma is too faint to measure is dropped with the asteroids: C/2022
E3 (ZTF) looked asteroidal at first (ZTF.md), so ``tails.vet.enabled: false`` is there for
searches that must not lose such comets.

1. The **concentration of a point source**, ``C = F(r1) / F(r2)``, is the clipped median, over
   bright, isolated, round, unsaturated stars of the science image, of the flux within ``r1``
   over the flux within ``r2`` (:func:`star_concentration`). Stars are found and measured over
   the sky where they are, which nebulosity and twilight make vary across a frame
   (:func:`sky_of`).
2. For a candidate in the difference image, the **excess** ``E = F(r2) - F(r1) / C`` is the flux
   between ``r1`` and ``r2`` beyond what a point source with the same core flux would put there.
   It is zero up to noise for a point source and positive for a coma.
3. Its **significance** is ``E`` over the spread of the same linear filter at blank places of
   the difference image (:func:`blank_spread`). That spread carries the image's correlated noise
   and its subtraction residuals with it.

The radii scale with the header's seeing FWHM: ``r1`` is ``tails.vet.r1_fwhm`` FWHMs, and
each of ``tails.vet.r2_fwhm`` gives one outer radius. A small ``r2`` suits small comae, and a
large one suits faint, large comae. A candidate is kept if, at one ``r2`` at least, its
significance reaches ``min_significance`` and its excess is ``min_fraction`` of ``F(r2)``
(:func:`measure_candidates` measures and marks every candidate, :func:`vet_candidates` keeps
the extended ones).

4. A **trail** passes that test too: an asteroid that moves during the 30 s exposure is a line
   seen through the PSF (ZTF.md: moving point sources; ``tails.simulate`` trails near-Earth
   asteroids by up to 12 px), and its light beyond the core lies along the line.  Across the
   line it is as narrow as a star, while a coma makes a comet wider than a star every way
   (:func:`window_moments`: second moments under a Gaussian window of sigma one FWHM, the
   star's measured on the same stars as the concentration).  A candidate measured at an S/N of
   ``trail_min_snr`` or more, whose narrowest second moment is at most ``trail_max_width``
   times a star's and whose widest is ``trail_min_elongation`` times its narrowest or more, is
   a trail, and is dropped.  Round comets with large comae measure as narrow as a star in so
   small a window, and are spared by their roundness.  A candidate beside a star's subtraction
   residual is not judged (:func:`trail_measures`).

5. A **compact coma** is evidence the model underrates.  A bright comet with a coma of a few
   arcseconds is, to the model, much like a bright asteroid, and it may score it 0.04 to 0.47
   (README, *Compact comae*).  Measured, it is plain: its light beyond a point
   source is tens of sigmas, a modest part of its flux (its nucleus and inner coma lie within
   ``r1``), and it is round.  Ghosts, nebulae and galaxy residuals, which the excess test passes
   at such significance too, put nearly all their light beyond ``r1``.  A candidate that is
   kept (extended, not a trail), whose excess within the smallest ``r2`` reaches
   ``compact_min_significance`` and is ``min_fraction`` to ``compact_max_fraction`` of its flux
   there, and whose elongation is measured and under ``trail_min_elongation``, is compact.  The
   smallest ``r2`` holds a compact coma and leaves out most neighbours: at the largest, a bright
   asteroid 8 px from a star's subtraction residual measured as a coma of 29 sigmas.  The odds
   of a compact candidate's score are multiplied by ``compact_odds`` (:func:`compact_score`):
   with 19, a score of 0.05 becomes 0.5.  The detector's threshold applies to that score.

Nothing here reads files: the functions take arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.interpolate import RectBivariateSpline

__all__ = [
    "aperture_weights",
    "excess_weights",
    "centroid",
    "window_moments",
    "Sky",
    "sky_of",
    "difference_noise",
    "star_concentration",
    "blank_spread",
    "extendedness",
    "trail_measures",
    "check_vet_config",
    "compact_score",
    "lowest_compact_score",
    "unvetted",
    "measure_candidates",
    "vet_candidates",
]

log = logging.getLogger(__name__)

#: Sub-pixels per pixel side when apertures are drawn, so that a pixel cut by the aperture's edge
#: counts with the fraction of it inside.
OVERSAMPLE = 5
#: Stars used for the concentration: peaks at least this many robust sigmas over the median of
#: the science image, and the highest of their surroundings out to ``ISOLATION_FWHM`` FWHMs.
STAR_SNR = 30.0
ISOLATION_FWHM = 4.0
#: Largest ellipticity ``|I_xx - I_yy, 2 I_xy| / (I_xx + I_yy)`` of a star used: stars are round
#: to ~0.1 (the simulator's PSF ellipticity is at most 0.12, ``tails.simulate.random_conditions``),
#: satellite streaks and bleed trails are near 1.
MAX_STAR_ELLIPTICITY = 0.3
#: Side, in px, of the boxes whose medians make the sky under the stars (:func:`sky_of`):
#: a star (FWHM 1.2" to 3.5", ZTF.md) puts its light in a few of a box's 4096 pixels, while
#: nebulosity (Gaussians of 80 to 600 px in ``tails.simulate``) and twilight vary over hundreds.
SKY_BOX = 64
#: Fewest stars the concentration may be measured from (else the frame is not vetted, with a
#: warning), and the most that are used (the brightest).  One star's F(r1)/F(r2) scatters by
#: 0.003 to 0.024 about the frame's median (robust sigma, 6 evaluation frames), and the median of
#: the 5 brightest lies within 0.01 of that of 50: an error of about 1 % of the flux, well inside
#: ``min_fraction``.  Of the evaluation frames 900000-900099, all but one have 22 stars or more;
#: that one, a twilight frame of sparse stars (sky 16.7 mag/arcsec^2), has 7 and went unvetted
#: with 10 as the least, keeping 4 false positives.
MIN_STARS, MAX_STARS = 5, 50
#: Blank places at which the excess filter's spread is measured.
BLANK_PLACES = 300
#: The candidate's peak is looked for within this many px of its reported position (the second
#: look puts 90 % of comets within 1.75 px; README, "The second look").
SEARCH_PX = 2.0
#: Rounds of the centroid's first moment, each in a window centred on the last estimate.
CENTROID_ROUNDS = 3
#: Sigma of the Gaussian window of the trail test's second moments, in FWHMs of the PSF: wide
#: enough to take in a trail of several px, narrow enough to leave most neighbours out.
TRAIL_WINDOW_FWHM = 1.0
#: A pixel of the trail test's stamp this many noise sigmas below zero is a subtraction residual
#: (a star's dipole), and the candidate is not judged a trail or not: a trail is positive
#: everywhere, and a negative lobe beside a comet makes its moments narrow and elongated.  On
#: simulated frames 300000-300039, 6 of the 167 comets of r < 20 that pass the excess test at
#: their nuclei were taken for trails without this guard and the stamp's own noise in the S/N
#: (:func:`trail_measures`), and 1 with them, which lies under a satellite streak.
TRAIL_NEGATIVE_SIGMA = 5.0
#: Only the pixels within this many sigmas of the trail test's window count for
#: :data:`TRAIL_NEGATIVE_SIGMA`: beyond, the window weighs a pixel under 1.1 %, and a residual
#: there hardly moves the moments.  Counting the whole stamp, a neighbour's dipole in its corner
#: kept a 10 px trail of r = 17 (at 4.2 window sigmas) from being judged on design frame 600054.
TRAIL_NEGATIVE_WINDOWS = 3.0


def aperture_weights(x: float, y: float, radius: float, half: int) -> np.ndarray:
    """Fraction of each pixel of a ``(2 half + 1)``-px stamp inside a circle.

    Parameters
    ----------
    x, y : float
        Centre of the circle, in the stamp's pixels (0-based; pixel centres at integers).
    radius : float
        Radius in pixels.
    half : int
        Half-size of the stamp.

    Returns
    -------
    numpy.ndarray
        ``(2 half + 1, 2 half + 1)`` weights between 0 and 1.
    """
    n = 2 * half + 1
    sub = (np.arange(n * OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5
    inside = (sub[None, :] - x) ** 2 + (sub[:, None] - y) ** 2 <= radius**2
    return inside.reshape(n, OVERSAMPLE, n, OVERSAMPLE).mean(axis=(1, 3))


def excess_weights(x: float, y: float, r1: float, r2: float, concentration: float, half: int) -> np.ndarray:
    """The linear filter of the excess: ``sum(w * stamp) = F(r2) - F(r1) / concentration``."""
    return aperture_weights(x, y, r2, half) - aperture_weights(x, y, r1, half) / concentration


def centroid(stamp: np.ndarray, fwhm: float, search: float) -> tuple[float, float]:
    """Sub-pixel position of the brightest peak within ``search`` px of a stamp's centre.

    The stamp is smoothed with a Gaussian as wide as the PSF, and its highest pixel within
    ``search`` px of the centre is taken. The position is then refined by the first moment of
    the smoothed stamp's positive part within one FWHM of it, :data:`CENTROID_ROUNDS` times.

    Returns
    -------
    (float, float)
        ``(x, y)`` in the stamp's pixels.
    """
    half = stamp.shape[0] // 2
    smooth = ndimage.gaussian_filter(np.nan_to_num(stamp), fwhm / 2.3548)
    yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    near = np.hypot(xx - half, yy - half) <= search
    py, px = divmod(int(np.argmax(np.where(near, smooth, -np.inf))), stamp.shape[1])
    x, y = float(px), float(py)
    positive = np.maximum(smooth, 0.0)
    for _ in range(CENTROID_ROUNDS):  # the window follows the estimate, which removes its pull
        w = aperture_weights(x, y, max(fwhm, 1.5), half) * positive
        if w.sum() <= 0:
            break
        x, y = float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())
    return x, y


def window_moments(stamp: np.ndarray, x: float, y: float, sigma: float) -> tuple[float, float, float]:
    """Second moments of a stamp about (x, y) under a round Gaussian window.

    With ``w = exp(-rho^2 / 2 sigma^2) * stamp``, the moments are ``sum(w d d^T) / sum(w)`` for
    the offsets ``d`` from (x, y).  A line's moment across it is that of its profile across it,
    whatever the line's length, because the window factors into a Gaussian along and one across.

    Parameters
    ----------
    stamp : numpy.ndarray
        A square stamp, sky subtracted.
    x, y : float
        The centre, in the stamp's pixels.
    sigma : float
        The window's sigma, px.

    Returns
    -------
    (float, float, float)
        The smallest and the largest eigenvalue of the moments (px^2), and ``sum(window * stamp)``;
        NaN, NaN and that sum where it is not positive.
    """
    yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    dx, dy = xx - x, yy - y
    w = np.exp(-0.5 * (dx * dx + dy * dy) / sigma**2) * stamp
    flux = float(w.sum())
    if not flux > 0:
        return float("nan"), float("nan"), flux
    q = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]]) / flux
    low, high = np.linalg.eigvalsh(q)
    return float(low), float(high), flux


def _window_weights(sigma: float, half: int) -> np.ndarray:
    """The Gaussian window of :func:`window_moments` at a stamp's centre, as a linear filter."""
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    return np.exp(-0.5 * (xx * xx + yy * yy) / sigma**2)


def _window_half(fwhm: float) -> int:
    return int(np.ceil(3 * TRAIL_WINDOW_FWHM * fwhm + 2))


def _stamp(image: np.ndarray, x: float, y: float, half: int) -> np.ndarray | None:
    """The ``(2 half + 1)``-px stamp centred on the pixel nearest (x, y); None if it leaves the image."""
    cx, cy = int(round(x)), int(round(y))
    if cx - half < 0 or cy - half < 0 or cx + half >= image.shape[1] or cy + half >= image.shape[0]:
        return None
    return image[cy - half : cy + half + 1, cx - half : cx + half + 1]


def _centred_stamp(image: np.ndarray, x: float, y: float, fwhm: float, half: int) -> tuple[np.ndarray, float, float] | None:
    """A candidate's stamp and the centroid of its peak (:func:`centroid`, within :data:`SEARCH_PX`
    of (x, y)); None if the stamp leaves the image or holds a non-finite pixel."""
    stamp = _stamp(image, x, y, half)
    if stamp is None or not np.isfinite(stamp).all():
        return None
    # the search circle is centred on the stamp's central pixel, not on (x, y)
    cx, cy = centroid(stamp, fwhm, search=SEARCH_PX + np.hypot(x - round(x), y - round(y)))
    return stamp, cx, cy


def _half(r2: float) -> int:
    return int(np.ceil(r2 + 2))


def _star_ratios(stamp: np.ndarray, fwhm: float, r1: float, r2s: Sequence[float]) -> list[float] | None:
    """``F(r1) / F(r2)`` of a star at a stamp's centre for each ``r2``, then the mean of its two
    second moments under the trail test's window (:func:`window_moments`); None if not a round
    star."""
    half = stamp.shape[0] // 2
    yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    rho = np.hypot(xx - half, yy - half)
    s = stamp - float(np.median(stamp[(rho > half - 3) & (rho <= half)]))  # local sky, at the edge
    cx, cy = centroid(s, fwhm, search=1.5)
    f1 = float((aperture_weights(cx, cy, r1, half) * s).sum())
    w2 = aperture_weights(cx, cy, max(r2s), half) * s
    dx, dy = xx - cx, yy - cy
    ixx, iyy, ixy = (w2 * dx * dx).sum(), (w2 * dy * dy).sum(), (w2 * dx * dy).sum()
    if not (ixx + iyy > 0) or np.hypot(ixx - iyy, 2 * ixy) > MAX_STAR_ELLIPTICITY * (ixx + iyy):
        return None
    f2 = [float((aperture_weights(cx, cy, r2, half) * s).sum()) for r2 in r2s]
    if not all(f > 0 and 0 < f1 <= f for f in f2):
        return None
    low, high, _ = window_moments(s, cx, cy, TRAIL_WINDOW_FWHM * fwhm)
    if not low > 0:
        return None
    return [f1 / f for f in f2] + [(low + high) / 2]


def _clipped_median(values: np.ndarray, k: float = 3.0, rounds: int = 3) -> np.ndarray:
    """Median along axis 0 after dropping, ``rounds`` times, rows more than ``k`` robust sigmas off."""
    for _ in range(rounds):
        med = np.median(values, axis=0)
        mad = 1.4826 * np.median(np.abs(values - med), axis=0)
        keep = np.all((np.abs(values - med) <= k * mad) | (mad == 0), axis=1)
        if keep.all() or keep.sum() < MIN_STARS:
            break
        values = values[keep]
    return np.median(values, axis=0)


@dataclass(frozen=True, eq=False)  # arrays: compared by identity
class Sky:
    """The sky of an image as it varies across it, and the noise of a pixel about it (:func:`sky_of`).

    Attributes
    ----------
    centres_y, centres_x : numpy.ndarray
        Pixel coordinates of the boxes' centres along each axis.
    medians : numpy.ndarray
        The median of each box, ``(len(centres_y), len(centres_x))``.
    noise : float
        The noise of one pixel.
    """

    centres_y: np.ndarray
    centres_x: np.ndarray
    medians: np.ndarray
    noise: float

    def image(self, shape: tuple[int, int], step: int = 4) -> np.ndarray:
        """The sky at every pixel of an image of ``shape``, float32, for finding stars over it:
        :meth:`at` at the centres of cells of ``step`` x ``step`` px, constant within each (a
        cell's sky errs by the sky's slope times ``step`` / 2 at most: under a tenth of a
        pixel's noise but in the steepest nebulosity)."""
        ny, nx = shape
        half = (step - 1) / 2
        cells = self.at(np.arange(0, ny, step) + half, np.arange(0, nx, step) + half).astype(np.float32)
        return np.repeat(np.repeat(cells, step, axis=0), step, axis=1)[:ny, :nx]

    @cached_property
    def _spline(self) -> RectBivariateSpline | None:
        ny, nx = self.medians.shape
        if ny < 2 or nx < 2:
            return None
        return RectBivariateSpline(self.centres_y, self.centres_x, self.medians, kx=min(3, ny - 1), ky=min(3, nx - 1))

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The sky on the grid of rows ``ys`` by columns ``xs``: a bicubic spline through the boxes'
        centres (constant beyond the outermost), which keeps the sky's curvature, as a star's
        aperture needs (a bilinear sky is flat within a box, and the aperture would see a
        nebula's curvature as flux)."""
        if self._spline is None:
            return np.full((len(ys), len(xs)), float(np.median(self.medians)))
        ys = np.clip(np.asarray(ys, float), self.centres_y[0], self.centres_y[-1])
        xs = np.clip(np.asarray(xs, float), self.centres_x[0], self.centres_x[-1])
        return self._spline(ys, xs)


def sky_of(image: np.ndarray, box: int = SKY_BOX) -> Sky:
    """The sky of an image, as it varies across it, and the noise of a pixel about it.

    The sky is the median of each ``box`` x ``box`` box (of every second pixel of every second
    row; NaNs ignored; the last box of a row or column may be smaller), at the box's centre.
    The noise is the MAD-sigma of the second differences along rows, ``I[x-1] - 2 I[x] +
    I[x+1]``, over sqrt(6): the sky's gradients, nebulosity and galaxies cancel in them, so this
    is the noise of one pixel even where the image's own MAD is dominated by structure (a
    nebulous frame's can be 30 times larger, and then no star stands 30 such sigmas over the
    frame's median).

    Parameters
    ----------
    image : numpy.ndarray
        A 2-d image; NaNs are ignored.
    box : int
        Side of the boxes, px; even.

    Raises
    ------
    ValueError
        If the image has no finite pixel, or ``box`` is odd.
    """
    if box < 2 or box % 2:
        raise ValueError(f"the sky's boxes must have an even side of 2 px or more, not {box}")
    img = np.asarray(image, dtype=np.float32)
    if not np.isfinite(img).any():
        raise ValueError("the science image has no finite pixel")
    ny, nx = img.shape
    gy, gx = -(-ny // box), -(-nx // box)
    padded = np.full((gy * box, gx * box), np.nan, np.float32)
    padded[:ny, :nx] = img
    # every second pixel of every second row: a box's median of 1024 pixels lies within 0.04
    # sigma of that of its 4096, in a quarter of the time
    sub = box // 2
    blocks = padded[::2, ::2].reshape(gy, sub, gx, sub).swapaxes(1, 2).reshape(gy, gx, sub * sub)
    filled = np.isfinite(blocks).any(axis=2)
    medians = np.full((gy, gx), np.nan)
    medians[filled] = np.nanmedian(blocks[filled], axis=1)
    medians[~filled] = np.median(medians[filled])

    def centres(n: int, g: int) -> np.ndarray:
        start = np.arange(g) * box
        return (start + np.minimum(start + box, n) - 1) / 2.0

    noise = difference_noise(img[:: max(1, ny // 128)])  # 128 rows or more: 400,000 differences in a ccd-quadrant
    return Sky(centres(ny, gy), centres(nx, gx), medians, noise)


def difference_noise(image: np.ndarray) -> float:
    """The noise of one pixel: the MAD-sigma of the second differences along rows,
    ``I[x-1] - 2 I[x] + I[x+1]``, over sqrt(6) (NaNs ignored; 0 if there are none)."""
    d = (image[:, 2:] - 2 * image[:, 1:-1] + image[:, :-2]).ravel()
    d = d[np.isfinite(d)]
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(6) if d.size else 0.0


def star_concentration(
    sci: np.ndarray, fwhm: float, r1: float, r2s: Sequence[float], saturate: float | None = None
) -> tuple[np.ndarray, float, int]:
    """``F(r1) / F(r2)`` of a point source, and its second moment, from the bright, isolated,
    round stars of an image.

    Parameters
    ----------
    sci : numpy.ndarray
        The science image.
    fwhm : float
        PSF FWHM in pixels (the header's SEEING over PIXSCALE).
    r1 : float
        Inner radius, px.
    r2s : sequence of float
        Outer radii, px.
    saturate : float, optional
        Saturation level (header SATURATE); stars peaking above half of it are left out.

    Returns
    -------
    (numpy.ndarray, float, int)
        The concentration for each ``r2``; the mean of a point source's two second moments, in
        px^2, under the window of the trail test (:func:`window_moments`, sigma
        :data:`TRAIL_WINDOW_FWHM` FWHMs); and the number of stars both were measured on.

    Raises
    ------
    ValueError
        If fewer than :data:`MIN_STARS` stars qualify.
    """
    sky = sky_of(sci)
    level = sky.image(sci.shape)
    finite = np.isfinite(sci)
    img = sci if finite.all() else np.where(finite, sci, level)
    above = img - level  # stars over the sky where they are, not over the frame's median
    iso = int(np.ceil(ISOLATION_FWHM * fwhm))
    half = _half(max(r2s)) + iso
    bright = above > STAR_SNR * sky.noise
    if saturate is not None and np.isfinite(saturate):
        bright &= img < 0.5 * saturate
    bright[:half], bright[-half:], bright[:, :half], bright[:, -half:] = False, False, False, False
    ys, xs = np.nonzero(bright)
    value = above[ys, xs]
    strict = np.ones(len(ys), bool)  # higher than its 8 neighbours: a peak, not a plateau
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        strict &= value > above[ys + dy, xs + dx]
    ys, xs = ys[strict], xs[strict]
    around = np.arange(-half, half + 1)  # a stamp's rows and columns about its star
    ratios = []
    for k in np.argsort(above[ys, xs])[::-1]:
        y, x = ys[k], xs[k]
        if above[y - iso : y + iso + 1, x - iso : x + iso + 1].max() > above[y, x]:
            continue  # not the highest of its surroundings: not isolated
        stamp = _stamp(img, x, y, half) - sky.at(y + around, x + around)  # inside: `bright` spares the edges
        r = _star_ratios(stamp, fwhm, r1, r2s)
        if r is not None:
            ratios.append(r)
        if len(ratios) >= MAX_STARS:
            break
    if len(ratios) < MIN_STARS:
        raise ValueError(
            f"only {len(ratios)} bright, isolated, round, unsaturated stars to measure the PSF's "
            f"concentration with (at least {MIN_STARS} are needed)"
        )
    measures = _clipped_median(np.asarray(ratios))
    return measures[:-1], float(measures[-1]), len(ratios)


def blank_spread(image: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Median and robust spread of ``sum(weights * stamp)`` at random places of an image.

    Places with a non-finite pixel are skipped, and so are places of which half or more is empty
    (exactly zero: IPAC's difference image where the reference does not reach, and the
    simulator's), which hold no sky to measure: counted, they would shrink the spread and
    inflate every significance measured against it.  The sky itself is seldom exactly zero: 1
    pixel in 40 of the simulator's difference, which fpack quantises at 16 levels per sigma.
    The spread is 1.4826 times the median absolute deviation, so sources that fall in a few of
    the places barely move it.

    Returns
    -------
    (float, float)
        ``(median, spread)``; the spread is NaN if fewer than 10 places were found.
    """
    half = weights.shape[0] // 2
    ny, nx = image.shape
    values = []
    for x, y in zip(rng.integers(half, nx - half, 3 * n), rng.integers(half, ny - half, 3 * n)):
        s = image[y - half : y + half + 1, x - half : x + half + 1]
        if np.isfinite(s).all() and np.count_nonzero(s) > s.size / 2:
            values.append(float((weights * s).sum()))
        if len(values) >= n:
            break
    if len(values) < 10:
        return 0.0, float("nan")
    v = np.asarray(values)
    med = float(np.median(v))
    return med, 1.4826 * float(np.median(np.abs(v - med)))


def extendedness(
    diff: np.ndarray, x: float, y: float, fwhm: float, r1: float, r2: float, concentration: float,
    null: tuple[float, float],
) -> tuple[float, float]:
    """Significance and fractional size of a candidate's flux beyond the PSF, at one ``r2``.

    Parameters
    ----------
    diff : numpy.ndarray
        The difference image.
    x, y : float
        The candidate's 0-based pixel.
    fwhm : float
        PSF FWHM in pixels.
    r1, r2 : float
        Inner and outer radii, px.
    concentration : float
        A point source's ``F(r1) / F(r2)`` (:func:`star_concentration`).
    null : (float, float)
        Median and spread of the excess filter at blank places (:func:`blank_spread`).

    Returns
    -------
    (float, float)
        ``(E - median) / spread`` and ``E / F(r2)``; NaN where the stamp leaves the image or
        holds a non-finite pixel.
    """
    half = _half(r2)
    centred = _centred_stamp(diff, x, y, fwhm, half)
    if centred is None:
        return float("nan"), float("nan")
    stamp, cx, cy = centred
    excess = float((excess_weights(cx, cy, r1, r2, concentration, half) * stamp).sum())
    total = float((aperture_weights(cx, cy, r2, half) * stamp).sum())
    sig = (excess - null[0]) / null[1] if null[1] > 0 else float("nan")
    return sig, (excess / total if total > 0 else float("nan"))


def trail_measures(
    diff: np.ndarray, x: float, y: float, fwhm: float, star_moment: float, null: tuple[float, float],
) -> tuple[float, float, float]:
    """How narrow a candidate is across its length, how elongated, and how well measured.

    Parameters
    ----------
    diff : numpy.ndarray
        The difference image.
    x, y : float
        The candidate's 0-based pixel.
    fwhm : float
        PSF FWHM in pixels.
    star_moment : float
        A point source's second moment under the same window (:func:`star_concentration`).
    null : (float, float)
        Median and spread of the window's flux at blank places (:func:`blank_spread`).

    Returns
    -------
    (float, float, float)
        The narrowest second moment over ``star_moment`` (about 1 for a point source or a
        trail, more for a coma), the widest over the narrowest (1 for a round source), and the
        S/N of the flux in the window (over the blank places' spread, or over the stamp's own
        noise if that is higher); NaN where the stamp leaves the image or holds a
        non-finite pixel, or the blank places gave no spread; the first two NaN where the flux
        is not positive, or where a pixel of the stamp within :data:`TRAIL_NEGATIVE_WINDOWS`
        window sigmas of the centroid lies :data:`TRAIL_NEGATIVE_SIGMA` noise sigmas below zero
        (the noise of the stamp's own pixels, :func:`difference_noise`: it varies across a frame).
    """
    half = _window_half(fwhm)
    centred = _centred_stamp(diff, x, y, fwhm, half)
    if centred is None or not null[1] > 0:
        return float("nan"), float("nan"), float("nan")
    stamp, cx, cy = centred
    sigma = TRAIL_WINDOW_FWHM * fwhm
    low, high, flux = window_moments(stamp, cx, cy, sigma)
    noise = difference_noise(stamp)  # where the noise is higher than at the blank places, it counts
    snr = (flux - null[0]) / max(null[1], noise * float(np.sqrt((_window_weights(sigma, half) ** 2).sum())))
    yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    near = (xx - cx) ** 2 + (yy - cy) ** 2 <= (TRAIL_NEGATIVE_WINDOWS * sigma) ** 2
    if stamp[near].min() < -TRAIL_NEGATIVE_SIGMA * noise:
        return float("nan"), float("nan"), snr
    return low / star_moment, high / low, snr


def check_vet_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``tails.vet`` section; raise ``ValueError`` naming the bad key.

    Returns
    -------
    dict
        The section, with numbers as floats and ``r2_fwhm`` as a tuple.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"tails.vet must be a mapping, not {cfg!r}")
    out = dict(cfg)
    if not isinstance(out.get("enabled"), bool):
        raise ValueError(f"tails.vet.enabled must be true or false, not {out.get('enabled')!r}")

    def number(key: str, v: Any, positive: bool) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or (positive and v <= 0):
            kind = "a positive number" if positive else "a number"
            raise ValueError(f"tails.vet.{key} must be {kind}, not {v!r}")
        return float(v)

    out["r1_fwhm"] = number("r1_fwhm", out.get("r1_fwhm"), True)
    r2 = out.get("r2_fwhm")
    r2 = [r2] if isinstance(r2, (int, float)) and not isinstance(r2, bool) else r2
    if not isinstance(r2, (list, tuple)) or not r2:
        raise ValueError(f"tails.vet.r2_fwhm must be a number or a list of numbers, not {out.get('r2_fwhm')!r}")
    out["r2_fwhm"] = tuple(number("r2_fwhm", v, True) for v in r2)
    if min(out["r2_fwhm"]) <= out["r1_fwhm"]:
        raise ValueError(
            f"tails.vet.r2_fwhm ({list(out['r2_fwhm'])}) must all be larger than tails.vet.r1_fwhm "
            f"({out['r1_fwhm']})"
        )
    out["min_significance"] = number("min_significance", out.get("min_significance"), False)
    out["min_fraction"] = number("min_fraction", out.get("min_fraction"), False)
    out["trail_max_width"] = number("trail_max_width", out.get("trail_max_width"), False)
    out["trail_min_elongation"] = number("trail_min_elongation", out.get("trail_min_elongation"), True)
    out["trail_min_snr"] = number("trail_min_snr", out.get("trail_min_snr"), False)
    out["compact_odds"] = number("compact_odds", out.get("compact_odds"), True)
    if out["compact_odds"] < 1:
        raise ValueError(f"tails.vet.compact_odds must be 1 (off) or more, not {out['compact_odds']!r}")
    out["compact_min_significance"] = number("compact_min_significance", out.get("compact_min_significance"), False)
    out["compact_max_fraction"] = number("compact_max_fraction", out.get("compact_max_fraction"), True)
    fusion = out.get("fusion")
    if fusion is not None and not (isinstance(fusion, str) and fusion.strip()):
        raise ValueError(f"tails.vet.fusion must be \"auto\", a path to a fusion file or null, not {fusion!r}")
    return out


def compact_score(p: np.ndarray, compact: np.ndarray, odds: float) -> np.ndarray:
    """The detector's score: the model's, with its odds multiplied by ``odds`` where compact.

    Parameters
    ----------
    p : array_like
        The model's scores, in [0, 1].
    compact : array_like of bool
        Which candidates have a compact coma (:func:`measure_candidates`).
    odds : float
        The factor, ``tails.vet.compact_odds`` (1 leaves every score as it is).

    Returns
    -------
    numpy.ndarray
        ``odds p / (1 - p + odds p)`` where ``compact``, else ``p``.
    """
    p = np.asarray(p, float)
    return np.where(np.asarray(compact, bool), odds * p / (1.0 - p + odds * p), p)


def lowest_compact_score(threshold: float, odds: float) -> float:
    """The least model score that :func:`compact_score` lifts over ``threshold``.

    Candidates scored under it cannot be detected, compact or not, and are not measured.
    """
    return float(threshold / (threshold + odds * (1.0 - threshold)))


def unvetted(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates as vetting leaves those it cannot measure: NaN measures, every one kept."""
    return candidates.reset_index(drop=True).assign(
        ext_sigma=np.nan, ext_fraction=np.nan, ext_width=np.nan, ext_elongation=np.nan, ext_snr=np.nan,
        trailed=False, extended=True, compact=False,
    )


def measure_candidates(
    candidates: pd.DataFrame, sci: np.ndarray, diff: np.ndarray, fwhm: float, cfg: Mapping[str, Any],
    saturate: float | None = None, seed: int = 0,
) -> pd.DataFrame:
    """Measure each candidate's extendedness, and say which candidates vetting keeps.

    Parameters
    ----------
    candidates : pandas.DataFrame
        With columns ``x`` and ``y`` (0-based science pixels).
    sci, diff : numpy.ndarray
        The science and difference images, on one grid.
    fwhm : float
        PSF FWHM in pixels.
    cfg : mapping
        The ``tails.vet`` section (:func:`check_vet_config`).
    saturate : float, optional
        The science image's saturation level.
    seed : int
        Seed of the blank places, so that a frame is always vetted the same way.

    Returns
    -------
    pandas.DataFrame
        Every candidate, in order, with ``ext_sigma`` and ``ext_fraction`` added (the
        significance and fraction at the ``r2`` where the significance is highest),
        ``ext_width``, ``ext_elongation`` and ``ext_snr`` (:func:`trail_measures`), ``trailed`` (whether it
        is a trail) and ``extended``: whether vetting keeps it, that is, extended and not a
        trail.  A candidate too near the frame's edge for its excess to be measured (NaN) is
        kept unless it is measured as a trail.  ``compact`` says which of those it keeps have a
        compact coma (the module's point 5; never one with a NaN measure).  If the frame has
        too few stars to measure the PSF by, every candidate is kept, with NaN measures, and a
        warning is logged.
    """
    cfg = check_vet_config(cfg)
    out = unvetted(candidates)
    if not len(out):
        return out
    r1 = cfg["r1_fwhm"] * fwhm
    r2s = [r * fwhm for r in cfg["r2_fwhm"]]
    try:
        conc, star_moment, n_stars = star_concentration(sci, fwhm, r1, r2s, saturate)
    except ValueError as err:
        log.warning("candidates not vetted: %s", err)
        return out
    rng = np.random.default_rng(seed)
    sig = np.full((len(out), len(r2s)), np.nan)
    frac = np.full_like(sig, np.nan)
    for j, (r2, c) in enumerate(zip(r2s, conc)):
        h = _half(r2)
        null = blank_spread(diff, excess_weights(h, h, r1, r2, c, h), BLANK_PLACES, rng)
        for i, (x, y) in enumerate(zip(out["x"], out["y"])):
            sig[i, j], frac[i, j] = extendedness(diff, x, y, fwhm, r1, r2, c, null)
    passes = (sig >= cfg["min_significance"]) & (frac >= cfg["min_fraction"])
    unmeasured = np.isnan(sig).all(axis=1)
    best = np.argmax(np.where(np.isnan(sig), -np.inf, sig), axis=1)
    rows = np.arange(len(out))
    out["ext_sigma"] = np.where(unmeasured, np.nan, sig[rows, best])
    out["ext_fraction"] = np.where(unmeasured, np.nan, frac[rows, best])

    h = _window_half(fwhm)
    null = blank_spread(diff, _window_weights(TRAIL_WINDOW_FWHM * fwhm, h), BLANK_PLACES, rng)
    trail = np.array([trail_measures(diff, x, y, fwhm, star_moment, null) for x, y in zip(out["x"], out["y"])])
    width, elongation, snr = trail.T
    out["ext_width"], out["ext_elongation"], out["ext_snr"] = width, elongation, snr
    out["trailed"] = (
        (snr >= cfg["trail_min_snr"]) & (width <= cfg["trail_max_width"])
        & (elongation >= cfg["trail_min_elongation"])
    )
    extended = passes.any(axis=1)
    out["extended"] = (extended | unmeasured) & ~out["trailed"].to_numpy()
    small = int(np.argmin(r2s))  # a compact coma is measured within the smallest r2, clear of neighbours
    with np.errstate(invalid="ignore"):  # NaN measures are never compact
        out["compact"] = (
            out["extended"].to_numpy()
            & (sig[:, small] >= cfg["compact_min_significance"])
            & (frac[:, small] >= cfg["min_fraction"])
            & (frac[:, small] <= cfg["compact_max_fraction"])
            & (elongation < cfg["trail_min_elongation"])
        )
    log.info(
        "vetting: a point source's F(r1)/F(r2) is %s (%d stars); %d of %d candidates are extended, "
        "%d of those trailed, %d compact",
        np.round(conc, 3).tolist(), n_stars, int(extended.sum()), len(out), int((extended & out["trailed"]).sum()),
        int(out["compact"].sum()),
    )
    return out


def vet_candidates(
    candidates: pd.DataFrame, sci: np.ndarray, diff: np.ndarray, fwhm: float, cfg: Mapping[str, Any],
    saturate: float | None = None, seed: int = 0,
) -> pd.DataFrame:
    """The candidates that vetting keeps, with their measures (:func:`measure_candidates`).

    Returns
    -------
    pandas.DataFrame
        The candidates kept, with ``ext_sigma``, ``ext_fraction``, ``ext_width``,
        ``ext_elongation`` and ``ext_snr`` added.
    """
    out = measure_candidates(candidates, sci, diff, fwhm, cfg, saturate=saturate, seed=seed)
    return out[out["extended"]].drop(columns=["extended", "trailed", "compact"]).reset_index(drop=True)
