"""Evaluation of a Tails model on held-out simulated frames, through the full CLI path.

``tails evaluate`` (issue 3, item 3) simulates ZTF ccd-quadrant frames with seeds that training
never uses (``evaluate.seeds``), writes them in IRSA's layout, serves that folder on a loopback
HTTP server and runs :func:`tails.detect.process_frame` on every frame exactly as
``scripts/run_tails.py`` would: download, SWarp, tiles, model, merging.  It then compares the
detections with the simulator's truth.

What is measured, and how, is defined in :mod:`tails.metrics`; the plots and tables of the report
are made by :mod:`tails.report`.

The detector runs at threshold 0, so that every merged candidate is kept.  The greedy merging of
:func:`tails.detect.merge_candidates` decides each candidate only from higher-scoring ones, so the
detections at any threshold ``t`` are exactly the threshold-0 detections with ``p > t``: the curves
are those of the product at each threshold, not an approximation.

The report folder (``evaluate.output_dir``) holds ``metrics.json`` (every number), the plots
``fnr_fpr_vs_threshold.png``, ``roc.png``, ``pr.png`` and ``offsets.png``, and the tables
``comets.csv``, ``detections.csv``, ``candidates.csv`` and ``tiles.csv``, and ``summary.md`` (the
tables of a model card).  ``candidates.csv`` holds every candidate the second look left, those
vetting dropped too, with its score before and after the second look and vetting's measures
(:attr:`tails.detect.FrameResult.candidates`), so that the detector's later stages can be studied
without running the model again.  The report is written to a temporary folder and moved into
place at the end, so an interrupted evaluation leaves no partial report.
"""

from __future__ import annotations

import datetime as _dt
import functools
import http.server
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .fusion import fusion_from_config
from .metrics import IDEAL_CONFUSER_MAG, compute_metrics, lifted_counts, match_detections
from .report import markdown_report, plot_fnr_fpr, plot_offsets, plot_pr, plot_roc, summary_line
from .truth import in_footprint, in_reference, sources_at

__all__ = [
    "EvaluationError",
    "REPORT_FILES",
    "CANDIDATE_COLUMNS",
    "POOL_KEYS",
    "check_evaluate_config",
    "FrameServer",
    "evaluate",
    "evaluate_command",
    "pool_reports",
    "pool_command",
]

log = logging.getLogger(__name__)


class EvaluationError(RuntimeError):
    """No frame could be evaluated; nothing was written."""


#: Files of a report.
REPORT_FILES = (
    "metrics.json",
    "fnr_fpr_vs_threshold.png",
    "roc.png",
    "pr.png",
    "offsets.png",
    "comets.csv",
    "detections.csv",
    "candidates.csv",
    "tiles.csv",
    "summary.md",
)

#: Columns of ``candidates.csv``: the frame, its seed, the candidate as
#: :attr:`tails.detect.FrameResult.candidates` has it, the frame's seeing (header SEEING, arcsec;
#: what :mod:`tails.fusion` is fitted on), and its match with the truth and what lies there
#: (:func:`tails.truth.sources_at`), as in ``detections.csv``.
CANDIDATE_COLUMNS = (
    "frame", "seed", "p_tile", "p_model", "p", "x", "y", "ext_sigma", "ext_fraction", "ext_width",
    "ext_elongation", "ext_snr", "trailed", "extended", "compact", "kept", "seeing", "true", "nearest_comet_pix",
    "source",
)

#: Magnitude columns of the truth table, in order of preference (total magnitude in the frame's band).
_MAG_COLUMNS = ("mag", "mag_total", "mag_r", "magnitude")
#: Coma radius columns, arcsec or pixels.
_COMA_ARCSEC_COLUMNS = ("coma_arcsec", "coma_radius_arcsec")
_COMA_PIX_COLUMNS = ("coma_pix", "coma_radius_pix")


# ----------------------------------------------------------------------------- configuration
def check_evaluate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``evaluate`` section of a configuration and return it with normalised values.

    Parameters
    ----------
    config : mapping
        A full configuration (:func:`tails.config.load_config`).

    Returns
    -------
    dict
        ``output_dir`` (Path), ``seeds`` (list of int), ``comets_per_frame`` (int),
        ``seeing`` (None or a pair of floats, arcsec), ``score_threshold`` (float),
        ``match_radius_pix`` (float).

    Raises
    ------
    tails.config.ConfigError
        Naming the key that is missing or malformed, or when the seeds give no frame or overlap
        the training or validation seeds.
    """
    from .config import ConfigError

    section = config.get("evaluate") if isinstance(config, Mapping) else None
    if not isinstance(section, Mapping):
        raise ConfigError("config key 'evaluate' is missing or not a mapping: see config.defaults.yaml")
    for key in ("output_dir", "seeds", "comets_per_frame", "seeing", "score_threshold", "match_radius_pix"):
        if key not in section:
            raise ConfigError(f"config key 'evaluate.{key}' is missing: add it (see config.defaults.yaml)")

    out = section["output_dir"]
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise ConfigError(f"config key 'evaluate.output_dir' must be a folder path, got {out!r}")

    seeds = section["seeds"]
    if not (
        isinstance(seeds, (list, tuple))
        and len(seeds) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError(
            f"config key 'evaluate.seeds' must be [start, stop), two non-negative integers, got {seeds!r}"
        )
    if seeds[0] >= seeds[1]:
        raise ConfigError(
            f"config key 'evaluate.seeds' is {list(seeds)!r}: range(start, stop) holds no seed, so there "
            "would be no frame to evaluate; give start < stop, e.g. [900000, 900040]"
        )

    n = section["comets_per_frame"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"config key 'evaluate.comets_per_frame' must be a positive integer, got {n!r}")

    seeing = section["seeing"]
    if seeing is not None and not (
        isinstance(seeing, (list, tuple))
        and len(seeing) == 2
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in seeing)
        and 0 < seeing[0] < seeing[1]
    ):
        raise ConfigError(
            f"config key 'evaluate.seeing' must be null (the simulator's seeing) or [low, high], two "
            f"numbers of arcsec with 0 < low < high, got {seeing!r}"
        )

    thr = section["score_threshold"]
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 <= float(thr) <= 1.0:
        raise ConfigError(f"config key 'evaluate.score_threshold' must be a number in [0, 1], got {thr!r}")

    radius = section["match_radius_pix"]
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not float(radius) > 0:
        raise ConfigError(f"config key 'evaluate.match_radius_pix' must be a positive number, got {radius!r}")

    eval_seeds = range(seeds[0], seeds[1])
    dataset = (config.get("train") or {}).get("dataset") or {}
    for key in ("seeds", "val_seeds"):
        other = dataset.get(key)
        if isinstance(other, (list, tuple)) and len(other) == 2:
            lo, hi = max(seeds[0], int(other[0])), min(seeds[1], int(other[1]))
            if lo < hi:
                raise ConfigError(
                    f"config key 'evaluate.seeds' {list(seeds)!r} overlaps 'train.dataset.{key}' "
                    f"{list(other)!r} (seeds {lo}..{hi - 1}): evaluation frames must never be seen in "
                    "training; choose a disjoint range"
                )
    return {
        "output_dir": Path(out).expanduser(),
        "seeds": list(eval_seeds),
        "comets_per_frame": int(n),
        "seeing": None if seeing is None else [float(s) for s in seeing],
        "score_threshold": float(thr),
        "match_radius_pix": float(radius),
    }


# ----------------------------------------------------------------------------- I/O helpers
def _json_safe(obj: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, numpy scalars by Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return round(f, 8) if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the progress bar clean
        log.debug("irsa mirror: " + format, *args)


class FrameServer:
    """A loopback HTTP server (127.0.0.1, ephemeral port) serving an IRSA-layout folder.

    The detector downloads the simulated frames from it through :class:`tails.irsa.IrsaClient`,
    as it would from IRSA.  Use it as a context manager; ``url`` is the base URL to put in
    ``irsa.url``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tails-evaluate-irsa", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> "FrameServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _frame_tile_scores(result: Any) -> pd.DataFrame:
    """Every usable tile's score and offset for one frame, from :class:`tails.detect.FrameResult`."""
    offsets = np.asarray(result.tile_offsets).reshape(-1, 2)
    valid = np.asarray(result.tile_valid, bool)
    p = np.asarray(result.tile_predictions, float).reshape(-1, 3)[:, 0]
    return pd.DataFrame({"row0": offsets[:, 0], "col0": offsets[:, 1], "p": p, "valid": valid})[valid].reset_index(
        drop=True
    )


# ----------------------------------------------------------------------------- the evaluation
@dataclass
class _Collected:
    comets: list[pd.DataFrame] = field(default_factory=list)
    detections: list[pd.DataFrame] = field(default_factory=list)
    candidates: list[pd.DataFrame] = field(default_factory=list)
    tiles: list[pd.DataFrame] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    tiles_skipped: int = 0
    point_sources: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"simulate": 0.0, "detect": 0.0})


def _frame_name(seed: int, taken: set[str]) -> str:
    from .simulate import random_frame_name

    rng = np.random.default_rng(seed)
    name = random_frame_name(rng)
    while name in taken:  # astronomically unlikely, but two frames must never share a cache path
        name = random_frame_name(rng)
    return name


def _comet_properties(comets: pd.DataFrame, pixscale: float | pd.Series = 1.01) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude and coma radius (arcsec) of each comet, NaN where the truth lacks them."""
    mag = next((comets[c].to_numpy(float) for c in _MAG_COLUMNS if c in comets), np.full(len(comets), np.nan))
    coma = next((comets[c].to_numpy(float) for c in _COMA_ARCSEC_COLUMNS if c in comets), None)
    if coma is None:
        pix = next((comets[c].to_numpy(float) for c in _COMA_PIX_COLUMNS if c in comets), None)
        coma = np.full(len(comets), np.nan) if pix is None else pix * np.asarray(pixscale, dtype=float)
    return mag, coma


def _evaluate_frame(
    seed: int,
    name: str,
    *,
    model: Any,
    config: dict,
    ecfg: dict,
    mirror: Path,
    workdir: Path,
    client: Any,
    checkpoint_name: str,
    acc: _Collected,
    fusion: Any = None,
) -> None:
    """Simulate, serve and detect one frame; append its rows to ``acc``."""
    from astropy.io import fits

    from .dataset import label_tiles
    from .detect import process_frame
    from .frames import SCI_SUFFIX, parse_frame, sci_url
    from .simulate import COMET_COLOUR, simulate_frame, write_frame

    t0 = time.perf_counter()
    sim = simulate_frame(name, seed=seed, n_comets=ecfg["comets_per_frame"], seeing_range=ecfg["seeing"])
    write_frame(sim, mirror)
    header = fits.getheader(sci_url(parse_frame(name), str(mirror), SCI_SUFFIX))
    pixscale = float(header.get("PIXSCALE", 1.01))  # ZTF.md: 1.01"/px
    acc.seconds["simulate"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    result = process_frame(
        name,
        model=model,
        config=config,
        base_path=workdir,
        score_threshold=0.0,
        cleanup="none",
        client=client,
        checkpoint_name=checkpoint_name,
        write_png=False,
        fusion=fusion,
    )
    acc.seconds["detect"] += time.perf_counter() - t0

    truth = sim.truth

    def source(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """What the simulator put at each place (tails.truth), and whether the reference reaches it."""
        covered = in_footprint(x, y, sim.wcs_sci, sim.wcs_ref, sim.ref.shape)
        return sources_at(x, y, truth, ecfg["match_radius_pix"], pixscale, covered=covered)

    kind = truth["kind"].astype(str) if "kind" in truth else pd.Series(["comet"] * len(truth), index=truth.index)
    comets = truth[kind == "comet"].reset_index(drop=True)
    if "mag" in truth:
        acc.point_sources += int(((kind == "asteroid") & (truth["mag"] < IDEAL_CONFUSER_MAG)).sum())
    det = result.detections
    radius = ecfg["match_radius_pix"]
    det_xy = det[["x", "y"]].to_numpy(float) if len(det) else np.zeros((0, 2))
    det_p = det["p"].to_numpy(float) if len(det) else np.zeros(0)
    nuclei = comets[["x", "y"]].to_numpy(float)
    m = match_detections(det_xy, det_p, nuclei, radius)

    # the offset at the report's threshold: nearest detection above it within the radius
    above = det_p > ecfg["score_threshold"]
    m_thr = match_detections(det_xy[above], det_p[above], nuclei, radius)
    mag, coma = _comet_properties(comets, pixscale)
    snr = comets.reindex(columns=["snr", "snr_matched", "snr_extended"]).astype(float)  # NaN in older truth tables
    # the frame's 5-sigma point-source limit, and how far above it each comet is in the frame's filter
    maglim = float(header.get("MAGLIM", np.nan))
    depth = maglim - (mag + COMET_COLOUR[parse_frame(name).filter])
    acc.comets.append(
        pd.DataFrame(
            {
                "frame": name,
                "seed": seed,
                "x": nuclei[:, 0],
                "y": nuclei[:, 1],
                "mag": mag,
                "coma_arcsec": coma,
                "tail_arcsec": comets["tail_arcsec"].to_numpy(float) if "tail_arcsec" in comets else np.nan,
                "snr": snr["snr"].to_numpy(),
                "snr_matched": snr["snr_matched"].to_numpy(),
                "snr_extended": snr["snr_extended"].to_numpy(),
                "in_reference": in_reference(sim.diff, nuclei[:, 0], nuclei[:, 1]),
                "best_p": m.comet_best_p,
                "offset_pix": m_thr.comet_offset,
                "seeing": float(header.get("SEEING", np.nan)),
                "maglim": maglim,
                "depth": depth,
            }
        )
    )
    acc.detections.append(
        pd.DataFrame(
            {
                "frame": name,
                "seed": seed,
                "p": det_p,
                "x": det_xy[:, 0],
                "y": det_xy[:, 1],
                "true": m.detection_true,
                "nearest_comet_pix": m.detection_distance,
                "source": source(det_xy[:, 0], det_xy[:, 1]),
                "seeing": float(header.get("SEEING", np.nan)),
            }
        )
    )

    cands = result.candidates
    if len(cands):
        mc = match_detections(cands[["x", "y"]].to_numpy(float), cands["p"].to_numpy(float), nuclei, radius)
        table = cands.reindex(columns=list(CANDIDATE_COLUMNS[2:-3]))
        table.insert(0, "frame", name)
        table.insert(1, "seed", seed)
        table["seeing"] = float(header.get("SEEING", np.nan))
        table["true"], table["nearest_comet_pix"] = mc.detection_true, mc.detection_distance
        table["source"] = source(table["x"].to_numpy(float), table["y"].to_numpy(float))
        acc.candidates.append(table)

    tiles = _frame_tile_scores(result)
    comets_pix = comets.assign(coma_pix=coma / pixscale)
    labels, _, ambiguous = label_tiles(tiles[["row0", "col0"]].to_numpy(), comets_pix, int(config["tails"]["tile_size"]))
    tiles.insert(0, "frame", name)
    tiles["positive"] = labels[:, 0] > 0
    tiles["partial_coma"] = ambiguous
    acc.tiles.append(tiles.drop(columns="valid"))
    acc.tiles_skipped += int(getattr(result, "n_skipped", 0))
    acc.frames += 1


def _concat(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"evaluate.output_dir {out} is a file, not a folder: choose another path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} already holds an evaluation report; choose another evaluate.output_dir "
            "or pass --overwrite to replace it"
        )


def evaluate(
    config: dict,
    checkpoint: str | os.PathLike | None = None,
    overwrite: bool = False,
    model: Any = None,
) -> dict[str, Any]:
    """Evaluate a model on held-out simulated frames and write the report.

    Parameters
    ----------
    config : dict
        A full configuration (:func:`tails.config.load_config`); its ``evaluate`` section says which
        frames and where the report goes, its ``tails`` section how the detector runs.
    checkpoint : path, optional
        Weights (``.weights.h5``) to evaluate; None means ``tails.checkpoint`` of the config, or
        the bundled model.
    overwrite : bool
        Replace a report already in ``evaluate.output_dir``.
    model : keras.Model, optional
        A model to evaluate as it is (e.g. freshly built); ``checkpoint`` is then only its name.

    Returns
    -------
    dict
        The metrics, as written to ``metrics.json``.

    Raises
    ------
    tails.config.ConfigError
        For a malformed ``evaluate`` section (the key is named) or seeds that give no frame.
    FileExistsError
        If ``evaluate.output_dir`` holds a report and ``overwrite`` is False.
    EvaluationError
        If not a single frame could be evaluated.
    """
    from tqdm.auto import tqdm

    from .irsa import IrsaClient

    ecfg = check_evaluate_config(config)
    out = ecfg["output_dir"].resolve()
    _check_output(out, overwrite)

    if checkpoint is None:
        checkpoint = config.get("tails", {}).get("checkpoint")
    if model is None:
        from .efficientdet import model_name
        from .litert import detector_from_config

        model = detector_from_config(config, checkpoint)
        name = model_name(checkpoint)
        fusion = fusion_from_config(config, checkpoint)
    else:
        name = Path(checkpoint).name.removesuffix(".weights.h5") if checkpoint else getattr(model, "name", "tails")
        # a fusion weighs one model's scores: a model given as it is has none of its own
        fusion = None if config["tails"]["vet"].get("fusion") == "auto" else fusion_from_config(config, checkpoint)

    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    acc = _Collected()
    names: set[str] = set()
    log.info("evaluating %s on %d simulated frame(s), seeds %d..%d", name, len(ecfg["seeds"]),
             ecfg["seeds"][0], ecfg["seeds"][-1])
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.work-") as work:
        work = Path(work)
        mirror, runs = work / "irsa", work / "run"
        mirror.mkdir()
        with FrameServer(mirror) as server:
            cfg = json.loads(json.dumps(config))  # a deep copy
            cfg["irsa"]["url"] = server.url
            cfg["irsa"]["username"] = "anonymous"
            log.info("serving simulated frames at %s", server.url)
            with IrsaClient.from_config(cfg) as client:
                for seed in tqdm(ecfg["seeds"], desc="evaluate", unit="frame"):
                    frame = _frame_name(seed, names)
                    names.add(frame)
                    try:
                        _evaluate_frame(seed, frame, model=model, config=cfg, ecfg=ecfg, mirror=mirror,
                                        workdir=runs, client=client, checkpoint_name=name, acc=acc, fusion=fusion)
                    except Exception as e:  # one bad frame never stops the evaluation
                        acc.failed[frame] = f"{type(e).__name__}: {e}"
                        log.error("%s (seed %d): failed, skipped: %s", frame, seed, acc.failed[frame])
                    finally:
                        for d in (mirror / "sci", mirror / "ref", runs):
                            shutil.rmtree(d, ignore_errors=True)
    if acc.frames == 0:
        raise EvaluationError(
            f"no frame could be evaluated ({len(acc.failed)} failed; first: "
            f"{next(iter(acc.failed.values()), 'none')}); nothing was written to {out}"
        )

    comets = _concat(acc.comets, ["frame", "seed", "x", "y", "mag", "coma_arcsec", "tail_arcsec", "snr", "snr_matched",
                                  "snr_extended", "in_reference", "best_p", "offset_pix", "seeing", "maglim",
                                  "depth"])
    detections = _concat(acc.detections, ["frame", "seed", "p", "x", "y", "true", "nearest_comet_pix", "seeing"])
    candidates = _concat(acc.candidates, list(CANDIDATE_COLUMNS))
    tiles = _concat(acc.tiles, ["frame", "row0", "col0", "p", "positive", "partial_coma"])
    metrics = compute_metrics(comets, detections, tiles, acc.frames, ecfg["score_threshold"],
                              point_sources_per_frame=acc.point_sources / acc.frames)
    seconds = {**acc.seconds, "total": time.perf_counter() - t_start}
    metrics = _report(
        metrics,
        header={
            "model": name,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "score_threshold": ecfg["score_threshold"],
            "match_radius_pix": ecfg["match_radius_pix"],
            "seeds": [ecfg["seeds"][0], ecfg["seeds"][-1] + 1],
            "comets_per_frame": ecfg["comets_per_frame"],
            "seeing": ecfg["seeing"],
            "detector": {k: config["tails"][k] for k in ("tile_size", "tile_offset", "merge_radius_pix", "refine",
                                                          "vet", "reproject") if k in config["tails"]},
            "fusion": None if fusion is None else fusion.meta,
        },
        counts={
            "frames_requested": len(ecfg["seeds"]),
            "frames_failed": len(acc.failed),
            "tiles_skipped": acc.tiles_skipped,
            "tiles_partial_coma": int(tiles["partial_coma"].sum()) if len(tiles) else 0,
            **lifted_counts(candidates, ecfg["score_threshold"]),
        },
        failed=acc.failed,
        seconds=seconds,
    )

    _write_report(out, metrics, comets, detections, candidates, tiles, overwrite)
    log.info("report written to %s", out)
    return metrics


# ----------------------------------------------------------------------------- pooling reports
#: What reports must share to be pooled: the same model, judged the same way, by the same detector,
#: on frames of the same seeing.
POOL_KEYS = ("model", "score_threshold", "match_radius_pix", "seeing", "detector", "fusion")


def _read_report(folder: Path) -> tuple[dict, dict[str, pd.DataFrame]]:
    """A report's ``metrics.json`` and its four tables; FileNotFoundError naming what is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give the evaluate.output_dir of a `tails evaluate` run")
    tables = {}
    for name in ("metrics.json", "comets.csv", "detections.csv", "candidates.csv", "tiles.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} holds no {name}: it is not a complete `tails evaluate` report")
    metrics = json.loads((folder / "metrics.json").read_text())
    for name in ("comets", "detections", "candidates", "tiles"):
        tables[name] = pd.read_csv(folder / f"{name}.csv")
    return metrics, tables


def pool_reports(reports: Sequence[str | os.PathLike], output: str | os.PathLike,
                 overwrite: bool = False) -> dict[str, Any]:
    """Pool evaluation reports of one model on disjoint frames into one report.

    A false-positive rate of a few hundredths per frame needs hundreds of frames to be told from
    a target (:mod:`tails.intervals`), so an evaluation may be run in pieces, at different times
    or on different machines, and pooled: the pooled report is the one a single evaluation of all
    the frames would have written, its figures and intervals computed from all the comets,
    detections and tiles (:func:`compute_metrics`).

    Parameters
    ----------
    reports : sequence of path
        Report folders of ``tails evaluate`` (``evaluate.output_dir``), two or more.
    output : path
        The pooled report's folder; never overwritten without ``overwrite``.
    overwrite : bool
        Replace a report already in ``output``.

    Returns
    -------
    dict
        The pooled metrics, as written to ``metrics.json``; ``seed_ranges`` lists the reports'
        seeds and ``pooled_from`` their folders.

    Raises
    ------
    ValueError
        If fewer than two reports are given, if they differ in one of :data:`POOL_KEYS` (the key
        and both values are named), if two share a frame, or if ``output`` is one of them.
    FileNotFoundError
        If a folder is not a complete report.
    FileExistsError
        If ``output`` holds a report and ``overwrite`` is False.
    """
    folders = [Path(r).expanduser().resolve() for r in reports]
    if len(folders) < 2:
        raise ValueError(f"pooling needs two reports or more, got {len(folders)}")
    out = Path(output).expanduser().resolve()
    if out in folders:
        raise ValueError(f"the pooled report cannot replace one of its reports ({out}): choose another --output")
    _check_output(out, overwrite)
    read = [_read_report(f) for f in folders]
    first, first_folder = read[0][0], folders[0]
    for (metrics, _), folder in zip(read[1:], folders[1:]):
        for key in POOL_KEYS:
            if metrics.get(key) != first.get(key):
                raise ValueError(
                    f"{folder} and {first_folder} differ in {key} ({metrics.get(key)!r} against {first.get(key)!r}): "
                    "only reports of one model, threshold, match radius, seeing, detector and fusion can be pooled"
                )
    seen: dict[str, Path] = {}
    for (_, tables), folder in zip(read, folders):
        for frame in set(tables["tiles"]["frame"]) | set(tables["comets"]["frame"]):
            if frame in seen:
                raise ValueError(f"{folder} and {seen[frame]} both evaluated {frame}: pool reports of disjoint seeds")
            seen[str(frame)] = folder

    def pooled(name: str) -> pd.DataFrame:
        return pd.concat([tables[name] for _, tables in read], ignore_index=True)

    comets, detections, candidates, tiles = (pooled(n) for n in ("comets", "detections", "candidates", "tiles"))
    n_frames = sum(m["counts"]["frames"] for m, _ in read)
    point_sources = [(m.get("ideal") or {}).get("point_sources_per_frame") for m, _ in read]
    per_frame = (None if any(p is None for p in point_sources)
                 else sum(p * m["counts"]["frames"] for p, (m, _) in zip(point_sources, read)) / n_frames)
    metrics = compute_metrics(comets, detections, tiles, n_frames, first["score_threshold"],
                              point_sources_per_frame=per_frame)
    ranges = sorted(r for m, _ in read for r in (m.get("seed_ranges") or [m["seeds"]]))
    per_report = {m.get("comets_per_frame") for m, _ in read}
    metrics = _report(
        metrics,
        header={
            **{k: first.get(k) for k in ("checkpoint", *POOL_KEYS)},
            "seeds": [ranges[0][0], max(r[1] for r in ranges)],
            "seed_ranges": ranges,
            "comets_per_frame": per_report.pop() if len(per_report) == 1 else None,
            "pooled_from": [str(f) for f in folders],
        },
        counts={**{k: sum(int(m["counts"].get(k, 0)) for m, _ in read)
                   for k in ("frames_requested", "frames_failed", "tiles_skipped", "tiles_partial_coma")},
                **lifted_counts(candidates, first["score_threshold"])},
        failed={k: v for m, _ in read for k, v in (m.get("failed") or {}).items()},
        seconds={k: sum(float((m.get("seconds") or {}).get(k, 0.0)) for m, _ in read)
                 for k in ("simulate", "detect", "total")},
    )
    _write_report(out, metrics, comets, detections, candidates, tiles, overwrite)
    log.info("pooled report of %d frames from %d reports written to %s", n_frames, len(folders), out)
    return metrics


def pool_command(*reports: str, output: str, overwrite: bool = False) -> str:
    """Pool ``tails evaluate`` reports of one model on disjoint frames into one report.

    Parameters
    ----------
    reports : str
        Two or more report folders (each an ``evaluate.output_dir``).
    output : str
        The folder of the pooled report.
    overwrite : bool
        Replace a report already in ``output``.

    Returns
    -------
    str
        The pooled report's one-paragraph summary.
    """
    metrics = pool_reports(reports, output, overwrite=bool(overwrite))
    return summary_line(metrics, Path(output).expanduser().resolve())


# ----------------------------------------------------------------------------- the report folder
def _report(metrics: dict[str, Any], header: dict[str, Any], counts: dict[str, int], failed: dict[str, str],
            seconds: dict[str, float]) -> dict[str, Any]:
    """``metrics.json``: the run's ``header`` (model, threshold, seeds, detector, ...) and the
    time it was made, then the metrics, with the run's ``counts`` added, the frames that
    ``failed``, the ``seconds`` spent and the report's files; JSON-safe (:func:`_json_safe`)."""
    out = {
        **header,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "magnitude": "total r magnitude of the comet (simulator truth column 'mag')",
        **metrics,
    }
    out["counts"] = {**out["counts"], **counts}
    out["failed"] = failed
    out["seconds"] = {k: round(float(v), 1) for k, v in seconds.items()}
    out["files"] = list(REPORT_FILES)
    return _json_safe(out)


def _write_report(out: Path, metrics: dict, comets: pd.DataFrame, detections: pd.DataFrame,
                  candidates: pd.DataFrame, tiles: pd.DataFrame, overwrite: bool) -> None:
    """Write the whole report into a temporary folder, then move it onto ``out``."""
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        comets.to_csv(stage / "comets.csv", index=False)
        detections.to_csv(stage / "detections.csv", index=False)
        candidates.to_csv(stage / "candidates.csv", index=False)
        tiles.to_csv(stage / "tiles.csv", index=False)
        plot_fnr_fpr(metrics, stage / "fnr_fpr_vs_threshold.png")
        plot_roc(metrics, stage / "roc.png")
        plot_pr(metrics, stage / "pr.png")
        plot_offsets(comets["offset_pix"].to_numpy(float), metrics, stage / "offsets.png")
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
        (stage / "summary.md").write_text(markdown_report(metrics))
        os.chmod(stage, 0o755)
        _check_output(out, overwrite)  # nobody wrote a report meanwhile
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def evaluate_command(
    config: str = "config.defaults.yaml",
    checkpoint: str | None = None,
    overwrite: bool = False,
) -> str:
    """Evaluate a model on held-out simulated frames (the config's ``evaluate`` section).

    Parameters
    ----------
    config : str
        A YAML config with the keys of config.defaults.yaml.
    checkpoint : str, optional
        Weights (``.weights.h5``) to evaluate; default: ``tails.checkpoint``, else the bundled model.
    overwrite : bool
        Replace the report in ``evaluate.output_dir``.

    Returns
    -------
    str
        A one-paragraph summary; the report (``metrics.json`` and PNG plots) is in
        ``evaluate.output_dir``.
    """
    from .config import load_config

    cfg = load_config(config)
    metrics = evaluate(cfg, checkpoint=checkpoint, overwrite=bool(overwrite))
    return summary_line(metrics, Path(cfg["evaluate"]["output_dir"]).expanduser().resolve())
