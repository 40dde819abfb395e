"""Preprocessing of sci/ref/diff tiles, exactly as the original Tails.

1. NaN -> the channel's median (over its finite pixels);
2. difference values below -100 -> 0 (large negative values are bad subtractions);
3. each channel divided by its L2 norm.

A tile that is all NaN in some channel, or whose norm is zero, cannot be normalised: it is
reported as invalid and skipped by the detector, never a crash.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BAD_DIFF_NEG", "preprocess_stack", "preprocess_tiles"]

#: Difference-image values below this (DN) are set to 0 (the original's ``bad_diff_neg``).
BAD_DIFF_NEG = -100.0


def preprocess_tiles(
    tiles: np.ndarray, fix_diff_neg: bool = True, bad_diff_neg: float = BAD_DIFF_NEG
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

    Returns
    -------
    out : ndarray, shape (N, H, W, C), float32
        Preprocessed tiles; invalid tiles are all zeros.
    valid : ndarray of bool, shape (N,)
        False for tiles that had an all-NaN channel or a zero norm.
    """
    x = np.array(tiles, dtype=np.float32, copy=True)
    if x.ndim != 4:
        raise ValueError(f"tiles must have shape (N, H, W, C), got {x.shape}")
    n, _, _, c = x.shape
    flat = x.reshape(n, -1, c)
    nan = np.isnan(flat)
    all_nan = nan.all(axis=1)  # (N, C)
    if nan.any():
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(flat, axis=1)  # (N, C)
        med = np.nan_to_num(med, nan=0.0)
        flat = np.where(nan, med[:, None, :], flat)
    if fix_diff_neg and c == 3:
        d = flat[..., 2]
        d[d < bad_diff_neg] = 0.0
    norm = np.sqrt(np.einsum("npc,npc->nc", flat.astype(np.float64), flat.astype(np.float64)))
    valid = ~(all_nan.any(axis=1) | (norm == 0).any(axis=1) | ~np.isfinite(norm).all(axis=1))
    safe = np.where(norm > 0, norm, 1.0)
    flat = (flat / safe[:, None, :]).astype(np.float32)
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
