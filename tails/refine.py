"""A second look at each candidate: a tile cut again around it, seen in the 8 orientations of the square.

The detector's 13 x 13 tiles sit where the tessellation puts them, so a comet may lie anywhere in
its tile, near an edge too, and each tile is looked at once.  A candidate above
``tails.refine.min_score`` gets a second look:

1. a tile of the same size is cut around its position (moved inside the frame near the edges),
   so that the comet sits near the centre, as most training positives did;
2. the tile is preprocessed as any other and scored; a candidate whose centred tile no longer
   scores above ``min_score`` keeps that score and position;
3. the others are seen in ``views`` of the 8 symmetries of the square (the flips and transposes
   that training augments with, :func:`tails.train.augment_batch`): their score is the mean of
   the views' scores, and their position the median of the views' positions, each mapped back
   to the frame.

The pure steps (:func:`centred_offsets`, :func:`dihedral_views`, :func:`undo_dihedral`,
:func:`combine_views`) are separate from :func:`refine_candidates`, which calls the model.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .image import cut_tiles
from .preprocess import preprocess_tiles

__all__ = [
    "MAX_VIEWS",
    "centred_offsets",
    "dihedral_views",
    "undo_dihedral",
    "combine_views",
    "check_refine_config",
    "refine_candidates",
]

log = logging.getLogger(__name__)

#: The symmetries of the square: view k transposes if bit 0 of k is set, then flips the columns
#: if bit 1 is, then the rows if bit 2 is (the order of :func:`tails.train.augment_batch`).
MAX_VIEWS = 8


def centred_offsets(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """``(row0, col0)`` of ``size``-px tiles centred on the pixels (x, y), moved inside the image.

    Parameters
    ----------
    x, y : array_like
        0-based column and row of each centre.
    shape : (ny, nx)
        The image's shape.
    size : int
        Tile side in pixels; the tile's centre pixel is ``size // 2``.

    Returns
    -------
    ndarray of int, shape (N, 2)

    Raises
    ------
    ValueError
        If the tile does not fit in the image.
    """
    ny, nx = (int(v) for v in shape)
    if size > ny or size > nx:
        raise ValueError(f"a {size} px tile does not fit in the {ny} x {nx} image")
    col0 = np.floor(np.asarray(x, float) + 0.5).astype(np.int64) - size // 2
    row0 = np.floor(np.asarray(y, float) + 0.5).astype(np.int64) - size // 2
    return np.stack([np.clip(row0, 0, ny - size), np.clip(col0, 0, nx - size)], axis=-1).reshape(-1, 2)


def _view(tile: np.ndarray, k: int) -> np.ndarray:
    if k & 1:
        tile = tile.transpose(1, 0, 2)
    if k & 2:
        tile = tile[:, ::-1]
    if k & 4:
        tile = tile[::-1, :]
    return tile


def dihedral_views(tiles: np.ndarray, views: int = MAX_VIEWS, start: int = 0) -> np.ndarray:
    """Views ``start`` to ``views - 1`` of the symmetries of each tile (view 0 is the tile itself).

    Returns
    -------
    ndarray, shape (N * (views - start), H, W, C)
        Tile by tile: row ``i * (views - start) + j`` is view ``start + j`` of tile i.
    """
    if not 1 <= views <= MAX_VIEWS or not 0 <= start < views:
        raise ValueError(f"views must be 1 to {MAX_VIEWS} and start below it, got {views} and {start}")
    out = [_view(t, k) for t in tiles for k in range(start, views)]
    return np.stack(out) if out else np.zeros((0, *tiles.shape[1:]), tiles.dtype)


def undo_dihedral(predictions: np.ndarray, views: int, tile_size: int) -> np.ndarray:
    """Map the models' ``[p, x/T, y/T]`` of :func:`dihedral_views` back to the untransformed tile.

    A flip maps pixel i to ``T - 1 - i``, as in training, so in units of the tile side a flipped
    coordinate u becomes ``(T - 1) / T - u``.

    Returns
    -------
    ndarray, shape (N, views, 3)
    """
    out = np.array(predictions, dtype=np.float64).reshape(-1, views, 3)
    edge = (tile_size - 1) / tile_size
    for k in range(views):
        v = out[:, k]
        if k & 4:
            v[:, 2] = edge - v[:, 2]
        if k & 2:
            v[:, 1] = edge - v[:, 1]
        if k & 1:
            v[:, [1, 2]] = v[:, [2, 1]]
    return out


def combine_views(views: np.ndarray) -> np.ndarray:
    """One ``[p, x, y]`` per tile from its views: the mean score and the median position.

    The median keeps one view that points elsewhere from moving the position.
    """
    views = np.asarray(views, dtype=np.float64)
    return np.column_stack([views[:, :, 0].mean(axis=1), np.median(views[:, :, 1:], axis=1)])


def check_refine_config(refine: dict) -> tuple[bool, float, int]:
    """``(enabled, min_score, views)`` of the ``tails.refine`` section, checked.

    Raises
    ------
    ValueError
        Naming the key that is wrong and what it may be.
    """
    enabled, min_score, views = refine["enabled"], refine["min_score"], refine["views"]
    if not isinstance(enabled, bool):
        raise ValueError(f"tails.refine.enabled must be true or false, got {enabled!r}")
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
        raise ValueError(f"tails.refine.min_score must be a number in [0, 1], got {min_score!r}")
    if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"tails.refine.views must be an integer from 1 to {MAX_VIEWS}, got {views!r}")
    return enabled, float(min_score), views


def refine_candidates(
    candidates: pd.DataFrame,
    arrays: Sequence[np.ndarray],
    model: Any,
    *,
    min_score: float,
    views: int = MAX_VIEWS,
    tile_size: int = 256,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Look again at the candidates scoring above ``min_score``, in tiles centred on them.

    Parameters
    ----------
    candidates : pandas.DataFrame
        From :func:`tails.detect.candidates_from_predictions`: ``p, x, y, x_tile, y_tile`` and the
        tile's ``row0, col0``.
    arrays : sequence of ndarray
        The frame's images (sci, re-projected ref, diff), one channel each.
    model : keras.Model or tails.litert.LiteRTModel
        The detector's model.
    min_score : float
        Candidates with ``p > min_score`` are looked at again; the others keep their score.  Of
        those, the ones whose centred tile scores above it too are seen in all ``views``.
    views : int
        How many of the 8 symmetries of the square to average over.
    tile_size : int
        Tile side in pixels.
    batch_size : int, optional
        Tiles per model call (:func:`tails.efficientdet.predict_tiles`).

    Returns
    -------
    pandas.DataFrame
        The same rows, those looked at with their new ``p, x, y``, the corner ``row0, col0`` of
        their new tile and their position ``x_tile, y_tile`` in it.
    """
    from .efficientdet import predict_tiles

    out = candidates.copy()
    todo = np.flatnonzero(out["p"].to_numpy() > min_score)
    if len(todo) == 0:
        return out
    offsets = centred_offsets(out["x"].to_numpy()[todo], out["y"].to_numpy()[todo], arrays[0].shape, tile_size)
    tiles, valid = preprocess_tiles(cut_tiles(arrays, offsets, tile_size), copy=False)
    todo, offsets, tiles = todo[valid], offsets[valid], tiles[valid]
    if len(todo) == 0:
        return out
    # the centred tile first; only those that still score above min_score are seen in the other
    # views (on the benchmark's frame 6 of 9 candidates: 51 tiles instead of 72)
    combined = predict_tiles(model, tiles, batch_size=batch_size).astype(np.float64)
    more = np.flatnonzero(combined[:, 0] > min_score) if views > 1 else np.zeros(0, int)
    if len(more):
        others = predict_tiles(model, dihedral_views(tiles[more], views, start=1), batch_size=batch_size)
        seen = np.concatenate([combined[more, None], others.reshape(len(more), views - 1, 3)], axis=1)
        combined[more] = combine_views(undo_dihedral(seen, views, tile_size))
    log.debug("looked again at %d candidate(s), %d of them in %d views", len(todo), len(more), views)
    p, x_tile, y_tile = combined.T
    x_tile, y_tile = x_tile * tile_size, y_tile * tile_size
    columns = ["p", "x", "y", "x_tile", "y_tile", "row0", "col0"]
    new = [p, offsets[:, 1] + x_tile, offsets[:, 0] + y_tile, x_tile, y_tile, offsets[:, 0], offsets[:, 1]]
    for column, values in zip(columns, new):
        out.loc[out.index[todo], column] = values
    return out
