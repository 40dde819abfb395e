"""Kowalski: which ZTF exposures were taken in a time window (collection ``ZTF_ops``).

Kowalski is the MongoDB-backed ZTF data broker; its Python client is the PyPI package
``penquins`` (ZTF.md, "Names and URLs").  One ``find`` query on ``ZTF_ops`` returns the
``fileroot`` of every exposure whose ``jd_start`` lies in a window; the Twilight survey is
picked out by ``qcomment`` matching ``"Twilight"``, exactly as the original sentinel does.

The functions that build the query and read the answer are pure; only
:func:`make_kowalski`, :func:`query_fileroots` and :func:`fileroots_for_night` talk to the
service.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Mapping

__all__ = [
    "KowalskiError",
    "ZTF_OPS",
    "fileroots_query",
    "parse_fileroots",
    "make_kowalski",
    "query_fileroots",
    "night_window",
    "fileroots_for_night",
    "jd_from_datetime",
]

log = logging.getLogger(__name__)

#: The Kowalski collection with one document per ZTF exposure (ZTF.md).
ZTF_OPS = "ZTF_ops"

#: Julian date of the Unix epoch, 1970-01-01T00:00:00 UTC.
_JD_UNIX_EPOCH = 2440587.5


class KowalskiError(RuntimeError):
    """Kowalski could not be reached, refused the credentials, or answered with an error."""


def jd_from_datetime(t: dt.datetime) -> float:
    """Julian date (UTC) of a datetime; naive datetimes are taken as UTC.

    Exact for UTC as Kowalski stores ``jd_start`` (no leap-second bookkeeping is needed for a
    query window).
    """
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return _JD_UNIX_EPOCH + t.timestamp() / 86400.0


def fileroots_query(jd_start: float, jd_end: float, twilight: bool = False) -> dict[str, Any]:
    """The ``find`` query on ``ZTF_ops`` for exposures with ``jd_start`` in ``(jd_start, jd_end)``.

    Parameters
    ----------
    jd_start, jd_end : float
        Open interval of exposure start times (JD, UTC).
    twilight : bool
        Only exposures of the Twilight survey (``qcomment`` matching ``"Twilight"``).

    Returns
    -------
    dict
        A query for ``penquins.Kowalski.query`` (ZTF.md, "Names and URLs").

    Raises
    ------
    ValueError
        If the window is empty or reversed.
    """
    jd_start, jd_end = float(jd_start), float(jd_end)
    if not jd_end > jd_start:
        raise ValueError(
            f"the time window is empty: jd_end ({jd_end}) must be after jd_start ({jd_start})"
        )
    flt: dict[str, Any] = {"jd_start": {"$gt": jd_start, "$lt": jd_end}}
    if twilight:
        flt["qcomment"] = {"$regex": "Twilight"}
    return {
        "query_type": "find",
        "query": {
            "catalog": ZTF_OPS,
            "filter": flt,
            "projection": {"_id": 0, "fileroot": 1},
        },
    }


def _unwrap(response: Any) -> Mapping[str, Any]:
    """penquins >= 2.3 returns ``{instance_name: answer}``; older versions the answer itself."""
    if isinstance(response, Mapping) and "status" not in response and len(response) == 1:
        (inner,) = response.values()
        if isinstance(inner, Mapping):
            return inner
    if not isinstance(response, Mapping):
        raise KowalskiError(f"Kowalski answered with {type(response).__name__}, not a mapping")
    return response


def parse_fileroots(response: Any) -> list[str]:
    """The sorted, de-duplicated fileroots of a ``ZTF_ops`` answer.

    Raises
    ------
    KowalskiError
        If the answer is an error, or holds no ``data`` list.
    """
    answer = _unwrap(response)
    status = answer.get("status")
    if status != "success":
        raise KowalskiError(
            f"Kowalski query failed (status {status!r}): {answer.get('message', answer)}"
        )
    data = answer.get("data")
    if not isinstance(data, list):
        raise KowalskiError(f"Kowalski answer has no data list: {answer!r:.200}")
    roots = {doc["fileroot"] for doc in data if isinstance(doc, Mapping) and doc.get("fileroot")}
    return sorted(roots)


def make_kowalski(config: Mapping[str, Any]):
    """A ``penquins.Kowalski`` client from the ``kowalski`` section of the configuration.

    A non-empty ``token`` is used as is; otherwise ``username`` and ``password`` are exchanged
    for a token at ``/api/auth``.

    Raises
    ------
    KowalskiError
        If no credentials are configured or the client cannot connect.
    """
    from penquins import Kowalski

    kcfg = config["kowalski"]
    token = kcfg.get("token") or None
    username = kcfg.get("username") or None
    password = kcfg.get("password") or None
    if token is None and (username is None or password is None):
        raise KowalskiError(
            "no Kowalski credentials: set kowalski.token, or kowalski.username and "
            "kowalski.password, in config.yaml"
        )
    try:
        return Kowalski(
            token=token,
            username=None if token else username,
            password=None if token else password,
            protocol=kcfg["protocol"],
            host=kcfg["host"],
            port=int(kcfg["port"]),
            timeout=float(kcfg["timeout"]),
        )
    except Exception as e:  # penquins raises ValueError/Exception with the reason
        raise KowalskiError(
            f"cannot connect to Kowalski at {kcfg['protocol']}://{kcfg['host']}:{kcfg['port']}: {e}"
        ) from e


def query_fileroots(kowalski: Any, jd_start: float, jd_end: float, twilight: bool = False) -> list[str]:
    """Fileroots of the ZTF exposures started in ``(jd_start, jd_end)``.

    Parameters
    ----------
    kowalski : penquins.Kowalski
        A connected client (:func:`make_kowalski`).
    jd_start, jd_end : float
        The window (JD, UTC).
    twilight : bool
        Only the Twilight survey.

    Returns
    -------
    list of str
        Sorted fileroots, e.g. ``["ztf_20191014495961_000570_zr"]``.

    Raises
    ------
    KowalskiError
        If the request fails or Kowalski answers with an error.
    """
    query = fileroots_query(jd_start, jd_end, twilight)
    try:
        response = kowalski.query(query=query)
    except Exception as e:
        raise KowalskiError(f"Kowalski query of {ZTF_OPS} failed: {e}") from e
    roots = parse_fileroots(response)
    log.debug("Kowalski: %d exposure(s) in JD (%.5f, %.5f)", len(roots), jd_start, jd_end)
    return roots


def night_window(date: str) -> tuple[float, float]:
    """The JD window of a UTC date ``YYYYMMDD``: from its 00:00 to the next day's 00:00 UTC.

    ZTF names frames by the UTC date of the exposure (ZTF.md, "Names and URLs"), and a
    Palomar night falls within one UTC date, so this window holds exactly the frames named
    ``ztf_{date}...``.

    Raises
    ------
    ValueError
        If ``date`` is not a valid ``YYYYMMDD``.
    """
    try:
        day = dt.datetime.strptime(str(date), "%Y%m%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ValueError(f"bad date {date!r}: expected YYYYMMDD, e.g. 20191014") from None
    start = jd_from_datetime(day)
    return start, start + 1.0


def fileroots_for_night(config: Mapping[str, Any], date: str, twilight: bool = False) -> list[str]:
    """Fileroots of all exposures of one UTC date, asking the Kowalski of the configuration.

    Used by ``run_tails.py --date``.  Exposures outside the date (by name) are dropped.

    Raises
    ------
    ValueError
        For a bad date.
    KowalskiError
        If Kowalski cannot be reached or answers with an error.
    """
    jd0, jd1 = night_window(date)
    kowalski = make_kowalski(config)
    roots = query_fileroots(kowalski, jd0, jd1, twilight=twilight)
    return [r for r in roots if r.startswith(f"ztf_{date}")]
