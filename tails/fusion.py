"""Fusion: one score for a candidate from the model's score and vetting's measures.

Vetting (:mod:`tails.vet`) keeps a candidate by fixed rules on its measures: an excess over a
point source of ``min_significance`` sigmas, no trail, the odds of a compact coma multiplied by
``compact_odds``.  Each rule looks at one or two measures and ignores the model's score, so a
candidate the model is sure of is dropped for an excess of 1.9 sigmas while one it barely
favours is kept for 2.1.  The false positives that remain are round asteroids that pass the
excess test on noise (``models/tails-20261203/MODEL.md``, *Asteroids*).

A fusion weighs all of them together.  It is a gradient-boosted ensemble of decision trees
(scikit-learn's ``HistGradientBoostingClassifier``) over :data:`FEATURES`: the model's score after
the second look, the five measures of :func:`tails.vet.measure_candidates` and the frame's
seeing.  It is fitted on the candidates of ``tails evaluate`` runs, whose ``true`` column says
which lie within the match radius of a simulated comet (:func:`fit_fusion`, ``tails
fit-fusion``), and is shipped beside the model whose scores it weighs, as ``fusion.json``.
Its trees are stored as arrays and evaluated here with numpy (:meth:`Fusion.score`), so that
running Tails needs neither scikit-learn nor a pickle.

The score is the trees' probability that a candidate is a comet, with its odds divided by those
at the **operating point**: the score above which the fitting frames' candidates, each scored
by trees fitted without its frame (out of fold), gave ``fp_per_frame`` false positives per
ccd-quadrant.  A score of 0.5, the detector's default threshold, is that point.  Dividing the
odds by a constant is a change of prior: the fitting frames hold 6 comets each, far more than
the sky does, and the score is the probability under a prior in which comets are that much
rarer.  Raising or lowering ``tails.score_threshold`` trades comets for false positives as
before.

Fusion applies where vetting measured the candidates; where it could not (no usable seeing in
the header, too few stars, ``tails.vet.enabled: false``), the detector falls back on the
model's score, as it always did.  Vetting's trail test still holds: a candidate it takes for a
trailed asteroid is not reported, whatever its score (:func:`tails.detect.detector_scores`).
``tails.vet.fusion: null`` turns fusion off and restores the rules.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .atomic import atomic_path

__all__ = [
    "FEATURES",
    "FUSION_FILENAME",
    "Fusion",
    "load_fusion",
    "save_fusion",
    "fusion_beside",
    "fusion_from_config",
    "fit_fusion",
    "feature_matrix",
    "read_evaluations",
    "reports_model",
    "fit_fusion_command",
]

log = logging.getLogger(__name__)

#: What the trees look at, in order: the model's score after the second look
#: (``p_model``), vetting's measures (:func:`tails.vet.measure_candidates`) and the frame's
#: seeing FWHM in arcsec (header SEEING).  ``ext_snr`` is left out: the evaluation runs of
#: before 2026-12-06 did not record it, and it added nothing the other measures do not say.
FEATURES: tuple[str, ...] = ("p_model", "ext_sigma", "ext_fraction", "ext_width", "ext_elongation", "seeing")

#: Columns a fitting table needs: the features, the truth and the frame (a fold's unit).
FIT_COLUMNS: tuple[str, ...] = (*FEATURES, "true", "frame")

#: Name of a fusion file beside a model's weights.
FUSION_FILENAME = "fusion.json"

#: Format version of the fusion file.
FORMAT = 1

#: Trees' settings (scikit-learn names): common ones, set once and not tuned; the features were
#: chosen on evaluation frames 600000-600099 and 900900-901599 against the rules of tails.vet
#: (the bundled model's card, "Fusion").
TREE_SETTINGS: dict[str, Any] = {
    "max_iter": 300,
    "learning_rate": 0.05,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    "early_stopping": False,
}


@dataclass(frozen=True)
class Fusion:
    """A fitted fusion: decision trees whose summed leaf values are a log-odds.

    Attributes
    ----------
    baseline : float
        Log-odds before any tree.
    offset : float
        Log-odds at the operating point, subtracted so that a score of 0.5 is it.
    min_model_score : float
        The least ``p_model`` fitted on; candidates below it score 0.
    trees : list of dict
        One per tree, arrays of its nodes: ``feature`` (-1 at a leaf), ``threshold``, ``left``,
        ``right``, ``missing_left`` (where a NaN goes) and ``value`` (a leaf's log-odds).
    meta : dict
        How it was fitted: frames, candidates, the operating point, the out-of-fold figures.
    """

    baseline: float
    offset: float
    min_model_score: float
    trees: list[dict[str, np.ndarray]]
    meta: dict[str, Any] = field(default_factory=dict)

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        """The trees' log-odds for rows of :data:`FEATURES` (NaN allowed), before the offset."""
        x = np.asarray(features, float)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"features must have {len(FEATURES)} columns ({', '.join(FEATURES)}), got shape {x.shape}")
        rows = np.arange(len(x))
        total = np.full(len(x), self.baseline)
        for t in self.trees:
            node = np.zeros(len(x), dtype=np.int64)
            while True:
                inner = t["feature"][node] >= 0
                if not inner.any():
                    break
                f = np.where(inner, t["feature"][node], 0)
                v = x[rows, f]
                left = np.where(np.isnan(v), t["missing_left"][node], v <= t["threshold"][node])
                node = np.where(inner, np.where(left, t["left"][node], t["right"][node]), node)
            total += t["value"][node]
        return total

    def score(self, candidates: pd.DataFrame, seeing: float) -> np.ndarray:
        """The detector's score of each candidate, in [0, 1]; 0.5 at the operating point.

        Parameters
        ----------
        candidates : pandas.DataFrame
            With ``p_model`` and vetting's measures (:func:`tails.vet.measure_candidates`).
        seeing : float
            The frame's seeing FWHM, arcsec.
        """
        x = feature_matrix(candidates.assign(seeing=float(seeing)))
        z = np.clip(self.log_odds(x) - self.offset, -500, 500)
        p = 1.0 / (1.0 + np.exp(-z))
        return np.where(x[:, 0] >= self.min_model_score, p, 0.0)


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """Rows of :data:`FEATURES` from a table with those columns (what is not a number as NaN)."""
    return np.column_stack([pd.to_numeric(table[name], errors="coerce").to_numpy(float) for name in FEATURES])


def _lacking(table: pd.DataFrame) -> list[str]:
    """The :data:`FIT_COLUMNS` a table lacks."""
    return [c for c in FIT_COLUMNS if c not in table]


# ---------------------------------------------------------------------------------------------
# Files


def save_fusion(fusion: Fusion, path: str | os.PathLike) -> Path:
    """Write a fusion as JSON (atomically)."""
    doc = {
        "format": FORMAT,
        "features": list(FEATURES),
        "baseline": fusion.baseline,
        "offset": fusion.offset,
        "min_model_score": fusion.min_model_score,
        "meta": fusion.meta,
        "trees": [
            {k: v.tolist() for k, v in t.items()} for t in fusion.trees
        ],
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def load_fusion(path: str | os.PathLike) -> Fusion:
    """Read a fusion file written by :func:`save_fusion`.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not a fusion file of this version of Tails.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fusion file {path} does not exist; fit one with `tails fit-fusion` or set tails.vet.fusion: null")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or tuple(doc.get("features", ())) != FEATURES:
            raise ValueError(f"format {doc.get('format')!r} with features {doc.get('features')!r}")
        trees = [
            {
                "feature": np.asarray(t["feature"], np.int64),
                "threshold": np.asarray(t["threshold"], float),
                "left": np.asarray(t["left"], np.int64),
                "right": np.asarray(t["right"], np.int64),
                "missing_left": np.asarray(t["missing_left"], bool),
                "value": np.asarray(t["value"], float),
            }
            for t in doc["trees"]
        ]
        fusion = Fusion(float(doc["baseline"]), float(doc["offset"]), float(doc["min_model_score"]), trees, doc.get("meta", {}))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is not a fusion file of this version of Tails ({err}); fit it again with `tails fit-fusion`"
        ) from err
    return fusion


def fusion_beside(checkpoint: str | os.PathLike | None) -> Path:
    """Where the fusion of a model lives: ``fusion.json`` in its weights' folder (None: the bundled)."""
    from .efficientdet import find_bundled_checkpoint

    path = find_bundled_checkpoint() if checkpoint is None else Path(checkpoint)
    return path.parent / FUSION_FILENAME


def fusion_from_config(config: Mapping[str, Any], checkpoint: str | os.PathLike | None = None) -> Fusion | None:
    """The fusion the detector uses, from ``tails.vet.fusion``.

    Parameters
    ----------
    config : mapping
        Configuration (:func:`tails.config.load_config`).
    checkpoint : str or Path, optional
        The model's weights; ``tails.checkpoint`` of the config by default (None there: the
        bundled model).

    Returns
    -------
    Fusion or None
        ``"auto"``: the model's own ``fusion.json`` if it has one, else None (vetting's rules);
        a path: that file; null: None.  None too when vetting is off.
    """
    from .vet import check_vet_config

    tcfg = config["tails"]
    vet = check_vet_config(tcfg["vet"])
    choice = vet["fusion"]
    if not vet["enabled"] or choice is None:
        return None
    if choice != "auto":
        fusion = load_fusion(Path(choice).expanduser())
    else:
        checkpoint = tcfg.get("checkpoint") if checkpoint is None else checkpoint
        beside = fusion_beside(checkpoint)
        if not beside.is_file():
            log.info("no %s beside the model; candidates are kept by vetting's rules", FUSION_FILENAME)
            return None
        fusion = load_fusion(beside)
        choice = str(beside)
    log.info(
        "fusion %s: %d trees, operating point %.3g false positives per ccd-quadrant on its fitting frames",
        choice, len(fusion.trees), fusion.meta.get("fp_per_frame", float("nan")),
    )
    return fusion


# ---------------------------------------------------------------------------------------------
# Fitting


def fit_fusion(
    candidates: pd.DataFrame,
    n_frames: int,
    fp_per_frame: float = 0.02,
    min_model_score: float = 0.02,
    folds: int = 5,
    seed: int = 0,
) -> Fusion:
    """Fit a fusion on evaluated candidates.

    Parameters
    ----------
    candidates : pandas.DataFrame
        Candidates of ``tails evaluate`` runs (``candidates.csv``) with :data:`FEATURES`, a
        boolean ``true`` and ``frame`` (a frame's candidates are kept together in one fold).
    n_frames : int
        How many frames they come from (frames without a candidate count too).
    fp_per_frame : float
        The operating point: false positives per ccd-quadrant at a score of 0.5.
    min_model_score : float
        Candidates the model scores under this are left out, and score 0.
    folds : int
        Folds, by frame, of the out-of-fold scores that set the operating point.
    seed : int
        Seed of the folds and the trees.

    Returns
    -------
    Fusion
    """
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as err:  # pragma: no cover - a dependency
        raise ImportError("fitting a fusion needs scikit-learn: pip install scikit-learn") from err

    if not 0 < fp_per_frame:
        raise ValueError(f"fp_per_frame must be positive, got {fp_per_frame!r}")
    missing = _lacking(candidates)
    if missing:
        raise ValueError(f"the candidates lack the column(s) {', '.join(missing)}")
    c = candidates[pd.to_numeric(candidates["p_model"], errors="coerce") >= min_model_score].reset_index(drop=True)
    y = c["true"].astype(bool).to_numpy()
    if y.all() or not y.any():
        raise ValueError(
            f"the candidates must hold comets and other sources both; got {int(y.sum())} comets in {len(y)}"
        )
    x = feature_matrix(c)

    def trees() -> Any:
        return HistGradientBoostingClassifier(**TREE_SETTINGS, random_state=seed)

    frames = c["frame"].astype(str).to_numpy()
    names = np.unique(frames)
    fold_of = dict(zip(names, np.random.default_rng(seed).permutation(len(names)) % folds))
    fold = np.array([fold_of[f] for f in frames])
    oof = np.empty(len(c))
    for k in range(folds):
        held = fold == k
        oof[held] = trees().fit(x[~held], y[~held]).decision_function(x[held])
    negatives = np.sort(oof[~y])[::-1]
    allowed = int(math.floor(fp_per_frame * n_frames))
    offset = float(negatives[allowed]) if allowed < len(negatives) else float(negatives[-1]) - 1e-6

    final = trees().fit(x, y)
    fusion = Fusion(
        baseline=float(np.ravel(final._baseline_prediction)[0]),
        offset=offset,
        min_model_score=float(min_model_score),
        trees=[_tree_arrays(p[0].nodes) for p in final._predictors],
        meta={
            "frames": int(n_frames),
            "candidates": int(len(c)),
            "comets": int(y.sum()),
            "fp_per_frame": float(fp_per_frame),
            "folds": int(folds),
            "seed": int(seed),
            "out_of_fold": {
                "candidates_kept_true": int((oof[y] > offset).sum()),
                "candidates_kept_false": int((oof[~y] > offset).sum()),
            },
            "settings": dict(TREE_SETTINGS),
        },
    )
    check = fusion.log_odds(x)
    if not np.allclose(check, final.decision_function(x), atol=1e-6):
        raise RuntimeError("the exported trees do not reproduce scikit-learn's scores; this version of it is not supported")
    return fusion


def _tree_arrays(nodes: np.ndarray) -> dict[str, np.ndarray]:
    """A scikit-learn histogram tree's nodes as the arrays of :class:`Fusion`."""
    leaf = nodes["is_leaf"].astype(bool)
    return {
        "feature": np.where(leaf, -1, nodes["feature_idx"]).astype(np.int64),
        "threshold": np.where(leaf, 0.0, nodes["num_threshold"]).astype(float),
        "left": np.where(leaf, 0, nodes["left"]).astype(np.int64),
        "right": np.where(leaf, 0, nodes["right"]).astype(np.int64),
        "missing_left": nodes["missing_go_to_left"].astype(bool) & ~leaf,
        "value": np.where(leaf, nodes["value"], 0.0).astype(float),
    }


def read_evaluations(folders: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, list[dict]]:
    """The candidates of ``tails evaluate`` report folders, with each frame's seeing, and their headers.

    A folder's seeing per frame comes from its ``candidates.csv`` or else its ``comets.csv``
    (runs of before 2026-12-07 did not put it in the candidates); runs of before the trail test
    took no candidate for a trail.  The headers are the folders'
    ``metrics.json``; their ``counts.frames`` sum to the frames the candidates come from.
    """
    tables, headers = [], []
    for folder in folders:
        folder = Path(folder)
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
            cands = pd.read_csv(folder / "candidates.csv")
        except (OSError, ValueError) as err:
            raise ValueError(f"{folder} is not a `tails evaluate` report folder: {err}") from err
        if "seeing" not in cands:
            comets = pd.read_csv(folder / "comets.csv")
            cands["seeing"] = cands["frame"].map(comets.groupby("frame")["seeing"].first())
        if "trailed" not in cands:  # runs of before vetting's trail test (2026-12-03) flagged none
            cands["trailed"] = False
        missing = _lacking(cands)
        if missing:
            raise ValueError(
                f"{folder}/candidates.csv lacks {', '.join(missing)}: it was made before vetting measured them; "
                "evaluate those frames again"
            )
        cands["frame"] = folder.name + "/" + cands["frame"].astype(str)
        tables.append(cands)
        headers.append(metrics)
    return pd.concat(tables, ignore_index=True), headers


def reports_model(headers: Sequence[Mapping[str, Any]]) -> Any:
    """The model whose scores reports hold (their ``metrics.json``); refuses reports of several."""
    models = {h.get("model") for h in headers}
    if len(models) > 1:
        raise ValueError(f"the reports are of different models ({', '.join(sorted(map(str, models)))}); "
                         "a fusion weighs one model's scores")
    return models.pop()


def fit_fusion_command(
    *reports: str,
    output: str,
    fp_per_frame: float = 0.02,
    min_model_score: float = 0.02,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """``tails fit-fusion REPORT... --output=PATH``: fit a fusion on ``tails evaluate`` reports.

    The reports must be of one model, the one whose scores the fusion will weigh, and of frames
    its training never saw; put the file beside that model's weights as ``fusion.json`` for the
    detector to find it (``tails.vet.fusion: auto``).

    Parameters
    ----------
    *reports : str
        ``evaluate.output_dir`` folders.
    output : str
        The fusion file to write.
    fp_per_frame : float
        False positives per ccd-quadrant, out of fold, at a score of 0.5.
    min_model_score : float
        Candidates the model scores under this are left out, and score 0.
    seed : int
        Seed of the folds and the trees.
    overwrite : bool
        Replace ``output`` if it exists.

    Returns
    -------
    str
        The path written.
    """
    if not reports:
        raise ValueError("give the evaluate.output_dir folders of one or more `tails evaluate` runs")
    output_path = Path(output)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite to replace it")
    for name, v in (("fp_per_frame", fp_per_frame), ("min_model_score", min_model_score)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"--{name} must be a number between 0 and 1, got {v!r}")
    candidates, headers = read_evaluations(reports)
    model = reports_model(headers)
    n_frames = sum(int(h["counts"]["frames"]) for h in headers)
    fusion = fit_fusion(candidates, n_frames, fp_per_frame=float(fp_per_frame),
                        min_model_score=float(min_model_score), seed=int(seed))
    fusion.meta.update({"model": model,
                        "seeds": [h.get("seeds") for h in headers]})
    save_fusion(fusion, output_path)
    oof = fusion.meta["out_of_fold"]
    log.info(
        "fusion fitted on %d candidates of %d frames (%d comets): out of fold, at 0.5 it keeps %d comet candidates "
        "and %d others (%.3f per ccd-quadrant); written to %s",
        fusion.meta["candidates"], n_frames, fusion.meta["comets"], oof["candidates_kept_true"],
        oof["candidates_kept_false"], oof["candidates_kept_false"] / n_frames, output_path,
    )
    return str(output_path)
