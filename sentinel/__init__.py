"""The Tails sentinel: watch Kowalski for new ZTF data, run Tails on dask, post to Fritz.

Modules
-------
watcher
    The loop that queries ZTF_ops and submits frames (``python -m sentinel.watcher``).
worker
    ``TailsWorker`` and its dask worker plugin; the task that processes and posts one frame.
cluster
    The dask ``LocalCluster`` (``python -m sentinel.cluster``) or an external scheduler.
ledger
    Frame statuses and per-candidate posting state (SQLite or MongoDB).
supervisor
    ``supervisord.conf`` from the config's ``sentinel.supervisord``.

``sentinel.py`` at the repository root manages the service; see ``sentinel/README.md``.
The package ``tails`` never imports ``sentinel``.
"""

from __future__ import annotations

import logging
import signal
import threading


def start_service(config_file: str | None) -> tuple[dict, threading.Event]:
    """The start of a service program (the cluster, the watcher): logging, config, stop event.

    Logs go to stderr with timestamps (supervisord writes them to the program's log file); the
    config is loaded and checked (:func:`tails.config.load_config`); the returned event is set by
    SIGTERM (supervisord's stop) and SIGINT (Ctrl-C).
    """
    from tails.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(config_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return config, stop
