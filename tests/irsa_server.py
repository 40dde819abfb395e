"""A loopback HTTP server that serves a folder laid out like IRSA's ZTF products tree.

Tests point :class:`tails.irsa.IrsaClient` (or the whole pipeline) at ``server.url`` instead
of ``https://irsa.ipac.caltech.edu/ibe/data/ztf/products/``.  It listens on 127.0.0.1 at an
ephemeral port, one thread per request, and can misbehave on demand:

- ``fail_next(n, status=500)``: answer the next ``n`` file requests with ``status``;
- ``delay_next(n, seconds)``: answer the next ``n`` file requests late (client time-outs);
- ``missing``: URL paths (or path suffixes) that answer 404 even if the file exists;
- ``truncate``: serve only the first half of matching files, either announcing the full
  ``Content-Length`` and closing early (``truncate_mode="short"``, what a dropped connection
  looks like) or announcing the truncated length (``"honest"``, a corrupt file on the server);
- ``require_login(username, password)``: the login endpoint ``/account/signon/login.do``
  (``josso_cmd=login&josso_username=U&josso_password=P``, ZTF.md) sets a session cookie and
  every file request without it answers 401;
- ``requests`` records every request path; ``count(suffix)`` counts them.

Usage::

    with IrsaServer(root) as server:
        client = IrsaClient(server.url)
"""

from __future__ import annotations

import http.server
import secrets
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from loopback import LoopbackServer

__all__ = ["IrsaServer", "LOGIN_PATH", "COOKIE_NAME"]

#: Path of the login endpoint, as on IRSA.
LOGIN_PATH = "/account/signon/login.do"
#: Name of the session cookie set at login (IRSA's JOSSO single sign-on).
COOKIE_NAME = "JOSSO_SESSIONID"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        owner: IrsaServer = self.server.owner
        parsed = urllib.parse.urlparse(self.path)
        path = urllib.parse.unquote(parsed.path)
        with owner._lock:
            owner.requests.append(path)

        if path == LOGIN_PATH:
            self._login(owner, urllib.parse.parse_qs(parsed.query))
            return

        if owner._credentials is not None and not self._has_cookie(owner):
            self._send(401, b"login required\n")
            return

        with owner._lock:
            delay = 0.0
            if owner._delay_count > 0:
                owner._delay_count -= 1
                delay = owner._delay_seconds
        if delay:
            time.sleep(delay)

        with owner._lock:
            if owner._fail_count > 0:
                owner._fail_count -= 1
                status = owner._fail_status
            else:
                status = 0
        if status:
            self._send(status, f"injected HTTP {status}\n".encode())
            return

        if any(path.endswith(m) for m in owner.missing):
            self._send(404, b"not found\n")
            return

        file = (owner.root / path.lstrip("/")).resolve()
        if owner.root not in file.parents or not file.is_file():
            self._send(404, b"not found\n")
            return
        body = file.read_bytes()

        if any(path.endswith(t) for t in owner.truncate):
            half = body[: len(body) // 2]
            if owner.truncate_mode == "honest":
                self._send(200, half, {"Content-Type": "application/fits"})
            else:
                # announce the full length, send half, drop the connection
                self.send_response(200)
                self.send_header("Content-Type", "application/fits")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(half)
                self.wfile.flush()
                self.close_connection = True
            return
        self._send(200, body, {"Content-Type": "application/fits"})

    def _has_cookie(self, owner: "IrsaServer") -> bool:
        cookies = self.headers.get("Cookie", "")
        pairs = dict(
            c.strip().split("=", 1) for c in cookies.split(";") if "=" in c
        )
        return pairs.get(COOKIE_NAME) in owner._sessions

    def _login(self, owner: "IrsaServer", query: dict[str, list[str]]) -> None:
        with owner._lock:
            owner.logins += 1
        get = lambda k: (query.get(k) or [""])[0]  # noqa: E731
        if owner._credentials is None:
            self._send(200, b"ok\n")
            return
        if get("josso_cmd") != "login" or (get("josso_username"), get("josso_password")) != owner._credentials:
            self._send(401, b"bad credentials\n")
            return
        token = secrets.token_hex(8)
        with owner._lock:
            owner._sessions.add(token)
        self._send(200, b"welcome\n", {"Set-Cookie": f"{COOKIE_NAME}={token}; Path=/"})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "IrsaServer"

    def handle_error(self, request, client_address) -> None:
        # clients that hang up (e.g. after a truncated body) are expected here
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class IrsaServer(LoopbackServer):
    """Serve ``root`` (a folder in IRSA's layout) over HTTP on 127.0.0.1.

    Parameters
    ----------
    root : str or Path
        Folder holding ``sci/`` and ``ref/`` as on IRSA.

    Attributes
    ----------
    url : str
        Base URL to give the client, ending in ``/``.
    login_url : str
        The login endpoint.
    requests : list of str
        Paths of all requests received, in order.
    logins : int
        Number of requests to the login endpoint.
    missing, truncate : set of str
        Path suffixes that answer 404, or are truncated.
    truncate_mode : str
        ``"short"`` (full Content-Length, half the body) or ``"honest"``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.requests: list[str] = []
        self.logins = 0
        self.missing: set[str] = set()
        self.truncate: set[str] = set()
        self.truncate_mode = "short"
        self._fail_count = 0
        self._fail_status = 500
        self._delay_count = 0
        self._delay_seconds = 0.0
        self._credentials: tuple[str, str] | None = None
        self._sessions: set[str] = set()
        self._lock = threading.Lock()

    # -- switches --------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` file requests with HTTP ``status``."""
        with self._lock:
            self._fail_count = n
            self._fail_status = status

    def delay_next(self, n: int, seconds: float) -> None:
        """Wait ``seconds`` before answering each of the next ``n`` file requests (time-outs)."""
        with self._lock:
            self._delay_count = n
            self._delay_seconds = seconds

    def require_login(self, username: str, password: str) -> None:
        """Require a cookie from the login endpoint, given these credentials, for every file."""
        self._credentials = (username, password)

    def count(self, suffix: str = "") -> int:
        """Number of requests whose path ends with ``suffix`` (all requests if empty)."""
        with self._lock:
            return sum(1 for p in self.requests if p.endswith(suffix))

    def reset(self) -> None:
        """Forget recorded requests and all injected faults."""
        with self._lock:
            self.requests.clear()
            self.logins = 0
            self._fail_count = 0
            self._delay_count = 0
        self.missing.clear()
        self.truncate.clear()
        self.truncate_mode = "short"

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def login_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{LOGIN_PATH}"

    def start(self) -> "IrsaServer":
        return self._serve(_Handler, _Server)
