"""The watcher: every minute, ask Kowalski for new ZTF exposures and hand their frames to dask.

``python -m sentinel.watcher --config config.yaml [--twilight] [--utc_start=...] [--utc_stop=...]``

Each cycle

1. queries ``ZTF_ops`` for exposures started between ``utc_start`` (default: now - 24 h, as
   IPAC sometimes posts data late) and ``utc_stop`` (default: now + 1 h), only the Twilight survey
   with ``--twilight`` (or ``sentinel.app.twilight``);
2. expands each exposure into its 64 ccd-quadrant frames;
3. submits to dask every frame that the ledger knows neither as ``processing`` nor as
   ``success`` (errors are retried, see ``sentinel.app.max_attempts``), with a task key that names
   the frame and its submission;
4. resubmits ``processing`` frames whose task the scheduler no longer holds (lost with a
   cluster restart, or given up by dask after repeated worker deaths);
5. logs a heartbeat with the ledger's counts.

At start-up it clears ``processing`` marks whose task the scheduler does not hold.  With
``--utc_stop`` it runs one cycle, waits for the frames it submitted, and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import threading
from typing import Any, Iterable, Mapping

__all__ = ["task_key", "parse_key", "window", "Watcher", "main"]

log = logging.getLogger("sentinel.watcher")

_KEY_PREFIX = "tails-"


def task_key(name: str, submission: int) -> str:
    """The dask key of a frame's task: ``tails-{name}-{submission}``."""
    return f"{_KEY_PREFIX}{name}-{int(submission)}"


def parse_key(key: Any) -> tuple[str, int] | None:
    """``(name, submission)`` of a :func:`task_key`, or None for other keys."""
    if not isinstance(key, str) or not key.startswith(_KEY_PREFIX):
        return None
    name, _, sub = key[len(_KEY_PREFIX):].rpartition("-")
    return (name, int(sub)) if sub.isdigit() else None


def _parse_utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        t = value
    else:
        s = str(value).strip().replace(" ", "T")
        try:
            t = dt.datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"bad UTC time {value!r}: use ISO 8601, e.g. 2020-11-14T03:00:00") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def window(
    now: dt.datetime,
    utc_start: Any = None,
    utc_stop: Any = None,
    start_hours: float = -24.0,
    stop_hours: float = 1.0,
) -> tuple[dt.datetime, dt.datetime]:
    """The UTC window to look at: given times, or ``now`` shifted by the configured hours.

    Raises
    ------
    ValueError
        If the window is empty.
    """
    start = _parse_utc(utc_start) if utc_start is not None else now + dt.timedelta(hours=start_hours)
    stop = _parse_utc(utc_stop) if utc_stop is not None else now + dt.timedelta(hours=stop_hours)
    if stop <= start:
        raise ValueError(f"utc_stop ({stop.isoformat()}) must be after utc_start ({start.isoformat()})")
    return start, stop


class Watcher:
    """The watcher's state: configuration, ledger, dask client and Kowalski client.

    Parameters
    ----------
    config : dict
        The checked configuration.
    client : distributed.Client, optional
        Default: connect to the scheduler of ``sentinel.dask``.
    kowalski : penquins.Kowalski, optional
        Default: from the ``kowalski`` section.
    ledger : Ledger, optional
        Default: from ``sentinel.ledger``.
    """

    def __init__(self, config: Mapping[str, Any], client: Any = None, kowalski: Any = None, ledger: Any = None):
        from tails.kowalski import make_kowalski

        from .cluster import connect
        from .ledger import open_ledger

        self.config = config
        self.app = config["sentinel"]["app"]
        self.kowalski = kowalski or make_kowalski(config)
        self.ledger = ledger or open_ledger(config)
        self._own_client = client is None
        self.client = client or connect(config)
        try:
            self.ensure_ready()
        except BaseException:
            if self._own_client:
                self.client.close()
            raise
        self.futures: dict[str, Any] = {}

    def ensure_ready(self) -> None:
        """Reconnect to the scheduler if the connection was lost, and make sure the scheduler
        holds the worker plugin (a restarted scheduler has forgotten it).  The plugin is only
        registered when missing: registering it again would reload the model on every worker."""
        from .cluster import connect
        from .worker import PLUGIN_NAME, TailsWorkerPlugin

        if self._own_client and self.client.status not in ("running", "connecting", "newly-created"):
            log.warning("dask client is %s: reconnecting", self.client.status)
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - it is gone anyway
                pass
            self.client = connect(self.config)
        has_plugin = self.client.run_on_scheduler(
            lambda dask_scheduler=None: PLUGIN_NAME in dask_scheduler.worker_plugins
        )
        if not has_plugin:
            self.client.register_plugin(TailsWorkerPlugin(self.config))
            log.info("worker plugin %s registered with the scheduler", PLUGIN_NAME)

    # -- scheduler state -------------------------------------------------------------------
    def live_keys(self) -> dict[str, str]:
        """Keys of frame tasks the scheduler holds and can still run: ``{key: state}``."""

        def _tasks(dask_scheduler: Any = None) -> dict[str, str]:
            return {
                str(k): ts.state
                for k, ts in dask_scheduler.tasks.items()
                if str(k).startswith(_KEY_PREFIX) and ts.state not in ("erred", "forgotten", "released")
            }

        return self.client.run_on_scheduler(_tasks)

    def live_frames(self) -> set[str]:
        """Frames whose current submission is held by the scheduler."""
        out = set()
        for key in self.live_keys():
            parsed = parse_key(key)
            if parsed is None:
                continue
            rec = self.ledger.get(parsed[0])
            if rec is not None and rec["submissions"] == parsed[1]:
                out.add(parsed[0])
        return out

    def clear_stale(self) -> list[str]:
        """Start-up clean-up: forget ``processing`` marks of frames no live task holds."""
        stale = self.ledger.clear_stale(live=self.live_frames())
        if stale:
            log.info("cleared %d stale processing mark(s)", len(stale))
        return stale

    # -- one cycle -------------------------------------------------------------------------
    def _submit(self, name: str, submission: int, keep: bool) -> None:
        from distributed import fire_and_forget

        from .worker import process_frame_task

        future = self.client.submit(process_frame_task, name, submission, key=task_key(name, submission), pure=False)
        if keep:
            self.futures[name] = future
        else:
            fire_and_forget(future)

    def frames_in_window(self, start: dt.datetime, stop: dt.datetime, twilight: bool) -> list[str]:
        """Frame names of the exposures in the window (64 per exposure)."""
        from tails.frames import expand_fileroot
        from tails.kowalski import jd_from_datetime, query_fileroots

        roots = query_fileroots(self.kowalski, jd_from_datetime(start), jd_from_datetime(stop), twilight=twilight)
        return [name for root in roots for name in expand_fileroot(root)]

    def cycle(self, start: dt.datetime, stop: dt.datetime, twilight: bool, keep: bool = False) -> list[str]:
        """Look for frames and submit the new ones; returns the frames submitted."""
        self.ensure_ready()
        names = self.frames_in_window(start, stop, twilight)
        todo = self.ledger.submit(
            names,
            max_attempts=int(self.app["max_attempts"]),
            retry_after_minutes=float(self.app["retry_after_minutes"]),
        )
        for name, submission in todo:
            self._submit(name, submission, keep)
        # processing frames whose task is gone (lost with a cluster restart, or given up by
        # dask after repeated worker deaths); frames submitted just now are not checked, as
        # their submission may still be on its way to the scheduler
        just = {n for n, _ in todo}
        live = self.live_frames()
        resubmitted = []
        max_attempts = int(self.app["max_attempts"])
        for rec in self.ledger.frames("processing"):
            name = rec["name"]
            if name in live or name in just or (name in self.futures and not self.futures[name].done()):
                continue
            lost = sum(1 for e in self.ledger.events(name, "submitted") if "task lost" in (e["detail"] or ""))
            if rec["attempts"] >= max_attempts or lost >= max_attempts:
                error = (
                    f"task lost {lost + 1} time(s) after {rec['attempts']} start(s) (worker deaths, or the "
                    "worker plugin failing: see the dask-cluster log); giving up"
                )
                if self.ledger.finish(name, rec["submissions"], "error", error=error):
                    log.error("%s: %s", name, error)
                continue
            n = self.ledger.resubmit(name)
            if n is not None:
                log.warning("%s: its task was lost; resubmitted (submission %d)", name, n)
                self._submit(name, n, keep)
                resubmitted.append(name)
        log.info(
            "%s .. %s: %d frame(s), %d submitted, %d resubmitted; ledger %s",
            start.strftime("%Y-%m-%dT%H:%M"),
            stop.strftime("%Y-%m-%dT%H:%M"),
            len(names),
            len(todo),
            len(resubmitted),
            self.ledger.counts(),
        )
        return [n for n, _ in todo] + resubmitted

    def wait(self, names: Iterable[str], timeout: float | None = None) -> dict[str, Any]:
        """Wait for the kept futures of ``names``; returns their results (or the exception)."""
        from distributed import wait as dask_wait

        futures = {n: self.futures[n] for n in names if n in self.futures}
        dask_wait(list(futures.values()), timeout=timeout)
        out = {}
        for n, f in futures.items():
            try:
                out[n] = f.result()
            except Exception as e:  # e.g. KilledWorker after repeated worker deaths
                out[n] = e
        return out

    def run(
        self,
        utc_start: Any = None,
        utc_stop: Any = None,
        twilight: bool | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        """Watch until stopped; with ``utc_stop``, run one cycle, wait for it, and return."""
        twilight = bool(self.app["twilight"] if twilight is None else twilight)
        stop_event = stop_event or threading.Event()
        once = utc_stop is not None
        self.clear_stale()
        while True:
            try:
                now = dt.datetime.now(dt.timezone.utc)
                start, stop = window(
                    now, utc_start, utc_stop, float(self.app["utc_start_hours"]), float(self.app["utc_stop_hours"])
                )
                submitted = self.cycle(start, stop, twilight, keep=once)
                if once:
                    results = self.wait(submitted)
                    log.info("run once: %d frame(s) finished; ledger %s", len(results), self.ledger.counts())
                    return
            except ValueError:
                raise
            except Exception as e:  # Kowalski or the scheduler unreachable: try again next cycle
                log.error("cycle failed: %s: %s", type(e).__name__, e)
                if once:
                    raise
            log.info("heartbeat")
            if stop_event.wait(float(self.app["cadence"])):
                return


def main(argv: list[str] | None = None) -> int:
    """Command line of the watcher."""
    from . import start_service

    parser = argparse.ArgumentParser(prog="python -m sentinel.watcher", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="config.yaml (default: config.defaults.yaml)")
    parser.add_argument("--utc_start", "--utc-start", default=None, help="ISO UTC start (default now - 24 h)")
    parser.add_argument("--utc_stop", "--utc-stop", default=None, help="ISO UTC stop; given: run once")
    tw = parser.add_mutually_exclusive_group()
    tw.add_argument("--twilight", dest="twilight", action="store_true", default=None, help="Twilight survey only")
    tw.add_argument("--no-twilight", dest="twilight", action="store_false", help="all surveys")
    args = parser.parse_args(argv)
    config, stop = start_service(args.config)

    # The scheduler may still be starting (supervisord starts both programs together), and
    # Kowalski may be unreachable for a while: keep trying rather than exit (supervisord would
    # give up on a program that fails several times in a row).
    while True:
        try:
            watcher = Watcher(config)
            break
        except Exception as e:  # noqa: BLE001 - logged, retried
            log.warning("not ready (%s: %s); trying again in 5 s", type(e).__name__, e)
            if stop.wait(5):
                return 0
    try:
        watcher.run(args.utc_start, args.utc_stop, args.twilight, stop_event=stop)
    finally:
        watcher.client.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
