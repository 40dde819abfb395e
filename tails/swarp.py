"""Re-projection of a reference image onto a science image's pixel grid.

The original Tails re-projects with SWarp (Bertin et al. 2002), with LANCZOS3 resampling, no
background subtraction, CLIPPED combination, no input weights and a 128 px background mesh
(ZTF.md, "Pipeline" 1; ``tails/conf/default.swarp``).  :func:`reproject_swarp` does the same;
the output grid is fixed by a ``.head`` file holding the science image's WCS and size, so the
result lands exactly on the science grid.  Pixels the reference does not reach have weight 0
and are set to NaN.

With a single input image, SWarp's combination step only copies the resampled image into the
output frame, so it is skipped (``COMBINE N``): the resampled image, which SWarp trims to the
part of the output frame the reference covers, is placed at its ``COMIN1``/``COMIN2`` corner.
The result is identical to bit level with what ``COMBINE Y`` writes (checked on a simulated
3080 x 3072 frame) and saves about 0.5 s per ccd-quadrant on 2 cores, as the combined image
and its weight map are neither written nor read back.

When SWarp is not installed, :func:`reproject_ref` falls back to the ``reproject`` package
(:func:`reproject.reproject_interp` or :func:`reproject.reproject_exact`) and logs one warning.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = [
    "SWARP_CONFIG",
    "BACK_SIZE",
    "SwarpError",
    "find_swarp",
    "grid_header",
    "place",
    "reproject_swarp",
    "reproject_interp",
    "reproject_exact",
    "reproject_ref",
]

logger = logging.getLogger(__name__)

#: SWarp configuration (the original's settings, see the file's comments).
SWARP_CONFIG = Path(__file__).resolve().parent / "conf" / "default.swarp"

#: Background mesh size in px (original Tails, tails/swarp.py: BKG_BOX_SIZE = 128).
BACK_SIZE = 128

#: Suffix of SWarp's resampled image (its weight map ends in ``.resamp.weight.fits``).
RESAMPLE_SUFFIX = ".resamp.fits"

#: Names of the SWarp executable: Debian installs ``SWarp``, conda ``swarp``.
SWARP_NAMES = ("SWarp", "swarp")

_fallback_warned = False
_warn_lock = threading.Lock()


class SwarpError(RuntimeError):
    """SWarp failed or produced no usable output."""


def find_swarp() -> str | None:
    """The full path of the SWarp executable on ``PATH`` (``SWarp`` or ``swarp``), or None."""
    for name in SWARP_NAMES:
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def grid_header(header: fits.Header, shape: tuple[int, int] | None = None) -> fits.Header:
    """A minimal header defining a pixel grid: NAXIS1/2 and the celestial WCS of ``header``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        A header with a celestial WCS (TAN, TPV, ...).
    shape : tuple of int, optional
        Image shape (rows, columns); default: the header's NAXIS2, NAXIS1.
    """
    if shape is None:
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    w = _wcs(header)
    if not w.has_celestial:
        raise ValueError("the science header has no celestial WCS: cannot re-project onto it")
    out = fits.Header()
    out["NAXIS"] = 2
    out["NAXIS1"] = int(shape[1])
    out["NAXIS2"] = int(shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.extend(w.celestial.to_header(relax=True), update=True)
    return out


def _write_head(path: Path, header: fits.Header) -> None:
    with open(path, "w") as f:
        for card in header.cards:
            f.write(f"{card.image}\n")
        f.write("END\n")


def reproject_swarp(
    ref: np.ndarray | str | Path,
    ref_header: fits.Header | None,
    sci_header: fits.Header,
    shape: tuple[int, int] | None = None,
    *,
    nthreads: int = 1,
    swarp: str | None = None,
    config: str | Path = SWARP_CONFIG,
    timeout: float = 600,
    workdir: str | Path | None = None,
) -> np.ndarray:
    """Re-project a reference image onto the science grid with SWarp.

    All intermediate files (the input copy, the ``.head`` file, resampled images, the output
    and its weight map) live in a temporary directory that is removed afterwards.

    Parameters
    ----------
    ref : ndarray or path
        The reference image, or a FITS file holding it in HDU 0.
    ref_header : Header or None
        The reference's header (with its WCS); ignored if ``ref`` is a path.
    sci_header : Header
        The science image's header; its WCS and size define the output grid.
    shape : tuple of int, optional
        Output shape (rows, columns); default from ``sci_header``.
    nthreads : int
        SWarp's NTHREADS.
    swarp : str, optional
        The SWarp executable; default :func:`find_swarp`.
    config : path
        SWarp configuration file.
    timeout : float
        Seconds before SWarp is killed.
    workdir : path, optional
        Where to make the temporary directory (default: the system's, ``$TMPDIR``); about
        four times the image size is written there.

    Returns
    -------
    ndarray
        float32, ``shape``; NaN outside the reference's footprint.

    Raises
    ------
    FileNotFoundError
        SWarp is not installed.
    SwarpError
        SWarp failed (its stderr is quoted).
    """
    exe = swarp or find_swarp()
    if exe is None:
        raise FileNotFoundError(
            "SWarp is not installed: install it (Debian: apt-get install swarp; conda: "
            "astromatic-swarp) or re-project with how='reproject'"
        )
    if shape is None:
        shape = (int(sci_header["NAXIS2"]), int(sci_header["NAXIS1"]))
    head = grid_header(sci_header, shape)
    with tempfile.TemporaryDirectory(prefix="tails-swarp-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        if isinstance(ref, (str, Path)):
            inpath = Path(ref).resolve()
        else:
            if ref_header is None:
                raise ValueError("reproject_swarp needs ref_header when ref is an array")
            inpath = tmpdir / "ref.fits"
            hdr = ref_header.copy()
            for key in ("BZERO", "BSCALE", "BLANK"):
                hdr.remove(key, ignore_missing=True)
            fits.PrimaryHDU(np.asarray(ref, dtype=np.float32), header=hdr).writeto(inpath)
        outpath = tmpdir / "ref_on_sci.fits"  # not written: its .head defines the output grid
        _write_head(tmpdir / "ref_on_sci.head", head)
        cmd = [
            exe,
            str(inpath),
            "-c", str(config),
            "-IMAGEOUT_NAME", str(outpath),
            "-WEIGHTOUT_NAME", str(tmpdir / "ref_on_sci.weight.fits"),
            "-COMBINE", "N",
            "-RESAMPLE", "Y",
            "-RESAMPLE_DIR", str(tmpdir),
            "-RESAMPLE_SUFFIX", RESAMPLE_SUFFIX,
            "-VMEM_DIR", str(tmpdir),
            "-NTHREADS", str(int(nthreads)),
            # the original's settings, also on the command line in case of a custom config
            "-RESAMPLING_TYPE", "LANCZOS3",
            "-SUBTRACT_BACK", "N",
            "-COMBINE_TYPE", "CLIPPED",
            "-WEIGHT_TYPE", "NONE",
            "-BACK_SIZE", str(BACK_SIZE),
            "-VERBOSE_TYPE", "QUIET",
            "-WRITE_XML", "N",
        ]  # fmt: skip
        logger.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=tmpdir, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SwarpError(f"SWarp did not finish within {timeout} s") from e
        resampled = sorted(tmpdir.glob("*" + RESAMPLE_SUFFIX))
        resampled = [p for p in resampled if not p.name.endswith(".weight.fits")]
        if proc.returncode != 0 or len(resampled) != 1:
            raise SwarpError(
                f"SWarp failed (exit {proc.returncode}) re-projecting {inpath.name}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:] or 'it wrote no resampled image'}"
            )
        image = resampled[0]
        weight = image.with_name(image.name[: -len(".fits")] + ".weight.fits")
        with fits.open(image, memmap=False) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float32)
            corner = (int(hdul[0].header["COMIN2"]) - 1, int(hdul[0].header["COMIN1"]) - 1)
        with fits.open(weight, memmap=False) as hdul:
            data[~(np.asarray(hdul[0].data) > 0)] = np.nan
    return place(data, corner, shape)


def place(image: np.ndarray, corner: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """An image of ``shape``, NaN but where ``image`` lies with its first pixel at ``corner``.

    Parameters
    ----------
    image : ndarray
        A 2-d image (SWarp's resampled image, trimmed to the output frame).
    corner : (int, int)
        0-based (row, column) of ``image[0, 0]`` in the output frame; the parts of ``image``
        outside the frame are dropped.
    shape : (int, int)
        The output frame's (rows, columns).

    Returns
    -------
    ndarray, float32, ``shape``
    """
    out = np.full(tuple(shape), np.nan, dtype=np.float32)
    (r0, c0), (ny, nx) = corner, image.shape
    rs, re = max(r0, 0), min(r0 + ny, shape[0])
    cs, ce = max(c0, 0), min(c0 + nx, shape[1])
    if rs < re and cs < ce:
        out[rs:re, cs:ce] = image[rs - r0 : re - r0, cs - c0 : ce - c0]
    return out


def _reproject_with(
    func_name: str,
    ref: np.ndarray | str | Path,
    ref_header: fits.Header | None,
    sci_header: fits.Header,
    shape: tuple[int, int] | None,
    **kwargs,
) -> np.ndarray:
    import reproject

    if isinstance(ref, (str, Path)):
        with fits.open(ref, memmap=False) as hdul:
            ref, ref_header = np.asarray(hdul[0].data, dtype=np.float32), hdul[0].header.copy()
    if shape is None:
        shape = (int(sci_header["NAXIS2"]), int(sci_header["NAXIS1"]))
    out, footprint = getattr(reproject, func_name)(
        (np.asarray(ref, dtype=np.float64), _wcs(ref_header).celestial),
        _wcs(sci_header).celestial,
        shape_out=tuple(shape),
        return_footprint=True,
        **kwargs,
    )
    out = out.astype(np.float32)
    # interp's footprint is 0 or 1; exact's is the covered fraction: keep fully covered pixels
    out[~(footprint > 0.999)] = np.nan
    return out


def reproject_interp(
    ref: np.ndarray | str | Path,
    ref_header: fits.Header | None,
    sci_header: fits.Header,
    shape: tuple[int, int] | None = None,
    *,
    order: str = "bicubic",
) -> np.ndarray:
    """Re-project with :func:`reproject.reproject_interp` (the original's alternative).

    Same arguments and result as :func:`reproject_swarp` (NaN outside the footprint).
    """
    return _reproject_with("reproject_interp", ref, ref_header, sci_header, shape, order=order)


def reproject_exact(
    ref: np.ndarray | str | Path,
    ref_header: fits.Header | None,
    sci_header: fits.Header,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Re-project with :func:`reproject.reproject_exact` (flux-conserving, slow)."""
    return _reproject_with("reproject_exact", ref, ref_header, sci_header, shape)


def reproject_ref(
    ref: np.ndarray | str | Path,
    ref_header: fits.Header | None,
    sci_header: fits.Header,
    shape: tuple[int, int] | None = None,
    *,
    how: Literal["swarp", "reproject", "reproject_exact"] = "swarp",
    nthreads: int = 1,
) -> np.ndarray:
    """Re-project a reference onto the science grid, with SWarp when it is installed.

    Parameters
    ----------
    how : {"swarp", "reproject", "reproject_exact"}
        ``"swarp"`` falls back to ``"reproject"`` (bicubic interpolation) with one logged
        warning per process when SWarp is not on ``PATH``.

    See :func:`reproject_swarp` for the other parameters and the result.
    """
    global _fallback_warned
    if how == "swarp":
        exe = find_swarp()
        if exe is not None:
            return reproject_swarp(ref, ref_header, sci_header, shape, nthreads=nthreads, swarp=exe)
        with _warn_lock:
            if not _fallback_warned:
                logger.warning(
                    "SWarp is not installed (neither SWarp nor swarp is on PATH): re-projecting "
                    "with the reproject package instead, which is slower and interpolates "
                    "bicubically rather than with LANCZOS3. Install SWarp (apt-get install swarp)."
                )
                _fallback_warned = True
        how = "reproject"
    if how == "reproject":
        return reproject_interp(ref, ref_header, sci_header, shape)
    if how == "reproject_exact":
        return reproject_exact(ref, ref_header, sci_header, shape)
    raise ValueError(f"unknown re-projection method {how!r}: use 'swarp' or 'reproject'")
