"""A realistic simulator of ZTF ccd-quadrant exposures: science, reference and difference.

One call renders a 3080 x 3072 frame in a few seconds and writes the three products as IRSA serves
them (``sciimg.fits``, ``scimrefdiffimg.fits.fz`` with the image in HDU 1, and ``refimg.fits`` on
its own grid), with the header keywords Tails reads, plus a truth table.  Facts come from
``shared/ZTF.md`` (cited as ZTF.md, "row"):

* images: 3080 rows x 3072 columns, float32, 1.01"/px (ZTF.md, "ccd-quadrant image", "pixel scale");
* noise: Poisson sky and source noise with gain 6 e-/DN and read noise 9 e- (ZTF.md, "gain,
  read noise"); sky from dark (r about 21 mag/arcsec^2) to bright twilight (ZTF.md, "sky
  brightness"), calibrated so that a dark r frame has a sky near 158 DN (ZTF.md, "a real r-band frame");
* zero points MAGZP about 26.3 in DN for the exposure (ZTF.md, "zero points");
* PSF: Moffat with seeing FWHM 1.2"-3.5" and mild ellipticity (ZTF.md, "seeing"), its wings
  heavier in good seeing, as Moffat fits to real ZTF point sources show (:func:`psf_beta`);
* saturation at SATURATE with bleed trails along columns, diffraction spikes (ZTF.md, "saturation");
* the reference: a deeper coadd (typically 15-40 epochs, so noise lower by ~4-6x) with better seeing,
  on its own grid offset by tens of pixels and slightly rotated (ZTF.md, "reference image");
* the difference: science minus the PSF-matched reference on the science grid, with the residuals
  real ones have: dipoles from sub-pixel misregistration, PSF-mismatch rings and flux-scaling errors
  around bright stars and galaxy cores (ZTF.md, "difference image");
* comets: an unresolved nucleus plus a coma with 1/rho surface brightness (A'Hearn 1984), radius
  2"-60", and a dust tail 0"-200" along a position angle, total r 14-20.5 (ZTF.md, "Comets as ZTF
  sees them"); in sci and diff, not in the reference.  The truth position is the nucleus; the
  truth gives each comet its core's expected S/N (``snr``), and what an ideal detector that
  knows its shape gets from it (:func:`comet_snrs`): the S/N of the comet (``snr_matched``) and
  of its coma beyond a point source (``snr_extended``), which no detector beats;
* confusers (ZTF.md, "Confusers that are not comets"): asteroids, trailed as far as their orbits
  move them in the exposure (:func:`asteroid_rates`: main-belt ones by about 0.3 px,
  near-Earth ones, 2.6 % of them, by up to 12 px), variable stars and supernovae,
  cosmic rays, satellite streaks, ghosts / reflection halos of bright stars, bad columns,
  nebulosity, galaxies, and the edge of the reference footprint.

Everything is reproducible from ``(name, seed)``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates, zoom
from scipy.signal import fftconvolve

from .atomic import atomic_path
from .frames import DIFF_SUFFIX, SCI_SUFFIX, parse_frame, ref_url, sci_url

__all__ = [
    "FRAME_SHAPE",
    "SEEING_RANGE_ARCSEC",
    "Conditions",
    "SimulatedFrame",
    "random_conditions",
    "limiting_magnitude",
    "psf_beta",
    "asteroid_rates",
    "circular_orbit_motion",
    "trail_length",
    "matched_filter_snr",
    "comet_snrs",
    "reference_holes",
    "random_frame_name",
    "simulate_frame",
    "write_frame",
    "simulate_command",
]

log = logging.getLogger(__name__)

#: A ccd-quadrant image, (rows, columns) (ZTF.md, "ccd-quadrant image").
FRAME_SHAPE = (3080, 3072)
#: arcsec per pixel (ZTF.md, "pixel scale").
PIXSCALE = 1.01
#: e-/DN and e- (ZTF.md, "gain, read noise": real header GAIN 6.0, READNOI 9).
GAIN, READ_NOISE = 6.0, 9.0
EXPTIME = 30.0
#: Zero points in DN for a 30 s exposure (ZTF.md, "zero points": per image MAGZP, e.g. 26.29 in r).
MAGZP = {"zg": 26.35, "zr": 26.29, "zi": 25.85}
#: Dark-sky surface brightness in mag/arcsec^2, calibrated so that a dark r frame has a sky of
#: about 158 DN (ZTF.md, "a real r-band frame"; "sky brightness" gives g 22.0, r 21.2, i 19.9 for
#: truly dark skies): 26.29 - 2.5 log10(158 / 1.01^2) = 20.8.
SKY_DARK = {"zg": 21.5, "zr": 20.8, "zi": 19.8}
#: Saturation level in DN (ZTF.md, "saturation": e.g. 58647).
SATURATE = 58000.0
#: Comet colours relative to r (solar-like: g - r ~ 0.5, r - i ~ 0.15; an estimate).
COMET_COLOUR = {"zg": 0.5, "zr": 0.0, "zi": -0.15}
FILTER_NAMES = {"zg": "ZTF_g", "zr": "ZTF_r", "zi": "ZTF_i"}
#: Seeing FWHM in arcsec that frames are simulated with, and so the range every bundled model
#: was trained on (issue 3; ZTF.md, "seeing": median 2.0", from about 1.2" to over 3").
SEEING_RANGE_ARCSEC = (1.2, 3.5)
#: How far (in FWHMs) a PSF kernel reaches: a Moffat of beta 2 holds 99 % of its light within 8
#: FWHM, against 96 % within 4 (the light beyond is lost when the kernel is normalised).
PSF_RADIUS_FWHM = 8
#: Area of a quadrant in deg^2 (3072 x 3080 px at 1.01"/px).
QUAD_AREA_DEG2 = FRAME_SHAPE[0] * FRAME_SHAPE[1] * (PIXSCALE / 3600) ** 2
#: Semi-major axes of the main asteroid belt in AU, between the Kirkwood gaps of the 4:1 and
#: 2:1 resonances with Jupiter (Hungarias inside, Hildas and Trojans outside, are left out).
MAIN_BELT_AU = (2.1, 3.3)
#: The least solar elongation at which ZTF observes, degrees (its twilight survey reaches about
#: 40 degrees from the Sun; most of its time is spent beyond 60).  An estimate.
MIN_ELONGATION_DEG = 40.0
#: Fraction of the asteroids in a frame that are near-Earth asteroids: the Minor Planet Center's
#: archive held about 36,000 NEAs among 1.4 million minor planets in 2024, 2.6 %.  Which of them
#: a survey detects (NEAs are over-represented among the bright and the nearby) is ignored.
NEA_FRACTION = 0.026
#: Rates of motion of near-Earth asteroids in degrees per day, drawn log-uniform: from about
#: the fastest main-belt rate to the fast movers that streak (an estimate).
NEA_RATE_DEG_DAY = (0.3, 10.0)


# --------------------------------------------------------------------------- conditions
@dataclass
class Conditions:
    """Observing conditions of one exposure.

    Attributes
    ----------
    seeing : float
        PSF FWHM in arcsec (:data:`SEEING_RANGE_ARCSEC`, ZTF.md "seeing").
    sky_mag : float
        Sky surface brightness, mag/arcsec^2 (dark to twilight).
    star_density : float
        Stars brighter than r = 21 per deg^2 (a few thousand at high latitude, 1e5 in the plane).
    galaxy_density : float
        Galaxies brighter than r = 21 per deg^2.
    extinction : float
        Magnitudes lost to clouds (lowers MAGZP).
    ref_shift : (float, float)
        Offset of the reference grid in pixels (columns, rows).
    ref_rotation : float
        Rotation of the reference grid, degrees.
    ref_coverage : float
        Fraction of the science frame the reference covers along x (footprint edge when < 1).
    ref_seeing : float
        Reference PSF FWHM, arcsec.
    psf_beta : float, optional
        Moffat beta of the PSF, of the science image and the reference alike.  The lower, the
        heavier the wings.  ``psf_beta(seeing)`` when None (:func:`random_conditions` draws its
        scatter).
    ref_depth : float
        Noise of the reference relative to one epoch (1 / sqrt(number of epochs)).
    misregistration : (float, float)
        Residual misalignment (px) of the PSF-matched reference, making dipoles in the difference.
    star_jitter : float, optional
        Per-star astrometric mismatch (px, rms) between the science image and the matched
        reference (centroid errors, distortion residuals): dipoles at every bright enough star.
        Drawn per frame when None.
    flux_scatter : float, optional
        Per-star fractional flux mismatch (rms; colour terms, PSF variation over the quadrant):
        positive or negative cores at bright stars.  Drawn per frame when None.  Both are
        calibrated so that the fraction of difference pixels beyond 5 sigma matches the real
        didymos difference (tests/test_simulate_calibration.py).
    """

    seeing: float = 2.0
    sky_mag: float = 20.8
    star_density: float = 8000.0
    galaxy_density: float = 2000.0
    extinction: float = 0.0
    ref_shift: tuple[float, float] = (25.0, -18.0)
    ref_rotation: float = 0.2
    ref_coverage: float = 1.0
    ref_seeing: float = 1.7
    ref_depth: float = 0.2
    misregistration: tuple[float, float] = (0.05, -0.03)
    psf_beta: float | None = None
    ellipticity: float = 0.05
    ellipticity_angle: float = 0.0
    star_jitter: float | None = None
    flux_scatter: float | None = None


def random_conditions(rng: np.random.Generator, filt: str = "zr",
                      seeing_range: tuple[float, float] | None = None) -> Conditions:
    """Conditions drawn over ZTF's range, with twilight (bright) skies common (the Twilight survey).

    The seeing is log-normal about ZTF's median of 2.0" and held within
    :data:`SEEING_RANGE_ARCSEC`, or uniform within ``seeing_range`` (arcsec) when given: to
    measure a detector in seeing it was not trained in.  Either takes one draw, so a seed keeps
    its sky, field and grids; the reference's seeing and the PSF's wings follow the seeing.
    """
    dark = SKY_DARK[filt]
    twilight = rng.random() < 0.5
    sky = rng.uniform(dark - 3.5, dark - 1.0) if twilight else rng.uniform(dark - 1.0, dark + 0.3)
    if seeing_range is None:
        seeing = float(np.clip(rng.lognormal(np.log(2.0), 0.25), *SEEING_RANGE_ARCSEC))
    else:
        seeing = float(rng.uniform(*seeing_range))
    plane = rng.random() < 0.25
    star_density = 10 ** rng.uniform(4.0, 5.0) if plane else 10 ** rng.uniform(3.2, 4.0)
    coverage = 1.0 if rng.random() < 0.8 else rng.uniform(0.55, 0.95)
    return Conditions(
        seeing=seeing,
        sky_mag=float(sky),
        star_density=float(star_density),
        galaxy_density=float(rng.uniform(500, 3000) * (0.3 if plane else 1.0)),
        extinction=float(rng.exponential(0.1)),
        ref_shift=(float(rng.uniform(-60, 60)), float(rng.uniform(-60, 60))),
        ref_rotation=float(rng.uniform(-0.5, 0.5)),
        ref_coverage=float(coverage),
        ref_seeing=float(np.clip(seeing * rng.uniform(0.7, 1.05), 1.2, 3.0)),
        ref_depth=float(1 / np.sqrt(rng.integers(15, 41))),
        misregistration=(float(rng.normal(0, 0.04)), float(rng.normal(0, 0.04))),
        psf_beta=psf_beta(seeing, rng.uniform(-1, 1)),
        ellipticity=float(rng.uniform(0.0, 0.12)),
        ellipticity_angle=float(rng.uniform(0, 180)),
    )


def psf_beta(seeing: float, scatter: float = 0.0) -> float:
    """The Moffat beta of a ZTF PSF of FWHM ``seeing`` (arcsec): heavier wings in good seeing.

    ``beta = 2.0 + (seeing - 1.6") / 1" + 0.5 scatter``, within 1.5-4.8, with ``scatter`` in
    [-1, 1].  Fitted to circular Moffats on the real known asteroids of S/N > 30 in
    ``shared/data/ztf_real`` (:func:`tails.stamps.moffat_fit`): the 41 at a fitted FWHM of
    0.9-2.1 px (one night, 2023-10-16; median 1.5 px) have a median beta of 1.80 and quartiles
    of 1.41-2.21; the 7 at 3.7-4.0 px (2023-10-10) a median of 4.03 (3.30-4.52).  The same fit
    returns 1.48, 1.86, 2.33 and 3.26 for simulated asteroids of beta 1.5, 2, 2.5 and 3.  A
    straight line between the two groups is an assumption: between 2.1 and 3.7 px the real data
    hold one such asteroid.
    Kolmogorov turbulence alone gives 4.77 (Trujillo et al. 2001, MNRAS 328, 977).
    tests/test_simulate_calibration.py checks the fits.
    """
    return float(np.clip(2.0 + (seeing - 1.6) + 0.5 * scatter, 1.5, 4.8))


def circular_orbit_motion(a: np.ndarray, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent rate (deg/day) and solar elongation (deg) of bodies on circular orbits in the ecliptic.

    ``a`` is the orbit's radius in AU and ``phase`` the body's heliocentric longitude from the
    Earth's, in radians (0 at opposition).  The Earth is on a circular orbit of 1 AU, and speeds
    are ``2 pi / sqrt(a)`` AU per year (Kepler's third law).  The rate is the relative velocity
    across the line of sight over the distance; at opposition it is
    ``2 pi (1 - a**-0.5) / (a - 1)`` radians per year.
    """
    a, phase = np.asarray(a, float), np.asarray(phase, float)
    r = np.stack([a * np.cos(phase) - 1.0, a * np.sin(phase)])  # from the Earth, at (1, 0)
    v = np.stack([-np.sin(phase), np.cos(phase)]) * (2 * np.pi / np.sqrt(a))
    v[1] -= 2 * np.pi  # minus the Earth's velocity
    dist = np.hypot(*r)
    elongation = np.degrees(np.arccos(np.clip(-r[0] / dist, -1, 1)))  # angle Sun-Earth-body
    rate = np.abs(r[0] * v[1] - r[1] * v[0]) / dist**2  # rad per year
    return np.degrees(rate) / 365.25, elongation


def asteroid_rates(rng: np.random.Generator, n: int) -> np.ndarray:
    """Apparent rates of motion, degrees per day, of ``n`` asteroids seen from the Earth.

    Main-belt asteroids (a fraction ``1 - NEA_FRACTION``) are on circular orbits in the
    ecliptic, with semi-major axes uniform over :data:`MAIN_BELT_AU` and at random places on
    them, kept where they are at least :data:`MIN_ELONGATION_DEG` from the Sun
    (:func:`circular_orbit_motion`).  At opposition, an asteroid of a = 2.7 AU moves 0.23 deg/day,
    0.28" in a 30 s exposure: main-belt asteroids are point sources to ZTF.  Near-Earth
    asteroids get rates log-uniform over :data:`NEA_RATE_DEG_DAY`.
    """
    if n == 0:
        return np.zeros(0)
    rate = np.zeros(0)
    while rate.size < n:  # 70 % of places are far enough from the Sun: one pass, nearly always
        a = rng.uniform(*MAIN_BELT_AU, 4 * n + 16)
        w, elongation = circular_orbit_motion(a, rng.uniform(0, 2 * np.pi, a.size))
        rate = np.concatenate([rate, w[elongation >= MIN_ELONGATION_DEG]])
    rate = rate[:n]
    nea = rng.random(n) < NEA_FRACTION
    rate[nea] = np.exp(rng.uniform(*np.log(NEA_RATE_DEG_DAY), int(nea.sum())))
    return rate


def trail_length(rate_deg_day: np.ndarray | float, exptime: float = EXPTIME) -> np.ndarray:
    """How far, in pixels, a source moving at ``rate_deg_day`` moves during an exposure."""
    return np.asarray(rate_deg_day) * 3600.0 / 86400.0 * exptime / PIXSCALE


def random_frame_name(rng: np.random.Generator) -> str:
    """A valid ZTF frame name with a random night (2018-2025), field, filter, CCD and quadrant."""
    jd = rng.uniform(Time("2018-03-20").jd, Time("2025-12-31").jd)
    date = Time(jd, format="jd").datetime.strftime("%Y%m%d")
    fraction = int(rng.integers(100000, 999999))
    field = int(rng.integers(245, 880))
    filt = str(rng.choice(["zg", "zr", "zr", "zi"]))
    return f"ztf_{date}{fraction:06d}_{field:06d}_{filt}_c{int(rng.integers(1, 17)):02d}_o_q{int(rng.integers(1, 5))}"


# --------------------------------------------------------------------------- PSF and rendering
def moffat_kernel(fwhm_pix: float, beta: float, ellipticity: float = 0.0, angle_deg: float = 0.0,
                  size: int | None = None) -> np.ndarray:
    """A normalised, optionally elliptical Moffat PSF sampled on a square grid.

    The grid reaches ``PSF_RADIUS_FWHM`` FWHMs from the centre unless ``size`` is given.
    """
    size = size or int(2 * np.ceil(PSF_RADIUS_FWHM * fwhm_pix) + 1)
    alpha = fwhm_pix / (2 * np.sqrt(2 ** (1 / beta) - 1))
    y, x = np.mgrid[: size, : size] - (size - 1) / 2
    t = np.deg2rad(angle_deg)
    u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    q = 1 - ellipticity
    r2 = (u**2 * q + v**2 / q) / alpha**2
    k = (1 + r2) ** (-beta)
    return k / k.sum()


def splat(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> None:
    """Add point fluxes at sub-pixel positions by bilinear splatting (then convolved with a PSF)."""
    ny, nx = image.shape
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
        np.add.at(image, (yi[ok], xi[ok]), flux[ok] * w[ok])


def _overlap(image_shape: tuple[int, int], stamp_shape: tuple[int, int], row0: int, col0: int):
    """The slices of an image and of a stamp whose upper-left pixel lands at (row0, col0) where
    the two overlap, or None where they do not."""
    ny, nx = image_shape
    h, w = stamp_shape
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + h, ny), min(col0 + w, nx)
    if r1 <= r0 or c1 <= c0:
        return None
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))


def _stamp_add(image: np.ndarray, stamp: np.ndarray, row0: int, col0: int) -> None:
    """Add a stamp whose upper-left pixel lands at (row0, col0), clipped to the image."""
    both = _overlap(image.shape, stamp.shape, row0, col0)
    if both is not None:
        image[both[0]] += stamp[both[1]]


def mag_to_dn(mag: np.ndarray | float, zp: float) -> np.ndarray:
    """Total counts in DN of a source of magnitude ``mag`` for zero point ``zp`` (DN)."""
    return 10 ** (-0.4 * (np.asarray(mag, float) - zp))


def limiting_magnitude(zp: float, sigma_pix: float, fwhm_pix: float, snr: float = 5.0) -> float:
    """The point-source limit of an exposure at ``snr`` sigma (header MAGLIM at 5).

    The semi-empirical estimate of F. Masci (IPAC; "empirical maglimit", 2013,
    http://web.ipac.caltech.edu/staff/fmasci/home/mystats/QuickMagLimit.txt):
    ``zp - 2.5 log10(snr * sigma_pix * sqrt(Np))``, with ``Np = 4 pi sigma_psf^2 = 2.266 FWHM^2``
    the noise pixels of a Gaussian PSF, for background-limited sources.  For the real r frame of
    ZTF.md ("a real r-band frame": robust sigma 6.6 DN, seeing 1.24") it gives 21.83, where that
    frame's header MAGLIM is 21.7.

    Parameters
    ----------
    zp : float
        Zero point, DN (header MAGZP).
    sigma_pix : float
        Background noise per pixel, DN.
    fwhm_pix : float
        PSF FWHM, pixels.
    snr : float
        The signal-to-noise of the limit.

    Returns
    -------
    float
    """
    noise_pixels = math.pi / (2 * math.log(2)) * fwhm_pix**2
    return zp - 2.5 * math.log10(snr * sigma_pix * math.sqrt(noise_pixels))


def sample_powerlaw_mags(rng: np.random.Generator, n: int, m_min: float, m_max: float, slope: float = 0.3) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10^(slope m) (star counts; slope ~0.3 for r < 21)."""
    a, b = 10 ** (slope * m_min), 10 ** (slope * m_max)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def comet_stamp(x: float, y: float, flux: float, coma_pix: float, tail_pix: float, pa_deg: float,
                nucleus_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Pre-PSF surface brightness of a comet: nucleus + 1/rho coma + dust tail.

    The coma's surface brightness goes as 1/rho out to ``coma_pix`` (A'Hearn 1984), fading smoothly
    beyond; the tail starts at the nucleus along position angle ``pa_deg`` (east of north; on the
    sky north is +y and east -x for a standard WCS), fades as 1/d, broadens with distance and may
    curve slightly.  Returns the stamp and the (row0, col0) of its corner; the nucleus is at the
    stamp's fractional position of (x, y).
    """
    half = int(np.ceil(max(coma_pix * 2.5, tail_pix * 1.1) + 6))
    col0, row0 = int(np.floor(x)) - half, int(np.floor(y)) - half
    yy, xx = np.mgrid[: 2 * half + 1, : 2 * half + 1].astype(float)
    dx, dy = xx - (x - col0), yy - (y - row0)
    rho = np.hypot(dx, dy)
    coma = 1.0 / np.maximum(rho, 0.5) * np.exp(-((rho / (coma_pix * 1.3)) ** 3))
    coma_flux = flux * (1 - nucleus_fraction)
    img = np.zeros_like(coma)
    if tail_pix > 0.5:
        pa = np.deg2rad(pa_deg)
        ux, uy = -np.sin(pa), np.cos(pa)  # direction on the image (x = -east, y = north)
        along = dx * ux + dy * uy
        curve = rng.normal(0, 0.15) * along**2 / max(tail_pix, 1)
        across = -dx * uy + dy * ux - curve
        width = 0.4 * coma_pix + 0.12 * np.maximum(along, 0)
        tail = np.where(
            along > 0,
            np.exp(-0.5 * (across / np.maximum(width, 0.7)) ** 2) / np.maximum(along + coma_pix, 1.0)
            * np.exp(-((along / tail_pix) ** 2)),
            0.0,
        )
        tail_share = rng.uniform(0.15, 0.5)
        img += coma_flux * tail_share * tail / tail.sum()
        coma_flux *= 1 - tail_share
    img += coma_flux * coma / coma.sum()
    # the nucleus: an unresolved point at the coma's peak, splatted at its sub-pixel position
    splat(img, np.array([x - col0]), np.array([y - row0]), np.array([flux * nucleus_fraction]))
    return img, row0, col0


def matched_filter_snr(signal: np.ndarray, variance: np.ndarray | float) -> float:
    """The signal-to-noise of a source of known shape, ``sqrt(sum(signal**2 / variance))``.

    This is the S/N of the matched filter, the likelihood-ratio test for that shape in Gaussian
    noise of the given per-pixel variance: no detector of the source in those pixels does better.
    """
    signal = np.asarray(signal, float)
    return float(np.sqrt(np.sum(signal**2 / np.broadcast_to(variance, signal.shape))))


def comet_snrs(stamp: np.ndarray, row0: int, col0: int, x: float, y: float, psf: np.ndarray,
               diff: np.ndarray, sky_variance: float) -> tuple[float, float]:
    """What a comet gives an ideal detector in a difference image: its two matched-filter S/Ns.

    The comet's pre-PSF stamp (:func:`comet_stamp`, corner at ``(row0, col0)``) is convolved with
    ``psf`` and clipped to the image; pixels where ``diff`` is exactly 0 (IPAC leaves the
    difference empty where the reference is missing) carry nothing.  The noise is the sky's and
    the reference's, ``sky_variance`` (DN^2), plus the comet's own Poisson noise.

    Returns
    -------
    snr_matched : float
        The S/N of the comet itself (:func:`matched_filter_snr`): below about 5, no detector
        finds it.
    snr_extended : float
        The S/N of what remains of the comet after the point source at its nucleus ``(x, y)``
        that fits it best is taken away: what tells it from an asteroid, a point source absent
        from the reference.  Below about 5, no detector can say it is not one.
    """
    h = psf.shape[0] // 2
    model = fftconvolve(np.pad(stamp, h), psf, mode="same")
    point = np.zeros_like(model)
    r0, c0 = row0 - h, col0 - h
    splat(point, np.array([x - c0]), np.array([y - r0]), np.array([1.0]))
    point = fftconvolve(point, psf, mode="same")
    both = _overlap(diff.shape, model.shape, r0, c0)
    if both is None:
        return 0.0, 0.0
    on_image, inside = both
    seen = diff[on_image] != 0
    m = np.where(seen, np.clip(model[inside], 0, None), 0.0)
    p = np.where(seen, point[inside], 0.0)
    variance = sky_variance + m / GAIN
    pp = float(np.sum(p**2 / variance))
    amplitude = float(np.sum(m * p / variance)) / pp if pp > 0 else 0.0
    return matched_filter_snr(m, variance), matched_filter_snr(m - amplitude * p, variance)


# --------------------------------------------------------------------------- WCS
def make_wcs(ra: float, dec: float, shape: tuple[int, int], rotation_deg: float = 0.0,
             shift: tuple[float, float] = (0.0, 0.0)) -> WCS:
    """A TAN WCS at 1.01"/px with north up, east left, rotated by ``rotation_deg``.

    ``shift`` moves the reference pixel (columns, rows), i.e. offsets the grid on the sky.
    """
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2 + shift[0], (shape[0] + 1) / 2 + shift[1]]
    s = PIXSCALE / 3600.0
    t = np.deg2rad(rotation_deg)
    w.wcs.cd = np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])
    w.wcs.radesys = "ICRS"
    return w


def _affine_sci_to_ref(w_sci: WCS, w_ref: WCS, shape: tuple[int, int]) -> np.ndarray:
    """The affine map (3 x 3) from science pixels to reference pixels, fitted on a grid."""
    ys, xs = np.mgrid[0 : shape[0] : 11j, 0 : shape[1] : 11j]
    ra, dec = w_sci.wcs_pix2world(xs.ravel(), ys.ravel(), 0)
    xr, yr = w_ref.wcs_world2pix(ra, dec, 0)
    a = np.column_stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    cx, *_ = np.linalg.lstsq(a, xr, rcond=None)
    cy, *_ = np.linalg.lstsq(a, yr, rcond=None)
    return np.array([cx, cy, [0, 0, 1]])


# --------------------------------------------------------------------------- the frame
@dataclass
class SimulatedFrame:
    """A simulated exposure: arrays (float32), headers, WCSs and the truth table."""

    name: str
    sci: np.ndarray
    ref: np.ndarray
    diff: np.ndarray
    header_sci: fits.Header
    header_ref: fits.Header
    wcs_sci: WCS
    wcs_ref: WCS
    truth: pd.DataFrame
    conditions: Conditions


def _truth_row(kind: str, x: float, y: float, **kw: Any) -> dict:
    return {"kind": kind, "x": float(x), "y": float(y), **kw}


def reference_holes(to_ref, ref: np.ndarray, step: int = 4) -> np.ndarray:
    """Science pixels the reference does not reach.

    Parameters
    ----------
    to_ref : callable
        Maps science pixels ``(x, y)`` to the reference's pixels (0-based).
    ref : numpy.ndarray
        The reference image on its own grid, zero where its footprint is cut.
    step : int
        The mask is found on a grid of ``step``-px blocks, each judged at its centre.

    Returns
    -------
    numpy.ndarray of bool
        On the science grid (the reference's shape): True off the reference's grid, or where it
        is zero.
    """
    ny, nx = ref.shape
    ex, ey = np.meshgrid(np.arange(0, nx, step) + (step - 1) / 2, np.arange(0, ny, step) + (step - 1) / 2)
    rx, ry = to_ref(ex, ey)
    ix, iy = np.floor(rx + 0.5).astype(int), np.floor(ry + 0.5).astype(int)
    off = (ix < 0) | (ix >= nx) | (iy < 0) | (iy >= ny)
    holes = off | (ref[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)] == 0)
    return np.kron(holes, np.ones((step, step), bool))[:ny, :nx]


def simulate_frame(
    name: str,
    seed: int = 0,
    comets: Sequence[dict] | None = None,
    n_comets: int = 0,
    conditions: Conditions | None = None,
    comet_mag_range: tuple[float, float] = (14.0, 20.5),
    coma_range_arcsec: tuple[float, float] = (2.0, 60.0),
    tail_range_arcsec: tuple[float, float] = (0.0, 200.0),
    confusers: bool = True,
    shape: tuple[int, int] = FRAME_SHAPE,
    seeing_range: tuple[float, float] | None = None,
) -> SimulatedFrame:
    """Simulate one ZTF ccd-quadrant exposure.

    The frame is built in stages, each a function of its own, in the order their random draws
    are made: the two grids, the static sky, nebulosity, comets, the other transients, the
    PSF-matched reference, the exposures with their noise, the detector's artefacts, the
    reference's footprint, and last what an ideal detector gets from each comet.

    Parameters
    ----------
    name : str
        The frame name (it sets the filter and the observation time).
    seed : int
        Everything random derives from ``(seed, name)``.
    comets : list of dict, optional
        Explicit comets with keys ``x``, ``y`` (0-based science pixels of the nucleus), ``mag``
        (total, in r), ``coma_arcsec``, ``tail_arcsec``, ``pa_deg`` and optionally
        ``nucleus_fraction``.
    n_comets : int
        Random comets to add: positions uniform over the frame (at most one per 256 px tile
        region), magnitudes uniform in ``comet_mag_range``, coma radii log-uniform in
        ``coma_range_arcsec``, tails uniform in ``tail_range_arcsec`` (a third without a tail).
    conditions : Conditions, optional
        Observing conditions; random (:func:`random_conditions`) by default.
    confusers : bool
        Add asteroids, variables, supernovae, cosmic rays, streaks, ghosts, bad columns, nebulosity.
    shape : (int, int)
        Image shape; the ZTF ccd-quadrant by default.
    seeing_range : (float, float), optional
        Draw the random conditions' seeing uniformly in this range, arcsec
        (:func:`random_conditions`); the simulator's own distribution by default.

    Returns
    -------
    SimulatedFrame
    """
    frame = parse_frame(name)
    rng = np.random.default_rng([int(seed), *map(ord, frame.name[-12:])])
    # the reference's per-source mismatch and the sky's gradient, from a generator of their own
    # so that every other draw is unchanged
    rng_res = np.random.default_rng([int(seed), 7, *map(ord, frame.name[-12:])])
    filt = frame.filter
    cond = _complete_conditions(conditions or random_conditions(rng, filt, seeing_range), rng_res)
    zp = MAGZP[filt] - cond.extinction + rng.normal(0, 0.02)
    zp_ref = MAGZP[filt] + rng.normal(0, 0.02)
    seeing_pix = cond.seeing / PIXSCALE
    sky_sci = float(mag_to_dn(cond.sky_mag, zp) * PIXSCALE**2)

    w_sci, w_ref, aff = _grids(rng, shape, cond)

    def to_ref(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return aff[0, 0] * x + aff[0, 1] * y + aff[0, 2], aff[1, 0] * x + aff[1, 1] * y + aff[1, 2]

    # the static sky, in both images; the transients, in the science image only (flux maps
    # before the PSF)
    scene, scene_ref, sources, rows = _static_sky(rng, shape, cond, zp, zp_ref, to_ref)
    if confusers and rng.random() < 0.25:  # nebulosity in a quarter of the frames
        rows += _add_nebulosity(rng, scene, scene_ref, aff, cond, zp, zp_ref)
    transient = np.zeros(shape, np.float64)
    comet_rows, comet_stamps = _add_comets(rng, transient, comets, n_comets, comet_mag_range, coma_range_arcsec,
                                           tail_range_arcsec, filt, zp)
    rows += comet_rows
    if confusers:
        rows += _add_transient_confusers(rng, transient, sources, zp)

    # the PSFs, and the images as IPAC makes them
    psf = moffat_kernel(seeing_pix, cond.psf_beta, cond.ellipticity, cond.ellipticity_angle)
    psf_ref = moffat_kernel(cond.ref_seeing / PIXSCALE, cond.psf_beta, cond.ellipticity * 0.5, cond.ellipticity_angle)
    static_sci = fftconvolve(scene, psf, mode="same")
    moving_sci = fftconvolve(transient, psf, mode="same")
    ref_clean = fftconvolve(scene_ref, psf_ref, mode="same")
    matched = _matched_reference(rng, rng_res, scene, sources, cond, zp)
    del scene, scene_ref, transient
    sci, ref, diff = _expose(rng, rng_res, static_sci, moving_sci, ref_clean, matched, cond, filt, zp, zp_ref, sky_sci)
    del static_sci, moving_sci, ref_clean, matched

    if confusers:
        rows += _add_artefacts(rng, sci, diff, sources, seeing_pix, zp)
    _add_bright_star_effects(rng, sci, diff, ref, sources, to_ref, zp)
    rows += _cut_reference_footprint(rng, ref, diff, cond, to_ref)

    sigma_pix = np.sqrt((sky_sci * GAIN + READ_NOISE**2) * (1 + cond.ref_depth**2)) / GAIN
    for row, stamp in zip(comet_rows, comet_stamps):  # the comets' rows in ``rows`` get their S/N
        row.update(_comet_snr_columns(row, stamp, psf, diff, cond, filt, zp, sigma_pix))
    truth = _truth_table(rows, w_sci)

    maglim = limiting_magnitude(zp, float(np.sqrt(sky_sci * GAIN + READ_NOISE**2) / GAIN), seeing_pix)
    hs = _header(w_sci, frame, filt, zp, cond.seeing, maglim, nframes=None)
    hr = _header(w_ref, frame, filt, zp_ref, cond.ref_seeing, maglim + 1.5, nframes=int(round(1 / cond.ref_depth**2)))
    return SimulatedFrame(
        name=frame.name, sci=sci.astype(np.float32), ref=ref.astype(np.float32), diff=diff.astype(np.float32),
        header_sci=hs, header_ref=hr, wcs_sci=w_sci, wcs_ref=w_ref, truth=truth, conditions=cond,
    )


@dataclass(frozen=True)
class _Sources:
    """The static sky's stars and galaxies in science pixels, as the later stages need them."""

    sx: np.ndarray
    sy: np.ndarray
    smag: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    gmag: np.ndarray
    greff: np.ndarray  # effective radius, px
    gn: np.ndarray  # Sersic index: 1 (a disc) or 4 (a spheroid)


def _complete_conditions(cond: Conditions, rng_res: np.random.Generator) -> Conditions:
    """``cond`` with what it leaves open filled in: the PSF's beta from the seeing, and the
    reference's per-source mismatch (an estimate: centroid errors plus differential chromatic
    refraction at twilight airmasses, 0.1"-0.3"; ranges calibrated on the real didymos
    difference, about 7 residuals > 5 sigma per 254 x 254 px at b = 29 deg;
    tests/test_simulate_calibration.py)."""
    if cond.psf_beta is None:
        cond = replace(cond, psf_beta=psf_beta(cond.seeing))
    if cond.star_jitter is None:
        cond = replace(cond, star_jitter=float(rng_res.uniform(0.08, 0.25)))
    if cond.flux_scatter is None:
        cond = replace(cond, flux_scatter=float(rng_res.uniform(0.03, 0.12)))
    return cond


def _grids(rng: np.random.Generator, shape: tuple[int, int], cond: Conditions) -> tuple[WCS, WCS, np.ndarray]:
    """The science grid somewhere in the sky Palomar sees, the reference's own grid, and the
    affine map from science to reference pixels."""
    ra0 = float(rng.uniform(0, 360))
    dec0 = float(np.rad2deg(np.arcsin(rng.uniform(-0.45, 0.99))))  # Palomar-visible sky
    w_sci = make_wcs(ra0, dec0, shape, rotation_deg=float(rng.normal(0, 0.05)))
    w_ref = make_wcs(ra0, dec0, shape, rotation_deg=cond.ref_rotation, shift=cond.ref_shift)
    return w_sci, w_ref, _affine_sci_to_ref(w_sci, w_ref, shape)


def _static_sky(rng, shape, cond, zp, zp_ref, to_ref) -> tuple[np.ndarray, np.ndarray, _Sources, list[dict]]:
    """Stars and galaxies as flux maps before the PSF, on the science and the reference grids,
    with the truth rows of the bright stars and galaxies."""
    ny, nx = shape
    rows: list[dict] = []
    margin = 40
    area_deg2 = ny * nx * (PIXSCALE / 3600) ** 2  # QUAD_AREA_DEG2 for a full frame
    n_stars = rng.poisson(cond.star_density * area_deg2 * 10 ** (0.3 * (22.5 - 21)))
    n_stars = min(n_stars, 400_000)
    smag = sample_powerlaw_mags(rng, n_stars, 9.0, 22.5)
    sx = rng.uniform(-margin, nx + margin, n_stars)
    sy = rng.uniform(-margin, ny + margin, n_stars)
    scene = np.zeros(shape, np.float64)
    scene_ref = np.zeros(shape, np.float64)
    splat(scene, sx, sy, mag_to_dn(smag, zp))
    rx, ry = to_ref(sx, sy)
    splat(scene_ref, rx, ry, mag_to_dn(smag, zp_ref))
    bright = smag < 12.0
    for x, y, m in zip(sx[bright], sy[bright], smag[bright]):
        rows.append(_truth_row("bright_star", x, y, mag=float(m)))

    n_gal = rng.poisson(cond.galaxy_density * area_deg2 * 10 ** (0.35 * (22.0 - 21)))
    gmag = sample_powerlaw_mags(rng, n_gal, 14.0, 22.0, 0.35)
    gx, gy = rng.uniform(0, nx, n_gal), rng.uniform(0, ny, n_gal)
    greff = np.clip(rng.lognormal(np.log(1.5), 0.5, n_gal) * 10 ** (-0.15 * (gmag - 18)), 0.5, 40)
    gq = rng.uniform(0.3, 1.0, n_gal)
    gpa = rng.uniform(0, np.pi, n_gal)
    gn = rng.choice([1.0, 4.0], n_gal, p=[0.6, 0.4])
    for x, y, m, re_, q, pa, n_s in zip(gx, gy, gmag, greff, gq, gpa, gn):
        half = int(min(6 * re_ + 3, 120))
        for img, (cx, cy), z in ((scene, (x, y), zp), (scene_ref, to_ref(np.array([x]), np.array([y])), zp_ref)):
            cx, cy = float(np.squeeze(cx)), float(np.squeeze(cy))
            c0, r0 = int(cx) - half, int(cy) - half
            yy, xx = np.mgrid[: 2 * half + 1, : 2 * half + 1]
            dx, dy = xx - (cx - c0), yy - (cy - r0)
            u, v = dx * np.cos(pa) + dy * np.sin(pa), -dx * np.sin(pa) + dy * np.cos(pa)
            r = np.sqrt(u**2 + (v / q) ** 2)
            b = 1.678 if n_s == 1 else 7.669
            prof = np.exp(-b * ((r / re_) ** (1 / n_s) - 1))
            _stamp_add(img, mag_to_dn(m, z) * prof / prof.sum(), r0, c0)
    for x, y, m in zip(gx[gmag < 17], gy[gmag < 17], gmag[gmag < 17]):
        rows.append(_truth_row("galaxy", x, y, mag=float(m)))
    return scene, scene_ref, _Sources(sx, sy, smag, gx, gy, gmag, greff, gn), rows


def _add_nebulosity(rng, scene, scene_ref, aff, cond, zp, zp_ref) -> list[dict]:
    """Add a few broad patches of nebulosity, static and so in both images; their truth rows."""
    ny, nx = scene.shape
    rows = []
    yy, xx = np.mgrid[0:ny:8, 0:nx:8].astype(float)
    neb = np.zeros_like(xx)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, s = rng.uniform(0, nx), rng.uniform(0, ny), rng.uniform(80, 600)
        neb += rng.uniform(0.2, 3.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2))
        rows.append(_truth_row("nebula", cx, cy, size_pix=float(s)))
    neb_level = mag_to_dn(cond.sky_mag + rng.uniform(1, 4), zp) * PIXSCALE**2
    scene += zoom(neb, 8, order=1)[:ny, :nx] * neb_level
    # on the reference grid: sample the same field at the reference's pixel positions
    inv = np.linalg.inv(aff)
    ry_, rx_ = np.mgrid[0:ny:8, 0:nx:8].astype(float)
    sxr = inv[0, 0] * rx_ + inv[0, 1] * ry_ + inv[0, 2]
    syr = inv[1, 0] * rx_ + inv[1, 1] * ry_ + inv[1, 2]
    neb_r = map_coordinates(neb, [syr / 8, sxr / 8], order=1, mode="nearest")
    scene_ref += zoom(neb_r, 8, order=1)[:ny, :nx] * neb_level * 10 ** (0.4 * (zp_ref - zp))
    return rows


def _add_comets(rng, transient, comets, n_comets, mag_range, coma_range, tail_range, filt, zp,
                ) -> tuple[list[dict], list[tuple[np.ndarray, int, int]]]:
    """Add the explicit comets, then ``n_comets`` random ones; their truth rows, and each one's
    stamp before the PSF with its corner (``(stamp, row0, col0)``, for :func:`comet_snrs`)."""
    ny, nx = transient.shape
    comet_list = [dict(c) for c in (comets or [])]
    if n_comets:
        cells = rng.permutation([(r, c) for r in range(ny // 256) for c in range(nx // 256)])[:n_comets]
        for r, c in cells:
            coma = float(np.exp(rng.uniform(*np.log(coma_range))))
            comet_list.append({
                "x": float(c * 256 + rng.uniform(0, 256)), "y": float(r * 256 + rng.uniform(0, 256)),
                "mag": float(rng.uniform(*mag_range)), "coma_arcsec": coma,
                "tail_arcsec": 0.0 if rng.random() < 1 / 3 else float(rng.uniform(*tail_range)),
                "pa_deg": float(rng.uniform(0, 360)),
            })
    rows, stamps = [], []
    for c in comet_list:
        mag = float(c["mag"]) + COMET_COLOUR[filt]
        nuc = float(c.get("nucleus_fraction", rng.uniform(0.1, 0.4)))
        flux = float(mag_to_dn(mag, zp))
        stamp, r0, c0 = comet_stamp(c["x"], c["y"], flux, c["coma_arcsec"] / PIXSCALE,
                                    c.get("tail_arcsec", 0.0) / PIXSCALE, c.get("pa_deg", 0.0), nuc, rng)
        _stamp_add(transient, stamp, r0, c0)
        stamps.append((stamp, r0, c0))
        rows.append(_truth_row("comet", c["x"], c["y"], mag=float(c["mag"]), coma_arcsec=float(c["coma_arcsec"]),
                               tail_arcsec=float(c.get("tail_arcsec", 0.0)), pa_deg=float(c.get("pa_deg", 0.0)),
                               nucleus_fraction=nuc))
    return rows, stamps


def _add_transient_confusers(rng, transient, sources: _Sources, zp) -> list[dict]:
    """Add asteroids (moving point sources, trailed by their motion over the exposure), variable
    stars (brighter or fainter now) and supernovae near galaxies; their truth rows."""
    ny, nx = transient.shape
    rows = []
    n_ast = rng.poisson(8)
    ax, ay = rng.uniform(0, nx, n_ast), rng.uniform(0, ny, n_ast)
    amag = rng.uniform(15, 21, n_ast)
    trails = trail_length(asteroid_rates(rng, n_ast))
    for x, y, m, trail in zip(ax, ay, amag, trails):
        ang = rng.uniform(0, np.pi)
        k = np.linspace(-0.5, 0.5, 7) * trail
        splat(transient, x + k * np.cos(ang), y + k * np.sin(ang), np.full(7, mag_to_dn(m, zp) / 7))
        rows.append(_truth_row("asteroid", x, y, mag=float(m), trail_pix=float(trail)))
    sx, sy, smag = sources.sx, sources.sy, sources.smag
    n_stars = len(smag)
    nv = min(rng.poisson(10), n_stars)
    vi = rng.choice(n_stars, nv, replace=False) if nv else np.array([], int)
    vi = vi[(smag[vi] > 13) & (smag[vi] < 20)] if nv else vi
    dv = rng.normal(0, 0.4, len(vi))
    splat(transient, sx[vi], sy[vi], mag_to_dn(smag[vi], zp) * (10 ** (-0.4 * dv) - 1))
    for i, d in zip(vi, dv):
        rows.append(_truth_row("variable", sx[i], sy[i], mag=float(smag[i]), dmag=float(d)))
    n_gal = len(sources.gx)
    for _ in range(rng.poisson(0.5)):
        if n_gal == 0:
            break
        g = int(rng.integers(n_gal))
        x, y = sources.gx[g] + rng.normal(0, sources.greff[g]), sources.gy[g] + rng.normal(0, sources.greff[g])
        m = rng.uniform(17, 20.5)
        splat(transient, np.array([x]), np.array([y]), np.array([mag_to_dn(m, zp)]))
        rows.append(_truth_row("supernova", x, y, mag=float(m)))
    return rows


def _matched_reference(rng, rng_res, scene, sources: _Sources, cond: Conditions, zp) -> np.ndarray:
    """The PSF-matched reference on the science grid, as ZOGY models it: slightly misregistered,
    each source a little off in place and flux, under a slightly wrong PSF, so that the
    difference holds dipoles, rings and residuals at bright sources."""
    shape = scene.shape
    seeing_pix = cond.seeing / PIXSCALE
    sx, sy, smag = sources.sx, sources.sy, sources.smag
    dxm, dym = cond.misregistration
    jx, jy = rng_res.normal(0, cond.star_jitter, (2, len(smag)))
    ferr = np.clip(rng_res.normal(0, cond.flux_scatter, len(smag)), -0.3, 0.3)
    matched_scene = np.zeros(shape, np.float64)
    splat(matched_scene, sx + dxm + jx, sy + dym + jy, mag_to_dn(smag, zp) * (1 + rng.normal(0, 0.01) + ferr))
    matched_scene += scene - _splat_copy(shape, sx, sy, mag_to_dn(smag, zp))  # galaxies, nebulae
    # galaxy cores subtract badly too (their cusps are where PSF mismatch bites; ZTF.md,
    # "confusers": bad subtractions around galaxy cores): a misplaced, mis-scaled core holding
    # a third of the flux of an n = 4 galaxy, a tenth of a disc's (an estimate)
    gx, gy = sources.gx, sources.gy
    if len(gx):
        core = np.where(sources.gn > 2, 0.3, 0.1) * mag_to_dn(sources.gmag, zp)
        gerr = np.clip(rng_res.normal(0, cond.flux_scatter, len(gx)), -0.3, 0.3)
        gjx, gjy = rng_res.normal(0, cond.star_jitter, (2, len(gx)))
        splat(matched_scene, gx + dxm + gjx, gy + dym + gjy, core * (1 + gerr))
        splat(matched_scene, gx, gy, -core)
    psf_match = moffat_kernel(seeing_pix * rng.uniform(0.985, 1.015), cond.psf_beta * rng.uniform(0.95, 1.05),
                              cond.ellipticity, cond.ellipticity_angle + rng.normal(0, 5))
    return fftconvolve(matched_scene, psf_match, mode="same")


def _expose(rng, rng_res, static_sci, moving_sci, ref_clean, matched, cond, filt, zp, zp_ref, sky_sci,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The science image, the reference and the difference, with their skies and noise."""
    shape = static_sci.shape
    ny, nx = shape
    sky_ref = float(mag_to_dn(SKY_DARK[filt], zp_ref) * PIXSCALE**2)
    # the sky is not flat: a planar gradient across the quadrant, a few per cent in twilight and
    # near the Moon, about 1 % on dark nights (an estimate); the difference has its background
    # subtracted, so the gradient stays in the science image only
    grad = (0.08 if cond.sky_mag < SKY_DARK[filt] - 1.0 else 0.015) * rng_res.uniform(0.2, 1.0)
    theta = rng_res.uniform(0, 2 * np.pi)
    yy_, xx_ = np.ogrid[:ny, :nx]
    sky_map = sky_sci * (1 + grad * (np.cos(theta) * (xx_ / nx - 0.5) + np.sin(theta) * (yy_ / ny - 0.5)))
    sky_map = sky_map.astype(np.float32)
    sci_e = np.clip((static_sci + moving_sci + sky_map) * GAIN, 0, None)
    noise_sci = rng.standard_normal(shape, dtype=np.float32) * np.sqrt(sci_e + READ_NOISE**2).astype(np.float32) / GAIN
    del sci_e
    sci = static_sci + moving_sci + sky_map + noise_sci
    del sky_map

    ref_e = np.clip((ref_clean + sky_ref) * GAIN, 0, None)
    ref = ref_clean + sky_ref + rng.standard_normal(shape, dtype=np.float32) * (
        np.sqrt(ref_e + READ_NOISE**2) / GAIN * cond.ref_depth).astype(np.float32)
    del ref_e
    # the reference's noise, as it enters the difference on the science grid
    ref_noise_sci = rng.standard_normal(shape, dtype=np.float32) * (
        np.sqrt(np.clip((static_sci + sky_sci) * GAIN, 0, None) + READ_NOISE**2) / GAIN * cond.ref_depth).astype(np.float32)
    diff = (static_sci - matched) + moving_sci + noise_sci - ref_noise_sci
    return sci, ref, diff


def _add_artefacts(rng, sci, diff, sources: _Sources, seeing_pix, zp) -> list[dict]:
    """Add satellite streaks, cosmic rays, bad columns and ghosts of the brightest stars to the
    science and difference images; their truth rows (the first 50 cosmic rays')."""
    ny, nx = sci.shape
    rows = []
    for _ in range(rng.poisson(0.3)):  # satellite / aircraft streak, in sci and diff
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        ang = rng.uniform(0, np.pi)
        level = mag_to_dn(rng.uniform(8, 12), zp) / 3000.0
        _streak(sci, diff, x0, y0, ang, level, seeing_pix)
        rows.append(_truth_row("streak", x0, y0, angle_deg=float(np.rad2deg(ang))))
    n_cr = rng.poisson(120)
    cx, cy = rng.integers(1, nx - 1, n_cr), rng.integers(1, ny - 1, n_cr)
    camp = rng.lognormal(np.log(300), 1.0, n_cr)
    for x, y, a in zip(cx, cy, camp):
        length = int(rng.integers(1, 6))
        ang = rng.uniform(0, np.pi)
        for k in range(length):
            xi = int(np.clip(x + k * np.cos(ang), 0, nx - 1))
            yi = int(np.clip(y + k * np.sin(ang), 0, ny - 1))
            sci[yi, xi] += a
            diff[yi, xi] += a
    rows.extend(_truth_row("cosmic_ray", x, y, amplitude=float(a)) for x, y, a in zip(cx[:50], cy[:50], camp[:50]))
    for _ in range(rng.poisson(0.5)):
        col = int(rng.integers(0, nx))
        r0 = int(rng.integers(0, ny // 2))
        off = rng.normal(0, 40)
        sci[r0:, col] += off
        diff[r0:, col] += off
        rows.append(_truth_row("bad_column", col, r0, offset=float(off)))
    # ghosts / reflection halos of the brightest stars: a faint offset ring in sci, weaker in ref
    brightest = sources.smag < 10.5
    for x, y, m in zip(sources.sx[brightest], sources.sy[brightest], sources.smag[brightest]):
        if rng.random() < 0.5:
            gx_, gy_ = x + rng.normal(0, 40), y + rng.normal(0, 40)
            radius = rng.uniform(20, 70)
            level = mag_to_dn(m, zp) * 1e-5 * rng.uniform(0.5, 2)
            _ring(sci, diff, gx_, gy_, radius, level, rng.uniform(0.2, 0.9))
            rows.append(_truth_row("ghost", gx_, gy_, radius_pix=float(radius)))
    return rows


def _add_bright_star_effects(rng, sci, diff, ref, sources: _Sources, to_ref, zp) -> None:
    """Diffraction spikes of the bright stars, then saturation with bleed trails."""
    bright = sources.smag < 12.5
    for x, y, m in zip(sources.sx[bright], sources.sy[bright], sources.smag[bright]):
        _spikes(sci, diff, ref, to_ref(np.array([x]), np.array([y])), x, y, mag_to_dn(m, zp), rng)
    _saturate(sci, diff, SATURATE, rng)
    _saturate(ref, None, SATURATE * 0.95, rng)


def _cut_reference_footprint(rng, ref, diff, cond: Conditions, to_ref) -> list[dict]:
    """Cut the reference's footprint short where ``cond.ref_coverage`` says, and empty the
    difference wherever the reference does not reach; the footprint edge's truth row."""
    ny, nx = ref.shape
    rows = []
    if cond.ref_coverage < 1.0:
        cut = int(nx * cond.ref_coverage)
        if rng.random() < 0.5:
            ref[:, cut:] = 0.0
            edge = cut
        else:
            ref[:, : nx - cut] = 0.0
            edge = nx - cut
        # the edge's column on the reference's grid, tens of px off the science grid
        rows.append(_truth_row("ref_edge", edge, ny / 2, coverage=float(cond.ref_coverage)))
    # where the reference is missing, IPAC's difference is empty: beyond its footprint's edge, and
    # in the strips along the frame's edges that its offset, rotated grid leaves uncovered
    diff[reference_holes(to_ref, ref)] = 0.0
    return rows


def _comet_snr_columns(row: dict, stamp: tuple[np.ndarray, int, int], psf, diff, cond: Conditions, filt, zp,
                       sigma_pix: float) -> dict[str, float]:
    """A comet's truth columns of signal-to-noise.

    ``snr``: the expected S/N of its core in the difference image, the nucleus and the coma
    within one FWHM (a 1/rho coma holds a fraction r/R of its flux within r), about half of
    which falls inside a FWHM-radius aperture, against the sky + reference noise.
    ``snr_matched`` and ``snr_extended``: what an ideal detector gets from it in the difference
    as made (none where the reference is missing), :func:`comet_snrs`.
    """
    seeing_pix = cond.seeing / PIXSCALE
    mag = row["mag"] + COMET_COLOUR[filt]
    core = row["nucleus_fraction"] + (1 - row["nucleus_fraction"]) * min(1.0, cond.seeing / row["coma_arcsec"])
    signal = 0.5 * core * float(mag_to_dn(mag, zp))
    snr_matched, snr_extended = comet_snrs(*stamp, row["x"], row["y"], psf, diff, sigma_pix**2)
    return {"snr": float(signal / (sigma_pix * np.sqrt(np.pi) * seeing_pix)), "snr_matched": snr_matched,
            "snr_extended": snr_extended}


def _truth_table(rows: list[dict], w_sci: WCS) -> pd.DataFrame:
    """The truth rows as a table, with RA/Dec, and the columns every table has even when empty."""
    truth = pd.DataFrame(rows)
    if len(truth):
        ra, dec = w_sci.wcs_pix2world(truth["x"].to_numpy(float), truth["y"].to_numpy(float), 0)
        truth["ra"], truth["dec"] = ra, dec
    for col in ("mag", "coma_arcsec", "tail_arcsec", "pa_deg", "snr", "snr_matched", "snr_extended"):
        if col not in truth:
            truth[col] = np.nan
    if "kind" not in truth:
        truth["kind"] = pd.Series(dtype=str)
    return truth


def _splat_copy(shape, x, y, f) -> np.ndarray:
    out = np.zeros(shape, np.float64)
    splat(out, x, y, f)
    return out


def _streak(sci, diff, x0, y0, ang, level, width) -> None:
    ny, nx = sci.shape
    yy, xx = np.mgrid[0:ny:1, 0:nx:1]
    # distance of each pixel from the line, computed on a band only (cheap enough at this size)
    d = np.abs(-(xx - x0) * np.sin(ang) + (yy - y0) * np.cos(ang))
    band = d < 4 * width
    prof = level * np.exp(-0.5 * (d[band] / max(width / 2.355, 0.5)) ** 2)
    sci[band] += prof
    diff[band] += prof


def _ring(sci, diff, x, y, radius, level, ref_fraction) -> None:
    half = int(radius * 1.5)
    c0, r0 = int(x) - half, int(y) - half
    yy, xx = np.mgrid[: 2 * half + 1, : 2 * half + 1]
    r = np.hypot(xx - (x - c0), yy - (y - r0))
    ring = level * np.exp(-0.5 * ((r - radius) / (radius * 0.25)) ** 2) + 0.3 * level * (r < radius)
    _stamp_add(sci, ring, r0, c0)
    _stamp_add(diff, ring * (1 - ref_fraction), r0, c0)


def _spikes(sci, diff, ref, ref_xy, x, y, flux, rng) -> None:
    """Diffraction spikes along rows and columns; in sci and ref alike, residuals in diff."""
    length = int(min(8 * np.sqrt(flux / 1e4), 250)) + 4
    k = np.arange(-length, length + 1)
    prof = flux * 2e-4 * np.exp(-np.abs(k) / (length / 3.0))
    for img, (cx, cy), scale in ((sci, (x, y), 1.0), (ref, (float(np.squeeze(ref_xy[0])), float(np.squeeze(ref_xy[1]))), 1.0),
                                 (diff, (x, y), rng.normal(0, 0.05))):
        ny, nx = img.shape
        xi, yi = int(round(cx)), int(round(cy))
        for dx, dy in ((1, 0), (0, 1)):
            xs, ys = xi + k * dx, yi + k * dy
            ok = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
            img[ys[ok], xs[ok]] += prof[ok] * scale


def _saturate(img, diff, level, rng) -> None:
    """Clip at the saturation level and bleed the excess charge along columns."""
    over = img > level
    if not over.any():
        return
    cols = np.flatnonzero(over.any(axis=0))
    for c in cols:
        rows = np.flatnonzero(over[:, c])
        excess = float((img[rows, c] - level).sum())
        n = int(min(excess / level, 400))
        lo, hi = max(rows.min() - n // 2, 0), min(rows.max() + n // 2 + 1, img.shape[0])
        img[lo:hi, c] = level
        if diff is not None:  # saturated cores subtract badly
            diff[lo:hi, c] = rng.normal(0, 0.05 * level, hi - lo)


def _header(w: WCS, frame, filt: str, zp: float, seeing: float, maglim: float, nframes: int | None) -> fits.Header:
    h = w.to_header()
    obsjd = Time(f"{frame.date[:4]}-{frame.date[4:6]}-{frame.date[6:8]}T00:00:00", scale="utc").jd + int(frame.fraction) / 1e6
    h["OBSJD"] = (obsjd, "mid-exposure Julian date (UTC)")
    h["EXPTIME"] = (EXPTIME, "s")
    h["FILTER"] = FILTER_NAMES[filt]
    h["FIELDID"] = frame.field
    h["CCDID"] = frame.ccd
    h["QID"] = frame.quad
    h["PIXSCALE"] = (PIXSCALE, "arcsec/pixel")
    h["MAGZP"] = (round(zp, 4), "zero point (DN) for the exposure")
    h["MAGZPRMS"] = 0.03
    h["SEEING"] = (round(seeing, 3), "FWHM, arcsec")
    h["MAGLIM"] = (round(float(maglim), 3), "5 sigma point-source limit")
    h["GAIN"] = (GAIN, "e-/DN")
    h["READNOI"] = (READ_NOISE, "e-")
    h["SATURATE"] = (SATURATE, "DN")
    h["INFOBITS"] = 0
    if nframes:
        h["NFRAMES"] = (nframes, "epochs in the coadd")
    h["SIMULATE"] = (True, "tails.simulate")
    return h


# --------------------------------------------------------------------------- files
def _atomic_fits(hdul: fits.HDUList, path: Path) -> None:
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True)


def write_frame(sim: SimulatedFrame, root: str | os.PathLike) -> dict[str, Path]:
    """Write a simulated frame into ``root`` in IRSA's layout, plus its truth table.

    Returns
    -------
    dict
        Paths of ``sci``, ``diff``, ``ref`` and ``truth`` (CSV beside the science image).
    """
    root = Path(root)
    base = root.as_posix()
    paths = {
        "sci": Path(sci_url(sim.name, base, SCI_SUFFIX)),
        "diff": Path(sci_url(sim.name, base, DIFF_SUFFIX)),
        "ref": Path(ref_url(sim.name, base)),
    }
    _atomic_fits(fits.HDUList([fits.PrimaryHDU(sim.sci, header=sim.header_sci)]), paths["sci"])
    _atomic_fits(fits.HDUList([fits.PrimaryHDU(sim.ref, header=sim.header_ref)]), paths["ref"])
    diff_hdu = fits.CompImageHDU(sim.diff, header=sim.header_sci, compression_type="RICE_1", quantize_level=16)
    _atomic_fits(fits.HDUList([fits.PrimaryHDU(), diff_hdu]), paths["diff"])
    paths["truth"] = paths["sci"].with_name(f"{sim.name}_truth.csv")
    with atomic_path(paths["truth"]) as tmp:
        sim.truth.to_csv(tmp, index=False)
    return paths


def simulate_command(
    n: int | str | Sequence[str] = 1,
    out_dir: str = "sim",
    seed: int = 0,
    n_comets: int = 1,
    names: str | Sequence[str] | None = None,
    comet_mag_range: Sequence[float] = (14.0, 20.5),
    confusers: bool = True,
) -> str:
    """Simulate ZTF frames into an IRSA-layout folder (``tails simulate``).

    Examples: ``tails simulate 3 --out_dir=sim`` (three random frames) or
    ``tails simulate ztf_20191014495961_000570_zr_c05_o_q3 --out_dir=sim``.

    Parameters
    ----------
    n : int, or str / list of str
        Number of random frames, or frame name(s) (comma-separated or a list) to simulate.
    out_dir : str
        The IRSA-layout folder to write (``sci/...`` and ``ref/...``); use it as ``irsa.url``
        with a ``file://`` URL.  Each frame's truth table is written beside its science image.
    seed : int
        Seed of the first frame; frame i uses ``seed + i``.
    n_comets : int
        Random comets per frame.
    names : str or list of str, optional
        Frame names to simulate (comma-separated or a list), as an alternative to ``n``.
    comet_mag_range : (float, float)
        Range of the random comets' total r magnitudes (ZTF.md: 14 to 20.5).
    confusers : bool
        Add asteroids, variables, cosmic rays, streaks, ghosts, bad columns, nebulosity.

    Returns
    -------
    str
        One line per frame: its name, its number of comets and where it was written.
    """
    from tqdm.auto import tqdm

    def integer(value, flag: str, least: int) -> int:
        text = str(value).strip()
        if isinstance(value, bool) or not text.lstrip("-").isdigit() or int(text) < least:
            raise ValueError(f"--{flag} must be an integer of at least {least}, got {value!r}")
        return int(text)

    seed, n_comets = integer(seed, "seed", 0), integer(n_comets, "n_comets", 0)
    try:
        lo, hi = (float(v) for v in comet_mag_range)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not lo < hi:
        raise ValueError(f"--comet_mag_range must be two magnitudes, faintest last, got {comet_mag_range!r}")
    if names is None and not (isinstance(n, (int, float)) or (isinstance(n, str) and n.strip().lstrip("-").isdigit())):
        names = n
    if names is None:
        count = integer(n, "n", 1)
        frame_names = [random_frame_name(np.random.default_rng(seed + i)) for i in range(count)]
    else:
        frame_names = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
        if not frame_names:
            raise ValueError("no frame to simulate: give a number of frames or ZTF frame names")
        for name in frame_names:
            parse_frame(name)  # a bad name fails before anything is written
    lines = []
    for i, name in enumerate(tqdm(frame_names, desc="simulate", unit="frame")):
        sim = simulate_frame(name, seed=seed + i, n_comets=n_comets, comet_mag_range=(lo, hi),
                             confusers=bool(confusers))
        paths = write_frame(sim, out_dir)
        n_c = int((sim.truth["kind"] == "comet").sum()) if len(sim.truth) else 0
        lines.append(f"{name}: {n_c} comet(s) -> {paths['sci'].parent}")
    return "\n".join(lines)
