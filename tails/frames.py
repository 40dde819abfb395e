"""ZTF frame names, the IRSA URLs of their products and where they are cached.

Everything here is pure: strings in, strings (or paths) out, no I/O.

A ccd-quadrant frame is named ``ztf_{YYYYMMDD}{ffffff}_{field:06d}_{filter}_c{ccd:02d}_o_q{quad}``,
for example ``ztf_20191014495961_000570_zr_c05_o_q3`` (ZTF.md, "Names and URLs"): ``495961`` is
the fraction of the day, 570 the field, 5 the CCD and 3 the readout quadrant.  An exposure's
*fileroot* is the name without ``_cCC_o_qQ``; it expands to 64 frames (16 CCDs x 4 quadrants).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FRAME_PATTERN",
    "Frame",
    "parse_frame",
    "expand_fileroot",
    "sci_url",
    "ref_url",
    "sci_path",
    "ref_path",
    "SCI_SUFFIX",
    "DIFF_SUFFIX",
    "MASK_SUFFIX",
]

#: The frame-name pattern, as given to users in error messages.
FRAME_PATTERN = "ztf_YYYYMMDDffffff_FFFFFF_zX_cCC_o_qQ"

#: IRSA product suffixes (ZTF.md, "Names and URLs").
SCI_SUFFIX = "sciimg.fits"
DIFF_SUFFIX = "scimrefdiffimg.fits.fz"
MASK_SUFFIX = "mskimg.fits"

#: ZTF has 16 CCDs of 4 readout quadrants each (Bellm et al. 2019).
N_CCDS = 16
N_QUADS = 4
FILTERS = ("zg", "zr", "zi")

_NAME_RE = re.compile(
    r"^ztf_(?P<date>\d{8})(?P<fraction>\d{6})_(?P<field>\d{6})_(?P<filter>z[gri])"
    r"_c(?P<ccd>\d{2})_o_q(?P<quad>\d)$"
)
_FILEROOT_RE = re.compile(
    r"^ztf_(?P<date>\d{8})(?P<fraction>\d{6})_(?P<field>\d{6})_(?P<filter>z[gri])$"
)


@dataclass(frozen=True)
class Frame:
    """One ZTF ccd-quadrant exposure, parsed from its name.

    Attributes
    ----------
    date : str
        UTC date of the night, ``YYYYMMDD``.
    fraction : str
        Fraction of the day, six digits (``ffffff``).
    field : int
        ZTF field number.
    filter : str
        ``zg``, ``zr`` or ``zi``.
    ccd : int
        CCD, 1 to 16.
    quad : int
        Readout quadrant, 1 to 4.
    """

    date: str
    fraction: str
    field: int
    filter: str
    ccd: int
    quad: int

    @property
    def name(self) -> str:
        """The frame name, ``ztf_..._cCC_o_qQ``."""
        return f"{self.fileroot}_c{self.ccd:02d}_o_q{self.quad}"

    @property
    def fileroot(self) -> str:
        """The exposure's name without the ccd-quadrant part."""
        return f"ztf_{self.date}{self.fraction}_{self.field:06d}_{self.filter}"

    @property
    def year(self) -> str:
        return self.date[:4]

    @property
    def monthday(self) -> str:
        return self.date[4:8]

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name


def _bad_name(name: object, why: str) -> ValueError:
    return ValueError(
        f"bad ZTF frame name {name!r}: {why}; expected {FRAME_PATTERN}, "
        "e.g. ztf_20191014495961_000570_zr_c05_o_q3"
    )


def parse_frame(name: str) -> Frame:
    """Parse and validate a ccd-quadrant frame name.

    Parameters
    ----------
    name : str
        For example ``ztf_20191014495961_000570_zr_c05_o_q3``.

    Returns
    -------
    Frame

    Raises
    ------
    ValueError
        If the name does not follow :data:`FRAME_PATTERN`, or its date, CCD or quadrant is
        out of range.  The message names the expected pattern.
    """
    if not isinstance(name, str):
        raise _bad_name(name, "not a string")
    m = _NAME_RE.match(name.strip())
    if m is None:
        raise _bad_name(name, "it does not match the pattern")
    date = m["date"]
    month, day = int(date[4:6]), int(date[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise _bad_name(name, f"{date} is not a valid date")
    ccd, quad = int(m["ccd"]), int(m["quad"])
    if not 1 <= ccd <= N_CCDS:
        raise _bad_name(name, f"CCD {ccd} is not in 1..{N_CCDS}")
    if not 1 <= quad <= N_QUADS:
        raise _bad_name(name, f"quadrant {quad} is not in 1..{N_QUADS}")
    return Frame(
        date=date,
        fraction=m["fraction"],
        field=int(m["field"]),
        filter=m["filter"],
        ccd=ccd,
        quad=quad,
    )


def expand_fileroot(fileroot: str) -> list[str]:
    """The 64 ccd-quadrant frame names (16 CCDs x 4 quadrants) of one exposure.

    Raises
    ------
    ValueError
        If ``fileroot`` is not ``ztf_YYYYMMDDffffff_FFFFFF_zX``.
    """
    if not isinstance(fileroot, str) or _FILEROOT_RE.match(fileroot.strip()) is None:
        raise ValueError(
            f"bad ZTF fileroot {fileroot!r}: expected ztf_YYYYMMDDffffff_FFFFFF_zX, "
            "e.g. ztf_20191014495961_000570_zr"
        )
    fileroot = fileroot.strip()
    return [
        f"{fileroot}_c{ccd:02d}_o_q{quad}"
        for ccd in range(1, N_CCDS + 1)
        for quad in range(1, N_QUADS + 1)
    ]


def _as_frame(frame: Frame | str) -> Frame:
    return frame if isinstance(frame, Frame) else parse_frame(frame)


def _join(base: str, *parts: str) -> str:
    return base.rstrip("/") + "/" + "/".join(parts)


def sci_url(frame: Frame | str, base: str, suffix: str = SCI_SUFFIX) -> str:
    """URL of a science product: ``{base}/sci/{YYYY}/{MMDD}/{ffffff}/{name}_{suffix}``."""
    f = _as_frame(frame)
    return _join(base, "sci", f.year, f.monthday, f.fraction, f"{f.name}_{suffix}")


def ref_url(frame: Frame | str, base: str) -> str:
    """URL of the reference image of a frame's field, filter, CCD and quadrant.

    ``{base}/ref/{field[:3]}/field{field}/{filter}/ccd{cc}/q{q}/ztf_{field}_{filter}_c{cc}_q{q}_refimg.fits``
    """
    f = _as_frame(frame)
    field = f"{f.field:06d}"
    return _join(
        base,
        "ref",
        field[:3],
        f"field{field}",
        f.filter,
        f"ccd{f.ccd:02d}",
        f"q{f.quad}",
        f"ztf_{field}_{f.filter}_c{f.ccd:02d}_q{f.quad}_refimg.fits",
    )


def sci_path(frame: Frame | str, data_dir: str | Path, suffix: str = SCI_SUFFIX) -> Path:
    """Cache path of a science product: ``data/sci/YYYY/MMDD/ffffff/{name}_{suffix}``."""
    f = _as_frame(frame)
    return Path(data_dir) / "sci" / f.year / f.monthday / f.fraction / f"{f.name}_{suffix}"


def ref_path(frame: Frame | str, data_dir: str | Path) -> Path:
    """Cache path of a reference image, in the original's layout.

    ``data/ref/{field}/c{cc}/q{q}/{filter}/ref.{field}_c{cc}_q{q}_{filter}.fits``
    """
    f = _as_frame(frame)
    field, cc = f"{f.field:06d}", f"{f.ccd:02d}"
    return (
        Path(data_dir)
        / "ref"
        / field
        / f"c{cc}"
        / f"q{f.quad}"
        / f.filter
        / f"ref.{field}_c{cc}_q{f.quad}_{f.filter}.fits"
    )
