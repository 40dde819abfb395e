"""From tiles to detections: the model's scores, tile -> frame coordinates, a second look, merging, vetting, outputs.

The data flow for one frame (DESIGN.md)::

    name -> irsa (sci, diff, ref; cached) -> image.Troika -> SWarp (ref onto sci grid)
         -> 13 x 13 tiles of 256 px -> preprocess -> Tails model (batched)
         -> threshold, tile -> frame coordinates, merge duplicates
         -> a second look at each candidate (tails.refine), merge again
         -> vetting: measure how extended (tails.vet); one score from the model's and those
            (tails.fusion), or drop the point-like; drop the trailed either way;
            WCS -> RA/Dec, OBSJD -> time
         -> runs/YYYYMMDD/{name}.csv, {name}_{ni}.npy, {name}_{ni}.png

The pure steps (:func:`candidates_from_predictions`, :func:`merge_candidates`,
:func:`datestr_from_jd`) are separate from :func:`process_frame`, which does the I/O and is the
one call shared by the CLI and the sentinel.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .frames import DIFF_SUFFIX, SCI_SUFFIX, parse_frame, sci_url
from .fusion import Fusion
from .image import PLATE_SCALE, cut_tiles
from .preprocess import preprocess_tiles
from .refine import check_refine_config, refine_candidates
from .vet import check_vet_config, compact_score, lowest_compact_score, measure_candidates, unvetted

__all__ = [
    "DETECTION_COLUMNS",
    "CLEANUP_CHOICES",
    "FrameResult",
    "candidates_from_predictions",
    "merge_candidates",
    "datestr_from_jd",
    "seeing_caveat",
    "check_run_options",
    "lowest_model_score",
    "detector_scores",
    "process_frame",
    "write_detections",
    "write_csv",
]

log = logging.getLogger(__name__)

#: Columns of the output CSV, in order (DESIGN.md, "Output CSV").
DETECTION_COLUMNS = ["id", "ni", "jd", "datestr", "p", "x", "y", "ra", "dec", "radecstr", "tails_v"]

#: What ``--cleanup`` may remove after a frame.
CLEANUP_CHOICES = ("none", "ref", "sci", "all")

#: Side of the thumbnails cut around each detection for Fritz (ZTF.md: 63 x 63 cutouts).
THUMBNAIL_SIZE = 63


@dataclass
class FrameResult:
    """What :func:`process_frame` produced for one frame.

    Attributes
    ----------
    name : str
        The frame name.
    detections : pandas.DataFrame
        One row per detection, columns :data:`DETECTION_COLUMNS`.
    csv_path : Path
        The CSV written (header only when nothing was found).
    png_paths, npy_paths : list of Path
        Per detection, the triplet PNG and the preprocessed 256 x 256 x 3 tile.
    cutouts : list of dict
        Per detection, ``{"sci", "ref", "diff"}`` -> 63 x 63 arrays centred on it.
    sci_url, diff_url : str
        IRSA URLs of the science and difference images.
    timings : dict
        Seconds spent per stage (load, align, tessellate, infer, refine, vet, write).
    n_tiles, n_skipped : int
        Tiles cut, and tiles skipped because they could not be normalised.
    tile_predictions : ndarray, shape (n_tiles, 3)
        The model's ``[p, x/256, y/256]`` for every tile (zeros for skipped tiles).
    tile_offsets : ndarray, shape (n_tiles, 2)
        ``(row0, col0)`` of every tile.
    tile_valid : ndarray of bool, shape (n_tiles,)
        False for the skipped tiles.
    candidates : pandas.DataFrame
        Every candidate after the second look and merging whose score could reach the
        threshold (:func:`lowest_model_score`), vetted or not: ``p_tile`` (its
        score in the tessellation's tile, before the second look), ``p_model`` (the model's
        score after it), ``p`` (the detector's score, :func:`detector_scores`), ``x``,
        ``y``, their tile's ``row0, col0`` and ``x_tile, y_tile`` in it, vetting's
        ``ext_sigma``, ``ext_fraction``, ``ext_width``, ``ext_elongation``, ``ext_snr``,
        ``trailed``, ``extended`` and ``compact`` (NaN, NaN, NaN, NaN, NaN, False, True and False
        where vetting is off), and ``kept``.  The detections are the kept ones with ``p`` over
        the threshold.
    """

    name: str
    detections: pd.DataFrame
    csv_path: Path
    png_paths: list[Path] = field(default_factory=list)
    npy_paths: list[Path] = field(default_factory=list)
    cutouts: list[dict[str, np.ndarray]] = field(default_factory=list)
    sci_url: str = ""
    diff_url: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    n_tiles: int = 0
    n_skipped: int = 0
    tile_predictions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    tile_offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))
    tile_valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)


def check_run_options(score_threshold: float, cleanup: str) -> tuple[float, str]:
    """Validate the options of a run, with messages that say what to pass instead.

    Raises
    ------
    ValueError
        If ``score_threshold`` is not a number in [0, 1] or ``cleanup`` is not a known choice.
    """
    try:
        threshold = float(score_threshold)
    except (TypeError, ValueError):
        raise ValueError(
            f"score_threshold must be a number in [0, 1], got {score_threshold!r}"
        ) from None
    if not 0.0 <= threshold <= 1.0 or not np.isfinite(threshold):
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
    if not isinstance(cleanup, str) or cleanup.lower() not in CLEANUP_CHOICES:
        raise ValueError(
            f"cleanup must be one of {', '.join(CLEANUP_CHOICES)}, got {cleanup!r}"
        )
    return threshold, cleanup.lower()


def candidates_from_predictions(
    predictions: np.ndarray,
    offsets: np.ndarray,
    score_threshold: float,
    tile_size: int = 256,
) -> pd.DataFrame:
    """Turn per-tile predictions into candidates in frame pixel coordinates.

    Parameters
    ----------
    predictions : ndarray, shape (N, 3)
        ``[p_comet, x / tile_size, y / tile_size]`` per tile (x the column, y the row).
    offsets : ndarray, shape (N, 2)
        ``(row0, col0)`` of each tile's upper-left pixel in the frame.
    score_threshold : float
        Keep tiles with ``p_comet > score_threshold``.
    tile_size : int
        Tile side in pixels.

    Returns
    -------
    pandas.DataFrame
        Columns ``tile, p, x, y, x_tile, y_tile, row0, col0``; x and y are 0-based frame
        coordinates, ``x_tile`` and ``y_tile`` the same in the tile whose corner is (row0, col0).
    """
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1, 3)
    offsets = np.asarray(offsets).reshape(-1, 2)
    keep = np.flatnonzero(predictions[:, 0] > score_threshold)
    x_tile = predictions[keep, 1] * tile_size
    y_tile = predictions[keep, 2] * tile_size
    return pd.DataFrame(
        {
            "tile": keep,
            "p": predictions[keep, 0],
            "x": offsets[keep, 1] + x_tile,
            "y": offsets[keep, 0] + y_tile,
            "x_tile": x_tile,
            "y_tile": y_tile,
            "row0": offsets[keep, 0],
            "col0": offsets[keep, 1],
        }
    )


def merge_candidates(candidates: pd.DataFrame, radius: float) -> pd.DataFrame:
    """Report a comet seen in several overlapping tiles once, with its highest score.

    Candidates are taken in order of decreasing score; one closer than ``radius`` pixels to a
    candidate already kept is dropped.  The result is in tile order.
    """
    if len(candidates) < 2:
        return candidates.reset_index(drop=True)
    order = np.argsort(-candidates["p"].to_numpy(), kind="stable")
    xy = candidates[["x", "y"]].to_numpy()
    kept: list[int] = []
    for i in order:
        if all(np.hypot(*(xy[i] - xy[j])) >= radius for j in kept):
            kept.append(i)
    return candidates.iloc[sorted(kept)].reset_index(drop=True)


def seeing_caveat(header: Any) -> str | None:
    """Why a frame's seeing makes its detections less sure than the model card says, if it does.

    Every bundled model was trained on frames simulated with seeing within
    :data:`tails.simulate.SEEING_RANGE_ARCSEC`, and its card measures it there.  Beyond that, in
    the broader PSF an asteroid looks more like a small coma, and a faint coma more like a point
    source: on 160 simulated frames of 3.6" to 4.5" seeing the detector gave 0.069 false
    positives per ccd-quadrant with the model's fusion (0.425 with vetting's rules), nearly four
    times its rate within the range, most of them asteroids, and found 59 % of the comets of
    r < 19 against 70 % (models/tails-20261203/MODEL.md, *In seeing beyond the simulator's*).

    Parameters
    ----------
    header : mapping
        The science image's header (``SEEING``, arcsec).

    Returns
    -------
    str or None
        A sentence to log, or None when the seeing lies within the range or is not given.
    """
    from .simulate import SEEING_RANGE_ARCSEC  # here: the simulator's imports are slow

    try:
        seeing = float(header["SEEING"])
    except (KeyError, TypeError, ValueError):
        return None  # vetting says so (tails.detect._vet)
    low, high = SEEING_RANGE_ARCSEC
    if not np.isfinite(seeing) or low <= seeing <= high:
        return None
    more = "; expect more false positives, mostly asteroids, and fewer faint comets" if seeing > high else ""
    return (f'seeing {seeing:.2f}" lies outside {low}-{high}", the seeing the model was trained and '
            f"measured in{more}")


def datestr_from_jd(jd: float) -> str:
    """The original's date string, ``"YYYY M D.ddddd"`` (fractional UTC day), from a JD."""
    from astropy.time import Time

    dt = Time(jd, format="jd", scale="utc").datetime
    day = dt.day + (dt.hour + dt.minute / 60.0 + (dt.second + dt.microsecond / 1e6) / 3600.0) / 24
    return f"{dt.year} {dt.month} {day}"


def write_csv(detections: pd.DataFrame, path: Path) -> None:
    """Write detections atomically, with the header even when there are none."""
    df = detections.reindex(columns=DETECTION_COLUMNS)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _vet(candidates: pd.DataFrame, troika: Any, cfg: dict, name: str) -> pd.DataFrame:
    """Mark the candidates extended beyond the PSF (:mod:`tails.vet`); the PSF's FWHM from the header."""
    header = troika.header_sci
    try:
        fwhm = float(header["SEEING"]) / float(header.get("PIXSCALE", PLATE_SCALE))
    except (KeyError, TypeError, ValueError):
        fwhm = float("nan")
    if not (np.isfinite(fwhm) and fwhm > 0):
        log.warning("%s: no usable SEEING in the science header; candidates not vetted", name)
        return unvetted(candidates)
    saturate = header.get("SATURATE")
    measured = measure_candidates(
        candidates, troika.sci, troika.zogy, fwhm, cfg,
        saturate=float(saturate) if isinstance(saturate, (int, float)) else None,
        seed=zlib.crc32(name.encode()),
    )
    return measured


def lowest_model_score(threshold: float, vet: dict, fusion: Fusion | None) -> float:
    """The least model score that can reach ``threshold``; candidates under it are not measured.

    A compact coma lifts a score (:func:`tails.vet.lowest_compact_score`); a fusion scores 0
    every candidate under its ``min_model_score``.
    """
    if not vet["enabled"]:
        return threshold
    if fusion is not None:
        return min(threshold, fusion.min_model_score)
    return lowest_compact_score(threshold, vet["compact_odds"])


def detector_scores(
    measured: pd.DataFrame, vet: dict, fusion: Fusion | None, seeing: Any
) -> tuple[pd.DataFrame, bool]:
    """The detector's score ``p`` of each measured candidate, and whether it may be ``kept``.

    The model's score becomes ``p_model``.  Where vetting measured the frame and a fusion is
    given, ``p`` is the fusion's score (:meth:`tails.fusion.Fusion.score`) and every candidate
    but those vetting's trail test takes for a trailed asteroid may be kept; otherwise ``p`` is
    the model's score with a compact coma's odds raised (:func:`tails.vet.compact_score`), and
    only the extended may be kept.  The detections are the candidates kept with ``p`` over the
    threshold.

    The trail test holds under the fusion as under the rules.  None of the 81 candidates it
    flagged over 100 held-out frames was a comet, nor any of the 2310 detections with which the
    fusion found comets in 700 fresh frames, where the fusion's trees, fitted on few trailed
    asteroids, scored a trailed asteroid that it flags 0.90 (models/tails-20261203/MODEL.md,
    *Fusion*).

    Returns
    -------
    pandas.DataFrame, bool
        The candidates with ``p``, ``p_model`` and ``kept``, and whether the fusion scored them.
    """
    out = measured.assign(p_model=measured["p"])
    try:
        seeing = float(seeing)
    except (TypeError, ValueError):
        seeing = float("nan")
    measures = out[["ext_sigma", "ext_width"]].to_numpy(float) if len(out) else np.zeros((0, 2))
    if fusion is not None and np.isfinite(seeing) and np.isfinite(measures).any():
        out["p"] = fusion.score(out, seeing)
        out["kept"] = ~out["trailed"].astype(bool)
        return out, True
    out["p"] = compact_score(out["p_model"], out["compact"], vet["compact_odds"])
    out["kept"] = out["extended"].astype(bool)
    return out, False


def write_detections(
    candidates: pd.DataFrame,
    troika: Any,
    channels: np.ndarray,
    ref_projected: np.ndarray,
    out_dir: Path,
    *,
    tile_size: int,
    checkpoint_name: str,
    write_png: bool = True,
) -> tuple[pd.DataFrame, Path, list[Path], list[Path], list[np.ndarray]]:
    """Write a frame's detections: the CSV, and the ``.npy`` and ``.png`` of each one.

    Parameters
    ----------
    candidates : pandas.DataFrame
        The detections, with ``p``, ``x``, ``y``, the corner of the tile the model saw last
        (``row0``, ``col0``) and the position in it (``x_tile``, ``y_tile``).
    troika : tails.image.Troika
        The frame's images, for its time, its WCS and the cutouts.
    channels : numpy.ndarray
        The frame's sci, ref and diff channels, from which each detection's tile is cut again.
    ref_projected : numpy.ndarray
        The reference on the science grid.
    out_dir : Path
        Where the files go, as ``<name>.csv``, ``<name>_<ni>.npy`` and ``<name>_<ni>.png``.
    tile_size : int
    checkpoint_name : str
        The model's name, written to the ``tails_v`` column.
    write_png : bool
        Also write the triplet PNG of each detection.

    Returns
    -------
    (detections, csv_path, png_paths, npy_paths, cutouts)
        The CSV's table (:data:`DETECTION_COLUMNS`), its path, the files written, and each
        detection's sci/ref/diff cutout of :data:`THUMBNAIL_SIZE` px (for the sentinel).
    """
    from astropy.coordinates import SkyCoord

    jd = float(troika.header_sci["OBSJD"])
    datestr = datestr_from_jd(jd)
    rows, pngs, npys, cutouts = [], [], [], []
    if len(candidates):
        ra, dec = troika.pix2world_sci(candidates["x"].to_numpy(), candidates["y"].to_numpy())
        ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
        radecstr = SkyCoord(ra=ra, dec=dec, unit="deg").to_string(style="hmsdms")
    for ni, cand in enumerate(candidates.itertuples(index=False)):
        # the tile the model saw last: the second look's, centred on it, or the tessellation's
        tile_raw = cut_tiles(channels, [(cand.row0, cand.col0)], tile_size)
        tile = preprocess_tiles(tile_raw)[0][0]
        rows.append(
            {
                "id": troika.name,
                "ni": ni,
                "jd": jd,
                "datestr": datestr,
                "p": float(cand.p),
                "x": float(cand.x),
                "y": float(cand.y),
                "ra": float(ra[ni]),
                "dec": float(dec[ni]),
                "radecstr": radecstr[ni],
                "tails_v": checkpoint_name,
            }
        )
        npy = out_dir / f"{troika.name}_{ni}.npy"
        _save_npy(tile, npy)
        npys.append(npy)
        if write_png:
            from .plot import save_triplet_png

            png = out_dir / f"{troika.name}_{ni}.png"
            save_triplet_png(
                tile_raw[0],
                png,
                reticle=(cand.x_tile, cand.y_tile),
                title=f"{troika.name}  #{ni}  p={cand.p:.3f}",
            )
            pngs.append(png)
        cutouts.append(troika.cutout(cand.x, cand.y, size=THUMBNAIL_SIZE, ref=ref_projected))

    detections = pd.DataFrame(rows, columns=DETECTION_COLUMNS)
    csv_path = out_dir / f"{troika.name}.csv"
    write_csv(detections, csv_path)
    return detections, csv_path, pngs, npys, cutouts


def process_frame(
    name: str,
    *,
    model: Any,
    config: dict,
    base_path: str | Path,
    score_threshold: float | None = None,
    cleanup: str | None = None,
    nthreads: int | None = None,
    client: Any = None,
    checkpoint_name: str = "tails",
    write_png: bool = True,
    fusion: Fusion | None = None,
) -> FrameResult:
    """Run Tails on one ZTF ccd-quadrant frame.

    Downloads (or reuses from the cache) the science, difference and reference images,
    re-projects the reference onto the science grid, cuts overlapping tiles, runs the model in
    batches, looks again at each candidate (``tails.refine``), drops those no more extended than
    a star (``tails.vet``) and writes the outputs.

    Parameters
    ----------
    name : str
        Frame name, e.g. ``ztf_20191014495961_000570_zr_c05_o_q3``.
    model : keras.Model
        A :func:`tails.efficientdet.Tails` model with weights loaded.
    config : dict
        Configuration (:func:`tails.config.load_config`).
    base_path : str or Path
        Downloads are cached in ``base_path/data``; outputs go to ``base_path/runs/YYYYMMDD``.
    score_threshold, cleanup, nthreads : optional
        Override ``tails.score_threshold``, ``tails.cleanup`` and ``tails.nthreads`` of the config.
    client : tails.irsa.IrsaClient, optional
        Reuse a download client (and its login); one is made from the config otherwise.
    checkpoint_name : str
        The model's name, written to the ``tails_v`` column.
    write_png : bool
        Also write the triplet PNG of each detection.
    fusion : tails.fusion.Fusion, optional
        Score the vetted candidates by it (:func:`tails.fusion.fusion_from_config`); None:
        keep them by vetting's rules.

    Returns
    -------
    FrameResult

    Raises
    ------
    ValueError
        For a bad frame name or option.
    tails.irsa.DownloadError
        When an image cannot be downloaded or is corrupt.
    """
    from .efficientdet import predict_tiles
    from .image import Troika
    from .irsa import IrsaClient

    frame = parse_frame(name)
    tcfg = config["tails"]
    threshold, cleanup = check_run_options(
        tcfg["score_threshold"] if score_threshold is None else score_threshold,
        tcfg["cleanup"] if cleanup is None else cleanup,
    )
    refine, refine_min, refine_views = check_refine_config(tcfg["refine"])
    vet = check_vet_config(tcfg["vet"])
    nthreads = int(tcfg["nthreads"] if nthreads is None else nthreads)
    tile_size, offset = int(tcfg["tile_size"]), int(tcfg["tile_offset"])
    base_path = Path(base_path)
    out_dir = base_path / "runs" / frame.date
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    client = client if client is not None else IrsaClient.from_config(config)
    troika = Troika(path_base=base_path / "data", name=frame.name, config=config, client=client)
    timings["load"] = time.perf_counter() - t0
    caveat = seeing_caveat(troika.header_sci)
    if caveat:
        log.warning("%s: %s", frame.name, caveat)

    t0 = time.perf_counter()
    ref_projected = troika.reproject_ref2sci(how=tcfg["reproject"], nthreads=nthreads)
    timings["align"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    channels = troika.channels(ref_projected)
    tiles, offsets = troika.tiles(tile_size, offset, ref=ref_projected)
    tiles, valid = preprocess_tiles(tiles, copy=False)  # in place; candidates' raw tiles are cut again
    n_skipped = int((~valid).sum())
    if n_skipped:
        log.warning(
            "%s: %d of %d tiles are all NaN or constant and were skipped",
            frame.name,
            n_skipped,
            len(valid),
        )
    timings["tessellate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    predictions = np.zeros((len(tiles), 3), dtype=np.float32)
    if valid.any():
        predictions[valid] = predict_tiles(model, tiles[valid], batch_size=tcfg["batch_size"])
    timings["infer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    merge_radius = float(tcfg["merge_radius_pix"])
    floor = lowest_model_score(threshold, vet, fusion)
    cut = min(floor, refine_min) if refine else floor
    candidates = merge_candidates(candidates_from_predictions(predictions, offsets, cut, tile_size), merge_radius)
    candidates["p_tile"] = candidates["p"]  # the tessellation's score, before any second look
    if refine:
        candidates = refine_candidates(
            candidates, channels, model, min_score=refine_min, views=refine_views, tile_size=tile_size,
            batch_size=tcfg["batch_size"],
        )
        candidates = merge_candidates(candidates[candidates["p"] > floor], merge_radius)
    timings["refine"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    measured = _vet(candidates, troika, vet, frame.name) if vet["enabled"] and len(candidates) else unvetted(candidates)
    measured, fused = detector_scores(measured, vet, fusion, troika.header_sci.get("SEEING"))
    candidates = measured[measured["kept"] & (measured["p"] > threshold)].reset_index(drop=True)
    if len(measured) > len(candidates):
        log.info("%s: %d of %d candidates %s", frame.name, len(measured) - len(candidates), len(measured),
                 "scored under the threshold by the fusion (tails.fusion)" if fused
                 else "dropped as point-like or trailed (tails.vet), or under the threshold")
    timings["vet"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    detections, csv_path, pngs, npys, cutouts = write_detections(
        candidates, troika, channels, ref_projected, out_dir, tile_size=tile_size, checkpoint_name=checkpoint_name,
        write_png=write_png,
    )
    timings["write"] = time.perf_counter() - t0

    if cleanup != "none":
        troika.cleanup(ref=cleanup in ("all", "ref"), sci=cleanup in ("all", "sci"))

    base_url = config["irsa"]["url"]
    log.info("%s: %d detection(s) over %.2f", frame.name, len(detections), threshold)
    return FrameResult(
        name=frame.name,
        detections=detections,
        csv_path=csv_path,
        png_paths=pngs,
        npy_paths=npys,
        cutouts=cutouts,
        sci_url=sci_url(frame, base_url, SCI_SUFFIX),
        diff_url=sci_url(frame, base_url, DIFF_SUFFIX),
        timings=timings,
        n_tiles=len(tiles),
        n_skipped=n_skipped,
        tile_predictions=predictions,
        tile_offsets=offsets,
        tile_valid=valid,
        candidates=measured,
    )
