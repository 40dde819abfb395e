"""Loopback stand-ins for MPC's MPChecker and IMCCE's SkyBoT.

Both know a list of solar-system objects at fixed positions and answer with those within the
requested radius, in the services' own formats:

* MPChecker: a form POST (fields of ZTF.md, checked) answered by an HTML page whose ``<pre>``
  table has the columns designation, RA ``hh mm ss.s``, Dec ``+dd mm ss``, V, offsets
  (``1.2E 0.3N``, arcmin), motions per hour (``33+ 20-``), orbit and comment -- laid out as the
  original Tails' parser reads it.
* SkyBoT: a GET cone search with astroquery's parameters (``-ra -dec -rd -ep -loc ...``)
  answered by a VOTable with the FIELD IDs of the real service (num, name, ra, de, class, magV,
  errpos, angdist, ...), as in astroquery's test data ``skybot_query.vot``.

``down = True`` makes a server answer HTTP 503; ``stop()`` makes it unreachable.  Requests are
recorded in ``requests`` and form errors in ``invalid``.
"""

from __future__ import annotations

import math
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import LoopbackServer

__all__ = ["KnownObject", "MPCheckerServer", "SkyBotServer"]

MPC_FIELDS = {"year", "month", "day", "which", "ra", "decl", "TextArea", "radius", "limit", "oc",
              "sort", "mot", "tmot", "pdes", "needed", "ps", "type"}


@dataclass
class KnownObject:
    name: str
    ra: float  # deg
    dec: float  # deg
    v: float = 18.5
    number: int | None = None
    kind: str = "MB>Inner"
    orbit: str = "21o"


def _sep_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    c = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, c)))) * 3600.0


def _hms(ra: float, sep: str = " ", prec: int = 1) -> str:
    h = ra / 15.0
    hh = int(h)
    mm = int((h - hh) * 60)
    ss = (h - hh - mm / 60) * 3600
    return f"{hh:02d}{sep}{mm:02d}{sep}{ss:0{3 + prec}.{prec}f}"


def _dms(dec: float, sep: str = " ", prec: int = 0) -> str:
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd = int(d)
    mm = int((d - dd) * 60)
    ss = (d - dd - mm / 60) * 3600
    width = 2 if prec == 0 else 3 + prec
    return f"{sign}{dd:02d}{sep}{mm:02d}{sep}{ss:0{width}.{prec}f}"


class _Base(LoopbackServer):
    def __init__(self, objects: list[KnownObject] | None = None):
        self.objects = list(objects or [])
        self.down = False
        self.requests: list[dict] = []
        self.invalid: list[str] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        raise NotImplementedError

    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _go(self, method: str) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = parsed.query
                if method == "POST":
                    n = int(self.headers.get("Content-Length", 0) or 0)
                    query = self.rfile.read(n).decode()
                params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                with server.lock:
                    server.requests.append({"method": method, "path": parsed.path, "params": params})
                    if server.down:
                        code, ctype, body = 503, "text/plain", b"Service Unavailable"
                    else:
                        code, ctype, body = server.handle(method, parsed.path, params)
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._go("GET")

            def do_POST(self) -> None:
                self._go("POST")

        return self._serve(Handler)


class MPCheckerServer(_Base):
    """MPChecker at ``http://127.0.0.1:{port}/cgi-bin/neocmtcheck.cgi``."""

    path = "/cgi-bin/neocmtcheck.cgi"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def handle(self, method, path, params):
        if method != "POST" or path != self.path:
            return 404, "text/html", b"<html><body>Not Found</body></html>"
        problems = []
        if set(params) != MPC_FIELDS:
            problems.append(f"form fields {sorted(set(params) ^ MPC_FIELDS)} differ")
        try:
            h, m, s = params["ra"].split()
            ra = (int(h) + int(m) / 60 + float(s) / 3600) * 15
            d, m2, s2 = params["decl"].split()
            assert params["decl"][0] in "+-" and len(d) == 3
            dec = math.copysign(abs(int(d)) + int(m2) / 60 + float(s2) / 3600, -1 if d[0] == "-" else 1)
            radius = float(params["radius"])
            assert int(params["year"]) > 1990 and 1 <= int(params["month"]) <= 12
            assert 1 <= float(params["day"]) < 32
            assert params["which"] == "pos" and params["oc"] == "I41"
        except (KeyError, ValueError, AssertionError) as e:
            problems.append(f"bad form values: {e!r} in {params}")
        if problems:
            self.invalid.extend(problems)
            return 200, "text/html", b"<html><body><p>Invalid input.</p></body></html>"
        near = sorted(
            ((_sep_arcsec(ra, dec, o.ra, o.dec), o) for o in self.objects),
            key=lambda t: t[0],
        )
        near = [(sep, o) for sep, o in near if sep <= radius * 60]
        head = (
            "<html><head><title>MPChecker</title></head><body>\n"
            "<h1>MPChecker</h1>\n"
        )
        if not near:
            return 200, "text/html", (head + "<p>No known minor planets in the field.</p></body></html>").encode()
        lines = [
            "",
            " Object designation         R.A.      Decl.     V       Offsets     Motion/hr   Orbit  "
            '<a href="https://minorplanetcenter.net/iau/info/FurtherObs.html">Further observations?</a>',
            "                           h  m  s     &deg;  '  \"        R.A.   Decl.  R.A.  Decl.        "
            "Comment (Elong/Decl/V at date 1)",
            "",
        ]
        for _, o in near:
            dra = (o.ra - ra) * math.cos(math.radians(dec)) * 60
            ddec = (o.dec - dec) * 60
            lines.append(
                f"{o.name:<25s}  {_hms(o.ra)} {_dms(o.dec)}  {o.v:4.1f}  "
                f"{abs(dra):4.1f}{'E' if dra >= 0 else 'W'}  {abs(ddec):4.1f}{'N' if ddec >= 0 else 'S'}  "
                f"{33:4d}+ {20:4d}-  {o.orbit:>4s}  None needed at this time."
            )
        page = head + "<pre>" + "\n".join(lines) + "\n</pre>\n</body></html>"
        return 200, "text/html", page.encode()


class SkyBotServer(_Base):
    """SkyBoT cone search at ``http://127.0.0.1:{port}/webservices/skybot/api/conesearch.php``."""

    path = "/webservices/skybot/api/conesearch.php"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    FIELDS = [
        ("num", "Num", "char", ""), ("name", "Name", "char", ""), ("ra", "RA", "char", "h:m:s"),
        ("de", "DEC", "char", "d:m:s"), ("class", "Class", "char", ""), ("magV", "Mv", "float", ""),
        ("errpos", "ErrPos", "float", "arcsec"), ("angdist", "d", "float", "arcsec"),
        ("dracosdec", "dRAcosDec", "double", "arcsec/h"), ("ddec", "dDEC", "double", "arcsec/h"),
        ("dgeo", "Dg", "double", "AU"), ("dhelio", "Dh", "double", "AU"),
    ]

    def handle(self, method, path, params):
        if method != "GET" or path != self.path:
            return 404, "text/plain", b"Not Found"
        try:
            ra, dec, rd = float(params["-ra"]), float(params["-dec"]), float(params["-rd"])
            float(params["-ep"])
            assert params["-loc"] == "I41" and params["-mime"] == "votable"
        except (KeyError, ValueError, AssertionError) as e:
            self.invalid.append(f"bad parameters {params}: {e!r}")
            return 200, "text/xml", self._votable([], status="ERROR", message="bad parameters")
        near = sorted(((_sep_arcsec(ra, dec, o.ra, o.dec), o) for o in self.objects), key=lambda t: t[0])
        near = [(sep, o) for sep, o in near if sep <= rd * 3600]
        if not near:
            return 200, "text/xml", self._votable([], status="ERROR", message="No solar system object was found in the FOV")
        return 200, "text/xml", self._votable(near)

    def _votable(self, near, status: str = "OK", message: str = "") -> bytes:
        fields = "\n".join(
            f'<vot:FIELD ID="{fid}" name="{name}" datatype="{dt}"'
            + (' arraysize="*"' if dt == "char" else "")
            + (f' unit="{unit}"' if unit else "")
            + "/>"
            for fid, name, dt, unit in self.FIELDS
        )
        rows = []
        for sep, o in near:
            cells = [
                str(o.number) if o.number is not None else "-", o.name, _hms(o.ra, " ", 4), _dms(o.dec, " ", 3),
                o.kind, f"{o.v:.1f}", "0.05", f"{sep:.3f}", "12.3", "-4.5", "1.234", "2.101",
            ]
            rows.append("<vot:TR>" + "".join(f"<vot:TD>{c}</vot:TD>" for c in cells) + "</vot:TR>")
        table = (
            '<vot:TABLE ID="SkybotConeSearch_results" name="SkybotConeSearch">\n'
            + fields
            + "\n<vot:DATA><vot:TABLEDATA>\n"
            + "\n".join(rows)
            + "\n</vot:TABLEDATA></vot:DATA>\n</vot:TABLE>\n"
        ) if near else ""
        xml = (
            '<?xml version="1.0" encoding="UTF-8" ?>\n'
            '<vot:VOTABLE version="1.3" xmlns:vot="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            f'<vot:INFO ID="status" name="QUERY_STATUS" value="{status}">{message}</vot:INFO>\n'
            '<vot:RESOURCE name="Skybot.ConeSearch">\n'
            f"{table}"
            "</vot:RESOURCE>\n</vot:VOTABLE>\n"
        )
        return xml.encode()
