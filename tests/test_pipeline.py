"""The whole chain on frames served over loopback HTTP in IRSA's layout.

* ``scripts/run_tails.py`` end to end: download, SWarp, tiles, model, CSV/npy/png, cleanup.
* Coordinates: a source injected at a known pixel comes back at that pixel and at the WCS's
  RA/Dec.  The model here is a small Keras model that reports the brightest pixel of the
  difference channel, so the check is exact and independent of training.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS
from fitsutil import FRAME_NAME, make_frame, write_irsa_frame
from irsa_server import IrsaServer
from toy_models import peak_model

from tails.config import load_config
from tails.detect import DETECTION_COLUMNS, process_frame

ROOT = Path(__file__).resolve().parent.parent


def _gaussian(shape, x0, y0, flux, sigma=1.5):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


def _frame_with_transient(x0, y0, seed=3, sigma=3.0, n_sources=12):
    """A transient in sci and diff, not in the reference: a comet if wider than the stars (1.5 px)."""
    frame = make_frame(noise=2.0, seed=seed, n_sources=n_sources)
    blob = _gaussian(frame.sci.shape, x0, y0, 5e4, sigma).astype(frame.sci.dtype)
    frame.sci += blob
    frame.diff += blob
    return frame


def _config(url):
    cfg = load_config()
    cfg["irsa"]["url"] = url
    return cfg


def test_source_comes_back_at_its_pixel_and_sky_position(tmp_path):
    x0, y0 = 150.0, 200.0  # inside all four overlapping tiles of the 300 x 280 frame
    frame = _frame_with_transient(x0, y0)
    write_irsa_frame(tmp_path / "irsa", FRAME_NAME, frame=frame)
    with IrsaServer(tmp_path / "irsa") as server:
        result = process_frame(
            FRAME_NAME, model=peak_model(), config=_config(server.url), base_path=tmp_path / "out",
            checkpoint_name="peak",
        )
    det = result.detections
    assert len(det) == 1, det  # seen in four overlapping tiles, reported once
    assert (det.loc[0, "x"], det.loc[0, "y"]) == (x0, y0)
    ra, dec = WCS(frame.header_sci).wcs_pix2world([[x0, y0]], 0)[0]
    assert det.loc[0, "ra"] == pytest.approx(ra, abs=1e-9)
    assert det.loc[0, "dec"] == pytest.approx(dec, abs=1e-9)
    assert det.loc[0, "jd"] == pytest.approx(frame.header_sci["OBSJD"])
    # the thumbnails are centred on it
    cut = result.cutouts[0]["diff"]
    assert cut.shape == (63, 63) and np.unravel_index(np.nanargmax(cut), cut.shape) == (31, 31)
    # the .npy is the tile of the second look: centred on it, moved inside the frame (row0 44, col0 22)
    tile = np.load(result.npy_paths[0])
    assert np.unravel_index(np.argmax(tile[..., 2]), tile.shape[:2]) == (200 - 44, 150 - 22)
    assert result.timings["refine"] > 0


def _sharp_and_fuzzy(tmp_path, x0, y0, model, vet_settings):
    """``process_frame`` on a transient as sharp as the 30 stars (an asteroid) and on one twice as
    wide (a small coma), at (x0, y0), once for each ``tails.vet`` override in ``vet_settings``.

    Returns ``{(kind, key): FrameResult}``, kind ``"sharp"`` or ``"fuzzy"``, key of ``vet_settings``.
    """
    for kind, sigma in (("sharp", 1.5), ("fuzzy", 3.0)):
        write_irsa_frame(tmp_path / kind, FRAME_NAME, frame=_frame_with_transient(x0, y0, sigma=sigma, n_sources=30))
    results = {}
    for kind in ("sharp", "fuzzy"):
        for key, settings in vet_settings.items():
            with IrsaServer(tmp_path / kind) as server:
                cfg = _config(server.url)
                cfg["tails"]["vet"].update(settings)
                results[kind, key] = process_frame(
                    FRAME_NAME, model=model, config=cfg, base_path=tmp_path / f"{kind}-{key}"
                )
    return results


def test_vetting_drops_a_point_like_transient_keeps_a_fuzzy_one_and_can_be_disabled(tmp_path):
    x0, y0 = 150.0, 200.0
    results = _sharp_and_fuzzy(tmp_path, x0, y0, peak_model(), {vet: {"enabled": vet} for vet in (True, False)})
    dropped = results["sharp", True]
    assert len(dropped.detections) == 0 and dropped.npy_paths == []
    assert pd.read_csv(dropped.csv_path).columns.tolist() == DETECTION_COLUMNS  # an empty CSV all the same
    for key in (("sharp", False), ("fuzzy", True), ("fuzzy", False)):
        det = results[key].detections
        assert len(det) == 1 and (det.loc[0, "x"], det.loc[0, "y"]) == (x0, y0), key
    # the candidate vetting dropped is still in the result, with the measures it was dropped for
    cands = dropped.candidates
    assert len(cands) == 1 and not cands.loc[0, "extended"] and (cands.loc[0, "x"], cands.loc[0, "y"]) == (x0, y0)
    assert np.isfinite(cands.loc[0, ["ext_sigma", "ext_fraction"]].astype(float)).all()
    kept = results["fuzzy", True].candidates
    assert kept["extended"].tolist() == [True] and kept.loc[0, "ext_sigma"] > 2
    unvetted = results["sharp", False].candidates
    assert unvetted["extended"].tolist() == [True] and np.isnan(unvetted.loc[0, "ext_sigma"])


def test_a_compact_coma_lifts_a_low_score_over_the_threshold_and_a_point_source_stays_under(tmp_path):
    """tails.vet's point 5, in the detector: the model scores both transients 0.3."""
    x0, y0 = 150.0, 200.0
    results = _sharp_and_fuzzy(tmp_path, x0, y0, peak_model(score=0.3),
                               {odds: {"compact_odds": odds} for odds in (9.0, 1.0)})
    fuzzy = results["fuzzy", 9.0]
    assert len(fuzzy.detections) == 1 and (fuzzy.detections.loc[0, "x"], fuzzy.detections.loc[0, "y"]) == (x0, y0)
    assert fuzzy.detections.loc[0, "p"] == pytest.approx(9 * 0.3 / (0.7 + 9 * 0.3))
    cand = fuzzy.candidates.loc[0]
    assert cand["compact"] and cand["p_model"] == pytest.approx(0.3) and cand["p"] > 0.5
    # without the lift, or as sharp as the stars, it stays under the threshold of 0.5
    for key in (("fuzzy", 1.0), ("sharp", 9.0), ("sharp", 1.0)):
        assert len(results[key].detections) == 0, key
    assert not results["sharp", 9.0].candidates["compact"].any()


def test_without_the_second_look_the_tessellation_tile_is_reported(tmp_path):
    x0, y0 = 150.0, 200.0
    write_irsa_frame(tmp_path / "irsa", FRAME_NAME, frame=_frame_with_transient(x0, y0))
    with IrsaServer(tmp_path / "irsa") as server:
        cfg = _config(server.url)
        cfg["tails"]["refine"]["enabled"] = False
        result = process_frame(FRAME_NAME, model=peak_model(), config=cfg, base_path=tmp_path / "out")
    det = result.detections
    assert len(det) == 1 and (det.loc[0, "x"], det.loc[0, "y"]) == (x0, y0)
    assert result.candidates.loc[0, "p_tile"] == result.candidates.loc[0, "p"]  # no second look
    # the first of the four tiles that hold it, at (0, 0), has the highest score (all are 1)
    tile = np.load(result.npy_paths[0])
    assert np.unravel_index(np.argmax(tile[..., 2]), tile.shape[:2]) == (200, 150)


def test_run_tails_end_to_end_on_a_served_frame(tmp_path, fresh_checkpoint):
    frame = _frame_with_transient(100.0, 60.0, seed=5)
    write_irsa_frame(tmp_path / "irsa", FRAME_NAME, frame=frame)
    cfg_path = tmp_path / "config.yaml"
    ckpt = fresh_checkpoint  # untrained: this test is about the plumbing, not the scores
    out = tmp_path / "out"
    with IrsaServer(tmp_path / "irsa") as server:
        import yaml

        cfg = _config(server.url)
        cfg["tails"]["vet"]["enabled"] = False  # the untrained model's candidates are anywhere, not on a coma
        cfg_path.write_text(yaml.safe_dump(cfg))
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_tails.py"), f"--config={cfg_path}",
             f"--checkpoint={ckpt}", "--score_threshold=0", "--cleanup=all",
             f"--single_image={FRAME_NAME}", f"--output_base_path={out}"],
            capture_output=True, text=True, timeout=600,
        )
    assert r.returncode == 0, r.stderr
    assert "1/1 frame(s) done, 0 failed" in r.stdout
    run_dir = out / "runs" / "20191014"
    df = pd.read_csv(run_dir / f"{FRAME_NAME}.csv")
    assert list(df.columns) == DETECTION_COLUMNS
    assert len(df) >= 1 and (df["tails_v"] == "fresh").all() and df["ni"].tolist() == list(range(len(df)))
    for ni in df["ni"]:
        tile = np.load(run_dir / f"{FRAME_NAME}_{ni}.npy")
        assert tile.shape == (256, 256, 3) and np.isfinite(tile).all()
        assert (run_dir / f"{FRAME_NAME}_{ni}.png").stat().st_size > 5000
    # --cleanup=all removed the downloads, and nothing temporary is left anywhere
    assert not [p for p in (out / "data").rglob("*") if p.is_file()]
    assert not [p for p in out.rglob(".*")]


def test_a_missing_reference_stops_the_frame_with_a_clear_error(tmp_path, fresh_checkpoint):
    frame = _frame_with_transient(100.0, 60.0)
    paths, _ = write_irsa_frame(tmp_path / "irsa", FRAME_NAME, frame=frame)
    paths["ref"].unlink()
    cfg_path = tmp_path / "config.yaml"
    import yaml

    with IrsaServer(tmp_path / "irsa") as server:
        cfg = _config(server.url)
        cfg["tails"]["checkpoint"] = str(fresh_checkpoint)  # no --checkpoint: the config's is used
        cfg_path.write_text(yaml.safe_dump(cfg))
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_tails.py"), f"--config={cfg_path}",
             f"--single_image={FRAME_NAME}", f"--output_base_path={tmp_path / 'out'}"],
            capture_output=True, text=True, timeout=600,
        )
    assert r.returncode == 2
    assert "no reference image at" in r.stderr and "field 000570 c05 q3 zr" in r.stderr
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").rglob("*.csv"))


def test_a_night_from_kowalski_skips_bad_frames_and_sums_up(tmp_path, fresh_checkpoint):
    """--date --twilight: ZTF_ops -> 64 frames per exposure; frames IRSA lacks are logged and
    skipped, the rest processed, and the run ends with a summary."""
    from kowalski_server import KowalskiServer, ztf_ops_document

    twilight = "ztf_20191014495961_000570_zr"
    other = "ztf_20191014200000_000571_zg"
    served = [f"{twilight}_c05_o_q3", f"{twilight}_c05_o_q4"]
    for i, name in enumerate(served):
        write_irsa_frame(tmp_path / "irsa", name, frame=_frame_with_transient(100.0, 60.0, seed=10 + i))
    docs = [ztf_ops_document(twilight, 2458770.995961), ztf_ops_document(other, 2458770.7, qcomment="MSIP")]
    import yaml

    with IrsaServer(tmp_path / "irsa") as irsa, KowalskiServer(docs) as kowalski:
        cfg = _config(irsa.url)
        cfg["kowalski"] = kowalski.config_section()
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_tails.py"), f"--config={cfg_path}",
             f"--checkpoint={fresh_checkpoint}", "--date=20191014", "--twilight", "--nthreads=2",
             f"--output_base_path={tmp_path / 'out'}"],
            capture_output=True, text=True, timeout=900,
        )
        query = kowalski.queries[-1]
    assert r.returncode == 0, r.stderr
    assert "2/64 frame(s) done, 62 failed" in r.stdout
    assert query["query"]["filter"]["qcomment"] == {"$regex": "Twilight"}
    csvs = sorted(p.name for p in (tmp_path / "out" / "runs" / "20191014").glob("*.csv"))
    assert csvs == [f"{n}.csv" for n in served]
    assert "no science image at" in r.stderr  # the skipped frames are named with their reason


def test_a_fusion_scores_the_measured_candidates_in_place_of_the_rules(tmp_path):
    """tails.fusion in the detector: here one tree, on the width across (``ext_width``)."""
    from tails.fusion import Fusion

    tree = {"feature": np.array([3, -1, -1]), "threshold": np.array([1.2, 0.0, 0.0]), "left": np.array([1, 0, 0]),
            "right": np.array([2, 0, 0]), "missing_left": np.array([True, False, False]),
            "value": np.array([0.0, -4.0, 4.0])}
    fusion = Fusion(baseline=0.0, offset=1.0, min_model_score=0.02, trees=[tree])
    x0, y0 = 150.0, 200.0
    results = {}
    for kind, sigma in (("sharp", 1.5), ("fuzzy", 3.0)):
        write_irsa_frame(tmp_path / kind, FRAME_NAME, frame=_frame_with_transient(x0, y0, sigma=sigma, n_sources=30))
        with IrsaServer(tmp_path / kind) as server:
            # compact_odds 1: the rules would keep neither at the model's 0.3
            cfg = _config(server.url)
            cfg["tails"]["vet"]["compact_odds"] = 1.0
            results[kind] = process_frame(FRAME_NAME, model=peak_model(score=0.3), config=cfg,
                                          base_path=tmp_path / f"out-{kind}", fusion=fusion)
    fuzzy, sharp = results["fuzzy"], results["sharp"]
    assert len(fuzzy.detections) == 1 and (fuzzy.detections.loc[0, "x"], fuzzy.detections.loc[0, "y"]) == (x0, y0)
    assert fuzzy.detections.loc[0, "p"] == pytest.approx(1 / (1 + np.exp(-3.0)))  # 4 - the offset of 1
    cand = fuzzy.candidates.loc[0]
    assert cand["kept"] and cand["p_model"] == pytest.approx(0.3) and cand["ext_width"] > 1.2
    assert len(sharp.detections) == 0
    assert sharp.candidates.loc[0, "p"] == pytest.approx(1 / (1 + np.exp(5.0)))
