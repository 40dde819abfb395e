"""Detections: thresholds, tile -> frame coordinates, merging across overlapping tiles."""

import numpy as np
import pandas as pd
import pytest

from tails.detect import (
    DETECTION_COLUMNS,
    candidates_from_predictions,
    check_run_options,
    datestr_from_jd,
    merge_candidates,
    seeing_caveat,
    write_csv,
)


def test_tile_to_frame_coordinates():
    # x is the column (axis 1), y the row (axis 0); offsets are (row0, col0)
    preds = np.array([[0.9, 0.5, 0.25], [0.2, 0.1, 0.1], [0.8, 0.0, 1.0]])
    offsets = np.array([[236, 472], [0, 0], [2824, 0]])
    c = candidates_from_predictions(preds, offsets, score_threshold=0.5, tile_size=256)
    assert c["tile"].tolist() == [0, 2]
    assert c["x"].tolist() == [472 + 128, 0]
    assert c["y"].tolist() == [236 + 64, 2824 + 256]


def test_threshold_is_strict():
    c = candidates_from_predictions(np.array([[0.5, 0, 0]]), np.zeros((1, 2)), 0.5)
    assert len(c) == 0


def test_a_comet_in_two_overlapping_tiles_is_reported_once_with_the_higher_score():
    c = pd.DataFrame(
        {"tile": [3, 4, 9], "p": [0.7, 0.95, 0.8], "x": [250.0, 252.0, 1000.0], "y": [40.0, 41.5, 40.0]}
    )
    m = merge_candidates(c, radius=20)
    assert m["tile"].tolist() == [4, 9]
    assert m["p"].tolist() == [0.95, 0.8]


def test_datestr_is_the_originals_fractional_day():
    # 2019-10-14 11:54:11 UTC (the Borisov frame's fraction of day .495961)
    assert datestr_from_jd(2458770.995961).startswith("2019 10 14.49596")


@pytest.mark.parametrize(
    "threshold, cleanup, message",
    [(1.5, "none", r"score_threshold must be in \[0, 1\]"), ("x", "none", "score_threshold must be a number"),
     (0.5, "everything", "cleanup must be one of none, ref, sci, all")],
)
def test_bad_run_options(threshold, cleanup, message):
    with pytest.raises(ValueError, match=message):
        check_run_options(threshold, cleanup)


def test_empty_csv_has_the_header_only(tmp_path):
    p = tmp_path / "runs" / "x.csv"
    write_csv(pd.DataFrame(columns=DETECTION_COLUMNS), p)
    assert p.read_text().strip() == ",".join(DETECTION_COLUMNS)
    assert [f.name for f in p.parent.iterdir()] == ["x.csv"]


@pytest.mark.parametrize("seeing, said", [(2.0, None), (3.5, None), (1.2, None),
                                          (4.2, "more false positives, mostly asteroids, and fewer faint comets"),
                                          (0.9, "outside 1.2-3.5"), ("n/a", None), (float("nan"), None)])
def test_seeing_beyond_the_trained_range_is_named(seeing, said):
    note = seeing_caveat({"SEEING": seeing})  # a header, as a mapping (FITS holds no NaN)
    if said is None:
        assert note is None
    else:
        assert said in note and "outside" in note
