"""The sentinel's dask cluster: a ``LocalCluster`` from ``sentinel.dask``, or an external scheduler.

``python -m sentinel.cluster --config config.yaml`` starts a ``LocalCluster`` whose scheduler
listens on ``sentinel.dask.host:scheduler_port`` with ``n_workers`` worker processes (each under a
nanny that restarts it if it dies), ``threads_per_worker``, ``memory_limit`` and the ``lifetime``
options, and keeps it up until it is stopped (SIGTERM or SIGINT, as supervisord sends).  The
watcher connects to it with :func:`connect`.

When ``sentinel.dask.scheduler_address`` is set, the workers belong to an external cluster
(e.g. ``dask scheduler`` plus ``dask worker`` on other machines); this program then has nothing
to start and only says so.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Mapping

__all__ = ["cluster_kwargs", "scheduler_address", "start_local_cluster", "connect", "main"]

log = logging.getLogger("sentinel.cluster")


def scheduler_address(config: Mapping[str, Any]) -> str:
    """``tcp://host:port`` of the scheduler the watcher should use."""
    d = config["sentinel"]["dask"]
    address = d.get("scheduler_address")
    if address:
        return address if "://" in str(address) else f"tcp://{address}"
    return f"tcp://{d['host']}:{int(d['scheduler_port'])}"


def cluster_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``distributed.LocalCluster`` from ``sentinel.dask``."""
    d = config["sentinel"]["dask"]
    kwargs: dict[str, Any] = {
        "n_workers": int(d["n_workers"]),
        "threads_per_worker": int(d["threads_per_worker"]),
        "processes": True,
        "host": d["host"],
        "scheduler_port": int(d["scheduler_port"]),
        "dashboard_address": d["dashboard_address"],
        "memory_limit": d["memory_limit"],
    }
    if d.get("lifetime"):
        kwargs.update(
            lifetime=d["lifetime"],
            lifetime_stagger=d["lifetime_stagger"] or "0 seconds",
            lifetime_restart=bool(d["lifetime_restart"]),
        )
    return kwargs


def start_local_cluster(config: Mapping[str, Any]):
    """Start the ``LocalCluster`` that ``sentinel.dask`` describes."""
    from distributed import LocalCluster

    kwargs = cluster_kwargs(config)
    cluster = LocalCluster(**kwargs)
    log.info(
        "dask LocalCluster up at %s: %d worker(s) x %d thread(s), dashboard %s",
        cluster.scheduler_address,
        kwargs["n_workers"],
        kwargs["threads_per_worker"],
        cluster.dashboard_link,
    )
    return cluster


def connect(config: Mapping[str, Any], timeout: float = 60.0):
    """A ``distributed.Client`` connected to the sentinel's scheduler.

    Raises
    ------
    OSError
        If no scheduler answers within ``timeout`` seconds (start ``sentinel.cluster`` first, or
        check ``sentinel.dask.scheduler_address``).
    """
    from distributed import Client

    address = scheduler_address(config)
    try:
        return Client(address, timeout=timeout)
    except OSError as e:
        raise OSError(
            f"no dask scheduler at {address}: start the cluster (python -m sentinel.cluster) "
            f"or fix sentinel.dask in the config ({e})"
        ) from e


def main(argv: list[str] | None = None) -> int:
    """Run the cluster until SIGTERM/SIGINT, logging a heartbeat every minute."""
    from . import start_service

    parser = argparse.ArgumentParser(prog="python -m sentinel.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="config.yaml (default: config.defaults.yaml)")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between heartbeat logs")
    args = parser.parse_args(argv)
    config, stop = start_service(args.config)

    if config["sentinel"]["dask"].get("scheduler_address"):
        log.info("external dask scheduler %s configured: no local cluster to start", scheduler_address(config))
        stop.wait()
        return 0

    try:
        cluster = start_local_cluster(config)
    except Exception:
        if stop.is_set():  # stopped while the workers were still starting: not an error
            log.info("stopped during start-up")
            return 0
        raise
    try:
        while not stop.wait(args.heartbeat):
            workers = cluster.scheduler_info.get("workers", {})
            log.info("heartbeat: %d worker(s) alive", len(workers))
    finally:
        log.info("shutting the cluster down")
        cluster.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
