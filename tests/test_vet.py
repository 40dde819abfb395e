"""Vetting (:mod:`tails.vet`): point sources are dropped, comae are kept, the PSF comes from the stars.

The images here are drawn in the test: Gaussian stars, a point-like transient (an asteroid) and
a 1/rho coma convolved with the same PSF (a comet), on white noise.  The last test checks, on real
ZTF alerts of known asteroids (``../shared/data/ztf_real``), what vetting assumes of real data.
"""

import logging

import numpy as np
import pandas as pd
import pytest
from real_data import ALERTS, ZTF_REAL, avro_alerts, known_asteroid_candids
from scipy import ndimage

from tails import vet
from tails.simulate import comet_stamp

SIGMA_PSF = 1.2  # px
FWHM = 2.3548 * SIGMA_PSF
CFG = {"enabled": True, "r1_fwhm": 1.0, "r2_fwhm": [2.5, 6.0], "min_significance": 2.0, "min_fraction": 0.1,
       "trail_max_width": 1.15, "trail_min_elongation": 1.6, "trail_min_snr": 20.0,
       "compact_odds": 19.0, "compact_min_significance": 20.0, "compact_max_fraction": 0.7, "fusion": "auto"}


def _gaussian(shape, x0, y0, flux, sigma=SIGMA_PSF):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return flux / (2 * np.pi * sigma**2) * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


def _coma(shape, x0, y0, flux, radius):
    """A 1/rho coma out to ``radius`` px, seen through the Gaussian PSF."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    rho = np.hypot(x - x0, y - y0)
    img = np.where(rho <= radius, 1 / np.maximum(rho, 0.5), 0.0)
    return ndimage.gaussian_filter(flux * img / img.sum(), SIGMA_PSF)


def _stars(shape, rng, n_side=8, flux=4e4):
    """A grid of isolated stars at random sub-pixel positions."""
    img = np.zeros(shape)
    step = shape[0] // (n_side + 1)
    for i in range(1, n_side + 1):
        for j in range(1, n_side + 1):
            img += _gaussian(shape, j * step + rng.uniform(-0.5, 0.5), i * step + rng.uniform(-0.5, 0.5), flux)
    return img


@pytest.fixture(scope="module")
def field():
    """sci (stars + transients + sky), diff (transients only) and the transients' positions."""
    rng = np.random.default_rng(5)
    shape = (420, 420)
    stars = _stars(shape, rng)
    asteroid = (70.3, 95.6)  # between the grid's stars
    comet = (305.7, 258.2)
    transients = _gaussian(shape, *asteroid, 3000) + _coma(shape, *comet, 3000, radius=8)
    sci = 200 + stars + transients + rng.normal(0, 3, shape)
    diff = transients + rng.normal(0, 3, shape)
    return sci.astype(np.float32), diff.astype(np.float32), asteroid, comet


def test_these_tests_vet_with_the_shipped_settings():
    from tails.config import load_config

    assert vet.check_vet_config(CFG) == vet.check_vet_config(load_config()["tails"]["vet"])


def test_an_aperture_covers_its_area_and_its_pixels_fractionally():
    w = vet.aperture_weights(10.3, 9.8, 4.5, half=10)
    assert w.sum() == pytest.approx(np.pi * 4.5**2, rel=0.01)
    assert w.max() == 1 and w.min() == 0 and ((w > 0) & (w < 1)).any()


def test_the_centroid_finds_a_sub_pixel_peak_near_the_centre_and_ignores_one_farther_away():
    stamp = _gaussian((21, 21), 11.3, 9.6, 1000) + _gaussian((21, 21), 3, 3, 5000)
    x, y = vet.centroid(stamp, FWHM, search=3)
    assert (x, y) == (pytest.approx(11.3, abs=0.1), pytest.approx(9.6, abs=0.1))


def test_the_concentration_is_that_of_a_noiseless_star_and_ignores_a_satellite_streak(field):
    sci = field[0].copy()
    yy, xx = np.mgrid[: sci.shape[0], : sci.shape[1]]
    sci += 2000 * np.exp(-0.5 * ((yy - 0.8 * xx - 20) / SIGMA_PSF) ** 2)  # a streak across the grid
    r1, r2s = FWHM, [2.5 * FWHM, 6 * FWHM]
    conc, moment, n = vet.star_concentration(sci, FWHM, r1, r2s, saturate=6e4)
    star = _gaussian((61, 61), 30.2, 29.9, 1.0)
    truth = [(vet.aperture_weights(30.2, 29.9, r1, 30) * star).sum() / (vet.aperture_weights(30.2, 29.9, r2, 30) * star).sum()
             for r2 in r2s]
    assert n >= 30
    np.testing.assert_allclose(conc, truth, atol=0.01)
    # a Gaussian of sigma s under a Gaussian window of sigma FWHM: s^2 FWHM^2 / (s^2 + FWHM^2)
    assert moment == pytest.approx(SIGMA_PSF**2 * FWHM**2 / (SIGMA_PSF**2 + FWHM**2), rel=0.02)


def test_a_frame_of_few_stars_is_measured_on_as_few_as_five():
    # a twilight frame of sparse stars has few bright enough (one in 100 evaluation frames: 7)
    rng = np.random.default_rng(3)
    shape = (300, 300)
    spots = [(60.3, 50.6), (150.8, 60.1), (240.2, 55.4), (70.5, 160.9), (160.1, 150.3), (230.7, 240.2)]
    r1, r2s = FWHM, [2.5 * FWHM, 6 * FWHM]
    star = _gaussian((61, 61), 30.0, 30.0, 1.0)
    truth = [(vet.aperture_weights(30, 30, r1, 30) * star).sum() / (vet.aperture_weights(30, 30, r2, 30) * star).sum()
             for r2 in r2s]
    noise = 200 + rng.normal(0, 3, shape)
    six = noise + sum(_gaussian(shape, x, y, 4e4) for x, y in spots)
    conc, _, n = vet.star_concentration(six.astype(np.float32), FWHM, r1, r2s)
    assert n == 6 and vet.MIN_STARS == 5
    np.testing.assert_allclose(conc, truth, atol=0.01)
    four = noise + sum(_gaussian(shape, x, y, 4e4) for x, y in spots[:4])
    with pytest.raises(ValueError, match="only 4 bright"):
        vet.star_concentration(four.astype(np.float32), FWHM, r1, r2s)


def test_the_sky_and_the_noise_of_a_nebulous_image_are_those_under_the_nebula():
    rng = np.random.default_rng(8)
    shape = (400, 520)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sky = 200 + 0.5 * xx + 1000 * np.exp(-((xx - 300) ** 2 + (yy - 150) ** 2) / (2 * 150**2))
    image = (sky + rng.normal(0, 3, shape)).astype(np.float32)
    image[:5, :7] = np.nan
    got = vet.sky_of(image)
    assert got.noise == pytest.approx(3, rel=0.05)  # the image's own MAD-sigma is 110 times that
    inner = (slice(32, -32), slice(32, -32))  # beyond the outermost boxes' centres it is constant
    err = np.abs(got.at(np.arange(shape[0]), np.arange(shape[1])) - sky)[inner]
    # a box's median lies under a curved sky's value at its centre, by up to 1.5 % of the peak here
    assert np.median(err) < 2 * 3 and err.max() < 0.015 * 1000
    full = got.image(shape)  # in cells of 4 px: off by at most the slope (4.5 here) times 1.5 px more
    assert full.shape == shape and full.dtype == np.float32
    assert np.abs(full - sky)[inner].max() < 0.015 * 1000 + 4.5 * 1.5


def test_the_concentration_of_a_nebulous_frame_is_measured_over_the_nebula(field):
    # a nebula makes the image's MAD-sigma 85 times the noise, so that no star stood 30 such
    # sigmas over the frame's median and the frame went unvetted (a quarter of simulated frames
    # hold nebulosity; one of 100 evaluation frames, seed 900144, went unvetted so)
    sci = field[0].copy()
    yy, xx = np.mgrid[: sci.shape[0], : sci.shape[1]]
    nebula = 1000 * np.exp(-((xx - 200) ** 2 + (yy - 230) ** 2) / (2 * 150**2))
    star_peak = 4e4 / (2 * np.pi * SIGMA_PSF**2)
    assert 30 * 1.4826 * np.median(np.abs(nebula - np.median(nebula))) > star_peak
    r1, r2s = FWHM, [2.5 * FWHM, 6 * FWHM]
    flat, _, _ = vet.star_concentration(sci, FWHM, r1, r2s, saturate=6e4)
    conc, _, n = vet.star_concentration((sci + nebula).astype(np.float32), FWHM, r1, r2s, saturate=6e4)
    assert n >= 30
    np.testing.assert_allclose(conc, flat, atol=0.01)


def test_too_few_stars_is_an_error_that_says_so(field):
    with pytest.raises(ValueError, match="only 0 bright, isolated, round"):
        vet.star_concentration(np.full((200, 200), 100.0, np.float32), FWHM, FWHM, [2.5 * FWHM])


def test_the_asteroid_is_dropped_and_the_comet_kept(field, caplog):
    sci, diff, asteroid, comet = field
    cands = pd.DataFrame({"x": [asteroid[0] + 0.6, comet[0] - 0.8], "y": [asteroid[1] - 0.4, comet[1] + 0.5],
                          "p": [0.9, 0.8]})
    with caplog.at_level(logging.INFO, logger="tails.vet"):
        kept = vet.vet_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)
    assert kept["p"].tolist() == [0.8]
    assert kept.loc[0, "ext_sigma"] > 10 and kept.loc[0, "ext_fraction"] > 0.2
    assert "1 of 2 candidates are extended" in caplog.text
    # with the gate open, the asteroid's measures are those of a point source
    everything = vet.vet_candidates(cands, sci, diff, FWHM, {**CFG, "min_significance": -1e9,
                                                               "min_fraction": -1e9}, seed=1)
    assert abs(everything.loc[0, "ext_sigma"]) < 2 and abs(everything.loc[0, "ext_fraction"]) < 0.05


def test_a_small_bright_coma_is_compact_and_a_diffuse_blob_is_not():
    """Point 5 of the module: a nucleus in a small coma is compact; a ghost or a galaxy residual,
    nearly all of its light beyond r1, is extended but not compact; a point source is neither."""
    rng = np.random.default_rng(11)
    shape = (420, 420)
    where = {"asteroid": (70.3, 95.6), "small coma": (305.7, 258.2), "diffuse": (140.2, 330.4)}
    transients = (_gaussian(shape, *where["asteroid"], 2e4) + _coma(shape, *where["small coma"], 2e4, radius=4)
                  + _gaussian(shape, *where["diffuse"], 2e4, sigma=8))
    sci = (200 + _stars(shape, rng) + transients + rng.normal(0, 3, shape)).astype(np.float32)
    diff = (transients + rng.normal(0, 3, shape)).astype(np.float32)
    cands = pd.DataFrame({"x": [x for x, _ in where.values()], "y": [y for _, y in where.values()], "p": 0.3})
    measured = vet.measure_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)
    assert measured["extended"].tolist() == [False, True, True]
    assert measured["compact"].tolist() == [False, True, False]
    assert measured.loc[2, "ext_fraction"] > CFG["compact_max_fraction"] > measured.loc[1, "ext_fraction"]
    # a stricter significance leaves it extended and no longer compact
    strict = vet.measure_candidates(cands, sci, diff, FWHM, {**CFG, "compact_min_significance": 1e4}, seed=1)
    assert strict["extended"].tolist() == [False, True, True] and not strict["compact"].any()


def test_a_compact_coma_multiplies_the_odds_of_the_score():
    p = np.array([0.0, 0.1, 0.3, 0.5, 1.0])
    np.testing.assert_allclose(vet.compact_score(p, np.ones(5, bool), 9.0), [0.0, 0.5, 27 / 34, 0.9, 1.0])
    np.testing.assert_array_equal(vet.compact_score(p, np.zeros(5, bool), 9.0), p)  # not compact
    np.testing.assert_array_equal(vet.compact_score(p, np.ones(5, bool), 1.0), p)  # turned off
    # the least score a compact coma lifts over the threshold
    for threshold, odds in [(0.5, 9.0), (0.9, 9.0), (0.5, 1.0), (0.0, 9.0)]:
        low = vet.lowest_compact_score(threshold, odds)
        assert vet.compact_score([low], [True], odds)[0] == pytest.approx(threshold)
    assert vet.lowest_compact_score(0.5, 9.0) == pytest.approx(0.1)
    assert vet.lowest_compact_score(0.5, 1.0) == 0.5


def _trail(shape, x0, y0, flux, length, angle_deg):
    """An asteroid trailed over ``length`` px: 15 PSFs along a line, as ``tails.simulate`` draws it."""
    t = np.linspace(-0.5, 0.5, 15) * length
    a = np.deg2rad(angle_deg)
    return sum(_gaussian(shape, x0 + u * np.cos(a), y0 + u * np.sin(a), flux / 15) for u in t)


def test_a_trail_is_as_narrow_across_as_a_point_source_and_longer_along():
    point = _gaussian((41, 41), 20.3, 19.8, 1.0)
    low, high, flux = vet.window_moments(point, 20.3, 19.8, FWHM)
    assert low == pytest.approx(high, rel=0.01) and flux > 0
    line = _trail((41, 41), 20.3, 19.8, 1.0, 8.0, 30.0)
    across, along, _ = vet.window_moments(line, 20.3, 19.8, FWHM)
    assert across == pytest.approx(low, rel=0.02) and along > 2 * across
    assert np.isnan(vet.window_moments(-point, 20.3, 19.8, FWHM)[0])


def test_a_trailed_asteroid_is_dropped_and_a_comet_with_a_tail_kept():
    # a near-Earth asteroid trailed 8 px passes the excess test: its light beyond the core lies
    # along the line (3 of the 6 false positives of 100 evaluation frames were such)
    rng = np.random.default_rng(6)
    shape = (420, 420)
    trail_at, comet_at = (163.4, 117.2), (210.5, 303.1)  # between the grid's stars
    pre, r0, c0 = comet_stamp(*comet_at, 3000, coma_pix=3.0, tail_pix=40.0, pa_deg=90.0, nucleus_fraction=0.1,
                              rng=np.random.default_rng(1))
    comet = np.zeros(shape)
    comet[r0 : r0 + pre.shape[0], c0 : c0 + pre.shape[1]] = pre
    transients = _trail(shape, *trail_at, 3000, 8.0, 30.0) + ndimage.gaussian_filter(comet, SIGMA_PSF)
    sci = (200 + _stars(shape, rng) + transients + rng.normal(0, 3, shape)).astype(np.float32)
    diff = (transients + rng.normal(0, 3, shape)).astype(np.float32)
    cands = pd.DataFrame({"x": [trail_at[0] + 0.4, comet_at[0] - 0.3], "y": [trail_at[1] - 0.5, comet_at[1] + 0.2]})
    m = vet.measure_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)
    assert (m["ext_sigma"] > 10).all()  # both more extended than a point source
    assert m["trailed"].tolist() == [True, False] and m["extended"].tolist() == [False, True]
    assert m.loc[0, "ext_width"] < 1.1 and m.loc[0, "ext_elongation"] > 3
    assert m.loc[1, "ext_width"] > 1.5  # the coma makes the comet wider than a star across its tail
    # the trail window's S/N is reported, and a trail measured under trail_min_snr is not judged
    assert (m["ext_snr"] >= CFG["trail_min_snr"]).all()
    faint = vet.measure_candidates(cands, sci, diff, FWHM, {**CFG, "trail_min_snr": m.loc[0, "ext_snr"] + 1},
                                   saturate=6e4, seed=1)
    assert not faint["trailed"].any() and faint["extended"].all()
    kept = vet.measure_candidates(cands, sci, diff, FWHM, {**CFG, "trail_max_width": 0}, saturate=6e4, seed=1)
    assert kept["extended"].tolist() == [True, True] and not kept["trailed"].any()


def test_a_comet_beside_a_star_residual_is_not_judged_a_trail(monkeypatch):
    # a dipole 6 px from a bright comet of large coma (seed 300030 of the simulator had one)
    # pulls its window moments narrow and long: not judged, rather than taken for a trail
    rng = np.random.default_rng(6)
    shape = (420, 420)
    x, y = 210.5, 303.1
    dipole = 3000 * (_gaussian(shape, x + 6.6, y - 1, 1) - _gaussian(shape, x + 5.4, y - 1, 1))
    transients = _coma(shape, x, y, 1e4, radius=30) + _gaussian(shape, x, y, 1500)
    noise = rng.normal(0, 3, shape)
    sci = (200 + _stars(shape, rng) + transients + noise).astype(np.float32)
    diff = (transients + dipole + noise).astype(np.float32)
    cands = pd.DataFrame({"x": [x], "y": [y]})
    m = vet.measure_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)
    assert m["extended"].tolist() == [True] and not m["trailed"].any() and np.isnan(m.loc[0, "ext_width"])
    monkeypatch.setattr(vet, "TRAIL_NEGATIVE_SIGMA", np.inf)  # without the guard, it would be a trail
    assert vet.measure_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)["trailed"].tolist() == [True]


def test_a_residual_in_the_corner_of_a_trails_stamp_does_not_stop_its_judgement(monkeypatch):
    # a neighbour's dipole about 4 window sigmas from a bright trail (design frame 600054 had one):
    # the window hardly weighs it, so the trail is judged, and dropped
    rng = np.random.default_rng(6)
    shape = (420, 420)
    x, y = 163.4, 117.2
    dipole = 3000 * (_gaussian(shape, x - 6.4, y - 9.5, 1) - _gaussian(shape, x - 5.4, y - 9.5, 1))
    transients = _trail(shape, x, y, 6000, 10.0, 60.0)
    noise = rng.normal(0, 3, shape)
    sci = (200 + _stars(shape, rng) + transients + noise).astype(np.float32)
    diff = (transients + dipole + noise).astype(np.float32)
    cands = pd.DataFrame({"x": [x], "y": [y]})
    m = vet.measure_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)
    assert m["trailed"].tolist() == [True] and m["extended"].tolist() == [False]
    monkeypatch.setattr(vet, "TRAIL_NEGATIVE_WINDOWS", np.inf)  # the whole stamp: not judged, kept
    m = vet.measure_candidates(cands, sci, diff, FWHM, CFG, saturate=6e4, seed=1)
    assert np.isnan(m.loc[0, "ext_width"]) and m["extended"].tolist() == [True]


@pytest.mark.skipif(not (ZTF_REAL / "didymos_diff").is_dir(), reason="no real Didymos difference image here")
def test_the_real_didymos_with_its_dart_tail_is_not_a_trail():
    """The one real ZTF image of an active small body (``../shared/data/ztf_real/didymos_diff``):
    Didymos, with the DART ejecta's faint straight tail, is round in the trail test's window.
    Measured when written: elongation 1.02, S/N 447, width 1.52 times a Gaussian star's."""
    from astropy.io import fits

    diff = fits.getdata(next((ZTF_REAL / "didymos_diff").glob("*size256*")), 1).astype(np.float64)
    fwhm = 2.245 / 1.012  # the header's SEEING over PIXSCALE
    s2 = (fwhm / 2.3548) ** 2
    star = s2 * fwhm**2 / (s2 + fwhm**2)  # a Gaussian star's moment; the real PSF's wings add to it
    h = vet._window_half(fwhm)
    null = vet.blank_spread(diff, vet._window_weights(vet.TRAIL_WINDOW_FWHM * fwhm, h), 300, np.random.default_rng(0))
    width, elongation, snr = vet.trail_measures(diff, 127.0, 126.0, fwhm, star, null)
    assert snr > CFG["trail_min_snr"] and elongation < 1.2 < CFG["trail_min_elongation"] and width > 1


def test_candidates_that_cannot_be_measured_are_kept(field, caplog):
    sci, diff, asteroid, _ = field
    cands = pd.DataFrame({"x": [2.0, asteroid[0]], "y": [3.0, asteroid[1]], "p": [0.9, 0.8]})
    kept = vet.vet_candidates(cands, sci, diff, FWHM, CFG, seed=1)
    assert kept["p"].tolist() == [0.9]  # the one at the edge: its stamp leaves the frame
    assert np.isnan(kept.loc[0, "ext_sigma"])
    # no stars to measure the PSF by: nothing is vetted, and the log says why
    flat = np.full_like(sci, 200.0)
    with caplog.at_level(logging.WARNING, logger="tails.vet"):
        kept = vet.vet_candidates(cands, flat, diff, FWHM, CFG, seed=1)
    assert len(kept) == 2 and "candidates not vetted: only 0" in caplog.text
    assert len(vet.vet_candidates(cands.iloc[:0], sci, diff, FWHM, CFG)) == 0


def test_the_empty_part_of_a_difference_image_is_not_taken_for_blank_sky():
    """Where the reference does not reach, the difference is zero: no sky to measure the null on."""
    rng = np.random.default_rng(1)
    diff = rng.normal(0, 3, (400, 400)).astype(np.float32)
    weights = vet._window_weights(2.0, 8)
    whole = vet.blank_spread(diff, weights, 300, np.random.default_rng(0))
    diff[:, 160:] = 0.0  # 60 % of the image empty
    diff[np.abs(diff) < 0.1] = 0.0  # and the sky quantised, as fpack's is: a few exact zeros there too
    cut = vet.blank_spread(diff, weights, 300, np.random.default_rng(0))
    assert cut[1] == pytest.approx(whole[1], rel=0.15)


def test_vetting_is_the_same_every_time(field):
    sci, diff, asteroid, comet = field
    cands = pd.DataFrame({"x": [asteroid[0], comet[0]], "y": [asteroid[1], comet[1]], "p": [0.9, 0.8]})
    a = vet.vet_candidates(cands, sci, diff, FWHM, CFG, seed=7)
    b = vet.vet_candidates(cands, sci, diff, FWHM, CFG, seed=7)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"enabled": "yes"}, "tails.vet.enabled must be true or false"),
        ({"r1_fwhm": 0}, "tails.vet.r1_fwhm must be a positive number"),
        ({"r2_fwhm": []}, "tails.vet.r2_fwhm must be a number or a list"),
        ({"r2_fwhm": [2.5, "wide"]}, "tails.vet.r2_fwhm must be a positive number, not 'wide'"),
        ({"r2_fwhm": [0.8]}, r"must all be larger than tails.vet.r1_fwhm"),
        ({"min_significance": None}, "tails.vet.min_significance must be a number"),
        ({"min_fraction": float("nan")}, "tails.vet.min_fraction must be a number"),
        ({"trail_min_elongation": 0}, "tails.vet.trail_min_elongation must be a positive number"),
        ({"trail_min_snr": "high"}, "tails.vet.trail_min_snr must be a number"),
        ({"compact_odds": 0.5}, r"tails.vet.compact_odds must be 1 \(off\) or more"),
        ({"fusion": ""}, "tails.vet.fusion must be \"auto\", a path to a fusion file or null"),
        ({"fusion": 1}, "tails.vet.fusion must be"),
        ({"compact_odds": None}, "tails.vet.compact_odds must be a positive number"),
        ({"compact_min_significance": "many"}, "tails.vet.compact_min_significance must be a number"),
        ({"compact_max_fraction": 0}, "tails.vet.compact_max_fraction must be a positive number"),
    ],
)
def test_a_bad_vet_section_is_refused_with_the_key_named(change, message):
    with pytest.raises(ValueError, match=message):
        vet.check_vet_config({**CFG, **change})


def test_a_single_outer_radius_may_be_given_as_a_number():
    assert vet.check_vet_config({**CFG, "r2_fwhm": 3})["r2_fwhm"] == (3.0,)


@pytest.mark.skipif(not (ALERTS / "alerts_index.csv").is_file(), reason="no real ZTF alerts here")
def test_a_real_difference_image_keeps_the_science_psf_of_a_point_source():
    """What vetting rests on, on real ZTF data: a point source is as concentrated in IPAC's
    difference image as in the science image, so stars of the science image calibrate it.

    The point sources are the real alerts on known asteroids (``ssdistnr`` <= 2"), which are in
    the science and difference cutouts and not in the template.  Measured when written: 108 at
    S/N > 20 in both; median F(r1)/F(r2) 0.836 in the science and 0.825 in the difference
    cutouts, median difference -0.004 (16-84 %: -0.07 to 0.05).  Measured again with
    :func:`tails.stamps.growth`, whose sky is sigma-clipped (2026-12-02): 108, 0.837 and 0.825,
    -0.004 (16-84 %: -0.05 to 0.05).

    And what the compact test (point 5) rests on: a real asteroid seldom has, in the difference
    image, a tenth of its flux within 2.5 FWHMs beyond its science profile, and hardly ever
    with an S/N that would make that excess 20 sigmas.  Measured when written (2026-12-06): 11
    of 106 have a tenth; 1 (15 %, S/N 144) has an excess of 20 times its flux's noise.
    """
    from tails.alerts import make_triplet
    from tails.stamps import growth

    asteroids = known_asteroid_candids()
    diffs, excess = [], []
    for alert in avro_alerts():
        if int(alert["candid"]) not in asteroids:
            continue
        fwhm = float(alert["candidate"].get("fwhm") or 0)
        fwhm = fwhm if 1.0 < fwhm < 6.0 else 2.0  # the source's own FWHM; a few are missing or wild
        t = make_triplet(alert).astype(float)
        (c_sci, _, snr_sci), (c_diff, _, snr_diff) = growth(t[..., 0], fwhm), growth(t[..., 2], fwhm)
        if min(snr_sci, snr_diff) > 20:
            diffs.append(c_diff - c_sci)
            excess.append(((c_sci - c_diff) / c_sci, snr_diff))  # fraction of F(2.5 FWHM), its S/N
    assert len(diffs) >= 80
    assert abs(np.median(diffs)) < 0.02
    fraction, snr = np.array(excess).T
    a_tenth = fraction >= CFG["min_fraction"]
    assert a_tenth.mean() < 0.15
    assert (a_tenth & (fraction * snr >= CFG["compact_min_significance"])).sum() <= 2


def _vet_at_truth():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "vet_at_truth.py"
    spec = importlib.util.spec_from_file_location("vet_at_truth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "5", "5"], "START must be less than STOP"),
        (["--seeds", "1", "2", "--nea-fraction", "2"], "--nea-fraction must lie between 0 and 1"),
        (["--seeds", "1", "2", "--out", "EXISTING"], "exists: give another --out"),
    ],
)
def test_vet_at_truth_refuses_bad_arguments_before_simulating(args, message, tmp_path, capsys):
    existing = tmp_path / "old.csv"
    existing.write_text("kept\n")
    out = ["--out", str(tmp_path / "new.csv")] if "--out" not in args else []
    args = [str(existing) if a == "EXISTING" else a for a in args] + out
    with pytest.raises(SystemExit):
        _vet_at_truth().main(args)
    assert message in capsys.readouterr().err
    assert existing.read_text() == "kept\n" and not (tmp_path / "new.csv").exists()


def test_vet_at_truth_counts_what_passes_the_excess_test_and_the_trails(caplog):
    table = pd.DataFrame({"kind": ["comet", "comet", "asteroid", "asteroid", "asteroid"],
                          "extended": [True, False, False, False, True], "trailed": [False, False, True, False, False]})
    with caplog.at_level(logging.INFO, logger="vet_at_truth"):
        _vet_at_truth().summarise(table)
    assert "comets of r < 20: 2; pass the excess test: 1; of those taken for trails: 0" in caplog.text
    assert "asteroids of r < 20: 3; pass the excess test: 2; of those taken for trails: 1" in caplog.text
