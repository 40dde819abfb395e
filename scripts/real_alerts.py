"""Score real ZTF alert triplets with a Tails model, beside simulated triplets cut the same way.

No real ZTF frame with a comet is at hand, but 377 real alert packets are
(``../shared/data/ztf_real/alerts``): 110 are known asteroids, moving point sources that a comet
detector must not take for comets, and none is a comet.  Each alert's 63 x 63 triplet is set at
the centre of a 256 x 256 tile of matching sky noise (:mod:`tails.stamps`) and scored by the model.
As a control, the same is done with simulated frames (``tails.simulate``, SWarp as the detector
runs it): 63 x 63 cutouts at each simulated comet, asteroid, variable star and supernova, and at
random places, are embedded and scored the same way, and are also scored in a 256 x 256 tile of
their own frame centred on them, which says what the embedding changes.

This scores tiles only: the second look (``tails.refine``) and vetting (``tails.vet``), which
need the whole frame, are not applied.  Results go to ``OUT``: ``real.csv`` and ``simulated.csv``
(one row per triplet, with the model's score and position, each source's curve of growth in
sci and diff, :func:`tails.stamps.growth`, and its Moffat fit in sci, :func:`tails.stamps.moffat_fit`)
and ``summary.json`` (the fraction scored over the threshold by kind, band and FWHM, and the
asteroids' curves of growth and PSF betas, real against simulated).

Examples
--------
    python scripts/real_alerts.py --out=real_alerts            # bundled model, 16 simulated frames
    python scripts/real_alerts.py --out=ra --sim-seeds 500000 500004 --checkpoint=run/best.weights.h5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ALERTS = REPO.parent / "shared" / "data" / "ztf_real" / "alerts"
#: Seeds of the control frames: used by no training, validation or evaluation set (models/README.md).
DEFAULT_SIM_SEEDS = (500000, 500016)
#: Kinds of the simulator's truth table that are cut out as controls.
SIM_KINDS = ("comet", "asteroid", "variable", "supernova")
#: Random places per control frame, cut out as blank-sky controls.
RANDOM_PER_FRAME = 10
#: FWHM bins (px) of the summary.
FWHM_BINS = (0.0, 2.0, 2.5, 3.0, 4.0, np.inf)
BANDS = {1: "zg", 2: "zr", 3: "zi"}
#: Sources measured for the curve of growth: S/N within 2.5 FWHMs over this, in sci and diff.
GROWTH_MIN_SNR = 20.0
#: Sources whose Moffat fit is summarised: fitted S/N over this (as in tests/test_simulate_calibration.py).
MOFFAT_MIN_SNR = 30.0
#: Fitted-FWHM bins (px) of the Moffat summary.
MOFFAT_FWHM_BINS = (0.5, 2.0, 2.5, 3.0, 4.0, 8.0)
SIM_COLUMNS = ["seed", "kind", "x", "y", "mag", "coma_arcsec", "band", "fwhm", "p_context"]

log = logging.getLogger("real_alerts")


def real_triplets(alerts_dir: Path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Every alert of ``alerts_index.csv`` with its triplet, once per ``candid``.

    The index's rows gain ``kind`` ("known asteroid": ``ssnamenr`` set and ``ssdistnr`` at most
    2", as the folder's README defines them; else "other alert"), ``band`` and ``fwhm`` (px, the
    source's FWHM in the science image, from the packet's ``candidate``).
    """
    from tails.alerts import make_triplet, read_alerts

    index = pd.read_csv(alerts_dir / "alerts_index.csv")
    packets = {}
    for f in index["file"].unique():
        for a in read_alerts(alerts_dir.parent / f):
            packets.setdefault(int(a["candid"]), a)
    index = index[index["candid"].isin(packets)].drop_duplicates("candid").reset_index(drop=True)
    near = index["ssnamenr"].notna() & index["ssdistnr"].between(0, 2)
    index["kind"] = np.where(near, "known asteroid", "other alert")
    index["band"] = index["fid"].map(BANDS)
    index["fwhm"] = [float(packets[c]["candidate"].get("fwhm") or np.nan) for c in index["candid"]]
    return index, [make_triplet(packets[c]) for c in index["candid"]]


def simulated_triplets(model, seeds, workdir: Path, shape=None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Cutouts of simulated frames at their sources and at random places, scored in context too.

    Each frame is simulated with 6 comets (as the evaluation's are), written as IRSA serves it,
    and its reference re-projected with SWarp, as the detector does.  Sources within 140 px of
    the frame's edge are left out, so that their tile in context lies inside the frame.

    Returns
    -------
    table : pandas.DataFrame
        Per cutout: seed, kind, x, y, mag, coma_arcsec, band, fwhm (the frame's seeing in px),
        and ``p_context``, the model's score for a 256 x 256 tile of the frame centred on it.
    triplets : list of ndarray, each (63, 63, 3)
    """
    from tails.efficientdet import predict_tiles
    from tails.image import Troika, cut_tiles, cutout
    from tails.preprocess import preprocess_tiles
    from tails.simulate import FRAME_SHAPE, random_frame_name, simulate_frame, write_frame

    shape = FRAME_SHAPE if shape is None else shape
    rows, triplets = [], []
    for seed in range(*seeds):
        rng = np.random.default_rng(seed)
        sim = simulate_frame(random_frame_name(rng), seed=seed, n_comets=6, shape=shape)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            paths = write_frame(sim, tmp)
            troika = Troika.from_files(paths["sci"], paths["ref"], paths["diff"])
            ref = troika.reproject_ref2sci(how="swarp")
            channels = troika.channels(ref)
        ny, nx = shape
        truth = sim.truth[sim.truth["kind"].isin(SIM_KINDS)]
        truth = truth[truth["x"].between(140, nx - 141) & truth["y"].between(140, ny - 141)]
        blank = pd.DataFrame({"kind": "random", "x": rng.uniform(200, nx - 200, RANDOM_PER_FRAME),
                              "y": rng.uniform(200, ny - 200, RANDOM_PER_FRAME)})
        here = pd.concat([truth, blank], ignore_index=True)
        fwhm = sim.conditions.seeing / float(sim.header_sci["PIXSCALE"])
        corners = np.stack([np.round(here["y"]).astype(int) - 128, np.round(here["x"]).astype(int) - 128], axis=1)
        tiles, valid = preprocess_tiles(cut_tiles(channels, corners, 256), copy=False)
        p_context = np.where(valid, predict_tiles(model, tiles)[:, 0], np.nan)
        for (_, r), p in zip(here.iterrows(), p_context):
            triplets.append(np.dstack([cutout(c, r["x"], r["y"], 63) for c in channels]))
            rows.append({"seed": seed, "kind": r["kind"], "x": r["x"], "y": r["y"], "mag": r.get("mag", np.nan),
                         "coma_arcsec": r.get("coma_arcsec", np.nan), "band": sim.name.split("_")[3],
                         "fwhm": fwhm, "p_context": float(p)})
        log.info("simulated frame %d: %d cutouts", seed, len(here))
    return pd.DataFrame(rows, columns=SIM_COLUMNS), triplets


def score(model, table: pd.DataFrame, triplets, seed: int = 0) -> pd.DataFrame:
    """``table`` with the embedded triplets' ``p``, ``x_tile``, ``y_tile`` and ``offset_px``
    (of the model's position from the tile's centre, where the triplet's source is)."""
    from tails.stamps import score_stamps

    out = score_stamps(model, triplets, seed=seed)
    table = table.assign(p=out[:, 0], x_tile=out[:, 1], y_tile=out[:, 2],
                         offset_px=np.hypot(out[:, 1] - 128, out[:, 2] - 128))
    return table.assign(**_growth_columns(table["fwhm"].to_numpy(float), triplets))


def _growth_columns(fwhm: np.ndarray, triplets) -> dict:
    """:func:`tails.stamps.growth` of each triplet's sci and diff source, where its FWHM is sane
    (1 to 6 px: a few packets lack theirs or give a wild one) and the stamp is 63 x 63, and
    :func:`tails.stamps.moffat_fit` of its sci source (``beta_sci``, ``fwhm_fit_sci``, ``snr_fit_sci``)."""
    from tails.stamps import growth, moffat_fit

    names = [f"{m}_{c}" for c in ("sci", "diff") for m in ("core", "wings", "snr")]
    names += ["beta_sci", "fwhm_fit_sci", "snr_fit_sci"]
    cols = {name: np.full(len(fwhm), np.nan) for name in names}
    for i, (f, t) in enumerate(zip(fwhm, triplets)):
        if t.shape[:2] != (63, 63):
            continue
        cols["beta_sci"][i], cols["fwhm_fit_sci"][i], cols["snr_fit_sci"][i] = moffat_fit(t[..., 0])
        if not 1.0 < f < 6.0:
            continue
        for k, c in ((0, "sci"), (2, "diff")):
            cols[f"core_{c}"][i], cols[f"wings_{c}"][i], cols[f"snr_{c}"][i] = growth(t[..., k], f)
    return cols


def summarise(real: pd.DataFrame, sim: pd.DataFrame, threshold: float) -> dict:
    """The fraction of triplets scored at or over ``threshold``, by kind, band and FWHM.

    ``n`` counts the triplets scored; those that preprocessing rejects (NaN) are left out.
    """

    def binned(df: pd.DataFrame, column: str = "fwhm", bins=FWHM_BINS, name: str = "fwhm_bin") -> pd.DataFrame:
        return df.assign(**{name: pd.cut(df[column], bins).astype(str)})

    def table(df: pd.DataFrame, by: list[str], column: str = "p") -> list[dict]:
        g = binned(df).groupby(by, observed=True)[column]
        t = pd.DataFrame({"n": g.count(), "over_threshold": g.apply(lambda s: float((s.dropna() >= threshold).mean())),
                          "median_p": g.median()}).reset_index()
        return t.round(3).to_dict(orient="records")

    def growth(df: pd.DataFrame) -> list[dict]:
        d = binned(df[(df["snr_sci"] > GROWTH_MIN_SNR) & (df["snr_diff"] > GROWTH_MIN_SNR)])
        g = d.groupby("fwhm_bin", observed=True)
        cols = ["core_sci", "wings_sci", "core_diff", "wings_diff"]
        return pd.concat([g.size().rename("n"), g[cols].median()], axis=1).reset_index().round(3).to_dict(orient="records")

    def psf(df: pd.DataFrame) -> list[dict]:
        d = binned(df[df["snr_fit_sci"] > MOFFAT_MIN_SNR], "fwhm_fit_sci", MOFFAT_FWHM_BINS, "fit_bin")
        g = d[d["fit_bin"] != "nan"].groupby("fit_bin", observed=True)["beta_sci"]
        t = pd.DataFrame({"n": g.size(), "median_beta": g.median(), "q25": g.quantile(0.25), "q75": g.quantile(0.75)})
        return t.reset_index().round(3).to_dict(orient="records")

    return {
        "threshold": threshold,
        "real": {"by_kind": table(real, ["kind"]), "by_kind_band": table(real, ["kind", "band"]),
                 "by_kind_fwhm": table(real, ["kind", "fwhm_bin"])},
        "simulated_embedded": {"by_kind": table(sim, ["kind"]), "by_kind_band": table(sim, ["kind", "band"]),
                               "by_kind_fwhm": table(sim, ["kind", "fwhm_bin"])},
        "simulated_in_context": {"by_kind": table(sim, ["kind"], "p_context"),
                                 "by_kind_fwhm": table(sim, ["kind", "fwhm_bin"], "p_context")},
        "growth_of_asteroids": {
            "real": growth(real[real["kind"] == "known asteroid"]),
            "simulated": growth(sim[sim["kind"] == "asteroid"]),
            "what": "medians of F(1 FWHM)/F(2.5 FWHM) (core) and F(2.5 FWHM)/F(5 FWHM) (wings) of the "
                    f"asteroids of S/N > {GROWTH_MIN_SNR:g} in both sci and diff (tails.stamps.growth)",
        },
        "psf_of_asteroids": {
            "real": psf(real[real["kind"] == "known asteroid"]),
            "simulated": psf(sim[sim["kind"] == "asteroid"]),
            "what": "Moffat beta of the asteroids of fitted S/N > "
                    f"{MOFFAT_MIN_SNR:g} in sci, by fitted FWHM in px (tails.stamps.moffat_fit)",
        },
        "fwhm": "real: the alert source's FWHM in the science image (candidate.fwhm, px); "
                "simulated: the frame's seeing FWHM (px)",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="a new folder for the results")
    ap.add_argument("--alerts", type=Path, default=DEFAULT_ALERTS, help="the real alerts (with alerts_index.csv)")
    ap.add_argument("--sim-seeds", nargs=2, type=int, default=DEFAULT_SIM_SEEDS, metavar=("FIRST", "STOP"),
                    help="seeds of the simulated control frames, FIRST to STOP - 1; equal for none")
    ap.add_argument("--checkpoint", default=None, help="a .weights.h5 file; default: the bundled model")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the embedding's noise")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"--out {args.out} exists and is not empty: name a new folder, so no earlier result is overwritten")
    if not (args.alerts / "alerts_index.csv").is_file():
        ap.error(f"--alerts {args.alerts} holds no alerts_index.csv (see ../shared/data/ztf_real/README.md)")

    from tails.atomic import atomic_path
    from tails.litert import load_detector

    model = load_detector(args.checkpoint)
    table, triplets = real_triplets(args.alerts)
    real = score(model, table, triplets, seed=args.seed)
    log.info("scored %d real alerts", len(real))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        table, triplets = simulated_triplets(model, args.sim_seeds, Path(tmp))
    sim = score(model, table, triplets, seed=args.seed)
    summary = summarise(real, sim, args.threshold)
    for name, df in (("real.csv", real), ("simulated.csv", sim)):
        with atomic_path(args.out / name) as tmp:
            df.to_csv(tmp, index=False)
    with atomic_path(args.out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    for part in ("real", "simulated_embedded", "simulated_in_context"):
        for row in summary[part]["by_kind"]:
            log.info("%s: %s", part, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
