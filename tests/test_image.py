"""Dvoika / Troika: loading, coordinates, tessellation, tiles, cutouts, cleanup (tails.image)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.wcs import WCS

from fitsutil import FRAME_NAME, make_frame, write_files
from tails import image
from tails.frames import DIFF_SUFFIX, parse_frame, ref_path, sci_path
from tails.image import Dvoika, Troika, cut_tiles, cutout, tessellate, tile_stack
from tails.irsa import IrsaClient, NotFoundError


# -- tessellation ---------------------------------------------------------------------------
def coverage(shape, xboxes, yboxes) -> np.ndarray:
    hits = np.zeros(shape, dtype=int)
    for xb in xboxes:
        for yb in yboxes:
            hits[xb[0] : xb[1], yb[0] : yb[1]] += 1
    return hits


def test_tessellation_of_a_ztf_frame_is_the_originals():
    xboxes, yboxes = tessellate((3080, 3072), box_size_pix=256, offset=20)
    assert len(xboxes) == 13 and len(yboxes) == 13  # 169 tiles
    assert [b[0] for b in xboxes[:-1]] == [236 * i for i in range(12)]
    assert [b[0] for b in yboxes[:-1]] == [236 * i for i in range(12)]
    assert xboxes[-1] == [3080 - 256, 3080] and yboxes[-1] == [3072 - 256, 3072]
    assert all(b[1] - b[0] == 256 for b in xboxes + yboxes)
    assert (coverage((3080, 3072), xboxes, yboxes) >= 1).all()


@pytest.mark.parametrize(
    "shape", [(256, 256), (257, 300), (491, 493), (492, 1000), (1000, 727), (3000, 3100)]
)
def test_tessellation_covers_every_pixel_of_any_size(shape):
    xboxes, yboxes = tessellate(shape)
    hits = coverage(shape, xboxes, yboxes)
    assert (hits >= 1).all()
    for boxes, n in ((xboxes, shape[0]), (yboxes, shape[1])):
        assert boxes[0][0] == 0 and boxes[-1][1] == n
        assert all(b[1] - b[0] == 256 and 0 <= b[0] for b in boxes)
        starts = [b[0] for b in boxes]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        assert all(s == 236 * i for i, s in enumerate(starts[:-1]))


def test_tessellation_refuses_small_frames_and_bad_offsets():
    with pytest.raises(ValueError, match="smaller than one 256 px tile"):
        tessellate((200, 3072))
    with pytest.raises(ValueError, match="offset"):
        tessellate((3080, 3072), 256, 256)


def test_tile_stack_cuts_the_right_pixels():
    rng = np.random.default_rng(0)
    shape = (600, 530)
    arrays = [rng.normal(size=shape).astype(np.float32) for _ in range(3)]
    xboxes, yboxes = tessellate(shape)
    tiles, offsets = tile_stack(arrays, xboxes, yboxes)
    assert tiles.shape == (len(xboxes) * len(yboxes), 256, 256, 3) and tiles.dtype == np.float32
    assert offsets.shape == (len(tiles), 2)
    k = 0
    for xb in xboxes:
        for yb in yboxes:  # rows outer, columns inner, as the original loops
            assert tuple(offsets[k]) == (xb[0], yb[0])
            for c in range(3):
                np.testing.assert_array_equal(tiles[k, ..., c], arrays[c][xb[0] : xb[1], yb[0] : yb[1]])
            k += 1


def test_tiles_are_cut_at_any_corners():
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(300, 280)).astype(np.float32) for _ in range(2)]
    tiles = cut_tiles(arrays, [(44, 0), (3, 17)], 256)
    assert tiles.shape == (2, 256, 256, 2) and tiles.dtype == np.float32
    np.testing.assert_array_equal(tiles[1, ..., 1], arrays[1][3:259, 17:273])
    np.testing.assert_array_equal(tiles[0, ..., 0], arrays[0][44:300, 0:256])


def test_tile_stack_refuses_mismatched_input():
    a = np.zeros((300, 300), np.float32)
    with pytest.raises(ValueError, match="one shape"):
        tile_stack([a, np.zeros((300, 299))], [[0, 256]], [[0, 256]])
    with pytest.raises(ValueError, match="outside"):
        tile_stack([a], [[100, 356]], [[0, 256]])


# -- cutouts --------------------------------------------------------------------------------
def test_cutout_centre_and_nan_padding():
    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    c = cutout(img, x=50, y=40, size=63)
    assert c.shape == (63, 63)
    assert c[31, 31] == img[40, 50]  # x is the column, y the row
    np.testing.assert_array_equal(c, img[40 - 31 : 40 + 32, 50 - 31 : 50 + 32])
    edge = cutout(img, x=2.4, y=97.6, size=63)
    assert edge[31, 31] == img[98, 2]
    assert np.isnan(edge[:, :29]).all() and np.isfinite(edge[:, 29:]).any()
    assert np.isnan(edge[31 + 2 :, :]).all()  # rows beyond 99
    assert np.isnan(cutout(img, x=-500, y=-500)).all()


# -- Troika from files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic():
    return make_frame(shape=(300, 280), n_sources=10, seed=11)


@pytest.fixture
def troika(synthetic, tmp_path):
    sci, ref, diff = write_files(tmp_path, synthetic, stem=FRAME_NAME)
    return Troika.from_files(sci, ref, diff)


def test_from_files_loads_float32_and_headers(troika, synthetic, caplog):
    assert troika.name == FRAME_NAME
    for arr, truth in ((troika.sci, synthetic.sci), (troika.ref, synthetic.ref)):
        assert arr.dtype == np.float32 and arr.dtype.isnative
        np.testing.assert_array_equal(arr, truth)
    assert troika.zogy.dtype == np.float32 and troika.zogy.shape == synthetic.diff.shape
    np.testing.assert_allclose(troika.zogy, synthetic.diff, atol=1.0)  # lossy RICE quantisation
    assert troika.header_sci["OBSJD"] == synthetic.header_sci["OBSJD"]
    assert "CTYPE1" in troika.header_zogy
    assert isinstance(troika.w_sci, WCS)
    assert troika.plate_scale == pytest.approx(1.01)


def test_small_frame_logs_a_warning(synthetic, tmp_path, caplog):
    files = write_files(tmp_path, synthetic)
    with caplog.at_level(logging.WARNING, logger="tails.image"):
        Troika.from_files(*files)
    assert any("not a ZTF ccd-quadrant" in r.getMessage() for r in caplog.records)


def test_pix2world_round_trip_and_origin_zero(troika, synthetic):
    # scalars: floats out
    ra, dec = troika.pix2world_sci(10.0, 250.0)
    assert isinstance(ra, float) and isinstance(dec, float)
    x, y = troika.world2pix_sci(ra, dec)
    assert (x, y) == pytest.approx((10.0, 250.0), abs=1e-6)
    assert troika.world2pix_sci(ra, dec, to_int=True) == (10, 250)
    # arrays: the source positions of the truth (x = column, y = row, 0-based)
    x, y = troika.world2pix_sci(synthetic.ra, synthetic.dec)
    np.testing.assert_allclose(x, synthetic.x_sci, atol=1e-6)
    np.testing.assert_allclose(y, synthetic.y_sci, atol=1e-6)
    # origin 0: the FITS reference pixel CRPIX (1-based) is pixel CRPIX - 1 here
    h = synthetic.header_sci
    ra0, dec0 = troika.pix2world_sci(h["CRPIX1"] - 1, h["CRPIX2"] - 1)
    assert (ra0, dec0) == pytest.approx((h["CRVAL1"], h["CRVAL2"]), abs=1e-9)
    # x is the column: a source is brightest at sci[round(y), round(x)]
    i = int(np.argmax([troika.sci[int(round(b)), int(round(a))] for a, b in zip(x, y)]))
    r, c = int(round(y[i])), int(round(x[i]))
    assert troika.sci[r, c] == troika.sci[r - 3 : r + 4, c - 3 : c + 4].max()


def test_reproject_tiles_and_cutouts(troika, synthetic):
    ref_projected = troika.reproject_ref2sci(how="swarp", nthreads=1)
    assert ref_projected.shape == troika.sci.shape and np.isnan(ref_projected).any()
    assert troika.ref_projected is ref_projected
    tiles, offsets = troika.tiles()
    assert tiles.shape == (2 * 2, 256, 256, 3)
    np.testing.assert_array_equal(offsets, [[0, 0], [0, 24], [44, 0], [44, 24]])
    x, y = synthetic.x_sci[0], synthetic.y_sci[0]
    cut = troika.cutout(x, y)
    assert set(cut) == {"sci", "ref", "diff"} and all(c.shape == (63, 63) for c in cut.values())
    r, c = int(round(y)), int(round(x))
    assert cut["sci"][31, 31] == troika.sci[r, c]
    # the re-projected reference has the source where the science image has it
    assert np.nanargmax(cut["ref"]) == np.nanargmax(cut["sci"])


def test_make_box(troika, synthetic):
    ra, dec = synthetic.ra[0], synthetic.dec[0]
    xbox, ybox, ra_c, dec_c = troika.make_box(ra, dec, box_size_pix=128, random=False)
    assert xbox[1] - xbox[0] == 128 and ybox[1] - ybox[0] == 128
    x, y = troika.world2pix_sci(ra, dec, to_int=True)
    assert xbox[0] <= x < xbox[1] and ybox[0] <= y < ybox[1]  # xbox: columns, ybox: rows
    assert 0 <= xbox[0] and xbox[1] <= troika.sci.shape[1]
    assert 0 <= ybox[0] and ybox[1] <= troika.sci.shape[0]
    a = troika.make_box(ra, dec, box_size_pix=128, seed=3)
    assert a == troika.make_box(ra, dec, box_size_pix=128, seed=3)


# -- Troika downloading through IrsaClient -------------------------------------------------
def test_troika_downloads_and_cleans_up(irsa_server, irsa_mirror, tmp_path):
    data = tmp_path / "data"
    client = IrsaClient(irsa_server.url, timeout=5, backoff_factor=0)
    t = Troika(path_base=data, name=irsa_mirror.name, client=client)
    frame = parse_frame(irsa_mirror.name)
    assert t.path_sci == sci_path(frame, data) and t.path_ref == ref_path(frame, data)
    np.testing.assert_array_equal(t.sci, irsa_mirror.frame.sci)
    # a second Troika uses the cache
    n = irsa_server.count()
    Troika(path_base=data, name=irsa_mirror.name, client=client)
    assert irsa_server.count() == n
    # fetch only
    t2 = Troika(path_base=tmp_path / "d2", name=irsa_mirror.name, client=client, fetch_data_only=True)
    assert not hasattr(t2, "sci") and t2.path_ref.is_file()
    # cleanup
    t.cleanup(ref=True, sci=False)
    assert not t.path_ref.exists() and t.path_sci.exists()
    t.cleanup(ref=False, sci=True)
    assert not t.path_sci.exists() and not sci_path(frame, data, DIFF_SUFFIX).exists()


def test_troika_from_config_file_mirror(irsa_mirror, tmp_path):
    config = {"irsa": {"url": irsa_mirror.url, "url_login": "", "username": "anonymous", "password": "",
                       "timeout": 5, "retries": 0, "backoff_factor": 0}}
    t = Troika(tmp_path / "data", irsa_mirror.name, config=config)
    assert t.zogy.shape == t.sci.shape


def test_troika_missing_reference_is_a_clear_error(irsa_server, irsa_mirror, tmp_path):
    irsa_server.missing.add("_refimg.fits")
    client = IrsaClient(irsa_server.url, timeout=5, backoff_factor=0)
    with pytest.raises(NotFoundError, match="no reference image at .* for field 000570 c05 q3 zr"):
        Troika(tmp_path / "data", irsa_mirror.name, client=client)


def test_troika_without_download_needs_the_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Troika(tmp_path, FRAME_NAME, download=False)


def test_bad_name():
    with pytest.raises(ValueError, match="ztf_YYYYMMDDffffff_FFFFFF_zX_cCC_o_qQ"):
        Troika("/nonexistent", "not_a_frame", download=False)


def test_diff_on_another_grid_is_refused(synthetic, tmp_path):
    from fitsutil import write_diff

    sci, ref, _ = write_files(tmp_path, synthetic)
    diff = write_diff(tmp_path / "bad.fits.fz", np.zeros((10, 10), np.float32), synthetic.header_sci)
    with pytest.raises(ValueError, match="one grid"):
        Troika.from_files(sci, ref, diff)


def test_dvoika_has_two_channels(synthetic, tmp_path):
    sci, ref, _ = write_files(tmp_path, synthetic)
    d = Dvoika.from_files(sci, ref)
    tiles, _ = d.tiles(ref=np.zeros_like(d.sci))
    assert tiles.shape[-1] == 2
    assert set(d.cutout(10, 10, ref=np.zeros_like(d.sci))) == {"sci", "ref"}


def test_constants_cite_ztf():
    assert image.FRAME_SHAPE == (3080, 3072)
    assert (image.TILE_SIZE, image.TILE_OFFSET) == (256, 20)


def test_a_corrupt_image_file_is_a_clear_error(tmp_path):
    """Cached downloads are checked from their headers only (tails.irsa.validate_fits with
    read_data=False), so data corrupt inside a file of the right size surface when loading,
    with what to do."""
    f = make_frame(n_sources=3, seed=2)
    _, _, diff = write_files(tmp_path, f)
    data = bytearray(diff.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 3000] = b"\x55" * 3000
    diff.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="cannot be read as FITS .*delete it and it is fetched again"):
        image.load_image(diff, 1)


@pytest.mark.parametrize("pedestal, subtracted", [(0.0, False), (2.0, False), (10.0, True), (-12.0, True)])
def test_a_difference_pedestal_is_subtracted_as_it_is_loaded(synthetic, tmp_path, caplog, pedestal, subtracted):
    """The model takes a difference image 1 sigma above zero for comets (image.DIFF_PEDESTAL_SIGMA):
    a level of 0.25 sigma or more is subtracted, with a warning; a smaller one is left as it is."""
    from fitsutil import write_diff

    sci, ref, _ = write_files(tmp_path, synthetic)
    noise = np.random.default_rng(5).normal(0.0, 10.0, synthetic.sci.shape).astype(np.float32)
    noise[:, :100] = 0.0  # where the reference does not reach: no sky, not measured
    diff = write_diff(tmp_path / "d.fits.fz", noise + np.float32(pedestal) * (noise != 0), synthetic.header_sci)
    plain = Troika.from_files(sci, ref, write_diff(tmp_path / "d0.fits.fz", noise, synthetic.header_sci))
    with caplog.at_level(logging.WARNING, logger="tails.image"):
        t = Troika.from_files(sci, ref, diff)
    warned = any("difference image's sky" in r.getMessage() for r in caplog.records)
    assert warned == subtracted
    if subtracted:
        assert t.zogy_pedestal == pytest.approx(pedestal, abs=0.5)
        sky = t.zogy[:, 100:]
        assert abs(np.median(sky)) < 0.5
        assert (t.zogy[:, :100] == 0).all()  # where the reference does not reach, as it was
    else:
        assert t.zogy_pedestal == 0.0
        np.testing.assert_allclose(t.zogy - plain.zogy, pedestal * (noise != 0), atol=1.5)


@pytest.mark.slow
def test_the_bundled_model_sees_a_frame_with_a_pedestal_as_it_sees_it_without(tmp_path):
    """Unsubtracted, a 1 sigma pedestal made 5 of this frame's 25 tiles score 0.5 or more, against
    1 without it (and 140 of a ccd-quadrant's 169, against 1: README, *A difference image's pedestal*)."""
    from bundled import BUNDLED

    if BUNDLED is None:
        pytest.skip("no bundled model in models/")
    from tails.efficientdet import predict_tiles
    from tails.litert import load_detector
    from tails.preprocess import background, preprocess_tiles
    from tails.simulate import simulate_frame, write_frame

    model = load_detector(BUNDLED)
    sim = simulate_frame(FRAME_NAME, seed=20, shape=(1024, 1024))
    sigma = background(sim.diff)[1]
    counts = []
    for pedestal in (0.0, 1.0):
        sim.diff = sim.diff + np.float32(pedestal * sigma)
        paths = write_frame(sim, tmp_path / str(pedestal))
        t = Troika.from_files(paths["sci"], paths["ref"], paths["diff"])
        tiles, valid = preprocess_tiles(t.tiles(ref=t.reproject_ref2sci(how="swarp"))[0])
        counts.append(int((predict_tiles(model, tiles[valid])[:, 0] >= 0.5).sum()))
        assert (t.zogy_pedestal > 0.9 * sigma) == (pedestal > 0)
    assert counts[1] <= counts[0] + 1
