"""Alert-sized stamps scored by the tile model: a check of the model on real ZTF data.

The detector reads 256 x 256 tiles of whole frames, and the only real ZTF triplets at hand are
the 63 x 63 cutouts of alert packets (``../shared/data/ztf_real/alerts``).  To show the model a
real triplet, the cutout is set at the centre of a tile whose other pixels are noise drawn at
each channel's own background level and scatter.  Preprocessing normalises each channel by its
L2 norm over the whole tile, so the sky around the stamp must be there, at its real level, for
the stamp's sources to have their real contrast.

What the surroundings lack are the frame's other stars and their residuals, so a score here is
the model's view of the one source, not of a real tile.  Simulated triplets cut and set in the
same way are the control: they tell how much of a difference between real and simulated scores
is the embedding's, and how much is the data's (``scripts/real_alerts.py``).

Two measures of a stamp's central source compare real and simulated PSFs: its curve of growth
(:func:`growth`) and a fitted Moffat profile (:func:`moffat_fit`).
"""

from __future__ import annotations

import numpy as np

from .image import TILE_SIZE
from .preprocess import PAD_VALUE, background, preprocess_tiles

__all__ = ["embed_stamp", "embed_stamps", "score_stamps", "growth", "moffat_fit"]


def embed_stamp(stamp: np.ndarray, rng: np.random.Generator, size: int = TILE_SIZE) -> np.ndarray:
    """Set a (h, w, C) stamp at the centre of a (size, size, C) tile of matching sky noise.

    The stamp's centre pixel ``(h // 2, w // 2)``, where an alert cutout holds its source, lands on
    the tile's pixel ``(size // 2, size // 2)``.  Each channel's surroundings are Gaussian noise at
    that channel's :func:`background`; so are the stamp's own NaN and padded pixels.

    Parameters
    ----------
    stamp : ndarray, shape (h, w, C)
        A triplet such as :func:`tails.alerts.make_triplet` gives (sci, ref, diff); h, w <= size.
    rng : numpy.random.Generator
        The noise's source.
    size : int
        The tile's side.

    Returns
    -------
    ndarray, shape (size, size, C), float32
    """
    stamp = np.asarray(stamp, dtype=np.float32)
    if stamp.ndim != 3 or stamp.shape[0] > size or stamp.shape[1] > size:
        raise ValueError(f"a stamp must have shape (h, w, C) with h, w <= {size}, got {stamp.shape}")
    h, w, c = stamp.shape
    tile = np.empty((size, size, c), dtype=np.float32)
    r0, c0 = size // 2 - h // 2, size // 2 - w // 2
    for k in range(c):
        med, sigma = background(stamp[..., k])
        tile[..., k] = rng.normal(med, sigma, (size, size))
        inner = tile[r0 : r0 + h, c0 : c0 + w, k]
        good = np.isfinite(stamp[..., k]) & (stamp[..., k] != PAD_VALUE)
        inner[good] = stamp[..., k][good]
    return tile


def embed_stamps(stamps, seed: int = 0, size: int = TILE_SIZE) -> np.ndarray:
    """:func:`embed_stamp` for each of ``stamps``, with one generator seeded by ``seed``.

    Returns
    -------
    ndarray, shape (N, size, size, C), float32
    """
    rng = np.random.default_rng(seed)
    stamps = list(stamps)
    if not stamps:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    return np.stack([embed_stamp(s, rng, size) for s in stamps])


def score_stamps(model, stamps, seed: int = 0, batch_size: int | None = None) -> np.ndarray:
    """The model's ``[p, x, y]`` for each stamp, embedded by :func:`embed_stamps` and preprocessed.

    Parameters
    ----------
    model
        A Tails model or a :class:`tails.litert.LiteRTModel` (:func:`tails.litert.load_detector`).
    stamps : sequence of ndarray, each (h, w, 3)
        Triplets sci, ref (on the science grid) and diff.
    seed : int
        The embedding noise's seed: the same seed gives the same scores.

    Returns
    -------
    ndarray, shape (N, 3), float32
        p, and the position in the tile's pixels (x = column, y = row); the stamp's centre is at
        ``(size // 2, size // 2)``.  A tile that preprocessing rejects gets NaN.
    """
    from .efficientdet import predict_tiles

    tiles = embed_stamps(stamps, seed=seed)
    if len(tiles) == 0:
        return np.zeros((0, 3), dtype=np.float32)
    x, valid = preprocess_tiles(tiles, copy=False)
    out = np.full((len(x), 3), np.nan, dtype=np.float32)
    if valid.any():
        pred = predict_tiles(model, x[valid], batch_size=batch_size)
        out[valid] = pred * np.array([1.0, x.shape[2], x.shape[1]], dtype=np.float32)
    return out


def growth(channel: np.ndarray, fwhm: float) -> tuple[float, float, float]:
    """How a stamp's central source spreads its light: two ratios of its curve of growth.

    The source is centroided near the stamp's centre pixel (:func:`tails.vet.centroid`) and
    measured in exact circular apertures (:func:`tails.vet.aperture_weights`) above the sky of
    the stamp's outer ring (beyond ``h // 2 - 8`` px from the centre; its :func:`background`).

    Returns
    -------
    core, wings, snr : float
        ``F(1 FWHM) / F(2.5 FWHM)``, ``F(2.5 FWHM) / F(5 FWHM)``, and ``F(2.5 FWHM)`` over the sky's
        sigma.  For a Moffat PSF, wings is 0.968 at beta = 2.5 and 0.997 at beta = 4.5.
    """
    from .vet import aperture_weights, centroid

    s, level, sigma = _ring_sky(channel)
    half = s.shape[0] // 2
    s = s - level
    x, y = centroid(s, fwhm, search=3)
    f1, f2, f3 = ((aperture_weights(x, y, r * fwhm, half) * s).sum() for r in (1.0, 2.5, 5.0))
    return (f1 / f2 if f2 > 0 else np.nan), (f2 / f3 if f3 > 0 else np.nan), (f2 / sigma if sigma > 0 else np.nan)


def _ring_sky(channel: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A stamp channel as float64 with NaN set to 0, and the :func:`background` of its outer
    ring, beyond ``h // 2 - 8`` px from the centre, where a stamp's central source has faded."""
    s = np.nan_to_num(np.asarray(channel, dtype=np.float64))
    half = s.shape[0] // 2
    yy, xx = np.mgrid[: s.shape[0], : s.shape[1]]
    level, sigma = background(s[np.hypot(xx - half, yy - half) > half - 8])
    return s, level, sigma


def _moffat_pixels(params, xx, yy, sub: int = 5) -> np.ndarray:
    """A circular Moffat integrated over each pixel (``sub`` x ``sub`` samples) plus a sky."""
    flux, x0, y0, alpha, beta, sky = params
    offsets = (np.arange(sub) - (sub - 1) / 2) / sub
    total = np.zeros(xx.shape)
    for dy in offsets:
        for dx in offsets:
            total += (1 + ((xx + dx - x0) ** 2 + (yy + dy - y0) ** 2) / alpha**2) ** (-beta)
    return sky + flux * (beta - 1) / (np.pi * alpha**2) * total / sub**2


def moffat_fit(channel: np.ndarray, radius: int = 15) -> tuple[float, float, float]:
    """Fit a circular Moffat profile to a stamp's central source.

    The sky of the stamp's outer ring (as in :func:`growth`) is subtracted, then flux, centre,
    alpha, beta and a residual sky are fitted to the pixels within ``radius`` of the centre,
    with the model integrated over each pixel and a robust (soft L1) loss so that a neighbour
    or a cosmic ray weighs little.  Beta is bounded to 1.05-15 and the centre to 4 px from the
    brightest of the central 7 x 7 pixels.

    Returns
    -------
    beta, fwhm, snr : float
        Moffat beta, the FWHM in px (before pixelisation), and the fitted flux over the sky's
        sigma times ``sqrt(pi) FWHM``.  All NaN where the sky's sigma is zero or the fit failed:
        it ended at beta's upper bound or at a FWHM under 0.5 px (a cosmic ray, a blank centre).
    """
    from scipy.optimize import least_squares

    s, level, sigma = _ring_sky(channel)
    half = s.shape[0] // 2
    if not sigma > 0:
        return np.nan, np.nan, np.nan
    box = s[half - radius : half + radius + 1, half - radius : half + radius + 1] - level
    yy, xx = np.mgrid[: box.shape[0], : box.shape[1]]
    core = box[radius - 3 : radius + 4, radius - 3 : radius + 4]
    py, px = np.unravel_index(np.argmax(core), core.shape)
    x0, y0 = radius - 3 + px, radius - 3 + py
    start = [max(box.sum(), sigma), x0, y0, 2.0, 3.0, 0.0]
    lower = [0.0, x0 - 4, y0 - 4, 0.3, 1.05, -5 * sigma]
    upper = [np.inf, x0 + 4, y0 + 4, 20.0, 15.0, 5 * sigma]
    fit = least_squares(lambda p: ((_moffat_pixels(p, xx, yy) - box) / sigma).ravel(), start,
                        bounds=(lower, upper), loss="soft_l1", f_scale=3.0)
    flux, _, _, alpha, beta, _ = fit.x
    fwhm = 2 * alpha * np.sqrt(2 ** (1 / beta) - 1)
    if beta > 0.99 * upper[4] or fwhm < 0.5:
        return np.nan, np.nan, np.nan
    return float(beta), float(fwhm), float(flux / (sigma * np.sqrt(np.pi) * fwhm))
