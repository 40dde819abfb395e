"""Evaluation: metric functions on hand-made inputs, refusals of bad input, one small end-to-end run."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest

from tails.config import ConfigError, load_config
from tails.intervals import binomial_interval, poisson_interval
from tails.evaluate import (
    _json_safe,
    CANDIDATE_COLUMNS,
    COMA_BINS,
    DETECTABLE_SNR,
    MAGNITUDE_BINS,
    SEEING_BINS,
    TARGET_MAGNITUDE_BINS,
    REPORT_FILES,
    binned_recall,
    check_evaluate_config,
    compute_metrics,
    ideal_recall,
    judge_targets,
    count_false_positives,
    false_positives_by_source,
    lifted_counts,
    evaluate,
    in_reference,
    localisation_stats,
    markdown_report,
    match_detections,
    pool_reports,
    pr_curve,
    roc_curve,
    recall_at_false_positives,
    threshold_sweep,
)


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


def test_a_nucleus_where_the_difference_image_is_empty_is_outside_the_reference():
    diff = np.random.default_rng(0).normal(0, 5, (40, 60)).astype(np.float32)
    diff[:, 30:] = 0.0  # the reference stops at column 30: IPAC's difference is empty beyond
    diff[5, 5] = np.nan
    x, y = np.array([10.0, 31.4, 45.0, 5.0, 59.6]), np.array([20.0, 20.0, 39.6, 5.0, 0.0])
    # 31.4 still sees column 29 within 2 px; the corner and edge cases stay in the image
    assert in_reference(diff, x, y).tolist() == [True, True, False, True, False]


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


def test_false_positives_and_recall_are_broken_down_by_the_frames_seeing():
    # frame a in 1.4" seeing, b in 3.0": b's false positive and missed comet fall in its bin
    comets = pd.DataFrame({"frame": ["a", "a", "b", "b"], "seeing": [1.4, 1.4, 3.0, 3.0],
                           "mag": [17.0, 19.5, 18.0, 18.5], "coma_arcsec": 10.0,
                           "best_p": [0.9, 0.2, 0.8, 0.3], "offset_pix": [1.0, np.nan, 2.0, np.nan]})
    detections = pd.DataFrame({"frame": ["a", "b", "b", "b"], "p": [0.9, 0.8, 0.95, 0.4],
                               "true": [True, True, False, False]})
    tiles = pd.DataFrame({"p": [0.9, 0.1], "positive": [True, False]})
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
def _write_fake_report(folder, seeds, frames, false_positives, threshold=0.5):
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
                                   compact=False)[list(CANDIDATE_COLUMNS)]
    tiles = pd.DataFrame({"frame": np.repeat(names, 3), "row0": 0, "col0": 0, "p": np.tile([0.9, 0.1, 0.6], frames),
                          "positive": np.tile([True, False, False], frames), "partial_coma": False})
    metrics = compute_metrics(comets, detections, tiles, frames, threshold, point_sources_per_frame=5.0)
    metrics.update(model="tails-test", checkpoint=None, score_threshold=threshold, match_radius_pix=10,
                   seeds=list(seeds), comets_per_frame=2, detector={"tile_size": 256})
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
