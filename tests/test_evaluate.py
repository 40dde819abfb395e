"""Evaluation: refusals of bad input, one small end-to-end run, pooling reports."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from tails.config import ConfigError, load_config
from tails.evaluate import CANDIDATE_COLUMNS, REPORT_FILES, _json_safe, check_evaluate_config, evaluate, pool_reports
from tails.frames import parse_frame
from tails.intervals import poisson_interval
from tails.metrics import compute_metrics
from tails.simulate import COMET_COLOUR


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def config(tmp_path):
    cfg = load_config()
    cfg["evaluate"]["output_dir"] = str(tmp_path / "report")
    return cfg


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seeds", "900000", "evaluate.seeds"),
        ("seeds", [900000], "evaluate.seeds"),
        ("seeds", [5, 5], "no frame"),
        ("comets_per_frame", 0, "evaluate.comets_per_frame"),
        ("score_threshold", 1.5, "evaluate.score_threshold"),
        ("match_radius_pix", -1, "evaluate.match_radius_pix"),
        ("seeing", [4.5, 3.6], "evaluate.seeing"),
        ("seeing", 4.0, "evaluate.seeing"),
        ("output_dir", "", "evaluate.output_dir"),
    ],
)
def test_malformed_evaluate_section_is_refused_naming_the_key(config, key, value, message):
    config["evaluate"][key] = value
    with pytest.raises(ConfigError, match=message):
        evaluate(config)


def test_missing_key_and_training_seeds_are_refused(config):
    bad = copy.deepcopy(config)
    del bad["evaluate"]["match_radius_pix"]
    with pytest.raises(ConfigError, match="evaluate.match_radius_pix"):
        check_evaluate_config(bad)
    start = config["train"]["dataset"]["seeds"][0]
    config["evaluate"]["seeds"] = [start + 10, start + 20]  # overlaps train.dataset.seeds
    with pytest.raises(ConfigError, match="train.dataset.seeds"):
        evaluate(config)


def test_an_existing_report_is_never_overwritten(config, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluate(config)
    assert (out / "metrics.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # nothing else was written


# ----------------------------------------------------------------------------- end to end
def test_one_frame_end_to_end_writes_a_complete_report(config, tmp_path):
    pytest.importorskip("tails.simulate")
    from tails.efficientdet import Tails

    config["evaluate"]["seeds"] = [900000, 900001]
    config["evaluate"]["comets_per_frame"] = 3
    config["tails"]["nthreads"] = 1
    # a tiny, untrained model: this checks the plumbing and the report, not trained behaviour
    model = Tails(
        (256, 256, 3), width_coefficient=0.25, depth_coefficient=0.34, bifpn_width=16, bifpn_layers=1, head_depth=1
    )
    metrics = evaluate(config, model=model)

    out = tmp_path / "report"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("counts", "recall", "false_positives", "localisation", "tiles", "curves", "roc", "pr"):
        assert key in on_disk
    c = on_disk["counts"]
    assert (c["frames"], c["frames_failed"], c["comets"]) == (1, 0, 3)
    assert c["tiles"] + c["tiles_skipped"] == 169  # 13 x 13 tiles on a 3080 x 3072 frame
    assert set(on_disk["recall"]["by_magnitude"]) == {"<17", "17-18.5", "18.5-19.5", ">19.5"}
    assert {"per_frame", "per_tile", "total"} <= set(on_disk["false_positives"])
    assert {"rmse_pix", "median_pix"} <= set(on_disk["localisation"])
    assert "| r magnitude |" in (out / "summary.md").read_text()
    for png in ("fnr_fpr_vs_threshold.png", "roc.png", "pr.png", "offsets.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # at threshold 0 every tile's candidate is scored: the detections are the merged tiles
    detections = pd.read_csv(out / "detections.csv")
    assert len(detections) >= 1
    assert pd.read_csv(out / "comets.csv")["in_reference"].dtype == bool
    # each comet and detection carries its frame's seeing, and the report breaks the figures down by it
    assert pd.read_csv(out / "comets.csv")["seeing"].between(1.0, 4.0).all()
    assert detections["seeing"].between(1.0, 4.0).all()
    assert sum(b["frames"] for b in on_disk["by_seeing"].values()) == 1
    # and its 5-sigma limit (header MAGLIM), and each comet how far above it it is in the frame's filter
    comet_rows = pd.read_csv(out / "comets.csv")
    assert comet_rows["maglim"].between(18.0, 23.0).all()
    colour = comet_rows["frame"].map(lambda name: COMET_COLOUR[parse_frame(name).filter])
    assert np.allclose(comet_rows["depth"], comet_rows["maglim"] - comet_rows["mag"] - colour)
    assert sum(b["frames"] for b in on_disk["by_maglim"].values()) == 1
    assert sum(b["n"] for b in on_disk["recall"]["by_depth"].values()) == 3
    # every candidate is in candidates.csv, those vetting dropped too; the kept ones are the detections
    candidates = pd.read_csv(out / "candidates.csv")
    assert candidates.columns.tolist() == list(CANDIDATE_COLUMNS)
    assert candidates["p_tile"].notna().all() and len(candidates) >= len(detections)
    assert on_disk["counts"]["detections_lifted"] >= 0 and "compact coma" in (out / "summary.md").read_text()
    # each detection says what the simulator put where it lies: the true ones lie on a comet
    assert (detections.loc[detections["true"], "source"] == "comet").all()
    assert sum(on_disk["false_positives_by_source"].values()) == on_disk["false_positives"]["total"]
    kept = candidates[candidates["extended"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[["p", "x", "y", "true"]], detections[["p", "x", "y", "true"]])
    # no working files are left beside the report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]

    with pytest.raises(FileExistsError):
        evaluate(config, model=model)


def test_tails_evaluate_refuses_a_malformed_config_in_one_line(tmp_path, capsys):
    import yaml

    from tails.cli import main

    cfg = load_config()
    cfg["evaluate"]["seeds"] = [900010, 900010]
    cfg["evaluate"]["output_dir"] = str(tmp_path / "report")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", f"--config={path}"]) == 2
    err = capsys.readouterr().err
    assert "evaluate.seeds" in err and "no frame" in err
    assert not (tmp_path / "report").exists()


# ----------------------------------------------------------------------------- pooling reports
def _write_fake_report(folder, seeds, frames, false_positives, threshold=0.5, seeing=None):
    """A report as ``tails evaluate`` writes it, of ``frames`` frames with 2 comets each (one
    found, one not) and ``false_positives`` detections near no comet, without simulating."""
    names = [f"ztf_20200101{seed % 1000000:06d}_000600_zr_c01_o_q1" for seed in range(seeds[0], seeds[0] + frames)]
    comets = pd.DataFrame({
        "frame": np.repeat(names, 2), "seed": np.repeat(np.arange(seeds[0], seeds[0] + frames), 2),
        "x": 100.0, "y": 100.0, "mag": np.tile([17.0, 19.5], frames), "coma_arcsec": 10.0, "tail_arcsec": 0.0,
        "snr": 20.0, "snr_matched": 30.0, "snr_extended": 10.0, "in_reference": True,
        "best_p": np.tile([0.9, -np.inf], frames), "offset_pix": np.tile([1.0, np.nan], frames)})
    detections = pd.DataFrame({"frame": names[:1] * (frames + false_positives), "seed": seeds[0],
                               "p": 0.9, "x": 100.0, "y": 100.0,
                               "true": [True] * frames + [False] * false_positives, "nearest_comet_pix": 1.0,
                               "source": ["comet"] * frames + ["asteroid"] * false_positives})
    candidates = detections.assign(p_tile=0.9, p_model=0.9, ext_sigma=3.0, ext_fraction=0.3, ext_width=1.5,
                                   ext_elongation=1.1, ext_snr=30.0, trailed=False, extended=True,
                                   compact=False, kept=True, seeing=2.0)[list(CANDIDATE_COLUMNS)]
    tiles = pd.DataFrame({"frame": np.repeat(names, 3), "row0": 0, "col0": 0, "p": np.tile([0.9, 0.1, 0.6], frames),
                          "positive": np.tile([True, False, False], frames), "partial_coma": False})
    metrics = compute_metrics(comets, detections, tiles, frames, threshold, point_sources_per_frame=5.0)
    metrics.update(model="tails-test", checkpoint=None, score_threshold=threshold, match_radius_pix=10,
                   seeds=list(seeds), comets_per_frame=2, seeing=seeing, detector={"tile_size": 256})
    metrics["counts"].update(frames_requested=frames, frames_failed=0, tiles_skipped=0, tiles_partial_coma=0)
    metrics.update(failed={}, seconds={"simulate": 1.0, "detect": 2.0, "total": 3.0})
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(_json_safe(metrics), allow_nan=False))
    for name, table in (("comets", comets), ("detections", detections), ("candidates", candidates), ("tiles", tiles)):
        table.to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_pooled_reports_give_the_figures_of_one_evaluation_of_all_their_frames(tmp_path):
    a = _write_fake_report(tmp_path / "a", (900100, 900140), 40, false_positives=1)
    b = _write_fake_report(tmp_path / "b", (900140, 900200), 60, false_positives=2)
    pooled = pool_reports([a, b], tmp_path / "pooled")

    out = tmp_path / "pooled"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert json.loads((out / "metrics.json").read_text()) == pooled
    assert pooled["counts"]["frames"] == 100 and pooled["counts"]["comets"] == 200
    assert pooled["counts"]["frames_requested"] == 100 and pooled["seconds"]["total"] == 6.0
    assert pooled["seed_ranges"] == [[900100, 900140], [900140, 900200]] and pooled["seeds"] == [900100, 900200]
    # the same numbers as computed from all the frames' tables at once
    tables = {n: pd.concat([pd.read_csv(a / f"{n}.csv"), pd.read_csv(b / f"{n}.csv")], ignore_index=True)
              for n in ("comets", "detections", "tiles")}
    whole = _json_safe(compute_metrics(tables["comets"], tables["detections"], tables["tiles"], 100, 0.5,
                                       point_sources_per_frame=5.0))
    for key in ("counts", "recall", "false_positives", "localisation", "targets", "ideal"):
        assert {k: v for k, v in pooled[key].items() if k not in (
            "frames_requested", "frames_failed", "tiles_skipped", "tiles_partial_coma", "detections_lifted",
            "true_detections_lifted")} == whole[key]
    assert pooled["counts"]["detections_lifted"] == 0  # the fake candidates' p_model is their p
    assert pooled["false_positives"]["total"] == 3 and pooled["false_positives_by_source"] == {"asteroid": 3}
    assert "| asteroid | 3 |" in (out / "summary.md").read_text()
    assert pooled["false_positives"]["per_frame_interval"] == pytest.approx(poisson_interval(3, 100))
    assert "seeds 900100 to 900139, 900140 to 900199" in (out / "summary.md").read_text()


def test_pooling_refuses_reports_that_cannot_be_pooled(tmp_path):
    a = _write_fake_report(tmp_path / "a", (900100, 900140), 4, false_positives=0)
    b = _write_fake_report(tmp_path / "b", (900140, 900200), 6, false_positives=0, threshold=0.7)
    c = _write_fake_report(tmp_path / "c", (900100, 900140), 4, false_positives=1)  # a's frames again
    with pytest.raises(ValueError, match="differ in score_threshold"):
        pool_reports([a, b], tmp_path / "out")
    with pytest.raises(ValueError, match="both evaluated ztf_"):
        pool_reports([a, c], tmp_path / "out")
    wide = _write_fake_report(tmp_path / "wide", (900200, 900210), 10, false_positives=0, seeing=[3.6, 4.5])
    with pytest.raises(ValueError, match="differ in seeing"):
        pool_reports([a, wide], tmp_path / "out")
    wider = _write_fake_report(tmp_path / "wider", (900210, 900220), 10, false_positives=0, seeing=[3.6, 4.5])
    assert pool_reports([wide, wider], tmp_path / "pooled_wide")["seeing"] == [3.6, 4.5]
    assert 'seeing drawn uniformly in 3.6"-4.5"' in (tmp_path / "pooled_wide" / "summary.md").read_text()
    with pytest.raises(ValueError, match="two reports or more"):
        pool_reports([a], tmp_path / "out")
    with pytest.raises(ValueError, match="cannot replace one of its reports"):
        pool_reports([a, c], a)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no metrics.json"):
        pool_reports([a, tmp_path / "empty"], tmp_path / "out")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.json").write_text("{}")
    d = _write_fake_report(tmp_path / "d", (900200, 900210), 10, false_positives=0)
    with pytest.raises(FileExistsError, match="already holds an evaluation report"):
        pool_reports([a, d], tmp_path / "taken")
    assert not (tmp_path / "out").exists()
    assert pool_reports([a, d], tmp_path / "taken", overwrite=True)["counts"]["frames"] == 14


def test_tails_pool_writes_the_report_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from tails.cli import main

    a = _write_fake_report(tmp_path / "a", (900100, 900140), 4, false_positives=0)
    b = _write_fake_report(tmp_path / "b", (900140, 900200), 6, false_positives=1)
    assert main(["pool", str(a), str(b), f"--output={tmp_path / 'pooled'}"]) == 0
    out = capsys.readouterr().out
    assert "on 10 frame(s)" in out and "false positives 1" in out and "issue 3's targets:" in out
    assert main(["pool", str(a), str(a), f"--output={tmp_path / 'again'}"]) == 2
    assert "both evaluated" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()
