"""A loopback Kowalski API, good enough for the real ``penquins.Kowalski`` client.

penquins (2.4) calls:

* ``POST /api/auth`` with ``{"username", "password"}`` -> ``{"status": "success", "token": ...}``
  (only when no token is given);
* ``POST /api/queries`` with ``{"query_type": "info", "query": {"command": "catalog_names"}}``
  when it connects;
* ``GET /`` for ``ping()``;
* ``POST /api/queries`` with ``{"query_type": "find", "query": {"catalog", "filter",
  "projection"}}`` for queries.

Requests other than auth must carry the token in the ``Authorization`` header (penquins sends
the bare token; ``Bearer <token>`` is accepted too).  ``find`` is answered from an in-memory list
of documents with the MongoDB operators ``$gt $gte $lt $lte $eq $ne $in $regex`` and inclusion
or exclusion projections.  Every query received is recorded in :attr:`KowalskiServer.queries`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import LoopbackServer

__all__ = ["KowalskiServer", "match_filter", "project", "ztf_ops_document"]


def _match_value(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict) and any(k.startswith("$") for k in cond):
        for op, arg in cond.items():
            if op == "$gt" and not (value is not None and value > arg):
                return False
            if op == "$gte" and not (value is not None and value >= arg):
                return False
            if op == "$lt" and not (value is not None and value < arg):
                return False
            if op == "$lte" and not (value is not None and value <= arg):
                return False
            if op == "$eq" and value != arg:
                return False
            if op == "$ne" and value == arg:
                return False
            if op == "$in" and value not in arg:
                return False
            if op == "$regex" and not (isinstance(value, str) and re.search(arg, value)):
                return False
            if op not in ("$gt", "$gte", "$lt", "$lte", "$eq", "$ne", "$in", "$regex"):
                raise ValueError(f"operator {op} is not supported by the test server")
        return True
    return value == cond


def match_filter(doc: dict, flt: dict) -> bool:
    """Whether a document matches a MongoDB filter (the subset above)."""
    return all(_match_value(doc.get(key), cond) for key, cond in flt.items())


def project(doc: dict, projection: dict | None) -> dict:
    """Apply a MongoDB projection (inclusion, or exclusion, plus ``_id``)."""
    if not projection:
        return copy.deepcopy(doc)
    include = {k for k, v in projection.items() if v and k != "_id"}
    if include:
        out = {k: doc[k] for k in include if k in doc}
        if projection.get("_id", 1) and "_id" in doc:
            out["_id"] = doc["_id"]
        return copy.deepcopy(out)
    exclude = {k for k, v in projection.items() if not v}
    return {k: copy.deepcopy(v) for k, v in doc.items() if k not in exclude}


def ztf_ops_document(fileroot: str, jd_start: float, qcomment: str = "Twilight survey") -> dict:
    """A ``ZTF_ops`` document like Kowalski's (ZTF.md: utc_start, jd_start, exp, filter, field,
    fileroot, qcomment, programpi and others)."""
    import datetime as dt

    parts = fileroot.split("_")
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        days=jd_start - 2440587.5
    )
    return {
        "_id": abs(hash(fileroot)) % 10**9,
        "utc_start": t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
        "jd_start": jd_start,
        "exp": 30,
        "filter": parts[3],
        "field": int(parts[2]),
        "fileroot": fileroot,
        "qcomment": qcomment,
        "programpi": "Kulkarni",
    }


class KowalskiServer(LoopbackServer):
    """Loopback Kowalski on 127.0.0.1 and an ephemeral port.

    Parameters
    ----------
    documents : list of dict
        The ``ZTF_ops`` collection.
    token : str
        The token that requests must carry; also returned by ``/api/auth``.
    username, password : str
        Credentials accepted by ``/api/auth``.
    """

    def __init__(
        self,
        documents: list[dict] | None = None,
        token: str = "test-kowalski-token",
        username: str = "tails",
        password: str = "secret",
    ):
        self.collections: dict[str, list[dict]] = {"ZTF_ops": list(documents or [])}
        self.token = token
        self.username = username
        self.password = password
        self.queries: list[dict] = []
        self.lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> "KowalskiServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                auth = self.headers.get("Authorization", "")
                return auth in (server.token, f"Bearer {server.token}")

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length", 0) or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:
                if self.path in ("/", ""):
                    if not self._authorized():
                        return self._send(401, {"status": "error", "message": "Unauthorized"})
                    return self._send(200, {"status": "success", "message": "greetings from Kowalski!"})
                self._send(404, {"status": "error", "message": f"no route {self.path}"})

            def do_POST(self) -> None:
                try:
                    body = self._body()
                except json.JSONDecodeError:
                    return self._send(400, {"status": "error", "message": "body is not JSON"})
                if self.path == "/api/auth":
                    if body.get("username") == server.username and body.get("password") == server.password:
                        return self._send(200, {"status": "success", "token": server.token})
                    return self._send(401, {"status": "error", "message": "wrong credentials"})
                if self.path == "/api/queries":
                    if not self._authorized():
                        return self._send(401, {"status": "error", "message": "Unauthorized"})
                    code, answer = server.answer(body)
                    return self._send(code, answer)
                self._send(404, {"status": "error", "message": f"no route {self.path}"})

        return self._serve(Handler)

    def config_section(self) -> dict:
        """The ``kowalski`` config section that points at this server."""
        return {
            "protocol": "http",
            "host": "127.0.0.1",
            "port": self.port,
            "token": self.token,
            "username": "",
            "password": "",
            "timeout": 10,
        }

    def add(self, *documents: dict, catalog: str = "ZTF_ops") -> None:
        with self.lock:
            self.collections.setdefault(catalog, []).extend(documents)

    # -- queries ---------------------------------------------------------------------------
    def answer(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.queries.append(copy.deepcopy(body))
            qtype = body.get("query_type")
            query = body.get("query", {})
            if qtype == "info":
                if query.get("command") == "catalog_names":
                    return 200, {"status": "success", "data": sorted(self.collections)}
                return 400, {"status": "error", "message": f"unknown info command {query!r}"}
            if qtype in ("find", "find_one", "count_documents"):
                catalog = query.get("catalog")
                if catalog not in self.collections:
                    return 400, {"status": "error", "message": f"catalog {catalog!r} not found"}
                try:
                    docs = [d for d in self.collections[catalog] if match_filter(d, query.get("filter", {}))]
                except (ValueError, TypeError) as e:
                    return 400, {"status": "error", "message": str(e)}
                if qtype == "count_documents":
                    return 200, {"status": "success", "data": len(docs)}
                docs = [project(d, query.get("projection")) for d in docs]
                if qtype == "find_one":
                    return 200, {"status": "success", "data": docs[0] if docs else None}
                return 200, {"status": "success", "data": docs}
            return 400, {"status": "error", "message": f"query_type {qtype!r} not supported"}
