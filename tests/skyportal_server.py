"""A loopback SkyPortal (Fritz) API that validates the sentinel's request bodies and records them.

Routes (ZTF.md, "Fritz"; every request needs ``Authorization: token <token>``):

* ``GET  /api/sysinfo``
* ``POST /api/candidates``               ``{id, ra, dec, score, filter_ids, origin, passed_at}``
* ``POST /api/sources/{id}/annotations`` ``{origin, data, group_ids}`` (+ optional ``obj_id``)
* ``POST /api/thumbnail``                ``{obj_id, data, ttype}`` -- data a base64 PNG
* ``POST /api/sources/{id}/comments``    ``{text, group_ids, attachment?: {body, name}}`` (+ ``obj_id``)
* ``GET  /api/candidates/{id}``, ``GET /api/sources/{id}/annotations``, ``GET /api/sources/{id}/comments``

Answers are ``{"status": "success", "data": ...}`` or ``{"status": "error", "message": ...}``
with HTTP 400, like SkyPortal.  A body that breaks the contract is refused and kept in
:attr:`SkyPortalServer.invalid` (a GET of an object that is not there is answered with 400 but is
no broken contract); accepted POSTs are kept in :attr:`SkyPortalServer.posts`.
:meth:`SkyPortalServer.fail_next` makes the next N requests answer HTTP 500 (without effect).
As SkyPortal, one object holds one annotation per origin.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import json
import re
import struct
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import LoopbackServer

__all__ = ["SkyPortalServer", "ANNOTATION_KEYS"]

OBJ_ID = re.compile(r"^ZTF\d{8}_[a-z0-9]{6}$")
CANDIDATE_KEYS = {"id", "ra", "dec", "score", "filter_ids", "origin", "passed_at"}
#: Annotation data keys that are always there; optional ones match mpc_nearest_* / imcce_nearest_*.
ANNOTATION_KEYS = {
    "candid", "score", "jd", "datestr", "x", "y", "ra", "dec", "radecstr", "tails_v",
    "sci_ipac_url", "dif_ipac_url",
}
OPTIONAL_ANNOTATION = re.compile(r"^(mpc|imcce)_nearest_\w+$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Invalid(ValueError):
    pass


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise Invalid(message)


def _no_such(obj_id: str) -> str:
    return f"Invalid obj_id {obj_id}: no such object"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _png_size(data: bytes) -> tuple[int, int]:
    _require(data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", "data is not a PNG")
    return struct.unpack(">II", data[16:24])


def _b64decode(s: Any, what: str) -> bytes:
    _require(isinstance(s, str) and s, f"{what} must be a base64 string")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{what} is not valid base64") from None


def _group_ids(body: dict, groups: set[int]) -> None:
    g = body.get("group_ids")
    _require(isinstance(g, list) and g and all(isinstance(i, int) for i in g), "group_ids must be a list of ints")
    _require(set(g) <= groups, f"unknown group_ids {g}")


class SkyPortalServer(LoopbackServer):
    """Loopback SkyPortal on 127.0.0.1 and an ephemeral port.

    Parameters
    ----------
    token : str
        The API token requests must carry.
    filter_ids, group_ids : sequence of int
        Filters and groups that exist.
    """

    def __init__(self, token: str = "test-fritz-token", filter_ids=(1,), group_ids=(1,)):
        self.token = token
        self.filter_ids = set(filter_ids)
        self.group_ids = set(group_ids)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.posts: list[dict] = []
        self.invalid: list[dict] = []
        self.failed: list[tuple[str, str]] = []
        self.objects: dict[str, dict] = {}
        self._fail_left = 0
        self._fail_status = 500
        self._fail_methods: tuple[str, ...] = ("GET", "POST")
        self._fail_after = 0

    # -- control ---------------------------------------------------------------------------
    def fail_next(
        self, n: int, status: int = 500, methods: tuple[str, ...] = ("GET", "POST"), after: int = 0
    ) -> None:
        """Answer ``n`` requests (of these methods) with HTTP ``status``, doing nothing else, once
        ``after`` more such requests have been served normally."""
        with self.lock:
            self._fail_left, self._fail_status, self._fail_methods = int(n), int(status), tuple(methods)
            self._fail_after = int(after)

    def posts_to(self, kind: str) -> list[dict]:
        """Accepted POSTs of one kind: candidate, annotation, thumbnail or comment."""
        return [p for p in self.posts if p["kind"] == kind]

    def config_section(self) -> dict:
        """The ``fritz`` config section for this server (a quick backoff for tests)."""
        return {
            "protocol": "http",
            "host": "127.0.0.1",
            "port": self.port,
            "token": self.token,
            "filter_id": min(self.filter_ids),
            "group_id": min(self.group_ids),
            "timeout": 5,
            "retries": 5,
            "backoff_factor": 0.05,
            "origin": "tails:twilight",
        }

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> "SkyPortalServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                n = int(self.headers.get("Content-Length", 0) or 0)
                raw = self.rfile.read(n) if n else b""
                path = self.path.split("?", 1)[0]
                with server.lock:
                    if server._fail_left > 0 and method in server._fail_methods and server._fail_after > 0:
                        server._fail_after -= 1
                    elif server._fail_left > 0 and method in server._fail_methods:
                        server._fail_left -= 1
                        server.failed.append((method, path))
                        return self._send(server._fail_status, {"status": "error", "message": "Internal Server Error"})
                    if self.headers.get("Authorization") != f"token {server.token}":
                        return self._send(401, {"status": "error", "message": "Unauthorized: bad or missing token"})
                    server.requests.append((method, path))
                    try:
                        body = json.loads(raw) if raw else None
                    except json.JSONDecodeError:
                        return self._send(400, {"status": "error", "message": "body is not JSON"})
                    try:
                        code, answer = server.route(method, path, body)
                    except Invalid as e:
                        server.invalid.append({"method": method, "path": path, "body": body, "message": str(e)})
                        code, answer = 400, {"status": "error", "message": str(e)}
                return self._send(code, answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return self._serve(Handler)

    # -- routes (called with the lock held) ------------------------------------------------
    def _record(self, kind: str, path: str, body: dict) -> None:
        self.posts.append({"kind": kind, "path": path, "body": copy.deepcopy(body)})

    def _obj(self, obj_id: str) -> dict:
        _require(obj_id in self.objects, _no_such(obj_id))
        return self.objects[obj_id]

    def route(self, method: str, path: str, body: Any) -> tuple[int, dict]:
        ok = {"status": "success", "data": {}}
        if method == "GET":
            if path == "/api/sysinfo":
                return 200, {"status": "success", "data": {"version": "loopback-skyportal"}}
            candidate = re.fullmatch(r"/api/candidates/([^/]+)", path)
            listing = re.fullmatch(r"/api/sources/([^/]+)/(annotations|comments)", path)
            found = candidate or listing
            if found and found[1] not in self.objects:
                # a fair question, not a broken contract (the sentinel asks after a post whose
                # answer it never heard); SkyPortal answers it with HTTP 400
                return 400, {"status": "error", "message": _no_such(found[1])}
            if candidate:
                obj = self.objects[candidate[1]]
                return 200, {"status": "success", "data": {**obj["candidate"], "thumbnails": obj["thumbnails"]}}
            if listing:
                return 200, {"status": "success", "data": self.objects[listing[1]][listing[2]]}
            return 404, {"status": "error", "message": f"no route GET {path}"}

        if method != "POST":
            return 405, {"status": "error", "message": "method not allowed"}
        _require(isinstance(body, dict), "body must be a JSON object")

        if path == "/api/candidates":
            self._check_candidate(body)
            obj = self.objects.setdefault(
                body["id"], {"candidate": body, "annotations": [], "comments": [], "thumbnails": []}
            )
            obj["candidate"] = body
            self._record("candidate", path, body)
            return 200, {"status": "success", "data": {"ids": [body["id"]]}}

        m = re.fullmatch(r"/api/sources/([^/]+)/annotations", path)
        if m:
            obj = self._obj(m[1])
            self._check_annotation(m[1], body)
            if any(a["origin"] == body["origin"] for a in obj["annotations"]):
                raise Invalid(f"annotation with origin {body['origin']} already exists for {m[1]}")
            obj["annotations"].append(body)
            self._record("annotation", path, body)
            return 200, {"status": "success", "data": {"annotation_id": len(obj["annotations"])}}

        if path == "/api/thumbnail":
            _require(set(body) == {"obj_id", "data", "ttype"}, f"thumbnail keys must be obj_id, data, ttype; got {sorted(body)}")
            obj = self._obj(body["obj_id"])
            _require(body["ttype"] in ("new", "ref", "sub"), f"bad ttype {body['ttype']!r}")
            w, h = _png_size(_b64decode(body["data"], "thumbnail data"))
            _require((w, h) == (63, 63), f"thumbnail must be 63x63, got {w}x{h}")
            obj["thumbnails"].append({"type": body["ttype"], "obj_id": body["obj_id"]})
            self._record("thumbnail", path, body)
            return 200, ok

        m = re.fullmatch(r"/api/sources/([^/]+)/comments", path)
        if m:
            obj = self._obj(m[1])
            self._check_comment(m[1], body)
            obj["comments"].append({"text": body["text"], "attachment_name": (body.get("attachment") or {}).get("name")})
            self._record("comment", path, body)
            return 200, {"status": "success", "data": {"comment_id": len(obj["comments"])}}

        return 404, {"status": "error", "message": f"no route POST {path}"}

    def _check_candidate(self, body: dict) -> None:
        _require(set(body) == CANDIDATE_KEYS, f"candidate keys must be {sorted(CANDIDATE_KEYS)}; got {sorted(body)}")
        _require(isinstance(body["id"], str) and OBJ_ID.match(body["id"]) is not None, f"bad object id {body['id']!r}")
        _require(_number(body["ra"]) and 0 <= body["ra"] < 360, f"bad ra {body['ra']!r}")
        _require(_number(body["dec"]) and -90 <= body["dec"] <= 90, f"bad dec {body['dec']!r}")
        _require(_number(body["score"]) and 0 <= body["score"] <= 1, f"bad score {body['score']!r}")
        f = body["filter_ids"]
        _require(isinstance(f, list) and len(f) == 1 and f[0] in self.filter_ids, f"bad filter_ids {f!r}")
        _require(isinstance(body["origin"], str) and body["origin"], "origin must be a non-empty string")
        try:
            dt.datetime.fromisoformat(body["passed_at"])
        except (TypeError, ValueError):
            raise Invalid(f"passed_at must be an ISO time, got {body['passed_at']!r}") from None

    def _check_annotation(self, obj_id: str, body: dict) -> None:
        keys = set(body) - {"obj_id"}
        _require(keys == {"origin", "data", "group_ids"}, f"annotation keys must be origin, data, group_ids; got {sorted(body)}")
        _require(body.get("obj_id", obj_id) == obj_id, "obj_id in the body differs from the path")
        _require(isinstance(body["origin"], str) and body["origin"], "origin must be a non-empty string")
        _group_ids(body, self.group_ids)
        data = body["data"]
        _require(isinstance(data, dict), "annotation data must be an object")
        missing = ANNOTATION_KEYS - set(data)
        _require(not missing, f"annotation data lacks {sorted(missing)}")
        extra = [k for k in set(data) - ANNOTATION_KEYS if not OPTIONAL_ANNOTATION.match(k)]
        _require(not extra, f"unexpected annotation data keys {sorted(extra)}")
        for k in ("score", "jd", "x", "y", "ra", "dec"):
            _require(_number(data[k]), f"annotation data {k} must be a number")
        for k in ("sci_ipac_url", "dif_ipac_url"):
            _require(isinstance(data[k], str) and "://" in data[k], f"annotation data {k} must be a URL")

    def _check_comment(self, obj_id: str, body: dict) -> None:
        keys = set(body) - {"obj_id"}
        _require(keys in ({"text", "group_ids"}, {"text", "group_ids", "attachment"}), f"comment keys must be text, group_ids[, attachment]; got {sorted(body)}")
        _require(body.get("obj_id", obj_id) == obj_id, "obj_id in the body differs from the path")
        _require(isinstance(body["text"], str) and body["text"], "comment text must be a non-empty string")
        _group_ids(body, self.group_ids)
        if "attachment" in body:
            a = body["attachment"]
            _require(isinstance(a, dict) and set(a) == {"body", "name"}, "attachment must be {body, name}")
            _require(isinstance(a["name"], str) and a["name"], "attachment name must be a string")
            _b64decode(a["body"], "attachment body")
