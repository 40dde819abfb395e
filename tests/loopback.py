"""The common life cycle of the loopback servers the tests run (IRSA, Kowalski, SkyPortal, MPC, SkyBot).

Each server class defines ``start``, which builds its request handler and calls
:meth:`LoopbackServer._serve`; this base class owns the rest: the threaded HTTP server on
127.0.0.1 at a free port, its thread, ``stop``, the context manager and ``port``.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1, started by a subclass's ``start``."""

    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, handler: type, server_class: type = ThreadingHTTPServer) -> "LoopbackServer":
        self._httpd = server_class(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=type(self).__name__, daemon=True,
        )
        self._thread.start()
        return self

    def start(self) -> "LoopbackServer":
        raise NotImplementedError

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]
