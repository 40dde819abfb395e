"""Preprocessing of sci/ref/diff tiles, exactly as the original Tails.

1. NaN -> the channel's median (over its finite pixels);
2. difference values below -100 -> 0 (large negative values are bad subtractions);
3. each channel divided by its L2 norm.

A tile that is all NaN in some channel, or whose norm is zero, cannot be normalised: it is
reported as invalid and skipped by the detector, never a crash.

:func:`background` gives an image's sky level and scatter, robustly; the difference image's
pedestal (:class:`tails.image.Troika`) and the sky of alert stamps (:mod:`tails.stamps`) use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BAD_DIFF_NEG", "PAD_VALUE", "background", "preprocess_stack", "preprocess_tiles"]

#: Difference-image values below this (DN) are set to 0 (the original's ``bad_diff_neg``).
BAD_DIFF_NEG = -100.0
#: Cutouts truncated at a CCD edge are padded with this value by :func:`tails.alerts.make_triplet`;
#: :func:`background` leaves such pixels out.
PAD_VALUE = 1e-9


def preprocess_tiles(
    tiles: np.ndarray, fix_diff_neg: bool = True, bad_diff_neg: float = BAD_DIFF_NEG, *, copy: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess a batch of tiles.

    Parameters
    ----------
    tiles : ndarray, shape (N, H, W, C)
        Raw tiles, channels sci, ref and (for C == 3) diff.
    fix_diff_neg : bool
        Set difference values below ``bad_diff_neg`` to 0.
    bad_diff_neg : float
        Threshold for bad negative difference values.
    copy : bool
        Leave ``tiles`` as they are (the default).  False preprocesses a C-contiguous float32
        ``tiles`` in place, which spares a copy of them (133 MB for a ccd-quadrant's 169 tiles).

    Returns
    -------
    out : ndarray, shape (N, H, W, C), float32
        Preprocessed tiles; invalid tiles are all zeros.
    valid : ndarray of bool, shape (N,)
        False for tiles that had an all-NaN channel or a zero norm.
    """
    x = np.array(tiles, dtype=np.float32, copy=True) if copy else np.ascontiguousarray(tiles, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"tiles must have shape (N, H, W, C), got {x.shape}")
    n, _, _, c = x.shape
    flat = x.reshape(n, -1, c)  # a view: the steps below work in place

    # per tile and channel; NaN exactly where the channel has a NaN
    sum_of_squares = np.einsum("npc,npc->nc", flat, flat)
    # NaN -> the median of the channel's finite pixels; the sums find the channels with NaNs, so
    # the expensive steps run only on those (most tiles have none)
    all_nan = np.zeros((n, c), dtype=bool)
    for i, j in zip(*np.nonzero(np.isnan(sum_of_squares))):
        channel = flat[i, :, j]
        bad = np.isnan(channel)
        all_nan[i, j] = bad.all()
        channel[bad] = 0.0 if all_nan[i, j] else np.median(channel[~bad])
        sum_of_squares[i, j] = np.einsum("p,p->", channel, channel)
    if fix_diff_neg and c == 3:  # then the sums of the difference channels that changed
        d = flat[..., 2]
        neg = d < bad_diff_neg
        d[neg] = 0.0
        hit = np.flatnonzero(neg.any(axis=1))
        sum_of_squares[hit, 2] = np.einsum("np,np->n", d[hit], d[hit])
    norm = np.sqrt(sum_of_squares)
    valid = ~(all_nan.any(axis=1) | (norm == 0).any(axis=1) | ~np.isfinite(norm).all(axis=1))
    flat /= np.where(norm > 0, norm, 1.0)[:, None, :]
    flat[~valid] = 0.0
    return flat.reshape(x.shape), valid


def preprocess_stack(
    stack: np.ndarray, fix_diff_neg: bool = True, bad_diff_neg: float = BAD_DIFF_NEG
) -> np.ndarray | None:
    """Preprocess one (H, W, C) tile in place, like the original's ``preprocess_stack``.

    Returns
    -------
    ndarray or None
        The preprocessed stack (the same array when it is float32), or None when the tile has
        an all-NaN channel or a zero norm.
    """
    out, valid = preprocess_tiles(stack[None], fix_diff_neg=fix_diff_neg, bad_diff_neg=bad_diff_neg)
    if not valid[0]:
        return None
    if stack.dtype.kind == "f":
        stack[...] = out[0]
        return stack
    return out[0]


def background(channel: np.ndarray, clip: float = 3.0, iterations: int = 5) -> tuple[float, float]:
    """The sky level and scatter of an image or a stamp's channel: sigma-clipped median and MAD-sigma.

    Parameters
    ----------
    channel : ndarray
        Pixel values; NaNs and the padding of truncated cutouts (``PAD_VALUE``) are ignored.
    clip : float
        Pixels further than ``clip`` sigmas from the median are left out, ``iterations`` times.

    Returns
    -------
    median, sigma : float
        sigma is 1.4826 times the median absolute deviation; 0 when the channel is constant.

    Raises
    ------
    ValueError
        If the channel has no usable pixel.
    """
    v = np.asarray(channel, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v != PAD_VALUE)]
    if v.size == 0:
        raise ValueError("the image has no finite pixel: it cannot be given a background")
    for _ in range(iterations):
        med = np.median(v)
        sigma = 1.4826 * np.median(np.abs(v - med))
        keep = np.abs(v - med) <= clip * sigma if sigma > 0 else np.ones(v.size, bool)
        if keep.all():
            break
        v = v[keep]
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))
