"""What a simulated frame holds at a place (tails.truth), on truth tables made by hand and by the simulator."""

import numpy as np
import pandas as pd
import pytest

from tails.truth import NOTHING, OUTSIDE_REFERENCE, SOURCE_KINDS, TRAILED_PIX, in_footprint, in_reference, sources_at


def _truth(*rows):
    return pd.DataFrame([{"kind": kind, "x": x, "y": y, **kw} for kind, x, y, kw in rows])


def test_each_kind_is_named_where_the_simulator_draws_it():
    truth = _truth(
        ("comet", 500.0, 500.0, {"coma_arcsec": 20.2, "tail_arcsec": 101.0, "pa_deg": 90.0}),  # tail towards -x
        ("asteroid", 1000.0, 1000.0, {"trail_pix": 0.3}),
        ("asteroid", 1500.0, 1000.0, {"trail_pix": 9.0}),
        ("variable", 2000.0, 1000.0, {}),
        ("supernova", 2500.0, 1000.0, {}),
        ("streak", 0.0, 2000.0, {"angle_deg": 0.0}),  # along the row y = 2000
        ("bad_column", 2900.0, 2500.0, {}),  # from row 2500 up
        ("bright_star", 1000.0, 2800.0, {}),
        ("ghost", 1500.0, 2800.0, {"radius_pix": 40.0}),
        ("galaxy", 2000.0, 2800.0, {}),
    )
    at = {
        (503.0, 504.0): "comet",  # within the match radius of the nucleus
        (485.0, 500.0): "comet's coma or tail",  # in the coma of 20 px, beyond the match radius
        (430.0, 502.0): "comet's coma or tail",  # along the tail, 100 px long towards -x
        (570.0, 500.0): NOTHING,  # the other way: beyond the coma, no tail
        (1006.0, 1003.0): "asteroid",
        (1510.0, 1006.0): "asteroid, trailed",  # within the radius of its 9 px trail's end
        (2004.0, 1000.0): "variable star",
        (2500.0, 1008.0): "supernova",
        (1234.0, 2007.0): "satellite streak",
        (2905.0, 2900.0): "bad column",
        (2905.0, 2400.0): NOTHING,  # below where the column goes bad
        (1030.0, 2830.0): "bright star",  # within its reach
        (1002.0, 2600.0): "bright star",  # on its spike or bleed column, 200 px off
        (1500.0, 2845.0): "ghost",
        (2009.0, 2800.0): "galaxy",
        (2600.0, 300.0): NOTHING,
    }
    xy = np.array(list(at))
    assert dict(zip(at, sources_at(xy[:, 0], xy[:, 1], truth, 10.0))) == at


def test_the_first_kind_that_reaches_a_place_names_it():
    # an asteroid in a nebula and beside a galaxy is an asteroid; a trail of 2 px or more is trailed
    truth = _truth(("nebula", 100.0, 100.0, {"size_pix": 300.0}), ("galaxy", 105.0, 100.0, {}),
                   ("asteroid", 100.0, 100.0, {"trail_pix": TRAILED_PIX}), ("ref_edge", 3000.0, 1540.0, {}))
    assert sources_at([100.0, 110.0, 300.0, 2950.0], [100.0, 100.0, 300.0, 10.0], truth, 8.0).tolist() == [
        "asteroid, trailed", "galaxy", "nebulosity", "reference edge"]
    labels = [label for label, _, _ in SOURCE_KINDS]
    assert labels.index("asteroid") < labels.index("galaxy") < labels.index("nebulosity")


def test_no_truth_names_nothing():
    assert sources_at([1.0, 2.0], [1.0, 2.0], pd.DataFrame(), 10.0).tolist() == [NOTHING, NOTHING]
    assert sources_at([], [], _truth(("galaxy", 1.0, 1.0, {})), 10.0).tolist() == []


def test_a_simulated_frames_sources_are_named_at_their_own_places():
    simulate = pytest.importorskip("tails.simulate")
    sim = simulate.simulate_frame("ztf_20200101100000_000600_zr_c01_o_q1", seed=3, n_comets=3, shape=(512, 512))
    truth = sim.truth
    for kind, label in (("comet", "comet"), ("variable", "variable star"), ("supernova", "supernova")):
        rows = truth[truth["kind"] == kind]
        assert (sources_at(rows["x"], rows["y"], truth, 10.0) == label).all()
    assert (truth["kind"] == "comet").sum() == 3


def test_the_strip_the_reference_does_not_reach_is_outside_it():
    simulate = pytest.importorskip("tails.simulate")
    w_sci = simulate.make_wcs(150.0, 30.0, (512, 512))
    w_ref = simulate.make_wcs(150.0, 30.0, (512, 512), shift=(40.0, 0.0))  # its grid 40 px along x
    x, y = [10.0, 256.0, 501.0], [256.0] * 3
    covered = in_footprint(x, y, w_sci, w_ref, (512, 512))
    assert covered[1] and covered.tolist().count(False) == 1  # one edge's strip, not the other
    labels = sources_at(x, y, pd.DataFrame(), 10.0, covered=covered)
    assert labels[1] == NOTHING and labels[~covered].tolist() == [OUTSIDE_REFERENCE]
    # a recorded source there is named as such
    truth = _truth(("asteroid", x[int(np.argmin(covered))], 256.0, {"trail_pix": 0.5}))
    assert sources_at(x, y, truth, 10.0, covered=covered)[~covered].tolist() == ["asteroid"]


def test_a_nucleus_where_the_difference_image_is_empty_is_outside_the_reference():
    diff = np.random.default_rng(0).normal(0, 5, (40, 60)).astype(np.float32)
    diff[:, 30:] = 0.0  # the reference stops at column 30: IPAC's difference is empty beyond
    diff[5, 5] = np.nan
    x, y = np.array([10.0, 31.4, 45.0, 5.0, 59.6]), np.array([20.0, 20.0, 39.6, 5.0, 0.0])
    # 31.4 still sees column 29 within 2 px; the corner and edge cases stay in the image
    assert in_reference(diff, x, y).tolist() == [True, True, False, True, False]
