"""ZTF alert packets: reading them, and the triplet of their 63 x 63 science, template and
difference cutouts."""

from __future__ import annotations

import gzip
import io
import os
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

__all__ = ["ALERT_CUTOUT_SIZE", "make_triplet", "read_alerts"]

#: ZTF alert cutouts are 63 x 63 pixels, smaller at CCD edges (ztf-avro-alert schema).
ALERT_CUTOUT_SIZE = 63


def _cutout_data(cutout: Mapping | bytes) -> np.ndarray:
    stamp = cutout["stampData"] if isinstance(cutout, Mapping) else cutout
    raw = bytes(stamp)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    # alert stamps carry a slightly non-standard SIMPLE card; the data are fine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        with fits.open(io.BytesIO(raw)) as hdul:
            for hdu in hdul:
                if hdu.data is not None:
                    return np.asarray(hdu.data, dtype=np.float32)
    raise ValueError("alert cutout holds no image data")


def make_triplet(alert: Mapping, normalize: bool = False) -> np.ndarray:
    """Stack an alert's science, template and difference cutouts into a (63, 63, 3) array.

    Like the original: NaN -> 0, optional per-channel L2 normalisation, and cutouts truncated
    at CCD edges padded to 63 x 63 with 1e-9.

    Parameters
    ----------
    alert : mapping
        An alert packet (as read by fastavro or pyarrow) with ``cutoutScience``,
        ``cutoutTemplate`` and ``cutoutDifference``, each a mapping with ``stampData`` (gzipped
        FITS bytes) or the bytes themselves.
    normalize : bool
        Divide each channel by its L2 norm (when non-zero).

    Returns
    -------
    ndarray, shape (63, 63, 3), float32
    """
    n = ALERT_CUTOUT_SIZE
    triplet = np.zeros((n, n, 3), dtype=np.float32)
    for i, key in enumerate(("cutoutScience", "cutoutTemplate", "cutoutDifference")):
        if key not in alert or alert[key] is None:
            raise KeyError(f"alert packet has no {key}")
        data = np.nan_to_num(_cutout_data(alert[key]))
        if normalize:
            norm = np.linalg.norm(data)
            if norm > 0:
                data = data / norm
        h, w = data.shape
        if (h, w) != (n, n):
            data = np.pad(data[:n, :n], [(0, max(n - h, 0)), (0, max(n - w, 0))],
                          constant_values=1e-9)
        triplet[..., i] = data
    return triplet


def read_alerts(path: str | os.PathLike) -> list[dict]:
    """The alert packets of one file: Avro (``.avro``, with fastavro) or Parquet (with pyarrow).

    ZTF brokers serve alerts in both: IPAC's stream and Kowalski in Avro, Fink in Parquet too
    (``../shared/data/ztf_real/alerts/README.md``).  Each packet is a dict with ``candid``,
    ``candidate`` and the three ``cutout*`` fields, as :func:`make_triplet` takes them.

    Raises
    ------
    ValueError
        If the file is neither ``.avro`` nor ``.parquet``.
    ImportError
        If the reader it needs is not installed (both come with ``pip install -e .[test]``).
    """
    path = Path(path)
    if path.suffix == ".avro":
        import fastavro

        with open(path, "rb") as fh:
            return list(fastavro.reader(fh))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: not an alert file (.avro or .parquet)")
