"""The report of an evaluation: its plots, and its tables as a model card has them.

Each function reads the ``metrics.json`` of :func:`tails.evaluate.evaluate` (as
:func:`tails.metrics.compute_metrics` makes it): the plots of issue 3 (the original's
FNR/FPR-versus-threshold plot, the per-tile ROC and PR curves, the histogram of offsets), the
Markdown tables of ``summary.md`` and the one-paragraph summary that ``tails evaluate`` prints.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .intervals import CONFIDENCE
from .metrics import DETECTABLE_SNR, TARGET_MAGNITUDE_BINS

__all__ = [
    "plot_fnr_fpr",
    "plot_roc",
    "plot_pr",
    "plot_offsets",
    "markdown_report",
    "summary_line",
]


def _atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- plots
def _figure(width: float = 6.0, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save_figure(fig: Any, path: Path) -> None:
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_fnr_fpr(metrics: dict[str, Any], path: Path) -> None:
    """The original paper's plot: false negative and false positive rates versus threshold."""
    c, thr = metrics["curves"], metrics["score_threshold"]
    t = np.asarray(c["threshold"], float)
    fig = _figure(10.0, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    floor = 0.5 / max(1, metrics["counts"]["tiles"])
    ax1.plot(t, np.maximum(np.asarray(c["tile_fnr"], float), floor), label="FNR (positive tiles missed)")
    ax1.plot(t, np.maximum(np.asarray(c["tile_fpr"], float), floor), label="FPR (negative tiles called)")
    ax1.set_yscale("log")
    ax1.set_title(f"per tile ({metrics['counts']['tiles']} tiles)")
    ax2.plot(t, np.asarray(c["fnr"], float), label="comets missed (1 - recall)")
    ax2b = ax2.twinx()
    ax2b.plot(t, np.asarray(c["fp_per_frame"], float), color="C3", label="false positives per frame")
    ax2b.set_ylabel("false positives per ccd-quadrant", color="C3")
    ax2.set_ylabel("fraction of comets missed")
    ax2.set_ylim(-0.02, 1.02)
    ax2b.set_ylim(bottom=0)
    ax2.set_title(f"per comet / frame ({metrics['counts']['comets']} comets, {metrics['counts']['frames']} frames)")
    for ax in (ax1, ax2):
        ax.axvline(thr, color="0.5", ls="--", lw=1, label=f"threshold {thr:g}")
        ax.set_xlabel("score threshold")
        ax.set_xlim(0, 1)
    ax1.set_ylabel("rate")
    ax1.legend(fontsize=8)
    lines = ax2.get_legend_handles_labels()
    lines_b = ax2b.get_legend_handles_labels()
    ax2.legend(lines[0] + lines_b[0], lines[1] + lines_b[1], fontsize=8, loc="upper center")
    fig.suptitle(f"{metrics['model']}: error rates versus threshold")
    _save_figure(fig, path)


def plot_roc(metrics: dict[str, Any], path: Path) -> None:
    """Per-tile ROC curve, false positive rate on a log axis."""
    fpr = np.asarray(metrics["roc"]["fpr"], float)
    tpr = np.asarray(metrics["roc"]["tpr"], float)
    fig = _figure()
    ax = fig.subplots()
    floor = 0.5 / max(1, metrics["counts"]["tiles_negative"])
    auc = metrics["tiles"]["roc_auc"]
    ax.step(np.maximum(fpr, floor), tpr, where="post", label=f"AUC = {auc:.4f}" if auc is not None else "AUC n/a")
    if metrics["tiles"]["fpr"] is not None and metrics["tiles"]["tpr"] is not None:
        ax.plot(max(metrics["tiles"]["fpr"], floor), metrics["tiles"]["tpr"], "o", color="C3",
                label=f"threshold {metrics['score_threshold']:g}")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (negative tiles)")
    ax.set_ylabel("true positive rate (tiles with a nucleus)")
    ax.set_title(f"{metrics['model']}: per-tile ROC")
    ax.legend(loc="lower right")
    _save_figure(fig, path)


def plot_pr(metrics: dict[str, Any], path: Path) -> None:
    """Per-tile precision-recall curve."""
    precision = np.asarray(metrics["pr"]["precision"], float)
    recall = np.asarray(metrics["pr"]["recall"], float)
    fig = _figure()
    ax = fig.subplots()
    ap = metrics["tiles"]["average_precision"]
    ax.step(recall, precision, where="post", label=f"AP = {ap:.4f}" if ap is not None else "AP n/a")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall (tiles with a nucleus)")
    ax.set_ylabel("precision")
    ax.set_title(f"{metrics['model']}: per-tile precision-recall")
    ax.legend(loc="lower left")
    _save_figure(fig, path)


def plot_offsets(offsets: np.ndarray, metrics: dict[str, Any], path: Path) -> None:
    """Histogram of the offsets between recalled comets' nuclei and their detections."""
    d = np.asarray(offsets, float)
    d = d[np.isfinite(d)]
    loc = metrics["localisation"]
    fig = _figure()
    ax = fig.subplots()
    radius = metrics["match_radius_pix"]
    ax.hist(d, bins=np.linspace(0, radius, 41), color="C0")
    if loc["n"]:
        ax.axvline(loc["median_pix"], color="C1", ls="--", label=f"median {loc['median_pix']:.2f} px")
        ax.axvline(loc["rmse_pix"], color="C3", ls=":", label=f"RMSE {loc['rmse_pix']:.2f} px")
        ax.legend()
    ax.set_xlabel("offset from the true nucleus (px)")
    ax.set_ylabel("comets")
    ax.set_title(f"{metrics['model']}: localisation ({loc['n']} comets, p > {metrics['score_threshold']:g})")
    _save_figure(fig, path)


# ----------------------------------------------------------------------------- tables
def _pct(v: float | None, sep: str = "") -> str:
    """A fraction as a percentage with one decimal, or n/a."""
    return "n/a" if v is None else f"{100 * v:.1f}{sep}%"


def _num(v: float | None, fmt: str = ".2f") -> str:
    """A number in ``fmt``, or n/a."""
    return "n/a" if v is None else format(v, fmt)


def _range(interval: Sequence[float] | None, fmt: Callable[[float], str]) -> str:
    """An interval as ``low-high``, each bound written by ``fmt``, or n/a."""
    return "n/a" if interval is None else f"{fmt(interval[0])}-{fmt(interval[1])}"


def markdown_report(metrics: dict[str, Any]) -> str:
    """The evaluation tables of a model card (``MODEL.md``), in Markdown, from ``metrics.json``.

    Recall by magnitude, by the issue's target bins (of all comets, of those in the reference,
    and of the detectable and the extended ones), by coma radius and by signal-to-noise; false
    positives per frame and per tile; localisation; the per-tile ROC AUC and average precision;
    recall at equal false positives, the model's and an ideal detector's (:func:`ideal_recall`);
    and issue 3's targets, each judged by the figure's confidence interval (:func:`judge_targets`).
    """
    c, r, fp = metrics["counts"], metrics["recall"], metrics["false_positives"]
    loc, tiles = metrics["localisation"], metrics["tiles"]

    def pct(v: float | None) -> str:
        return _pct(v, sep=" ")

    def pct_range(interval: Sequence[float] | None) -> str:
        return _range(interval, lambda v: f"{100 * v:.1f}") + ("" if interval is None else " %")

    num = _num
    level = f"{100 * metrics.get('confidence', CONFIDENCE):g} %"
    seeds = ", ".join(f"{a} to {b - 1}" for a, b in metrics.get("seed_ranges") or [metrics["seeds"]])
    seeing = metrics.get("seeing")
    seeing = "" if seeing is None else f', seeing drawn uniformly in {seeing[0]:g}"-{seeing[1]:g}"'
    fusion = metrics.get("fusion")
    lift = "by the fusion's score (`tails.fusion`)" if fusion else "for a compact coma (`tails.vet`)"
    scored = "" if not fusion else (
        f" on the score of its fusion (`tails.fusion`, fitted on {fusion.get('frames', '?')} frames, "
        f"0.5 at {fusion.get('fp_per_frame', float('nan')):g} false positives per ccd-quadrant)"
    )
    lines = [
        f"Model `{metrics['model']}`, {c['frames']} simulated frames (seeds {seeds}; {c['frames_failed']} failed"
        f"{seeing}), "
        f"{c['comets']} comets, threshold "
        f"{metrics['score_threshold']:g}{scored}, match radius {metrics['match_radius_pix']:g} px. Intervals are "
        f"two-sided {level} confidence intervals (`tails.intervals`).",
        "",
    ]
    targets = metrics.get("targets") or {}
    if targets:
        lines += [
            "| target (issue 3) | measured | " + level + " interval | target | verdict |",
            "|---|---|---|---|---|",
        ]
        for t in targets.values():
            if t["at_least"]:  # a recall
                value, interval, goal = pct(t["value"]), pct_range(t["interval"]), f">= {100 * t['target']:g} %"
            else:
                value, interval, goal = num(t["value"], ".3f"), _range(t["interval"], lambda v: f"{v:.3f}"), \
                    f"<= {t['target']:g}"
            lines.append(f"| {t['what']} | {value} | {interval} | {goal} | {t['verdict']} |")
        lines.append("")
    lines += [
        f"| recall by | bin | comets | recalled | recall | {level} interval |",
        "|---|---|---|---|---|---|",
        f"| all | | {r['overall']['n']} | {r['overall']['recalled']} | {pct(r['overall']['recall'])} | "
        f"{pct_range(r['overall'].get('interval'))} |",
    ]
    for key, title in (("by_magnitude", "r magnitude"), ("by_magnitude_targets", "r magnitude (targets)"),
                       ("by_magnitude_targets_in_reference", "r magnitude (targets), in the reference"),
                       ("by_magnitude_targets_detectable", "r magnitude (targets), detectable"),
                       ("by_magnitude_targets_extended", "r magnitude (targets), detectable and extended"),
                       ("by_coma_radius_arcsec", "coma radius (arcsec)"), ("by_core_snr", "core S/N"),
                       ("by_matched_snr", "matched-filter S/N"), ("by_extended_snr", "S/N beyond a point source"),
                       ("by_depth", "magnitudes brighter than the frame's 5-sigma limit (MAGLIM)")):
        for label, b in r.get(key, {}).items():
            lines.append(f"| {title} | {label} | {b['n']} | {b['recalled']} | {pct(b['recall'])} | "
                         f"{pct_range(b.get('interval'))} |")
    lines += [
        "",
        "| measure | value |",
        "|---|---|",
        f"| comets where the reference does not reach (empty difference) | {c.get('comets_outside_reference', 0)} |",
        f"| comets a matched filter finds at S/N >= {DETECTABLE_SNR:g} (detectable) | {c.get('comets_detectable', 0)} |",
        f"| of those, with S/N >= {DETECTABLE_SNR:g} beyond a point source (extended) | {c.get('comets_extended', 0)} |",
        f"| detections over threshold | {c['detections']} ({c['true_detections']} true) |",
        f"| of those, over it only {lift}, the model's own score under it | {c.get('detections_lifted', 0)} "
        f"({c.get('true_detections_lifted', 0)} true) |",
        f"| false positives | {fp['total']} |",
        f"| false positives per frame (ccd-quadrant) | {num(fp['per_frame'], '.3f')} |",
        f"| false positives per frame, {level} interval | "
        f"{_range(fp.get('per_frame_interval'), lambda v: f'{v:.3f}')} |",
        f"| false positives per tile | {num(fp['per_tile'], '.2e')} |",
        f"| localisation RMSE (px) | {num(loc['rmse_pix'])} |",
        f"| localisation RMSE, {level} interval (px) | {_range(loc.get('rmse_interval'), lambda v: f'{v:.2f}')} |",
        f"| median offset (px) | {num(loc['median_pix'])} |",
        f"| 90th-percentile offset (px) | {num(loc['p90_pix'])} |",
        f"| tiles of the tessellation: TPR / FPR | {pct(tiles['tpr'])} / {pct(tiles['fpr'])} |",
        f"| tiles of the tessellation: ROC AUC / average precision | {num(tiles['roc_auc'], '.3f')} / "
        f"{num(tiles['average_precision'], '.3f')} |",
        "",
    ]
    for key, title in (("by_seeing", "seeing (arcsec)"), ("by_maglim", "5-sigma limit of the frame (MAGLIM)")):
        frames = metrics.get(key) or {}
        if not frames:
            continue
        lines += [
            f"| {title} | frames | false positives | per frame | {level} interval | comets of r < 19 | "
            f"recalled | {level} interval |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, b in frames.items():
            lines.append(f"| {label} | {b['frames']} | {b['false_positives']} | {num(b['per_frame'], '.3f')} | "
                         f"{_range(b['per_frame_interval'], lambda v: f'{v:.3f}')} | {b['comets_r_lt_19']} | "
                         f"{pct(b['recall_r_lt_19'])} | {pct_range(b['interval'])} |")
        lines.append("")
    sources = metrics.get("false_positives_by_source") or {}
    if sources:
        lines += ["| what the simulator put where a false positive lies (`tails.truth`) | false positives |",
                  "|---|---|"]
        lines += [f"| {label} | {n} |" for label, n in sources.items()]
        lines.append("")
    at_fp = metrics.get("recall_at_fp_per_frame") or {}
    ideal = metrics.get("ideal") or {}
    ideal_at = ideal.get("recall_at_fp_per_frame") or {}
    labels = [label for label, _, _ in TARGET_MAGNITUDE_BINS]
    if at_fp:
        lines += [
            "Recall with the threshold set on these frames to allow at most so many false positives, "
            "and in the target bins, the model's / an ideal detector's"
            + (f" (facing {ideal['point_sources_per_frame']:.2f} point sources per frame)" if ideal_at else "")
            + ":",
            "",
            "| false positives per frame, at most | threshold | false positives | recall | "
            + " | ".join(f"r {label}" for label in labels) + " |",
            "|---|---|---|---|" + "---|" * len(labels),
        ]
        for k, v in at_fp.items():
            mine = v.get("recall_by_magnitude_targets") or {}
            best = (ideal_at.get(k) or {}).get("recall_by_magnitude_targets") or {}
            cells = [f"{pct(mine.get(label))} / {pct(best.get(label))}" for label in labels]
            lines.append(f"| {k} | {num(v['threshold'], '.4g')} | {v['false_positives']} | {pct(v['recall'])} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    at_thr = ideal.get("at_threshold") or {}
    if at_thr:
        by_bin = at_thr["recall_by_magnitude_targets"]
        lines += [
            f"An ideal detector allowed the model's {at_thr['fp_per_frame']:.3f} false positives per frame "
            "would recall " + ", ".join(f"{pct(by_bin[label])} of r {label}" for label in labels) + ".",
            "",
        ]
    return "\n".join(lines)


def summary_line(metrics: dict[str, Any], out: Path) -> str:
    """A report in one paragraph, for the command line: recall, false positives, localisation and
    issue 3's verdicts, and the folder ``out`` that holds it."""
    c, r, fp, loc = metrics["counts"], metrics["recall"], metrics["false_positives"], metrics["localisation"]
    pct, num = _pct, _num
    mags = ", ".join(f"{k}: {pct(v['recall'])} ({v['recalled']}/{v['n']})" for k, v in r["by_magnitude"].items())
    target = r["by_magnitude_targets"]["<19"]["recall"]
    detectable = r.get("by_magnitude_targets_detectable", {}).get("<19", {}).get("recall")
    extended = r.get("by_magnitude_targets_extended", {}).get("<19", {}).get("recall")
    ideal = ((metrics.get("ideal") or {}).get("at_threshold") or {}).get("recall_by_magnitude_targets", {}).get("<19")
    level = f"{100 * metrics.get('confidence', CONFIDENCE):g}%"
    target_interval = _range(r["by_magnitude_targets"]["<19"].get("interval"), lambda v: f"{100 * v:.1f}%")
    fp_interval = _range(fp.get("per_frame_interval"), lambda v: f"{v:.3f}")
    verdicts = "; ".join(f"{t['what']} {t['verdict']}" for t in (metrics.get("targets") or {}).values())
    return (
        f"Tails {metrics['model']} on {c['frames']} frame(s) ({c['frames_failed']} failed), {c['comets']} comets, "
        f"threshold {metrics['score_threshold']:g}: recall {pct(r['overall']['recall'])} [{mags}]; "
        f"r < 19: {pct(target)} ({level}: {target_interval}; of the detectable {pct(detectable)}, of the extended "
        f"{pct(extended)}; an ideal detector with as many false positives: {pct(ideal)}); "
        f"false positives {fp['total']} ({num(fp['per_frame'], '.3f')} per frame, {level}: {fp_interval}; "
        f"{num(fp['per_tile'], '.2e')} per tile); offset RMSE {num(loc['rmse_pix'])} px, "
        f"median {num(loc['median_pix'])} px; issue 3's targets: {verdicts or 'n/a'} -> {out}"
    )
