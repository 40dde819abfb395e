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
