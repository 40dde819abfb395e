"""Downloads of ZTF products from IRSA (or a local mirror in IRSA's layout).

:class:`IrsaClient` fetches the science, difference and reference images of a frame into the
cache layout of :mod:`tails.frames`:

- one :class:`requests.Session` per client; for proprietary data (``username`` other than
  ``"anonymous"``) it logs in once at ``url_login`` with ``josso_cmd=login``,
  ``josso_username`` and ``josso_password`` and keeps the returned cookies (ZTF.md,
  "Names and URLs");
- downloads stream into a temporary file in the destination directory, are checked to be
  readable FITS with an image in the expected HDU, and only then are moved into place with
  :func:`os.replace`, so the cache never holds a partial file;
- a valid cached file is never fetched again; an invalid one is fetched anew;
- time-outs, connection errors, incomplete bodies, HTTP 429 and 5xx are retried with exponential
  backoff (``backoff_factor * 2**attempt`` seconds); 401, 403 and 404 are not retried;
- ``file://`` base URLs (a local mirror in IRSA's layout) are copied with the same checks.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import requests
from astropy.io import fits

from .frames import DIFF_SUFFIX, SCI_SUFFIX, Frame, parse_frame, ref_path, ref_url, sci_path, sci_url

__all__ = [
    "DownloadError",
    "NotFoundError",
    "FramePaths",
    "IrsaClient",
    "validate_fits",
    "SCI_HDU",
    "REF_HDU",
    "DIFF_HDU",
]

logger = logging.getLogger(__name__)

#: HDU that holds the image of each product (ZTF.md, "Camera and images": the science and
#: reference images are plain FITS, the difference image is fpack-compressed in HDU 1).
SCI_HDU = 0
REF_HDU = 0
DIFF_HDU = 1

#: Bytes per chunk when streaming a download to disk.
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A product could not be downloaded, or what came back is not a valid FITS image."""


class NotFoundError(DownloadError):
    """The server has no such product (HTTP 404, or a missing file in a ``file://`` mirror)."""


class FramePaths(NamedTuple):
    """Cached paths of one frame's products."""

    sci: Path
    diff: Path
    ref: Path


def validate_fits(path: str | Path, hdu: int = 0, *, read_data: bool = True) -> tuple[int, ...]:
    """Check that a file is readable FITS holding a 2-d image in HDU ``hdu``.

    Parameters
    ----------
    path : str or Path
        The FITS file.
    hdu : int
        Index of the HDU that must hold the image.
    read_data : bool
        Read (and decompress, for tile-compressed HDUs) the image data, which catches any
        truncated or corrupt file: what a download must pass to enter the cache.  False reads
        the headers only, and checks that the file is long enough for the data its last HDU
        declares, to within FITS's padding to 2880-byte blocks: the quick check of a cache hit,
        which catches a file cut short since without decompressing the difference image again
        on every run (0.25 s of the 0.55 s that loading a ccd-quadrant took;
        ``scripts/benchmark.py``).

    Returns
    -------
    tuple of int
        The image shape (rows, columns).

    Raises
    ------
    DownloadError
        Saying what is wrong with the file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=read_data) as hdul:
                if len(hdul) <= hdu:
                    raise DownloadError(
                        f"{path} is corrupt or incomplete: it has {len(hdul)} HDU(s), "
                        f"the image should be in HDU {hdu}"
                    )
                if read_data:
                    data = hdul[hdu].data
                    shape = None if data is None else data.shape
                else:
                    h = hdul[hdu].header
                    z = "Z" if "ZNAXIS" in h else ""  # a compressed image astropy did not unwrap
                    shape = tuple(int(h[f"{z}NAXIS{i}"]) for i in range(int(h[f"{z}NAXIS"]), 0, -1))
                    info = hdul.fileinfo(len(hdul) - 1)
                    end = info["datLoc"] + info["datSpan"]
                    if path.stat().st_size <= end - 2880:
                        raise DownloadError(
                            f"{path} is truncated: {path.stat().st_size} bytes, its headers declare {end}"
                        )
                if shape is None or len(shape) != 2:
                    raise DownloadError(f"{path} holds no 2-d image in HDU {hdu} (found {shape})")
                return tuple(int(n) for n in shape)
    except DownloadError:
        raise
    except Exception as e:  # astropy raises OSError, TypeError, IndexError... on bad files
        raise DownloadError(f"{path} is corrupt or incomplete FITS: {e}") from e


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head"))


def _is_file_url(url: str) -> bool:
    return url.lower().startswith("file:")


def _file_url_to_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.request.url2pathname(parsed.path))


class IrsaClient:
    """Download ZTF products from IRSA over http(s), or copy them from a ``file://`` mirror.

    Parameters
    ----------
    url : str
        Base URL of the products tree (``sci/`` and ``ref/`` hang below it), e.g.
        ``https://irsa.ipac.caltech.edu/ibe/data/ztf/products/`` or ``file:///data/irsa/``.
    url_login : str
        IRSA login endpoint; used only when ``username`` is not ``"anonymous"``.
    username, password : str
        IRSA account; ``"anonymous"`` for public data.
    timeout : float
        Seconds to wait for the server (connect and read).
    retries : int
        Retries after the first attempt on time-outs, connection errors, incomplete bodies,
        HTTP 429 and 5xx.  401, 403 and 404 are never retried.
    backoff_factor : float
        Sleep ``backoff_factor * 2**attempt`` seconds before retry ``attempt`` (0-based).

    Examples
    --------
    >>> client = IrsaClient("https://irsa.ipac.caltech.edu/ibe/data/ztf/products/")  # doctest: +SKIP
    >>> paths = client.fetch_frame("ztf_20191014495961_000570_zr_c05_o_q3", "data")  # doctest: +SKIP
    >>> paths.sci, paths.diff, paths.ref  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        url_login: str = "",
        username: str = "anonymous",
        password: str = "",
        timeout: float = 60,
        retries: int = 3,
        backoff_factor: float = 1.0,
    ) -> None:
        if not url:
            raise ValueError("IrsaClient needs a base URL (config key irsa.url)")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url
        self.url_login = url_login
        self.username = username or "anonymous"
        self.password = password
        self.timeout = timeout
        self.retries = int(retries)
        self.backoff_factor = float(backoff_factor)
        self.session = requests.Session()
        self._logged_in = False
        self._login_lock = threading.Lock()
        # one lock per destination, so that threads fetching the same file (e.g. the reference
        # shared by all exposures of a field) download it once
        self._path_locks: dict[Path, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "IrsaClient":
        """Build a client from a Tails config (its ``irsa`` section, or that section itself)."""
        section = config.get("irsa", config)
        return cls(
            url=section["url"],
            url_login=section.get("url_login", ""),
            username=section.get("username", "anonymous"),
            password=section.get("password", ""),
            timeout=section.get("timeout", 60),
            retries=section.get("retries", 3),
            backoff_factor=section.get("backoff_factor", 1.0),
        )

    # -- context manager -------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def __enter__(self) -> "IrsaClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IrsaClient(url={self.url!r}, username={self.username!r})"

    # -- login -----------------------------------------------------------------------------
    def login(self) -> None:
        """Log in at ``url_login`` (once per client) so that the session holds IRSA's cookies.

        Does nothing for ``username="anonymous"``.

        Raises
        ------
        DownloadError
            If the login endpoint cannot be reached or refuses the credentials.
        """
        if self.username == "anonymous":
            return
        with self._login_lock:
            if self._logged_in:
                return
            if not self.url_login:
                raise DownloadError(
                    f"IRSA user {self.username!r} is set but irsa.url_login is empty: "
                    "set it to IRSA's login endpoint"
                )
            params = {
                "josso_cmd": "login",
                "josso_username": self.username,
                "josso_password": self.password,
            }
            try:
                r = self.session.get(self.url_login, params=params, timeout=self.timeout)
            except requests.RequestException as e:
                raise DownloadError(f"IRSA login at {self.url_login} failed: {e}") from e
            if r.status_code != 200:
                raise DownloadError(
                    f"IRSA login at {self.url_login} for user {self.username!r} failed with "
                    f"HTTP {r.status_code}: check irsa.username and irsa.password"
                )
            if not self.session.cookies:
                logger.warning("IRSA login for %r returned no cookies", self.username)
            self._logged_in = True
            logger.debug("logged in at %s as %s", self.url_login, self.username)

    # -- downloads -------------------------------------------------------------------------
    def download(
        self,
        url: str,
        path: str | Path,
        *,
        hdu: int = 0,
        what: str = "file",
        context: str = "",
        force: bool = False,
    ) -> Path:
        """Download ``url`` to ``path``, unless a valid copy is cached there already.

        Parameters
        ----------
        url : str
            http(s):// or file:// URL.
        path : str or Path
            Destination; parent folders are created.
        hdu : int
            HDU that must hold the image for the file to count as valid.
        what : str
            What the file is, for error messages (e.g. ``"science image"``).
        context : str
            Appended to error messages (e.g. ``"for frame ztf_..."``).
        force : bool
            Fetch even if a valid cached copy exists.

        Returns
        -------
        Path
            ``path``.

        Notes
        -----
        Thread-safe: concurrent calls for the same ``path`` download it once.

        Raises
        ------
        NotFoundError
            The server has no such file (404, or missing in a ``file://`` mirror).
        DownloadError
            Unauthorised (401/403), retries exhausted, or the file is corrupt.  No partial file
            is left behind.
        """
        path = Path(path)
        with self._locks_lock:
            lock = self._path_locks.setdefault(path.resolve(), threading.Lock())
        with lock:
            return self._download(url, path, hdu=hdu, what=what, context=context, force=force)

    def _download(self, url: str, path: Path, *, hdu: int, what: str, context: str, force: bool) -> Path:
        if not force and path.exists():
            try:
                validate_fits(path, hdu, read_data=False)
                logger.debug("cache hit: %s", path)
                return path
            except DownloadError as e:
                logger.warning("cached %s is invalid (%s); fetching it again", path, e)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            label = f"{what} at {url}" + (f" {context}" if context else "")
            if _is_file_url(url):
                self._copy_file(url, tmp, label)
            else:
                self._fetch_http(url, tmp, label)
            try:
                validate_fits(tmp, hdu)
            except DownloadError as e:
                if _looks_like_html(tmp):
                    raise DownloadError(
                        f"the {label} is an HTML page, not FITS (a login or error page?); "
                        "nothing was kept: for proprietary data set irsa.username and "
                        "irsa.password, otherwise check irsa.url"
                    ) from e
                raise DownloadError(
                    f"the {label} was corrupt or truncated ({e}); "
                    "nothing was kept: try again later"
                ) from e
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("fetched %s", path)
        return path

    def _copy_file(self, url: str, tmp: Path, label: str) -> None:
        src = _file_url_to_path(url)
        if not src.is_file():
            raise NotFoundError(f"no {label}")
        shutil.copyfile(src, tmp)

    def _fetch_http(self, url: str, tmp: Path, label: str) -> None:
        self.login()
        attempts = self.retries + 1
        last: str = ""
        for attempt in range(attempts):
            if attempt:
                delay = self.backoff_factor * 2 ** (attempt - 1)
                logger.info(
                    "retrying %s in %.1f s (attempt %d of %d): %s", url, delay, attempt + 1, attempts, last
                )
                time.sleep(delay)
            try:
                with self.session.get(url, stream=True, timeout=self.timeout, allow_redirects=True) as r:
                    status = r.status_code
                    if status == 404:
                        raise NotFoundError(f"no {label}")
                    if status in (401, 403):
                        raise DownloadError(
                            f"not authorised to fetch the {label} (HTTP {status}): "
                            "proprietary data need irsa.username and irsa.password"
                        )
                    if status >= 500 or status == 429:
                        last = f"HTTP {status}"
                        continue
                    if status != 200:
                        raise DownloadError(f"fetching the {label} failed with HTTP {status}")
                    with open(tmp, "wb") as f:
                        for chunk in r.iter_content(chunk_size=_CHUNK):
                            f.write(chunk)
                return
            except (
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as e:
                last = f"the body was truncated or corrupt ({e})"
                continue
            except (requests.Timeout, requests.ConnectionError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
        raise DownloadError(
            f"could not fetch the {label} after {attempts} attempt(s), nothing was kept; "
            f"last error: {last}"
        )

    def fetch_frame(self, frame: Frame | str, data_dir: str | Path) -> FramePaths:
        """Fetch (or find cached) a frame's science, difference and reference images.

        Parameters
        ----------
        frame : Frame or str
            The frame or its name, e.g. ``ztf_20191014495961_000570_zr_c05_o_q3``.
        data_dir : str or Path
            Cache root; files land at :func:`tails.frames.sci_path` and
            :func:`tails.frames.ref_path`.

        Returns
        -------
        FramePaths
            ``.sci``, ``.diff`` and ``.ref`` paths.
        """
        f = frame if isinstance(frame, Frame) else parse_frame(frame)
        sci = self.download(
            sci_url(f, self.url, SCI_SUFFIX),
            sci_path(f, data_dir, SCI_SUFFIX),
            hdu=SCI_HDU,
            what="science image",
            context=f"for frame {f.name}",
        )
        diff = self.download(
            sci_url(f, self.url, DIFF_SUFFIX),
            sci_path(f, data_dir, DIFF_SUFFIX),
            hdu=DIFF_HDU,
            what="difference image",
            context=f"for frame {f.name}",
        )
        ref = self.download(
            ref_url(f, self.url),
            ref_path(f, data_dir),
            hdu=REF_HDU,
            what="reference image",
            context=f"for field {f.field:06d} c{f.ccd:02d} q{f.quad} {f.filter}",
        )
        return FramePaths(sci=sci, diff=diff, ref=ref)
