"""tails.irsa against a loopback IRSA-layout server (tests/irsa_server.py)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from tails.frames import DIFF_SUFFIX, parse_frame, ref_path, ref_url, sci_path, sci_url
from tails.irsa import (
    DownloadError,
    FramePaths,
    IrsaClient,
    NotFoundError,
    validate_fits,
)

SCI = "_sciimg.fits"
DIFF = "_" + DIFF_SUFFIX
REF = "_refimg.fits"


def client_for(server, **kwargs) -> IrsaClient:
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("backoff_factor", 0.0)
    return IrsaClient(server.url, url_login=server.login_url, **kwargs)


def leftovers(data_dir) -> list:
    return [p for p in data_dir.rglob("*") if p.is_file()] if data_dir.exists() else []


def test_fetch_frame_downloads_into_cache_layout(irsa_server, irsa_mirror, tmp_path):
    data = tmp_path / "data"
    with client_for(irsa_server) as client:
        paths = client.fetch_frame(irsa_mirror.name, data)
    assert isinstance(paths, FramePaths)
    frame = parse_frame(irsa_mirror.name)
    assert paths.sci == sci_path(frame, data)
    assert paths.diff == sci_path(frame, data, DIFF_SUFFIX)
    assert paths.ref == ref_path(frame, data)
    np.testing.assert_array_equal(fits.getdata(paths.sci), irsa_mirror.frame.sci)
    np.testing.assert_array_equal(fits.getdata(paths.ref), irsa_mirror.frame.ref)
    assert fits.getdata(paths.diff, 1).shape == irsa_mirror.frame.diff.shape
    # the server saw exactly the URLs of ZTF.md
    assert irsa_server.requests == [
        "/" + sci_url(frame, "").lstrip("/"),
        "/" + sci_url(frame, "", DIFF_SUFFIX).lstrip("/"),
        "/" + ref_url(frame, "").lstrip("/"),
    ]
    # no temporary files are left
    assert sorted(leftovers(data)) == sorted([paths.sci, paths.diff, paths.ref])


def test_cache_hit_makes_no_request(irsa_server, irsa_mirror, tmp_path):
    tmp_path = tmp_path / "data"
    client = client_for(irsa_server)
    client.fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count() == 3
    client2 = client_for(irsa_server)
    client2.fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count() == 3


def test_invalid_cached_file_is_fetched_again(irsa_server, irsa_mirror, tmp_path):
    tmp_path = tmp_path / "data"
    client = client_for(irsa_server)
    paths = client.fetch_frame(irsa_mirror.name, tmp_path)
    paths.sci.write_bytes(paths.sci.read_bytes()[:5000])
    client.fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count(SCI) == 2
    assert irsa_server.count(REF) == 1
    validate_fits(paths.sci, 0)


@pytest.mark.parametrize("product", ["sci", "diff"])
def test_a_cached_file_cut_short_is_fetched_again(irsa_server, irsa_mirror, tmp_path, product):
    """Cache hits are checked from the headers and the file size alone (read_data=False), which
    still catches a file that lost part of its data."""
    client = client_for(irsa_server)
    path = getattr(client.fetch_frame(irsa_mirror.name, tmp_path / "data"), product)
    hdu = 1 if product == "diff" else 0
    assert validate_fits(path, hdu, read_data=False) == validate_fits(path, hdu) == irsa_mirror.frame.sci.shape
    data = path.read_bytes()
    path.write_bytes(data[:-4000])
    with pytest.raises(DownloadError, match="truncated"):
        validate_fits(path, hdu, read_data=False)
    client.fetch_frame(irsa_mirror.name, tmp_path / "data")
    assert irsa_server.count(DIFF if product == "diff" else SCI) == 2
    assert path.read_bytes() == data


def test_retries_on_500_then_succeeds(irsa_server, irsa_mirror, tmp_path):
    tmp_path = tmp_path / "data"
    irsa_server.fail_next(2, status=503)
    client = client_for(irsa_server, retries=3)
    paths = client.fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count(SCI) == 3
    assert validate_fits(paths.sci) == irsa_mirror.frame.sci.shape


def test_gives_up_after_retries(irsa_server, irsa_mirror, tmp_path):
    tmp_path = tmp_path / "data"
    irsa_server.fail_next(100, status=500)
    client = client_for(irsa_server, retries=2)
    with pytest.raises(DownloadError, match=r"science image .* after 3 attempt\(s\).*HTTP 500"):
        client.fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count(SCI) == 3
    assert leftovers(tmp_path) == []


def test_404_is_not_retried(irsa_server, irsa_mirror, tmp_path):
    irsa_server.missing.add(REF)
    client = client_for(irsa_server, retries=3)
    with pytest.raises(NotFoundError) as err:
        client.fetch_frame(irsa_mirror.name, tmp_path / "data")
    assert irsa_server.count(REF) == 1
    msg = str(err.value)
    assert msg.startswith("no reference image at http://127.0.0.1:")
    assert msg.endswith("for field 000570 c05 q3 zr")
    assert isinstance(err.value, DownloadError)


def test_404_science_image_message(irsa_server, irsa_mirror, tmp_path):
    tmp_path = tmp_path / "data"
    irsa_server.missing.add(SCI)
    with pytest.raises(NotFoundError, match=f"no science image at .* for frame {irsa_mirror.name}"):
        client_for(irsa_server).fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count(SCI) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_unauthorised_is_not_retried(irsa_server, irsa_mirror, tmp_path, status):
    tmp_path = tmp_path / "data"
    irsa_server.fail_next(1, status=status)
    with pytest.raises(DownloadError, match=f"not authorised .*HTTP {status}"):
        client_for(irsa_server, retries=3).fetch_frame(irsa_mirror.name, tmp_path)
    assert irsa_server.count() == 1


@pytest.mark.parametrize("mode", ["short", "honest"])
def test_truncated_download_is_an_error_and_leaves_nothing(irsa_server, irsa_mirror, tmp_path, mode):
    tmp_path = tmp_path / "data"
    irsa_server.truncate.add(DIFF)
    irsa_server.truncate_mode = mode
    client = client_for(irsa_server, retries=1)
    with pytest.raises(DownloadError, match="corrupt") as err:
        client.fetch_frame(irsa_mirror.name, tmp_path)
    assert "difference image" in str(err.value)
    assert not isinstance(err.value, NotFoundError)
    frame = parse_frame(irsa_mirror.name)
    assert not sci_path(frame, tmp_path, DIFF_SUFFIX).exists()
    # only the science image (fetched before) is in the cache: no temp files
    assert leftovers(tmp_path) == [sci_path(frame, tmp_path)]


def test_login_cookie(irsa_server, irsa_mirror, tmp_path):
    irsa_server.require_login("ztfuser", "s3cret")
    # anonymous: refused
    with pytest.raises(DownloadError, match="not authorised"):
        client_for(irsa_server).fetch_frame(irsa_mirror.name, tmp_path / "a")
    # wrong password: the login fails with a clear message
    with pytest.raises(DownloadError, match="login .* failed with HTTP 401"):
        client_for(irsa_server, username="ztfuser", password="nope").fetch_frame(
            irsa_mirror.name, tmp_path / "b"
        )
    irsa_server.reset()
    client = client_for(irsa_server, username="ztfuser", password="s3cret")
    paths = client.fetch_frame(irsa_mirror.name, tmp_path / "c")
    assert paths.ref.is_file()
    assert irsa_server.logins == 1  # once per client
    assert irsa_server.count() == 4


def test_file_url_mirror(irsa_mirror, tmp_path):
    data = tmp_path / "data"
    client = IrsaClient(irsa_mirror.url)
    paths = client.fetch_frame(irsa_mirror.name, data)
    np.testing.assert_array_equal(fits.getdata(paths.sci), irsa_mirror.frame.sci)
    assert paths.ref.read_bytes() == irsa_mirror.paths["ref"].read_bytes()
    # a corrupt file in the mirror: error, nothing kept
    (irsa_mirror.paths["ref"]).write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    paths.ref.unlink()
    with pytest.raises(DownloadError, match="corrupt"):
        client.fetch_frame(irsa_mirror.name, data)
    assert not paths.ref.exists()
    assert not list(paths.ref.parent.iterdir())
    # a missing file in the mirror
    irsa_mirror.paths["ref"].unlink()
    with pytest.raises(NotFoundError, match="no reference image at file://"):
        client.fetch_frame(irsa_mirror.name, data)


def test_from_config():
    from tails.config import load_config

    client = IrsaClient.from_config(load_config())
    assert client.url.startswith("https://irsa.ipac.caltech.edu/")
    assert client.username == "anonymous"
    assert client.retries == 3


def test_validate_fits_wrong_hdu(irsa_mirror):
    assert validate_fits(irsa_mirror.paths["diff"], 1) == irsa_mirror.frame.diff.shape
    with pytest.raises(DownloadError, match="HDU 0"):
        validate_fits(irsa_mirror.paths["diff"], 0)


def test_real_fpack_difference_image_is_valid():
    from real_data import ZTF_REAL

    files = sorted((ZTF_REAL / "didymos_diff").glob("*scimrefdiffimg.fits.fz"))
    if not files:
        pytest.skip("real ZTF data (../shared/data/ztf_real) not available")
    for f in files:
        assert len(validate_fits(f, 1)) == 2
        with pytest.raises(DownloadError, match="no 2-d image in HDU 0"):
            validate_fits(f, 0)


def test_timeouts_are_retried(irsa_server, irsa_mirror, tmp_path):
    irsa_server.delay_next(1, seconds=1.0)
    client = client_for(irsa_server, timeout=0.3, retries=2)
    paths = client.fetch_frame(irsa_mirror.name, tmp_path / "data")
    assert irsa_server.count(SCI) == 2
    assert validate_fits(paths.sci) == irsa_mirror.frame.sci.shape


def test_concurrent_fetches_of_one_file_download_it_once(irsa_server, irsa_mirror, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    client = client_for(irsa_server)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: client.fetch_frame(irsa_mirror.name, tmp_path / "data"), range(4)))
    assert len({tuple(r) for r in results}) == 1
    assert irsa_server.count(REF) == 1 and irsa_server.count(SCI) == 1
    assert sorted(leftovers(tmp_path / "data")) == sorted(results[0])


def test_html_instead_of_fits_says_so(irsa_mirror, tmp_path):
    irsa_mirror.paths["sci"].write_text("<!DOCTYPE html><html><body>Please log in</body></html>")
    with pytest.raises(DownloadError, match="HTML page, not FITS.*irsa.username"):
        IrsaClient(irsa_mirror.url).fetch_frame(irsa_mirror.name, tmp_path / "data")
    assert leftovers(tmp_path / "data") == []
