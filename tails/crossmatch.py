"""Cross-matches of candidates with known solar-system objects: MPC's MPChecker and IMCCE's SkyBoT.

Both services are asked for the objects within 2 arcmin of a candidate at the time of the
exposure, as seen from Palomar (I41), as the original sentinel does (ZTF.md, "Fritz and
cross-match services").

* MPChecker is an HTML form: a POST to ``neocmtcheck.cgi`` with the fields of ZTF.md; the answer
  is an HTML page whose ``<pre>`` table lists designation, RA, Dec, V, offsets, motions and orbit.
  It is read with :mod:`html.parser` and regular expressions (:func:`parse_mpchecker`).
* SkyBoT is a GET cone search with the parameters ``astroquery.imcce.Skybot.cone_search`` sends
  (:func:`skybot_params`); its VOTable answer is read with :mod:`astropy.io.votable` and its
  columns get astroquery's names (Name, Number, RA, DEC, Type, V, centerdist, ...).

A query never raises for a service problem: it returns ``{"status": "error", "message": ...}``
so that the sentinel records the error in the annotation and posts the candidate all the same.
A success is ``{"status": "success", "data": [row, ...]}``, the nearest object first.
"""

from __future__ import annotations

import html
import io
import logging
import re
from html.parser import HTMLParser
from typing import Any, Mapping

import requests

__all__ = [
    "MPChecker",
    "SkyBot",
    "mpchecker_form",
    "parse_mpchecker",
    "skybot_params",
    "parse_skybot",
    "crossmatch",
    "SKYBOT_COLUMNS",
]

log = logging.getLogger(__name__)

#: SkyBoT VOTable field IDs -> the column names of astroquery.imcce.Skybot (its conf.field_names).
SKYBOT_COLUMNS = {
    "num": "Number", "name": "Name", "ra": "RA", "de": "DEC", "class": "Type", "magV": "V",
    "errpos": "posunc", "angdist": "centerdist", "dracosdec": "RA_rate", "ddec": "DEC_rate",
    "dgeo": "geodist", "dhelio": "heliodist", "phase": "alpha", "solelong": "elong",
    "px": "x", "py": "y", "pz": "z", "vx": "vx", "vy": "vy", "vz": "vz", "jdref": "epoch",
}


def _error(message: str) -> dict:
    return {"status": "error", "message": message}


# -- MPChecker -------------------------------------------------------------------------------
def mpchecker_form(
    coord: Any,
    epoch: Any,
    radius_arcmin: float = 2.0,
    limit: float = 24.0,
    observatory_code: str = "I41",
) -> dict[str, str]:
    """The MPChecker form fields for a position and time (ZTF.md).

    Parameters
    ----------
    coord : astropy.coordinates.SkyCoord
        Candidate position (ICRS).
    epoch : astropy.time.Time
        Time of the exposure (UTC).
    radius_arcmin : float
        Search radius.
    limit : float
        Limiting V magnitude.
    observatory_code : str
        MPC observatory code; I41 is ZTF at Palomar.
    """
    import astropy.units as u

    t = epoch.utc.datetime
    day = t.day + (t.hour + t.minute / 60 + (t.second + t.microsecond / 1e6) / 3600) / 24
    return {
        "year": f"{t.year}",
        "month": f"{t.month:02d}",
        "day": f"{day:07.4f}",
        "which": "pos",
        "ra": coord.ra.to_string(unit=u.hourangle, sep=" ", precision=3, pad=True),
        "decl": coord.dec.to_string(unit=u.deg, sep=" ", precision=2, pad=True, alwayssign=True),
        "TextArea": "",
        "radius": f"{radius_arcmin:g}",
        "limit": f"{limit:g}",
        "oc": observatory_code,
        "sort": "d",
        "mot": "h",
        "tmot": "t",
        "pdes": "u",
        "needed": "f",
        "ps": "n",
        "type": "p",
    }


class _PreText(HTMLParser):
    """Collects the text of the first ``<pre>`` element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.done = False
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "pre" and not self.done:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self.depth:
            self.depth -= 1
            self.done = self.depth == 0

    def handle_data(self, data: str) -> None:
        if self.depth and not self.done:
            self.chunks.append(data)


_MPC_ROW = re.compile(
    r"^(?P<designation>\S.*?)\s+"
    r"(?P<ra>\d{2} \d{2} \d{2}(?:\.\d+)?)\s+"
    r"(?P<dec>[+-]\d{2} \d{2} \d{2}(?:\.\d+)?)\s+"
    r"(?P<v>\d{1,2}\.\d)?\s*"
    r"(?P<off_ra>\d+(?:\.\d+)?[EW])\s+"
    r"(?P<off_dec>\d+(?:\.\d+)?[NS])\s+"
    r"(?P<mot_ra>\S+)\s+(?P<mot_dec>\S+)\s+"
    r"(?P<orbit>\S+)\s*(?P<misc>.*)$"
)
_MOTION = re.compile(r"^(?P<sign1>[+-]?)(?P<value>\d+(?:\.\d+)?)(?P<sign2>[+-]?)(?P<deg>d?)$")


def _motion(token: str) -> float | None:
    """A motion in arcsec/h from MPChecker's ``33+``, ``-1.2`` or ``2.1d`` (degrees) forms."""
    m = _MOTION.match(token)
    if m is None:
        return None
    value = float(m["value"]) * (3600.0 if m["deg"] else 1.0)
    return -value if "-" in (m["sign1"], m["sign2"]) else value


def parse_mpchecker(page: str, position: Any | None = None) -> list[dict]:
    """The objects listed in an MPChecker answer page, nearest first.

    Parameters
    ----------
    page : str
        The HTML answer.
    position : SkyCoord, optional
        The query position; gives ``offset__arcsec``.

    Returns
    -------
    list of dict
        Keys ``designation, ra, dec, radec_str, v, offset__arcsec, offset_ra__min,
        offset_dec__min, motion_ra__arcsec_per_h, motion_dec__arcsec_per_h, orbit, misc``.
        Empty when the page has no table (no known object in the field).
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    parser = _PreText()
    parser.feed(page)
    text = html.unescape("".join(parser.chunks))
    rows: list[dict] = []
    for line in text.splitlines():
        m = _MPC_ROW.match(line.strip())
        if m is None:
            continue
        c = SkyCoord(m["ra"], m["dec"], unit=(u.hourangle, u.deg))
        rows.append(
            {
                "designation": m["designation"].strip(),
                "ra": float(c.ra.deg),
                "dec": float(c.dec.deg),
                "radec_str": c.to_string(style="hmsdms"),
                "v": float(m["v"]) if m["v"] else None,
                "offset__arcsec": round(float(position.separation(c).arcsec), 2) if position is not None else None,
                "offset_ra__min": m["off_ra"],
                "offset_dec__min": m["off_dec"],
                "motion_ra__arcsec_per_h": _motion(m["mot_ra"]),
                "motion_dec__arcsec_per_h": _motion(m["mot_dec"]),
                "orbit": m["orbit"],
                "misc": m["misc"].strip(),
            }
        )
    if position is not None:
        rows.sort(key=lambda r: r["offset__arcsec"])
    return rows


class MPChecker:
    """Client of MPC's MPChecker (``neocmtcheck.cgi``).

    Parameters
    ----------
    url : str
        Endpoint (config ``crossmatch.mpc_url``).
    radius_arcmin, limit, observatory_code, timeout :
        Query options (config ``crossmatch.*``).
    session : requests.Session, optional
    """

    def __init__(
        self,
        url: str,
        radius_arcmin: float = 2.0,
        limit: float = 24.0,
        observatory_code: str = "I41",
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ):
        self.url = url
        self.radius_arcmin = float(radius_arcmin)
        self.limit = float(limit)
        self.observatory_code = str(observatory_code)
        self.timeout = float(timeout)
        self.session = session or requests.Session()
        self.session.trust_env = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MPChecker":
        x = config["crossmatch"]
        return cls(x["mpc_url"], x["radius_arcmin"], x["limiting_magnitude"], x["observatory_code"], x["timeout"])

    def query(self, coord: Any, epoch: Any) -> dict:
        """Known objects within the radius of ``coord`` at ``epoch``; never raises for service errors."""
        form = mpchecker_form(coord, epoch, self.radius_arcmin, self.limit, self.observatory_code)
        try:
            r = self.session.post(self.url, data=form, timeout=self.timeout)
        except requests.RequestException as e:
            return _error(f"MPChecker unreachable at {self.url}: {e}")
        if r.status_code != 200:
            return _error(f"MPChecker answered HTTP {r.status_code} at {self.url}")
        try:
            return {"status": "success", "data": parse_mpchecker(r.text, coord)}
        except Exception as e:  # a page we cannot read is a service error, not a crash
            return _error(f"MPChecker answer could not be read: {e}")


# -- SkyBoT ----------------------------------------------------------------------------------
def skybot_params(coord: Any, epoch: Any, radius_arcmin: float = 2.0, observatory_code: str = "I41") -> dict:
    """The cone-search parameters that ``astroquery.imcce.Skybot.cone_search`` sends
    (radius in degrees, epoch as JD, position error filter 120", all object types, VOTable)."""
    return {
        "-ra": float(coord.ra.deg),
        "-dec": float(coord.dec.deg),
        "-rd": float(radius_arcmin) / 60.0,
        "-ep": str(float(epoch.utc.jd)),
        "-loc": str(observatory_code),
        "-filter": 120.0,
        "-objFilter": "111",
        "-refsys": "EQJ2000",
        "-output": "all",
        "-mime": "votable",
    }


def _plain(value: Any) -> Any:
    import numpy as np

    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def parse_skybot(content: bytes) -> list[dict]:
    """Rows of a SkyBoT VOTable answer, with astroquery's column names, nearest first.

    RA and DEC are converted from sexagesimal to degrees; ``Number`` is an int or None.
    A VOTable whose status says that no object was found gives an empty list.

    Raises
    ------
    ValueError
        If the answer is not a VOTable or reports an error.
    """
    import warnings

    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.io.votable import parse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            votable = parse(io.BytesIO(content))
        except Exception as e:
            raise ValueError(f"not a VOTable: {content[:120]!r} ({e})") from None
    tables = list(votable.iter_tables())
    infos = list(votable.iter_info())
    status = {i.name: (i.value, (i.content or "")) for i in infos}
    if not tables or tables[0].array is None or len(tables[0].array) == 0:
        value, text = status.get("QUERY_STATUS", ("OK", ""))
        if value.upper() == "OK" or "no solar system object" in text.lower():
            return []
        raise ValueError(f"SkyBoT query status {value}: {text.strip()}")
    table = tables[0].to_table(use_names_over_ids=False)
    rows = []
    for rec in table:
        row = {SKYBOT_COLUMNS.get(name, name): _plain(rec[name]) for name in table.colnames}
        rows.append(row)
    if rows and isinstance(rows[0].get("RA"), str):
        c = SkyCoord([r["RA"] for r in rows], [r["DEC"] for r in rows], unit=(u.hourangle, u.deg))
        for r, ra, dec in zip(rows, c.ra.deg, c.dec.deg):
            r["RA"], r["DEC"] = float(ra), float(dec)
    for r in rows:
        num = r.get("Number")
        r["Number"] = int(num) if num is not None and str(num).strip().isdigit() else None
    rows.sort(key=lambda r: (r.get("centerdist") is None, r.get("centerdist") or 0.0))
    return rows


class SkyBot:
    """Client of IMCCE's SkyBoT cone search.

    Parameters
    ----------
    url : str
        Endpoint (config ``crossmatch.skybot_url``; astroquery's default server).
    radius_arcmin, observatory_code, timeout :
        Query options (config ``crossmatch.*``).
    session : requests.Session, optional
    """

    def __init__(
        self,
        url: str,
        radius_arcmin: float = 2.0,
        observatory_code: str = "I41",
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ):
        self.url = url
        self.radius_arcmin = float(radius_arcmin)
        self.observatory_code = str(observatory_code)
        self.timeout = float(timeout)
        self.session = session or requests.Session()
        self.session.trust_env = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SkyBot":
        x = config["crossmatch"]
        return cls(x["skybot_url"], x["radius_arcmin"], x["observatory_code"], x["timeout"])

    def query(self, coord: Any, epoch: Any) -> dict:
        """Known objects within the radius of ``coord`` at ``epoch``; never raises for service errors."""
        params = skybot_params(coord, epoch, self.radius_arcmin, self.observatory_code)
        try:
            r = self.session.get(self.url, params=params, timeout=self.timeout)
        except requests.RequestException as e:
            return _error(f"SkyBoT unreachable at {self.url}: {e}")
        if r.status_code != 200:
            return _error(f"SkyBoT answered HTTP {r.status_code} at {self.url}")
        try:
            return {"status": "success", "data": parse_skybot(r.content)}
        except Exception as e:
            return _error(f"SkyBoT answer could not be read: {e}")


def crossmatch(ra: float, dec: float, jd: float, mpc: MPChecker | None, skybot: SkyBot | None) -> dict:
    """Both cross-matches of one candidate, ``{"MPC": result, "IMCCE": result}``.

    Parameters
    ----------
    ra, dec : float
        Candidate position (deg).
    jd : float
        Exposure time (JD, UTC).
    mpc, skybot : clients, optional
        A missing client gives ``{"status": "error", "message": "not configured"}``.
    """
    from astropy.coordinates import SkyCoord
    from astropy.time import Time

    coord = SkyCoord(ra=float(ra), dec=float(dec), unit="deg")
    epoch = Time(float(jd), format="jd", scale="utc")
    out = {}
    for key, client in (("MPC", mpc), ("IMCCE", skybot)):
        if client is None:
            out[key] = _error("not configured")
            continue
        out[key] = client.query(coord, epoch)
        if out[key]["status"] != "success":
            log.warning("%s cross-match failed: %s", key, out[key]["message"])
    return out
