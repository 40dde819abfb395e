"""The metrics of an evaluation on hand-made tables, and how its report shows them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tails.intervals import binomial_interval, poisson_interval
from tails.metrics import (
    COMA_BINS,
    DEPTH_BINS,
    DETECTABLE_SNR,
    MAGLIM_BINS,
    MAGNITUDE_BINS,
    SEEING_BINS,
    TARGET_MAGNITUDE_BINS,
    binned_recall,
    compute_metrics,
    count_false_positives,
    false_positives_by_source,
    ideal_recall,
    judge_targets,
    lifted_counts,
    localisation_stats,
    match_detections,
    pr_curve,
    recall_at_false_positives,
    roc_curve,
    threshold_sweep,
)
from tails.report import markdown_report


def test_detections_lifted_by_a_compact_coma_are_counted():
    candidates = pd.DataFrame({
        "p_model": [0.9, 0.1, 0.1, 0.3, 0.05],
        "p": [0.9, 0.6, 0.6, 0.3, 0.5],  # the last lifted to the threshold, not over it
        "extended": [True, True, True, True, True],
        "true": [True, True, False, True, True],
    })
    assert lifted_counts(candidates, 0.5) == {"detections_lifted": 2, "true_detections_lifted": 1}
    assert lifted_counts(candidates.assign(extended=False), 0.5)["detections_lifted"] == 0  # vetted out
    assert lifted_counts(candidates, 0.0)["detections_lifted"] == 0  # all over the threshold anyway
    # reports made before the compact test have no p_model
    assert lifted_counts(candidates.drop(columns="p_model"), 0.5) == {"detections_lifted": 0,
                                                                      "true_detections_lifted": 0}


# ----------------------------------------------------------------------------- matching
def test_detections_match_the_nearest_nucleus_within_the_radius():
    nuclei = np.array([[100.0, 100.0], [500.0, 500.0], [900.0, 50.0]])
    dets = np.array([[103.0, 104.0], [100.5, 100.0], [520.0, 500.0], [2000.0, 10.0]])
    p = np.array([0.9, 0.6, 0.8, 0.7])
    m = match_detections(dets, p, nuclei, radius=10.0)
    # comet 0: two detections within 10 px; the nearest is matched, the best score remembered
    assert m.comet_detection.tolist() == [1, -1, -1]
    assert m.comet_offset[0] == pytest.approx(0.5)
    assert np.isnan(m.comet_offset[1]) and np.isnan(m.comet_offset[2])
    assert m.comet_best_p[0] == pytest.approx(0.9)
    assert m.comet_best_p[1] == -np.inf
    # the detection 20 px from comet 1 and the one far away are false positives
    assert m.detection_true.tolist() == [True, True, False, False]
    assert m.detection_comet[:3].tolist() == [0, 0, 1]
    assert m.detection_distance[2] == pytest.approx(20.0)


def test_radius_is_inclusive_and_empty_inputs_are_fine():
    m = match_detections([[10.0, 0.0]], [0.5], [[0.0, 0.0]], radius=10.0)
    assert m.detection_true.tolist() == [True]
    none = match_detections(np.zeros((0, 2)), np.zeros(0), [[1.0, 2.0]], radius=5)
    assert none.comet_detection.tolist() == [-1] and len(none.detection_true) == 0
    no_comets = match_detections([[1.0, 2.0]], [0.3], np.zeros((0, 2)), radius=5)
    assert no_comets.detection_true.tolist() == [False]
    assert no_comets.detection_comet.tolist() == [-1]
    with pytest.raises(ValueError, match="scores"):
        match_detections([[1.0, 2.0]], [0.3, 0.4], [[0.0, 0.0]], radius=5)


# ----------------------------------------------------------------------------- recall and counts
def test_recall_by_magnitude_bins_uses_half_open_bins():
    mags = np.array([16.0, 17.0, 18.4, 18.5, 19.0, 19.5, 20.2, np.nan])
    recalled = np.array([True, True, False, True, True, False, False, True])
    r = binned_recall(mags, recalled, MAGNITUDE_BINS)
    assert list(r) == ["<17", "17-18.5", "18.5-19.5", ">19.5"]
    assert (r["<17"]["n"], r["<17"]["recalled"], r["<17"]["recall"]) == (1, 1, 1.0)
    assert (r["17-18.5"]["n"], r["17-18.5"]["recalled"]) == (2, 1)
    assert r["17-18.5"]["recall"] == pytest.approx(0.5)
    assert (r["18.5-19.5"]["n"], r["18.5-19.5"]["recalled"]) == (2, 2)
    assert (r[">19.5"]["n"], r[">19.5"]["recalled"], r[">19.5"]["recall"]) == (2, 0, 0.0)
    assert r["<17"]["low"] is None and r[">19.5"]["high"] is None  # JSON has no infinity


def test_empty_bin_has_no_recall():
    r = binned_recall(np.array([3.0, 4.0]), np.array([True, False]), COMA_BINS)
    assert r["<5"]["recall"] == pytest.approx(0.5)
    assert r[">20"] == {"low": 20.0, "high": None, "n": 0, "recalled": 0, "recall": None, "interval": None}
    assert r["<5"]["interval"] == pytest.approx(binomial_interval(1, 2))


def test_false_positives_are_counted_per_frame_and_per_tile():
    p = np.array([0.95, 0.7, 0.4, 0.99, 0.51])
    true = np.array([True, False, False, False, True])
    fp = count_false_positives(p, true, threshold=0.5, n_frames=2, n_tiles=338)
    assert fp["total"] == 2  # 0.7 and 0.99; 0.4 is below the threshold
    assert fp["per_frame"] == pytest.approx(1.0)
    assert fp["per_tile"] == pytest.approx(2 / 338)
    assert fp["per_frame_interval"] == pytest.approx(poisson_interval(2, 2))
    assert fp["per_tile_interval"] == pytest.approx(poisson_interval(2, 338))
    assert count_false_positives(p, true, 0.5, 0, 0)["per_frame"] is None
    assert count_false_positives(p, true, 0.5, 0, 0)["per_frame_interval"] is None


def test_localisation_rmse_and_median():
    s = localisation_stats(np.array([3.0, 4.0, np.nan, 0.0]))
    assert s["n"] == 3
    assert s["rmse_pix"] == pytest.approx(math.sqrt(25 / 3))
    assert s["median_pix"] == pytest.approx(3.0)
    assert s["max_pix"] == pytest.approx(4.0)
    low, high = s["rmse_interval"]
    assert 0 <= low <= s["rmse_pix"] <= high <= 4.0
    assert localisation_stats(np.array([]))["rmse_pix"] is None
    assert localisation_stats(np.array([]))["rmse_interval"] is None


# ----------------------------------------------------------------------------- curves
def test_roc_and_pr_curves_on_a_hand_made_ranking():
    labels = np.array([1, 0, 1, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.3])
    fpr, tpr, thr = roc_curve(labels, scores)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf and thr[-1] == pytest.approx(0.3)  # ties form one point
    precision, recall, _ = pr_curve(labels, scores)
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.4])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1])


def test_threshold_sweep_counts_strictly_above_the_threshold():
    sweep = threshold_sweep(
        thresholds=np.array([0.0, 0.5, 0.9]),
        comet_best_p=np.array([0.95, 0.6, -np.inf]),
        detection_p=np.array([0.95, 0.6, 0.7, 0.2]),
        detection_true=np.array([True, True, False, False]),
        tile_p=np.array([0.95, 0.6, 0.7, 0.2]),
        tile_positive=np.array([True, True, False, False]),
        n_frames=2,
        n_tiles=4,
    )
    np.testing.assert_allclose(sweep["recall"], [2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(sweep["fp_per_frame"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(sweep["tile_fnr"], [0.0, 0.0, 0.5])
    np.testing.assert_allclose(sweep["tile_fpr"], [1.0, 0.5, 0.0])


def test_recall_at_false_positives_sets_the_threshold_at_the_next_false_positive():
    # 2 frames; false positives score 0.9, 0.7, 0.7, 0.2; comets are best seen at 0.95, 0.8, 0.6, never
    at = recall_at_false_positives(
        comet_best_p=np.array([0.95, 0.8, 0.6, -np.inf]),
        detection_p=np.array([0.95, 0.9, 0.8, 0.7, 0.7, 0.6, 0.2]),
        detection_true=np.array([True, False, True, False, False, True, False]),
        n_frames=2,
        budgets=(2.0, 1.0, 0.5, 0.25, 0.0),
    )
    assert list(at) == ["2", "1", "0.5", "0.25", "0"]
    assert at["2"] == {"fp_per_frame": 2.0, "threshold": 0.0, "false_positives": 4, "recall": 0.75}
    # 2 allowed: above the third false positive, 0.7; the tie at 0.7 leaves only 1
    assert at["1"]["threshold"] == 0.7 and at["1"]["false_positives"] == 1 and at["1"]["recall"] == 0.5
    assert at["0.5"]["threshold"] == 0.7 and at["0.5"]["recall"] == 0.5
    assert at["0.25"]["threshold"] == 0.9 and at["0.25"]["false_positives"] == 0 and at["0.25"]["recall"] == 0.25
    assert at["0"] == at["0.25"] | {"fp_per_frame": 0.0}
    assert recall_at_false_positives(np.array([0.9]), np.array([0.9]), np.array([True]), n_frames=0) == {}


def test_compute_metrics_gives_the_headline_numbers():
    comets = pd.DataFrame(
        {
            "mag": [16.5, 18.0, 20.0],
            "coma_arcsec": [12.0, 4.0, 30.0],
            "best_p": [0.99, 0.8, 0.3],
            "offset_pix": [1.0, 3.0, np.nan],
        }
    )
    detections = pd.DataFrame({"p": [0.99, 0.8, 0.3, 0.9, 0.1], "true": [True, True, True, False, False]})
    tiles = pd.DataFrame({"p": [0.99, 0.8, 0.3, 0.9, 0.1, 0.05], "positive": [1, 1, 1, 0, 0, 0]})
    m = compute_metrics(comets, detections, tiles, n_frames=1, score_threshold=0.5)
    assert m["recall"]["overall"] == {"n": 3, "recalled": 2, "recall": pytest.approx(2 / 3),
                                      "interval": pytest.approx(binomial_interval(2, 3))}
    assert m["recall"]["by_magnitude"][">19.5"]["recall"] == 0.0
    assert m["recall"]["by_coma_radius_arcsec"]["<5"]["recall"] == 1.0
    assert m["false_positives"]["total"] == 1 and m["false_positives"]["per_tile"] == pytest.approx(1 / 6)
    assert m["localisation"]["rmse_pix"] == pytest.approx(math.sqrt(5))
    assert m["localisation"]["median_pix"] == pytest.approx(2.0)
    assert m["tiles"]["tpr"] == pytest.approx(2 / 3) and m["tiles"]["fpr"] == pytest.approx(1 / 3)
    assert 0 < m["tiles"]["roc_auc"] <= 1
    assert m["counts"]["tiles_positive"] == 3


def test_recall_in_the_reference_leaves_out_the_comets_it_does_not_reach():
    comets = pd.DataFrame({"mag": [16.5, 18.0, 18.5, 19.5], "coma_arcsec": [12.0, 4.0, 8.0, 30.0],
                           "best_p": [0.99, 0.8, -np.inf, 0.3], "offset_pix": [1.0, 3.0, np.nan, np.nan],
                           "in_reference": [True, True, False, True]})
    detections = pd.DataFrame({"p": [0.99, 0.8], "true": [True, True]})
    tiles = pd.DataFrame({"p": [0.99, 0.8, 0.1], "positive": [1, 1, 0]})
    m = compute_metrics(comets, detections, tiles, n_frames=1, score_threshold=0.5)
    assert m["recall"]["by_magnitude_targets"]["<19"]["recall"] == pytest.approx(2 / 3)
    assert m["recall"]["by_magnitude_targets_in_reference"]["<19"] == {
        "low": None, "high": 19.0, "n": 2, "recalled": 2, "recall": 1.0,
        "interval": (pytest.approx(0.025**0.5), 1.0)}
    assert m["counts"]["comets_outside_reference"] == 1
    text = markdown_report({**m, "model": "t", "seeds": [1, 2], "score_threshold": 0.5, "match_radius_pix": 10,
                            "counts": {**m["counts"], "frames_failed": 0}})
    assert "| r magnitude (targets), in the reference | <19 | 2 | 2 | 100.0 % |" in text
    assert "| comets where the reference does not reach (empty difference) | 1 |" in text


def test_recall_of_the_detectable_and_extended_comets_leaves_out_what_an_ideal_detector_cannot_see():
    comets = pd.DataFrame({"mag": [16.5, 18.0, 18.5, 19.5], "coma_arcsec": [12.0, 4.0, 50.0, 30.0],
                           "best_p": [0.99, 0.8, 0.2, -np.inf], "offset_pix": [1.0, 3.0, np.nan, np.nan],
                           "snr": [90.0, 20.0, 1.5, 2.0], "snr_matched": [80.0, 25.0, 3.0, DETECTABLE_SNR],
                           "snr_extended": [30.0, 2.0, 2.5, 4.0]})
    detections = pd.DataFrame({"p": [0.99, 0.8], "true": [True, True]})
    tiles = pd.DataFrame({"p": [0.99, 0.8, 0.1], "positive": [1, 1, 0]})
    m = compute_metrics(comets, detections, tiles, n_frames=1, score_threshold=0.5)
    assert m["recall"]["by_magnitude_targets"]["<19"]["recall"] == pytest.approx(2 / 3)
    assert m["recall"]["by_magnitude_targets_detectable"]["<19"]["n"] == 2
    assert m["recall"]["by_magnitude_targets_detectable"]["<19"]["recall"] == 1.0
    assert m["recall"]["by_magnitude_targets_detectable"]["19-20"] == {
        "low": 19.0, "high": 20.0, "n": 1, "recalled": 0, "recall": 0.0, "interval": (0.0, pytest.approx(0.975))}
    assert m["recall"]["by_matched_snr"]["<3"]["n"] == 0 and m["recall"]["by_matched_snr"]["3-5"]["n"] == 1
    assert m["recall"]["by_extended_snr"]["<3"] == {"low": None, "high": 3.0, "n": 2, "recalled": 1, "recall": 0.5,
                                                    "interval": pytest.approx((0.0126, 0.9874), abs=1e-4)}
    # extended: detectable, and 5 sigma beyond a point source; the second comet is point-like
    assert m["recall"]["by_magnitude_targets_extended"]["<19"] == {
        "low": None, "high": 19.0, "n": 1, "recalled": 1, "recall": 1.0, "interval": (pytest.approx(0.025), 1.0)}
    assert m["recall"]["by_magnitude_targets_extended"]["19-20"]["n"] == 0
    assert (m["counts"]["comets_detectable"], m["counts"]["comets_extended"]) == (3, 1)
    text = markdown_report({**m, "model": "t", "seeds": [1, 2], "score_threshold": 0.5, "match_radius_pix": 10,
                            "counts": {**m["counts"], "frames_failed": 0}})
    assert "| r magnitude (targets), detectable | <19 | 2 | 2 | 100.0 % |" in text
    assert "| r magnitude (targets), detectable and extended | <19 | 1 | 1 | 100.0 % |" in text
    assert "| comets a matched filter finds at S/N >= 5 (detectable) | 3 |" in text
    assert "| of those, with S/N >= 5 beyond a point source (extended) | 1 |" in text


def test_ideal_recall_is_the_chance_of_passing_both_matched_filters():
    # 10 point sources a frame and 1 false positive allowed: the extension cut is at the 90th
    # percentile of N(0, 1), 1.2816 sigma; a comet at that S/N beyond a point source passes half the time
    cut = 1.2815516
    assert ideal_recall([1e3], [cut], 1.0, 10.0) == pytest.approx(0.5, abs=1e-6)
    assert ideal_recall([1e3, 1e3], [cut, 50.0], 1.0, 10.0) == pytest.approx(0.75, abs=1e-6)
    # as many false positives allowed as there are point sources: only detection counts
    assert ideal_recall([DETECTABLE_SNR], [0.0], 10.0, 10.0) == pytest.approx(0.5)
    assert ideal_recall([1e3], [1e3], 0.0, 10.0) == 0.0  # none allowed: the cut is infinite
    assert ideal_recall([], [], 1.0, 10.0) is None
    assert ideal_recall([20.0], [np.nan], 1.0, 10.0) is None


def test_compute_metrics_gives_the_ideal_detector_beside_the_model():
    comets = pd.DataFrame({"mag": [16.5, 18.0, 19.5], "coma_arcsec": [12.0, 4.0, 30.0],
                           "best_p": [0.99, 0.8, 0.3], "offset_pix": [1.0, 3.0, np.nan],
                           "snr_matched": [1e3, 1e3, 1e3], "snr_extended": [50.0, 0.0, 50.0]})
    detections = pd.DataFrame({"p": [0.99, 0.8, 0.3, 0.9], "true": [True, True, True, False]})
    tiles = pd.DataFrame({"p": [0.99, 0.8, 0.3, 0.9], "positive": [1, 1, 1, 0]})
    m = compute_metrics(comets, detections, tiles, n_frames=2, score_threshold=0.5, point_sources_per_frame=5.0)
    ideal = m["ideal"]
    assert ideal["point_sources_per_frame"] == 5.0 and "0" not in ideal["recall_at_fp_per_frame"]
    # the point-like comet of r 18 passes the cut only when most point sources do
    assert ideal["recall_at_fp_per_frame"]["0.02"]["recall_by_magnitude_targets"]["<19"] == pytest.approx(0.5, abs=0.01)
    assert ideal["at_threshold"]["fp_per_frame"] == 0.5  # the model's: 1 false positive in 2 frames
    assert ideal["at_threshold"]["recall_by_magnitude_targets"]["19-20"] == pytest.approx(1.0)
    # the model's recall in the target bins at each budget, beside it
    assert m["recall_at_fp_per_frame"]["0.1"]["recall_by_magnitude_targets"] == {"<19": 0.5, "19-20": 0.0}
    text = markdown_report({**m, "model": "t", "seeds": [1, 3], "score_threshold": 0.5, "match_radius_pix": 10,
                            "counts": {**m["counts"], "frames_failed": 0}})
    assert "| 0.1 | 0.9 | 0 | 33.3 % | 50.0 % / 51.0 % | 0.0 % / 100.0 % |" in text  # 0.5 + Phi(-2.05) / 2
    assert "An ideal detector allowed the model's 0.500 false positives per frame would recall" in text
    assert compute_metrics(comets, detections, tiles, n_frames=2, score_threshold=0.5)["ideal"] == {}


def test_a_report_of_an_older_truth_table_has_no_detectable_comets():
    comets = pd.DataFrame({"mag": [16.5], "coma_arcsec": [12.0], "best_p": [0.99], "offset_pix": [1.0]})
    m = compute_metrics(comets, pd.DataFrame({"p": [0.99], "true": [True]}),
                        pd.DataFrame({"p": [0.99], "positive": [1]}), n_frames=1, score_threshold=0.5)
    assert (m["counts"]["comets_detectable"], m["counts"]["comets_extended"]) == (0, 0)
    assert m["recall"]["by_magnitude_targets_detectable"]["<19"]["recall"] is None


def test_markdown_report_tabulates_the_headline_numbers():
    comets = pd.DataFrame({"mag": [16.5, 18.0, 20.0], "coma_arcsec": [12.0, 4.0, 30.0],
                           "best_p": [0.99, 0.8, 0.3], "offset_pix": [1.0, 3.0, np.nan]})
    detections = pd.DataFrame({"p": [0.99, 0.8, 0.9], "true": [True, True, False]})
    tiles = pd.DataFrame({"p": [0.99, 0.8, 0.3, 0.9], "positive": [1, 1, 1, 0]})
    m = compute_metrics(comets, detections, tiles, n_frames=2, score_threshold=0.5)
    m.update(model="tails-test", seeds=[900000, 900002], score_threshold=0.5, match_radius_pix=10)
    m["counts"]["frames_failed"] = 0
    text = markdown_report(m)
    assert "| all | | 3 | 2 | 66.7 % |" in text
    assert "| r magnitude | >19.5 | 1 | 0 | 0.0 % |" in text
    assert "| r magnitude (targets) | <19 | 2 | 2 | 100.0 % |" in text
    assert "| false positives per frame (ccd-quadrant) | 0.500 |" in text
    assert "| localisation RMSE (px) | 2.24 |" in text
    assert "seeds 900000 to 900001" in text
    assert "| 0.5 | 0 | 1 | 100.0 % |" in text  # one false positive in 2 frames allowed: all of it
    assert "| 0.1 | 0.9 | 0 | 33.3 % |" in text  # none allowed: only the comet seen above 0.9
    # each recall with its Clopper-Pearson interval, the false positives with Garwood's
    assert "| all | | 3 | 2 | 66.7 % | 9.4-99.2 % |" in text
    assert "| false positives per frame, 95 % interval | 0.013-2.786 |" in text
    assert "| recall of r < 19 | 100.0 % | 15.8-100.0 % | >= 99 % | undecided |" in text
    assert "| localisation RMSE (px) | 2.236 |" in text and "| <= 1.5 | " in text
    assert "threshold 0.5, match radius" in text  # scored by the rules
    fused = markdown_report({**m, "fusion": {"frames": 1100, "fp_per_frame": 0.02}})
    assert "threshold 0.5 on the score of its fusion (`tails.fusion`, fitted on 1100 frames, 0.5 at 0.02 " in fused
    assert "over it only by the fusion's score (`tails.fusion`), the model's own score under it |" in fused
    assert "over it only for a compact coma (`tails.vet`), the model's own score under it |" in text


def two_frames(**conditions):
    """Frame a: a comet of r 17 found, one of r 19.5 missed; frame b: one of r 18 found, one of
    r 18.5 missed, and a false positive.  ``conditions``: columns of the comets (per comet)."""
    comets = pd.DataFrame({"frame": ["a", "a", "b", "b"], **conditions,
                           "mag": [17.0, 19.5, 18.0, 18.5], "coma_arcsec": 10.0,
                           "best_p": [0.9, 0.2, 0.8, 0.3], "offset_pix": [1.0, np.nan, 2.0, np.nan]})
    detections = pd.DataFrame({"frame": ["a", "b", "b", "b"], "p": [0.9, 0.8, 0.95, 0.4],
                               "true": [True, True, False, False]})
    tiles = pd.DataFrame({"p": [0.9, 0.1], "positive": [True, False]})
    return comets, detections, tiles


def test_false_positives_and_recall_are_broken_down_by_the_frames_seeing():
    # frame a in 1.4" seeing, b in 3.0": b's false positive and missed comet fall in its bin
    comets, detections, tiles = two_frames(seeing=[1.4, 1.4, 3.0, 3.0])
    m = compute_metrics(comets, detections, tiles, n_frames=2, score_threshold=0.5)
    s = m["by_seeing"]
    assert list(s) == [label for label, _, _ in SEEING_BINS]
    assert (s["<1.6"]["frames"], s["<1.6"]["false_positives"], s["<1.6"]["recall_r_lt_19"]) == (1, 0, 1.0)
    assert s["<1.6"]["comets_r_lt_19"] == 1  # the comet of r 19.5 is not in the r < 19 recall
    assert (s[">2.8"]["frames"], s[">2.8"]["false_positives"], s[">2.8"]["recalled_r_lt_19"]) == (1, 1, 1)
    assert s[">2.8"]["per_frame_interval"] == pytest.approx(poisson_interval(1, 1))
    assert s[">2.8"]["interval"] == pytest.approx(binomial_interval(1, 2))
    assert s["2-2.4"]["frames"] == 0 and s["2-2.4"]["per_frame"] is None and s["2-2.4"]["interval"] is None
    text = markdown_report({**m, "model": "t", "seeds": [1, 3], "score_threshold": 0.5, "match_radius_pix": 10,
                            "counts": {**m["counts"], "frames_failed": 0}})
    assert "| >2.8 | 1 | 1 | 1.000 | 0.025-5.572 | 2 | 50.0 % | 1.3-98.7 % |" in text
    # a report made before the seeing was recorded has no breakdown
    assert compute_metrics(comets.drop(columns="seeing"), detections, tiles, 2, 0.5)["by_seeing"] == {}


def test_false_positives_and_recall_are_broken_down_by_the_frames_depth():
    # frame a is a deep dark one (MAGLIM 21.4), b a shallow twilight one (19.8): b's false positive
    # and missed comet fall in its bin; each comet's recall is binned by its height above the limit
    comets, detections, tiles = two_frames(maglim=[21.4, 21.4, 19.8, 19.8], depth=[4.4, 1.9, 1.8, 1.3])
    m = compute_metrics(comets, detections, tiles, n_frames=2, score_threshold=0.5)
    f = m["by_maglim"]
    assert list(f) == [label for label, _, _ in MAGLIM_BINS]
    assert (f[">21"]["frames"], f[">21"]["false_positives"], f[">21"]["recall_r_lt_19"]) == (1, 0, 1.0)
    assert (f["19.5-20"]["frames"], f["19.5-20"]["false_positives"], f["19.5-20"]["recalled_r_lt_19"]) == (1, 1, 1)
    d = m["recall"]["by_depth"]
    assert list(d) == [label for label, _, _ in DEPTH_BINS]
    assert (d["1-2"]["n"], d["1-2"]["recalled"], d["4-5"]["n"], d["4-5"]["recalled"]) == (3, 1, 1, 1)
    text = markdown_report({**m, "model": "t", "seeds": [1, 3], "score_threshold": 0.5, "match_radius_pix": 10,
                            "counts": {**m["counts"], "frames_failed": 0}})
    assert "| 5-sigma limit of the frame (MAGLIM) | frames |" in text
    assert "| 19.5-20 | 1 | 1 | 1.000 |" in text
    assert "| magnitudes brighter than the frame's 5-sigma limit (MAGLIM) | 1-2 | 3 | 1 | 33.3 % |" in text
    # a report made before the limit was recorded has neither
    older = compute_metrics(comets.drop(columns=["maglim", "depth"]), detections, tiles, 2, 0.5)
    assert older["by_maglim"] == {} and older["recall"]["by_depth"] == {}
    assert "MAGLIM" not in markdown_report({**older, "model": "t", "seeds": [1, 3], "score_threshold": 0.5,
                                            "match_radius_pix": 10, "counts": {**older["counts"], "frames_failed": 0}})


def test_false_positives_are_counted_by_what_lies_there():
    detections = pd.DataFrame({"p": [0.9, 0.8, 0.95, 0.7, 0.4, 0.99], "true": [True, False, False, False, False, False],
                               "source": ["comet", "asteroid", "asteroid", "bright star", "asteroid", None]})
    # over 0.5: two asteroids and a bright star; the one under it and the row of a report made
    # before sources were recorded (pooled) are not counted
    assert false_positives_by_source(detections, 0.5) == {"asteroid": 2, "bright star": 1}
    assert list(false_positives_by_source(detections, 0.5)) == ["asteroid", "bright star"]  # commonest first
    assert false_positives_by_source(detections.drop(columns="source"), 0.5) == {}


def test_targets_are_judged_by_their_intervals_not_their_values():
    # 345 of 466 comets of r < 19 and 3 false positives in 100 frames (tails-20261203's figures):
    # a recall far below 99 % is missed; 0.03 per frame is above 0.02, but 3 in 100 frames cannot
    # tell, and neither can 0 in 100; 0 in 200 frames shows it below 0.02 (3.69 / 200 = 0.018)
    def judged(recalled, fp, frames, offsets=(0.5, 1.0)):
        recall = binned_recall(np.r_[np.full(466, 18.0), np.full(91, 19.5)],
                               np.r_[np.arange(466) < recalled, np.arange(91) < 3], TARGET_MAGNITUDE_BINS)
        fps = count_false_positives(np.ones(fp), np.zeros(fp, bool), 0.5, frames, 169 * frames)
        return judge_targets(recall, fps, localisation_stats(np.array(offsets)))

    t = judged(345, 3, 100)
    assert t["recall_r_lt_19"]["value"] == pytest.approx(345 / 466)
    assert t["recall_r_lt_19"]["verdict"] == "missed" and t["recall_r_19_20"]["verdict"] == "missed"
    assert t["false_positives_per_frame"]["value"] == pytest.approx(0.03)
    assert t["false_positives_per_frame"]["verdict"] == "undecided"
    assert judged(345, 0, 100)["false_positives_per_frame"]["verdict"] == "undecided"
    assert judged(345, 0, 200)["false_positives_per_frame"]["verdict"] == "met"
    assert judged(345, 20, 100)["false_positives_per_frame"]["verdict"] == "missed"
    assert judged(460, 0, 200)["recall_r_lt_19"]["verdict"] == "undecided"  # 98.7 %: 97.2-99.5 %
    assert judged(466, 0, 200)["recall_r_lt_19"]["verdict"] == "met"  # all 466: 99.2-100 %
    assert t["rmse_pix"]["verdict"] == "met"
    assert judged(345, 3, 100, offsets=(3.0, 4.0))["rmse_pix"]["verdict"] == "missed"
    assert judged(345, 3, 100, offsets=())["rmse_pix"]["verdict"] == "unmeasured"
