#!/usr/bin/env python
"""The fusion and vetting's rules side by side, on the same evaluated candidates.

    python scripts/compare_scores.py REPORT... [--fusion=PATH] [--config=CONFIG.yaml]
        [--threshold=0.5] [--fp=0.01,0.02,0.05,0.1]

``tails evaluate`` keeps every candidate the second look left, with vetting's measures, in its
report's ``candidates.csv``, whichever way its detector scored them.  This scores them again the
two ways the detector can (:func:`tails.detect.detector_scores`): by the fusion (``--fusion``,
default the one the config's ``tails.vet.fusion`` resolves to for the bundled model), and by
vetting's rules (``tails.vet`` of the config).  It prints, as markdown,

1. recall by magnitude, of r < 19 (with its 95 % interval), false positives per ccd-quadrant
   (with theirs) and localisation RMSE at ``--threshold``;
2. the comets each finds there that the other does not, by magnitude;
3. the recall of r < 19 with each score's threshold set on these frames for at most ``--fp``
   false positives per ccd-quadrant (:func:`tails.metrics.recall_at_false_positives`);
4. where the reports record it (``tails evaluate`` since 2026-12-07), the recall by how many
   magnitudes the comets are above their frame's 5-sigma limit (:data:`tails.metrics.DEPTH_BINS`),
   of the comets that have it.

A comet is found when a candidate over the threshold lies within the reports'
``match_radius_pix`` of its nucleus, as ``tails evaluate`` counts it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tails.config import ConfigError, load_config  # noqa: E402
from tails.detect import detector_scores  # noqa: E402
from tails.fusion import fusion_from_config, load_fusion, read_evaluations, reports_model  # noqa: E402
from tails.intervals import poisson_interval  # noqa: E402
from tails.metrics import (  # noqa: E402
    DEPTH_BINS,
    TARGET_MAGNITUDE_BINS,
    binned_recall,
    localisation_stats,
    match_detections,
    recall_at_false_positives,
)
from tails.vet import check_vet_config  # noqa: E402

#: Magnitude bins of the tables, (label, low, high) as :func:`tails.metrics.binned_recall` takes
#: them (r; issue 3's targets split at 19 and 20).
BINS = (("< 16", -np.inf, 16.0), ("16-17", 16.0, 17.0), ("17-18", 17.0, 18.0), ("18-19", 18.0, 19.0),
        ("19-20", 19.0, 20.0))


def recall_cells(values: np.ndarray, hit: np.ndarray, bins, counts: bool = False) -> str:
    """The recall in each bin as markdown cells ("-" for an empty bin), with the comets if ``counts``."""
    return " | ".join("-" if b["recall"] is None else f"{b['recall'] * 100:.1f} %" + (f" ({b['n']})" if counts else "")
                      for b in binned_recall(values, hit, bins).values())


def read_reports(reports: list[str], fusion) -> tuple[pd.DataFrame, pd.DataFrame, int, float]:
    """Candidates and comets of the reports (frames named ``REPORT/frame``), frames and match radius."""
    candidates, headers = read_evaluations(reports)
    check_model(headers, fusion)
    comets = pd.concat(
        [pd.read_csv(Path(r) / "comets.csv").assign(frame=lambda d, r=r: Path(r).name + "/" + d["frame"].astype(str))
         for r in reports],
        ignore_index=True,
    )
    radii = {float(h.get("match_radius_pix", 10.0)) for h in headers}
    if len(radii) > 1:
        raise ValueError(f"the reports match comets within different radii ({sorted(radii)}); compare like with like")
    return candidates, comets, sum(int(h["counts"]["frames"]) for h in headers), radii.pop()


def check_model(headers: list[dict], fusion) -> None:
    """Refuse reports of several models, or of another model than the fusion's."""
    model = reports_model(headers)
    fitted_for = fusion.meta.get("model")
    if fitted_for is not None and model != fitted_for:
        raise ValueError(f"the fusion weighs the scores of {fitted_for}, the reports are of {model}: "
                         "give the fusion of that model (--fusion=PATH)")


def scored(candidates: pd.DataFrame, vet: dict, fusion) -> np.ndarray:
    """Each candidate's detector score (0 where the detector would not keep it), frame by frame."""
    out = np.zeros(len(candidates))
    for _, g in candidates.groupby("frame", sort=False):
        table, _ = detector_scores(g.assign(p=g["p_model"]), vet, fusion, g["seeing"].iloc[0])
        out[g.index] = np.where(table["kept"], table["p"], 0.0)
    return out


def matched(candidates: pd.DataFrame, comets: pd.DataFrame, score: np.ndarray, radius: float):
    """Per comet its best score and offset to the nearest candidate; per candidate whether it is on a comet."""
    best = np.full(len(comets), -np.inf)
    offset = np.full(len(comets), np.nan)
    true = np.zeros(len(candidates), bool)
    nuclei = {f: g.index.to_numpy() for f, g in comets.groupby("frame", sort=False)}
    for f, g in candidates.groupby("frame", sort=False):
        j = nuclei.get(f, np.zeros(0, int))
        m = match_detections(g[["x", "y"]].to_numpy(float), score[g.index], comets.loc[j, ["x", "y"]].to_numpy(float), radius)
        best[j], offset[j] = m.comet_best_p, m.comet_offset
        true[g.index] = m.detection_true
    return best, offset, true


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The fusion and vetting's rules on the same evaluated candidates.")
    parser.add_argument("reports", nargs="+", help="tails evaluate report folders (of one model)")
    parser.add_argument("--fusion", help="fusion file (default: the config's tails.vet.fusion for the bundled model)")
    parser.add_argument("--config", help="configuration whose tails.vet section the rules follow (default: the defaults)")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold (default 0.5)")
    parser.add_argument("--fp", default="0.01,0.02,0.05,0.1", help="false positives per ccd-quadrant to compare at")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        try:
            budgets = [float(v) for v in args.fp.split(",")]
        except ValueError:
            raise ValueError(f"--fp takes false positives per ccd-quadrant separated by commas, not {args.fp!r}") from None
        if not 0 <= args.threshold <= 1 or not all(b > 0 for b in budgets):
            raise ValueError("--threshold must lie in [0, 1] and each --fp be positive")
        fusion = load_fusion(args.fusion) if args.fusion else fusion_from_config(cfg)
        if fusion is None:
            raise ValueError("no fusion to compare: give --fusion=PATH")
        candidates, comets, n_frames, radius = read_reports(args.reports, fusion)
    except (ConfigError, ValueError, OSError) as err:
        print(f"compare_scores: {err}", file=sys.stderr)
        return 2
    vet = check_vet_config(cfg["tails"]["vet"])
    mag = comets["mag"].to_numpy(float)
    t = args.threshold

    found, rows = {}, []
    for name, f in (("rules", None), ("fusion", fusion)):
        score = scored(candidates, vet, f)
        best, offset, true = matched(candidates, comets, score, radius)
        hit = best > t
        found[name] = hit
        r19, = binned_recall(mag, hit, TARGET_MAGNITUDE_BINS[:1]).values()  # "<19"
        lo, hi = r19["interval"] or (float("nan"), float("nan"))
        fp = int((score[~true] > t).sum())
        flo, fhi = poisson_interval(fp, n_frames)
        rmse = localisation_stats(offset[hit])["rmse_pix"]
        at = recall_at_false_positives(best, score, true, n_frames, budgets, magnitudes=mag)
        rows.append((name, recall_cells(mag, hit, BINS),
                     f"{(r19['recall'] or 0) * 100:.1f} % ({lo * 100:.1f}-{hi * 100:.1f})",
                     f"{fp / n_frames:.3f} ({fp}; {flo:.3f}-{fhi:.3f})",
                     "-" if rmse is None else f"{rmse:.2f} px",
                     " | ".join(f"{at[f'{b:g}']['recall_by_magnitude_targets']['<19'] * 100:.1f} %" for b in budgets)))

    labels = [label for label, _, _ in BINS]
    print(f"{len(args.reports)} report(s), {n_frames} frames, {len(comets)} comets ({int((mag < 19).sum())} of r < 19); "
          f"fusion: {json.dumps(fusion.meta.get('model'))}, fitted on {fusion.meta.get('frames')} frames\n")
    print(f"| threshold {t:g} | " + " | ".join(f"r {lab}" for lab in labels)
          + " | r < 19 | false positives per ccd-quadrant | RMSE |")
    print("|---" * (len(labels) + 4) + "|")
    for name, by_bin, r19, fp, rmse, _ in rows:
        print(f"| {name} | {by_bin} | {r19} | {fp} | {rmse} |")
    print("\n| comets found at the threshold by | " + " | ".join(f"r {lab}" for lab in labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for a, b, label in (("rules", "fusion", "the rules alone"), ("fusion", "rules", "the fusion alone"), (None, None, "both")):
        if a is None:
            sel = found["rules"] & found["fusion"]
        else:
            sel = found[a] & ~found[b]
        print(f"| {label} | " + " | ".join(str(b["recalled"]) for b in binned_recall(mag, sel, BINS).values()) + " |")
    print("\n| recall of r < 19 at most ... false positives per ccd-quadrant | "
          + " | ".join(f"{b:g}" for b in budgets) + " |")
    print("|---" * (len(budgets) + 1) + "|")
    for name, *_, at in rows:
        print(f"| {name} | {at} |")
    if "depth" in comets and comets["depth"].notna().any():
        depth = comets["depth"].to_numpy(float)
        known = np.isfinite(depth)
        print(f"\n| recall by magnitudes above the frame's limit ({int(known.sum())} comets) | "
              + " | ".join(label for label, _, _ in DEPTH_BINS) + " |")
        print("|---" * (len(DEPTH_BINS) + 1) + "|")
        for name, hit in found.items():
            print(f"| {name} | {recall_cells(depth[known], hit[known], DEPTH_BINS, counts=True)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
