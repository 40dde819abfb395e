"""Re-projection of the reference onto the science grid (tails.swarp)."""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.optimize import least_squares

from fitsutil import make_frame, write_files
from tails import swarp

needs_swarp = pytest.mark.skipif(swarp.find_swarp() is None, reason="SWarp is not installed")


def fit_position(img: np.ndarray, x: float, y: float, r: int = 6) -> tuple[float, float]:
    """Gaussian + constant fit around (x, y); returns the fitted 0-based (x, y)."""
    r0, c0 = int(round(y)), int(round(x))
    stamp = img[r0 - r : r0 + r + 1, c0 - r : c0 + r + 1].astype(float)
    assert np.isfinite(stamp).all()
    yy, xx = np.mgrid[r0 - r : r0 + r + 1, c0 - r : c0 + r + 1]

    def resid(p):
        a, x0, y0, s, b = p
        return (a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s**2)) + b - stamp).ravel()

    p = least_squares(resid, [stamp.max() - np.median(stamp), x, y, 1.5, np.median(stamp)]).x
    return p[1], p[2]


def footprint_on_sci(frame) -> np.ndarray:
    """True where a science pixel centre falls inside the reference's pixel area."""
    ny, nx = frame.sci.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = WCS(frame.header_sci).wcs_pix2world(xx, yy, 0)
    xr, yr = WCS(frame.header_ref).wcs_world2pix(ra, dec, 0)
    my, mx = frame.ref.shape
    return (xr > -0.5) & (xr < mx - 0.5) & (yr > -0.5) & (yr < my - 0.5)


def swarp_tempdirs() -> set[str]:
    root = tempfile.gettempdir()
    return {d for d in os.listdir(root) if d.startswith("tails-swarp-")}


@pytest.fixture(scope="module")
def frame():
    # reference shifted by (30, -20) px and rotated by 0.3 deg, TPV WCS on both
    return make_frame(n_sources=15, seed=3)


@needs_swarp
def test_swarp_recovers_known_positions(frame):
    before = swarp_tempdirs()
    out = swarp.reproject_swarp(frame.ref, frame.header_ref, frame.header_sci, nthreads=2)
    assert out.shape == frame.sci.shape and out.dtype == np.float32
    errors = [
        np.hypot(*(np.subtract(fit_position(out, x, y), (x, y))))
        for x, y in zip(frame.x_sci, frame.y_sci)
    ]
    assert max(errors) < 0.2
    # every temporary file is gone
    assert swarp_tempdirs() <= before


@needs_swarp
def test_swarp_nan_outside_footprint(frame):
    out = swarp.reproject_swarp(frame.ref, frame.header_ref, frame.header_sci)
    inside = footprint_on_sci(frame)
    assert (~inside).sum() > 1000  # the shift leaves a band of the science frame uncovered
    assert np.isnan(out[~inside]).all()
    # inside, only a thin band along the footprint's edge (the Lanczos kernel's reach) is lost
    interior = inside.copy()
    for axis in (0, 1):
        for shift in (-4, 4):
            interior &= np.roll(inside, shift, axis=axis)
    assert np.isfinite(out[interior]).all()
    # the sky level (158) is kept: no background subtraction
    assert np.nanmedian(out) == pytest.approx(158.0, abs=0.5)


@needs_swarp
def test_swarp_from_file_same_as_from_array(frame, tmp_path):
    _, ref_file, _ = write_files(tmp_path, frame)
    a = swarp.reproject_swarp(frame.ref, frame.header_ref, frame.header_sci)
    b = swarp.reproject_swarp(ref_file, None, frame.header_sci)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["frame_sciimg.fits", "frame_refimg.fits", "frame_scimrefdiffimg.fits.fz"]
    )


@needs_swarp
def test_swarp_output_grid_other_shape():
    f = make_frame(shape=(260, 300), ref_shape=(280, 290), ref_shift=(-12.0, 25.0), n_sources=6, seed=5)
    out = swarp.reproject_swarp(f.ref, f.header_ref, f.header_sci)
    assert out.shape == (260, 300)
    for x, y in zip(f.x_sci, f.y_sci):
        assert np.hypot(*np.subtract(fit_position(out, x, y), (x, y))) < 0.2


def test_swarp_error_is_clear(frame, tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_text("not a fits file")
    if swarp.find_swarp() is None:
        pytest.skip("SWarp is not installed")
    with pytest.raises(swarp.SwarpError, match="SWarp failed"):
        swarp.reproject_swarp(bad, None, frame.header_sci)


@pytest.mark.parametrize("how", ["reproject", "reproject_exact"])
def test_reproject_package(frame, how):
    out = swarp.reproject_ref(frame.ref, frame.header_ref, frame.header_sci, how=how)
    assert out.shape == frame.sci.shape
    assert np.isnan(out[~footprint_on_sci(frame)]).all()
    tol = 0.2 if how == "reproject" else 0.35  # exact drizzling broadens the PSF a little
    for x, y in zip(frame.x_sci, frame.y_sci):
        assert np.hypot(*np.subtract(fit_position(out, x, y), (x, y))) < tol


def test_fallback_when_swarp_missing(frame, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: neither SWarp nor swarp
    monkeypatch.setattr(swarp, "_fallback_warned", False)
    assert swarp.find_swarp() is None
    with pytest.raises(FileNotFoundError, match="SWarp is not installed"):
        swarp.reproject_swarp(frame.ref, frame.header_ref, frame.header_sci)
    with caplog.at_level(logging.WARNING, logger="tails.swarp"):
        a = swarp.reproject_ref(frame.ref, frame.header_ref, frame.header_sci, how="swarp")
        b = swarp.reproject_ref(frame.ref, frame.header_ref, frame.header_sci, how="swarp")
    warnings = [r for r in caplog.records if "SWarp is not installed" in r.getMessage()]
    assert len(warnings) == 1
    np.testing.assert_array_equal(a, b)
    x, y = frame.x_sci[0], frame.y_sci[0]
    assert np.hypot(*np.subtract(fit_position(a, x, y), (x, y))) < 0.2


def test_unknown_method(frame):
    with pytest.raises(ValueError, match="unknown re-projection method"):
        swarp.reproject_ref(frame.ref, frame.header_ref, frame.header_sci, how="magic")


def test_find_swarp_on_path(monkeypatch, tmp_path):
    exe = tmp_path / "swarp"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert swarp.find_swarp() == str(exe)


def test_config_has_original_settings():
    text = swarp.SWARP_CONFIG.read_text()
    settings = {
        line.split()[0]: line.split()[1]
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert settings["RESAMPLING_TYPE"] == "LANCZOS3"
    assert settings["SUBTRACT_BACK"] == "N"
    assert settings["COMBINE_TYPE"] == "CLIPPED"
    assert settings["WEIGHT_TYPE"] == "NONE"
    assert settings["BACK_SIZE"] == "128"


@needs_swarp
def test_swarp_on_a_real_ztf_tpv_header():
    """A real IRSA difference image (TPV WCS, 274 cards): a grid shifted by whole pixels is
    re-projected back exactly, and the uncovered band is NaN."""
    from astropy.io import fits
    from real_data import ZTF_REAL

    files = sorted((ZTF_REAL / "didymos_diff").glob("*size256*scimrefdiffimg.fits.fz"))
    if not files:
        pytest.skip("real ZTF data (../shared/data/ztf_real) not available")
    data = fits.getdata(files[0], 1).astype(np.float32)
    header = fits.getheader(files[0], 1)
    assert header["CTYPE1"] == "RA---TPV"
    shifted = header.copy()
    shifted["CRPIX1"] += 7  # reference pixel (x + 7, y - 5) is science pixel (x, y)
    shifted["CRPIX2"] -= 5
    out = swarp.reproject_swarp(data, shifted, header)
    expected = np.full_like(data, np.nan)
    expected[5:, :-7] = data[:-5, 7:]
    assert np.isnan(out[:5]).all() and np.isnan(out[:, -7:]).all()
    both = np.isfinite(out) & np.isfinite(expected)
    assert both.sum() > 0.9 * np.isfinite(expected).sum()
    np.testing.assert_allclose(out[both], expected[both], atol=1e-3)


@needs_swarp
def test_swarp_workdir_is_left_empty(frame, tmp_path):
    out = swarp.reproject_swarp(frame.ref, frame.header_ref, frame.header_sci, workdir=tmp_path)
    assert np.isfinite(out).any()
    assert list(tmp_path.iterdir()) == []


def test_place_puts_an_image_at_its_corner_and_drops_what_is_outside():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = swarp.place(image, (1, 2), (5, 5))
    assert out.shape == (5, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1:4, 2:5], image[:, :3])
    assert np.isnan(out[0]).all() and np.isnan(out[4]).all() and np.isnan(out[:, :2]).all()
    np.testing.assert_array_equal(swarp.place(image, (-1, -1), (2, 3)), image[1:3, 1:4])
    assert np.isnan(swarp.place(image, (10, 0), (5, 5))).all()


@needs_swarp
def test_skipping_the_combination_changes_nothing(frame, tmp_path):
    """SWarp's combined image (COMBINE Y, the original's way) equals what reproject_swarp
    places from the resampled image, pixel for pixel, NaN where the combined weight is 0."""
    import subprocess

    from astropy.io import fits

    _, ref_file, _ = write_files(tmp_path, frame)
    swarp._write_head(tmp_path / "combined.head", swarp.grid_header(frame.header_sci))
    subprocess.run(
        [swarp.find_swarp(), str(ref_file), "-c", str(swarp.SWARP_CONFIG), "-COMBINE", "Y",
         "-IMAGEOUT_NAME", "combined.fits", "-WEIGHTOUT_NAME", "combined.weight.fits",
         "-RESAMPLE_DIR", str(tmp_path), "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    combined = fits.getdata(tmp_path / "combined.fits").astype(np.float32)
    combined[~(fits.getdata(tmp_path / "combined.weight.fits") > 0)] = np.nan
    out = swarp.reproject_swarp(ref_file, None, frame.header_sci)
    np.testing.assert_array_equal(out, combined)


@needs_swarp
def test_a_reference_that_misses_the_frame_gives_all_nan():
    f = make_frame(shape=(200, 200), ref_shift=(5000.0, 0.0), n_sources=0, seed=5)
    out = swarp.reproject_swarp(f.ref, f.header_ref, f.header_sci)
    assert out.shape == (200, 200) and np.isnan(out).all()
