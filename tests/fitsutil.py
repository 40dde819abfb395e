"""Small, realistic ZTF-like FITS frames for tests.

The frames have a real celestial WCS (TAN, or TPV with small distortion terms as in IRSA's
products), the header keywords Tails reads (ZTF.md, "header keywords used"), and Gaussian point
sources at known sky positions, so that re-projection and coordinates can be checked against a
truth.  The reference is on its own grid, shifted by tens of pixels and slightly rotated with
respect to the science grid, like a real ZTF reference.  The difference image is written as
``.fits.fz`` with the image in HDU 1 (tile-compressed), like IRSA's ``scimrefdiffimg.fits.fz``.

Nothing here is a test; other test modules import it (``from fitsutil import ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from tails.frames import DIFF_SUFFIX, SCI_SUFFIX, parse_frame, ref_url, sci_url

#: The example frame of ZTF.md (2I/Borisov), used by tests as a name.
FRAME_NAME = "ztf_20191014495961_000570_zr_c05_o_q3"

#: ZTF pixel scale in arcsec/px (ZTF.md, "pixel scale").
PIXSCALE = 1.01

#: Small test frame shape (rows, columns): bigger than one 256 px tile, much smaller than
#: a 3080 x 3072 ccd-quadrant.
SMALL_SHAPE = (300, 280)


def wcs_header(
    shape: tuple[int, int],
    ra0: float = 150.0,
    dec0: float = 30.0,
    *,
    rot_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    tpv: bool = True,
    pixscale: float = PIXSCALE,
) -> fits.Header:
    """A celestial WCS header for an image of ``shape`` (rows, columns).

    The tangent point (``ra0``, ``dec0``) sits at the image centre shifted by
    ``shift = (dx, dy)`` pixels (so a positive dx moves the sky towards lower x);
    the axes are rotated by ``rot_deg`` and RA increases towards lower x, as on the sky.

    With ``tpv=True`` the projection is ``TPV`` with small second- and third-order terms
    (distortions of a fraction of a pixel, like IRSA's astrometric solutions).
    """
    ny, nx = shape
    s = pixscale / 3600.0
    th = np.deg2rad(rot_deg)
    cd = s * np.array([[-np.cos(th), np.sin(th)], [np.sin(th), np.cos(th)]])
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    proj = "TPV" if tpv else "TAN"
    h["CTYPE1"] = f"RA---{proj}"
    h["CTYPE2"] = f"DEC--{proj}"
    h["CUNIT1"] = "deg"
    h["CUNIT2"] = "deg"
    h["CRVAL1"] = ra0
    h["CRVAL2"] = dec0
    # FITS pixel coordinates are 1-based
    h["CRPIX1"] = (nx + 1) / 2.0 + shift[0]
    h["CRPIX2"] = (ny + 1) / 2.0 + shift[1]
    h["CD1_1"] = cd[0, 0]
    h["CD1_2"] = cd[0, 1]
    h["CD2_1"] = cd[1, 0]
    h["CD2_2"] = cd[1, 1]
    h["RADESYS"] = "ICRS"
    h["EQUINOX"] = 2000.0
    if tpv:
        # xi' = PV1_0 + PV1_1 xi + PV1_2 eta + PV1_4 xi^2 + PV1_5 xi eta + PV1_7 xi^3 ...
        # (xi, eta in degrees); amplitudes of ~0.05 px over a small frame.
        for axis in (1, 2):
            h[f"PV{axis}_0"] = 0.0
            h[f"PV{axis}_1"] = 1.0
            h[f"PV{axis}_2"] = 0.0
            h[f"PV{axis}_4"] = 2.0e-4
            h[f"PV{axis}_5"] = -1.0e-4
            h[f"PV{axis}_6"] = 1.5e-4
            h[f"PV{axis}_7"] = 3.0e-3
    return h


def ztf_keywords(header: fits.Header, *, obsjd: float = 2458770.99596, filt: str = "ZTF_r") -> None:
    """Add the ZTF keywords Tails reads (values like a real r-band sciimg, ZTF.md)."""
    header["OBSJD"] = (obsjd, "Julian day at mid-exposure")
    header["EXPTIME"] = 30.0
    header["FILTER"] = filt
    header["PIXSCALE"] = (PIXSCALE, "arcsec/px")
    header["MAGZP"] = 26.29
    header["MAGZPRMS"] = 0.03
    header["SEEING"] = 2.0
    header["MAGLIM"] = 20.6
    header["GAIN"] = 6.0
    header["READNOI"] = 9.0
    header["SATURATE"] = 58647.0
    header["INFOBITS"] = 0


def render_sources(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    sigma: float = 1.5,
) -> np.ndarray:
    """Gaussian point sources (total flux ``flux``) at 0-based pixel positions (x=column, y=row)."""
    img = np.zeros(shape, dtype=np.float64)
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    r = int(np.ceil(6 * sigma))
    for xi, yi, fi in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(flux)):
        r0, r1 = max(int(yi) - r, 0), min(int(yi) + r + 2, shape[0])
        c0, c1 = max(int(xi) - r, 0), min(int(xi) + r + 2, shape[1])
        if r0 >= r1 or c0 >= c1:
            continue
        dy = rr[r0:r1, c0:c1] - yi
        dx = cc[r0:r1, c0:c1] - xi
        img[r0:r1, c0:c1] += fi / (2 * np.pi * sigma**2) * np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    return img


@dataclass
class SyntheticFrame:
    """Arrays, headers and the sky truth of one synthetic sci/ref/diff triplet."""

    sci: np.ndarray
    ref: np.ndarray
    diff: np.ndarray
    header_sci: fits.Header
    header_ref: fits.Header
    ra: np.ndarray
    dec: np.ndarray
    #: 0-based positions of the sources on the science grid (x = column, y = row)
    x_sci: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_sci: np.ndarray = field(default_factory=lambda: np.empty(0))


def make_frame(
    shape: tuple[int, int] = SMALL_SHAPE,
    ref_shape: tuple[int, int] | None = None,
    *,
    ref_shift: tuple[float, float] = (30.0, -20.0),
    ref_rot_deg: float = 0.3,
    tpv: bool = True,
    n_sources: int = 12,
    sky: float = 158.0,
    noise: float = 0.0,
    seed: int = 1,
) -> SyntheticFrame:
    """A synthetic science frame and its reference on a shifted, rotated grid.

    Sources are placed at random sky positions inside both footprints, at least 15 px from the
    science frame's edges, the reference's footprint and each other, and rendered in both images at their
    true positions through each image's own WCS.
    """
    rng = np.random.default_rng(seed)
    ref_shape = ref_shape or shape
    hs = wcs_header(shape, tpv=tpv)
    hr = wcs_header(ref_shape, rot_deg=ref_rot_deg, shift=ref_shift, tpv=tpv)
    ztf_keywords(hs)
    w_sci, w_ref = WCS(hs), WCS(hr)

    margin = 15
    xs, ys = [], []
    while len(xs) < n_sources:
        x = rng.uniform(margin, shape[1] - 1 - margin)
        y = rng.uniform(margin, shape[0] - 1 - margin)
        ra, dec = w_sci.wcs_pix2world([[x, y]], 0)[0]
        xr, yr = w_ref.wcs_world2pix([[ra, dec]], 0)[0]
        isolated = all((x - xo) ** 2 + (y - yo) ** 2 > 15**2 for xo, yo in zip(xs, ys))
        inside = margin <= xr <= ref_shape[1] - 1 - margin and margin <= yr <= ref_shape[0] - 1 - margin
        if isolated and inside:
            xs.append(x)
            ys.append(y)
    xs, ys = np.array(xs), np.array(ys)
    ra, dec = w_sci.wcs_pix2world(xs, ys, 0)
    xr, yr = w_ref.wcs_world2pix(ra, dec, 0)
    flux = rng.uniform(2e3, 2e4, size=n_sources)

    sci = sky + render_sources(shape, xs, ys, flux)
    ref = sky + render_sources(ref_shape, xr, yr, flux)
    if noise:
        sci = sci + rng.normal(0, noise, size=shape)
        ref = ref + rng.normal(0, noise / 3, size=ref_shape)
    diff = rng.normal(0, 5.0, size=shape)
    return SyntheticFrame(
        sci=sci.astype(np.float32),
        ref=ref.astype(np.float32),
        diff=diff.astype(np.float32),
        header_sci=hs,
        header_ref=hr,
        ra=np.asarray(ra),
        dec=np.asarray(dec),
        x_sci=xs,
        y_sci=ys,
    )


def _atomic_writeto(hdul: fits.HDUList, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, path)
    return path


def write_sci(path: str | Path, data: np.ndarray, header: fits.Header) -> Path:
    """Write a science image (image in HDU 0), like IRSA's ``sciimg.fits``."""
    return _atomic_writeto(fits.HDUList([fits.PrimaryHDU(data, header=header)]), Path(path))


def write_ref(path: str | Path, data: np.ndarray, header: fits.Header) -> Path:
    """Write a reference image (image in HDU 0), like IRSA's ``refimg.fits``."""
    return _atomic_writeto(fits.HDUList([fits.PrimaryHDU(data, header=header)]), Path(path))


def write_diff(path: str | Path, data: np.ndarray, header: fits.Header) -> Path:
    """Write a difference image as ``.fits.fz``: empty primary HDU, tile-compressed image in HDU 1."""
    comp = fits.CompImageHDU(data, header=header, compression_type="RICE_1", quantize_level=16)
    return _atomic_writeto(fits.HDUList([fits.PrimaryHDU(), comp]), Path(path))


def irsa_paths(root: str | Path, name: str = FRAME_NAME) -> dict[str, Path]:
    """Where a frame's products live in a folder laid out like IRSA's products tree."""
    frame = parse_frame(name)
    base = str(Path(root))
    return {
        "sci": Path(sci_url(frame, base, SCI_SUFFIX)),
        "diff": Path(sci_url(frame, base, DIFF_SUFFIX)),
        "ref": Path(ref_url(frame, base)),
    }


def write_irsa_frame(
    root: str | Path,
    name: str = FRAME_NAME,
    frame: SyntheticFrame | None = None,
    **kwargs,
) -> tuple[dict[str, Path], SyntheticFrame]:
    """Write a synthetic frame's sci, diff and ref into ``root`` in IRSA's layout.

    ``kwargs`` go to :func:`make_frame`.  Returns the paths and the frame (with its truth).
    """
    frame = frame or make_frame(**kwargs)
    paths = irsa_paths(root, name)
    write_sci(paths["sci"], frame.sci, frame.header_sci)
    write_diff(paths["diff"], frame.diff, frame.header_sci)
    write_ref(paths["ref"], frame.ref, frame.header_ref)
    return paths, frame


def write_files(
    folder: str | Path, frame: SyntheticFrame, stem: str = "frame"
) -> tuple[Path, Path, Path]:
    """Write a frame's sci, ref and diff as plain files in one folder; returns (sci, ref, diff)."""
    folder = Path(folder)
    return (
        write_sci(folder / f"{stem}_sciimg.fits", frame.sci, frame.header_sci),
        write_ref(folder / f"{stem}_refimg.fits", frame.ref, frame.header_ref),
        write_diff(folder / f"{stem}_scimrefdiffimg.fits.fz", frame.diff, frame.header_sci),
    )
