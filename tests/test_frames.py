"""Frame names, IRSA URLs and cache paths (tails.frames), checked against ZTF.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tails.frames import (
    DIFF_SUFFIX,
    FRAME_PATTERN,
    MASK_SUFFIX,
    SCI_SUFFIX,
    Frame,
    expand_fileroot,
    parse_frame,
    ref_path,
    ref_url,
    sci_path,
    sci_url,
)

NAME = "ztf_20191014495961_000570_zr_c05_o_q3"
IRSA = "https://irsa.ipac.caltech.edu/ibe/data/ztf/products/"


def test_parse_the_example_of_ztf_md():
    f = parse_frame(NAME)
    assert f == Frame(date="20191014", fraction="495961", field=570, filter="zr", ccd=5, quad=3)
    assert f.name == NAME
    assert f.fileroot == "ztf_20191014495961_000570_zr"
    assert (f.year, f.monthday) == ("2019", "1014")
    assert parse_frame(f"  {NAME}\n") == f


@pytest.mark.parametrize("filt", ["zg", "zr", "zi"])
def test_all_filters(filt):
    assert parse_frame(f"ztf_20200924431759_000655_{filt}_c13_o_q4").filter == filt


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ztf_20191014495961_000570_zr_c05_o_q3_sciimg.fits",
        "ztf_2019101449596_000570_zr_c05_o_q3",  # 13 digits
        "ztf_20191014495961_570_zr_c05_o_q3",  # field not 6 digits
        "ztf_20191014495961_000570_zz_c05_o_q3",  # no such filter
        "ztf_20191014495961_000570_zr_c17_o_q3",  # CCD 17
        "ztf_20191014495961_000570_zr_c00_o_q3",  # CCD 0
        "ztf_20191014495961_000570_zr_c05_o_q5",  # quadrant 5
        "ztf_20191014495961_000570_zr_c05_o_q0",
        "ztf_20191314495961_000570_zr_c05_o_q3",  # month 13
        "ztf_20191000495961_000570_zr_c05_o_q3",  # day 0
        "ztf_20191014495961_000570_zr",  # a fileroot, not a frame
        "ZTF_20191014495961_000570_zr_c05_o_q3",
    ],
)
def test_bad_names_name_the_pattern(bad):
    with pytest.raises(ValueError) as err:
        parse_frame(bad)
    assert FRAME_PATTERN in str(err.value)
    assert repr(bad) in str(err.value)


def test_non_string_name():
    with pytest.raises(ValueError, match="not a string"):
        parse_frame(12345)  # type: ignore[arg-type]


def test_expand_fileroot_gives_64_frames():
    names = expand_fileroot("ztf_20191014495961_000570_zr")
    assert len(names) == 64 == len(set(names))
    assert names[0] == "ztf_20191014495961_000570_zr_c01_o_q1"
    assert names[3] == "ztf_20191014495961_000570_zr_c01_o_q4"
    assert names[-1] == "ztf_20191014495961_000570_zr_c16_o_q4"
    assert NAME in names
    assert {(f.ccd, f.quad) for f in map(parse_frame, names)} == {
        (c, q) for c in range(1, 17) for q in range(1, 5)
    }


@pytest.mark.parametrize("bad", ["ztf_20191014495961_000570", NAME, "nope"])
def test_expand_fileroot_refuses_bad_fileroots(bad):
    with pytest.raises(ValueError, match="ztf_YYYYMMDDffffff_FFFFFF_zX"):
        expand_fileroot(bad)


def test_science_urls_as_ztf_md():
    base = IRSA + "sci/2019/1014/495961/" + NAME
    assert sci_url(NAME, IRSA) == base + "_sciimg.fits"
    assert sci_url(NAME, IRSA, DIFF_SUFFIX) == base + "_scimrefdiffimg.fits.fz"
    assert sci_url(NAME, IRSA, MASK_SUFFIX) == base + "_mskimg.fits"
    assert sci_url(parse_frame(NAME), IRSA.rstrip("/")) == base + "_sciimg.fits"
    assert (SCI_SUFFIX, DIFF_SUFFIX, MASK_SUFFIX) == (
        "sciimg.fits",
        "scimrefdiffimg.fits.fz",
        "mskimg.fits",
    )


def test_reference_url_as_ztf_md():
    assert ref_url(NAME, IRSA) == (
        IRSA + "ref/000/field000570/zr/ccd05/q3/ztf_000570_zr_c05_q3_refimg.fits"
    )
    assert ref_url("ztf_20200924431759_001655_zg_c13_o_q1", "file:///mirror") == (
        "file:///mirror/ref/001/field001655/zg/ccd13/q1/ztf_001655_zg_c13_q1_refimg.fits"
    )


def test_cache_paths_in_the_originals_layout(tmp_path):
    assert sci_path(NAME, tmp_path) == tmp_path / "sci/2019/1014/495961" / f"{NAME}_sciimg.fits"
    assert sci_path(NAME, tmp_path, DIFF_SUFFIX) == (
        tmp_path / "sci/2019/1014/495961" / f"{NAME}_scimrefdiffimg.fits.fz"
    )
    assert ref_path(NAME, tmp_path) == tmp_path / "ref/000570/c05/q3/zr/ref.000570_c05_q3_zr.fits"
    assert isinstance(ref_path(NAME, str(tmp_path)), Path)
    assert not (tmp_path / "sci").exists()  # pure: nothing is created
