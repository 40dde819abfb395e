"""Science, reference and difference images of one ZTF frame: load, align, tessellate, cut out.

:class:`Dvoika` holds a science image and its reference; :class:`Troika` adds the ZOGY
difference image.  Both either fetch their files through :class:`tails.irsa.IrsaClient` into a
cache directory (``path_base``, laid out as :mod:`tails.frames` says) or load given files
(:meth:`Troika.from_files`).  The public API follows the original Tails (dmitryduev/tails,
tails/image.py).

Conventions (DESIGN.md): pixel coordinates are 0-based, ``x`` is the column (numpy axis 1) and
``y`` the row (axis 0); the science WCS converts them with origin 0.  Images are float32 arrays
that keep their NaNs (preprocessing replaces them per tile).

The pure helpers :func:`tessellate`, :func:`tile_stack` and :func:`cutout` are shared by the
detector and the training-set builder, so tiles are cut by one piece of code.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .frames import DIFF_SUFFIX, SCI_SUFFIX, Frame, parse_frame, ref_path, sci_path
from .irsa import DIFF_HDU, REF_HDU, SCI_HDU, IrsaClient
from .preprocess import background

__all__ = [
    "FRAME_SHAPE",
    "TILE_SIZE",
    "TILE_OFFSET",
    "CUTOUT_SIZE",
    "PLATE_SCALE",
    "DIFF_PEDESTAL_SIGMA",
    "tessellate",
    "tile_stack",
    "cut_tiles",
    "cutout",
    "load_image",
    "Dvoika",
    "Troika",
]

logger = logging.getLogger(__name__)

#: A difference image whose sky lies this many of its robust sigmas or more from zero has that
#: level subtracted as it is loaded (:class:`Troika`).  The model was trained on difference
#: images of zero sky and takes a tile 1 sigma above zero for a comet: 140 and 146 of the 169
#: tiles of two simulated frames (seeds 500020-500021) scored 0.5 or more, against 1 and 2 with
#: no pedestal and 0 and 1 with 0.5 sigma; so did three real 2018 alerts (MODEL.md, *On real ZTF
#: data*).  The alert cutouts of 2020-2023 in ``../shared/data/ztf_real`` lie within 0.36 sigma of
#: zero (median 0.01), 12 simulated frames (seeds 900100-900111) within 0.012: they are left as they are.
DIFF_PEDESTAL_SIGMA = 0.25
#: The pedestal is measured on about this many pixels, a regular sample of the image (every 9th
#: row and column of a ccd-quadrant): its median is then known to 0.004 sigma.
PEDESTAL_PIXELS = 100_000

#: Shape (rows, columns) of a ZTF ccd-quadrant image (ZTF.md, "ccd-quadrant image").
FRAME_SHAPE = (3080, 3072)
#: Tile side and overlap of neighbouring tiles in px (original Tails: 256 and 20, a stride of
#: 236 and 13 x 13 tiles per ccd-quadrant; ZTF.md, "Pipeline" 2).
TILE_SIZE = 256
TILE_OFFSET = 20
#: Side of the thumbnails posted to Fritz (ZTF.md: 63 x 63 cutouts).
CUTOUT_SIZE = 63
#: Pixel scale (arcsec/px) when the header has no PIXSCALE (ZTF.md: the original uses 1.012).
PLATE_SCALE = 1.012


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
def _axis_boxes(n: int, box: int, stride: int) -> list[list[int]]:
    if n < box:
        raise ValueError(
            f"an image side of {n} px is smaller than one {box} px tile: use a smaller "
            "box_size_pix or a bigger image"
        )
    # enough boxes at `stride` to reach the edge; the last one sits flush with the edge
    count = -(-(n - box) // stride) + 1  # ceil((n - box) / stride) + 1
    boxes = [[stride * i, stride * i + box] for i in range(count)]
    boxes[-1] = [n - box, n]
    return boxes


def tessellate(
    shape: tuple[int, int], box_size_pix: int = TILE_SIZE, offset: int = TILE_OFFSET
) -> tuple[list[list[int]], list[list[int]]]:
    """Overlapping square boxes that cover an image, as the original Tails cuts a frame.

    Boxes start every ``stride = box_size_pix - offset`` px; the last box along each axis is
    moved to sit flush with the image edge.  For a 3080 x 3072 ZTF frame this gives the
    original's 13 x 13 boxes of 256 px at a stride of 236.  Every pixel is covered, whatever
    the image size.

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, columns).
    box_size_pix : int
        Box side in px.
    offset : int
        Overlap of neighbouring boxes in px, ``0 <= offset < box_size_pix``.

    Returns
    -------
    xboxes, yboxes : list of [start, stop]
        ``xboxes`` are ranges along axis 0 (rows), ``yboxes`` along axis 1 (columns), as in the
        original: a tile is ``image[xbox[0]:xbox[1], ybox[0]:ybox[1]]``.

    Raises
    ------
    ValueError
        If the image is smaller than one box, or ``offset`` is out of range.
    """
    box_size_pix, offset = int(box_size_pix), int(offset)
    if box_size_pix < 1:
        raise ValueError(f"box_size_pix must be positive, got {box_size_pix}")
    if not 0 <= offset < box_size_pix:
        raise ValueError(
            f"offset must be in [0, box_size_pix) so that tiles leave no holes, got {offset}"
        )
    stride = box_size_pix - offset
    return _axis_boxes(int(shape[0]), box_size_pix, stride), _axis_boxes(int(shape[1]), box_size_pix, stride)


def tile_stack(
    arrays: Sequence[np.ndarray],
    xboxes: Sequence[Sequence[int]],
    yboxes: Sequence[Sequence[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Cut co-registered images into a stack of multi-channel tiles.

    Parameters
    ----------
    arrays : sequence of ndarray
        Images of one shape, e.g. ``(sci, ref_projected, diff)``; each becomes a channel.
    xboxes, yboxes : sequences of [start, stop]
        Row and column ranges (from :func:`tessellate`), all of one size.

    Returns
    -------
    tiles : ndarray, shape (N, B, B, C), float32
        ``N = len(xboxes) * len(yboxes)`` tiles, rows outer: tile ``i * len(yboxes) + j`` is
        ``xboxes[i]`` by ``yboxes[j]``, as the original loops.
    offsets : ndarray, shape (N, 2), int
        ``(row0, col0)`` of each tile's corner in the image.
    """
    if len(arrays) == 0:
        raise ValueError("tile_stack needs at least one image")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"tile_stack needs 2-d images of one shape, got {[np.shape(a) for a in arrays]}")
    xb = np.asarray(xboxes, dtype=np.int64).reshape(-1, 2)
    yb = np.asarray(yboxes, dtype=np.int64).reshape(-1, 2)
    sizes = np.concatenate([xb[:, 1] - xb[:, 0], yb[:, 1] - yb[:, 0]])
    if len(xb) == 0 or len(yb) == 0 or (sizes != sizes[0]).any() or sizes[0] < 1:
        raise ValueError("tile_stack needs boxes that all have one positive size")
    box = int(sizes[0])
    ny, nx = next(iter(shapes))
    if xb.min() < 0 or xb.max() > ny or yb.min() < 0 or yb.max() > nx:
        raise ValueError(f"boxes reach outside the {ny} x {nx} image")

    offsets = np.stack([np.repeat(xb[:, 0], len(yb)), np.tile(yb[:, 0], len(xb))], axis=1)
    return cut_tiles(arrays, offsets, box), offsets


def cut_tiles(arrays: Sequence[np.ndarray], offsets: np.ndarray, size: int) -> np.ndarray:
    """Tiles of ``size`` px with their corners at ``(row0, col0)``, one channel per image.

    The tiles must lie inside the images (:func:`tile_stack` and
    :func:`tails.refine.centred_offsets` make such offsets).

    Returns
    -------
    ndarray, shape (N, size, size, len(arrays)), float32
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    tiles = np.empty((len(offsets), size, size, len(arrays)), dtype=np.float32)
    for c, a in enumerate(arrays):
        a = np.asarray(a)
        for k, (r, q) in enumerate(offsets):  # slices: 4 times faster than fancy indexing
            tiles[k, :, :, c] = a[r : r + size, q : q + size]
    return tiles


def cutout(image: np.ndarray, x: float, y: float, size: int = CUTOUT_SIZE) -> np.ndarray:
    """A ``size`` x ``size`` float32 cutout centred on pixel (x, y), NaN-padded at the edges.

    ``x`` is the column and ``y`` the row (0-based); the centre pixel is
    ``(round(y), round(x))`` and sits at ``[size // 2, size // 2]`` of the cutout.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"cutout size must be positive, got {size}")
    ny, nx = image.shape
    xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    r0, c0 = yc - size // 2, xc - size // 2
    out = np.full((size, size), np.nan, dtype=np.float32)
    rs, re = max(r0, 0), min(r0 + size, ny)
    cs, ce = max(c0, 0), min(c0 + size, nx)
    if rs < re and cs < ce:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = image[rs:re, cs:ce]
    return out


def load_image(path: str | Path, hdu: int = 0) -> tuple[np.ndarray, fits.Header]:
    """Read an image (native-endian float32, in memory) and its header from HDU ``hdu``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    data = header = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(path, memmap=False) as hdul:
                if len(hdul) > hdu and hdul[hdu].data is not None:
                    data = np.array(hdul[hdu].data, dtype=np.float32)
                    header = hdul[hdu].header.copy()
    except Exception as e:  # astropy raises OSError, ValueError, TypeError... on corrupt data
        raise ValueError(
            f"{path} cannot be read as FITS ({e}); if it is a cached download, delete it and it "
            "is fetched again"
        ) from e
    if data is None:
        raise ValueError(f"{path} holds no image in HDU {hdu}")
    if data.ndim != 2:
        raise ValueError(f"{path} HDU {hdu} is not a 2-d image (shape {data.shape})")
    return data, header


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header).celestial


def _scalar_or_array(a: np.ndarray, scalar: bool) -> Any:
    return float(a[0]) if scalar else a


# ---------------------------------------------------------------------------------------------
# Dvoika and Troika
# ---------------------------------------------------------------------------------------------
class Dvoika:
    """A ZTF science image and its reference.

    Parameters
    ----------
    path_base : str or Path
        Cache root of the downloads (``sci/`` and ``ref/`` below it, :mod:`tails.frames`);
        the detector uses ``{base_path}/data``.
    name : str
        Frame name, e.g. ``ztf_20191014495961_000570_zr_c05_o_q3``.
    config : dict, optional
        Tails configuration; its ``irsa`` section makes the download client.  Default: the
        defaults of ``config.defaults.yaml`` (anonymous IRSA).
    client : IrsaClient, optional
        Download client (takes precedence over ``config``).
    verbose : bool
        Log at INFO what is fetched and loaded.
    fetch_data_only : bool
        Only make sure the files are in the cache; load nothing.
    download : bool
        Fetch missing files; if False, the files must already be in the cache.

    Attributes
    ----------
    sci, ref : ndarray (float32)
    header_sci, header_ref : astropy.io.fits.Header
    w_sci, w_ref : astropy.wcs.WCS
    path_sci, path_ref : Path
    plate_scale : float
        Arcsec/px (header PIXSCALE).
    """

    def __init__(
        self,
        path_base: str | Path,
        name: str,
        config: Mapping[str, Any] | None = None,
        client: IrsaClient | None = None,
        verbose: bool = False,
        fetch_data_only: bool = False,
        *,
        download: bool = True,
    ) -> None:
        self.frame: Frame | None = parse_frame(name)
        self.name = self.frame.name
        self.path_base = Path(path_base)
        self.verbose = verbose
        self.fetch_data_only = fetch_data_only
        self.path_sci = sci_path(self.frame, self.path_base, SCI_SUFFIX)
        self.path_ref = ref_path(self.frame, self.path_base)
        self.path_zogy = sci_path(self.frame, self.path_base, DIFF_SUFFIX)
        self.ref_projected: np.ndarray | None = None
        if download:
            if client is None:
                if config is None:
                    from .config import load_config

                    config = load_config()
                client = IrsaClient.from_config(config)
            self._log("fetching %s into %s", self.name, self.path_base)
            paths = client.fetch_frame(self.frame, self.path_base)
            self.path_sci, self.path_zogy, self.path_ref = paths.sci, paths.diff, paths.ref
        if not fetch_data_only:
            self._load()

    @classmethod
    def _from_paths(
        cls, sci: str | Path, ref: str | Path, diff: str | Path | None, name: str | None, verbose: bool
    ):
        self = cls.__new__(cls)
        self.path_sci = Path(sci)
        self.path_ref = Path(ref)
        self.path_zogy = Path(diff) if diff is not None else None
        self.path_base = self.path_sci.parent
        self.verbose = verbose
        self.fetch_data_only = False
        self.ref_projected = None
        if name is None:
            stem = self.path_sci.name
            guess = stem[: -len("_" + SCI_SUFFIX)] if stem.endswith("_" + SCI_SUFFIX) else stem
            try:
                self.frame = parse_frame(guess)
                self.name = self.frame.name
            except ValueError:
                self.frame, self.name = None, guess
        else:
            self.frame = parse_frame(name)
            self.name = self.frame.name
        self._load()
        return self

    @classmethod
    def from_files(
        cls, sci: str | Path, ref: str | Path, *, name: str | None = None, verbose: bool = False
    ) -> "Dvoika":
        """Load a science image and its reference from given files (no download)."""
        return cls._from_paths(sci, ref, None, name, verbose)

    # -- loading ---------------------------------------------------------------------------
    def _log(self, msg: str, *args: object) -> None:
        logger.log(logging.INFO if self.verbose else logging.DEBUG, msg, *args)

    def _load(self) -> None:
        self._log("loading %s", self.path_sci)
        self.sci, self.header_sci = load_image(self.path_sci, SCI_HDU)
        self.ref, self.header_ref = load_image(self.path_ref, REF_HDU)
        self.w_sci = _wcs(self.header_sci)
        self.w_ref = _wcs(self.header_ref)
        if not self.w_sci.has_celestial:
            raise ValueError(f"{self.path_sci} has no celestial WCS")
        self.plate_scale = float(self.header_sci.get("PIXSCALE", PLATE_SCALE))
        if self.sci.shape != FRAME_SHAPE:
            logger.warning(
                "%s: science image is %d x %d, not a ZTF ccd-quadrant's %d x %d; handling it anyway",
                self.name,
                *self.sci.shape,
                *FRAME_SHAPE,
            )

    # -- coordinates -----------------------------------------------------------------------
    def pix2world_sci(self, x: float | np.ndarray, y: float | np.ndarray) -> tuple[Any, Any]:
        """Science pixel (x = column, y = row; 0-based) to (RA, Dec) in degrees.

        Scalars in, floats out; arrays in, arrays out.
        """
        scalar = np.ndim(x) == 0 and np.ndim(y) == 0
        ra, dec = self.w_sci.wcs_pix2world(np.atleast_1d(x), np.atleast_1d(y), 0)
        return _scalar_or_array(ra, scalar), _scalar_or_array(dec, scalar)

    def world2pix_sci(
        self, ra: float | np.ndarray, dec: float | np.ndarray, to_int: bool = False
    ) -> tuple[Any, Any]:
        """(RA, Dec) in degrees to science pixel (x = column, y = row; 0-based).

        ``to_int`` rounds to the nearest pixel.
        """
        return self._world2pix(self.w_sci, ra, dec, to_int)

    def world2pix_ref(
        self, ra: float | np.ndarray, dec: float | np.ndarray, to_int: bool = False
    ) -> tuple[Any, Any]:
        """(RA, Dec) in degrees to reference pixel (0-based, x = column)."""
        return self._world2pix(self.w_ref, ra, dec, to_int)

    @staticmethod
    def _world2pix(w: WCS, ra, dec, to_int: bool) -> tuple[Any, Any]:
        scalar = np.ndim(ra) == 0 and np.ndim(dec) == 0
        x, y = w.wcs_world2pix(np.atleast_1d(ra), np.atleast_1d(dec), 0)
        if to_int:
            x, y = np.rint(x).astype(int), np.rint(y).astype(int)
            return (int(x[0]), int(y[0])) if scalar else (x, y)
        return _scalar_or_array(x, scalar), _scalar_or_array(y, scalar)

    # -- alignment and tiles ---------------------------------------------------------------
    def reproject_ref2sci(self, how: str = "swarp", nthreads: int = 1, **kwargs: Any) -> np.ndarray:
        """The reference re-projected onto the science grid (NaN outside its footprint).

        Parameters
        ----------
        how : {"swarp", "reproject"}
            SWarp with the original's settings (falling back to ``reproject`` with one warning
            when SWarp is missing), or the ``reproject`` package.
        nthreads : int
            SWarp threads.

        Returns
        -------
        ndarray, float32, the science image's shape.  Also kept as ``self.ref_projected``.
        """
        from .swarp import reproject_ref

        if kwargs:
            logger.debug("reproject_ref2sci: ignoring %s", sorted(kwargs))
        self.ref_projected = reproject_ref(
            self.ref, self.header_ref, self.header_sci, self.sci.shape, how=how, nthreads=nthreads
        )
        return self.ref_projected

    def tessellate_boxes(
        self, box_size_pix: int = TILE_SIZE, offset: int = TILE_OFFSET
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Tile boxes over the science image: see :func:`tessellate` (xboxes are row ranges)."""
        return tessellate(self.sci.shape, box_size_pix, offset)

    def channels(self, ref: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """The model's input images on the science grid: sci and the re-projected reference.

        ``ref`` is the re-projected reference (``self.ref_projected``, or computed with SWarp,
        if not given).  A :class:`Troika` adds the difference image.
        """
        if ref is None:
            ref = self.ref_projected if self.ref_projected is not None else self.reproject_ref2sci()
        return (self.sci, ref)

    def tiles(
        self,
        box_size_pix: int = TILE_SIZE,
        offset: int = TILE_OFFSET,
        ref: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The frame's raw tiles and their (row0, col0) offsets: see :func:`tile_stack`.

        ``ref`` is the re-projected reference (computed with SWarp if not given).
        """
        xboxes, yboxes = self.tessellate_boxes(box_size_pix, offset)
        return tile_stack(self.channels(ref), xboxes, yboxes)

    def make_box(
        self,
        ra: float,
        dec: float,
        box_size_pix: int = TILE_SIZE,
        min_offset: int = 10,
        random: bool = True,
        seed: int | None = None,
    ) -> tuple[list[int], list[int], float, float]:
        """A box of ``box_size_pix`` around a sky position, shifted at random, inside the image.

        As in the original, the position lands at a random offset in
        ``[min_offset, box_size_pix - min_offset)`` from the box's corner (or at its centre if
        ``random`` is False); the box is then moved inside the image if it sticks out.

        Returns
        -------
        xbox : [start, stop]
            Column range (note: columns, as in the original's ``make_box``).
        ybox : [start, stop]
            Row range.
        ra, dec : float
            Sky position of the box centre.
        """
        box = int(box_size_pix)
        ny, nx = self.sci.shape
        if ny < box or nx < box:
            raise ValueError(f"a {box} px box does not fit in the {ny} x {nx} image")
        if random:
            rng = np.random.default_rng(seed)
            xoffset, yoffset = (int(v) for v in rng.integers(min_offset, box - min_offset, 2))
        else:
            xoffset = yoffset = box // 2
        x, y = self.world2pix_sci(ra, dec, to_int=True)
        x0 = min(max(x - xoffset, 0), nx - box)
        y0 = min(max(y - yoffset, 0), ny - box)
        xbox, ybox = [x0, x0 + box], [y0, y0 + box]
        ra_c, dec_c = self.pix2world_sci(x0 + (box - 1) // 2, y0 + (box - 1) // 2)
        return xbox, ybox, ra_c, dec_c

    def cutout(
        self, x: float, y: float, size: int = CUTOUT_SIZE, ref: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Cutouts centred on science pixel (x = column, y = row), NaN-padded at the edges.

        Returns
        -------
        dict
            ``"sci"``, ``"ref"`` (the re-projected reference; ``ref`` or
            ``self.ref_projected``, computed if needed) and, for a Troika, ``"diff"``.
        """
        names = ("sci", "ref", "diff")
        return {k: cutout(a, x, y, size) for k, a in zip(names, self.channels(ref))}

    # -- housekeeping ----------------------------------------------------------------------
    def cleanup(self, ref: bool = True, sci: bool = True) -> list[Path]:
        """Delete the cached files of this frame: the science products and/or the reference.

        Returns the paths deleted.  Missing files are ignored.
        """
        doomed: list[Path] = []
        if sci:
            doomed += sorted(self.path_sci.parent.glob(f"{self.name}_*"))
            doomed += [p for p in (self.path_sci, self.path_zogy) if p is not None]
        if ref:
            doomed.append(self.path_ref)
        removed = []
        for p in dict.fromkeys(doomed):
            try:
                p.unlink()
                removed.append(p)
                self._log("removed %s", p)
            except FileNotFoundError:
                pass
            except OSError as e:
                logger.warning("could not remove %s: %s", p, e)
        return removed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Troika(Dvoika):
    """A ZTF science image, its reference and their ZOGY difference image.

    Same parameters as :class:`Dvoika`; adds ``zogy`` (float32, HDU 1 of
    ``scimrefdiffimg.fits.fz``), ``header_zogy`` and ``path_zogy``, and ``zogy_pedestal``: the
    level subtracted from the difference image when its sky lies ``DIFF_PEDESTAL_SIGMA`` or more
    of its sigmas from zero (0.0 otherwise, when it is left as it is).
    """

    @classmethod
    def from_files(  # type: ignore[override]
        cls,
        sci: str | Path,
        ref: str | Path,
        diff: str | Path,
        *,
        name: str | None = None,
        verbose: bool = False,
    ) -> "Troika":
        """Load from given files: science (HDU 0), reference (HDU 0), difference (HDU 1).

        The arrays are read into memory, so the files may be deleted afterwards.
        """
        return cls._from_paths(sci, ref, diff, name, verbose)

    def _load(self) -> None:
        super()._load()
        if self.path_zogy is None:
            raise ValueError("a Troika needs a difference image")
        self.zogy, self.header_zogy = load_image(self.path_zogy, DIFF_HDU)
        if self.zogy.shape != self.sci.shape:
            raise ValueError(
                f"{self.path_zogy}: difference image is {self.zogy.shape}, the science image "
                f"{self.sci.shape}; they must be on one grid"
            )
        self.zogy_pedestal = self._remove_pedestal()

    def _remove_pedestal(self) -> float:
        """Subtract the difference image's sky level if it lies ``DIFF_PEDESTAL_SIGMA`` or more
        from zero, and return what was subtracted (0.0 if nothing was).

        Pixels of exactly 0, where the reference does not reach, are neither measured nor
        changed: they stay the empty difference that the model learnt them as."""
        step = max(1, int(np.sqrt(self.zogy.size / PEDESTAL_PIXELS)))
        sample = self.zogy[::step, ::step]
        try:
            level, sigma = background(sample[sample != 0])
        except ValueError:
            return 0.0  # all NaN or 0: preprocessing skips its tiles
        if sigma <= 0 or abs(level) < DIFF_PEDESTAL_SIGMA * sigma:
            return 0.0
        logger.warning(
            "%s: the difference image's sky is %.3g DN, %.2f of its sigmas from zero; subtracted, "
            "for the model takes such a pedestal for comets", self.name, level, level / sigma,
        )
        sky = self.zogy != 0
        self.zogy[sky] -= np.float32(level)
        return float(level)

    def channels(self, ref: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """sci, the re-projected reference and the difference image (see :meth:`Dvoika.channels`)."""
        return (*super().channels(ref), self.zogy)
