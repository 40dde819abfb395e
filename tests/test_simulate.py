"""The simulator: products as IRSA serves them, comets where the truth says, calibration vs real ZTF."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tails.frames import parse_frame
from tails.simulate import Conditions, random_frame_name, simulate_command, simulate_frame, write_frame

NAME = "ztf_20191014495961_000570_zr_c05_o_q3"
SMALL = (700, 650)
ZTF_REAL = Path(os.environ.get("TAILS_ZTF_REAL", Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf_real"))
#: a dark r-band night at high Galactic latitude, like the real frame of ZTF.md
DARK = Conditions(seeing=2.0, sky_mag=20.8, star_density=3000, galaxy_density=2000, misregistration=(0.02, -0.02))
COMET = {"x": 300.4, "y": 350.7, "mag": 16.0, "coma_arcsec": 8.0, "tail_arcsec": 40.0, "pa_deg": 120.0}


def robust_sigma(a):
    a = a[np.isfinite(a)]
    return 1.4826 * np.median(np.abs(a - np.median(a)))


@pytest.fixture(scope="module")
def frame():
    """A dark r-band frame with a comet; no confusers, so that the sky statistics are clean."""
    return simulate_frame(NAME, seed=11, comets=[COMET], conditions=DARK, shape=SMALL, confusers=False)


@pytest.fixture(scope="module")
def empty_sky():
    """The same, with no stars or galaxies either: only the comet on the sky."""
    cond = Conditions(**{**DARK.__dict__, "star_density": 0.0, "galaxy_density": 0.0})
    return simulate_frame(NAME, seed=11, comets=[COMET], conditions=cond, shape=SMALL, confusers=False)


def test_products_and_headers(frame):
    for a in (frame.sci, frame.ref, frame.diff):
        assert a.shape == SMALL and a.dtype == np.float32 and np.isfinite(a).all()
    for key in ("OBSJD", "PIXSCALE", "MAGZP", "SEEING", "GAIN", "READNOI", "SATURATE", "MAGLIM", "FILTER", "EXPTIME"):
        assert key in frame.header_sci
    assert frame.header_sci["FILTER"] == "ZTF_r" and frame.header_sci["SEEING"] == pytest.approx(2.0)
    assert frame.header_sci["OBSJD"] == pytest.approx(2458770.995961, abs=1e-6)
    assert WCS(frame.header_sci).has_celestial and WCS(frame.header_ref).has_celestial
    # the reference is on its own grid: the same sky lands on other pixels
    ra, dec = WCS(frame.header_sci).wcs_pix2world([[100.0, 100.0]], 0)[0]
    x_ref, y_ref = WCS(frame.header_ref).wcs_world2pix([[ra, dec]], 0)[0]
    assert np.hypot(x_ref - 100, y_ref - 100) > 5


def test_reproducible_from_name_and_seed():
    a = simulate_frame(NAME, seed=3, n_comets=1, shape=SMALL)
    b = simulate_frame(NAME, seed=3, n_comets=1, shape=SMALL)
    c = simulate_frame(NAME, seed=4, n_comets=1, shape=SMALL)
    np.testing.assert_array_equal(a.sci, b.sci)
    assert a.truth.equals(b.truth)
    assert not np.array_equal(a.sci, c.sci)


def test_comet_is_in_sci_and_diff_not_in_the_reference_and_truth_is_its_peak(empty_sky):
    frame = empty_sky
    x, y = COMET["x"], COMET["y"]
    yy, xx = np.mgrid[: SMALL[0], : SMALL[1]]
    ap = np.hypot(xx - x, yy - y) < 6
    sky = np.hypot(xx - x, yy - y) > 150
    sigma = robust_sigma(frame.diff[sky])
    diff_signal = frame.diff[ap].sum() - np.median(frame.diff[sky]) * ap.sum()
    assert diff_signal > 50 * sigma * np.sqrt(ap.sum())
    # sci - diff is the PSF-matched reference: no comet left there
    model_ref = frame.sci - frame.diff
    ref_excess = model_ref[ap].sum() - np.median(model_ref[sky]) * ap.sum()
    assert abs(ref_excess) < 0.05 * diff_signal
    # the nucleus sits at the coma's peak: the brightest pixel near the truth is within 1 px
    win = frame.diff[int(y) - 5 : int(y) + 6, int(x) - 5 : int(x) + 6]
    r, c = np.unravel_index(np.argmax(win), win.shape)
    assert np.hypot(int(x) - 5 + c - x, int(y) - 5 + r - y) <= 1.0
    row = frame.truth[frame.truth["kind"] == "comet"].iloc[0]
    assert (row["x"], row["y"], row["mag"]) == (x, y, 16.0) and row["snr"] > 50


def test_random_comets_and_confusers_are_in_the_truth():
    sim = simulate_frame(random_frame_name(np.random.default_rng(5)), seed=5, n_comets=4)
    kinds = set(sim.truth["kind"])
    assert (sim.truth["kind"] == "comet").sum() == 4
    assert {"asteroid", "cosmic_ray", "bright_star"} <= kinds
    comets = sim.truth[sim.truth["kind"] == "comet"]
    assert comets["x"].between(0, 3072).all() and comets["y"].between(0, 3080).all()
    assert comets["mag"].between(14, 20.5).all() and comets["coma_arcsec"].between(2, 60).all()
    assert np.isfinite(comets[["ra", "dec", "snr"]].to_numpy()).all()


def test_written_in_irsa_layout(frame, tmp_path):
    paths = write_frame(frame, tmp_path)
    f = parse_frame(NAME)
    assert paths["sci"] == tmp_path / "sci/2019/1014/495961" / f"{NAME}_sciimg.fits"
    assert paths["ref"] == tmp_path / "ref/000/field000570/zr/ccd05/q3/ztf_000570_zr_c05_q3_refimg.fits"
    with fits.open(paths["diff"]) as h:
        assert isinstance(h[1], fits.CompImageHDU)
        np.testing.assert_allclose(h[1].data, frame.diff, atol=robust_sigma(frame.diff))  # lossy RICE
    with fits.open(paths["sci"]) as h:
        assert h[0].data.shape == SMALL and h[0].header["FIELDID"] == f.field
    assert not [p for p in tmp_path.rglob(".*")]


def test_simulate_command(tmp_path):
    out = simulate_command(names=NAME, out_dir=str(tmp_path), n_comets=2)
    assert NAME in out and "2 comet(s)" in out
    assert (tmp_path / "sci/2019/1014/495961" / f"{NAME}_truth.csv").is_file()


# -------------------------------------------------------------------- calibration vs real ZTF
needs_real = pytest.mark.skipif(not ZTF_REAL.is_dir(), reason="no real ZTF data here")


@needs_real
def test_difference_noise_matches_the_real_didymos_difference(frame):
    """A dark r-band difference has the noise of the real one (sigma 5.6 DN, ZTF.md/README)."""
    f = next((ZTF_REAL / "didymos_diff").glob("*size256*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = fits.getdata(f, 1)
    sim_sigma, real_sigma = robust_sigma(frame.diff), robust_sigma(real)
    assert 0.75 < sim_sigma / real_sigma < 1.33, (sim_sigma, real_sigma)
    # and the sky of the science image is that of the real dark r frame (158 DN, sigma 6.6)
    assert 120 < np.median(frame.sci) < 200
    assert 0.75 < robust_sigma(frame.sci) / 6.6 < 1.33


@needs_real
def test_diff_to_sci_noise_ratio_matches_real_alert_triplets(frame):
    """Real r-band alert triplets have diff/sci noise ratios of 0.81-1.01 (10th-90th percentile)."""
    fastavro = pytest.importorskip("fastavro")
    import pandas as pd

    from tails.alerts import make_triplet

    index = pd.read_csv(ZTF_REAL / "alerts" / "alerts_index.csv")
    ratios = []
    for f in index["file"].unique():
        if f.endswith(".avro"):
            with open(ZTF_REAL / f, "rb") as fh:
                for rec in fastavro.reader(fh):
                    t = make_triplet(rec)
                    if robust_sigma(t[..., 0]) > 0:  # a few stamps are blank
                        ratios.append(robust_sigma(t[..., 2]) / robust_sigma(t[..., 0]))
    real_lo, real_hi = np.percentile(ratios, [10, 90])
    # the simulated ratio on 63 x 63 cutouts of empty sky, as the alerts' stamps
    rng = np.random.default_rng(0)
    sim = []
    for _ in range(50):
        r, c = rng.integers(0, SMALL[0] - 63), rng.integers(0, SMALL[1] - 63)
        sim.append(robust_sigma(frame.diff[r : r + 63, c : c + 63]) / robust_sigma(frame.sci[r : r + 63, c : c + 63]))
    assert real_lo - 0.1 < np.median(sim) < real_hi + 0.1, (np.median(sim), real_lo, real_hi)
